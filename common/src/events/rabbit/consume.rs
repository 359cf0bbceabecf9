//! Consuming: one task per subscription that reconnects by itself, runs the handler for up to
//! [`CONCURRENCY`](crate::events::ordering::CONCURRENCY) deliveries at once (those of one aggregate one after the other, in order), and
//! settles each (ack, retry queue or dead-letter queue) only after the outcome is safely with the
//! broker.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::{StreamExt as _, stream::FuturesUnordered};
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

use super::{
    RabbitBus,
    message::{REASON_HEADER, attempt_of, carried_by, properties, publish_confirmed},
    topology::{declare_consumer, dlq_name, retry_queue_name, string},
    unavailable,
};
use crate::events::{
    BusError, Envelope, EventHandler, HandlerError, Subscription, handling,
    metrics::events as metrics,
    ordering::{CONCURRENCY, ordering_key, release},
};

const PREFETCH: u16 = 32;
/// How long a broker step of a consuming session (opening it, re-publishing a failed delivery,
/// an ack) may take. After a broker restart lapin can leave such a step unresolved on the dead
/// connection (seen in the chaos suite: a session waited on it for good, and its queue with it);
/// past this the session counts as lost and a new one is opened. What was not acked goes back
/// to the queue with the old connection.
const BROKER_STEP: Duration = Duration::from_secs(10);
/// How often an idle session checks that its channel is still open: a stream of deliveries
/// that neither ends nor errs when the connection dies would otherwise wait for ever.
const CHANNEL_CHECK: Duration = Duration::from_secs(2);

/// `step`, or an error naming `what` once it has taken [`BROKER_STEP`].
async fn within<T>(
    what: &str,
    step: impl Future<Output = Result<T, BusError>>,
) -> Result<T, BusError> {
    tokio::time::timeout(BROKER_STEP, step)
        .await
        .unwrap_or_else(|_| {
            Err(unavailable(format!(
                "{what}: RabbitMQ did not answer within {BROKER_STEP:?}"
            )))
        })
}

