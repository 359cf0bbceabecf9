//! Logging and tracing set-up: `tracing` with JSON logs (text on a terminal), W3C trace-context
//! propagation, and OTLP/gRPC trace export when an endpoint is configured.

use std::io::IsTerminal;

use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{ConfigError, LogFormat, Source, TelemetryArgs, value_or_file};

/// Keeps the tracer provider alive; call [`Telemetry::shutdown`] after draining so the last spans
/// are exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "trace provider shutdown failed");
        }
    }
}

/// Installs the global subscriber and propagator. Spans always get OpenTelemetry ids (so logs carry
/// a trace id and context propagates); they are exported only when `otlp_endpoint` is set.
pub fn init(service_name: &str, args: &TelemetryArgs) -> Result<Telemetry, ConfigError> {
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|e| ConfigError::new("RUST_LOG", format!("{e}")))?;

    let headers = export_headers(args)?;
    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service_name.to_owned())
            .build(),
    );
    if let Some(endpoint) = &args.otlp_endpoint {
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            // The exporter would silently assume https; make the operator say which.
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{endpoint:?} needs a scheme, e.g. http://otel-collector:4317"),
            ));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_metadata(headers)
            .build()
            .map_err(|e| ConfigError::new("OTEL_EXPORTER_OTLP_ENDPOINT", e))?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer(service_name.to_owned());
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());

    let json = match args.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    // A second init in one process (tests) keeps the first subscriber; that is not an error.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Ok(Telemetry { provider })
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS` (or its `_FILE`): comma-separated `key=value` pairs.
fn export_headers(args: &TelemetryArgs) -> Result<MetadataMap, ConfigError> {
    let mut headers = MetadataMap::new();
    let Some((raw, source)) = value_or_file(
        "OTEL_EXPORTER_OTLP_HEADERS",
        args.otlp_headers.clone(),
        args.otlp_headers_file.as_deref(),
    )?
    else {
        return Ok(headers);
    };
    let setting = match source {
        Source::Direct => "OTEL_EXPORTER_OTLP_HEADERS",
        Source::File(_) => "OTEL_EXPORTER_OTLP_HEADERS_FILE",
    };
    for (index, pair) in raw.expose().split(',').map(str::trim).enumerate() {
        // Values are secrets: errors name the position, never the content.
        let invalid = |why: &str| ConfigError::new(setting, format!("header #{} {why}", index + 1));
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid("is not key=value"))?;
        let key = MetadataKey::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid("has an invalid name"))?;
        let value =
            MetadataValue::try_from(value.trim()).map_err(|_| invalid("has an invalid value"))?;
        headers.insert(key, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(headers: &str) -> TelemetryArgs {
        TelemetryArgs {
            otlp_headers: Some(headers.to_owned()),
            ..TelemetryArgs::default()
        }
    }

    #[test]
    fn export_headers_are_parsed_as_key_value_pairs() -> Result<(), ConfigError> {
        let headers = export_headers(&args("Authorization=Bearer abc, x-tenant=shop"))?;
        assert_eq!(
            headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer abc")
        );
        assert_eq!(
            headers.get("x-tenant").and_then(|v| v.to_str().ok()),
            Some("shop")
        );
        Ok(())
    }

    #[test]
    fn a_malformed_header_is_named_by_position_not_content() {
        let err = export_headers(&args("a=b,api-key-without-equals")).expect_err("must fail");
        assert_eq!(err.setting, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(err.reason.contains("header #2"), "{err}");
        assert!(!err.reason.contains("api-key"), "{err}");
    }
}
