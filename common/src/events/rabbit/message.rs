//! One message on the broker: the properties and headers an event travels with (attempt count,
//! failure reason, trace context), and a publish that waits for the broker's confirm.

use lapin::{
    BasicProperties, Channel, Confirmation, PublisherConfirm,
    message::Delivery,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, ShortString},
};

use super::{topology::string, unavailable};
use crate::events::{BusError, Envelope, handling::Carried};

const ATTEMPT_HEADER: &str = "x-attempt";
pub(super) const REASON_HEADER: &str = "x-failure-reason";
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The message's properties: persistent, its id and type, the attempt and failure reason, and
/// the trace context it carries (`traceparent`, `tracestate`).
pub(super) fn properties(
    envelope: &Envelope,
    carried: &Carried,
    attempt: u32,
    reason: Option<&str>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt));
    for (name, value) in [
        (TRACEPARENT, &carried.traceparent),
        (TRACESTATE, &carried.tracestate),
    ] {
        if !value.is_empty() {
            headers.insert(name.into(), string(value));
        }
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

pub(super) fn attempt_of(delivery: &Delivery) -> u32 {
    match header(delivery, ATTEMPT_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(1),
        _ => 1,
    }
}

/// The trace context a delivery carries in its headers.
pub(super) fn carried_by(delivery: &Delivery) -> Carried {
    let text = |name| match header(delivery, name) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        _ => String::new(),
    };
    Carried {
        traceparent: text(TRACEPARENT),
        tracestate: text(TRACESTATE),
    }
}

pub(super) fn reason_of(delivery: &Delivery) -> String {
    match header(delivery, REASON_HEADER) {
        Some(AMQPValue::LongString(reason)) => reason.to_string(),
        _ => "unknown".to_owned(),
    }
}

/// Publishes and waits for the confirm; an unroutable return or a nack is a failure.
pub(super) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    event_id: &str,
) -> Result<(), BusError> {
    let confirm = send(channel, exchange, routing_key, payload, properties).await?;
    confirmed(confirm, event_id).await
}

/// Hands the message to the connection, in the order of the calls; the broker's confirm comes
/// later, through [`confirmed`].
pub(super) async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<PublisherConfirm, BusError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        )
        .await
        .map_err(unavailable)
}

/// Waits for the broker's answer to a sent message; an unroutable return or a nack is a failure.
pub(super) async fn confirmed(confirm: PublisherConfirm, event_id: &str) -> Result<(), BusError> {
    let confirm = confirm.await.map_err(unavailable)?;
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
