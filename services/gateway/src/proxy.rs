//! The handler of every REST request: the plugins in Kong's order (correlation-id, cors, jwt,
//! rate-limiting), the route, the upstream call, and the request's metrics.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use shop_common::{client::TracedChannel, telemetry::adopt_parent};
use tonic::Code;
use tracing::Instrument as _;

use crate::{
    errors::ApiError,
    metrics::KongMetrics,
    plugins::{Correlation, Cors, Jwt},
    rate_limit::{LimitBy, RateLimiter},
    routing::{Found, Routes},
    upstream::{self, Target},
};

/// What the handler needs: the routes, a channel per upstream (in `routes.upstreams` order) and
/// the global plugins that are on.
pub(crate) struct Proxy {
    pub(crate) routes: Routes,
    pub(crate) channels: Vec<TracedChannel>,
    pub(crate) jwt: Jwt,
    /// The global `rate-limiting` plugin.
    pub(crate) limiter: Option<RateLimiter>,
    /// Route-level `rate-limiting` plugins by route name; each replaces the global one there.
    pub(crate) route_limiters: HashMap<String, RateLimiter>,
    pub(crate) correlation: Option<Correlation>,
    pub(crate) cors: Option<Cors>,
    pub(crate) max_body_bytes: usize,
    /// One permit per request being worked on (`GATEWAY_MAX_IN_FLIGHT`).
    pub(crate) in_flight: tokio::sync::Semaphore,
    /// Kong's request metrics, while the `prometheus` plugin is on.
    pub(crate) metrics: Option<KongMetrics>,
}

pub(crate) async fn handle(
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let headers = request.headers().clone();
    let request_id = proxy.correlation.as_ref().map(|c| c.id(&headers));
    let span = server_span(&request, request_id.as_deref());
    let (mut response, service, route) =
        route_and_call(&proxy, peer, request, request_id.as_deref())
            .instrument(span.clone())
            .await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(cors) = &proxy.cors {
        cors.decorate(&headers, response.headers_mut());
    }
    if let (Some(correlation), Some(id)) = (&proxy.correlation, &request_id)
        && correlation.echo
        && let Ok(value) = HeaderValue::from_str(id)
    {
        response
            .headers_mut()
            .insert(correlation.header.clone(), value);
    }
    if let Some(metrics) = &proxy.metrics {
        metrics.record(&service, &route, response.status(), started.elapsed());
    }
    response
}

/// The server span of one REST request, joined to the caller's trace (W3C or B3); the upstream
/// gRPC call is its child, and carries it on.
fn server_span(request: &Request, request_id: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "http.server",
        otel.name = %format!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = request_id.unwrap_or("-"),
    );
    adopt_parent(&span, request.headers());
    span
}

/// The response with the Kong service and route names it is counted under.
async fn route_and_call(
    proxy: &Proxy,
    peer: SocketAddr,
    request: Request,
    request_id: Option<&str>,
) -> (Response, String, String) {
    // Shed first: a refusal must cost next to nothing, and no token is verified for it.
    let Ok(_permit) = proxy.in_flight.try_acquire() else {
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "the gateway is at its limit of requests in flight; retry after the time in Retry-After",
        );
        error.retry_after = Some("1".to_owned());
        return (error.into_response(), String::new(), "shed".to_owned());
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(cors) = &proxy.cors
        && proxy.routes.route_for_path(&path).is_some()
        && let Some(headers) = cors.preflight(&parts.method, &parts.headers)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response.headers_mut().extend(headers);
        return (response, String::new(), "preflight".to_owned());
    }
    let (route, upstream, rule, bound) = match proxy.routes.find(&parts.method, &path) {
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

    let mut consumer = None;
    if route.plugin("jwt").is_some() {
        match proxy.jwt.verify(&parts.headers).await {
            // Kong's jwt plugin maps the token to the consumer whose credential its `iss` names.
            Ok(claims) => consumer = Some(format!("consumer:{}", claims.iss)),
            Err(error) => return labels(error.into_response()),
        }
    }
    let mut limit_headers = Vec::new();
    let limiter = proxy
        .route_limiters
        .get(&route.name)
        .or(proxy.limiter.as_ref());
    if let Some(limiter) = limiter {
        let client = match (limiter.limit_by, consumer) {
            (LimitBy::Consumer, Some(consumer)) => consumer,
            _ => format!("ip:{}", peer.ip()),
        };
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
        channel: proxy.channels[route.upstream].clone(),
        upstream,
        rule,
        bound: &bound,
        peer: peer.ip(),
    };
    let mut response = upstream::call(&target, parts, body, proxy.max_body_bytes, request_id).await;
    add_headers(response.headers_mut(), &limit_headers);
    labels(response)
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
