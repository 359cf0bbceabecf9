//! What the order service consumes: payment outcomes move orders along the saga. Each event is
//! applied in the same transaction that records its id, so a redelivery changes nothing.

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope, EventHandler, HandlerError},
};
use shop_proto::events::v1::{
    CancelReason, OrderConfirmed, PaymentFailed, PaymentRefunded, PaymentSucceeded,
};

use crate::{
    NAME,
    api::cancellation,
    domain::{Order, Status, Transition},
    store::{Applying, Change, Changed, OrderStore},
};

pub(crate) struct PaymentOutcomes {
    pub(crate) store: Arc<dyn OrderStore>,
}

/// Paid, and so confirmed: stock is already held, so nothing else stands in the way.
fn confirm(order: &Order) -> Result<Option<Change>, Error> {
    let Ok(paid) = order.status.after(Transition::PaymentSucceeded) else {
        // Cancelled meanwhile (payment-service refunds on `order.cancelled`), or a repeat.
        return Ok(None);
    };
    let status = paid
        .after(Transition::Confirm)
        .map_err(|e| Error::internal(e.to_string()))?;
    let event = OrderConfirmed {
        order_id: order.id.clone(),
        user_id: order.user_id.clone(),
    };
    Ok(Some(Change {
        status,
        cancel_reason: String::new(),
        events: vec![Envelope::new(
            "order.confirmed",
            "order",
            &order.id,
            NAME,
            &event,
        )],
    }))
}

/// Cancels the order for `reason` when its status allows it (`only_from` lists the statuses
/// the cause makes sense in).
fn cancel(
    order: &Order,
    reason: CancelReason,
    detail: &str,
    only_from: &[Status],
) -> Option<Change> {
    (only_from.contains(&order.status) && order.status.after(Transition::Cancel(reason)).is_ok())
        .then(|| cancellation(order, reason, detail))
}

impl EventHandler for PaymentOutcomes {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let applying = Some(Applying {
                consumer: NAME,
                event_id: envelope.id(),
            });
            let (order_id, changed) = match envelope.event_type() {
                "payment.succeeded" => {
                    let event: PaymentSucceeded = envelope.payload()?;
                    let changed = self.store.change(&event.order_id, applying, &confirm).await;
                    (event.order_id, changed)
                }
                "payment.failed" => {
                    let event: PaymentFailed = envelope.payload()?;
                    let decide = |order: &Order| {
                        Ok(cancel(
                            order,
                            CancelReason::PaymentFailed,
                            &event.reason,
                            &[Status::PendingPayment],
                        ))
                    };
                    let changed = self.store.change(&event.order_id, applying, &decide).await;
                    (event.order_id.clone(), changed)
                }
                "payment.refunded" => {
                    let event: PaymentRefunded = envelope.payload()?;
                    let decide = |order: &Order| {
                        Ok(cancel(
                            order,
                            CancelReason::PaymentRefunded,
                            "the payment was refunded",
                            &[Status::Paid, Status::Confirmed],
                        ))
                    };
                    let changed = self.store.change(&event.order_id, applying, &decide).await;
                    (event.order_id.clone(), changed)
                }
                other => {
                    return Err(HandlerError::Permanent(format!(
                        "{NAME} does not handle {other} events"
                    )));
                }
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
