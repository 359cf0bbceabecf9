//! Stock as the product service sees it: reservations by outcome, and releases.

use std::sync::LazyLock;

use prometheus::IntCounterVec;
use shop_common::{Error, metrics};

pub(crate) struct StockMetrics {
    reservations: IntCounterVec,
    releases: IntCounterVec,
}

pub(crate) fn stock() -> &'static StockMetrics {
    static METRICS: LazyLock<StockMetrics> = LazyLock::new(|| StockMetrics {
        reservations: metrics::counter_vec(
            "stock_reservations_total",
            "ReserveStock outcomes (reserved, refused, not_found, error)",
            &["outcome"],
        ),
        releases: metrics::counter_vec(
            "stock_releases_total",
            "Reservations given back, and releases that found nothing held",
            &["released"],
        ),
    });
    &METRICS
}

impl StockMetrics {
    pub(crate) fn reserved<T>(&self, outcome: &Result<T, Error>) {
        let outcome = match outcome {
            Ok(_) => "reserved",
            Err(Error::FailedPrecondition(_)) => "refused",
            Err(Error::NotFound(_)) => "not_found",
            Err(_) => "error",
        };
        self.reservations.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn released(&self, released: bool) {
        let label = if released { "true" } else { "false" };
        self.releases.with_label_values(&[label]).inc();
    }
}
