//! `shop probe`: is the system up? Health-checks gRPC servers (`grpc.health.v1`, overall status)
//! and GETs URLs expecting a 2xx answer. It is what the Helm chart's `helm test` pod runs inside
//! the cluster, and a quick check after `shop up`.

use std::{fmt, time::Duration};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use shop_common::{client::connect_lazy, config::ClientTlsArgs};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// A gRPC server to health-check, e.g. `http://user-service:50051`; repeatable.
    #[arg(long = "grpc")]
    pub grpc: Vec<String>,
    /// A URL to GET, expecting a 2xx answer; repeatable.
    #[arg(long = "http")]
    pub http: Vec<String>,
    /// How long one check may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep retrying failed checks for this long (a system that is still starting).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
    /// What `https://` targets are checked with, as the services' own channels are.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

#[derive(Debug, thiserror::Error)]
#[error("nothing to probe: give --grpc and/or --http")]
pub struct NothingToProbe;

/// One check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub target: String,
    /// What was seen (`SERVING`, `200 OK`), or why the check failed.
    pub outcome: Result<String, String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(seen) => write!(f, "ok    {}  {seen}", self.target),
            Err(why) => write!(f, "FAIL  {}  {why}", self.target),
        }
    }
}

/// Runs every check, retrying the failed ones until `args.wait` has passed.
pub async fn run(args: &ProbeArgs) -> Result<Vec<Check>, NothingToProbe> {
    if args.grpc.is_empty() && args.http.is_empty() {
        return Err(NothingToProbe);
    }
    let deadline = tokio::time::Instant::now() + args.wait;
    loop {
        let checks = once(args).await;
        let done = checks.iter().all(|c| c.outcome.is_ok());
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(checks);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn once(args: &ProbeArgs) -> Vec<Check> {
    let mut checks = Vec::with_capacity(args.grpc.len() + args.http.len());
    for target in &args.grpc {
        let outcome = tokio::time::timeout(args.timeout, grpc_health(target, &args.tls))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", args.timeout)));
        checks.push(Check {
            target: format!("grpc {target}"),
            outcome,
        });
    }
    for target in &args.http {
        let outcome = tokio::time::timeout(args.timeout, http_get(target))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", args.timeout)));
        checks.push(Check {
            target: format!("http {target}"),
            outcome,
        });
    }
    checks
}

async fn grpc_health(target: &str, tls: &ClientTlsArgs) -> Result<String, String> {
    let endpoint =
        Endpoint::from_shared(target.to_owned()).map_err(|e| format!("not a URL: {e}"))?;
    let tls = tls.load().map_err(|e| e.to_string())?;
    let channel = connect_lazy("--grpc", &endpoint, &tls).map_err(|e| e.to_string())?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("health check failed: {status}"))?
        .into_inner()
        .status();
    match status {
        ServingStatus::Serving => Ok("SERVING".to_owned()),
        other => Err(other.as_str_name().to_owned()),
    }
}

async fn http_get(target: &str) -> Result<String, String> {
    let uri: http::Uri = target.parse().map_err(|e| format!("not a URL: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(uri)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.to_string())
    } else {
        Err(format!("answered {status}"))
    }
}
