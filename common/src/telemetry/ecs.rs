//! Log lines for ELK: one JSON object per event with Elastic Common Schema names (`@timestamp`,
//! `log.level`, `message`, `service.name`, `event.dataset`, `trace.id`, `span.id`), the fields
//! of the event, and the fields of the spans it happened in (request and order ids), the
//! nearest span winning.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::{Event, Subscriber, dispatcher::WeakDispatch, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

pub(super) struct Ecs {
    service: String,
    dataset: String,
    /// The dispatch this format writes for, set once it exists; trace ids are read through it.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl Ecs {
    pub(super) fn new(service: &str, dispatch: Arc<OnceLock<WeakDispatch>>) -> Self {
        Self {
            service: service.to_owned(),
            dataset: format!("shop.{service}"),
            dispatch,
        }
    }

    /// `trace.id` and `span.id` of the span an event happened in, when it is traced.
    fn trace_ids(&self, id: &tracing::span::Id, line: &mut Map<String, Value>) {
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let span = context.span();
        let span = span.span_context();
        if span.is_valid() {
            line.insert("trace.id".into(), span.trace_id().to_string().into());
            line.insert("span.id".into(), span.span_id().to_string().into());
        }
    }
}

impl<S, N> FormatEvent<S, N> for Ecs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        line.insert("@timestamp".into(), now.to_string().into());
        line.insert("log.level".into(), event.metadata().level().as_str().into());
        line.insert("log.logger".into(), event.metadata().target().into());
        line.insert("service.name".into(), self.service.clone().into());
        line.insert("event.dataset".into(), self.dataset.clone().into());
        if let Some(scope) = ctx.event_scope() {
            let mut leaf = None;
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str(fields.as_str())
                {
                    // `otel.*` fields steer the span exporter; they are not facts for a log.
                    line.extend(
                        fields
                            .into_iter()
                            .filter(|(key, _)| !key.starts_with("otel.")),
                    );
                }
                leaf = Some(span.id());
            }
            if let Some(id) = leaf {
                self.trace_ids(&id, &mut line);
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
