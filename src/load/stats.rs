//! What a run measured: HDR histograms per step and overall, errors by kind, order outcomes and
//! a once-a-second timeline. Latency runs from when a request was *due*, so time a request spent
//! waiting to be sent counts (no coordinated omission); service time, from the actual send, is
//! kept beside it to show how much of the latency was waiting.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::driver::Failure;

/// Microseconds from 1 µs to one hour, three significant digits (at most 0.1 % off).
const HIGHEST_MICROS: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// The error kind of a request still unanswered when the grace period ran out.
pub(crate) const CUT_OFF: &str = "cut off";

/// One kind of request; each has its own histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    Browse,
    Search,
    View,
    PlaceOrder,
    GetOrder,
    Url,
    Refresh,
    Login,
}

impl Step {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Search => "search",
            Self::View => "view",
            Self::PlaceOrder => "place-order",
            Self::GetOrder => "get-order",
            Self::Url => "url",
            Self::Refresh => "refresh",
            Self::Login => "login",
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

pub(crate) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Percentiles of one histogram, in milliseconds (the JSON and table unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// How often one kind of error happened, with one message as an example.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorCount {
    pub(crate) count: u64,
    pub(crate) example: String,
}

/// Everything recorded about one step (or all of them).
pub(crate) struct Tally {
    /// From due to answer (or to the cut-off, for requests never answered).
    pub(crate) latency: Histogram<u64>,
    /// From send to answer, answered requests only.
    pub(crate) service: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, ErrorCount>,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            service: histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: &str, example: &str) {
        let entry = self.errors.entry(kind.to_owned()).or_default();
        entry.count += 1;
        if entry.example.is_empty() {
            entry.example = example.to_owned();
        }
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.count).sum()
    }
}

/// How the orders placed during a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orders {
    pub placed: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    /// Still pending after `--confirm-timeout`.
    pub not_confirmed: u64,
    /// Still pending when the run ended; neither success nor failure.
    pub unsettled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderEnd {
    Confirmed,
    Cancelled,
    NotConfirmed,
    Unsettled,
}

/// One second of the run, for the progress line and the plot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the start, at the end of the interval.
    pub t_s: f64,
    /// Answered or cut off in the interval.
    pub requests: u64,
    pub errors: u64,
    /// Answered requests per second (cut-offs are not throughput).
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests due and not yet answered at the end of the interval.
    pub in_flight: u64,
}

struct Stats {
    steps: BTreeMap<Step, Tally>,
    overall: Tally,
    /// Since the last tick: the timeline's next point.
    interval: Histogram<u64>,
    interval_errors: u64,
    /// Answered since the last tick (cut-offs are in `interval` but were never answered).
    interval_answered: u64,
    last_tick: Instant,
    timeline: Vec<Point>,
    in_flight: u64,
    orders: Orders,
    /// From PlaceOrder due to the poll that saw the order confirmed.
    confirmation: Histogram<u64>,
}

/// Shared by every virtual user; each records under a short lock.
pub(crate) struct Recorder {
    started: Instant,
    stats: Mutex<Stats>,
}

/// What the recorder holds at the end of a run.
pub(crate) struct Totals {
    pub(crate) steps: BTreeMap<Step, Tally>,
    pub(crate) overall: Tally,
    pub(crate) timeline: Vec<Point>,
    pub(crate) orders: Orders,
    pub(crate) confirmation: Histogram<u64>,
}

