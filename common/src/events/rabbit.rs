//! The RabbitMQ bus (`lapin`). Topic exchange `shop.events` (unroutable events go to the
//! alternate exchange and queue `shop.events.unrouted`, never dropped); per consumer a durable
//! queue named after it, retry queues `<consumer>.retry.<ms>` whose TTL sends messages back, and a
//! dead-letter queue `<consumer>.dlq`. Publishes are persistent and wait for the broker's
//! confirm. A lost connection is re-established by the next publish and by each consumer's loop.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    BusError, DeadLetter, Envelope, EventBus, EventHandler, EventPublisher, HandlerError,
    Subscription, bus::BoxFuture, handling, metrics::events as metrics,
};

pub const EXCHANGE: &str = "shop.events";
const UNROUTED: &str = "shop.events.unrouted";
const ATTEMPT_HEADER: &str = "x-attempt";
const REASON_HEADER: &str = "x-failure-reason";
const PUBLISH_DEADLINE: Duration = Duration::from_secs(15);
const PREFETCH: u16 = 32;

/// Connects lazily and again after failures; clones share the publishing connection.
#[derive(Clone)]
pub struct RabbitBus {
    url: Arc<str>,
    publisher: Arc<Mutex<Option<Link>>>,
}

/// A connection with one confirm-mode channel.
struct Link {
    _connection: Connection,
    channel: Channel,
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl RabbitBus {
    /// The bus at `AMQP_URL` for a standalone service binary; without one, `None` and a warning
    /// that says what the service then does not do (`without`).
    pub async fn from_setting(
        url: Option<&str>,
        without: &str,
    ) -> Result<Option<Arc<dyn super::EventBus>>, BusError> {
        match url {
            Some(url) => Ok(Some(Arc::new(Self::connect(url).await?))),
            None => {
                tracing::warn!("AMQP_URL is not set: {without}");
                Ok(None)
            }
        }
    }

    /// Connects once to fail fast on a wrong URL, and declares the exchanges.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        let bus = Self {
            url: url.into(),
            publisher: Arc::new(Mutex::new(None)),
        };
        bus.publishing_channel().await?;
        Ok(bus)
    }

    async fn open(&self) -> Result<Link, BusError> {
        let connection = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::connect(&self.url, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| unavailable("timed out connecting to RabbitMQ"))?
        .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        declare_exchanges(&channel).await?;
        Ok(Link {
            _connection: connection,
            channel,
        })
    }

    async fn publishing_channel(&self) -> Result<Channel, BusError> {
        let mut link = self.publisher.lock().await;
        if let Some(current) = link.as_ref()
            && current.channel.status().connected()
        {
            return Ok(current.channel.clone());
        }
        let fresh = self.open().await?;
        let channel = fresh.channel.clone();
        *link = Some(fresh);
        Ok(channel)
    }

    async fn forget_publishing_channel(&self) {
        *self.publisher.lock().await = None;
    }
}

async fn declare_exchanges(channel: &Channel) -> Result<(), BusError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            UNROUTED.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    declare_queue(channel, UNROUTED, FieldTable::default()).await?;
    channel
        .queue_bind(
            UNROUTED.into(),
            UNROUTED.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable)?;
    let mut arguments = FieldTable::default();
    arguments.insert("alternate-exchange".into(), string(UNROUTED));
    channel
        .exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, arguments)
        .await
        .map_err(unavailable)
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), BusError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(drop)
        .map_err(unavailable)
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn dlq_name(consumer: &str) -> String {
    format!("{consumer}.dlq")
}

fn retry_queue_name(consumer: &str, delay: Duration) -> String {
    format!("{consumer}.retry.{}ms", delay.as_millis())
}

/// Declares a consumer's queues and bindings; safe to repeat (same names, same arguments).
async fn declare_consumer(channel: &Channel, subscription: &Subscription) -> Result<(), BusError> {
    declare_exchanges(channel).await?;
    let consumer = &subscription.consumer;
    declare_queue(channel, consumer, FieldTable::default()).await?;
    for key in &subscription.routing_keys {
        channel
            .queue_bind(
                consumer.as_str().into(),
                EXCHANGE.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
    }
    for attempt in 1..subscription.retry.max_attempts {
        let delay = subscription.retry.delay_after(attempt);
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        // Expired messages go back to the consumer's queue through the default exchange.
        arguments.insert("x-dead-letter-exchange".into(), string(""));
        arguments.insert("x-dead-letter-routing-key".into(), string(consumer));
        declare_queue(channel, &retry_queue_name(consumer, delay), arguments).await?;
    }
    declare_queue(channel, &dlq_name(consumer), FieldTable::default()).await
}

fn properties(envelope: &Envelope, attempt: u32, reason: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    if !envelope.0.traceparent.is_empty() {
        headers.insert("traceparent".into(), string(&envelope.0.traceparent));
    }
    if let Some(reason) = reason {
        headers.insert(REASON_HEADER.into(), string(reason));
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/x-protobuf".into())
        .with_message_id(envelope.id().into())
        .with_type(envelope.event_type().into())
        .with_headers(headers)
}

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(&ShortString::from(name)))
}

