//! Event counters (published, confirmed, consumed, retried and dead-lettered, per event type)
//! and each consumer's queue depth.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec};

use crate::metrics::{counter_vec as counter, gauge_vec};

pub(crate) struct EventMetrics {
    pub(crate) published: IntCounterVec,
    pub(crate) confirmed: IntCounterVec,
    pub(crate) consumed: IntCounterVec,
    pub(crate) retried: IntCounterVec,
    pub(crate) dead_lettered: IntCounterVec,
    pub(crate) queue_depth: IntGaugeVec,
}

pub(crate) fn events() -> &'static EventMetrics {
    static METRICS: LazyLock<EventMetrics> = LazyLock::new(|| EventMetrics {
        published: counter(
            "events_published_total",
            "Events sent to the bus, retries included",
            &["event_type"],
        ),
        confirmed: counter(
            "events_confirmed_total",
            "Events the bus confirmed it holds",
            &["event_type"],
        ),
        consumed: counter(
            "events_consumed_total",
            "Events a consumer applied and acknowledged",
            &["consumer", "event_type"],
        ),
        retried: counter(
            "events_retried_total",
            "Failed deliveries scheduled for another attempt",
            &["consumer", "event_type"],
        ),
        dead_lettered: counter(
            "events_dead_lettered_total",
            "Events a consumer gave up on",
            &["consumer", "event_type"],
        ),
        queue_depth: gauge_vec(
            "events_queue_depth",
            "Events waiting in a consumer's queue (its lag)",
            &["consumer"],
        ),
    });
    &METRICS
}
