use std::process::ExitCode;

use clap::Parser;
use shop_common::{
    config::{MetricsArgs, TelemetryArgs, bind},
    process::{or_exit, run_service},
};

/// The shop mesh's order service.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: order_service::Config,
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
    run_service(
        order_service::NAME,
        &telemetry,
        &metrics,
        |shutdown| async move {
            let listener = or_exit(bind("ORDER_GRPC_ADDR", config.listen).await);
            order_service::serve(config, listener, shutdown).await
        },
    )
    .await
}
