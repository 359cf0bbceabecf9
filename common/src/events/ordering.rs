//! Handling several deliveries of one consumer at once without reordering an aggregate's events,
//! the same on every bus: each running delivery holds its aggregate's key, and a delivery whose
//! aggregate is held waits for the one running.

use std::collections::HashSet;

use super::Envelope;

/// Deliveries handled at once per consumer. One at a time, payment-service charged about 50
/// orders a second on PostgreSQL (each a few commits, each waiting for the server's fsync) and
/// fell behind a 10,000-user journey by minutes.
pub(crate) const CONCURRENCY: usize = 4;

/// What orders a delivery among the others: its aggregate (type and id); one without is ordered
/// against nothing.
pub(crate) fn ordering_key(envelope: &Envelope) -> Option<String> {
    let event = &envelope.0;
    (!event.aggregate_id.is_empty())
        .then(|| format!("{}/{}", event.aggregate_type, event.aggregate_id))
}

/// Lets the deliveries of `key`'s aggregate go on.
pub(crate) fn release(held: &mut HashSet<String>, key: Option<String>) {
    if let Some(key) = key {
        held.remove(&key);
    }
}
