//! `shop load`: a load generator for the shop. Virtual shoppers browse, search, view products and
//! check out (or hit one endpoint) over REST through the gateway or over gRPC straight to the
//! services, in a closed model (users with think times) or an open one (a fixed arrival rate).
//! Every request is timed from when it was due, so a stalled server cannot hide its latency.
//!
//! `args` reads the command line, `target` refuses remote systems, `world` and `accounts` prepare
//! the catalogue and signed-in accounts, `journey` is what a user does through a `driver`
//! (`rest` or `grpc`), `model` decides when requests are due, `stats` records, and `report` and
//! `plot` tell.

mod accounts;
mod args;
mod driver;
mod grpc;
mod journey;
mod model;
mod plot;
mod report;
mod rest;
mod stats;
mod target;
mod world;

use std::{
    fmt,
    fs::File,
    io::{BufWriter, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

pub use args::{LoadCommand, TargetKind, ThinkArg};
pub use journey::Scenario;
pub use report::{ErrorKind, Percentile, StepSummary, Summary};
pub use stats::{Latencies, Orders, Point};
use tokio::time::Instant;

use self::{
    accounts::Accounts,
    args::{Plan, Target},
    driver::Driver,
    grpc::GrpcDriver,
    journey::Context,
    rest::RestDriver,
    stats::Recorder,
    world::Catalogue,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Open files kept free for everything but REST connections (listeners, logs, the runtime).
const SPARE_FILES: u64 = 256;
/// How often the token refresher looks for tokens near their expiry.
const REFRESH_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--url: {0}")]
    Url(String),
    #[error("--header {0:?} must be `Name: value`")]
    Header(String),
    #[error("{0}")]
    Argument(String),
    #[error(
        "refusing to load {target}: it resolves to {address}, which is not this machine; \
         pass --allow-remote to load a system you are allowed to load"
    )]
    Remote { target: String, address: IpAddr },
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("set-up failed: {0}")]
    Setup(String),
}

