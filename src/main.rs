use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shop::{
    dlq::{self, DlqArgs},
    load::{self, LoadCommand},
    probe::{self, ProbeArgs},
    up::{self, UpArgs},
};
use shop_common::{
    config::{TelemetryArgs, exit_on_config_error},
    shutdown,
    telemetry::{self, Telemetry},
};
use tokio_util::sync::CancellationToken;

/// Operator CLI for the shop mesh.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service and the gateway in this process, on the embedded defaults.
    Up(UpArgs),
    /// Load the shop with virtual shoppers (REST or gRPC, closed or open model) and report
    /// latency from each request's due time, throughput and errors. Exits 1 above
    /// --max-error-rate, 2 when it cannot run.
    Load(LoadCommand),
    /// Health-check gRPC servers and GET URLs: exits 0 when every check passes.
    Probe(ProbeArgs),
    /// Inspect and replay events.
    #[command(subcommand)]
    Events(EventsCommand),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Dead letters: events a consumer gave up on after its retries.
    Dlq(DlqArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry =
        telemetry::init("shop", &cli.telemetry).unwrap_or_else(|e| exit_on_config_error(&e));
    shop_common::allocator::return_freed_memory();
    let code = match cli.command {
        Command::Up(args) => run_up(&args, &telemetry).await,
        Command::Load(args) => match load::execute(&args).await {
            Ok(summary) => {
                println!("{summary}");
                if summary.passed() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "error: {} errors in {} requests ({:.2}%) exceed --max-error-rate {}",
                        summary.errors,
                        summary.requests,
                        summary.error_rate() * 100.0,
                        summary.max_error_rate
                    );
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Probe(args) => match probe::run(&args).await {
            Ok(checks) => {
                for check in &checks {
                    println!("{check}");
                }
                if checks.iter().all(|c| c.outcome.is_ok()) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Events(EventsCommand::Dlq(args)) => match dlq::run(&args).await {
            Ok(output) => {
                println!("{output}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
    };
    telemetry.shutdown().await;
    code
}

async fn run_up(args: &UpArgs, telemetry: &Telemetry) -> ExitCode {
    let token = CancellationToken::new();
    let system = match up::start(args, Some(telemetry), token.clone()).await {
        Ok(system) => system,
        Err(up::StartError::Config(error)) => exit_on_config_error(&error),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let signals = shutdown::cancel_on_signal(token);
    print!("shop is up:\n{}", system.endpoints);
    println!("Demo accounts (local only):");
    for (role, email, password) in up::DEMO_ACCOUNTS {
        println!("  {role:<9} {email:<22} {password}");
    }
    println!("Press Ctrl-C to stop.");
    let result = system.wait().await;
    signals.abort();
    match result {
        Ok(()) => {
            println!("shop stopped");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}
