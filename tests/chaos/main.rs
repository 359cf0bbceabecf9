//! The chaos suite: the four service binaries as the Helm chart runs them (separate processes,
//! the chart's environment and secret files), on this machine's PostgreSQL and RabbitMQ, each
//! reaching its database and the broker through a fault proxy. Shoppers place orders while
//! faults come every few seconds; then the faults stop, everything settles, and the saga's
//! guarantees are checked against the databases, the payment simulator's ledger and the
//! dead-letter queues. It is a test binary of its own so that stopping the broker disturbs no
//! other test. `scripts/chaos.sh` runs a longer version.
//!
//! Settings (environment): `CHAOS_ORDERS` (orders to get accepted, default 1000),
//! `CHAOS_SHOPPERS` (concurrent customers, 16), `CHAOS_FAULT_EVERY` (3s), `CHAOS_FAULTS`
//! (comma-separated kinds, default all), `CHAOS_LIMIT` (the whole run, 15m), `CHAOS_REPORT`
//! (a JSON report file).

#[path = "../support/chart.rs"]
mod chart;
mod faults;
mod invariants;
mod proxy;
mod report;
mod shoppers;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, ensure};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    chart::{LocalDeployment, Routes, SERVICES, via_port},
    faults::{Kind, Targets},
    invariants::Stores,
    proxy::FaultProxy,
    report::Report,
    shoppers::Tally,
};

struct Settings {
    orders: u64,
    shoppers: usize,
    every: Duration,
    kinds: Vec<Kind>,
    limit: Duration,
    report: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok();
        let duration = |name: &str, default: &str| -> anyhow::Result<Duration> {
            let text = var(name).unwrap_or_else(|| default.to_owned());
            humantime::parse_duration(&text).with_context(|| format!("{name}: not a duration"))
        };
        Ok(Self {
            orders: var("CHAOS_ORDERS")
                .map_or(Ok(1000), |v| v.parse())
                .context("CHAOS_ORDERS: not a count")?,
            shoppers: var("CHAOS_SHOPPERS")
                .map_or(Ok(16), |v| v.parse())
                .context("CHAOS_SHOPPERS: not a count")?,
            every: duration("CHAOS_FAULT_EVERY", "3s")?,
            kinds: Kind::chosen(var("CHAOS_FAULTS").as_deref())?,
            limit: duration("CHAOS_LIMIT", "15m")?,
            report: var("CHAOS_REPORT").map(PathBuf::from),
        })
    }
}

