//! The life of a service binary, so every `main.rs` stays a few lines: telemetry, signals, the
//! metrics endpoint, the service itself, and an exit code.

use std::{future::Future, process::ExitCode};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, MetricsArgs, TelemetryArgs, exit_on_config_error},
    metrics, shutdown, telemetry,
};

/// Runs one service until SIGTERM/SIGINT. Configuration errors exit 2 with one line naming the
/// setting; a service failure exits 1.
pub async fn run_service<F, Fut, E>(
    name: &str,
    telemetry_args: &TelemetryArgs,
    metrics_args: &MetricsArgs,
    service: F,
) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let telemetry = match telemetry::init(name, telemetry_args) {
        Ok(telemetry) => telemetry,
        Err(error) => exit_on_config_error(&error),
    };
    let listener = match crate::config::bind("METRICS_ADDR", metrics_args.metrics_addr).await {
        Ok(listener) => listener,
        Err(error) => exit_on_config_error(&error),
    };
    let shutdown = CancellationToken::new();
    let signals = shutdown::cancel_on_signal(shutdown.clone());
    let metrics_server = tokio::spawn(metrics::serve(listener, shutdown.clone()));

    let result = service(shutdown.clone()).await;
    shutdown.cancel();
    signals.abort();
    if let Ok(Err(error)) = metrics_server.await {
        tracing::warn!(%error, "metrics server failed");
    }
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, service = name, "service failed");
            ExitCode::FAILURE
        }
    }
}

/// Lets a service's start-up report a bad setting the same way as the shared settings.
pub fn or_exit<T>(result: Result<T, ConfigError>) -> T {
    result.unwrap_or_else(|error| exit_on_config_error(&error))
}
