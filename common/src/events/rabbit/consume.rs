//! Consuming: one task per subscription that reconnects by itself, runs the handler for each
//! delivery, and settles it (ack, retry queue or dead-letter queue) only after the outcome is
//! safely with the broker.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
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
};

const PREFETCH: u16 = 32;

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
        let link = self.open().await?;
        declare_consumer(&link.channel, subscription).await?;
        link.channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let mut deliveries = link
            .channel
            .basic_consume(
                subscription.consumer.as_str().into(),
                format!(
                    "{}-{}",
                    subscription.consumer,
                    uuid::Uuid::new_v4().simple()
                )
                .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        loop {
            let delivery = tokio::select! {
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => return Err(unavailable(error)),
                    None => return Err(unavailable("the broker cancelled the consumer")),
                },
                () = shutdown.cancelled() => {
                    link.close().await;
                    return Ok(());
                }
            };
            self.settle(&link.channel, subscription, handler, delivery)
                .await?;
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
            if let Err(error) =
                publish_confirmed(channel, "", &queue, &delivery.data, properties, &event_id).await
            {
                // Leave it to the broker to redeliver rather than lose it.
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
                return Err(error);
            }
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(unavailable)
    }
}
