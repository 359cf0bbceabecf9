//! The `shop.events.v1.EventEnvelope` every event travels in: ids, type, time, aggregate, the
//! W3C trace context of the change that caused it, and the encoded domain event.

use std::collections::HashMap;

use opentelemetry::{Context, global};
use prost::Message;
use shop_proto::events::v1::EventEnvelope;
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
    /// Wraps `payload`, stamping a new id, the current time, and the current span's trace
    /// context so the consumer's work joins the producer's trace.
    pub fn new(
        event_type: &str,
        aggregate_type: &str,
        aggregate_id: &str,
        producer: &str,
        payload: &impl Message,
    ) -> Self {
        let mut carrier = HashMap::new();
        global::get_text_map_propagator(|p| {
            p.inject_context(&tracing::Span::current().context(), &mut carrier);
        });
        Self(EventEnvelope {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: event_type.to_owned(),
            occurred_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_owned(),
            traceparent: carrier.remove("traceparent").unwrap_or_default(),
            tracestate: carrier.remove("tracestate").unwrap_or_default(),
            producer: producer.to_owned(),
            payload: payload.encode_to_vec(),
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

    /// Decodes the domain event inside.
    pub fn payload<M: Message + Default>(&self) -> Result<M, EnvelopeError> {
        M::decode(self.0.payload.as_slice()).map_err(|source| EnvelopeError::Payload {
            event_id: self.0.event_id.clone(),
            event_type: self.0.event_type.clone(),
            expected: std::any::type_name::<M>(),
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
