//! What the product service consumes: `order.cancelled` puts the order's reserved stock back.
//! Releasing is idempotent by itself (a second release finds nothing reserved), so a redelivered
//! event changes nothing.

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope, EventHandler, HandlerError},
};
use shop_proto::events::v1::OrderCancelled;

use crate::store::ProductStore;

pub(crate) struct ReleaseOnCancel {
    pub(crate) store: Arc<dyn ProductStore>,
}

impl EventHandler for ReleaseOnCancel {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let event: OrderCancelled = envelope.payload()?;
            match self.store.release(&event.order_id).await {
                Ok(released) => {
                    tracing::info!(order_id = %event.order_id, released, "order cancelled");
                    Ok(())
                }
                Err(error @ Error::Unavailable { .. }) => {
                    Err(HandlerError::Transient(error.to_string()))
                }
                Err(error) => Err(HandlerError::Permanent(error.to_string())),
            }
        })
    }
}
