//! The trace around an event, the same on every bus: publishing is a producer span in the trace
//! of the change that caused the event (its context travels on in the message), and handling is
//! a consumer span parented on that publish, so one order is one trace across services. Both
//! follow the OpenTelemetry messaging conventions.

use std::collections::HashMap;

use opentelemetry::global;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Envelope, EventHandler, HandlerError, rabbit::EXCHANGE};

/// The trace context a message travels with beside its (unchanged) envelope, in AMQP headers or
/// in the in-process delivery: the publish span's, so the consumer's span is its child.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Carried {
    pub(crate) traceparent: String,
    pub(crate) tracestate: String,
}

impl Carried {
    fn context(&self) -> opentelemetry::Context {
        let carrier = HashMap::from([
            ("traceparent".to_owned(), self.traceparent.clone()),
            ("tracestate".to_owned(), self.tracestate.clone()),
        ]);
        global::get_text_map_propagator(|p| p.extract(&carrier))
    }
}

/// The producer span of publishing `envelope` on `system` (`rabbitmq`, or the in-process bus),
/// and the trace context the message carries from it.
pub(crate) fn publishing(system: &'static str, envelope: &Envelope) -> (tracing::Span, Carried) {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {}", envelope.event_type()),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.destination.name = EXCHANGE,
        messaging.rabbitmq.destination.routing_key = envelope.event_type(),
        messaging.message.id = envelope.id(),
    );
    if let Err(error) = span.set_parent(envelope.trace_context()) {
        tracing::debug!(%error, "cannot adopt the event's trace context");
    }
    let mut carrier = HashMap::new();
    let context = span.context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    let carried = Carried {
        traceparent: carrier.remove("traceparent").unwrap_or_default(),
        tracestate: carrier.remove("tracestate").unwrap_or_default(),
    };
    (span, carried)
}

/// Runs `handler` on `envelope` in a consumer span parented on its publish (on the producer's
/// change when the message carries no context of its own, as a replayed dead letter may not).
pub(crate) async fn run(
    system: &'static str,
    consumer: &str,
    handler: &dyn EventHandler,
    envelope: &Envelope,
    carried: &Carried,
    attempt: u32,
) -> Result<(), HandlerError> {
    let span = tracing::info_span!(
        "consume",
        otel.name = %format!("process {}", envelope.event_type()),
        otel.kind = "consumer",
        messaging.system = system,
        messaging.operation.type = "process",
        messaging.destination.name = consumer,
        messaging.consumer.group.name = consumer,
        messaging.message.id = envelope.id(),
        event_type = envelope.event_type(),
        attempt,
    );
    let parent = if carried.traceparent.is_empty() {
        envelope.trace_context()
    } else {
        carried.context()
    };
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "cannot adopt the producer's trace context");
    }
    handler.handle(envelope).instrument(span).await
}
