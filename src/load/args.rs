//! `shop load`'s command line, and the checked [`Plan`] made from it (or from the original
//! single-URL [`super::LoadArgs`]).

use std::{path::PathBuf, time::Duration};

use clap::Parser as _;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::{
    LoadArgs, LoadError,
    grpc::Addresses,
    journey::Scenario,
    model::{Model, Schedule, Think},
};

const MAX_USERS: u32 = 100_000;
const MAX_RATE: f64 = 100_000.0;
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// REST through the gateway at `--url`.
    Rest,
    /// gRPC straight to the services at `--user-addr`, `--product-addr`, `--order-addr`.
    Grpc,
}

/// Load the shop with virtual shoppers and report latency (from each request's due time),
/// throughput and errors.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadCommand {
    /// What each virtual user does; `journey` weighs browse 10, view 10, search 3, checkout 1.
    #[arg(long, value_enum, default_value_t = Scenario::Journey)]
    pub scenario: Scenario,
    #[arg(long, value_enum, default_value_t = TargetKind::Rest)]
    pub target: TargetKind,
    /// REST: the gateway's base URL; with `--scenario url`, the URL to GET.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// gRPC: user-service, as `shop up` prints it.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub user_addr: String,
    /// gRPC: product-service.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub product_addr: String,
    /// gRPC: order-service.
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub order_addr: String,
    /// Closed model: this many virtual users (default 10).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_USERS)))]
    pub users: Option<u32>,
    /// Closed model: a user's pause after each step, uniform in `MIN..MAX` (or fixed: `2s`).
    #[arg(long, value_parser = parse_think)]
    pub think: Option<ThinkArg>,
    /// Open model: arrivals per second (`2000/s`, `600/m`), each one step of the scenario,
    /// whatever the server is doing.
    #[arg(long, value_parser = parse_rate, conflicts_with_all = ["users", "think", "concurrency"])]
    pub rate: Option<f64>,
    /// Closed model with no think time: this many users sending back to back.
    #[arg(long, conflicts_with_all = ["users", "think"],
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_USERS)))]
    pub concurrency: Option<u32>,
    /// Closed: users start evenly over this; open: the rate grows linearly over it.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp_up: Duration,
    /// How long requests are due; then the run stops by itself.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// After `--duration`, how long answers in flight are awaited before they count as cut off.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// One request's limit; a slower answer counts as a timeout error.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// How long a placed order may take to be confirmed before it counts as an error.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub confirm_timeout: Duration,
    /// Requests in flight at once (open model: arrivals in progress). Due requests beyond it
    /// wait, and the wait counts in their latency. REST is also held below the open-file limit.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Accounts logged in (or registered) before the run, whose tokens users share.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub accounts: u32,
    /// Before the run, set every product's stock to this (as the admin), so checkouts of a long
    /// run do not run the shelves empty.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    pub restock: Option<i32>,
    /// The admin that `--restock` logs in as (the `shop up` demo admin by default).
    #[arg(long, default_value = "admin@shop.local")]
    pub admin_email: String,
    #[arg(
        long,
        default_value = "admin-password-local",
        env = "SHOP_LOAD_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: String,
    /// REST: an extra request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Seed of the users' random choices, for a repeatable run (random by default).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a plot (latency over time, throughput, percentiles) as SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Load a target that is not on this machine (loopback). Only systems you may load.
    #[arg(long)]
    pub allow_remote: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Exit 1 when errors exceed this share of requests.
    #[arg(long, default_value_t = 0.01)]
    pub max_error_rate: f64,
}

/// Parses `shop load`'s arguments (without `shop load` itself); for tests and embedding.
#[derive(Debug, clap::Parser)]
#[command(name = "shop load")]
struct Standalone {
    #[command(flatten)]
    load: LoadCommand,
}

impl LoadCommand {
    pub fn try_parse_from(args: &[&str]) -> Result<Self, clap::Error> {
        let argv = std::iter::once("shop-load").chain(args.iter().copied());
        Ok(Standalone::try_parse_from(argv)?.load)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinkArg(Think);

fn parse_think(raw: &str) -> Result<ThinkArg, String> {
    let one = |s: &str| match s.trim() {
        "0" => Ok(Duration::ZERO),
        s => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}")),
    };
    let (min, max) = match raw.split_once("..") {
        Some((min, max)) => (one(min)?, one(max)?),
        None => (one(raw)?, one(raw)?),
    };
    if min > max {
        return Err(format!("{raw:?}: the minimum is above the maximum"));
    }
    if max > Duration::from_secs(3600) {
        return Err(format!("{raw:?}: at most 1h"));
    }
    Ok(ThinkArg(Think { min, max }))
}

fn parse_rate(raw: &str) -> Result<f64, String> {
    let (number, per) = raw.split_once('/').unwrap_or((raw, "s"));
    let seconds = match per.trim() {
        "s" | "sec" | "1s" => 1.0,
        "m" | "min" | "1m" => 60.0,
        "h" | "1h" => 3600.0,
        other => {
            return Err(format!(
                "{other:?}: give the rate per s, m or h, like 2000/s"
            ));
        }
    };
    let count: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?}: give the rate as a number per s, m or h, like 2000/s"))?;
    let per_second = count / seconds;
    if !(per_second > 0.0 && per_second <= MAX_RATE) {
        return Err(format!("{raw:?}: between 0 and {MAX_RATE}/s"));
    }
    Ok(per_second)
}

