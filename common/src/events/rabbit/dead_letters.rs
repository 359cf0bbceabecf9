//! Dead letters: the events a consumer gave up on, read without consuming them, and replayed
//! one at a time onto the consumer's queue.

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions},
    types::ShortString,
};

use super::{
    Link, RabbitBus,
    message::{attempt_of, properties, publish_confirmed, reason_of},
    topology::dlq_name,
    unavailable,
};
use crate::events::{BusError, DeadLetter, Envelope, handling::Carried};

/// The next message of `consumer`'s dead-letter queue, if any. Unacknowledged gets go back to
/// the queue when the channel closes.
async fn next(link: &Link, consumer: &str) -> Result<Option<Delivery>, BusError> {
    let message = link
        .channel
        .basic_get(dlq_name(consumer).into(), BasicGetOptions::default())
        .await
        .map_err(unavailable)?;
    Ok(message.map(|message| message.delivery))
}

pub(super) async fn list(bus: &RabbitBus, consumer: &str) -> Result<Vec<DeadLetter>, BusError> {
    let link = bus.open().await?;
    let mut letters = Vec::new();
    while let Some(delivery) = next(&link, consumer).await? {
        let envelope = Envelope::decode(&delivery.data).map_err(unavailable)?;
        letters.push(DeadLetter {
            envelope,
            attempts: attempt_of(&delivery),
            reason: reason_of(&delivery),
        });
    }
    link.close().await;
    Ok(letters)
}

pub(super) async fn replay(
    bus: &RabbitBus,
    consumer: &str,
    event_id: &str,
) -> Result<(), BusError> {
    let link = bus.open().await?;
    let mut found = false;
    while let Some(delivery) = next(&link, consumer).await? {
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
            // A replayed event starts a fresh delivery; its trace is the producer's again.
            properties(&envelope, &Carried::default(), 1, None),
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
    link.close().await;
    if found {
        Ok(())
    } else {
        Err(BusError::NoSuchDeadLetter {
            consumer: consumer.to_owned(),
            event_id: event_id.to_owned(),
        })
    }
}
