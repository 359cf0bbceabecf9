//! The in-process bus: topic routing, a queue per consumer that outlives the consumer's task
//! (events wait while it is stopped), retries with growing delays, and a dead-letter list.
//! [`InProcessBus::durable`] also writes every delivery to a journal until it is handled, so the
//! queues survive the process (`shop up` keeps it in the data dir).

mod journal;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{StreamExt as _, stream::FuturesUnordered};
use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use tracing::{Instrument as _, instrument::WithSubscriber as _};

use crate::{BoxFuture, storage::Db};

use journal::{Journal, now_ms};

use super::{
    BusError, DeadLetter, Envelope, EventBus, EventHandler, EventPublisher, HandlerError,
    RetryPolicy, Subscription,
    handling::{self, Carried},
    metrics::events as metrics,
    ordering::{CONCURRENCY, ordering_key, release},
    topic,
};

/// `messaging.system` of this bus's spans.
const SYSTEM: &str = "shop.in_process";

/// Cheap to clone; clones share the queues.
#[derive(Clone, Default)]
pub struct InProcessBus {
    queues: Arc<Mutex<HashMap<String, Arc<Queue>>>>,
    journal: Option<Arc<Journal>>,
}

#[derive(Debug, Clone)]
struct Delivery {
    /// Its row in the journal.
    id: String,
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
    /// Dead letters with their delivery ids.
    dead: Vec<(String, DeadLetter)>,
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

