//! The local stand-in for Kong: the public REST edge in front of the gRPC services. It reads
//! `kong/kong.yaml` (the file production Kong runs) and the protos' http annotations, transcodes
//! REST to gRPC, and applies the plugins it finds there: jwt, rate-limiting, correlation-id,
//! cors and prometheus (`/metrics`).

mod codec;
mod config;
mod errors;
mod kong;
mod plugins;
mod rate_limit;
mod routing;
mod rules;
mod transcode;

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
pub use config::Config;
pub use kong::KongError;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
pub use routing::RoutingError;
use serde_json::json;
use shop_common::{auth::RemoteKeys, config::ConfigError, grpc::lazy_channel, metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

use crate::{
    codec::DynamicCodec,
    errors::ApiError,
    kong::KongConfig,
    plugins::{Correlation, Cors, Jwt},
    rate_limit::RateLimiter,
    routing::{Found, Routes},
};

/// The name this service logs and reports under.
pub const NAME: &str = "gateway";

/// How long one upstream call may take.
const UPSTREAM_DEADLINE: Duration = Duration::from_secs(30);

/// Headers that travel on to the gRPC service.
const FORWARDED: [&str; 5] = [
    "authorization",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
];

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("GATEWAY_KONG_CONFIG: {0}")]
    Kong(#[from] KongError),
    #[error("GATEWAY_KONG_CONFIG: {0}")]
    Routing(#[from] RoutingError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

struct Gateway {
    routes: Routes,
    channels: Vec<Channel>,
    jwt: Jwt,
    limiter: Option<RateLimiter>,
    correlation: Option<Correlation>,
    cors: Option<Cors>,
    prometheus: bool,
    max_body_bytes: usize,
    requests: IntCounterVec,
    latency: HistogramVec,
}

fn gateway_metrics() -> (IntCounterVec, HistogramVec) {
    static METRICS: LazyLock<(IntCounterVec, HistogramVec)> = LazyLock::new(|| {
        // Kong's prometheus plugin names, so Kong dashboards read the local gateway too.
        let requests = IntCounterVec::new(
            Opts::new(
                "kong_http_requests_total",
                "HTTP requests by service, route and status",
            ),
            &["service", "route", "code"],
        )
        .expect("valid metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("kong_request_latency_ms", "Request latency in milliseconds")
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                ]),
            &["service", "route"],
        )
        .expect("valid metric definition");
        metrics::register(requests.clone());
        metrics::register(latency.clone());
        (requests, latency)
    });
    METRICS.clone()
}

/// Serves the gateway on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), GatewayError> {
    let kong = KongConfig::load_or_builtin(config.kong_config.as_deref())?;
    let routes = Routes::new(&kong, &config.upstreams()?)?;
    let channels = routes
        .upstreams
        .iter()
        .map(|u| lazy_channel("GATEWAY_UPSTREAMS", &u.url))
        .collect::<Result<Vec<_>, _>>()?;
    let keys = RemoteKeys::start(
        &config.user_service_url,
        &config.jwt.verifier_config(),
        shutdown.clone(),
    )?;
    for problem in routes.drift() {
        tracing::warn!(%problem, "kong.yaml and the protos disagree");
    }
    let (requests, latency) = gateway_metrics();
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
    let gateway = Arc::new(Gateway {
        jwt: Jwt {
            verifier: keys.verifier,
            keys: keys.jwks,
        },
        limiter: kong
            .global("rate-limiting")
            .and_then(RateLimiter::from_plugin),
        correlation: kong.global("correlation-id").map(Correlation::from_plugin),
        cors: kong.global("cors").map(Cors::from_plugin),
        prometheus: kong.global("prometheus").is_some(),
        max_body_bytes: config.max_body_bytes,
        routes,
        channels,
        requests,
        latency,
    });
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "SERVING" })) }),
        )
        .route("/metrics", get(metrics_page))
        .fallback(handle)
        .with_state(gateway);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(service = NAME, %addr, "http server listening");
    }
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await;
    keys.refresher.abort();
    Ok(served?)
}

async fn metrics_page(State(gateway): State<Arc<Gateway>>) -> Response {
    if !gateway.prometheus {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "the prometheus plugin is off",
        )
        .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
        .into_response()
}

/// Every REST request: plugins in Kong's order (correlation-id, cors, jwt, rate-limiting), then
/// transcoding and the upstream call.
async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let headers = request.headers().clone();
    let request_id = gateway.correlation.as_ref().map(|c| c.id(&headers));
    let (mut response, service, route) =
        route_and_call(&gateway, peer, request, request_id.as_deref()).await;
    if let Some(cors) = &gateway.cors {
        cors.decorate(&headers, response.headers_mut());
    }
    if let (Some(correlation), Some(id)) = (&gateway.correlation, &request_id)
        && correlation.echo
        && let Ok(value) = HeaderValue::from_str(id)
    {
        response
            .headers_mut()
            .insert(correlation.header.clone(), value);
    }
    let code = response.status().as_u16().to_string();
    gateway
        .requests
        .with_label_values(&[&service, &route, &code])
        .inc();
    gateway
        .latency
        .with_label_values(&[&service, &route])
        .observe(started.elapsed().as_secs_f64() * 1000.0);
    response
}

