//! Logging and tracing set-up. Logs are JSON lines in ECS names (text on a terminal), filtered
//! by `RUST_LOG`; traces are OpenTelemetry spans exported over OTLP/gRPC, filtered and sampled
//! by their own settings, so quieter logs never cost traces. Context propagates as W3C
//! `traceparent` and as B3 (what Istio's Envoy sends).
//!
//! Every part of the system gets its own [`Dispatch`]: a standalone binary installs one as the
//! global default, and `shop up` runs each service under its own, so each service's spans carry
//! its own `service.name` even when all of them share one process.

mod b3;
mod dispatch;
mod ecs;
mod propagation;
mod worker_threads;

use std::{
    io::IsTerminal,
    sync::{Arc, Mutex, OnceLock},
};

use opentelemetry::{global, propagation::TextMapCompositePropagator, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Dispatch;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::FilterExt as _, fmt::format::JsonFields,
    layer::SubscriberExt as _,
};

pub use b3::B3Propagator;
pub use dispatch::{DispatchLayer, InDispatch};
pub use propagation::{adopt_parent, inject};

use crate::config::{ConfigError, LogFormat, Source, TelemetryArgs, value_or_file};

/// The telemetry of a process: what its dispatches share, and the tracer providers to flush at
/// exit. Call [`Telemetry::shutdown`] after draining so the last spans are exported.
pub struct Telemetry {
    log_filter: String,
    trace_filter: String,
    json: bool,
    sampler: SamplerSetting,
    endpoint: Option<String>,
    headers: MetadataMap,
    providers: Mutex<Vec<SdkTracerProvider>>,
}

/// Reads the settings, installs the propagators, and makes `service_name`'s dispatch the
/// process's default.
pub fn init(service_name: &str, args: &TelemetryArgs) -> Result<Telemetry, ConfigError> {
    let telemetry = Telemetry::new(args)?;
    let dispatch = telemetry.dispatch(service_name)?;
    // A second init in one process (tests) keeps the first default; that is not an error.
    let _ = tracing::dispatcher::set_global_default(dispatch);
    Ok(telemetry)
}

impl Telemetry {
    /// Reads and checks the settings and installs the propagators; makes no dispatch yet.
    pub fn new(args: &TelemetryArgs) -> Result<Self, ConfigError> {
        let sampler = SamplerSetting::parse(args)?;
        if let Some(endpoint) = &args.otlp_endpoint
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            // The exporter would silently assume https; make the operator say which.
            return Err(ConfigError::new(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{endpoint:?} needs a scheme, e.g. http://otel-collector:4317"),
            ));
        }
        // Checked now so a bad filter is a configuration error at start, not later.
        EnvFilter::try_new(&args.log_filter)
            .map_err(|e| ConfigError::new("RUST_LOG", format!("{e}")))?;
        EnvFilter::try_new(&args.trace_filter)
            .map_err(|e| ConfigError::new("OTEL_TRACES_FILTER", format!("{e}")))?;
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            // W3C last, so it wins when a request carries both.
            Box::new(B3Propagator::default()),
            Box::new(TraceContextPropagator::new()),
        ]));
        Ok(Self {
            log_filter: args.log_filter.clone(),
            trace_filter: args.trace_filter.clone(),
            json: match args.log_format {
                LogFormat::Json => true,
                LogFormat::Text => false,
                LogFormat::Auto => !std::io::stdout().is_terminal(),
            },
            sampler,
            endpoint: args.otlp_endpoint.clone(),
            headers: export_headers(args)?,
            providers: Mutex::new(Vec::new()),
        })
    }

    /// The dispatch of one part of the system: its logs and spans say `service_name`.
    pub fn dispatch(&self, service_name: &str) -> Result<Dispatch, ConfigError> {
        let mut provider = SdkTracerProvider::builder()
            .with_sampler(self.sampler.sampler())
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_owned())
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(self.headers.clone())
                .build()
                .map_err(|e| ConfigError::new("OTEL_EXPORTER_OTLP_ENDPOINT", e))?;
            provider = provider.with_batch_exporter(exporter);
        }
        let provider = provider.build();
        let tracer = provider.tracer(service_name.to_owned());
        self.providers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(provider);

        let logs = || EnvFilter::new(&self.log_filter);
        let own_dispatch = Arc::new(OnceLock::new());
        let log_layer = if self.json {
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(ecs::Ecs::new(service_name, own_dispatch.clone()))
                .with_ansi(false)
                .with_filter(logs())
                .boxed()
        } else {
            tracing_subscriber::fmt::layer().with_filter(logs()).boxed()
        };
        // Nothing here reads OpenTelemetry's current context (spans carry their own), and
        // busy/idle times and thread ids are not in the conventions a backend shows: without
        // them, entering and leaving a span (each poll of an instrumented future) costs the
        // trace layer nothing.
        let trace_layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_context_activation(false)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(EnvFilter::new(&self.trace_filter));
        // Every layer has a filter: one without would take an interest in every span and event
        // (h2's and hyper's trace-level ones too), and the registry would make and track them
        // all, a quarter of the gateway's CPU under load. Pinning cares only for the spans the
        // other two keep.
        let pin_worker_threads = worker_threads::PinWorkerThreads::new(own_dispatch.clone())
            .with_filter(logs().or(EnvFilter::new(&self.trace_filter)));
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(pin_worker_threads)
                .with(log_layer)
                .with(trace_layer),
        );
        // The log format reads trace ids through its own dispatch (inside a dispatch's callback
        // the thread's current dispatch is not available), and SQLite's connection threads
        // adopt it as their default.
        let _ = own_dispatch.set(dispatch.downgrade());
        Ok(dispatch)
    }

    /// Flushes and stops every tracer provider. The flush blocks until the exporters answered;
    /// it runs off the async workers, which the exporters' own connections need.
    pub async fn shutdown(self) {
        let providers = self
            .providers
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let flushed = tokio::task::spawn_blocking(move || {
            for provider in providers {
                if let Err(error) = provider.shutdown() {
                    tracing::warn!(%error, "trace provider shutdown failed");
                }
            }
        })
        .await;
        if let Err(error) = flushed {
            tracing::warn!(%error, "trace provider shutdown did not finish");
        }
    }
}

