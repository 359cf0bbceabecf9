//! What must hold after the faults, read from where the truth is: each service's own database,
//! the payment simulator's ledger file, and the dead-letter queues.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use shop_common::events::{EventBus as _, RabbitBus};
use sqlx::{PgPool, Row as _};

/// Each service's database, opened for reading.
pub(crate) struct Stores {
    pub(crate) user: PgPool,
    pub(crate) product: PgPool,
    pub(crate) order: PgPool,
    pub(crate) payment: PgPool,
}

impl Stores {
    pub(crate) async fn open(urls: &BTreeMap<&'static str, String>) -> anyhow::Result<Self> {
        Ok(Self {
            user: reader(urls, "user-service").await?,
            product: reader(urls, "product-service").await?,
            order: reader(urls, "order-service").await?,
            payment: reader(urls, "payment-service").await?,
        })
    }

    /// Orders not final yet, plus events not yet published by any outbox.
    pub(crate) async fn unsettled(&self) -> anyhow::Result<(i64, i64)> {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE status NOT IN ('confirmed', 'cancelled', 'shipped')",
        )
        .fetch_one(&self.order)
        .await?;
        let unpublished = self.unpublished().await?.values().sum();
        Ok((open, unpublished))
    }

    /// Events not yet published, by the service whose outbox holds them.
    async fn unpublished(&self) -> anyhow::Result<BTreeMap<&'static str, i64>> {
        let mut by_service = BTreeMap::new();
        for (service, pool) in [
            ("user-service", &self.user),
            ("product-service", &self.product),
            ("order-service", &self.order),
            ("payment-service", &self.payment),
        ] {
            let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('outbox')::text")
                .fetch_one(pool)
                .await?;
            if exists.is_some() {
                let count: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at_ms IS NULL")
                        .fetch_one(pool)
                        .await?;
                if count > 0 {
                    by_service.insert(service, count);
                }
            }
        }
        Ok(by_service)
    }
}

async fn reader(urls: &BTreeMap<&'static str, String>, service: &str) -> anyhow::Result<PgPool> {
    let url = urls
        .get(service)
        .with_context(|| format!("no database for {service}"))?;
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await?)
}

/// Orders and payments by status: while these move, the saga is still catching up.
async fn counts(stores: &Stores) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for (what, pool, query) in [
        (
            "order",
            &stores.order,
            "SELECT status, count(*) FROM orders GROUP BY status",
        ),
        (
            "payment",
            &stores.payment,
            "SELECT status, count(*) FROM payments GROUP BY status",
        ),
    ] {
        let rows: Vec<(String, i64)> = sqlx::query_as(query).fetch_all(pool).await?;
        for (status, n) in rows {
            counts.insert(format!("{what} {status}"), n);
        }
    }
    // Checkouts that made no order hold stock until the sweeper gives it back.
    let checkouts: i64 = sqlx::query_scalar("SELECT count(*) FROM checkouts")
        .fetch_one(&stores.order)
        .await?;
    counts.insert("checkouts open".to_owned(), checkouts);
    Ok(counts)
}

/// Waits until the saga is done with every order (all final, no payment pending, as many
/// standing payments as confirmed orders: refunds included, every outbox empty, no abandoned
/// checkout left for the sweeper). A backlog
/// may take a while to drain on a busy machine, so it waits as long as anything still moves,
/// and gives up when nothing has for `quiet_for`, or at `cap`. Returns what is still open.
pub(crate) async fn settle(
    stores: &Stores,
    quiet_for: Duration,
    cap: Duration,
) -> anyhow::Result<(i64, i64)> {
    let started = tokio::time::Instant::now();
    let mut last = (BTreeMap::new(), (-1, -1));
    let mut moved = started;
    loop {
        let unsettled = stores.unsettled().await?;
        let counts = counts(stores).await?;
        let get = |key: &str| counts.get(key).copied().unwrap_or(0);
        let done = unsettled == (0, 0)
            && get("payment pending") == 0
            && get("payment succeeded") == get("order confirmed")
            && get("checkouts open") == 0;
        let now = tokio::time::Instant::now();
        if done || now - moved > quiet_for || now - started > cap {
            return Ok(unsettled);
        }
        if (counts.clone(), unsettled) != last {
            last = (counts, unsettled);
            moved = now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One invariant: its name, the numbers it compares, and whether it holds.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) numbers: String,
    pub(crate) holds: bool,
}

/// What the simulator's ledger says: charges by payment id (key), and refunded references.
#[derive(Debug, Default)]
struct Ledger {
    charges: HashMap<String, Vec<String>>,
    refunded: BTreeSet<String>,
}

fn ledger(path: &Path) -> anyhow::Result<Ledger> {
    let mut ledger = Ledger::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["charge", key, reference, ..] => ledger
                .charges
                .entry(key.to_owned())
                .or_default()
                .push(reference.to_owned()),
            ["refund", reference] => {
                ledger.refunded.insert(reference.to_owned());
            }
            _ => {}
        }
    }
    Ok(ledger)
}

