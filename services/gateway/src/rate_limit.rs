//! Kong's `rate-limiting` plugin, locally: for each configured window (`second`, `minute`,
//! `hour`, `day`) a token bucket per client that holds the window's limit and refills evenly
//! over the window. A request takes one token from every bucket; with any bucket empty it is
//! refused with 429 and told when to retry. The client is what `limit_by` says, as in Kong: the
//! IP, or the consumer, which for the `jwt` plugin is the credential the token's `iss` names, so
//! every user of one issuer shares one consumer's budget (which is why kong.yaml limits by IP).
//! A plugin on a route replaces the global one for that route, with buckets of its own.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::kong::Plugin;

const WINDOWS: [(&str, &str, u64); 4] = [
    ("second", "Second", 1),
    ("minute", "Minute", 60),
    ("hour", "Hour", 3_600),
    ("day", "Day", 86_400),
];

#[derive(Debug, Clone, Copy)]
struct Window {
    title: &'static str,
    limit: u64,
    length: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a request learned: allowed or not, and the headers to send either way.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    pub(crate) headers: Vec<(String, String)>,
}

/// Whose bucket a request takes from (Kong's `limit_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitBy {
    Ip,
    /// The authenticated consumer; the IP when the route has no `jwt` plugin.
    Consumer,
}

impl LimitBy {
    /// The `limit_by` values this gateway implements (Kong's default is `consumer`).
    pub(crate) const KNOWN: [&str; 3] = ["consumer", "credential", "ip"];

    fn of(plugin: &Plugin) -> Self {
        match plugin.str("limit_by") {
            Some("ip") => Self::Ip,
            _ => Self::Consumer,
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    pub(crate) limit_by: LimitBy,
    windows: Vec<Window>,
    buckets: Mutex<HashMap<String, Vec<Bucket>>>,
}

impl RateLimiter {
    /// `None` when the plugin sets no window.
    pub(crate) fn from_plugin(plugin: &Plugin) -> Option<Self> {
        let windows: Vec<Window> = WINDOWS
            .iter()
            .filter_map(|(key, title, seconds)| {
                plugin.u64(key).filter(|l| *l > 0).map(|limit| Window {
                    title,
                    limit,
                    length: Duration::from_secs(*seconds),
                })
            })
            .collect();
        (!windows.is_empty()).then(|| Self {
            limit_by: LimitBy::of(plugin),
            windows,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn check(&self, client: &str, now: Instant) -> Verdict {
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = all.entry(client.to_owned()).or_insert_with(|| {
            self.windows
                .iter()
                .map(|w| Bucket {
                    tokens: w.limit as f64,
                    at: now,
                })
                .collect()
        });
        // Refill for the time passed.
        for (bucket, window) in buckets.iter_mut().zip(&self.windows) {
            let rate = window.limit as f64 / window.length.as_secs_f64();
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(window.limit as f64);
            bucket.at = now;
        }
        let allowed = buckets.iter().all(|b| b.tokens >= 1.0);
        if allowed {
            for bucket in buckets.iter_mut() {
                bucket.tokens -= 1.0;
            }
        }
        let mut headers = Vec::new();
        // The standard headers describe the tightest window; Kong's X- headers every window.
        let mut tightest: Option<(u64, u64, u64)> = None;
        let mut retry_after = 0u64;
        for (bucket, window) in buckets.iter().zip(&self.windows) {
            let remaining = bucket.tokens.max(0.0).floor() as u64;
            let rate = window.limit as f64 / window.length.as_secs_f64();
            let until_one = ((1.0 - bucket.tokens).max(0.0) / rate).ceil() as u64;
            let until_full = ((window.limit as f64 - bucket.tokens) / rate).ceil() as u64;
            if bucket.tokens < 1.0 {
                retry_after = retry_after.max(until_one.max(1));
            }
            headers.push((
                format!("X-RateLimit-Limit-{}", window.title),
                window.limit.to_string(),
            ));
            headers.push((
                format!("X-RateLimit-Remaining-{}", window.title),
                remaining.to_string(),
            ));
            if tightest.is_none_or(|(_, r, _)| remaining < r) {
                tightest = Some((window.limit, remaining, until_full.max(1)));
            }
        }
        if let Some((limit, remaining, reset)) = tightest {
            headers.push(("RateLimit-Limit".to_owned(), limit.to_string()));
            headers.push(("RateLimit-Remaining".to_owned(), remaining.to_string()));
            headers.push(("RateLimit-Reset".to_owned(), reset.to_string()));
        }
        if !allowed {
            headers.push(("Retry-After".to_owned(), retry_after.to_string()));
        }
        Verdict { allowed, headers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(yaml: &str) -> RateLimiter {
        let plugin: Plugin = serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
        RateLimiter::from_plugin(&plugin).unwrap_or_else(|| panic!("no window"))
    }

    fn header<'a>(verdict: &'a Verdict, name: &str) -> Option<&'a str> {
        verdict
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_burst_over_the_limit_is_refused_then_tokens_come_back() {
        let limiter = limiter("{name: rate-limiting, config: {second: 3}}");
        let start = Instant::now();
        for remaining in ["2", "1", "0"] {
            let verdict = limiter.check("ip:1", start);
            assert!(verdict.allowed);
            assert_eq!(header(&verdict, "RateLimit-Remaining"), Some(remaining));
        }
        let refused = limiter.check("ip:1", start);
        assert!(!refused.allowed);
        assert_eq!(header(&refused, "Retry-After"), Some("1"));
        assert!(
            limiter.check("ip:2", start).allowed,
            "clients are counted apart"
        );
        let later = start + Duration::from_millis(400);
        assert!(
            limiter.check("ip:1", later).allowed,
            "a third of a second refills one token"
        );
    }

    #[test]
    fn every_window_must_have_room() {
        let limiter = limiter("{name: rate-limiting, config: {second: 100, minute: 2}}");
        let now = Instant::now();
        assert!(limiter.check("c", now).allowed);
        assert!(limiter.check("c", now).allowed);
        let refused = limiter.check("c", now);
        assert!(!refused.allowed);
        assert_eq!(header(&refused, "X-RateLimit-Limit-Minute"), Some("2"));
        assert_eq!(header(&refused, "Retry-After"), Some("30"));
    }
}
