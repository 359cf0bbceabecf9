//! Load shedding: a server takes at most so many calls at once, and answers the next one at once
//! with RESOURCE_EXHAUSTED and `retry-after`, before verifying its token or touching its store.
//! Without it every call past capacity waits in a queue that only grows, until callers time out
//! and memory has grown with it. RESOURCE_EXHAUSTED rather than UNAVAILABLE: Istio retries
//! UNAVAILABLE by default, which would send each shed call back twice more. Health and
//! reflection are never shed, so probes see the truth while the server is busy.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::Status;
use tower::{Layer, Service};

use crate::{error::RETRY_AFTER, metrics};

/// Shed calls per server: the failure-ratio alert leaves RESOURCE_EXHAUSTED out (a throttled
/// sign-in is the caller's doing), so shedding, which is the server's, is counted here.
fn shed_total() -> &'static prometheus::IntCounterVec {
    static SHED: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    SHED.get_or_init(|| {
        metrics::counter_vec(
            "grpc_server_shed_total",
            "Calls refused at once because the server was at its in-flight limit (GRPC_MAX_IN_FLIGHT)",
            &["service"],
        )
    })
}

const NEVER_SHED: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    shed: prometheus::IntCounter,
}

impl ShedLayer {
    /// At most `limit` calls in flight at once in `service` (the metric's label).
    pub fn new(service: &str, limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            shed: shed_total().with_label_values(&[service]),
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

/// The answer to a call past the limit.
fn shed(limit: usize) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "the server is at its limit of {limit} calls in flight; retry after the time in retry-after"
    ));
    status.metadata_mut().insert(
        RETRY_AFTER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

impl<S, B, ResBody> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        if NEVER_SHED.iter().any(|prefix| path.starts_with(prefix)) {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            self.layer.shed.inc();
            let response = shed(self.layer.limit).into_http();
            return Box::pin(std::future::ready(Ok(response)));
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    fn call_to(path: &str) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() =
            http::Uri::try_from(path).unwrap_or_else(|_| http::Uri::from_static("/"));
        request
    }

    const GET_PRODUCT: &str = "/shop.product.v1.ProductService/GetProduct";

    #[tokio::test]
    async fn calls_past_the_limit_are_answered_at_once_and_the_limit_frees_as_calls_end() {
        // Handlers wait at this gate until the test opens it.
        let gate = Arc::new(Semaphore::new(0));
        let handler = {
            let gate = gate.clone();
            tower::service_fn(move |_: Request<()>| {
                let gate = gate.clone();
                async move {
                    let _open = gate.acquire().await;
                    Ok::<_, std::convert::Infallible>(Response::new("answered".to_owned()))
                }
            })
        };
        let shed_before = shed_total().with_label_values(&["shed-test"]).get();
        let mut service = ShedLayer::new("shed-test", 2).layer(handler);
        let first = service.call(call_to(GET_PRODUCT));
        let second = service.call(call_to(GET_PRODUCT));

        let third = service
            .call(call_to(GET_PRODUCT))
            .now_or_never()
            .and_then(Result::ok);
        let third = third
            .as_ref()
            .map(|r| (Status::from_header_map(r.headers()), r.headers()));
        assert!(
            matches!(&third, Some((Some(status), _)) if status.code() == tonic::Code::ResourceExhausted),
            "the third call was not shed at once: {third:?}"
        );
        assert_eq!(
            third.and_then(|(_, headers)| headers.get(RETRY_AFTER)?.to_str().ok()),
            Some("1")
        );
        assert_eq!(
            shed_total().with_label_values(&["shed-test"]).get(),
            shed_before + 1
        );
        let mut health = service.call(call_to("/grpc.health.v1.Health/Check"));
        assert!(
            (&mut health).now_or_never().is_none(),
            "health was answered without reaching its handler"
        );

        gate.add_permits(10);
        for call in [first, second, health] {
            assert_eq!(
                call.await.map(Response::into_body).ok().as_deref(),
                Some("answered")
            );
        }
        let again = service.call(call_to(GET_PRODUCT)).await;
        assert_eq!(
            again.map(Response::into_body).ok().as_deref(),
            Some("answered")
        );
    }
}
