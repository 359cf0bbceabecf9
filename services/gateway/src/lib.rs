//! The local stand-in for Kong: the public REST edge in front of the gRPC services.
//! For now it answers its own health check and a JSON 404 for every other path; REST to gRPC
//! transcoding from `kong/kong.yaml` is the gateway issue's work.

mod config;

use axum::{
    Json, Router,
    http::{Method, StatusCode, Uri},
    response::IntoResponse,
    routing::get,
};
pub use config::Config;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service logs and reports under.
pub const NAME: &str = "gateway";

/// Serves the gateway on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish.
pub async fn serve(
    _config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "SERVING" })) }),
        )
        .fallback(no_route);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service = NAME, %addr, "http server listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Unknown routes answer like gRPC NOT_FOUND mapped to HTTP, the error shape of every route.
async fn no_route(method: Method, uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "code": 5,
            "message": format!("no route for {method} {}", uri.path()),
            "details": [],
        })),
    )
}
