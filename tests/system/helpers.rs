//! Starting the system and talking to it.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use shop::up::{self, Endpoints, System, UpArgs};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The whole system in this process on ephemeral ports; cancels itself when dropped.
pub(crate) struct TestSystem {
    pub(crate) endpoints: Endpoints,
    pub(crate) shutdown: CancellationToken,
    // Held so the parts keep running: dropping a JoinSet aborts its tasks.
    _system: System,
    _data: tempfile::TempDir,
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(crate) async fn spawn_system() -> anyhow::Result<TestSystem> {
    let shutdown = CancellationToken::new();
    let data = tempfile::tempdir()?;
    let system = up::start(&UpArgs::ephemeral(data.path()), None, shutdown.clone()).await?;
    Ok(TestSystem {
        endpoints: system.endpoints,
        shutdown,
        _system: system,
        _data: data,
    })
}

pub(crate) async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

pub(crate) async fn health_status(
    channel: &Channel,
    service: &str,
) -> anyhow::Result<ServingStatus> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Polls health until it reports `want`; health is NOT_SERVING until a server is ready.
pub(crate) async fn wait_for_health(
    channel: &Channel,
    want: ServingStatus,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let status = health_status(channel, "").await?;
        if status == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("health stayed {status:?}, wanted {want:?} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One plain HTTP/1.1 request; returns status, headers and body.
pub(crate) async fn http1(
    request: http::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap, bytes::Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .context("http request timed out")??;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

pub(crate) async fn http_get(url: &str) -> anyhow::Result<(http::StatusCode, String)> {
    let request = http::Request::get(url).body(Full::default())?;
    let (status, _, body) = http1(request).await?;
    Ok((status, String::from_utf8(body.to_vec())?))
}

/// The value of one sample in Prometheus text output, by its exact series text.
pub(crate) fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}
