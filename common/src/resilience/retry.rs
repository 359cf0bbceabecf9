//! Bounded retries with jittered exponential back-off, for calls the mesh does not retry (a
//! payment provider): a few attempts, each wait drawn at random so callers that failed together
//! do not come back together.

use std::{fmt, future::Future, time::Duration};

/// Delays that double from a first one up to a ceiling, for ever (the caller bounds them).
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
        }
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        Some(delay)
    }
}

/// "Equal jitter": a delay drawn uniformly from the upper half of `delay`, so it never shrinks
/// below half of what the back-off asked for and never grows past it.
pub fn jittered(delay: Duration) -> Duration {
    let half = delay / 2;
    let spread = u64::try_from((delay - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=spread))
}

/// How many times to try, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included; at least one is made.
    pub attempts: u32,
    /// The wait after the first failure, before jitter; it doubles after each further one.
    pub first_delay: Duration,
    /// The longest wait, before jitter.
    pub max_delay: Duration,
}

impl Retry {
    /// The waits between attempts, jittered: one fewer than the attempts.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        Backoff::new(self.first_delay, self.max_delay)
            .map(jittered)
            .take(self.attempts.saturating_sub(1) as usize)
    }

    /// Runs `attempt` (told its number, from 1) until it succeeds, fails with an error that
    /// `retryable` refuses, or the attempts are spent; returns the last outcome. Each failure
    /// that is retried is logged at INFO in the caller's span.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut attempt: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display,
    {
        let mut delays = self.delays();
        let mut number = 1;
        loop {
            let error = match attempt(number).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let delay = match delays.next() {
                Some(delay) if retryable(&error) => delay,
                _ => return Err(error),
            };
            tracing::info!(attempt = number, %error, ?delay, "attempt failed; retrying");
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_backoff_doubles_up_to_its_ceiling() {
        let delays: Vec<Duration> = Backoff::new(100 * MS, 500 * MS).take(5).collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
    }

    #[test]
    fn a_jittered_delay_stays_in_the_upper_half_and_varies() {
        let drawn: Vec<Duration> = (0..200).map(|_| jittered(100 * MS)).collect();
        assert!(
            drawn.iter().all(|d| (50 * MS..=100 * MS).contains(d)),
            "{drawn:?}"
        );
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(
            distinct.len() > 100,
            "jitter spreads the waits: {}",
            distinct.len()
        );
    }

    #[test]
    fn there_is_one_wait_fewer_than_attempts_each_within_its_doubling() {
        let retry = Retry {
            attempts: 4,
            first_delay: 100 * MS,
            max_delay: 300 * MS,
        };
        let delays: Vec<Duration> = retry.delays().collect();
        assert_eq!(delays.len(), 3);
        for (delay, ceiling) in delays.iter().zip([100 * MS, 200 * MS, 300 * MS]) {
            assert!(
                (ceiling / 2..=ceiling).contains(delay),
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    fn quick(attempts: u32) -> Retry {
        Retry {
            attempts,
            first_delay: MS,
            max_delay: 2 * MS,
        }
    }

    #[tokio::test]
    async fn retryable_failures_are_tried_again_until_the_attempts_are_spent() {
        let calls = Cell::new(0);
        let outcome: Result<(), String> = quick(3)
            .run(
                |n| {
                    calls.set(calls.get() + 1);
                    async move { Err(format!("failure {n}")) }
                },
                |_| true,
            )
            .await;
        assert_eq!(
            outcome,
            Err("failure 3".to_owned()),
            "the last error is returned"
        );
        assert_eq!(calls.get(), 3);
    }

    #[tokio::test]
    async fn a_failure_that_is_not_retryable_ends_at_once() {
        let calls = Cell::new(0);
        let outcome: Result<(), &str> = quick(5)
            .run(
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err("declined") }
                },
                |e| *e != "declined",
            )
            .await;
        assert_eq!(outcome, Err("declined"));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test]
    async fn a_success_after_failures_is_returned() {
        let outcome = quick(5)
            .run(
                |n| async move { if n < 3 { Err("transient") } else { Ok(n) } },
                |_| true,
            )
            .await;
        assert_eq!(outcome, Ok(3));
    }
}
