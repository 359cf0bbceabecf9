//! The transactional outbox: a service appends its events in the same transaction as the state
//! change, and the relay publishes them afterwards, in order, marking each only after the broker
//! confirmed it. A crash between publish and mark publishes again; consumers deduplicate.

pub mod postgres;
mod relay;
pub mod sqlite;

use std::time::Duration;

pub use relay::{OutboxRelay, RelayConfig};

use super::{Envelope, EnvelopeError, bus::BoxFuture};

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

/// Plain SQL both dialects share: how many events wait and since when.
const BACKLOG_SQL: &str = "SELECT count(*) AS pending, min(created_at_ms) AS oldest
    FROM outbox WHERE published_at_ms IS NULL";

/// What the relay needs from an outbox table, whatever database holds it.
pub trait OutboxSource: Send + Sync {
    /// Up to `limit` unpublished events, oldest first.
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingEvent>, OutboxError>>;
    fn mark_published<'a>(&'a self, seqs: &'a [i64]) -> BoxFuture<'a, Result<(), OutboxError>>;
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, OutboxError>>;
    /// Returns when new rows may be there, or after `at_most`.
    fn wait_for_new(&self, at_most: Duration) -> BoxFuture<'_, ()>;
}

pub(crate) use crate::clock::now_ms;

pub(crate) fn age_since(created_at_ms: Option<i64>) -> Duration {
    created_at_ms
        .map(|at| Duration::from_millis(u64::try_from(now_ms() - at).unwrap_or(0)))
        .unwrap_or_default()
}

pub(crate) fn decode_row(seq: i64, bytes: &[u8]) -> Result<PendingEvent, OutboxError> {
    let envelope =
        Envelope::decode(bytes).map_err(|source| OutboxError::Corrupt { seq, source })?;
    Ok(PendingEvent { seq, envelope })
}
