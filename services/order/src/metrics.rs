//! The saga as the order service sees it: orders placed, how they ended and why, how long a
//! checkout took from placing to its final status, and what still waits for its payment.

use std::sync::LazyLock;

use prometheus::{Gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use shop_common::{clock::now_ms, metrics};

use crate::domain::{Order, Status};

pub(crate) struct OrderMetrics {
    placed: IntCounter,
    finalized: IntCounterVec,
    checkout_seconds: HistogramVec,
    pending: IntGauge,
    oldest_pending_seconds: Gauge,
}

pub(crate) fn orders() -> &'static OrderMetrics {
    static METRICS: LazyLock<OrderMetrics> = LazyLock::new(|| OrderMetrics {
        placed: metrics::counter("orders_placed_total", "Orders placed"),
        finalized: metrics::counter_vec(
            "orders_finalized_total",
            "Orders that reached a final status (confirmed or cancelled), with the reason",
            &["status", "reason"],
        ),
        checkout_seconds: metrics::seconds_histogram_vec(
            "checkout_duration_seconds",
            "From an order placed to its final status",
            &["status"],
            vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        ),
        pending: metrics::gauge("orders_pending_payment", "Orders waiting for their payment"),
        oldest_pending_seconds: metrics::float_gauge(
            "orders_pending_payment_oldest_seconds",
            "Age of the oldest order waiting for its payment (0 when none)",
        ),
    });
    &METRICS
}

impl OrderMetrics {
    pub(crate) fn placed(&self) {
        self.placed.inc();
    }

    /// Counts `order` if its new status is final.
    pub(crate) fn moved(&self, order: &Order) {
        let status = match order.status {
            Status::Confirmed => "confirmed",
            Status::Cancelled => "cancelled",
            Status::PendingPayment | Status::Paid | Status::Shipped => return,
        };
        self.finalized
            .with_label_values(&[status, order.cancel_reason.as_str()])
            .inc();
        let seconds = (now_ms() - order.created_at_ms).max(0) as f64 / 1000.0;
        self.checkout_seconds
            .with_label_values(&[status])
            .observe(seconds);
    }

    /// What waits for its payment now: how many orders, and since when the oldest.
    pub(crate) fn pending(&self, count: i64, oldest_created_at_ms: Option<i64>) {
        self.pending.set(count);
        let age = oldest_created_at_ms.map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
        self.oldest_pending_seconds.set(age);
    }
}
