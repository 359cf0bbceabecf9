//! The gRPC surface: decode and validate, reserve stock at product-service, call the store,
//! encode. Who may call what is the table in [`policy`].

use std::{sync::Arc, time::Duration};

use shop_common::{
    Error,
    auth::{Access, Claims, Policy, Role, ServiceToken},
    clock::{now_ms, timestamp},
    events::Envelope,
    fields::{bounded, uuid},
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    common::v1::Money,
    events::v1::{CancelReason, OrderCancelled, OrderCreated, OrderLine},
    order::v1::{self as pb, order_service_server::OrderService},
    product::v1::{
        ReleaseStockRequest, ReserveStockRequest, StockItem,
        product_service_client::ProductServiceClient,
    },
};
use tonic::{Code, Request, Response, Status, transport::Channel};

use crate::{
    NAME,
    domain::{Checkout, Item, Order, Status as OrderStatus, Transition, cancel_reason_text, total},
    store::{Change, Changed, ListFilter, OrderStore, Placed},
};

/// Every method and who may call it; anything missing is denied.
pub(crate) fn policy() -> Policy {
    let customer: &'static [Role] = &[Role::Customer, Role::Admin];
    let table = ["PlaceOrder", "GetOrder", "ListOrders", "CancelOrder"]
        .map(|name| (format!("/shop.order.v1.OrderService/{name}"), customer));
    Policy::new(
        table
            .iter()
            .map(|(path, roles)| (path.as_str(), Access::Roles(roles))),
    )
}

pub(crate) struct OrderApi {
    pub(crate) store: Arc<dyn OrderStore>,
    pub(crate) products: ProductServiceClient<Channel>,
    pub(crate) service_token: Arc<ServiceToken>,
    pub(crate) product_deadline: Duration,
}

