//! Keeps a request in the dispatch of the service that serves it. Servers hand each connection
//! to a task of its own, which starts in the process's default dispatch; under `shop up` that is
//! not the service's, so its spans would carry another `service.name`.

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::{Dispatch, instrument::WithDispatch, instrument::WithSubscriber as _};

/// Runs every call of the wrapped service in the dispatch that was current when the layer was
/// made (the server is built inside its service's dispatch).
#[derive(Clone)]
pub struct DispatchLayer {
    dispatch: Dispatch,
}

impl DispatchLayer {
    pub fn current() -> Self {
        Self {
            dispatch: tracing::dispatcher::get_default(Dispatch::clone),
        }
    }
}

impl<S> Layer<S> for DispatchLayer {
    type Service = InDispatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InDispatch {
            inner,
            dispatch: self.dispatch.clone(),
        }
    }
}

#[derive(Clone)]
pub struct InDispatch<S> {
    inner: S,
    dispatch: Dispatch,
}

impl<S, R> Service<R> for InDispatch<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WithDispatch<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let call = tracing::dispatcher::with_default(&self.dispatch, || self.inner.call(request));
        call.with_subscriber(self.dispatch.clone())
    }
}
