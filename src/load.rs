//! `shop load`: a small HTTP load generator for benchmarking the gateway (or any URL). A fixed
//! number of connections send requests back to back for a duration; the report gives
//! throughput, latency percentiles and anything that was not a 2xx.

use std::{
    fmt,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The URL to GET, e.g. http://127.0.0.1:8080/v1/products/<id>.
    #[arg(long)]
    pub url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Extra request headers, `Name: value`, repeatable (e.g. an Authorization header).
    #[arg(long = "header")]
    pub headers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--url: {0}")]
    Url(String),
    #[error("--header {0:?} must be `Name: value`")]
    Header(String),
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub not_ok: u64,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub async fn run(args: &LoadArgs) -> Result<Report, LoadError> {
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e: http::uri::InvalidUri| LoadError::Url(e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(LoadError::Url("only http:// URLs are supported".to_owned()));
    }
    let mut headers = http::HeaderMap::new();
    for raw in &args.headers {
        let (name, value) = raw
            .split_once(':')
            .ok_or_else(|| LoadError::Header(raw.clone()))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| LoadError::Header(raw.clone()))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| LoadError::Header(raw.clone()))?;
        headers.insert(name, value);
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (client, uri, headers) = (client.clone(), uri.clone(), headers.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut not_ok, mut failed) = (0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let mut request = http::Request::get(uri.clone());
                if let Some(h) = request.headers_mut() {
                    h.extend(headers.clone());
                }
                let Ok(request) = request.body(Empty::new()) else {
                    failed += 1;
                    continue;
                };
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => {
                        let success = response.status().is_success();
                        let body = response.into_body().collect().await;
                        latencies.push(sent.elapsed());
                        match (success, body.is_ok()) {
                            (true, true) => ok += 1,
                            (false, true) => not_ok += 1,
                            _ => failed += 1,
                        }
                    }
                    Err(_) => failed += 1,
                }
            }
            (latencies, ok, not_ok, failed)
        });
    }
    let mut latencies = Vec::new();
    let (mut ok, mut not_ok, mut failed) = (0, 0, 0);
    while let Some(joined) = workers.join_next().await {
        if let Ok((l, o, n, f)) = joined {
            latencies.extend(l);
            ok += o;
            not_ok += n;
            failed += f;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Report {
        requests: ok + not_ok + failed,
        ok,
        not_ok,
        failed,
        elapsed,
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
