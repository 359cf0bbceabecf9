use std::process::ExitCode;

use clap::Parser;
use shop_common::{
    config::{MetricsArgs, TelemetryArgs, bind},
    process::{or_exit, run_service},
};

/// The shop mesh's product service.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: product_service::Config,
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
        product_service::NAME,
        &telemetry,
        &metrics,
        |shutdown| async move {
            let listener = or_exit(bind("PRODUCT_GRPC_ADDR", config.listen).await);
            product_service::serve(config, listener, shutdown).await
        },
    )
    .await
}
