//! The run's summary: one serialisable value that the table on stdout, the `--json` file and the
//! `--svg` plot are all made from, and the progress line.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::stats::{CUT_OFF, Latencies, Orders, Point, Tally, Totals};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// `rest http://…` or `grpc user … product … order …`.
    pub target: String,
    /// The load model in words: `closed: 10 users, think 1s..5s, ramp-up 0s`.
    pub model: String,
    /// `--duration`: requests are due within it.
    pub duration_s: f64,
    /// From the start until the last answer (or cut-off).
    pub elapsed_s: f64,
    pub requests: u64,
    /// Failed requests (cut-offs included) plus orders that did not get confirmed.
    pub errors: u64,
    pub cut_off: u64,
    /// Requests per second over `elapsed_s`.
    pub rps: f64,
    pub max_error_rate: f64,
    /// Latency from due time, every request.
    pub overall: Latencies,
    /// From the actual send, answered requests only: the gap to `overall` is time spent waiting.
    pub service: Latencies,
    pub steps: Vec<StepSummary>,
    pub error_kinds: Vec<ErrorKind>,
    pub orders: Orders,
    /// From a PlaceOrder's due time to the poll that saw the order confirmed.
    pub confirmation: Latencies,
    pub timeline: Vec<Point>,
    /// The overall latency distribution: `(percentile, latency)` from p0 to p100.
    pub distribution: Vec<Percentile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    pub step: String,
    pub errors: u64,
    pub latency: Latencies,
    pub service: Latencies,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorKind {
    pub step: String,
    /// `HTTP 429`, `gRPC Unavailable`, `timeout`, `cut off`, …
    pub kind: String,
    pub count: u64,
    pub example: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    pub percentile: f64,
    pub latency_ms: f64,
}

/// What the summary says about the run besides its numbers.
pub(crate) struct Labels {
    pub(crate) scenario: String,
    pub(crate) target: String,
    pub(crate) model: String,
    pub(crate) duration_s: f64,
    pub(crate) elapsed_s: f64,
    pub(crate) max_error_rate: f64,
}

impl Summary {
    pub(crate) fn new(totals: &Totals, labels: Labels) -> Self {
        let mut error_kinds = Vec::new();
        let mut steps = Vec::new();
        for (step, tally) in &totals.steps {
            steps.push(StepSummary {
                step: step.name().to_owned(),
                errors: tally.error_count(),
                latency: Latencies::of(&tally.latency),
                service: Latencies::of(&tally.service),
            });
            error_kinds.extend(tally.errors.iter().map(|(kind, e)| ErrorKind {
                step: step.name().to_owned(),
                kind: kind.clone(),
                count: e.count,
                example: e.example.clone(),
            }));
        }
        let orders = totals.orders;
        for (kind, count) in [
            ("cancelled", orders.cancelled),
            (
                "not confirmed within --confirm-timeout",
                orders.not_confirmed,
            ),
        ] {
            if count > 0 {
                error_kinds.push(ErrorKind {
                    step: "order".to_owned(),
                    kind: kind.to_owned(),
                    count,
                    example: String::new(),
                });
            }
        }
        let overall = &totals.overall;
        let requests = overall.latency.len();
        Self {
            scenario: labels.scenario,
            target: labels.target,
            model: labels.model,
            duration_s: labels.duration_s,
            elapsed_s: labels.elapsed_s,
            requests,
            errors: overall.error_count() + orders.cancelled + orders.not_confirmed,
            cut_off: overall.errors.get(CUT_OFF).map_or(0, |e| e.count),
            rps: requests as f64 / labels.elapsed_s.max(f64::EPSILON),
            max_error_rate: labels.max_error_rate,
            overall: Latencies::of(&overall.latency),
            service: Latencies::of(&overall.service),
            steps,
            error_kinds,
            orders,
            confirmation: Latencies::of(&totals.confirmation),
            timeline: totals.timeline.clone(),
            distribution: distribution(overall),
        }
    }

    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.requests.max(1) as f64
    }

    /// Whether the errors stayed within `--max-error-rate` (and anything was sent at all).
    pub fn passed(&self) -> bool {
        self.requests > 0 && self.error_rate() <= self.max_error_rate
    }
}

