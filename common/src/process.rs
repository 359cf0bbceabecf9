//! The life of a service binary, so every `main.rs` stays a few lines: telemetry, signals, the
//! metrics endpoint, the service itself, and an exit code.

use std::{future::Future, net::SocketAddr, process::ExitCode};

use clap::{CommandFactory as _, FromArgMatches as _};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ConfigError, MetricsArgs, TelemetryArgs, bind, exit_on_config_error},
    metrics,
    service::Start,
    shutdown, telemetry,
};

/// A service binary's command line: its own settings plus the shared ones.
#[derive(Debug, clap::Parser)]
#[command(version)]
struct ServiceCli<C: clap::Args> {
    #[command(flatten)]
    config: C,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// The whole `main` of a service binary: parse the flags, bind the address `listen` picks
/// (a failure names `listen_setting`), and serve until SIGTERM/SIGINT.
pub async fn service_main<C, F, Fut, E>(
    name: &'static str,
    listen_setting: &'static str,
    listen: fn(&C) -> SocketAddr,
    serve: F,
) -> ExitCode
where
    C: clap::Args,
    F: FnOnce(C, Start) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let matches = ServiceCli::<C>::command()
        .name(name)
        .about(format!("The shop mesh's {name}"))
        .get_matches();
    let cli = ServiceCli::<C>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    run_service(name, &cli.telemetry, &cli.metrics, |shutdown| async move {
        let listener = or_exit(bind(listen_setting, listen(&cli.config)).await);
        serve(cli.config, Start::new(listener, shutdown)).await
    })
    .await
}

/// Runs one service until SIGTERM/SIGINT. Configuration errors (also those the service finds at
/// start, anywhere in its error's source chain) exit 2 with one line naming the setting; a
/// service failure exits 1.
pub async fn run_service<F, Fut, E>(
    name: &str,
    telemetry_args: &TelemetryArgs,
    metrics_args: &MetricsArgs,
    service: F,
) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
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
            if let Some(config) = config_error_in(&error) {
                exit_on_config_error(config);
            }
            tracing::error!(%error, service = name, "service failed");
            ExitCode::FAILURE
        }
    }
}

fn config_error_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConfigError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(config) = error.downcast_ref::<ConfigError>() {
            return Some(config);
        }
        current = error.source();
    }
    None
}

/// Lets a service's start-up report a bad setting the same way as the shared settings.
pub fn or_exit<T>(result: Result<T, ConfigError>) -> T {
    result.unwrap_or_else(|error| exit_on_config_error(&error))
}
