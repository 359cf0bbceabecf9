//! The local stand-in for Kong: the public REST edge in front of the gRPC services. It reads
//! `kong/kong.yaml` (the file production Kong runs) and the protos' http annotations, transcodes
//! REST to gRPC, and applies the plugins it finds there: jwt, rate-limiting, correlation-id,
//! cors and prometheus (served on the metrics port, not the public one).

mod codec;
mod config;
mod errors;
mod kong;
mod metrics;
mod plugins;
mod proxy;
mod rate_limit;
mod routing;
mod rules;
mod transcode;
mod upstream;

use std::{fmt::Display, net::SocketAddr, sync::Arc};

use axum::{Json, Router, routing::get};
pub use config::Config;
use serde_json::json;
use shop_common::{
    client::lazy_channel,
    config::ConfigError,
    service::{Service, Start, StartError},
    telemetry::DispatchLayer,
};

use crate::{
    kong::KongConfig,
    metrics::KongMetrics,
    plugins::{Correlation, Cors, Jwt},
    proxy::Proxy,
    rate_limit::RateLimiter,
    routing::Routes,
};

/// The name this service logs and reports under.
pub const NAME: &str = "gateway";

/// Serves the gateway on `start.listener` until `start.shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(config: Config, start: Start) -> Result<(), StartError> {
    let client_tls = config.client_tls.load()?;
    let mut service = Service::without_events(NAME, start);
    let kong = KongConfig::load_or_builtin(config.kong_config.as_deref()).map_err(kong_config)?;
    let routes = Routes::new(&kong, &config.upstreams()?).map_err(kong_config)?;
    let channels = routes
        .upstreams
        .iter()
        .map(|u| lazy_channel("GATEWAY_UPSTREAMS", &u.url, &client_tls))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = service.remote_keys(&config.user_service_url, &client_tls, &config.jwt)?;
    report(&config, &kong, &routes);
    let prometheus = kong.global("prometheus").is_some();
    let proxy = Arc::new(Proxy {
        jwt: Jwt::new(keys),
        limiter: kong
            .global("rate-limiting")
            .and_then(RateLimiter::from_plugin),
        route_limiters: routes
            .routes
            .iter()
            .filter_map(|route| {
                let limiter = RateLimiter::from_plugin(route.plugin("rate-limiting")?)?;
                Some((route.name.clone(), limiter))
            })
            .collect(),
        correlation: kong.global("correlation-id").map(Correlation::from_plugin),
        cors: kong.global("cors").map(Cors::from_plugin),
        max_body_bytes: config.max_body_bytes,
        in_flight: tokio::sync::Semaphore::new(
            usize::try_from(config.max_in_flight).unwrap_or(usize::MAX),
        ),
        metrics: prometheus.then(KongMetrics::registered),
        routes,
        channels,
    });
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "SERVING" })) }),
        )
        .fallback(proxy::handle)
        .with_state(proxy)
        .layer(DispatchLayer::current());
    service
        .run(|listener, shutdown| async move {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(service = NAME, %addr, "http server listening");
            }
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        })
        .await
}

/// A Kong file that cannot be read, or that does not fit the protos, is a bad setting: the
/// process exits with one line naming it.
fn kong_config(error: impl Display) -> StartError {
    ConfigError::new("GATEWAY_KONG_CONFIG", error).into()
}

/// Logs what was loaded, and where `kong.yaml` and the protos disagree.
fn report(config: &Config, kong: &KongConfig, routes: &Routes) {
    for problem in routes.drift() {
        tracing::warn!(%problem, "kong.yaml and the protos disagree");
    }
    let plugins: Vec<String> = kong
        .all_plugins()
        .iter()
        .map(|(at, p)| format!("{} ({at})", p.name))
        .collect();
    tracing::info!(
        routes = routes.routes.len(),
        plugins = %plugins.join(", "),
        file = %config.kong_config.as_deref().map_or("built in".into(), |p| p.display().to_string()),
        "kong configuration loaded"
    );
}
