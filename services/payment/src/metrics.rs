//! Money as the payment service sees it: each attempt at the provider and its outcome, and how
//! payments settled, with the reason.

use std::sync::LazyLock;

use prometheus::IntCounterVec;
use shop_common::metrics;

use crate::domain::{Payment, Status};

pub(crate) struct PaymentMetrics {
    attempts: IntCounterVec,
    settled: IntCounterVec,
}

pub(crate) fn payments() -> &'static PaymentMetrics {
    static METRICS: LazyLock<PaymentMetrics> = LazyLock::new(|| PaymentMetrics {
        attempts: metrics::counter_vec(
            "payment_charge_attempts_total",
            "Calls to the payment provider, by outcome (approved, declined, transient, timeout)",
            &["outcome"],
        ),
        settled: metrics::counter_vec(
            "payments_settled_total",
            "Payments that reached succeeded, failed or refunded, with the failure reason",
            &["status", "reason"],
        ),
    });
    &METRICS
}

impl PaymentMetrics {
    pub(crate) fn attempt(&self, outcome: &str) {
        self.attempts.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn settled(&self, payment: &Payment) {
        let status = match payment.status {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Refunded => "refunded",
            Status::Pending => return,
        };
        self.settled
            .with_label_values(&[status, payment.failure_reason.as_str()])
            .inc();
    }
}
