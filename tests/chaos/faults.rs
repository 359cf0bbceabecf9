//! The faults, injected one after another every few seconds while shoppers place orders: a
//! service killed with SIGKILL and restarted, database connections terminated, a database or
//! the broker cut off or slowed down at the network, broker connections closed, and the broker
//! application stopped and started.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context as _, ensure};
use tokio::{process::Command, sync::Mutex};
use tokio_util::sync::CancellationToken;

use crate::{
    chart::{LocalDeployment, SERVICES},
    proxy::{FaultProxy, Line},
};

/// The kinds of fault, as `CHAOS_FAULTS` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Kill,
    TerminateConnections,
    DatabaseCut,
    DatabaseSlow,
    BrokerConnectionsClosed,
    BrokerCut,
    BrokerSlow,
    BrokerRestart,
}

impl Kind {
    pub(crate) const ALL: [Self; 8] = [
        Self::Kill,
        Self::TerminateConnections,
        Self::DatabaseCut,
        Self::DatabaseSlow,
        Self::BrokerConnectionsClosed,
        Self::BrokerCut,
        Self::BrokerSlow,
        Self::BrokerRestart,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill-9",
            Self::TerminateConnections => "pg-terminate-backend",
            Self::DatabaseCut => "database-cut",
            Self::DatabaseSlow => "database-slow",
            Self::BrokerConnectionsClosed => "broker-connections-closed",
            Self::BrokerCut => "broker-cut",
            Self::BrokerSlow => "broker-slow",
            Self::BrokerRestart => "broker-restart",
        }
    }

    /// `CHAOS_FAULTS` (comma-separated names), or every kind.
    pub(crate) fn chosen(setting: Option<&str>) -> anyhow::Result<Vec<Self>> {
        let Some(setting) = setting.filter(|s| !s.trim().is_empty()) else {
            return Ok(Self::ALL.to_vec());
        };
        setting
            .split(',')
            .map(|name| {
                Self::ALL
                    .into_iter()
                    .find(|kind| kind.name() == name.trim())
                    .with_context(|| {
                        format!(
                            "CHAOS_FAULTS: unknown fault {name:?}; known: {}",
                            Self::ALL.map(Self::name).join(", ")
                        )
                    })
            })
            .collect()
    }
}

/// Everything the injector acts on.
pub(crate) struct Targets {
    pub(crate) deployment: Arc<Mutex<LocalDeployment>>,
    pub(crate) databases: BTreeMap<&'static str, FaultProxy>,
    pub(crate) broker: FaultProxy,
    pub(crate) vhost: String,
    /// The PostgreSQL server, to terminate a database's connections from outside.
    pub(crate) server: sqlx::PgPool,
}

/// How long a cut or a slow line lasts, and how much a slow line adds per chunk.
const HOLD: Duration = Duration::from_secs(3);
const LATENCY: Duration = Duration::from_millis(150);

/// Injects the chosen kinds in turn, each on another service, every `every`, until `stop`;
/// returns how many of each it injected. Every fault is healed before the next one starts.
pub(crate) async fn inject(
    targets: &Targets,
    kinds: &[Kind],
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut injected = BTreeMap::new();
    let mut round = 0usize;
    while !stop.is_cancelled() {
        let kind = kinds[round % kinds.len()];
        // Shifted by one service each round, so every kind meets every service.
        let service = SERVICES[(round + round / kinds.len()) % SERVICES.len()];
        round += 1;
        let started = tokio::time::Instant::now();
        let label = one(targets, kind, service)
            .await
            .with_context(|| format!("injecting {} on {service}", kind.name()))?;
        *injected.entry(label).or_insert(0) += 1;
        let rest = every.saturating_sub(started.elapsed());
        tokio::select! {
            () = tokio::time::sleep(rest) => {}
            () = stop.cancelled() => {}
        }
    }
    Ok(injected)
}

/// One fault, held and healed; its label for the report.
async fn one(targets: &Targets, kind: Kind, service: &'static str) -> anyhow::Result<String> {
    match kind {
        Kind::Kill => {
            let mut deployment = targets.deployment.lock().await;
            deployment.kill(service).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            deployment.start(service)?;
        }
        Kind::TerminateConnections => {
            let database = targets
                .deployment
                .lock()
                .await
                .databases
                .get(service)
                .and_then(|url| url.rsplit('/').next().map(str::to_owned))
                .context("the service's database")?;
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
            )
            .bind(database)
            .execute(&targets.server)
            .await?;
        }
        Kind::DatabaseCut | Kind::DatabaseSlow => {
            let proxy = targets.databases.get(service).context("a database proxy")?;
            hold(proxy, kind == Kind::DatabaseCut).await;
        }
        Kind::BrokerConnectionsClosed => {
            rabbitmqctl(&[
                "close_all_connections",
                "--vhost",
                &targets.vhost,
                "chaos: broker connections closed",
            ])
            .await?;
            return Ok(kind.name().to_owned());
        }
        Kind::BrokerCut | Kind::BrokerSlow => {
            hold(&targets.broker, kind == Kind::BrokerCut).await;
            return Ok(kind.name().to_owned());
        }
        Kind::BrokerRestart => {
            rabbitmqctl(&["stop_app"]).await?;
            tokio::time::sleep(HOLD).await;
            rabbitmqctl(&["start_app"]).await?;
            rabbitmqctl(&["await_startup"]).await?;
            return Ok(kind.name().to_owned());
        }
    }
    Ok(format!("{} {service}", kind.name()))
}

async fn hold(proxy: &FaultProxy, cut: bool) {
    proxy.set(if cut { Line::Cut } else { Line::Slow(LATENCY) });
    tokio::time::sleep(HOLD).await;
    proxy.set(Line::Up);
}

pub(crate) async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("rabbitmqctl must be installed to run the chaos suite")?;
    ensure!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
