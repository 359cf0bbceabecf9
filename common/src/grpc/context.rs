//! Per-call context: a request id (taken from `x-request-id`, as Envoy sets it, or made up) and
//! the caller's trace context (W3C or B3), both on the server span the call runs in, which
//! follows the OpenTelemetry RPC conventions.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument as _;

use crate::telemetry::adopt_parent;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RequestContext<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .cloned()
            .unwrap_or_else(new_request_id);
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, request_id.clone());

        let path = request.uri().path();
        let (service, method) = rpc_names(path);
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = request_id.to_str().unwrap_or("-"),
        );
        adopt_parent(&span, request.headers());

        // Inside the span, so the layers below (metrics, auth) see it as theirs.
        let call = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            let mut response = call.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
            Ok(response)
        })
    }
}

/// `rpc.service` and `rpc.method` of a gRPC path (`/shop.order.v1.OrderService/PlaceOrder`).
pub(crate) fn rpc_names(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

fn new_request_id() -> HeaderValue {
    // A UUID is always a valid header value.
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}