/// Every invariant, with its numbers.
pub(crate) async fn check(
    stores: &Stores,
    initial_stock: &BTreeMap<String, i64>,
    ledger_file: &Path,
    broker: &str,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();

    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
            .fetch_all(&stores.order)
            .await?;
    let count = |status: &str| {
        statuses
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n)
    };
    let total: i64 = statuses.iter().map(|(_, n)| n).sum();
    let confirmed = count("confirmed");
    let cancelled = count("cancelled");
    checks.push(Check {
        name: "every order reached a final state",
        numbers: format!(
            "{total} orders: {confirmed} confirmed, {cancelled} cancelled, {statuses:?}"
        ),
        holds: confirmed + cancelled == total,
    });

    let orders: HashMap<String, String> = sqlx::query("SELECT order_id, status FROM orders")
        .fetch_all(&stores.order)
        .await?
        .into_iter()
        .map(|row| (row.get("order_id"), row.get("status")))
        .collect();
    let payments: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT payment_id, order_id, status, provider_reference FROM payments")
            .fetch_all(&stores.payment)
            .await?;
    let ledger = ledger(ledger_file)?;

    let twice: Vec<&String> = ledger
        .charges
        .iter()
        .filter(|(_, refs)| refs.len() > 1)
        .map(|(key, _)| key)
        .collect();
    let mut per_order: HashMap<&str, usize> = HashMap::new();
    for (_, order_id, status, _) in &payments {
        if status == "succeeded" || status == "refunded" {
            *per_order.entry(order_id).or_default() += 1;
        }
    }
    let paid_twice = per_order.values().filter(|n| **n > 1).count();
    checks.push(Check {
        name: "no order is charged twice",
        numbers: format!(
            "{} simulator charges, {} keys charged more than once, {paid_twice} orders with two charged payments",
            ledger.charges.len(),
            twice.len()
        ),
        holds: twice.is_empty() && paid_twice == 0,
    });

    let succeeded: BTreeSet<&str> = payments
        .iter()
        .filter(|(_, _, status, _)| status == "succeeded")
        .map(|(_, order_id, _, _)| order_id.as_str())
        .collect();
    let confirmed_ids: BTreeSet<&str> = orders
        .iter()
        .filter(|(_, status)| *status == "confirmed")
        .map(|(id, _)| id.as_str())
        .collect();
    let standing_charges = ledger
        .charges
        .values()
        .filter(|refs| refs.iter().all(|r| !ledger.refunded.contains(r)))
        .count();
    checks.push(Check {
        name: "confirmed orders == succeeded payments == simulator charges (not refunded)",
        numbers: format!(
            "{} confirmed, {} succeeded payments, {standing_charges} standing charges",
            confirmed_ids.len(),
            succeeded.len()
        ),
        holds: confirmed_ids == succeeded && succeeded.len() == standing_charges,
    });

    let charged_cancelled = payments
        .iter()
        .filter(|(_, order_id, status, _)| {
            status == "succeeded" && orders.get(order_id).is_some_and(|s| s == "cancelled")
        })
        .count();
    let refunded = payments
        .iter()
        .filter(|(_, _, status, _)| status == "refunded")
        .count();
    checks.push(Check {
        name: "no cancelled order is left charged",
        numbers: format!(
            "{charged_cancelled} cancelled orders with a standing charge; {refunded} refunded payments, {} simulator refunds",
            ledger.refunded.len()
        ),
        holds: charged_cancelled == 0 && refunded == ledger.refunded.len(),
    });

    let sold: HashMap<String, i64> = sqlx::query(
        "SELECT i.product_id, SUM(i.quantity)::BIGINT AS units FROM order_items i \
         JOIN orders o ON o.order_id = i.order_id WHERE o.status = 'confirmed' GROUP BY i.product_id",
    )
    .fetch_all(&stores.order)
    .await?
    .into_iter()
    .map(|row| (row.get("product_id"), row.get("units")))
    .collect();
    let stock: HashMap<String, i64> =
        sqlx::query("SELECT product_id, stock::BIGINT AS stock FROM products")
            .fetch_all(&stores.product)
            .await?
            .into_iter()
            .map(|row| (row.get("product_id"), row.get("stock")))
            .collect();
    let mut off = Vec::new();
    let (mut initial_total, mut now_total, mut sold_total) = (0, 0, 0);
    for (product, initial) in initial_stock {
        let now = stock.get(product).copied().unwrap_or(-1);
        let units = sold.get(product).copied().unwrap_or(0);
        initial_total += initial;
        now_total += now;
        sold_total += units;
        if now + units != *initial {
            off.push(format!("{product}: {now} + {units} != {initial}"));
        }
    }
    checks.push(Check {
        name: "stock + units sold in confirmed orders == initial stock",
        numbers: format!(
            "{now_total} + {sold_total} vs {initial_total} over {} products{}",
            initial_stock.len(),
            if off.is_empty() {
                String::new()
            } else {
                format!("; off: {off:?}")
            }
        ),
        holds: off.is_empty(),
    });

    let bus = RabbitBus::connect(broker).await?;
    let mut letters = 0;
    let mut without_reason = 0;
    for consumer in [
        product_service::NAME,
        order_service::NAME,
        payment_service::NAME,
    ] {
        for letter in bus.dead_letters(consumer).await? {
            letters += 1;
            if letter.reason.trim().is_empty() {
                without_reason += 1;
            }
        }
    }
    checks.push(Check {
        name: "no event is dead-lettered without a reason",
        numbers: format!("{letters} dead letters, {without_reason} without a reason"),
        holds: without_reason == 0,
    });

    let unpublished = stores.unpublished().await?;
    checks.push(Check {
        name: "no outbox row is left unpublished after recovery",
        numbers: format!(
            "{} unpublished {unpublished:?}",
            unpublished.values().sum::<i64>()
        ),
        holds: unpublished.is_empty(),
    });
    Ok(checks)
}