async fn address_of(url: &str) -> anyhow::Result<SocketAddr> {
    let url = url::Url::parse(url)?;
    let host = url.host_str().context("a host")?;
    let port = url.port_or_known_default().unwrap_or(5432);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_saga_keeps_its_guarantees_while_processes_die_and_links_fail() -> anyhow::Result<()> {
    let (Ok(server), Ok(amqp)) = (std::env::var("DATABASE_URL"), std::env::var("AMQP_URL")) else {
        eprintln!(
            "skipped: DATABASE_URL and AMQP_URL are not both set, so the chaos suite cannot run"
        );
        return Ok(());
    };
    if tokio::process::Command::new("helm")
        .arg("version")
        .output()
        .await
        .is_err()
    {
        eprintln!("skipped: helm is not on PATH (scripts/install-tools.sh installs it)");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let limit = settings.limit;
    let outcome = tokio::time::timeout(limit, run(&server, &amqp, settings)).await;
    // Whatever happened, the machine's broker is left running for whoever comes next.
    let _ = faults::rabbitmqctl(&["start_app"]).await;
    let report = outcome.with_context(|| format!("the chaos run took longer than {limit:?}"))??;
    println!("{report}");
    ensure!(report.all_hold(), "an invariant does not hold:\n{report}");
    Ok(())
}

async fn run(server: &str, amqp: &str, settings: Settings) -> anyhow::Result<Report> {
    let mut databases = BTreeMap::new();
    let database_server = address_of(server).await?;
    for service in SERVICES {
        databases.insert(service, FaultProxy::start(database_server).await?);
    }
    let broker = FaultProxy::start(address_of(amqp).await?).await?;
    let database_ports: BTreeMap<&str, u16> = databases
        .iter()
        .map(|(service, proxy)| (*service, proxy.addr.port()))
        .collect();
    let broker_port = broker.addr.port();
    let routes = Routes {
        database: Box::new(move |service, url| {
            via_port(url, database_ports.get(service).copied().unwrap_or(0))
        }),
        broker: Box::new(move |url| via_port(url, broker_port)),
    };
    let values = serde_json::json!({"services": {
        // A provider that does not answer fails a charge attempt after a second, not ten.
        "payment": {"extraEnv": {"PAYMENT_PROVIDER_TIMEOUT": "1s"}},
        // Checkouts cut by a kill give their stock back within seconds.
        "order": {"extraEnv": {"ORDER_ABANDONED_CHECKOUT_AFTER": "5s"}},
    }});
    let mut deployment = LocalDeployment::install("chaos", server, amqp, &routes, values).await?;
    let ledger = deployment.scratch.path().join("simulator-ledger");
    deployment
        .env_mut("payment-service")
        .context("a payment pod")?
        .insert(
            "PAYMENT_SIMULATOR_LEDGER".to_owned(),
            ledger.display().to_string(),
        );
    for service in SERVICES {
        deployment.start(service)?;
    }
    for service in SERVICES {
        deployment
            .await_serving(service, Duration::from_secs(60))
            .await?;
    }

    let users = shoppers::lazy(deployment.grpc_addr("user-service"))?;
    let admin = shoppers::login(users.clone(), &deployment.admin.0, &deployment.admin.1).await?;
    // Shoppers go on until `orders` are accepted, and an order takes at most 2 of a product:
    // with less stock than that, a long run ends in refusals until its time limit (the 5,000
    // orders of scripts/chaos.sh never finished on 400 each).
    let stock_each = i32::try_from(settings.orders.saturating_mul(2))
        .unwrap_or(i32::MAX)
        .max(400);
    let products = shoppers::products(
        shoppers::lazy(deployment.grpc_addr("product-service"))?,
        &admin,
        8,
        stock_each,
    )
    .await?;
    let initial_stock: BTreeMap<String, i64> = products
        .iter()
        .map(|id| (id.clone(), i64::from(stock_each)))
        .collect();
    let tokens = shoppers::customers(users, settings.shoppers).await?;
    let orders = shoppers::lazy(deployment.grpc_addr("order-service"))?;
    let stores = Stores::open(&deployment.databases).await?;
    let vhost = url::Url::parse(&deployment.broker)?
        .path()
        .trim_start_matches('/')
        .to_owned();
    let broker_url = deployment.broker.clone();

    let targets = Targets {
        deployment: Arc::new(Mutex::new(deployment)),
        databases,
        broker,
        vhost,
        server: sqlx::PgPool::connect(server).await?,
    };
    let tally = Arc::new(Tally::default());
    let products = Arc::new(products);
    let target = settings.orders;
    let stop = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let shopping = {
        let stop = stop.clone();
        let tally = tally.clone();
        async move {
            let mut shoppers = tokio::task::JoinSet::new();
            for token in tokens {
                shoppers.spawn(shoppers::shop(
                    orders.clone(),
                    token,
                    products.clone(),
                    target,
                    tally.clone(),
                ));
            }
            while shoppers.join_next().await.is_some() {}
            stop.cancel();
        }
    };
    let (injected, ()) = tokio::join!(
        faults::inject(&targets, &settings.kinds, settings.every, stop),
        shopping
    );
    let injected = injected?;
    let shopping_took = started.elapsed();

    // Recovery: every process up and ready, then the saga given time to finish.
    {
        let mut deployment = targets.deployment.lock().await;
        for service in SERVICES {
            deployment
                .await_serving(service, Duration::from_secs(60))
                .await?;
        }
    }
    let unsettled =
        invariants::settle(&stores, Duration::from_secs(60), Duration::from_secs(360)).await?;
    // The sweeper takes a checkout's row before it calls product-service to release its stock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let checks = invariants::check(&stores, &initial_stock, &ledger, &broker_url).await?;
    let report = Report::new(
        &settings.kinds,
        injected,
        &tally,
        shopping_took,
        unsettled,
        checks,
    );
    if let Some(path) = &settings.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    let mut deployment = targets.deployment.lock().await;
    deployment.stop().await;
    if !report.all_hold() {
        // The services' logs outlive the run's scratch folder, for the post-mortem.
        let kept = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("chaos-logs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&kept)?;
        for entry in std::fs::read_dir(&deployment.logs)? {
            let entry = entry?;
            std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
        }
        println!("the services' logs: {}", kept.display());
    }
    Ok(report)
}
