//! `shop load` against the real shop: the shopper journey over gRPC and checkouts through the
//! gateway, briefly and with few users, must confirm their orders with no errors; and the `shop`
//! binary's `load` command prints its table and exits 0.

use std::time::Duration;

use anyhow::Context as _;
use shop::load::{self, LoadCommand, Summary};

use shop_proto::product::v1::{ListProductsRequest, product_service_client::ProductServiceClient};

use crate::helpers::{channel, spawn_system};

async fn load(args: &[&str]) -> anyhow::Result<Summary> {
    let command = LoadCommand::try_parse_from(args)?;
    let summary = tokio::time::timeout(Duration::from_secs(120), load::execute(&command))
        .await
        .context("shop load did not stop by itself")??;
    Ok(summary)
}

fn step<'a>(summary: &'a Summary, name: &str) -> Option<&'a load::StepSummary> {
    summary.steps.iter().find(|s| s.step == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shopper_journey_over_grpc_confirms_its_orders_without_errors() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let e = system.endpoints;
    let (user, product, order) = (
        e.user.to_string(),
        e.product.to_string(),
        e.order.to_string(),
    );
    let summary = load(&[
        "--target",
        "grpc",
        "--user-addr",
        &user,
        "--product-addr",
        &product,
        "--order-addr",
        &order,
        "--scenario",
        "journey",
        "--users",
        "20",
        "--think",
        "50ms..150ms",
        "--duration",
        "4s",
        "--accounts",
        "4",
        "--restock",
        "1000",
        "--seed",
        "7",
        "--quiet",
    ])
    .await?;
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.passed(), "{summary}");
    for name in ["browse", "view", "search", "place-order"] {
        let seen = step(&summary, name).map_or(0, |s| s.latency.count);
        assert!(seen > 0, "no {name} requests:\n{summary}");
    }
    let orders = summary.orders;
    assert!(orders.confirmed > 0, "{summary}");
    assert_eq!(
        orders.confirmed + orders.unsettled,
        orders.placed,
        "{summary}"
    );
    assert!(summary.confirmation.p50_ms > 0.0, "{summary}");
    // --restock set every product's stock to 1000 before the run; only its orders took any.
    let listed = ProductServiceClient::new(channel(e.product).await?)
        .list_products(ListProductsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await?
        .into_inner();
    let taken: i64 = listed
        .products
        .iter()
        .map(|p| 1000 - i64::from(p.stock))
        .sum();
    assert!(!listed.products.is_empty());
    assert!(
        listed.products.iter().all(|p| p.stock <= 1000),
        "{listed:?}"
    );
    assert_eq!(taken, i64::try_from(orders.placed)?, "{summary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_through_the_gateway_are_confirmed_without_errors() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let url = format!("http://{}", system.endpoints.gateway);
    // Few enough requests to stay within the gateway's shipped limits (50/s per client, and
    // 5/s for signing in): what is measured is the shop, not its rate limiter.
    let summary = load(&[
        "--url",
        &url,
        "--scenario",
        "place-order",
        "--users",
        "2",
        "--think",
        "200ms..400ms",
        "--duration",
        "3s",
        "--accounts",
        "2",
        "--quiet",
    ])
    .await?;
    assert_eq!(summary.errors, 0, "{summary}");
    let orders = summary.orders;
    assert!(orders.confirmed > 0, "{summary}");
    assert_eq!(
        orders.confirmed + orders.unsettled,
        orders.placed,
        "{summary}"
    );
    assert!(
        step(&summary, "get-order").is_some_and(|s| s.errors == 0),
        "{summary}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shop_binary_loads_prints_its_table_and_writes_the_json() -> anyhow::Result<()> {
    let system = spawn_system().await?;
    let url = format!("http://{}", system.endpoints.gateway);
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("load.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "load",
            "--url",
            &url,
            "--scenario",
            "get-product",
            "--users",
            "3",
        ])
        .args(["--think", "100ms", "--duration", "2s", "--json"])
        .arg(&json)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("p99.9"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("view ")), "{stdout}");
    // The progress line went to stderr, once a second.
    assert!(stderr.contains("req/s"), "{stderr}");
    let summary: Summary = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert!(summary.requests > 10, "{stdout}");
    assert_eq!(summary.errors, 0, "{stdout}");

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["load", "--url", "http://192.0.2.1:8080", "--duration", "1s"])
        .output();
    let refused = tokio::time::timeout(Duration::from_secs(30), refused).await??;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    Ok(())
}
