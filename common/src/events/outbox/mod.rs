//! The transactional outbox: a service appends its events in the same transaction as the state
//! change, and the relay publishes them afterwards, in order, marking each only after the broker
//! confirmed it. A crash between publish and mark publishes again, so consumers record each
//! event id in `processed_events` with its effect and skip repeats.

mod relay;
mod table;

use std::time::Duration;

pub use relay::{OutboxRelay, RelayConfig};
pub(crate) use table::install;
pub use table::{EVENT_COLUMNS, Outbox, append, bind_event, record_processed};

use super::{Envelope, EnvelopeError};

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("outbox row {seq} holds an undecodable event: {source}")]
    Corrupt {
        seq: i64,
        #[source]
        source: EnvelopeError,
    },
}

/// An event appended but not yet published.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub seq: i64,
    pub envelope: Envelope,
}

/// How many events wait, and how long the oldest has waited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest_age: Duration,
}