/// Latency at percentiles spaced evenly on the "nines" scale (90, 99, 99.9, …), as HdrHistogram
/// plots do, as far as the sample count resolves, then the maximum.
fn distribution(tally: &Tally) -> Vec<Percentile> {
    let h = &tally.latency;
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for tenth in 0..=60 {
        let nines = f64::from(tenth) / 10.0;
        let quantile = 1.0 - 10f64.powf(-nines);
        if (1.0 - quantile) * (h.len() as f64) < 1.0 {
            break;
        }
        points.push(Percentile {
            percentile: quantile * 100.0,
            latency_ms: h.value_at_quantile(quantile) as f64 / 1000.0,
        });
    }
    points.push(Percentile {
        percentile: 100.0,
        latency_ms: h.max() as f64 / 1000.0,
    });
    points
}

/// A latency in a unit that suits it: 850µs, 4.21ms, 37.5ms, 412ms, 1.52s.
pub(crate) fn time(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// Once a second on stderr while the run goes.
pub(crate) fn progress_line(point: &Point, p99_so_far_ms: f64, errors_so_far: u64) -> String {
    format!(
        "[{:>5.0}s] {:>7.0} req/s  p99 {:>8} (so far {:>8})  errors {:>6} (+{})  in flight {}",
        point.t_s,
        point.rps,
        time(point.p99_ms),
        time(p99_so_far_ms),
        errors_so_far,
        point.errors,
        point.in_flight,
    )
}

fn latency_columns(f: &mut fmt::Formatter<'_>, l: &Latencies) -> fmt::Result {
    for value in [l.p50_ms, l.p90_ms, l.p95_ms, l.p99_ms, l.p999_ms, l.max_ms] {
        write!(f, " {:>8}", time(value))?;
    }
    writeln!(f)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "shop load: {} over {}", self.scenario, self.target)?;
        writeln!(f, "model:     {}", self.model)?;
        writeln!(
            f,
            "ran {:.1}s ({:.1}s due): {} requests, {:.1}/s; {} errors ({:.2}%), {} cut off",
            self.elapsed_s,
            self.duration_s,
            self.requests,
            self.rps,
            self.errors,
            self.error_rate() * 100.0,
            self.cut_off,
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<14} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency", "requests", "errors", "p50", "p90", "p95", "p99", "p99.9", "max"
        )?;
        for step in &self.steps {
            write!(
                f,
                "{:<14} {:>9} {:>7}",
                step.step, step.latency.count, step.errors
            )?;
            latency_columns(f, &step.latency)?;
        }
        write!(
            f,
            "{:<14} {:>9} {:>7}",
            "all",
            self.requests,
            self.errors
                .saturating_sub(self.orders.cancelled + self.orders.not_confirmed)
        )?;
        latency_columns(f, &self.overall)?;
        write!(
            f,
            "{:<14} {:>9} {:>7}",
            "all (send)", self.service.count, ""
        )?;
        latency_columns(f, &self.service)?;
        writeln!(
            f,
            "(latency counts from when a request was due; \"send\" from when it was sent)"
        )?;
        if self.orders.placed > 0 {
            let o = &self.orders;
            writeln!(
                f,
                "\norders: {} placed, {} confirmed, {} cancelled, {} not confirmed in time, {} \
                 unsettled at the end",
                o.placed, o.confirmed, o.cancelled, o.not_confirmed, o.unsettled
            )?;
            write!(
                f,
                "{:<14} {:>9} {:>7}",
                "to confirmed", self.confirmation.count, ""
            )?;
            latency_columns(f, &self.confirmation)?;
        }
        if !self.error_kinds.is_empty() {
            writeln!(f, "\nerrors:")?;
            for e in &self.error_kinds {
                writeln!(
                    f,
                    "  {:<12} {:<22} {:>8}  {}",
                    e.step, e.kind, e.count, e.example
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_written_in_a_unit_that_suits_them() {
        assert_eq!(time(0.85), "850µs");
        assert_eq!(time(4.214), "4.21ms");
        assert_eq!(time(37.52), "37.5ms");
        assert_eq!(time(412.4), "412ms");
        assert_eq!(time(1520.0), "1.52s");
    }
}