impl Recorder {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            started,
            stats: Mutex::new(Stats {
                steps: BTreeMap::new(),
                overall: Tally::new(),
                interval: histogram(),
                interval_errors: 0,
                interval_answered: 0,
                last_tick: started,
                timeline: Vec::new(),
                in_flight: 0,
                orders: Orders::default(),
                confirmation: histogram(),
            }),
        }
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    fn lock(&self) -> MutexGuard<'_, Stats> {
        // A panic elsewhere while holding the lock leaves counts that are still worth reporting.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request is due now (or was, at `due`): it counts from here until answered or cut off.
    pub(crate) fn pending(self: &Arc<Self>, step: Step, due: Instant) -> Pending {
        self.lock().in_flight += 1;
        Pending {
            recorder: self.clone(),
            step,
            due,
            open: true,
        }
    }

    /// An answer (or failure) to a request due at `due`, sent at `sent`, done at `done`.
    pub(crate) fn answered(
        &self,
        step: Step,
        due: Instant,
        sent: Instant,
        done: Instant,
        outcome: Result<(), &Failure>,
    ) {
        let latency = micros(done.saturating_duration_since(due));
        let service = micros(done.saturating_duration_since(sent));
        let mut stats = self.lock();
        let stats = &mut *stats;
        stats.in_flight = stats.in_flight.saturating_sub(1);
        stats.interval.saturating_record(latency);
        stats.interval_answered += 1;
        let tally = stats.steps.entry(step).or_insert_with(Tally::new);
        for t in [tally, &mut stats.overall] {
            t.latency.saturating_record(latency);
            t.service.saturating_record(service);
            if let Err(failure) = outcome {
                t.error(&failure.kind(), failure.message());
            }
        }
        if outcome.is_err() {
            stats.interval_errors += 1;
        }
    }

    /// A request due at `due` that was not answered by `now`, when the run stopped waiting: its
    /// latency is at least `now - due`, and it is recorded so, as an error.
    pub(crate) fn cut_off(&self, step: Step, due: Instant, now: Instant, was_pending: bool) {
        let latency = micros(now.saturating_duration_since(due));
        let mut stats = self.lock();
        let stats = &mut *stats;
        if was_pending {
            stats.in_flight = stats.in_flight.saturating_sub(1);
        }
        stats.interval.saturating_record(latency);
        stats.interval_errors += 1;
        let tally = stats.steps.entry(step).or_insert_with(Tally::new);
        for t in [tally, &mut stats.overall] {
            t.latency.saturating_record(latency);
            t.error(
                CUT_OFF,
                "still unanswered when the grace period after --duration ran out",
            );
        }
    }

    pub(crate) fn order_placed(&self) {
        self.lock().orders.placed += 1;
    }

    /// How an order ended; `waited` runs from the PlaceOrder's due time.
    pub(crate) fn order_ended(&self, end: OrderEnd, waited: Duration) {
        let mut stats = self.lock();
        match end {
            OrderEnd::Confirmed => {
                stats.orders.confirmed += 1;
                stats.confirmation.saturating_record(micros(waited));
            }
            OrderEnd::Cancelled => stats.orders.cancelled += 1,
            OrderEnd::NotConfirmed => stats.orders.not_confirmed += 1,
            OrderEnd::Unsettled => stats.orders.unsettled += 1,
        }
    }

    /// Closes the current interval at `now`: the timeline's next point.
    pub(crate) fn tick(&self, now: Instant) -> Point {
        let mut stats = self.lock();
        let seconds = now.saturating_duration_since(stats.last_tick).as_secs_f64();
        let l = Latencies::of(&stats.interval);
        let point = Point {
            t_s: now.saturating_duration_since(self.started).as_secs_f64(),
            requests: l.count,
            errors: stats.interval_errors,
            rps: if seconds > 0.0 {
                stats.interval_answered as f64 / seconds
            } else {
                0.0
            },
            p50_ms: l.p50_ms,
            p99_ms: l.p99_ms,
            max_ms: l.max_ms,
            in_flight: stats.in_flight,
        };
        stats.interval.reset();
        stats.interval_errors = 0;
        stats.interval_answered = 0;
        stats.last_tick = now;
        stats.timeline.push(point);
        point
    }

    /// The p99 and error count of everything so far, for the progress line.
    pub(crate) fn so_far(&self) -> (f64, u64, u64) {
        let stats = self.lock();
        let overall = &stats.overall;
        (
            Latencies::of(&overall.latency).p99_ms,
            overall.latency.len(),
            overall.error_count(),
        )
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut stats = self.lock();
        Totals {
            steps: std::mem::take(&mut stats.steps),
            overall: std::mem::replace(&mut stats.overall, Tally::new()),
            timeline: std::mem::take(&mut stats.timeline),
            orders: stats.orders,
            confirmation: std::mem::replace(&mut stats.confirmation, histogram()),
        }
    }
}

