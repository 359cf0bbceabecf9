//! Gauges of the runtime, sampled when Prometheus scrapes rather than by a task of their own:
//! the tokio scheduler (tasks, workers) and each service's database pool. The process collector
//! (RSS, CPU, open files) comes with the default registry.

use std::sync::{LazyLock, Mutex};

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

/// The pools being watched, by service.
fn pools() -> &'static Mutex<Vec<(String, AnyPool)>> {
    static POOLS: LazyLock<Mutex<Vec<(String, AnyPool)>>> = LazyLock::new(Mutex::default);
    &POOLS
}

/// Reports `service`'s pool in `db_pool_connections` and `db_pool_max_connections`.
pub fn watch_pool(service: &str, pool: AnyPool) {
    runtime()
        .pool_max
        .with_label_values(&[service])
        .set(i64::from(pool.options().get_max_connections()));
    pools()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((service.to_owned(), pool));
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
    let mut pools = pools()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    pools.retain(|(_, pool)| !pool.is_closed());
    for (service, pool) in pools.iter() {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        let gauge = |state: &str| {
            runtime
                .pool_connections
                .with_label_values(&[service.as_str(), state])
        };
        gauge("in_use").set(size - idle);
        gauge("idle").set(idle);
    }
}
