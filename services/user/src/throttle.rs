//! Failed sign-ins slow down the next ones, so a password cannot be guessed at the speed of the
//! network. Three counters, each with its own free attempts and a delay that doubles with every
//! failure past them, up to a cap:
//!
//! - per account and client: the tight one (5 free, then up to 15 minutes), so one attacker on
//!   one account is stopped without touching the owner signing in from elsewhere;
//! - per account: catches guesses spread over many clients (20 free, then at most 1 minute), and
//!   its low cap is what keeps an attacker from locking the owner out for longer than that;
//! - per client: catches one client trying many accounts (50 free, then up to 15 minutes).
//!
//! An attempt counts as a failure when it starts and is forgiven when it succeeds, so a burst of
//! parallel guesses cannot all slip through before the first one fails. The account key is the
//! normalised email whether or not the account exists, so the answer does not tell them apart.
//! State is per process: with several replicas each keeps its own counts.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How one counter treats failures.
#[derive(Debug, Clone, Copy)]
struct Rule {
    /// Failures allowed before any delay.
    free: u32,
    /// The first delay; each further failure doubles it.
    first_delay: Duration,
    /// The longest delay.
    cap: Duration,
}

impl Rule {
    /// How long after the last failure the next attempt must wait, after `failures` of them.
    fn delay(&self, failures: u32) -> Duration {
        if failures <= self.free {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free - 1).min(20);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.cap)
    }
}

const PAIR: Rule = Rule {
    free: 5,
    first_delay: Duration::from_secs(1),
    cap: Duration::from_secs(15 * 60),
};
const ACCOUNT: Rule = Rule {
    free: 20,
    first_delay: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};
const CLIENT: Rule = Rule {
    free: 50,
    first_delay: Duration::from_secs(1),
    cap: Duration::from_secs(15 * 60),
};

/// Counts are forgotten this long after their last failure.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Counters kept at most; past it, forgotten ones are dropped and then new keys go uncounted
/// (the keys already counted keep their delays).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, String),
    Account(String),
    Client(String),
}

impl Key {
    fn rule(&self) -> Rule {
        match self {
            Self::Pair(..) => PAIR,
            Self::Account(_) => ACCOUNT,
            Self::Client(_) => CLIENT,
        }
    }
}

/// A sign-in that was let through: report how it went with [`LoginThrottle::succeeded`], or
/// drop it to leave it counted as a failure.
#[derive(Debug)]
pub(crate) struct Attempt {
    email: String,
    client: String,
}

#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    failures: Mutex<HashMap<Key, Failures>>,
}

impl LoginThrottle {
    /// Lets the attempt through and counts it as failed until told otherwise, or says how long
    /// to wait before the next attempt.
    pub(crate) fn attempt(
        &self,
        email: &str,
        client: &str,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let keys = keys(email, client);
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter_map(|key| {
                let seen = failures.get(key)?;
                let until = seen.last + key.rule().delay(seen.count);
                (until > now).then(|| until - now)
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        if failures.len() + keys.len() > MAX_KEYS {
            failures.retain(|_, seen| now.saturating_duration_since(seen.last) < FORGET_AFTER);
        }
        for key in keys {
            let room = failures.len() < MAX_KEYS;
            match failures.get_mut(&key) {
                Some(seen) => {
                    if now.saturating_duration_since(seen.last) >= FORGET_AFTER {
                        seen.count = 0;
                    }
                    seen.count = seen.count.saturating_add(1);
                    seen.last = now;
                }
                None if room => {
                    failures.insert(
                        key,
                        Failures {
                            count: 1,
                            last: now,
                        },
                    );
                }
                None => {}
            }
        }
        Ok(Attempt {
            email: email.to_owned(),
            client: client.to_owned(),
        })
    }

    /// The password was right: the account's counts start over, and the client's forgets this
    /// attempt (its failures on other accounts stay).
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&Key::Pair(attempt.email.clone(), attempt.client.clone()));
        failures.remove(&Key::Account(attempt.email));
        if let Some(seen) = failures.get_mut(&Key::Client(attempt.client)) {
            seen.count = seen.count.saturating_sub(1);
        }
    }
}