/// `OTEL_TRACES_SAMPLER` and its ratio, as the OpenTelemetry specification names them.
#[derive(Debug, Clone, Copy)]
enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedOn,
    ParentBasedOff,
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    fn parse(args: &TelemetryArgs) -> Result<Self, ConfigError> {
        let ratio = match &args.trace_sampler_arg {
            None => 1.0,
            Some(raw) => raw
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ConfigError::new(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("{raw:?} must be a ratio from 0.0 to 1.0"),
                    )
                })?,
        };
        Ok(match args.trace_sampler.as_str() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio),
            "parentbased_always_on" => Self::ParentBasedOn,
            "parentbased_always_off" => Self::ParentBasedOff,
            "parentbased_traceidratio" => Self::ParentBasedRatio(ratio),
            other => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "{other:?} is not a sampler; use parentbased_always_on, parentbased_traceidratio, parentbased_always_off, always_on, always_off or traceidratio"
                    ),
                ));
            }
        })
    }

    fn sampler(self) -> Sampler {
        let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
            Self::ParentBasedOn => parent_based(Sampler::AlwaysOn),
            Self::ParentBasedOff => parent_based(Sampler::AlwaysOff),
            Self::ParentBasedRatio(ratio) => parent_based(Sampler::TraceIdRatioBased(ratio)),
        }
    }
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
    fn samplers_and_ratios_are_checked_by_name() {
        let with = |name: &str, arg: Option<&str>| TelemetryArgs {
            trace_sampler: name.to_owned(),
            trace_sampler_arg: arg.map(str::to_owned),
            ..TelemetryArgs::default()
        };
        assert!(SamplerSetting::parse(&with("parentbased_traceidratio", Some("0.25"))).is_ok());
        let unknown = SamplerSetting::parse(&with("sometimes", None)).err();
        assert_eq!(
            unknown.map(|e| e.setting).as_deref(),
            Some("OTEL_TRACES_SAMPLER")
        );
        let ratio = SamplerSetting::parse(&with("traceidratio", Some("1.5"))).err();
        assert_eq!(
            ratio.map(|e| e.setting).as_deref(),
            Some("OTEL_TRACES_SAMPLER_ARG")
        );
    }

    #[test]
    fn a_malformed_header_is_named_by_position_not_content() {
        let err = export_headers(&args("a=b,api-key-without-equals")).expect_err("must fail");
        assert_eq!(err.setting, "OTEL_EXPORTER_OTLP_HEADERS");
        assert!(err.reason.contains("header #2"), "{err}");
        assert!(!err.reason.contains("api-key"), "{err}");
    }
}
