//! What publishers and consumers rely on, whatever carries the events.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Envelope;
use crate::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker did not take the event (no confirm, nack, unroutable); publishing may be
    /// retried, and the outbox does.
    #[error("event {event_id} was not confirmed by the broker: {reason}")]
    NotConfirmed { event_id: String, reason: String },
    #[error("event bus is unavailable: {0}")]
    Unavailable(String),
    #[error("no dead letter {event_id} for consumer {consumer}")]
    NoSuchDeadLetter { consumer: String, event_id: String },
}

/// Why a handler did not apply an event. Both kinds are retried with back-off and then
/// dead-lettered; `Permanent` skips the retries (a payload that can never decode).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl HandlerError {
    /// An event the consumer did not subscribe to: no retry will teach it.
    pub fn unexpected(consumer: &str, event_type: &str) -> Self {
        Self::Permanent(format!("{consumer} does not handle {event_type} events"))
    }
}

/// A payload that does not decode never will: no retries.
impl From<super::EnvelopeError> for HandlerError {
    fn from(error: super::EnvelopeError) -> Self {
        Self::Permanent(error.to_string())
    }
}

pub trait EventPublisher: Send + Sync {
    /// Returns once the event is safely with the bus (broker confirm for RabbitMQ).
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), BusError>>;

    /// Publishes `envelopes` in their order: how many of them, from the first, are safely with
    /// the bus, and the error that stopped the rest. One after the other unless the bus can
    /// do better (RabbitMQ sends the whole batch, then waits for its confirms).
    fn publish_in_order<'a>(&'a self, envelopes: &'a [&'a Envelope]) -> BoxFuture<'a, InOrder> {
        Box::pin(async move {
            for (confirmed, envelope) in envelopes.iter().enumerate() {
                if let Err(error) = self.publish(envelope).await {
                    return InOrder {
                        confirmed,
                        error: Some(error),
                    };
                }
            }
            InOrder {
                confirmed: envelopes.len(),
                error: None,
            }
        })
    }
}

/// What [`EventPublisher::publish_in_order`] did.
#[derive(Debug)]
pub struct InOrder {
    /// How many events, from the first, the bus has safely.
    pub confirmed: usize,
    /// Why the others were not (`None` when all were).
    pub error: Option<BusError>,
}

pub trait EventHandler: Send + Sync + 'static {
    /// Applies the event. Returning `Ok` acknowledges it, so do it only after the effect (and
    /// the record of the event id) is committed.
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// Growing delays between attempts, then the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before the event is dead-lettered.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub multiplier: u32,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Retries for about 77 s in all (0.2, 0.8, 3.2, 12.8, 30, 30 s): longer than a circuit
    /// breaker stays open (payment-service's provider breaker: at most 60 s), so an open breaker
    /// alone never dead-letters an event. With 5 attempts (17 s) a refund for a cancelled order
    /// went to the dead-letter queue while the provider's breaker was open, and the customer
    /// stayed charged (the chaos suite's "no cancelled order is left charged" failed).
    fn default() -> Self {
        Self {
            max_attempts: 7,
            initial_delay: Duration::from_millis(200),
            multiplier: 4,
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` failures (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

/// One consumer's interest: its name (the queue is named after it) and the routing keys it binds.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub consumer: String,
    pub routing_keys: Vec<String>,
    pub retry: RetryPolicy,
}

impl Subscription {
    /// `consumer` (a service name) binding `event_types` (the events' `TYPE` constants), with
    /// the default retries.
    pub fn new(consumer: &str, event_types: &[&str]) -> Self {
        Self {
            consumer: consumer.to_owned(),
            routing_keys: event_types.iter().map(|t| (*t).to_owned()).collect(),
            retry: RetryPolicy::default(),
        }
    }
}

/// An event a consumer gave up on, with why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub attempts: u32,
    pub reason: String,
}

pub trait EventBus: EventPublisher {
    /// Creates the consumers' queues and bindings without consuming, so events published
    /// before a consumer first starts wait for it instead of being unroutable. Idempotent.
    fn declare<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// Starts delivering matching events to `handler` until `shutdown`; the caller owns the task.
    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<JoinHandle<()>, BusError>>;

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>>;

    /// How many events wait in `consumer`'s queue (its lag), retries not counted.
    fn queue_depth<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<u64, BusError>>;

    /// Moves a dead letter back to its consumer's queue, with a fresh attempt count.
    fn replay<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stop_at_the_maximum() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            multiplier: 3,
            max_delay: Duration::from_secs(1),
        };
        let delays: Vec<_> = (1..=4).map(|a| policy.delay_after(a)).collect();
        assert_eq!(
            delays,
            [100, 300, 900, 1000].map(Duration::from_millis).to_vec()
        );
    }
}
