//! What the payment service consumes: `order.created` (charge it) and `order.cancelled` (refund
//! it, or make sure it is never charged). Both are idempotent through the payment's own state:
//! one payment per order, moved only from the status a change was decided on.

use std::sync::Arc;

use shop_common::{
    BoxFuture, Error,
    events::{Envelope, EventHandler, HandlerError},
};
use shop_proto::{
    DomainEvent as _,
    events::v1::{OrderCancelled, OrderCreated, UserSessionsRevoked},
};

use crate::{NAME, payments::Payments};

/// The events this service subscribes to; `user.sessions_revoked` goes to the revocation list
/// its auth layer checks (`shop_common::auth::Revocations::handling`).
pub const CONSUMES: &[&str] = &[
    OrderCreated::TYPE,
    OrderCancelled::TYPE,
    UserSessionsRevoked::TYPE,
];

pub(crate) struct OrderEvents {
    pub(crate) payments: Arc<Payments>,
}

fn retry(error: Error) -> HandlerError {
    HandlerError::Transient(format!("{error:?}"))
}

impl EventHandler for OrderEvents {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            match envelope.event_type() {
                OrderCreated::TYPE => {
                    let order: OrderCreated = envelope.payload()?;
                    self.payments.charge_order(&order).await.map_err(retry)?;
                }
                OrderCancelled::TYPE => {
                    let order: OrderCancelled = envelope.payload()?;
                    self.payments
                        .cancel_order(&order.order_id, &order.user_id)
                        .await
                        .map_err(retry)?;
                }
                other => return Err(HandlerError::unexpected(NAME, other)),
            }
            Ok(())
        })
    }
}
