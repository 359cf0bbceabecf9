//! What the bus declares on the broker: the exchanges, and per consumer its queue, bindings,
//! retry queues and dead-letter queue. Every declaration is safe to repeat.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use super::{EXCHANGE, unavailable};
use crate::events::{BusError, Subscription};

const UNROUTED: &str = "shop.events.unrouted";

pub(super) async fn declare_exchanges(channel: &Channel) -> Result<(), BusError> {
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

pub(super) async fn declare_queue(
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

/// The messages ready in `queue`, by a passive declare (which fails if the queue is missing).
pub(super) async fn depth(channel: &Channel, queue: &str) -> Result<u64, BusError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(unavailable)?;
    Ok(u64::from(declared.message_count()))
}

pub(super) fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub(super) fn dlq_name(consumer: &str) -> String {
    format!("{consumer}.dlq")
}

pub(super) fn retry_queue_name(consumer: &str, delay: Duration) -> String {
    format!("{consumer}.retry.{}ms", delay.as_millis())
}

/// Declares a consumer's queues and bindings; safe to repeat (same names, same arguments).
pub(super) async fn declare_consumer(
    channel: &Channel,
    subscription: &Subscription,
) -> Result<(), BusError> {
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
