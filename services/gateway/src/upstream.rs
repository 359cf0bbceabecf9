//! One transcoded call: the REST request becomes the method's gRPC message, goes to the upstream
//! with a deadline and the caller's trace and auth headers, and the reply comes back as JSON.

use std::time::Duration;

use axum::{
    body::{Body, to_bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use shop_common::client::TracedChannel;
use tonic::Code;

use crate::{codec::DynamicCodec, errors::ApiError, routing::Upstream, rules::Rule, transcode};

/// How long one upstream call may take.
const UPSTREAM_DEADLINE: Duration = Duration::from_secs(30);

/// Headers that travel on to the gRPC service.
/// Trace context is not among them: the upstream call is a span of its own and carries it.
const FORWARDED: [&str; 1] = ["authorization"];

/// Where a request goes: the upstream's channel and the method's http rule with the path
/// variables it bound.
pub(crate) struct Target<'a> {
    pub(crate) channel: TracedChannel,
    pub(crate) upstream: &'a Upstream,
    pub(crate) rule: &'a Rule,
    pub(crate) bound: &'a [(String, String)],
    /// The client's address, appended to `x-forwarded-for` as Kong does, so the service can
    /// tell clients apart (user-service throttles failed sign-ins per client).
    pub(crate) peer: std::net::IpAddr,
}

/// Transcodes the request (refusing a body over `max_body_bytes`), calls the upstream, and
/// transcodes the answer.
pub(crate) async fn call(
    target: &Target<'_>,
    parts: http::request::Parts,
    body: Body,
    max_body_bytes: usize,
    request_id: Option<&str>,
) -> Response {
    let bytes = match to_bytes(body, max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let error = ApiError::bad_request(format!(
                "the body is larger than the gateway's limit of {max_body_bytes} bytes"
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
    let forwarded = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {}", target.peer),
        None => target.peer.to_string(),
    };
    if let Ok(value) = forwarded.parse() {
        outgoing.metadata_mut().insert("x-forwarded-for", value);
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
        Err(status) => {
            ApiError::from_status(&unanswered(status, &target.upstream.name)).into_response()
        }
    }
}

/// A status the channel made itself, because the upstream never answered (the call's time-out
/// ran out, the connection failed), rather than one the upstream sent: for the client the
/// upstream is unavailable, so 503 with `Retry-After`, not the 499 or 500 tonic's codes for
/// those (CANCELLED, UNKNOWN) would map to. Only such statuses carry the error behind them.
fn unanswered(status: tonic::Status, upstream: &str) -> tonic::Status {
    if std::error::Error::source(&status).is_none() || status.code() == Code::Unavailable {
        return status;
    }
    tonic::Status::unavailable(format!("{upstream} did not answer: {}", status.message()))
}
