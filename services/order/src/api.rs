//! The gRPC surface: decode and validate, call [`Orders`], encode. Who may call what is the
//! table in [`policy`].

use std::sync::Arc;

use shop_common::{
    auth::{Access, Claims, Policy, Role},
    clock::timestamp,
    fields::{bounded, uuid},
    paging::{Cursor, page, page_size},
};
use shop_proto::order::v1::{self as pb, order_service_server::OrderService};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Checkout, Order, Status as OrderStatus},
    orders::{Orders, money},
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
    pub(crate) orders: Arc<Orders>,
}

fn to_pb(order: &Order) -> pb::Order {
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

#[tonic::async_trait]
impl OrderService for OrderApi {
    async fn place_order(
        &self,
        request: Request<pb::PlaceOrderRequest>,
    ) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let caller = Claims::of(&request)?;
        let checkout = Checkout::parse(request.get_ref())?;
        let order = self.orders.place(&caller.sub, &checkout).await?;
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
        let order = self.orders.visible(&caller, &id).await?;
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
        let status = OrderStatus::from_pb("status", req.status)?;
        let rows = self
            .orders
            .list(&caller, req.all_users, status, after.as_ref(), limit + 1)
            .await?;
        let (orders, next_page_token) = page(rows, limit, |o| Cursor {
            created_at_ms: o.created_at_ms,
            id: o.id.clone(),
        });
        Ok(Response::new(pb::ListOrdersResponse {
            orders: orders.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = uuid("order_id", &request.get_ref().order_id)?;
        let detail = bounded("reason", &request.get_ref().reason, 0, 500)?;
        let order = self.orders.cancel(&caller, &id, &detail).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(to_pb(&order)),
        }))
    }
}
