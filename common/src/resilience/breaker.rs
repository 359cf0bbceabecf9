//! Circuit breakers around dependencies the mesh does not cover: after some failures in a row,
//! calls are refused at once for a while instead of piling up behind a dependency that is down;
//! then one call probes, and its success closes the breaker again. The state is a metric, each
//! transition is logged once, and a service may make its readiness follow a breaker.
//!
//! `failsafe` (dormant since 2024) keeps the state machine; nothing outside this file names it,
//! so it can be swapped here alone.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc, LazyLock, Mutex, Weak,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use failsafe::{
    Config, FailurePolicy, Instrument, StateMachine,
    failure_policy::{ConsecutiveFailures, consecutive_failures},
    futures::CircuitBreaker as _,
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use tokio::task::AbortHandle;

use super::retry::Backoff;
use crate::grpc::Check;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker.
    pub failures: u32,
    /// How long it stays open the first time.
    pub open_for: Duration,
    /// The longest it stays open: each failed probe doubles the last period, up to this.
    pub open_max: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
        }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused without reaching the dependency.
    Open,
    /// The open period is over: the next call probes, the others are refused meanwhile.
    HalfOpen,
}

impl State {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }

    /// Its value in `circuit_breaker_state`.
    fn as_u8(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Why a call through a breaker did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker is open: the dependency (named) was not called.
    Open(&'static str),
    /// The dependency was called and failed.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(dependency) => write!(f, "circuit breaker open for {dependency}"),
            Self::Failed(error) => error.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open(_) => None,
            Self::Failed(error) => Some(error),
        }
    }
}

/// An open breaker answers UNAVAILABLE, as the dependency would have.
impl From<CallError<tonic::Status>> for tonic::Status {
    fn from(error: CallError<tonic::Status>) -> Self {
        match error {
            CallError::Open(_) => tonic::Status::unavailable(error.to_string()),
            CallError::Failed(status) => status,
        }
    }
}

/// The codes that say a gRPC dependency is down or overwhelmed, as opposed to an answer about
/// the request itself (a refused credential, a missing record), which must not open a breaker.
pub fn is_outage(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Unknown
    )
}

struct BreakerMetrics {
    state: IntGaugeVec,
    rejected: IntCounterVec,
    transitions: IntCounterVec,
}

fn metrics() -> &'static BreakerMetrics {
    static METRICS: LazyLock<BreakerMetrics> = LazyLock::new(|| BreakerMetrics {
        state: crate::metrics::gauge_vec(
            "circuit_breaker_state",
            "Circuit breaker of a dependency: 0 closed, 1 open (calls refused), 2 half-open (one call probes)",
            &["service", "dependency"],
        ),
        rejected: crate::metrics::counter_vec(
            "circuit_breaker_rejected_total",
            "Calls refused by an open circuit breaker without reaching the dependency",
            &["service", "dependency"],
        ),
        transitions: crate::metrics::counter_vec(
            "circuit_breaker_transitions_total",
            "Circuit breaker transitions, by the state entered (open, half_open, closed)",
            &["service", "dependency", "to"],
        ),
    });
    &METRICS
}

/// How long the current open period lasts and when it ends.
#[derive(Debug, Default)]
struct Timing {
    /// The period the policy gave failsafe last; failsafe does not tell its instrument.
    last_delay: Duration,
    open_until: Option<Instant>,
}

/// What the failure policy and the instrument record as failsafe moves, read by the breaker.
struct Shared {
    service: String,
    dependency: &'static str,
    state: AtomicU8,
    timing: Mutex<Timing>,
    /// Whether the one call a half-open breaker lets through is under way.
    probing: AtomicBool,
    gauge: IntGauge,
    rejected: IntCounter,
}

