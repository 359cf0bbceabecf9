//! The `shop.events.v1.EventEnvelope` every event travels in: ids, type, time, aggregate, the
//! W3C trace context of the change that caused it, and the encoded domain event.

use std::collections::HashMap;

use opentelemetry::{Context, global};
use prost::Message;
use shop_proto::{DomainEvent, events::v1::EventEnvelope};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// An event ready to publish or just received.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope(pub EventEnvelope);

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("event envelope cannot be decoded: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error(
        "event {event_id} of type {event_type} has a payload that is not a {expected}: {source}"
    )]
    Payload {
        event_id: String,
        event_type: String,
        expected: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

impl Envelope {
    /// Wraps `event` (its type and aggregate come with it), stamping a new id, the current
    /// time, and the current span's trace context so the consumer's work joins the producer's
    /// trace. `producer` is the publishing service's name.
    pub fn new<E: DomainEvent>(producer: &str, event: &E) -> Self {
        let mut carrier = HashMap::new();
        global::get_text_map_propagator(|p| {
            p.inject_context(&tracing::Span::current().context(), &mut carrier);
        });
        Self(EventEnvelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: E::TYPE.to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            aggregate_type: E::AGGREGATE.to_owned(),
            aggregate_id: event.aggregate_id().to_owned(),
            traceparent: carrier.remove("traceparent").unwrap_or_default(),
            tracestate: carrier.remove("tracestate").unwrap_or_default(),
            producer: producer.to_owned(),
            payload: event.encode_to_vec(),
        })
    }

    pub fn id(&self) -> &str {
        &self.0.event_id
    }

    pub fn event_type(&self) -> &str {
        &self.0.event_type
    }

    pub fn encode(&self) -> Vec<u8> {
        self.0.encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(Self(EventEnvelope::decode(bytes)?))
    }

    /// Decodes the domain event inside; consumers pick `E` by matching [`Envelope::event_type`]
    /// against the events' `TYPE` constants.
    pub fn payload<E: DomainEvent>(&self) -> Result<E, EnvelopeError> {
        E::decode(self.0.payload.as_slice()).map_err(|source| EnvelopeError::Payload {
            event_id: self.0.event_id.clone(),
            event_type: self.0.event_type.clone(),
            expected: E::TYPE,
            source,
        })
    }

    /// The producer's trace context, to parent the consumer's span.
    pub fn trace_context(&self) -> Context {
        let carrier = HashMap::from([
            ("traceparent".to_owned(), self.0.traceparent.clone()),
            ("tracestate".to_owned(), self.0.tracestate.clone()),
        ]);
        global::get_text_map_propagator(|p| p.extract(&carrier))
    }
}
