//! A request that does not decode as its method's message is the caller's mistake: INVALID_ARGUMENT
//! rather than the INTERNAL tonic's codec answers. INTERNAL would count as a server fault in the
//! failure-ratio alert, so anyone could page the on-call person with a few bytes of garbage.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Code, Status};
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

impl<S, B, ResBody> Service<Request<B>> for Undecodable<S>
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            // Decoding fails before the handler runs, so the status is trailers-only: headers.
            let undecodable = Status::from_header_map(response.headers()).is_some_and(|status| {
                status.code() == Code::Internal && status.message().starts_with(DECODE_FAILURE)
            });
            if undecodable {
                let status = Status::invalid_argument(format!(
                    "the request is not a valid message for {method}"
                ));
                if let Err(error) = status.add_header(response.headers_mut()) {
                    tracing::debug!(%error, "cannot rewrite the status of an undecodable request");
                }
            }
            Ok(response)
        })
    }
}
