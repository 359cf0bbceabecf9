//! Rate, errors and duration per gRPC method, and the call's status on its server span. The
//! status is read as the response passes (see `status.rs`); a body dropped before its trailers
//! counts as CANCELLED.

use std::{
    collections::HashSet,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tonic::Code;
use tower::{Layer, Service};

use super::status::{OnStatus, StatusBody, record_on, status_in};
use crate::metrics;

/// Counts calls per method of the services in `known`; other paths are counted under
/// `unknown` so a client cannot grow the label set.
#[derive(Debug, Clone)]
pub struct RedMetricsLayer {
    known: Arc<HashSet<String>>,
}

impl RedMetricsLayer {
    pub fn new(known_services: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            known: Arc::new(known_services.into_iter().map(Into::into).collect()),
        }
    }
}

impl<S> Layer<S> for RedMetricsLayer {
    type Service = RedMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RedMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RedMetrics<S> {
    inner: S,
    known: Arc<HashSet<String>>,
}

impl<S, B, ResBody> Service<Request<B>> for RedMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<StatusBody<ResBody, Call>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut call = Call::start(request.uri().path(), &self.known);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    call.finish(Code::Unknown);
                    return Err(error);
                }
            };
            if let Some(code) = status_in(response.headers()) {
                call.finish(code);
            }
            Ok(response.map(|inner| StatusBody::new(inner, call)))
        })
    }
}

/// One call being measured; it records itself exactly once, in the metrics and on the span it
/// runs in.
#[derive(Debug)]
pub struct Call {
    service: String,
    method: String,
    started: Instant,
    span: tracing::Span,
    finished: bool,
}

impl Call {
    fn start(path: &str, known: &HashSet<String>) -> Self {
        let (service, method) = match path.trim_start_matches('/').split_once('/') {
            Some((service, method)) if known.contains(service) && !method.contains('/') => {
                (service.to_owned(), method.to_owned())
            }
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        metrics::grpc()
            .started
            .with_label_values(&[&service, &method])
            .inc();
        Self {
            service,
            method,
            started: Instant::now(),
            span: tracing::Span::current(),
            finished: false,
        }
    }
}

impl OnStatus for Call {
    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        record_on(&self.span, code);
        // The body may outlive the call (a connection keeps it); its span must not.
        self.span = tracing::Span::none();
        let grpc = metrics::grpc();
        grpc.handled
            .with_label_values(&[&self.service, &self.method, code_name(code)])
            .inc();
        grpc.handling_seconds
            .with_label_values(&[&self.service, &self.method])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// The names go-grpc-prometheus uses, so existing dashboards match.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(service: &str, method: &str, code: &str) -> u64 {
        metrics::grpc()
            .handled
            .with_label_values(&[service, method, code])
            .get()
    }

    #[test]
    fn unknown_services_share_one_label() {
        let known = HashSet::from(["shop.test.v1.Known".to_owned()]);
        let before = handled("unknown", "unknown", "Unimplemented");
        let mut call = Call::start("/evil.Service/Method123", &known);
        call.finish(Code::Unimplemented);
        assert_eq!(handled("unknown", "unknown", "Unimplemented"), before + 1);
    }

    #[test]
    fn a_call_dropped_before_its_status_counts_as_cancelled() {
        let known = HashSet::from(["shop.test.v1.Dropped".to_owned()]);
        drop(Call::start("/shop.test.v1.Dropped/Get", &known));
        assert_eq!(handled("shop.test.v1.Dropped", "Get", "Canceled"), 1);
    }

    #[test]
    fn a_call_is_recorded_once() {
        let known = HashSet::from(["shop.test.v1.Once".to_owned()]);
        let mut call = Call::start("/shop.test.v1.Once/Get", &known);
        call.finish(Code::NotFound);
        drop(call);
        assert_eq!(handled("shop.test.v1.Once", "Get", "NotFound"), 1);
        assert_eq!(handled("shop.test.v1.Once", "Get", "Canceled"), 0);
    }
}
