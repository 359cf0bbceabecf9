use std::process::ExitCode;

use clap::Parser;
use shop_common::{
    config::{MetricsArgs, TelemetryArgs, bind},
    process::{or_exit, run_service},
};

/// The shop mesh's REST gateway (the local stand-in for Kong).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: gateway::Config,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Cli {
        config,
        telemetry,
        metrics,
    } = Cli::parse();
    run_service(gateway::NAME, &telemetry, &metrics, |shutdown| async move {
        let listener = or_exit(bind("GATEWAY_HTTP_ADDR", config.listen).await);
        gateway::serve(config, listener, shutdown).await
    })
    .await
}
