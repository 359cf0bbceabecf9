//! The in-process bus: topic routing, a queue per consumer that outlives the consumer's task
//! (events wait while it is stopped), retries with growing delays, and a dead-letter list.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use tracing::{Instrument as _, instrument::WithSubscriber as _};

use crate::BoxFuture;

use super::{
    BusError, DeadLetter, Envelope, EventBus, EventHandler, EventPublisher, HandlerError,
    RetryPolicy, Subscription,
    handling::{self, Carried},
    metrics::events as metrics,
    topic,
};

/// `messaging.system` of this bus's spans.
const SYSTEM: &str = "shop.in_process";

/// Cheap to clone; clones share the queues.
#[derive(Clone, Default)]
pub struct InProcessBus {
    queues: Arc<Mutex<HashMap<String, Arc<Queue>>>>,
}

#[derive(Debug, Clone)]
struct Delivery {
    envelope: Envelope,
    carried: Carried,
    attempt: u32,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Notify,
}

#[derive(Default)]
struct QueueState {
    routing_keys: Vec<String>,
    retry: RetryPolicy,
    ready: VecDeque<Delivery>,
    delayed: Vec<(Instant, Delivery)>,
    dead: Vec<DeadLetter>,
}

/// A poisoned lock only means another task panicked mid-update of plain data; keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Queue {
    fn push(&self, delivery: Delivery) {
        lock(&self.state).ready.push_back(delivery);
        self.changed.notify_one();
    }

    /// The next delivery whose time has come, waiting for one.
    async fn next(&self) -> Delivery {
        loop {
            let wake_at = {
                let mut state = lock(&self.state);
                let now = Instant::now();
                if let Some(due) = state.delayed.iter().position(|(at, _)| *at <= now) {
                    let (_, delivery) = state.delayed.swap_remove(due);
                    return delivery;
                }
                if let Some(delivery) = state.ready.pop_front() {
                    return delivery;
                }
                state.delayed.iter().map(|(at, _)| *at).min()
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

impl InProcessBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&self, consumer: &str) -> Option<Arc<Queue>> {
        lock(&self.queues).get(consumer).cloned()
    }

    /// The consumer's queue, made if missing, bound to the subscription's keys. Idempotent: a
    /// consumer that restarts finds what waited for it.
    fn declare_one(&self, subscription: &Subscription) -> Arc<Queue> {
        let queue = lock(&self.queues)
            .entry(subscription.consumer.clone())
            .or_default()
            .clone();
        {
            let mut state = lock(&queue.state);
            state.routing_keys = subscription.routing_keys.clone();
            state.retry = subscription.retry.clone();
        }
        queue
    }
}

impl EventPublisher for InProcessBus {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), BusError>> {
        let (span, carried) = handling::publishing(SYSTEM, envelope);
        Box::pin(
            async move {
                let queues: Vec<Arc<Queue>> = lock(&self.queues).values().cloned().collect();
                for queue in queues {
                    let routed = lock(&queue.state)
                        .routing_keys
                        .iter()
                        .any(|pattern| topic::matches(pattern, envelope.event_type()));
                    if routed {
                        queue.push(Delivery {
                            envelope: envelope.clone(),
                            carried: carried.clone(),
                            attempt: 1,
                        });
                    }
                }
                // In memory, handing the event over is the confirm.
                let labels = [envelope.event_type()];
                metrics().published.with_label_values(&labels).inc();
                metrics().confirmed.with_label_values(&labels).inc();
                Ok(())
            }
            .instrument(span),
        )
    }
}

impl EventBus for InProcessBus {
    fn declare<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            for subscription in subscriptions {
                self.declare_one(subscription);
            }
            Ok(())
        })
    }

    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<JoinHandle<()>, BusError>> {
        Box::pin(async move {
            let queue = self.declare_one(&subscription);
            let consumer = subscription.consumer;
            Ok(tokio::spawn(
                async move {
                    loop {
                        let delivery = tokio::select! {
                            delivery = queue.next() => delivery,
                            () = shutdown.cancelled() => break,
                        };
                        deliver(&consumer, &queue, handler.as_ref(), delivery).await;
                    }
                }
                .with_current_subscriber(),
            ))
        })
    }

    fn queue_depth<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let depth = self
                .queue(consumer)
                .map_or(0, |queue| lock(&queue.state).ready.len());
            Ok(u64::try_from(depth).unwrap_or(u64::MAX))
        })
    }

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            Ok(self
                .queue(consumer)
                .map(|queue| lock(&queue.state).dead.clone())
                .unwrap_or_default())
        })
    }

    fn replay<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let missing = || BusError::NoSuchDeadLetter {
                consumer: consumer.to_owned(),
                event_id: event_id.to_owned(),
            };
            let queue = self.queue(consumer).ok_or_else(missing)?;
            let letter = {
                let mut state = lock(&queue.state);
                let index = state
                    .dead
                    .iter()
                    .position(|letter| letter.envelope.id() == event_id)
                    .ok_or_else(missing)?;
                state.dead.remove(index)
            };
            queue.push(Delivery {
                envelope: letter.envelope,
                carried: Carried::default(),
                attempt: 1,
            });
            Ok(())
        })
    }
}

/// One attempt; a failure is scheduled again after the policy's delay, or dead-lettered with
/// its reason.
async fn deliver(consumer: &str, queue: &Queue, handler: &dyn EventHandler, delivery: Delivery) {
    let envelope = &delivery.envelope;
    let outcome = handling::run(
        SYSTEM,
        consumer,
        handler,
        envelope,
        &delivery.carried,
        delivery.attempt,
    )
    .await;
    let labels = [consumer, envelope.event_type()];
    let reason = match outcome {
        Ok(()) => {
            metrics().consumed.with_label_values(&labels).inc();
            return;
        }
        Err(HandlerError::Permanent(reason)) => reason,
        Err(HandlerError::Transient(reason)) => {
            let mut state = lock(&queue.state);
            if delivery.attempt < state.retry.max_attempts {
                let delay = state.retry.delay_after(delivery.attempt);
                tracing::warn!(consumer, %reason, ?delay, attempt = delivery.attempt, "event handling failed; retrying");
                state.delayed.push((
                    Instant::now() + delay,
                    Delivery {
                        envelope: delivery.envelope.clone(),
                        carried: delivery.carried.clone(),
                        attempt: delivery.attempt + 1,
                    },
                ));
                drop(state);
                queue.changed.notify_one();
                metrics().retried.with_label_values(&labels).inc();
                return;
            }
            reason
        }
    };
    tracing::error!(consumer, %reason, attempt = delivery.attempt, "event dead-lettered");
    metrics().dead_lettered.with_label_values(&labels).inc();
    lock(&queue.state).dead.push(DeadLetter {
        envelope: delivery.envelope.clone(),
        attempts: delivery.attempt,
        reason,
    });
}
