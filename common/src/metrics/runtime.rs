//! Gauges of the runtime: the tokio scheduler (tasks, workers), sampled when Prometheus scrapes,
//! and each service's database pool, sampled by a task of the service (holding a pool for the
//! registry's sake would keep its connections open after the service is gone). The process
//! collector (RSS, CPU, open files) comes with the default registry.

use std::{sync::LazyLock, time::Duration};

use prometheus::{IntGauge, IntGaugeVec};
use sqlx::AnyPool;

struct Runtime {
    tasks: IntGauge,
    workers: IntGauge,
    pool_connections: IntGaugeVec,
    pool_max: IntGaugeVec,
}

fn runtime() -> &'static Runtime {
    static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime {
        tasks: super::gauge("tokio_alive_tasks", "Tasks alive in the tokio runtime"),
        workers: super::gauge("tokio_workers", "Worker threads of the tokio runtime"),
        pool_connections: super::gauge_vec(
            "db_pool_connections",
            "Database connections of a service, by state (in_use, idle)",
            &["service", "state"],
        ),
        pool_max: super::gauge_vec(
            "db_pool_max_connections",
            "The most connections a service's database pool opens",
            &["service"],
        ),
    });
    &RUNTIME
}

/// Reports `service`'s pool in `db_pool_connections` and `db_pool_max_connections` every
/// `every`, until `stop`.
pub async fn report_pool(
    service: &'static str,
    pool: AnyPool,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let runtime = runtime();
    runtime
        .pool_max
        .with_label_values(&[service])
        .set(i64::from(pool.options().get_max_connections()));
    let in_use = runtime
        .pool_connections
        .with_label_values(&[service, "in_use"]);
    let idle = runtime
        .pool_connections
        .with_label_values(&[service, "idle"]);
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                let size = i64::from(pool.size());
                let idle_now = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
                in_use.set(size - idle_now);
                idle.set(idle_now);
            }
        }
    }
}

pub(super) fn sample() {
    let runtime = runtime();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let metrics = handle.metrics();
        runtime
            .tasks
            .set(i64::try_from(metrics.num_alive_tasks()).unwrap_or(i64::MAX));
        runtime
            .workers
            .set(i64::try_from(metrics.num_workers()).unwrap_or(i64::MAX));
    }
}