fn attempt_of(delivery: &Delivery) -> u32 {
    match header(delivery, ATTEMPT_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(1),
        _ => 1,
    }
}

fn reason_of(delivery: &Delivery) -> String {
    match header(delivery, REASON_HEADER) {
        Some(AMQPValue::LongString(reason)) => reason.to_string(),
        _ => "unknown".to_owned(),
    }
}

/// Publishes and waits for the confirm; an unroutable return or a nack is a failure.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    event_id: &str,
) -> Result<(), BusError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    let not_confirmed = |reason: &str| BusError::NotConfirmed {
        event_id: event_id.to_owned(),
        reason: reason.to_owned(),
    };
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(not_confirmed("returned as unroutable")),
        Confirmation::Nack(_) => Err(not_confirmed("nacked by the broker")),
        Confirmation::NotRequested => Err(not_confirmed("channel is not in confirm mode")),
    }
}

impl EventPublisher for RabbitBus {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let payload = envelope.encode();
            let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
            let mut backoff = Duration::from_millis(50);
            loop {
                let attempt = async {
                    let channel = self.publishing_channel().await?;
                    metrics()
                        .published
                        .with_label_values(&[envelope.event_type()])
                        .inc();
                    publish_confirmed(
                        &channel,
                        EXCHANGE,
                        envelope.event_type(),
                        &payload,
                        properties(envelope, 1, None),
                        envelope.id(),
                    )
                    .await
                };
                match tokio::time::timeout_at(deadline, attempt).await {
                    Ok(Ok(())) => {
                        metrics()
                            .confirmed
                            .with_label_values(&[envelope.event_type()])
                            .inc();
                        return Ok(());
                    }
                    Ok(Err(error @ BusError::NotConfirmed { .. })) => return Err(error),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, ?backoff, "publish failed; reconnecting");
                        self.forget_publishing_channel().await;
                    }
                    Err(_) => return Err(unavailable("RabbitMQ did not confirm in time")),
                }
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(unavailable("RabbitMQ stayed unreachable"));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }
}

impl EventBus for RabbitBus {
    fn declare<'a>(
        &'a self,
        subscriptions: &'a [Subscription],
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let link = self.open().await?;
            for subscription in subscriptions {
                declare_consumer(&link.channel, subscription).await?;
            }
            close(&link).await;
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
            // Declared now, so events published after `subscribe` returns wait in the queue.
            let link = self.open().await?;
            declare_consumer(&link.channel, &subscription).await?;
            drop(link);
            let bus = self.clone();
            Ok(tokio::spawn(async move {
                let mut backoff = Duration::from_millis(100);
                while !shutdown.is_cancelled() {
                    match bus
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
            }))
        })
    }

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(async move {
            let link = self.open().await?;
            let mut letters = Vec::new();
            // Unacknowledged gets go back to the queue when the channel closes.
            while let Some(message) = link
                .channel
                .basic_get(dlq_name(consumer).into(), BasicGetOptions::default())
                .await
                .map_err(unavailable)?
            {
                let delivery = message.delivery;
                let envelope = Envelope::decode(&delivery.data).map_err(unavailable)?;
                letters.push(DeadLetter {
                    envelope,
                    attempts: attempt_of(&delivery),
                    reason: reason_of(&delivery),
                });
            }
            close(&link).await;
            Ok(letters)
        })
    }

    fn replay<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let link = self.open().await?;
            let mut found = false;
            while let Some(message) = link
                .channel
                .basic_get(dlq_name(consumer).into(), BasicGetOptions::default())
                .await
                .map_err(unavailable)?
            {
                let delivery = message.delivery;
                if delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ShortString::as_str)
                    != Some(event_id)
                {
                    continue;
                }
                let envelope = Envelope::decode(&delivery.data).map_err(unavailable)?;
                publish_confirmed(
                    &link.channel,
                    "",
                    consumer,
                    &delivery.data,
                    properties(&envelope, 1, None),
                    event_id,
                )
                .await?;
                delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(unavailable)?;
                found = true;
                break;
            }
            close(&link).await;
            if found {
                Ok(())
            } else {
                Err(BusError::NoSuchDeadLetter {
                    consumer: consumer.to_owned(),
                    event_id: event_id.to_owned(),
                })
            }
        })
    }
}

async fn close(link: &Link) {
    if let Err(error) = link.channel.close(200, "done".into()).await {
        tracing::debug!(%error, "closing channel");
    }
}

impl RabbitBus {
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
                    close(&link).await;
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
        let outcome = match Envelope::decode(&delivery.data) {
            Ok(envelope) => {
                let outcome = handling::run(consumer, handler, &envelope, attempt).await;
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
                Some(envelope) => properties(envelope, attempt, reason.as_deref()),
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
