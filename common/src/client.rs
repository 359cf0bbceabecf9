//! Channels to other services: lazy, so start-up order does not matter; every call has a
//! deadline (the mesh retries; we do not wait forever); and every call is a client span whose
//! trace context travels in the request headers (W3C `traceparent` and B3), so the callee's work
//! joins the caller's trace. `https://` channels use the configured [`ClientTls`].

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http::{Request, Response};
use tonic::{
    Code,
    body::Body,
    transport::{Channel, Endpoint},
};
use tower::Service;
use tracing::Instrument as _;

use crate::{
    config::ConfigError,
    grpc::{OnStatus, StatusBody, record_on, rpc_names, status_in},
    telemetry::inject,
    tls::ClientTls,
};

/// A channel to `url` (`http://user-service:50051`, or `https://…` over `tls`) that connects on
/// first use; a malformed URL, or one whose scheme does not fit `tls`, is a configuration error
/// naming `setting`.
pub fn lazy_channel(
    setting: &str,
    url: &str,
    tls: &ClientTls,
) -> Result<TracedChannel, ConfigError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ConfigError::new(setting, format!("not a URL: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5));
    Ok(TracedChannel {
        inner: connect_lazy(setting, &endpoint, tls)?,
        peer: endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    })
}

/// A plain channel to `endpoint`, over TLS when its URL is `https://`. With TLS configured a
/// plaintext URL is refused rather than quietly sending calls unencrypted.
pub fn connect_lazy(
    setting: &str,
    endpoint: &Endpoint,
    tls: &ClientTls,
) -> Result<Channel, ConfigError> {
    let url = endpoint.uri();
    match (url.scheme_str(), tls.connector()) {
        (Some("https"), Some(connector)) => Ok(endpoint.connect_with_connector_lazy(connector)),
        (Some("https"), None) => Err(ConfigError::new(
            setting,
            format!(
                "{url} is https but GRPC_CLIENT_TLS_CA_FILE is not set: nothing to check the server's certificate with"
            ),
        )),
        (_, Some(_)) => Err(ConfigError::new(
            setting,
            format!(
                "{url} is not https but GRPC_CLIENT_TLS_CA_FILE is set: calls would go unencrypted"
            ),
        )),
        (_, None) => Ok(endpoint.connect_lazy()),
    }
}

/// A [`Channel`] whose calls are client spans carrying their trace context.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    inner: Channel,
    peer: String,
}

impl Service<Request<Body>> for TracedChannel {
    type Response = Response<StatusBody<Body, ClientCall>>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let (service, method) = rpc_names(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            server.address = %self.peer,
        );
        inject(&span, request.headers_mut());
        // The channel's buffer runs its connection work in the span current at the call; a
        // connection outlives the request, and must not keep the request's spans open with it.
        let call = tracing::Span::none().in_scope(|| self.inner.call(request));
        let watch = ClientCall {
            span: span.clone(),
            finished: false,
        };
        Box::pin(
            async move {
                let mut watch = watch;
                let response = match call.await {
                    Ok(response) => response,
                    Err(error) => {
                        watch.finish(Code::Unavailable);
                        return Err(error);
                    }
                };
                if let Some(code) = status_in(response.headers()) {
                    watch.finish(code);
                }
                Ok(response.map(|body| StatusBody::new(body, watch)))
            }
            .instrument(span),
        )
    }
}

/// The client span of one call, told its status once.
#[derive(Debug)]
pub struct ClientCall {
    span: tracing::Span,
    finished: bool,
}

impl OnStatus for ClientCall {
    fn finish(&mut self, code: Code) {
        if !std::mem::replace(&mut self.finished, true) {
            record_on(&self.span, code);
            // The body may outlive the call (a connection keeps it); its span must not.
            self.span = tracing::Span::none();
        }
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}
