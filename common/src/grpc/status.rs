//! The final status of a gRPC call as it passes by: in the response headers (a trailers-only
//! error) or in the trailers at the end of the body. Servers (RED metrics, server spans) and
//! clients (client spans) watch it the same way.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;

/// What wants to know a call's status; told once by [`StatusBody`] (implementations count a
/// call dropped before its status as CANCELLED themselves, in `Drop`).
pub(crate) trait OnStatus {
    fn finish(&mut self, code: Code);
}

/// The `grpc-status` of a header map (response headers or trailers).
pub(crate) fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

pin_project_lite::pin_project! {
    /// A response body that tells `watch` the call's status when its trailers go by.
    pub struct StatusBody<B, W> {
        #[pin]
        inner: B,
        watch: W,
    }
}

impl<B, W> StatusBody<B, W> {
    pub(crate) fn new(inner: B, watch: W) -> Self {
        Self { inner, watch }
    }
}

impl<B: Body, W: OnStatus> Body for StatusBody<B, W> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.watch
                        .finish(status_in(trailers).unwrap_or(Code::Unknown));
                }
            }
            Some(Err(_)) => this.watch.finish(Code::Unknown),
            // A body that ends without trailers is a call without a status.
            None => this.watch.finish(Code::Unknown),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records a call's status on its span the way the OpenTelemetry conventions say:
/// `rpc.grpc.status_code`, and an error status for the codes that mean the server failed.
pub(crate) fn record_on(span: &tracing::Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i32);
    let server_fault = matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    );
    if server_fault {
        span.record("otel.status_code", "ERROR");
    }
}
