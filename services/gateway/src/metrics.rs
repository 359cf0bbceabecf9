//! Kong's `prometheus` plugin: requests and their latency under Kong's metric names. They are
//! served with the process's other metrics on the metrics port, never on the public port (Kong
//! too serves them on its status listener, not to the internet).

use std::{sync::LazyLock, time::Duration};

use axum::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use shop_common::metrics;

/// What every proxied request adds to, labelled by Kong service and route.
#[derive(Clone)]
pub(crate) struct KongMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl KongMetrics {
    /// The gateway's metrics, registered once however many gateways a process starts.
    pub(crate) fn registered() -> Self {
        static METRICS: LazyLock<KongMetrics> = LazyLock::new(|| {
            // Kong's prometheus plugin names, so Kong dashboards read the local gateway too.
            let requests = IntCounterVec::new(
                Opts::new(
                    "kong_http_requests_total",
                    "HTTP requests by service, route and status",
                ),
                &["service", "route", "code"],
            )
            .expect("valid metric definition");
            let latency = HistogramVec::new(
                HistogramOpts::new("kong_request_latency_ms", "Request latency in milliseconds")
                    .buckets(vec![
                        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                    ]),
                &["service", "route"],
            )
            .expect("valid metric definition");
            metrics::register(requests.clone());
            metrics::register(latency.clone());
            KongMetrics { requests, latency }
        });
        METRICS.clone()
    }

    pub(crate) fn record(&self, service: &str, route: &str, status: StatusCode, took: Duration) {
        let code = status.as_u16().to_string();
        self.requests
            .with_label_values(&[service, route, &code])
            .inc();
        self.latency
            .with_label_values(&[service, route])
            .observe(took.as_secs_f64() * 1000.0);
    }
}