/// A request that was due and is not answered yet. Dropped unanswered (its task aborted when the
/// grace period ran out), it records itself as cut off, so a stalled server cannot hide.
pub(crate) struct Pending {
    recorder: Arc<Recorder>,
    step: Step,
    due: Instant,
    open: bool,
}

impl Pending {
    pub(crate) fn answered(mut self, sent: Instant, done: Instant, outcome: Result<(), &Failure>) {
        self.open = false;
        self.recorder
            .answered(self.step, self.due, sent, done, outcome);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.open {
            self.recorder
                .cut_off(self.step, self.due, Instant::now(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> u64 {
        n * 1000
    }

    /// Within the histogram's precision: three significant digits.
    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.001 + 0.001
    }

    #[test]
    fn percentiles_of_known_samples_are_exact_within_hdr_precision() {
        let mut h = histogram();
        for value in 1..=1000 {
            h.saturating_record(ms(value));
        }
        let l = Latencies::of(&h);
        assert_eq!(l.count, 1000);
        assert!(close(l.p50_ms, 500.0), "{l:?}");
        assert!(close(l.p90_ms, 900.0), "{l:?}");
        assert!(close(l.p95_ms, 950.0), "{l:?}");
        assert!(close(l.p99_ms, 990.0), "{l:?}");
        assert!(close(l.p999_ms, 999.0), "{l:?}");
        assert!(close(l.max_ms, 1000.0), "{l:?}");
        assert!(close(l.mean_ms, 500.5), "{l:?}");
    }

    #[test]
    fn one_slow_sample_in_a_thousand_is_the_p999_and_not_the_p99() {
        let mut h = histogram();
        for _ in 0..999 {
            h.saturating_record(ms(2));
        }
        h.saturating_record(ms(1500));
        let l = Latencies::of(&h);
        assert!(close(l.p99_ms, 2.0), "{l:?}");
        assert!(close(l.p999_ms, 2.0), "{l:?}");
        assert!(close(l.max_ms, 1500.0), "{l:?}");
        assert_eq!(Latencies::of(&histogram()), Latencies::default());
    }

    #[test]
    fn latency_counts_from_due_and_service_time_from_send() {
        let start = Instant::now();
        let recorder = Arc::new(Recorder::new(start));
        let due = start;
        let sent = start + Duration::from_millis(900);
        let done = start + Duration::from_millis(1000);
        recorder
            .pending(Step::View, due)
            .answered(sent, done, Ok(()));
        let failure = Failure::Http {
            status: 503,
            message: "busy".into(),
            retry_after: None,
        };
        recorder.pending(Step::View, due).answered(
            due,
            due + Duration::from_millis(5),
            Err(&failure),
        );
        let totals = recorder.totals();
        let view = &totals.steps[&Step::View];
        assert_eq!(view.latency.len(), 2);
        assert!(close(Latencies::of(&view.latency).max_ms, 1000.0));
        assert!(close(Latencies::of(&view.service).max_ms, 100.0));
        assert_eq!(view.errors["HTTP 503"].count, 1);
        assert_eq!(view.errors["HTTP 503"].example, "busy");
        assert_eq!(totals.overall.error_count(), 1);
    }

    #[test]
    fn a_request_dropped_unanswered_is_recorded_as_cut_off_with_its_wait() {
        let start = Instant::now() - Duration::from_secs(2);
        let recorder = Arc::new(Recorder::new(start));
        drop(recorder.pending(Step::PlaceOrder, start));
        let point = recorder.tick(Instant::now());
        assert_eq!((point.requests, point.errors, point.in_flight), (1, 1, 0));
        assert_eq!(point.rps, 0.0);
        let totals = recorder.totals();
        let placed = &totals.steps[&Step::PlaceOrder];
        assert_eq!(placed.errors[CUT_OFF].count, 1);
        assert!(Latencies::of(&placed.latency).max_ms >= 2000.0);
        assert!(placed.service.is_empty());
    }
}
