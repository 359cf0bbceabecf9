//! Prometheus metrics: the process-wide registry (with the process collector), the gRPC RED
//! metrics, runtime gauges sampled at each scrape, and the `/metrics` server.

mod runtime;

use std::{net::SocketAddr, sync::LazyLock};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub use runtime::report_pool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One registry per process: in `shop up` every service shares it, and the `grpc_service` label
/// tells them apart.
pub fn registry() -> &'static Registry {
    prometheus::default_registry()
}

/// Rate, errors and duration per gRPC method, named as go-grpc-prometheus names them so
/// existing dashboards and alerts work unchanged.
pub struct GrpcMetrics {
    pub started: IntCounterVec,
    pub handled: IntCounterVec,
    pub handling_seconds: HistogramVec,
}

pub fn grpc() -> &'static GrpcMetrics {
    static METRICS: LazyLock<GrpcMetrics> = LazyLock::new(|| {
        let labels = ["grpc_service", "grpc_method"];
        let started = IntCounterVec::new(
            Opts::new(
                "grpc_server_started_total",
                "gRPC calls started on the server",
            ),
            &labels,
        )
        .expect("valid metric definition");
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls completed, by status code",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("valid metric definition");
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from receiving a gRPC call to sending its status",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &labels,
        )
        .expect("valid metric definition");
        register(started.clone());
        register(handled.clone());
        register(handling_seconds.clone());
        GrpcMetrics {
            started,
            handled,
            handling_seconds,
        }
    });
    &METRICS
}

/// Registers a collector once; a second registration of the same name is a programming error
/// that is logged rather than allowed to take the process down.
pub fn register(collector: impl prometheus::core::Collector + 'static) {
    if let Err(error) = registry().register(Box::new(collector)) {
        tracing::error!(%error, "metric registration failed");
    }
}

/// A counter family, registered.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(counter.clone());
    counter
}

/// A gauge family, registered.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(gauge.clone());
    gauge
}

/// A gauge of fractional values (ages in seconds), registered.
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let gauge = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    register(gauge.clone());
    gauge
}

/// A single counter, registered.
pub fn counter(name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric definition");
    register(counter.clone());
    counter
}

/// A single gauge of fractional values, registered.
pub fn float_gauge(name: &str, help: &str) -> Gauge {
    let gauge = Gauge::new(name, help).expect("valid metric definition");
    register(gauge.clone());
    gauge
}

/// A single gauge, registered.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("valid metric definition");
    register(gauge.clone());
    gauge
}

/// A histogram family in seconds, registered.
pub fn seconds_histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric definition");
    register(histogram.clone());
    histogram
}

/// The registry in Prometheus text format, runtime gauges sampled now.
pub fn render() -> String {
    runtime::sample();
    TextEncoder::new()
        .encode_to_string(&registry().gather())
        .unwrap_or_else(|error| format!("# encoding failed: {error}\n"))
}

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(metrics_handler));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds `addr` and serves metrics there; for standalone service binaries.
pub async fn bind_and_serve(addr: SocketAddr, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener, shutdown).await
}

async fn metrics_handler() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
}
