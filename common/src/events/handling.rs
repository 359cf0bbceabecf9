//! Running a handler the same way on every bus: in a consumer span parented on the producer's
//! trace, so one order is one trace across services.

use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Envelope, EventHandler, HandlerError};

pub(crate) async fn run(
    consumer: &str,
    handler: &dyn EventHandler,
    envelope: &Envelope,
    attempt: u32,
) -> Result<(), HandlerError> {
    let span = tracing::info_span!(
        "consume",
        otel.kind = "consumer",
        consumer,
        event_type = envelope.event_type(),
        event_id = envelope.id(),
        attempt,
    );
    if let Err(error) = span.set_parent(envelope.trace_context()) {
        tracing::debug!(%error, "cannot adopt the producer's trace context");
    }
    handler.handle(envelope).instrument(span).await
}