/// Runs `shop load` as the command line asks: checks, prepares, loads, reports (the `--json`
/// and `--svg` files are created first, so a bad path fails before the run, not after it).
pub async fn execute(command: &LoadCommand) -> Result<Summary, LoadError> {
    let plan = Plan::try_from(command)?;
    let json = command.json.as_deref().map(create).transpose()?;
    let svg = command.svg.as_deref().map(create).transpose()?;
    let summary = drive(&plan).await?;
    if let Some((path, file)) = json {
        let mut out = BufWriter::new(file);
        serde_json::to_writer_pretty(&mut out, &summary)
            .map_err(std::io::Error::from)
            .and_then(|()| out.flush())
            .map_err(|source| LoadError::Output { path, source })?;
    }
    if let Some((path, mut file)) = svg {
        let text = plot::svg(&summary).map_err(|e| LoadError::Output {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        file.write_all(text.as_bytes())
            .map_err(|source| LoadError::Output { path, source })?;
    }
    Ok(summary)
}

fn create(path: &Path) -> Result<(PathBuf, File), LoadError> {
    let file = File::create(path).map_err(|source| LoadError::Output {
        path: path.to_owned(),
        source,
    })?;
    Ok((path.to_owned(), file))
}

/// The original single-URL arguments: `concurrency` connections GET `url` back to back for
/// `duration`. Kept for callers that build them in code.
#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub url: String,
    pub concurrency: u32,
    pub duration: Duration,
    pub headers: Vec<String>,
}

/// What a [`LoadArgs`] run measured, in its original shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub requests: u64,
    /// Answered with a 2xx.
    pub ok: u64,
    /// Answered with another status.
    pub not_ok: u64,
    /// Not answered: connection errors, timeouts, cut off.
    pub failed: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "requests   {} in {:.1?} ({:.0}/s)",
            self.requests,
            self.elapsed,
            self.per_second()
        )?;
        writeln!(
            f,
            "status     {} 2xx, {} other, {} failed",
            self.ok, self.not_ok, self.failed
        )?;
        write!(
            f,
            "latency    p50 {:.2?}  p90 {:.2?}  p99 {:.2?}  max {:.2?}",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

/// Runs a [`LoadArgs`] load: the `url` scenario, closed, no think time.
pub async fn run(args: &LoadArgs) -> Result<Report, LoadError> {
    let summary = drive(&Plan::try_from(args)?).await?;
    let statuses: u64 = summary
        .error_kinds
        .iter()
        .filter(|e| e.kind.starts_with("HTTP "))
        .map(|e| e.count)
        .sum();
    let ms = |ms: f64| Duration::from_secs_f64(ms / 1000.0);
    Ok(Report {
        requests: summary.requests,
        ok: summary.requests.saturating_sub(summary.errors),
        not_ok: statuses,
        failed: summary.errors.saturating_sub(statuses),
        elapsed: Duration::from_secs_f64(summary.elapsed_s),
        p50: ms(summary.overall.p50_ms),
        p90: ms(summary.overall.p90_ms),
        p99: ms(summary.overall.p99_ms),
        max: ms(summary.overall.max_ms),
    })
}

/// Raises this process's soft limit of open files to the hard limit: each REST request in
/// flight holds a connection. Returns the limit in force.
fn raise_open_files() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

async fn drive(plan: &Plan) -> Result<Summary, LoadError> {
    if !plan.allow_remote {
        target::ensure_loopback(&plan.target).await?;
    }
    let open_files = raise_open_files();
    match &plan.target {
        Target::Rest { url, headers } => {
            let driver = RestDriver::new(url.clone(), headers.clone(), CONNECT_TIMEOUT);
            let mut plan_schedule = plan.schedule;
            if let Some(limit) = open_files {
                let room =
                    usize::try_from(limit.saturating_sub(SPARE_FILES).max(1)).unwrap_or(usize::MAX);
                if room < plan_schedule.max_in_flight && plan_schedule.progress {
                    eprintln!(
                        "note: at most {room} requests in flight (the open-file limit is {limit})"
                    );
                }
                plan_schedule.max_in_flight = plan_schedule.max_in_flight.min(room);
            }
            load(driver, plan, plan_schedule).await
        }
        Target::Grpc(addresses) => {
            let driver = GrpcDriver::connect(addresses, CONNECT_TIMEOUT)
                .await
                .map_err(LoadError::Setup)?;
            load(driver, plan, plan.schedule).await
        }
    }
}

/// Prepares what the scenario needs, runs the model, and sums up.
async fn load<D: Driver>(
    driver: D,
    plan: &Plan,
    schedule: model::Schedule,
) -> Result<Summary, LoadError> {
    let preparing = Instant::now();
    let scenario = schedule.scenario;
    let catalogue = if scenario.needs_catalogue() {
        let catalogue = Catalogue::read(&driver, plan.timeout)
            .await
            .map_err(LoadError::Setup)?;
        if let Some(restock) = &plan.restock {
            let token =
                world::admin_token(&driver, &restock.email, &restock.password, plan.timeout)
                    .await
                    .map_err(LoadError::Setup)?;
            catalogue
                .restock(&driver, &token, restock.stock, plan.timeout)
                .await
                .map_err(LoadError::Setup)?;
        }
        Some(catalogue)
    } else {
        None
    };
    let accounts = if scenario.needs_accounts() {
        // Each sign-in is an argon2 hash on the server; about one per core at a time is all it
        // runs, so more in parallel would only be refused.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let accounts = Accounts::sign_in(
            &driver,
            plan.accounts,
            parallel,
            plan.timeout,
            schedule.progress,
        )
        .await
        .map_err(LoadError::Setup)?;
        Some(accounts)
    } else {
        None
    };
    if schedule.progress {
        eprintln!(
            "ready in {:.1?}: {} products, {} accounts signed in; loading for {}",
            preparing.elapsed(),
            catalogue.as_ref().map_or(0, |c| c.products.len()),
            accounts.as_ref().map_or(0, Accounts::len),
            humantime::format_duration(plan.duration),
        );
    }

    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let ctx = Arc::new(Context {
        driver,
        catalogue,
        accounts,
        recorder: recorder.clone(),
        deadline: started + plan.duration,
        timeout: plan.timeout,
        confirm_timeout: plan.confirm_timeout,
    });
    let refresher = tokio::spawn(refresh(ctx.clone()));
    model::run(ctx.clone(), schedule).await;
    refresher.abort();
    // Aborted on purpose; its outcome is in the recorder.
    let _ = refresher.await;
    let elapsed = started.elapsed();

    let labels = report::Labels {
        scenario: scenario.name().to_owned(),
        target: plan.target.describe(),
        model: plan.describe_model(),
        duration_s: plan.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        max_error_rate: plan.max_error_rate,
    };
    Ok(Summary::new(&recorder.totals(), labels))
}

/// Keeps the shared tokens fresh until the deadline (access tokens live 15 minutes).
async fn refresh<D: Driver>(ctx: Arc<Context<D>>) {
    let Some(accounts) = &ctx.accounts else {
        return;
    };
    let mut every = tokio::time::interval(REFRESH_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while every.tick().await < ctx.deadline {
        accounts
            .refresh_due(&ctx.driver, &ctx.recorder, ctx.timeout)
            .await;
    }
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
