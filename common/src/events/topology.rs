//! Who consumes which events in the shop: one table, so every service can declare every queue
//! at start-up. Events are then never unroutable just because their consumer has not started
//! yet on a fresh broker; they wait in its queue.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{BusError, EventBus, EventHandler, RetryPolicy, Subscription};

/// Consumer (queue) name and the routing keys it binds.
const CONSUMERS: [(&str, &[&str]); 3] = [
    ("product-service", &["order.cancelled"]),
    (
        "order-service",
        &["payment.succeeded", "payment.failed", "payment.refunded"],
    ),
    ("payment-service", &["order.created", "order.cancelled"]),
];

/// Every consumer's subscription.
pub fn all() -> Vec<Subscription> {
    CONSUMERS
        .iter()
        .map(|(consumer, keys)| Subscription {
            consumer: (*consumer).to_owned(),
            routing_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            retry: RetryPolicy::default(),
        })
        .collect()
}

/// The subscription of `consumer` (a service name); empty bindings for one not in the table.
pub fn of(consumer: &str) -> Subscription {
    all()
        .into_iter()
        .find(|s| s.consumer == consumer)
        .unwrap_or_else(|| Subscription {
            consumer: consumer.to_owned(),
            routing_keys: Vec::new(),
            retry: RetryPolicy::default(),
        })
}

/// Declares every consumer's queue (so nothing this service publishes is unroutable), then
/// starts `consumer`'s subscription from the table.
pub async fn consume(
    bus: &dyn EventBus,
    consumer: &str,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BusError> {
    bus.declare(&all()).await?;
    bus.subscribe(of(consumer), handler, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_binds_the_events_it_handles() {
        assert_eq!(
            of("payment-service").routing_keys,
            ["order.created", "order.cancelled"]
        );
        assert!(
            of("user-service").routing_keys.is_empty(),
            "user-service consumes nothing"
        );
        assert_eq!(all().len(), 3);
    }
}
