//! Dead letters: the events a consumer gave up on, read without consuming them, and replayed
//! one at a time onto the consumer's queue.

use lapin::{
    options::{BasicAckOptions, BasicGetOptions},
    types::ShortString,
};

use super::{
    RabbitBus,
    message::{attempt_of, properties, publish_confirmed, reason_of},
    topology::dlq_name,
    unavailable,
};
use crate::events::{BusError, DeadLetter, Envelope};

pub(super) async fn list(bus: &RabbitBus, consumer: &str) -> Result<Vec<DeadLetter>, BusError> {
    let link = bus.open().await?;
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
