//! Keeps a request in the dispatch of the service that serves it. Servers hand each connection
//! to a task of its own, which starts in the process's default dispatch; under `shop up` that is
//! not the service's, so its spans would carry another `service.name`. The call is also *dropped*
//! in the service's dispatch: a client that hangs up drops it from the connection's task, and a
//! span closed there would close its parent through the process default (which never issued it:
//! the parent is never exported, and the default registry panics "no such span").

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};
use tracing::Dispatch;

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
    type Future = Dispatched<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let call = tracing::dispatcher::with_default(&self.dispatch, || self.inner.call(request));
        Dispatched {
            inner: Some(Box::pin(call)),
            dispatch: self.dispatch.clone(),
        }
    }
}

/// A future polled, and dropped, with `dispatch` as the thread's default.
pub struct Dispatched<F> {
    inner: Option<Pin<Box<F>>>,
    dispatch: Dispatch,
}

impl<F: Future> Future for Dispatched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _default = tracing::dispatcher::set_default(&this.dispatch);
        match this.inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            // Only reachable by polling after completion, which futures must not do.
            None => Poll::Pending,
        }
    }
}

impl<F> Drop for Dispatched<F> {
    fn drop(&mut self) {
        let _default = tracing::dispatcher::set_default(&self.dispatch);
        drop(self.inner.take());
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// A call still holding a child span (whose parent's other handle is gone) is dropped on a
    /// thread whose default is another registry, as a hung-up connection's task drops it.
    #[test]
    fn a_call_dropped_outside_its_dispatch_closes_its_spans_in_it() {
        let service =
            Dispatch::new(tracing_subscriber::registry().with(tracing_subscriber::fmt::layer()));
        let elsewhere =
            Dispatch::new(tracing_subscriber::registry().with(tracing_subscriber::fmt::layer()));
        let call = tracing::dispatcher::with_default(&service, || {
            let parent = tracing::info_span!("request");
            let child = tracing::info_span!(parent: &parent, "handler");
            drop(parent);
            Dispatched {
                inner: Some(Box::pin(async move {
                    let _child = child;
                    std::future::pending::<()>().await;
                })),
                dispatch: service.clone(),
            }
        });
        let dropped = std::thread::spawn(move || {
            tracing::dispatcher::with_default(&elsewhere, || drop(call));
        })
        .join();
        assert!(
            dropped.is_ok(),
            "closing the spans panicked in the wrong registry"
        );
    }
}
