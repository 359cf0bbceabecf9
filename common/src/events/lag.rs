//! Consumer lag: how many events wait in a consumer's queue, sampled for `events_queue_depth`.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::EventBus;

/// Reports `consumer`'s queue depth in `events_queue_depth` every `every`, until `stop`.
pub async fn report_lag(
    bus: Arc<dyn EventBus>,
    consumer: &'static str,
    every: Duration,
    stop: CancellationToken,
) {
    let gauge = super::metrics::events()
        .queue_depth
        .with_label_values(&[consumer]);
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => match bus.queue_depth(consumer).await {
                Ok(depth) => gauge.set(i64::try_from(depth).unwrap_or(i64::MAX)),
                Err(error) => tracing::debug!(%error, consumer, "queue depth unknown"),
            },
        }
    }
}