pub(crate) enum Target {
    Rest { url: Uri, headers: HeaderMap },
    Grpc(Addresses),
}

impl Target {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Rest { url, .. } => format!("rest {url}"),
            Self::Grpc(a) => format!(
                "grpc user {} product {} order {}",
                a.user, a.product, a.order
            ),
        }
    }
}

/// Admin credentials and the stock `--restock` sets.
pub(crate) struct Restock {
    pub(crate) stock: i32,
    pub(crate) email: String,
    pub(crate) password: String,
}

/// A checked run: everything [`super::execute`] needs.
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) schedule: Schedule,
    pub(crate) duration: Duration,
    pub(crate) timeout: Duration,
    pub(crate) confirm_timeout: Duration,
    pub(crate) accounts: usize,
    pub(crate) restock: Option<Restock>,
    pub(crate) allow_remote: bool,
    pub(crate) max_error_rate: f64,
}

impl Plan {
    pub(crate) fn describe_model(&self) -> String {
        let s = &self.schedule;
        let model = match s.model {
            Model::Closed {
                users,
                think,
                ramp_up,
            } => format!(
                "closed: {users} users, think {}..{}, ramp-up {}",
                humantime::format_duration(think.min),
                humantime::format_duration(think.max),
                humantime::format_duration(ramp_up),
            ),
            Model::Open {
                per_second,
                ramp_up,
            } => format!(
                "open: {per_second}/s, ramp-up {}",
                humantime::format_duration(ramp_up)
            ),
        };
        format!(
            "{model}, at most {} in flight, seed {}",
            s.max_in_flight, s.seed
        )
    }
}

fn url(raw: &str) -> Result<Uri, LoadError> {
    let uri: Uri = raw
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(LoadError::Url("only http:// URLs are supported".to_owned()));
    }
    if uri.host().is_none() {
        return Err(LoadError::Url("the URL has no host".to_owned()));
    }
    Ok(uri)
}

