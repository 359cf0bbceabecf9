//! A request that carries no valid message is the caller's doing, not a server fault, yet tonic
//! answers INTERNAL, which counts in the failure-ratio alert:
//! - one that does not decode as its method's message is INVALID_ARGUMENT (else anyone could
//!   page the on-call person with a few bytes of garbage);
//! - one whose caller cancelled it, or whose connection broke, before its message arrived is
//!   CANCELLED: tonic reads a reset as the end of the request and reports INTERNAL "Missing
//!   request message.", a broken connection as UNKNOWN. A gateway cancels such calls whenever
//!   its clients go away (wrk closing its connections made product-service count INTERNAL
//!   GetProducts that no client ever saw), a load tool that stops drops its connections;
//! - one that ended without a message is INVALID_ARGUMENT.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

#[derive(Debug, Clone, Copy, Default)]
pub struct UndecodableLayer;

impl<S> Layer<S> for UndecodableLayer {
    type Service = Undecodable<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Undecodable { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Undecodable<S> {
    inner: S,
}

/// The codec's message (prost's `DecodeError`), as tonic reports a request it could not decode.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// tonic's message for a unary request that ended, or was reset, before its message.
const NO_MESSAGE: &str = "Missing request message.";

impl<S, ResBody> Service<Request<Body>> for Undecodable<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let broken = Arc::new(AtomicBool::new(false));
        let watched = Arc::clone(&broken);
        let call = self.inner.call(request.map(|body| {
            Body::new(WatchBroken {
                inner: body,
                broken: watched,
            })
        }));
        Box::pin(async move {
            let mut response = call.await?;
            // Each fails before the handler runs, so the status is trailers-only: headers.
            let Some(status) = Status::from_header_map(response.headers()) else {
                return Ok(response);
            };
            let broken = broken.load(Ordering::Relaxed);
            let no_message = status.code() == Code::Internal && status.message() == NO_MESSAGE;
            let status = if status.code() == Code::Internal
                && status.message().starts_with(DECODE_FAILURE)
            {
                Status::invalid_argument(format!("the request is not a valid message for {method}"))
            } else if broken && (no_message || status.code() == Code::Unknown) {
                Status::cancelled("the caller went away before its request arrived")
            } else if no_message {
                Status::invalid_argument(format!("the request carries no message for {method}"))
            } else {
                return Ok(response);
            };
            if let Err(error) = status.add_header(response.headers_mut()) {
                tracing::debug!(%error, "cannot rewrite the status of a request without a message");
            }
            Ok(response)
        })
    }
}

pin_project_lite::pin_project! {
    /// A request body that notes whether it failed (the caller reset the stream, or the
    /// connection broke) before it ended.
    struct WatchBroken {
        #[pin]
        inner: Body,
        broken: Arc<AtomicBool>,
    }
}

impl http_body::Body for WatchBroken {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Err(_)) = &frame {
            this.broken.store(true, Ordering::Relaxed);
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
