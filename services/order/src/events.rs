//! What the order service consumes: payment outcomes move orders along the saga. Each event is
//! applied in the same transaction that records its id, so a redelivery changes nothing.

use std::sync::Arc;

use shop_common::{
    BoxFuture,
    events::{Envelope, EventHandler, HandlerError},
};
use shop_proto::{
    DomainEvent as _,
    events::v1::{PaymentFailed, PaymentRefunded, PaymentSucceeded, UserSessionsRevoked},
};

use crate::{
    NAME,
    orders::Orders,
    store::{Applying, Changed},
};

/// The events this service subscribes to; `user.sessions_revoked` goes to the revocation list
/// its auth layer checks (`shop_common::auth::Revocations::handling`).
pub const CONSUMES: &[&str] = &[
    PaymentSucceeded::TYPE,
    PaymentFailed::TYPE,
    PaymentRefunded::TYPE,
    UserSessionsRevoked::TYPE,
];

pub(crate) struct PaymentOutcomes {
    pub(crate) orders: Arc<Orders>,
}

impl EventHandler for PaymentOutcomes {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let applying = Applying {
                consumer: NAME,
                event_id: envelope.id(),
            };
            let (order_id, changed) = match envelope.event_type() {
                PaymentSucceeded::TYPE => {
                    let event: PaymentSucceeded = envelope.payload()?;
                    let changed = self
                        .orders
                        .payment_succeeded(applying, &event.order_id)
                        .await;
                    (event.order_id, changed)
                }
                PaymentFailed::TYPE => {
                    let event: PaymentFailed = envelope.payload()?;
                    let changed = self
                        .orders
                        .payment_failed(applying, &event.order_id, &event.reason)
                        .await;
                    (event.order_id, changed)
                }
                PaymentRefunded::TYPE => {
                    let event: PaymentRefunded = envelope.payload()?;
                    let changed = self
                        .orders
                        .payment_refunded(applying, &event.order_id)
                        .await;
                    (event.order_id, changed)
                }
                other => return Err(HandlerError::unexpected(NAME, other)),
            };
            match changed {
                Ok(Changed::Applied(order)) => {
                    tracing::info!(%order_id, status = order.status.as_str(), "order moved on");
                    Ok(())
                }
                Ok(Changed::Unchanged(_) | Changed::Duplicate) => Ok(()),
                Ok(Changed::Missing) => Err(HandlerError::Permanent(format!(
                    "{} names order {order_id}, which does not exist",
                    envelope.event_type()
                ))),
                // Retried with back-off, then dead-lettered with the reason.
                Err(error) => Err(HandlerError::Transient(format!("{error:?}"))),
            }
        })
    }
}
