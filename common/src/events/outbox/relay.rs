//! Publishes what the outbox holds, oldest first. A failed publish stops the pass there (later
//! events of the same aggregate must not overtake it) and is retried after a growing delay.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};
use tokio_util::sync::CancellationToken;

use super::{Outbox, OutboxError};
use crate::events::{BusError, Envelope, EventPublisher, InOrder};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub batch_size: usize,
    /// The longest the relay sleeps without a wake-up before looking again.
    pub poll_interval: Duration,
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

struct RelayMetrics {
    pending: IntGaugeVec,
    oldest_seconds: GaugeVec,
    published: IntCounterVec,
    failures: IntCounterVec,
}

fn metrics() -> &'static RelayMetrics {
    static METRICS: LazyLock<RelayMetrics> = LazyLock::new(|| {
        let labels = ["relay"];
        let pending = IntGaugeVec::new(
            Opts::new("outbox_pending", "Events appended but not yet published"),
            &labels,
        )
        .expect("valid metric definition");
        let oldest_seconds = GaugeVec::new(
            Opts::new(
                "outbox_oldest_pending_seconds",
                "Age of the oldest unpublished event (outbox lag)",
            ),
            &labels,
        )
        .expect("valid metric definition");
        let published = IntCounterVec::new(
            Opts::new(
                "outbox_published_total",
                "Outbox events confirmed by the bus",
            ),
            &labels,
        )
        .expect("valid metric definition");
        let failures = IntCounterVec::new(
            Opts::new(
                "outbox_publish_failures_total",
                "Outbox publishes that failed",
            ),
            &labels,
        )
        .expect("valid metric definition");
        crate::metrics::register(pending.clone());
        crate::metrics::register(oldest_seconds.clone());
        crate::metrics::register(published.clone());
        crate::metrics::register(failures.clone());
        RelayMetrics {
            pending,
            oldest_seconds,
            published,
            failures,
        }
    });
    &METRICS
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Publish(#[from] BusError),
}

enum Pass {
    /// Nothing more waits.
    Drained,
    /// A full batch went out; more may wait.
    Full,
}

pub struct OutboxRelay {
    name: String,
    outbox: Outbox,
    config: RelayConfig,
    /// When the backlog gauges were last read from the table.
    backlog_read: Mutex<Option<Instant>>,
}

/// How often the backlog gauges are read while the relay keeps passing. Read on every pass, the
/// count was one more query per published event under load; a gauge scraped every 15 s needs
/// no more than this.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

impl OutboxRelay {
    /// `name` labels the relay's metrics and logs (the service's name).
    pub fn new(name: impl Into<String>, outbox: Outbox, config: RelayConfig) -> Self {
        Self {
            name: name.into(),
            outbox,
            config,
            backlog_read: Mutex::new(None),
        }
    }

    /// Whether the backlog gauges are to be read again now (and notes that they are).
    fn backlog_due(&self) -> bool {
        let mut read = self
            .backlog_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if read.is_some_and(|at| now.duration_since(at) < BACKLOG_EVERY) {
            return false;
        }
        *read = Some(now);
        true
    }

    /// Runs until `shutdown`, then makes one last pass so committed events are not left behind.
    pub async fn run(self, publisher: Arc<dyn EventPublisher>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while !shutdown.is_cancelled() {
            match self.pass(publisher.as_ref()).await {
                Ok(Pass::Full) => continue,
                Ok(Pass::Drained) => {
                    backoff = Duration::from_millis(50);
                    tokio::select! {
                        () = self.outbox.wait_for_new(self.config.poll_interval) => {}
                        () = shutdown.cancelled() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(relay = %self.name, %error, ?backoff, "outbox relay pass failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        if let Err(error) = self.pass(publisher.as_ref()).await {
            tracing::warn!(relay = %self.name, %error, "final outbox flush failed; events stay for the next start");
        }
    }

    async fn pass(&self, publisher: &dyn EventPublisher) -> Result<Pass, PassError> {
        let batch = self.outbox.pending(self.config.batch_size).await?;
        let envelopes: Vec<&Envelope> = batch.iter().map(|event| &event.envelope).collect();
        let InOrder {
            confirmed,
            error: failure,
        } = publisher.publish_in_order(&envelopes).await;
        if failure.is_some() {
            metrics().failures.with_label_values(&[&self.name]).inc();
        }
        let published: Vec<i64> = batch
            .iter()
            .take(confirmed)
            .map(|event| event.seq)
            .collect();
        if !published.is_empty() {
            self.outbox.mark_published(&published).await?;
            metrics()
                .published
                .with_label_values(&[&self.name])
                .inc_by(u64::try_from(published.len()).unwrap_or(u64::MAX));
        }
        if failure.is_some() || self.backlog_due() {
            let backlog = self.outbox.backlog().await?;
            metrics()
                .pending
                .with_label_values(&[&self.name])
                .set(backlog.pending);
            metrics()
                .oldest_seconds
                .with_label_values(&[&self.name])
                .set(backlog.oldest_age.as_secs_f64());
        }
        match failure {
            Some(error) => Err(error.into()),
            None if batch.len() == self.config.batch_size => Ok(Pass::Full),
            None => Ok(Pass::Drained),
        }
    }
}