fn money(amount_minor: i64, currency: &str) -> Option<Money> {
    Some(Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

pub(crate) fn to_pb(order: &Order) -> pb::Order {
    pb::Order {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        status: order.status.to_pb().into(),
        items: order
            .items
            .iter()
            .map(|item| pb::OrderItem {
                product_id: item.product_id.clone(),
                sku: item.sku.clone(),
                name: item.name.clone(),
                quantity: item.quantity,
                unit_price: money(item.unit_price_minor, &item.currency),
                line_total: money(item.line_total().unwrap_or(0), &item.currency),
            })
            .collect(),
        total: money(order.total_minor, &order.currency),
        shipping_address: Some(order.address.to_pb()),
        cancel_reason: order.cancel_reason.clone(),
        create_time: Some(timestamp(order.created_at_ms)),
        update_time: Some(timestamp(order.updated_at_ms)),
    }
}

/// The order placed under a key, if the request is the one it was placed with.
fn same_request(existing: Order, fingerprint: &str) -> Result<Order, Error> {
    if existing.fingerprint == fingerprint {
        return Ok(existing);
    }
    Err(Error::AlreadyExists(format!(
        "idempotency_key {:?} was used for another order ({}); use a new key for a new order",
        existing.idempotency_key, existing.id
    )))
}

/// Only the owner and admins see an order; to anyone else it does not exist.
fn visible(order: Option<Order>, id: &str, caller: &Claims) -> Result<Order, Error> {
    order
        .filter(|o| o.user_id == caller.sub || caller.has_role(Role::Admin))
        .ok_or_else(|| Error::NotFound(format!("order {id}")))
}

/// The `order.cancelled` event of a change to CANCELLED.
pub(crate) fn cancellation(order: &Order, reason: CancelReason, detail: &str) -> Change {
    let event = OrderCancelled {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
        reason: reason.into(),
        detail: detail.to_owned(),
    };
    Change {
        status: OrderStatus::Cancelled,
        cancel_reason: cancel_reason_text(reason).to_owned(),
        events: vec![Envelope::new(
            "order.cancelled",
            "order",
            &order.id,
            NAME,
            &event,
        )],
    }
}

impl OrderApi {
    /// Reserves the basket for `order_id` as this service; the catalogue's names and prices
    /// come back with it.
    async fn reserve(&self, order_id: &str, checkout: &Checkout) -> Result<Vec<Item>, Error> {
        let mut request = Request::new(ReserveStockRequest {
            order_id: order_id.to_owned(),
            items: checkout
                .items
                .iter()
                .map(|w| StockItem {
                    product_id: w.product_id.clone(),
                    quantity: w.quantity,
                })
                .collect(),
        });
        request.set_timeout(self.product_deadline);
        self.service_token
            .authorize(&mut request)
            .await
            .map_err(|status| {
                Error::unavailable("user-service (service token)", status.to_string())
            })?;
        let reserved = match self.products.clone().reserve_stock(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(reservation_error(&status)),
        };
        let mut items: Vec<Item> = reserved
            .items
            .into_iter()
            .map(|line| {
                let price = line.unit_price.unwrap_or_default();
                Item {
                    product_id: line.product_id,
                    sku: line.sku,
                    name: line.name,
                    quantity: line.quantity,
                    unit_price_minor: price.amount_minor,
                    currency: price.currency,
                }
            })
            .collect();
        items.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        let asked = checkout.items.iter().map(|w| (&w.product_id, w.quantity));
        if !items.iter().map(|i| (&i.product_id, i.quantity)).eq(asked) {
            // The order id was reserved first by another request under the same key.
            return Err(Error::AlreadyExists(format!(
                "idempotency_key {:?} is in use for another order; use a new key for a new order",
                checkout.idempotency_key
            )));
        }
        Ok(items)
    }
}

impl OrderApi {
    /// Gives back a reservation no order will be made of. Best effort: a failure is logged.
    async fn release(&self, order_id: &str) {
        let mut request = Request::new(ReleaseStockRequest {
            order_id: order_id.to_owned(),
        });
        request.set_timeout(self.product_deadline);
        let released = match self.service_token.authorize(&mut request).await {
            Ok(()) => self
                .products
                .clone()
                .release_stock(request)
                .await
                .map(|_| ()),
            Err(status) => Err(status),
        };
        if let Err(status) = released {
            tracing::warn!(%order_id, %status, "could not release the stock of a refused order");
        }
    }
}

/// product-service's answer to a reservation, as this service's caller should see it.
fn reservation_error(status: &Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::FailedPrecondition(status.message().to_owned()),
        Code::NotFound => Error::NotFound(status.message().trim_end_matches(" not found").into()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            Error::unavailable(
                "product-service (retry with the same idempotency_key)",
                status.to_string(),
            )
        }
        _ => Error::internal(format!("product-service refused a reservation: {status}")),
    }
}

#[tonic::async_trait]
impl OrderService for OrderApi {
    #[tracing::instrument(skip_all, fields(order_id), err)]
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let caller = Claims::of(&request)?;
        let checkout = Checkout::parse(request.get_ref())?;
        let order_id = checkout.order_id(&caller.sub);
        tracing::Span::current().record("order_id", order_id.as_str());
        let fingerprint = checkout.fingerprint();
        if let Some(existing) = self.store.get(&order_id).await? {
            let order = same_request(existing, &fingerprint)?;
            return Ok(Response::new(pb::PlaceOrderResponse {
                order: Some(to_pb(&order)),
            }));
        }

        let items = self.reserve(&order_id, &checkout).await?;
        let (total_minor, currency) = match total(&items) {
            Ok(total) => total,
            Err(refusal) => {
                self.release(&order_id).await;
                return Err(refusal.into());
            }
        };
        let now = now_ms();
        let order = Order {
            id: order_id.clone(),
            user_id: caller.sub.clone(),
            idempotency_key: checkout.idempotency_key.clone(),
            fingerprint: fingerprint.clone(),
            status: OrderStatus::PendingPayment,
            items,
            total_minor,
            currency,
            address: checkout.address.clone(),
            cancel_reason: String::new(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let created = OrderCreated {
            order_id: order.id.clone(),
            user_id: order.user_id.clone(),
            lines: order
                .items
                .iter()
                .map(|item| OrderLine {
                    product_id: item.product_id.clone(),
                    sku: item.sku.clone(),
                    quantity: item.quantity,
                    unit_price: money(item.unit_price_minor, &item.currency),
                })
                .collect(),
            total: money(order.total_minor, &order.currency),
            payment_method_token: checkout.payment_method_token.clone(),
        };
        let event = Envelope::new("order.created", "order", &order.id, NAME, &created);
        let order = match self.store.place(&order, &event).await? {
            Placed::New(order) => {
                tracing::info!(total_minor = order.total_minor, "order placed");
                order
            }
            Placed::Existing(existing) => same_request(existing, &fingerprint)?,
        };
        Ok(Response::new(pb::PlaceOrderResponse {
            order: Some(to_pb(&order)),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = uuid("order_id", &request.get_ref().order_id)?;
        let order = visible(self.store.get(&id).await?, &id, &caller)?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(to_pb(&order)),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let caller = Claims::of(&request)?;
        let req = request.into_inner();
        let limit = page_size("page_size", req.page_size)?;
        let after = Cursor::decode("page_token", &req.page_token)?;
        let everyone = req.all_users && caller.has_role(Role::Admin);
        let filter = ListFilter {
            user_id: (!everyone).then(|| caller.sub.clone()),
            status: OrderStatus::from_pb("status", req.status)?,
        };
        let rows = self.store.list(&filter, after.as_ref(), limit + 1).await?;
        let (orders, next_page_token) = page(rows, limit, |o| Cursor {
            created_at_ms: o.created_at_ms,
            id: o.id.clone(),
        });
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id), err)]
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = uuid("order_id", &request.get_ref().order_id)?;
        let detail = bounded("reason", &request.get_ref().reason, 0, 500)?;
        visible(self.store.get(&id).await?, &id, &caller)?;
        let decide = |order: &Order| -> Result<Option<Change>, Error> {
            let reason = CancelReason::CustomerRequest;
            order
                .status
                .after(Transition::Cancel(reason))
                .map_err(|_| {
                    Error::FailedPrecondition(format!(
                        "order {} is {} and can no longer be cancelled",
                        order.id,
                        order.status.as_str().replace('_', " ")
                    ))
                })?;
            Ok(Some(cancellation(order, reason, &detail)))
        };
        let order = match self.store.change(&id, None, &decide).await? {
            Changed::Applied(order) | Changed::Unchanged(order) => order,
            Changed::Missing | Changed::Duplicate => {
                return Err(Error::NotFound(format!("order {id}")).into());
            }
        };
        tracing::info!("order cancelled by request");
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_pb(&order)),
        }))
    }
}
