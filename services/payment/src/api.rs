//! The gRPC surface: clients read payments, admins refund them. Who may call what is the table
//! in [`policy`].

use std::sync::Arc;

use shop_common::{
    auth::{Access, Claims, Policy, Role},
    clock::timestamp,
    fields::{bounded, uuid},
    paging::{Cursor, page, page_size},
};
use shop_proto::{
    common::v1::Money,
    payment::v1::{self as pb, payment_service_server::PaymentService},
};
use tonic::{Request, Response, Status};

use crate::{domain::Payment, payments::Payments};

/// Every method and who may call it; anything missing is denied.
pub(crate) fn policy() -> Policy {
    let method = |name: &str| format!("/shop.payment.v1.PaymentService/{name}");
    let customer: &'static [Role] = &[Role::Customer, Role::Admin];
    let table = [
        ("GetPayment", Access::Roles(customer)),
        ("ListPayments", Access::Roles(customer)),
        ("RefundPayment", Access::Roles(&[Role::Admin])),
    ]
    .map(|(name, access)| (method(name), access));
    Policy::new(table.iter().map(|(path, access)| (path.as_str(), *access)))
}

pub(crate) struct PaymentApi {
    pub(crate) payments: Arc<Payments>,
}

fn to_pb(payment: &Payment) -> pb::Payment {
    pb::Payment {
        payment_id: payment.id.clone(),
        order_id: payment.order_id.clone(),
        user_id: payment.user_id.clone(),
        amount: Some(Money {
            amount_minor: payment.amount_minor,
            currency: payment.currency.clone(),
        }),
        status: payment.status.to_pb().into(),
        failure_reason: payment.failure_reason.clone(),
        provider_reference: payment.provider_reference.clone(),
        create_time: Some(timestamp(payment.created_at_ms)),
        update_time: Some(timestamp(payment.updated_at_ms)),
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentApi {
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        let caller = Claims::of(&request)?;
        let id = uuid("payment_id", &request.get_ref().payment_id)?;
        let payment = self.payments.visible(&caller, &id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(to_pb(&payment)),
        }))
    }

    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let caller = Claims::of(&request)?;
        let req = request.into_inner();
        let limit = page_size("page_size", req.page_size)?;
        let after = Cursor::decode("page_token", &req.page_token)?;
        let order_id = match req.order_id.as_str() {
            "" => None,
            raw => Some(uuid("order_id", raw)?),
        };
        let rows = self
            .payments
            .list(&caller, req.all_users, order_id, after.as_ref(), limit + 1)
            .await?;
        let (payments, next_page_token) = page(rows, limit, |p| Cursor {
            created_at_ms: p.created_at_ms,
            id: p.id.clone(),
        });
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: payments.iter().map(to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(payment_id = %request.get_ref().payment_id))]
    async fn refund_payment(
        &self,
        request: Request<pb::RefundPaymentRequest>,
    ) -> Result<Response<pb::RefundPaymentResponse>, Status> {
        let id = uuid("payment_id", &request.get_ref().payment_id)?;
        let reason = bounded("reason", &request.get_ref().reason, 0, 500)?;
        let refunded = self.payments.refund_by_id(&id, &reason).await?;
        Ok(Response::new(pb::RefundPaymentResponse {
            payment: Some(to_pb(&refunded)),
        }))
    }
}