fn keys(email: &str, client: &str) -> [Key; 3] {
    [
        Key::Pair(email.to_owned(), client.to_owned()),
        Key::Account(email.to_owned()),
        Key::Client(client.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "ada@example.com";

    /// `n` failed attempts at `now`, each let through.
    fn fail(throttle: &LoginThrottle, email: &str, client: &str, n: u32, now: Instant) {
        for i in 0..n {
            assert!(
                throttle.attempt(email, client, now).is_ok(),
                "attempt {} of {n} was refused",
                i + 1
            );
        }
    }

    #[test]
    fn delays_double_past_the_free_attempts_up_to_the_cap() {
        assert_eq!(PAIR.delay(5), Duration::ZERO);
        assert_eq!(PAIR.delay(6), Duration::from_secs(1));
        assert_eq!(PAIR.delay(7), Duration::from_secs(2));
        assert_eq!(PAIR.delay(10), Duration::from_secs(16));
        assert_eq!(PAIR.delay(1_000), Duration::from_secs(15 * 60));
        assert_eq!(ACCOUNT.delay(1_000), Duration::from_secs(60));
    }

    #[test]
    fn one_client_on_one_account_is_slowed_after_five_failures() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        fail(&throttle, EMAIL, "10.0.0.1", 6, now);
        let wait = throttle.attempt(EMAIL, "10.0.0.1", now).err();
        assert_eq!(wait, Some(Duration::from_secs(1)));
        // Once the delay has passed one more try is let through, and the next wait doubles.
        let later = now + Duration::from_secs(1);
        assert!(throttle.attempt(EMAIL, "10.0.0.1", later).is_ok());
        assert_eq!(
            throttle.attempt(EMAIL, "10.0.0.1", later).err(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn the_owner_from_another_client_is_not_locked_out_by_one_attacker() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        fail(&throttle, EMAIL, "attacker", 6, now);
        assert!(throttle.attempt(EMAIL, "attacker", now).is_err());
        let owner = throttle.attempt(EMAIL, "owner", now);
        assert!(owner.is_ok(), "{owner:?}");
    }

    #[test]
    fn guesses_spread_over_many_clients_are_slowed_per_account_for_at_most_a_minute() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..40 {
            let _ = throttle.attempt(EMAIL, &format!("10.0.0.{i}"), now);
        }
        let wait = throttle.attempt(EMAIL, "owner", now).err();
        assert!(
            wait.is_some_and(|w| w > Duration::ZERO && w <= Duration::from_secs(60)),
            "{wait:?}"
        );
        let after_a_minute = now + Duration::from_secs(60);
        assert!(throttle.attempt(EMAIL, "owner", after_a_minute).is_ok());
    }

    #[test]
    fn one_client_trying_many_accounts_is_slowed() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        let email = |i: usize| format!("user{i}@example.com");
        // 50 free failures, and the 51st is let through as the first past them.
        for i in 0..51 {
            assert!(throttle.attempt(&email(i), "sprayer", now).is_ok(), "{i}");
        }
        assert!(throttle.attempt(&email(51), "sprayer", now).is_err());
        assert!(throttle.attempt(&email(51), "someone else", now).is_ok());
    }

    #[test]
    fn a_success_clears_the_account_and_parallel_attempts_count_before_they_finish() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        // Five in flight at once are let through; the sixth waits although none has failed yet.
        let in_flight: Vec<Attempt> = (0..5)
            .filter_map(|_| throttle.attempt(EMAIL, "c", now).ok())
            .collect();
        assert_eq!(in_flight.len(), 5);
        assert!(throttle.attempt(EMAIL, "c", now).is_ok());
        assert!(throttle.attempt(EMAIL, "c", now).is_err());
        let later = now + Duration::from_secs(1);
        let right = throttle.attempt(EMAIL, "c", later);
        let Ok(right) = right else {
            panic!("the attempt after the delay was refused: {right:?}");
        };
        throttle.succeeded(right);
        fail(&throttle, EMAIL, "c", 5, later);
    }

    #[test]
    fn counts_are_forgotten_an_hour_after_the_last_failure() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        fail(&throttle, EMAIL, "c", 6, now);
        let next_hour = now + FORGET_AFTER + Duration::from_secs(1);
        fail(&throttle, EMAIL, "c", 5, next_hour);
    }
}
