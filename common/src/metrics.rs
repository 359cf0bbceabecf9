//! Prometheus metrics: the process-wide registry, the gRPC RED metrics, and the `/metrics` server.

use std::{net::SocketAddr, sync::LazyLock};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
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

/// The registry in Prometheus text format.
pub fn render() -> String {
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
