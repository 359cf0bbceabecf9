//! The gRPC surface: decode and validate, reserve stock at product-service, call the store,
//! encode. Who may call what is the table in [`policy`].

use std::sync::Arc;

use shop_common::{
    Error,
    auth::{Access, Claims, Policy, Role},
    clock::{now_ms, timestamp},
    events::Envelope,
    fields::{bounded, uuid},
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    common::v1::Money,
    events::v1::{CancelReason, OrderCancelled, OrderCreated, OrderLine},
    order::v1::{self as pb, order_service_server::OrderService},
};
use tonic::{Request, Response, Status};

use crate::{
    NAME,
    domain::{Checkout, Order, Status as OrderStatus, Transition, cancel_reason_text, total},
    stock::Stock,
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
    pub(crate) stock: Arc<Stock>,
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

        self.store.begin_checkout(&order_id).await?;
        let items = match self.stock.reserve(&order_id, &checkout).await {
            Ok(items) => items,
            Err(error) => {
                // Refused: nothing is held. Anything else (no answer) may hold stock: the
                // checkout stays for a retry with the same key, or for the sweeper.
                if matches!(error, Error::FailedPrecondition(_) | Error::NotFound(_)) {
                    self.store.end_checkout(&order_id).await?;
                }
                return Err(error.into());
            }
        };
        let (total_minor, currency) = match total(&items) {
            Ok(total) => total,
            Err(refusal) => {
                if self.stock.release(&order_id).await.is_ok() {
                    self.store.end_checkout(&order_id).await?;
                }
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