fn headers(raw: &[String]) -> Result<HeaderMap, LoadError> {
    let mut headers = HeaderMap::new();
    for line in raw {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| LoadError::Header(line.clone()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| LoadError::Header(line.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| LoadError::Header(line.clone()))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn address(raw: &str) -> String {
    raw.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

fn bounded(flag: &str, value: Duration, max: Duration) -> Result<Duration, LoadError> {
    if value > max {
        return Err(LoadError::Argument(format!(
            "{flag} {} is longer than the limit of {}",
            humantime::format_duration(value),
            humantime::format_duration(max)
        )));
    }
    Ok(value)
}

impl TryFrom<&LoadCommand> for Plan {
    type Error = LoadError;

    fn try_from(c: &LoadCommand) -> Result<Self, LoadError> {
        let target = match c.target {
            TargetKind::Rest => Target::Rest {
                url: url(&c.url)?,
                headers: headers(&c.headers)?,
            },
            TargetKind::Grpc if c.scenario == Scenario::Url => {
                return Err(LoadError::Argument(
                    "--scenario url GETs a URL: it needs --target rest".to_owned(),
                ));
            }
            TargetKind::Grpc if !c.headers.is_empty() => {
                return Err(LoadError::Argument(
                    "--header is for --target rest".to_owned(),
                ));
            }
            TargetKind::Grpc => Target::Grpc(Addresses {
                user: address(&c.user_addr),
                product: address(&c.product_addr),
                order: address(&c.order_addr),
            }),
        };
        let ramp_up = bounded("--ramp-up", c.ramp_up, MAX_DURATION)?;
        let model = match (c.rate, c.concurrency) {
            (Some(per_second), _) => Model::Open {
                per_second,
                ramp_up,
            },
            (None, Some(users)) => Model::Closed {
                users,
                think: Think {
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                },
                ramp_up,
            },
            (None, None) => Model::Closed {
                users: c.users.unwrap_or(10),
                think: c.think.map_or(
                    Think {
                        min: Duration::from_secs(1),
                        max: Duration::from_secs(5),
                    },
                    |ThinkArg(think)| think,
                ),
                ramp_up,
            },
        };
        if !(0.0..=1.0).contains(&c.max_error_rate) {
            return Err(LoadError::Argument(
                "--max-error-rate is a share between 0 and 1, like 0.01".to_owned(),
            ));
        }
        let duration = bounded("--duration", c.duration, MAX_DURATION)?;
        if duration.is_zero() {
            return Err(LoadError::Argument("--duration must be above 0".to_owned()));
        }
        Ok(Self {
            target,
            schedule: Schedule {
                scenario: c.scenario,
                model,
                max_in_flight: c.max_in_flight as usize,
                grace: bounded("--grace", c.grace, Duration::from_secs(600))?,
                seed: c.seed.unwrap_or_else(|| fastrand::u64(..)),
                progress: !c.quiet,
            },
            duration,
            timeout: bounded("--timeout", c.timeout, Duration::from_secs(600))?,
            confirm_timeout: bounded("--confirm-timeout", c.confirm_timeout, MAX_DURATION)?,
            accounts: c.accounts as usize,
            restock: c.restock.map(|stock| Restock {
                stock,
                email: c.admin_email.clone(),
                password: c.admin_password.clone(),
            }),
            allow_remote: c.allow_remote,
            max_error_rate: c.max_error_rate,
        })
    }
}

impl TryFrom<&LoadArgs> for Plan {
    type Error = LoadError;

    /// The original `shop load`: `concurrency` connections GETting one URL back to back.
    fn try_from(args: &LoadArgs) -> Result<Self, LoadError> {
        let users = args.concurrency.clamp(1, MAX_USERS);
        Ok(Self {
            target: Target::Rest {
                url: url(&args.url)?,
                headers: headers(&args.headers)?,
            },
            schedule: Schedule {
                scenario: Scenario::Url,
                model: Model::Closed {
                    users,
                    think: Think {
                        min: Duration::ZERO,
                        max: Duration::ZERO,
                    },
                    ramp_up: Duration::ZERO,
                },
                max_in_flight: users as usize,
                grace: Duration::from_secs(2),
                seed: 0,
                progress: false,
            },
            duration: bounded("--duration", args.duration, MAX_DURATION)?,
            timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
            accounts: 0,
            restock: None,
            allow_remote: false,
            max_error_rate: 1.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let command = LoadCommand::try_parse_from(args).map_err(|e| e.to_string())?;
        Plan::try_from(&command).map_err(|e| e.to_string())
    }

    #[test]
    fn think_ranges_and_rates_parse_with_their_units() {
        assert_eq!(
            parse_think("1s..5s"),
            Ok(ThinkArg(Think {
                min: Duration::from_secs(1),
                max: Duration::from_secs(5)
            }))
        );
        assert_eq!(
            parse_think("250ms").map(|t| t.0.max),
            Ok(Duration::from_millis(250))
        );
        assert!(parse_think("5s..1s").is_err());
        assert_eq!(parse_rate("2000/s"), Ok(2000.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn the_flags_pick_the_model() {
        let closed = plan(&["--users", "10000", "--think", "1s..5s", "--ramp-up", "30s"]);
        assert!(matches!(
            closed.map(|p| p.schedule.model),
            Ok(Model::Closed { users: 10_000, ramp_up, .. }) if ramp_up == Duration::from_secs(30)
        ));
        let open = plan(&["--rate", "2000/s"]);
        assert!(matches!(
            open.map(|p| p.schedule.model),
            Ok(Model::Open { per_second, .. }) if per_second == 2000.0
        ));
        let legacy = plan(&[
            "--scenario",
            "url",
            "--url",
            "http://127.0.0.1:1/x",
            "--concurrency",
            "32",
        ]);
        assert!(matches!(
            legacy.map(|p| p.schedule.model),
            Ok(Model::Closed { users: 32, think, .. }) if think.max.is_zero()
        ));
        assert!(plan(&["--rate", "10/s", "--users", "3"]).is_err());
    }

    #[test]
    fn bad_combinations_are_refused_naming_the_flag() {
        let Err(error) = plan(&["--target", "grpc", "--scenario", "url"]) else {
            panic!("url over grpc was accepted");
        };
        assert!(error.contains("--target rest"), "{error}");
        let Err(error) = plan(&["--url", "https://127.0.0.1"]) else {
            panic!("https was accepted");
        };
        assert_eq!(error, "--url: only http:// URLs are supported");
        let Err(error) = plan(&["--header", "no colon"]) else {
            panic!("a header without a colon was accepted");
        };
        assert!(error.contains("--header"), "{error}");
        let Err(error) = plan(&["--duration", "2days"]) else {
            panic!("two days was accepted");
        };
        assert!(error.contains("--duration"), "{error}");
    }
}
