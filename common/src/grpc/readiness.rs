//! Readiness that follows the dependencies: a service is SERVING while every required dependency
//! (its database, its broker) answers, and NOT_SERVING from the first failed check until one
//! passes again, so Kubernetes takes it out of the endpoints instead of sending it calls it can
//! only fail. Liveness is not touched: a service that lost its database needs it back, not a
//! restart.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tonic_health::{ServingStatus, server::HealthReporter};

/// One dependency's check: `Ok` when it answered.
pub type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How often dependencies are checked, and how long one check may take.
#[derive(Debug, Clone, Copy)]
pub struct ReadinessTiming {
    pub every: Duration,
    pub timeout: Duration,
}

impl Default for ReadinessTiming {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The dependencies a service needs to be ready.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
    timing: ReadinessTiming,
}

impl Readiness {
    /// Adds `dependency` (named in logs) with its check.
    pub fn require(&mut self, dependency: &'static str, check: Check) {
        self.checks.push((dependency, check));
    }

    pub fn with_timing(mut self, timing: ReadinessTiming) -> Self {
        self.timing = timing;
        self
    }

    /// The first dependency that does not answer, with why.
    pub async fn first_failure(&self) -> Option<(&'static str, String)> {
        for (dependency, check) in &self.checks {
            let outcome = tokio::time::timeout(self.timing.timeout, check()).await;
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(_) => format!("no answer within {:?}", self.timing.timeout),
            };
            return Some((dependency, error));
        }
        None
    }

    /// Sets `names` SERVING or NOT_SERVING after every round of checks, for ever (the server
    /// aborts this task when it starts draining). Transitions are logged once.
    pub(crate) async fn watch(self, service: String, health: HealthReporter, names: Vec<String>) {
        let mut serving = None;
        loop {
            let failure = self.first_failure().await;
            let now_serving = failure.is_none();
            if serving != Some(now_serving) {
                let status = if now_serving {
                    tracing::info!(%service, "serving");
                    ServingStatus::Serving
                } else {
                    let (dependency, error) = failure.unwrap_or(("dependency", String::new()));
                    tracing::warn!(%service, dependency, %error, "not ready: a dependency does not answer");
                    ServingStatus::NotServing
                };
                for name in &names {
                    health.set_service_status(name, status).await;
                }
                serving = Some(now_serving);
            }
            tokio::time::sleep(self.timing.every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn switch(up: &Arc<AtomicBool>) -> Check {
        let up = up.clone();
        Arc::new(move || {
            let answered = up.load(Ordering::SeqCst);
            Box::pin(async move {
                if answered {
                    Ok(())
                } else {
                    Err("connection refused".to_owned())
                }
            })
        })
    }

    #[tokio::test]
    async fn the_first_dependency_that_does_not_answer_is_named() {
        let database = Arc::new(AtomicBool::new(true));
        let broker = Arc::new(AtomicBool::new(true));
        let mut readiness = Readiness::default();
        readiness.require("database", switch(&database));
        readiness.require("broker", switch(&broker));
        assert_eq!(readiness.first_failure().await, None);
        broker.store(false, Ordering::SeqCst);
        assert_eq!(
            readiness.first_failure().await,
            Some(("broker", "connection refused".to_owned()))
        );
    }

    #[tokio::test]
    async fn a_check_that_hangs_counts_as_not_answering() {
        let mut readiness = Readiness::default().with_timing(ReadinessTiming {
            every: Duration::from_millis(10),
            timeout: Duration::from_millis(20),
        });
        readiness.require(
            "database",
            Arc::new(|| Box::pin(std::future::pending::<Result<(), String>>())),
        );
        let failure = readiness.first_failure().await;
        assert!(
            failure
                .as_ref()
                .is_some_and(|(d, e)| *d == "database" && e.starts_with("no answer within")),
            "{failure:?}"
        );
    }
}
