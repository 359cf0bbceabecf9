//! What the product service consumes: `order.cancelled` puts the order's reserved stock back.
//! Releasing is idempotent by itself (a second release finds nothing reserved), so a redelivered
//! event changes nothing.

use std::sync::Arc;

use shop_common::{
    BoxFuture, Error,
    events::{Envelope, EventHandler, HandlerError},
};
use shop_proto::{
    DomainEvent as _,
    events::v1::{OrderCancelled, UserSessionsRevoked},
};

use crate::{NAME, catalogue::Catalogue};

/// The events this service subscribes to; `user.sessions_revoked` goes to the revocation list
/// its auth layer checks (`shop_common::auth::Revocations::handling`).
pub const CONSUMES: &[&str] = &[OrderCancelled::TYPE, UserSessionsRevoked::TYPE];

pub(crate) struct ReleaseOnCancel {
    pub(crate) catalogue: Arc<Catalogue>,
}

impl EventHandler for ReleaseOnCancel {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if envelope.event_type() != OrderCancelled::TYPE {
                return Err(HandlerError::unexpected(NAME, envelope.event_type()));
            }
            let event: OrderCancelled = envelope.payload()?;
            match self.catalogue.release(&event.order_id).await {
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
