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

/// The whole `main` of a part without data of its own (the gateway): parse the flags, bind the
/// address `listen` picks (a failure names `listen_setting`), and serve until SIGTERM/SIGINT.
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
    main_of(
        name,
        listen_setting,
        listen,
        serve,
        None::<NoMigrations<C, E>>,
    )
    .await
}

/// [`service_main`] for a service with a database: `<binary> migrate` applies its migrations
/// (and declares its queue) with `migrate` and exits, as a deployment's migration job runs it.
pub async fn migrating_service_main<C, F, Fut, E, M, MFut>(
    name: &'static str,
    listen_setting: &'static str,
    listen: fn(&C) -> SocketAddr,
    serve: F,
    migrate: M,
) -> ExitCode
where
    C: clap::Args,
    F: FnOnce(C, Start) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
    M: FnOnce(C) -> MFut,
    MFut: Future<Output = Result<(), E>>,
{
    main_of(name, listen_setting, listen, serve, Some(migrate)).await
}

async fn main_of<C, F, Fut, E, M, MFut>(
    name: &'static str,
    listen_setting: &'static str,
    listen: fn(&C) -> SocketAddr,
    serve: F,
    migrate: Option<M>,
) -> ExitCode
where
    C: clap::Args,
    F: FnOnce(C, Start) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
    M: FnOnce(C) -> MFut,
    MFut: Future<Output = Result<(), E>>,
{
    let mut command = ServiceCli::<C>::command()
        .name(name)
        .about(format!("The shop mesh's {name}"));
    if migrate.is_some() {
        command = command.subcommand(clap::Command::new(MIGRATE).about(
            "Apply the database migrations and declare the event queue, then exit (idempotent)",
        ));
    }
    let matches = command.get_matches();
    let cli = ServiceCli::<C>::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let Some(migrate) = migrate
        && matches.subcommand_name() == Some(MIGRATE)
    {
        return run_task(name, &cli.telemetry, migrate(cli.config)).await;
    }
    run_service(name, &cli.telemetry, &cli.metrics, |shutdown| async move {
        let listener = or_exit(bind(listen_setting, listen(&cli.config)).await);
        serve(cli.config, Start::new(listener, shutdown)).await
    })
    .await
}

const MIGRATE: &str = "migrate";

/// The type of the migrate step a binary without migrations does not have.
type NoMigrations<C, E> = fn(C) -> std::future::Ready<Result<(), E>>;

/// Runs a one-off task of a service binary (no server, no metrics endpoint) to its end.
async fn run_task<E>(
    name: &str,
    telemetry_args: &TelemetryArgs,
    task: impl Future<Output = Result<(), E>>,
) -> ExitCode
where
    E: std::error::Error + 'static,
{
    let telemetry = match telemetry::init(name, telemetry_args) {
        Ok(telemetry) => telemetry,
        Err(error) => exit_on_config_error(&error),
    };
    crate::allocator::return_freed_memory();
    let result = task.await;
    telemetry.shutdown().await;
    exit_code(name, result)
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
    telemetry.shutdown().await;
    exit_code(name, result)
}

/// Success is 0; a configuration error (anywhere in the error's source chain) exits 2 with one
/// line naming the setting; anything else is 1.
fn exit_code<E: std::error::Error + 'static>(name: &str, result: Result<(), E>) -> ExitCode {
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