async fn route_and_call(
    gateway: &Gateway,
    peer: SocketAddr,
    request: Request,
    request_id: Option<&str>,
) -> (Response, String, String) {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(cors) = &gateway.cors
        && gateway.routes.route_for_path(&path).is_some()
        && let Some(headers) = cors.preflight(&parts.method, &parts.headers)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response.headers_mut().extend(headers);
        return (response, String::new(), "preflight".to_owned());
    }
    let (route, upstream, rule, bound) = match gateway.routes.find(&parts.method, &path) {
        Found::Method {
            route,
            upstream,
            rule,
            bound,
        } => (route, upstream, rule, bound),
        Found::WrongMethod { allowed } => {
            let names: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
            let mut error = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!(
                    "{} is not allowed on {path}; use {}",
                    parts.method,
                    names.join(", ")
                ),
            );
            error.allow = Some(names.join(", "));
            return (error.into_response(), String::new(), String::new());
        }
        Found::NoRoute => {
            let error = ApiError::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                format!("no route for {} {path}", parts.method),
            );
            return (error.into_response(), String::new(), String::new());
        }
    };
    let labels = |response: Response| (response, upstream.name.clone(), route.name.clone());

    let mut client = format!("ip:{}", peer.ip());
    if route.plugin("jwt").is_some() {
        match gateway.jwt.verify(&parts.headers).await {
            Ok(claims) => client = format!("consumer:{}", claims.sub),
            Err(error) => return labels(error.into_response()),
        }
    }
    let mut limit_headers = Vec::new();
    if let Some(limiter) = &gateway.limiter {
        let verdict = limiter.check(&client, Instant::now());
        limit_headers = verdict.headers;
        if !verdict.allowed {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                "API rate limit exceeded; retry after the time in Retry-After",
            )
            .into_response();
            add_headers(response.headers_mut(), &limit_headers);
            return labels(response);
        }
    }

    let target = Target {
        channel: gateway.channels[route.upstream].clone(),
        upstream,
        rule,
        bound: &bound,
    };
    let mut response = call(gateway, &target, parts, body, request_id).await;
    add_headers(response.headers_mut(), &limit_headers);
    labels(response)
}

/// Where a request goes: the upstream's channel and the method's http rule with the path
/// variables it bound.
struct Target<'a> {
    channel: Channel,
    upstream: &'a routing::Upstream,
    rule: &'a rules::Rule,
    bound: &'a [(String, String)],
}

/// Transcodes the request, calls the upstream, and transcodes the answer.
async fn call(
    gateway: &Gateway,
    target: &Target<'_>,
    parts: http::request::Parts,
    body: Body,
    request_id: Option<&str>,
) -> Response {
    let bytes = match to_bytes(body, gateway.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError::bad_request(format!(
                "the body is larger than the gateway's limit of {} bytes",
                gateway.max_body_bytes
            ));
            return error.into_response();
        }
    };
    let message = match transcode::request(target.rule, target.bound, parts.uri.query(), &bytes) {
        Ok(message) => message,
        Err(error) => return ApiError::bad_request(error.0).into_response(),
    };
    let mut outgoing = tonic::Request::new(message);
    outgoing.set_timeout(UPSTREAM_DEADLINE);
    for name in FORWARDED {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = value.parse()
        {
            outgoing.metadata_mut().insert(name, value);
        }
    }
    if let Some(id) = request_id
        && let Ok(value) = id.parse()
    {
        outgoing.metadata_mut().insert("x-request-id", value);
    }
    let path = format!(
        "/{}/{}",
        target.rule.method.parent_service().full_name(),
        target.rule.method.name()
    );
    let Ok(path) = http::uri::PathAndQuery::try_from(path) else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::Internal,
            "bad method path",
        )
        .into_response();
    };
    let mut grpc = tonic::client::Grpc::new(target.channel.clone());
    let codec = DynamicCodec {
        output: target.rule.method.output(),
    };
    let called = match grpc.ready().await {
        Ok(()) => grpc.unary(outgoing, path, codec).await,
        Err(error) => Err(tonic::Status::unavailable(format!(
            "{} is unavailable: {error}",
            target.upstream.name
        ))),
    };
    match called {
        Ok(reply) => match transcode::response_json(reply.get_ref(), &target.rule.response_body) {
            Ok(json) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(json),
            )
                .into_response(),
            Err(error) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!("the response cannot be written as JSON: {error}"),
            )
            .into_response(),
        },
        Err(status) => ApiError::from_status(&status).into_response(),
    }
}

fn add_headers(headers: &mut HeaderMap, extra: &[(String, String)]) {
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
}