impl Shared {
    fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::SeqCst))
    }

    fn timing(&self) -> std::sync::MutexGuard<'_, Timing> {
        self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a transition (failsafe also reports the state it starts in, which is none).
    fn enter(&self, to: State) {
        let open_for = if to == State::Open {
            let mut timing = self.timing();
            // Set after failsafe set its own deadline, so never before it.
            timing.open_until = Some(Instant::now() + timing.last_delay);
            Some(timing.last_delay)
        } else {
            None
        };
        let from = State::from_u8(self.state.swap(to.as_u8(), Ordering::SeqCst));
        if from == to {
            return;
        }
        self.gauge.set(i64::from(to.as_u8()));
        metrics()
            .transitions
            .with_label_values(&[self.service.as_str(), self.dependency, to.as_str()])
            .inc();
        let (service, dependency) = (&self.service, self.dependency);
        match to {
            State::Open => {
                tracing::warn!(%service, dependency, ?open_for, "circuit breaker open: calls are refused")
            }
            State::HalfOpen => {
                tracing::debug!(%service, dependency, "circuit breaker half-open: the next call probes")
            }
            State::Closed => tracing::info!(%service, dependency, "circuit breaker closed"),
        }
    }
}

/// Consecutive failures, with the open period recorded as it is handed to failsafe.
struct Policy {
    inner: ConsecutiveFailures<Backoff>,
    shared: Arc<Shared>,
}

impl FailurePolicy for Policy {
    fn record_success(&mut self) {
        self.inner.record_success();
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let delay = self.inner.mark_dead_on_failure();
        if let Some(delay) = delay {
            self.shared.timing().last_delay = delay;
        }
        delay
    }

    fn revived(&mut self) {
        self.inner.revived();
    }
}

/// failsafe's instrument: metrics, logs, and the timer that ends an open period.
struct Observer {
    shared: Arc<Shared>,
    breaker: Weak<Inner>,
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {
        self.shared.rejected.inc();
    }

    fn on_open(&self) {
        self.shared.enter(State::Open);
        if let Some(inner) = self.breaker.upgrade() {
            inner.schedule_half_open();
        }
    }

    fn on_half_open(&self) {
        self.shared.enter(State::HalfOpen);
    }

    fn on_closed(&self) {
        self.shared.enter(State::Closed);
    }
}

struct Inner {
    machine: StateMachine<Policy, Observer>,
    shared: Arc<Shared>,
    /// Moves the breaker to half-open when its open period ends, so the metric and readiness
    /// do not wait for a call to notice.
    timer: Mutex<Option<AbortHandle>>,
}

impl Inner {
    /// Moves an open breaker whose period is over to half-open.
    fn tick(&self) {
        let over = self
            .shared
            .timing()
            .open_until
            .is_some_and(|until| Instant::now() > until);
        if over && self.shared.state() == State::Open {
            // Past failsafe's deadline too: this lets the state machine move, refusing nothing.
            self.machine.is_call_permitted();
        }
    }

    fn schedule_half_open(self: &Arc<Self>) {
        let Some(until) = self.shared.timing().open_until else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime the next call or state() notices instead.
            return;
        };
        let breaker = Arc::downgrade(self);
        let timer = runtime.spawn(async move {
            tokio::time::sleep_until((until + Duration::from_millis(1)).into()).await;
            if let Some(inner) = breaker.upgrade() {
                inner.tick();
            }
        });
        let mut slot = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = slot.replace(timer.abort_handle()) {
            previous.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(timer) = self
            .timer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            timer.abort();
        }
    }
}

/// The one call a half-open breaker lets through; the slot frees when it ends, even cancelled.
struct Probe<'a>(&'a Shared);

impl<'a> Probe<'a> {
    fn take(shared: &'a Shared) -> Option<Self> {
        shared
            .probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .ok()
            .map(|_| Self(shared))
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.probing.store(false, Ordering::SeqCst);
    }
}

/// A circuit breaker around one dependency of one service; clones share it.
#[derive(Clone)]
pub struct Breaker(Arc<Inner>);

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("service", &self.0.shared.service)
            .field("dependency", &self.0.shared.dependency)
            .field("state", &self.0.shared.state())
            .finish()
    }
}

impl Breaker {
    /// A closed breaker around `dependency` of `service` (the metric's labels).
    pub fn new(
        service: impl Into<String>,
        dependency: &'static str,
        settings: BreakerSettings,
    ) -> Self {
        let service = service.into();
        let metrics = metrics();
        let labels = [service.as_str(), dependency];
        let gauge = metrics.state.with_label_values(&labels);
        gauge.set(0);
        let shared = Arc::new(Shared {
            rejected: metrics.rejected.with_label_values(&labels),
            gauge,
            service,
            dependency,
            state: AtomicU8::new(State::Closed.as_u8()),
            timing: Mutex::new(Timing::default()),
            probing: AtomicBool::new(false),
        });
        let backoff = Backoff::new(settings.open_for, settings.open_max);
        Self(Arc::new_cyclic(|breaker| Inner {
            machine: Config::new()
                .failure_policy(Policy {
                    inner: consecutive_failures(settings.failures.max(1), backoff),
                    shared: shared.clone(),
                })
                .instrument(Observer {
                    shared: shared.clone(),
                    breaker: breaker.clone(),
                })
                .build(),
            shared,
            timer: Mutex::new(None),
        }))
    }