impl RabbitBus {
    /// Declares the subscription's queues (so events published from now on wait for it) and
    /// starts the consuming task.
    pub(super) async fn start_consumer(
        self,
        subscription: Subscription,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, BusError> {
        let link = self.open().await?;
        declare_consumer(&link.channel, &subscription).await?;
        drop(link);
        Ok(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !shutdown.is_cancelled() {
                match self
                    .consume(&subscription, handler.as_ref(), &shutdown)
                    .await
                {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(consumer = %subscription.consumer, %error, ?backoff, "consumer lost its connection; reconnecting");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        .with_current_subscriber()))
    }

    /// One consuming session; returns Ok on shutdown and Err when the connection is lost.
    async fn consume(
        &self,
        subscription: &Subscription,
        handler: &dyn EventHandler,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let (link, mut deliveries) = within("opening a consuming session", async {
            let link = self.open().await?;
            declare_consumer(&link.channel, subscription).await?;
            link.channel
                .basic_qos(PREFETCH, BasicQosOptions::default())
                .await
                .map_err(unavailable)?;
            let tag = format!(
                "{}-{}",
                subscription.consumer,
                uuid::Uuid::new_v4().simple()
            );
            let deliveries = link
                .channel
                .basic_consume(
                    subscription.consumer.as_str().into(),
                    tag.into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
            Ok((link, deliveries))
        })
        .await?;
        let mut check = tokio::time::interval(CHANNEL_CHECK);
        // Each running delivery with the aggregate it holds (see `ordering_key`).
        let mut running = FuturesUnordered::new();
        let mut held: HashSet<String> = HashSet::new();
        loop {
            let delivery = tokio::select! {
                _ = check.tick() => {
                    if link.channel.status().connected() {
                        continue;
                    }
                    let lost = unavailable("the channel to RabbitMQ closed");
                    return Err(drained(&mut running, lost).await);
                }
                next = deliveries.next(), if running.len() < CONCURRENCY => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => return Err(drained(&mut running, unavailable(error)).await),
                    None => {
                        let lost = unavailable("the broker cancelled the consumer");
                        return Err(drained(&mut running, lost).await);
                    }
                },
                Some((key, settled)) = running.next() => {
                    release(&mut held, key);
                    if let Err(error) = settled {
                        return Err(drained(&mut running, error).await);
                    }
                    continue;
                }
                () = shutdown.cancelled() => {
                    while running.next().await.is_some() {}
                    link.close().await;
                    return Ok(());
                }
            };
            // One that does not decode is ordered against nothing.
            let key = Envelope::decode(&delivery.data)
                .ok()
                .and_then(|envelope| ordering_key(&envelope));
            // The events of one aggregate are handled in the order they came: wait for the
            // one running.
            while key.as_ref().is_some_and(|key| held.contains(key)) {
                let Some((done, settled)) = running.next().await else {
                    break;
                };
                release(&mut held, done);
                if let Err(error) = settled {
                    return Err(drained(&mut running, error).await);
                }
            }
            if let Some(key) = &key {
                held.insert(key.clone());
            }
            let channel = &link.channel;
            running.push(async move {
                let settled = self.settle(channel, subscription, handler, delivery).await;
                (key, settled)
            });
        }
    }

    /// Runs the handler, then acks; a failure is first re-published to a retry or dead-letter
    /// queue (confirmed), and only then acked, so a crash in between duplicates, never loses.
    async fn settle(
        &self,
        channel: &Channel,
        subscription: &Subscription,
        handler: &dyn EventHandler,
        delivery: Delivery,
    ) -> Result<(), BusError> {
        let consumer = subscription.consumer.as_str();
        let attempt = attempt_of(&delivery);
        let carried = carried_by(&delivery);
        let outcome = match Envelope::decode(&delivery.data) {
            Ok(envelope) => {
                let outcome = handling::run(
                    super::SYSTEM,
                    consumer,
                    handler,
                    &envelope,
                    &carried,
                    attempt,
                )
                .await;
                Some((envelope, outcome))
            }
            Err(error) => {
                tracing::error!(%error, consumer, "undecodable event");
                None
            }
        };
        let next = match &outcome {
            Some((envelope, Ok(()))) => {
                metrics()
                    .consumed
                    .with_label_values(&[consumer, envelope.event_type()])
                    .inc();
                None
            }
            Some((envelope, Err(HandlerError::Transient(reason))))
                if attempt < subscription.retry.max_attempts =>
            {
                let delay = subscription.retry.delay_after(attempt);
                tracing::warn!(consumer, %reason, ?delay, attempt, "event handling failed; retrying");
                metrics()
                    .retried
                    .with_label_values(&[consumer, envelope.event_type()])
                    .inc();
                Some((retry_queue_name(consumer, delay), attempt + 1, None))
            }
            Some((
                envelope,
                Err(HandlerError::Transient(reason) | HandlerError::Permanent(reason)),
            )) => {
                tracing::error!(consumer, %reason, attempt, "event dead-lettered");
                metrics()
                    .dead_lettered
                    .with_label_values(&[consumer, envelope.event_type()])
                    .inc();
                Some((dlq_name(consumer), attempt, Some(reason.clone())))
            }
            None => Some((
                dlq_name(consumer),
                attempt,
                Some("undecodable envelope".to_owned()),
            )),
        };
        if let Some((queue, attempt, reason)) = next {
            let event_id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            let envelope = outcome.map(|(envelope, _)| envelope);
            let mut properties = match &envelope {
                Some(envelope) => properties(envelope, &carried, attempt, reason.as_deref()),
                None => BasicProperties::default().with_delivery_mode(2),
            };
            if envelope.is_none() {
                let mut headers = FieldTable::default();
                headers.insert(
                    REASON_HEADER.into(),
                    string(reason.as_deref().unwrap_or("")),
                );
                properties = properties.with_headers(headers);
            }
            let moved =
                publish_confirmed(channel, "", &queue, &delivery.data, properties, &event_id);
            if let Err(error) = within("moving a delivery to its queue", moved).await {
                // Leave it to the broker to redeliver rather than lose it.
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = within("nacking a delivery", async {
                    delivery.nack(requeue).await.map_err(unavailable)
                })
                .await;
                return Err(error);
            }
        }
        within("acking a delivery", async {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(unavailable)
        })
        .await
    }
}

/// `error` once the deliveries still running have finished: their handlers complete (what
/// they commit stays, and the broker redelivers what was not acked), none is cut off midway.
async fn drained<F, T>(running: &mut FuturesUnordered<F>, error: BusError) -> BusError
where
    F: Future<Output = T>,
{
    while running.next().await.is_some() {}
    error
}
