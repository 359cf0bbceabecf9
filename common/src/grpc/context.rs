//! Per-call context: a request id (taken from `x-request-id`, as Envoy sets it, or made up) and
//! the caller's W3C trace context, both attached to the span the call runs in.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry::{global, propagation::Extractor, trace::TraceContextExt as _};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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

        let span = tracing::info_span!(
            "grpc",
            otel.name = %request.uri().path(),
            otel.kind = "server",
            rpc.system = "grpc",
            request_id = request_id.to_str().unwrap_or("-"),
            trace_id = tracing::field::Empty,
        );
        let parent = global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
        if let Err(error) = span.set_parent(parent) {
            tracing::debug!(%error, "cannot adopt the caller's trace context");
        }
        let trace_id = span.context().span().span_context().trace_id();
        span.record("trace_id", tracing::field::display(trace_id));

        let call = self.inner.call(request).instrument(span);
        Box::pin(async move {
            let mut response = call.await?;
            response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
            Ok(response)
        })
    }
}

fn new_request_id() -> HeaderValue {
    // A UUID is always a valid header value.
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
