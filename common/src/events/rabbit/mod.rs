//! The RabbitMQ bus (`lapin`). Topic exchange `shop.events` (unroutable events go to the
//! alternate exchange and queue `shop.events.unrouted`, never dropped); per consumer a durable
//! queue named after it, retry queues `<consumer>.retry.<ms>` whose TTL sends messages back, and a
//! dead-letter queue `<consumer>.dlq`. Publishes are persistent and wait for the broker's
//! confirm. A lost connection is re-established by the next publish and by each consumer's loop.

mod consume;
mod dead_letters;
mod in_order;
mod message;
mod topology;

use std::{sync::Arc, time::Duration};

use lapin::{Channel, Connection, ConnectionProperties, options::ConfirmSelectOptions};
use tokio::{sync::Mutex, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    BusError, DeadLetter, Envelope, EventBus, EventHandler, EventPublisher, InOrder, Subscription,
    handling::{self, Carried},
    metrics::events as metrics,
};
use crate::BoxFuture;

pub const EXCHANGE: &str = "shop.events";
/// `messaging.system` of this bus's spans.
const SYSTEM: &str = "rabbitmq";
const PUBLISH_DEADLINE: Duration = Duration::from_secs(15);

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

impl Link {
    async fn close(&self) {
        if let Err(error) = self.channel.close(200, "done".into()).await {
            tracing::debug!(%error, "closing channel");
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl RabbitBus {
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
        topology::declare_exchanges(&channel).await?;
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

impl EventPublisher for RabbitBus {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), BusError>> {
        let (span, carried) = handling::publishing(SYSTEM, envelope);
        Box::pin(self.publish_carrying(envelope, carried).instrument(span))
    }

    fn publish_in_order<'a>(&'a self, envelopes: &'a [&'a Envelope]) -> BoxFuture<'a, InOrder> {
        Box::pin(self.publish_batch(envelopes))
    }
}

impl RabbitBus {
    /// Publishes with retries until the confirm or the deadline.
    async fn publish_carrying(
        &self,
        envelope: &Envelope,
        carried: Carried,
    ) -> Result<(), BusError> {
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
                message::publish_confirmed(
                    &channel,
                    EXCHANGE,
                    envelope.event_type(),
                    &payload,
                    message::properties(envelope, &carried, 1, None),
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
                topology::declare_consumer(&link.channel, subscription).await?;
            }
            link.close().await;
            Ok(())
        })
    }

    fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn EventHandler>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'_, Result<JoinHandle<()>, BusError>> {
        Box::pin(self.clone().start_consumer(subscription, handler, shutdown))
    }

    fn queue_depth<'a>(&'a self, consumer: &'a str) -> BoxFuture<'a, Result<u64, BusError>> {
        Box::pin(async move {
            let channel = self.publishing_channel().await?;
            match topology::depth(&channel, consumer).await {
                Ok(depth) => Ok(depth),
                Err(error) => {
                    // A failed passive declare closes the channel; open another next time.
                    self.forget_publishing_channel().await;
                    Err(error)
                }
            }
        })
    }

    fn dead_letters<'a>(
        &'a self,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, BusError>> {
        Box::pin(dead_letters::list(self, consumer))
    }

    fn replay<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(dead_letters::replay(self, consumer, event_id))
    }
}