    /// A bus whose queues are kept in `db` as well: what was published and not yet handled
    /// (dead letters included) is delivered again after a restart on the same database.
    pub async fn durable(db: Db) -> Result<Self, BusError> {
        let journal = Journal::open(db).await?;
        let bus = Self {
            queues: Arc::default(),
            journal: None,
        };
        let (now, now_at) = (Instant::now(), now_ms());
        let saved = journal.load().await?;
        let owed = saved.len();
        for saved in saved {
            let queue = lock(&bus.queues).entry(saved.consumer).or_default().clone();
            let delivery = Delivery {
                id: saved.id,
                envelope: saved.envelope,
                carried: Carried::default(),
                attempt: saved.attempt,
            };
            let mut state = lock(&queue.state);
            if let Some(reason) = saved.dead_reason {
                let letter = DeadLetter {
                    envelope: delivery.envelope,
                    attempts: delivery.attempt,
                    reason,
                };
                state.dead.push((delivery.id, letter));
                continue;
            }
            let wait = u64::try_from(saved.due_at_ms.saturating_sub(now_at)).unwrap_or(0);
            if wait == 0 {
                state.ready.push_back(delivery);
            } else {
                let due = now + std::time::Duration::from_millis(wait);
                state.delayed.push((due, delivery));
            }
        }
        if owed > 0 {
            tracing::info!(deliveries = owed, "event deliveries kept from the last run");
        }
        Ok(Self {
            journal: Some(Arc::new(journal)),
            ..bus
        })
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
                let queues: Vec<(String, Arc<Queue>)> = lock(&self.queues)
                    .iter()
                    .map(|(consumer, queue)| (consumer.clone(), queue.clone()))
                    .collect();
                let routed: Vec<(String, String, Arc<Queue>)> = queues
                    .into_iter()
                    .filter(|(_, queue)| {
                        lock(&queue.state)
                            .routing_keys
                            .iter()
                            .any(|pattern| topic::matches(pattern, envelope.event_type()))
                    })
                    .map(|(consumer, queue)| (uuid::Uuid::new_v4().to_string(), consumer, queue))
                    .collect();
                if let Some(journal) = &self.journal {
                    let ids: Vec<(String, String)> = routed
                        .iter()
                        .map(|(id, consumer, _)| (id.clone(), consumer.clone()))
                        .collect();
                    journal.enqueue(envelope, &ids).await?;
                }
                for (id, _, queue) in routed {
                    queue.push(Delivery {
                        id,
                        envelope: envelope.clone(),
                        carried: carried.clone(),
                        attempt: 1,
                    });
                }
                // Handing the event over (and, when durable, committing it) is the confirm.
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
            let journal = self.journal.clone();
            Ok(tokio::spawn(
                async move {
                    // Each running delivery with the aggregate it holds (see `ordering_key`).
                    let mut running = FuturesUnordered::new();
                    let mut held: HashSet<String> = HashSet::new();
                    loop {
                        let delivery = tokio::select! {
                            delivery = queue.next(), if running.len() < CONCURRENCY => delivery,
                            Some(done) = running.next() => {
                                release(&mut held, done);
                                continue;
                            }
                            () = shutdown.cancelled() => break,
                        };
                        let key = ordering_key(&delivery.envelope);
                        // The events of one aggregate are handled in the order they came:
                        // wait for the one running.
                        while key.as_ref().is_some_and(|key| held.contains(key)) {
                            match running.next().await {
                                Some(done) => release(&mut held, done),
                                None => break,
                            }
                        }
                        if let Some(key) = &key {
                            held.insert(key.clone());
                        }
                        let (consumer, queue) = (&consumer, &queue);
                        let (journal, handler) = (journal.as_deref(), handler.as_ref());
                        running.push(async move {
                            deliver(consumer, queue, journal, handler, delivery).await;
                            key
                        });
                    }
                    // What runs is finished, not cut off; what waits stays queued.
                    while running.next().await.is_some() {}
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
                .map(|queue| {
                    lock(&queue.state)
                        .dead
                        .iter()
                        .map(|(_, letter)| letter.clone())
                        .collect()
                })
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
            let (id, letter) = {
                let mut state = lock(&queue.state);
                let index = state
                    .dead
                    .iter()
                    .position(|(_, letter)| letter.envelope.id() == event_id)
                    .ok_or_else(missing)?;
                state.dead.remove(index)
            };
            if let Some(journal) = &self.journal {
                journal.revive(&id).await?;
            }
            queue.push(Delivery {
                id,
                envelope: letter.envelope,
                carried: Carried::default(),
                attempt: 1,
            });
            Ok(())
        })
    }
}

/// One attempt; a failure is scheduled again after the policy's delay, or dead-lettered with
/// its reason. The journal follows each outcome; should a write to it fail, the worst case is a
/// delivery repeated after a restart, which the consumer's processed-events table makes harmless.
async fn deliver(
    consumer: &str,
    queue: &Queue,
    journal: Option<&Journal>,
    handler: &dyn EventHandler,
    delivery: Delivery,
) {
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
    let event_type = envelope.event_type().to_owned();
    let labels = [consumer, event_type.as_str()];
    let reason = match outcome {
        Ok(()) => {
            metrics().consumed.with_label_values(&labels).inc();
            if let Some(journal) = journal {
                noted(consumer, journal.done(&delivery.id).await);
            }
            return;
        }
        Err(HandlerError::Permanent(reason)) => reason,
        Err(HandlerError::Transient(reason)) => {
            let retry = {
                let state = lock(&queue.state);
                (delivery.attempt < state.retry.max_attempts)
                    .then(|| state.retry.delay_after(delivery.attempt))
            };
            if let Some(delay) = retry {
                tracing::warn!(consumer, %reason, ?delay, attempt = delivery.attempt, "event handling failed; retrying");
                let attempt = delivery.attempt + 1;
                if let Some(journal) = journal {
                    let due_at_ms = now_ms()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    noted(
                        consumer,
                        journal.retry(&delivery.id, attempt, due_at_ms).await,
                    );
                }
                lock(&queue.state).delayed.push((
                    Instant::now() + delay,
                    Delivery {
                        attempt,
                        ..delivery
                    },
                ));
                queue.changed.notify_one();
                metrics().retried.with_label_values(&labels).inc();
                return;
            }
            reason
        }
    };
    tracing::error!(consumer, %reason, attempt = delivery.attempt, "event dead-lettered");
    metrics().dead_lettered.with_label_values(&labels).inc();
    if let Some(journal) = journal {
        noted(
            consumer,
            journal.dead(&delivery.id, delivery.attempt, &reason).await,
        );
    }
    let letter = DeadLetter {
        envelope: delivery.envelope,
        attempts: delivery.attempt,
        reason,
    };
    lock(&queue.state).dead.push((delivery.id, letter));
}

fn noted(consumer: &str, written: Result<(), BusError>) {
    if let Err(error) = written {
        tracing::warn!(consumer, %error, "the bus journal missed an outcome; the event may be delivered again after a restart");
    }
}