    pub fn dependency(&self) -> &'static str {
        self.0.shared.dependency
    }

    /// Where the breaker is now.
    pub fn state(&self) -> State {
        self.0.tick();
        self.0.shared.state()
    }

    /// Runs `call` unless the breaker is open. An error that `is_failure` accepts counts
    /// towards opening it; any other outcome is an answer, and counts as a success. Put the
    /// call's timeout inside `call`, so that a dependency that hangs counts as failing.
    pub async fn call<T, E, Fut>(
        &self,
        call: Fut,
        is_failure: impl Fn(&E) -> bool,
    ) -> Result<T, CallError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &self.0;
        let dependency = inner.shared.dependency;
        if !inner.machine.is_call_permitted() {
            return Err(CallError::Open(dependency));
        }
        // One call probes a half-open breaker; the others are refused as if it were still
        // open, so a dependency that is still down costs one failure, not one per caller.
        let _probe = match inner.shared.state() {
            State::HalfOpen => match Probe::take(&inner.shared) {
                Some(probe) => Some(probe),
                None => {
                    inner.shared.rejected.inc();
                    return Err(CallError::Open(dependency));
                }
            },
            State::Closed | State::Open => None,
        };
        inner
            .machine
            .call_with(is_failure, call)
            .await
            .map_err(|error| match error {
                failsafe::Error::Inner(error) => CallError::Failed(error),
                failsafe::Error::Rejected => CallError::Open(dependency),
            })
    }

    /// A readiness check that fails while the breaker is open, for a dependency the service
    /// cannot work without. Half-open passes: calls must reach the service to probe.
    pub fn check(&self) -> Check {
        let breaker = self.clone();
        Arc::new(move || {
            let open = breaker.state() == State::Open;
            let dependency = breaker.dependency();
            Box::pin(async move {
                if open {
                    Err(format!("circuit breaker open for {dependency}"))
                } else {
                    Ok(())
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A breaker of its own per test: the metrics are process-wide.
    fn breaker(dependency: &'static str, failures: u32, open_for: Duration) -> Breaker {
        Breaker::new(
            "breaker-test",
            dependency,
            BreakerSettings {
                failures,
                open_for,
                open_max: open_for * 4,
            },
        )
    }

    fn gauge(dependency: &str) -> i64 {
        metrics()
            .state
            .with_label_values(&["breaker-test", dependency])
            .get()
    }

    fn rejected(dependency: &str) -> u64 {
        metrics()
            .rejected
            .with_label_values(&["breaker-test", dependency])
            .get()
    }

    async fn fail(breaker: &Breaker) -> Result<(), CallError<&'static str>> {
        breaker.call(async { Err("down") }, |_| true).await
    }

    async fn succeed(breaker: &Breaker) -> Result<(), CallError<&'static str>> {
        breaker.call(async { Ok(()) }, |_| true).await
    }

    #[tokio::test]
    async fn it_opens_after_the_set_number_of_failures_in_a_row() {
        let breaker = breaker("opens", 3, Duration::from_secs(60));
        for _ in 0..2 {
            assert_eq!(fail(&breaker).await, Err(CallError::Failed("down")));
        }
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(gauge("opens"), 0);
        assert_eq!(fail(&breaker).await, Err(CallError::Failed("down")));
        assert_eq!(breaker.state(), State::Open);
        assert_eq!(gauge("opens"), 1);
    }

    #[tokio::test]
    async fn a_success_in_between_starts_the_count_again() {
        let breaker = breaker("count", 3, Duration::from_secs(60));
        for _ in 0..5 {
            let _ = fail(&breaker).await;
            let _ = fail(&breaker).await;
            assert_eq!(succeed(&breaker).await, Ok(()));
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test]
    async fn errors_that_are_answers_do_not_open_it() {
        let breaker = breaker("answers", 2, Duration::from_secs(60));
        for _ in 0..5 {
            let declined = breaker
                .call(async { Err::<(), _>("card_declined") }, |e| {
                    *e != "card_declined"
                })
                .await;
            assert_eq!(declined, Err(CallError::Failed("card_declined")));
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test]
    async fn an_open_breaker_refuses_at_once_without_calling_the_dependency() {
        let breaker = breaker("refuses", 1, Duration::from_secs(60));
        let _ = fail(&breaker).await;
        let called = AtomicU32::new(0);
        let before = rejected("refuses");
        let started = Instant::now();
        for _ in 0..10 {
            let outcome: Result<(), CallError<&str>> = breaker
                .call(
                    async {
                        called.fetch_add(1, Ordering::SeqCst);
                        std::future::pending().await
                    },
                    |_| true,
                )
                .await;
            assert_eq!(outcome, Err(CallError::Open("refuses")));
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            called.load(Ordering::SeqCst),
            0,
            "the dependency was never called"
        );
        assert_eq!(rejected("refuses") - before, 10);
    }

    #[tokio::test]
    async fn after_the_open_period_one_probe_goes_through_and_its_success_closes_it() {
        let breaker = breaker("probe", 1, 50 * MS);
        let _ = fail(&breaker).await;
        assert_eq!(breaker.state(), State::Open);
        tokio::time::sleep(80 * MS).await;
        assert_eq!(
            breaker.state(),
            State::HalfOpen,
            "the timer ended the open period"
        );
        assert_eq!(gauge("probe"), 2);

        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let probing = breaker.clone();
        let probe = tokio::spawn(async move {
            probing
                .call(async { answered.await.map_err(|_| "dropped") }, |_| true)
                .await
        });
        tokio::time::sleep(10 * MS).await;
        assert_eq!(
            succeed(&breaker).await,
            Err(CallError::Open("probe")),
            "a second call while the probe is out is refused"
        );
        let _ = answer.send(());
        assert_eq!(probe.await.ok(), Some(Ok(())));
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(gauge("probe"), 0);
        assert_eq!(succeed(&breaker).await, Ok(()));
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_for_twice_as_long() {
        let breaker = breaker("reopens", 1, 100 * MS);
        let _ = fail(&breaker).await;
        tokio::time::sleep(150 * MS).await;
        assert_eq!(
            fail(&breaker).await,
            Err(CallError::Failed("down")),
            "the probe ran"
        );
        assert_eq!(breaker.state(), State::Open);
        tokio::time::sleep(150 * MS).await;
        assert_eq!(breaker.state(), State::Open, "the second period is 200 ms");
        tokio::time::sleep(100 * MS).await;
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[tokio::test]
    async fn a_cancelled_probe_frees_its_slot() {
        let breaker = breaker("cancelled", 1, 20 * MS);
        let _ = fail(&breaker).await;
        tokio::time::sleep(40 * MS).await;
        let hung = breaker.call(std::future::pending::<Result<(), &str>>(), |_| true);
        assert!(tokio::time::timeout(10 * MS, hung).await.is_err());
        assert_eq!(succeed(&breaker).await, Ok(()), "the next call probes");
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test]
    async fn its_readiness_check_fails_only_while_it_is_open() {
        let breaker = breaker("ready", 1, 50 * MS);
        let check = breaker.check();
        assert_eq!(check().await, Ok(()));
        let _ = fail(&breaker).await;
        assert_eq!(
            check().await,
            Err("circuit breaker open for ready".to_owned())
        );
        tokio::time::sleep(80 * MS).await;
        assert_eq!(check().await, Ok(()), "half-open lets calls in to probe");
        let _ = succeed(&breaker).await;
        assert_eq!(check().await, Ok(()));
    }

    #[test]
    fn an_open_breaker_answers_unavailable_naming_the_dependency() {
        let status = tonic::Status::from(CallError::<tonic::Status>::Open("jwks"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "circuit breaker open for jwks");
        assert!(is_outage(&tonic::Status::unavailable("connection refused")));
        assert!(!is_outage(&tonic::Status::unauthenticated(
            "bad client secret"
        )));
    }
}
