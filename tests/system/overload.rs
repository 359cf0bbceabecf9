//! Overload is graceful: the real `shop up`, driven far past the limits it is given, answers only
//! what a client can act on — 200, 429 or 503 with `Retry-After` over REST; OK,
//! RESOURCE_EXHAUSTED or UNAVAILABLE over gRPC — never a 500, and its memory comes back near
//! its idle size once the load stops. This checks codes, not speed: the limits are set small so
//! that a debug build on a busy machine is past them too.
//!
//! Memory is the process's anonymous memory (`RssAnon`): its file-backed pages are those of its
//! own executable, which grow as code paths first run (a debug build's are hundreds of MB) and
//! are not memory it allocated.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use shop_proto::product::v1::{GetProductRequest, product_service_client::ProductServiceClient};
use tokio::task::JoinSet;

use crate::{
    helpers::channel,
    process::{endpoints_and_output, shop},
};

const LOAD_FOR: Duration = Duration::from_secs(6);
const REST_CLIENTS: usize = 300;
const GRPC_CALLERS: usize = 200;

fn anonymous_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("RssAnon in /proc/<pid>/status")
}

/// kong.yaml without its rate limits, so the in-flight limits are what the load meets.
fn kong_without_rate_limits(folder: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kong/kong.yaml"))?;
    let mut kong: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)?;
    let plugins = kong
        .get_mut("plugins")
        .and_then(serde_yaml_ng::Value::as_sequence_mut)
        .context("kong.yaml has global plugins")?;
    plugins.retain(|plugin| plugin["name"].as_str() != Some("rate-limiting"));
    let path = folder.join("kong.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&kong)?)?;
    Ok(path)
}

/// What the clients got: REST statuses (with `Retry-After` or without), gRPC codes, and
/// requests that got no answer at all.
#[derive(Debug, Default)]
struct Answers {
    rest: BTreeMap<u16, u64>,
    refusals_without_retry_after: u64,
    grpc: BTreeMap<String, u64>,
    unanswered: BTreeMap<String, u64>,
}

async fn rest_client(url: String, until: tokio::time::Instant, answers: Arc<Mutex<Answers>>) {
    // A client of its own: its own connection, as separate users have.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    while tokio::time::Instant::now() < until {
        let Ok(request) = http::Request::get(&url).body(Full::default()) else {
            return;
        };
        let answer = tokio::time::timeout(Duration::from_secs(15), client.request(request)).await;
        let record = |what: &mut Answers| match &answer {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                *what.rest.entry(status).or_default() += 1;
                if matches!(status, 429 | 503) && !response.headers().contains_key("retry-after") {
                    what.refusals_without_retry_after += 1;
                }
            }
            Ok(Err(error)) => *what.unanswered.entry(format!("REST {error}")).or_default() += 1,
            Err(_) => {
                *what
                    .unanswered
                    .entry("REST timed out".to_owned())
                    .or_default() += 1
            }
        };
        record(
            &mut answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if let Ok(Ok(response)) = answer {
            let _ = response.into_body().collect().await;
        }
    }
}

async fn grpc_caller(
    channel: tonic::transport::Channel,
    product_id: String,
    until: tokio::time::Instant,
    answers: Arc<Mutex<Answers>>,
) {
    let mut products = ProductServiceClient::new(channel);
    while tokio::time::Instant::now() < until {
        let answer = products
            .get_product(GetProductRequest {
                product_id: product_id.clone(),
            })
            .await;
        let code = match answer {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let mut answers = answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *answers.grpc.entry(format!("{code:?}")).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_its_limits_the_shop_sheds_load_with_codes_to_retry_on_and_gives_memory_back()
-> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let mut child = shop()
        .env(
            "SHOP_KONG_CONFIG",
            kong_without_rate_limits(scratch.path())?,
        )
        .env("GRPC_MAX_IN_FLIGHT", "8")
        .env("SHOP_GATEWAY_MAX_IN_FLIGHT", "16")
        .env("RUST_LOG", "error")
        .spawn()?;
    let pid = child.id().context("the child's pid")?;
    let (endpoints, _logs) = endpoints_and_output(&mut child).await?;
    let gateway = endpoints.get("gateway").context("the gateway")?;
    let product_addr = endpoints
        .get("product-service")
        .context("product-service")?
        .parse()?;

    let (status, list) =
        crate::helpers::http_get(&format!("{gateway}/v1/products?pageSize=1")).await?;
    ensure!(status.is_success(), "listing products: {status} {list}");
    let list: serde_json::Value = serde_json::from_str(&list)?;
    let product_id = list["products"][0]["productId"]
        .as_str()
        .context("a demo product")?
        .to_owned();
    let url = format!("{gateway}/v1/products/{product_id}");

    // Warm up every path the load takes, within the limits, then let memory settle: that is idle.
    let warm = Arc::new(Mutex::new(Answers::default()));
    let soon = tokio::time::Instant::now() + Duration::from_secs(2);
    let channels: Vec<_> =
        futures::future::try_join_all((0..4).map(|_| channel(product_addr))).await?;
    let mut warming = JoinSet::new();
    for channel in &channels {
        warming.spawn(rest_client(url.clone(), soon, warm.clone()));
        warming.spawn(grpc_caller(
            channel.clone(),
            product_id.clone(),
            soon,
            warm.clone(),
        ));
    }
    while warming.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = anonymous_kb(pid)?;

    let answers = Arc::new(Mutex::new(Answers::default()));
    let until = tokio::time::Instant::now() + LOAD_FOR;
    let mut load = JoinSet::new();
    for _ in 0..REST_CLIENTS {
        load.spawn(rest_client(url.clone(), until, answers.clone()));
    }
    for n in 0..GRPC_CALLERS {
        load.spawn(grpc_caller(
            channels[n % channels.len()].clone(),
            product_id.clone(),
            until,
            answers.clone(),
        ));
    }
    let mut peak = idle;
    while !load.is_empty() {
        tokio::select! {
            _ = load.join_next() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                peak = peak.max(anonymous_kb(pid)?);
            }
        }
    }
    drop(channels);

    let mut after = anonymous_kb(pid)?;
    let settle_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while after > 2 * idle && tokio::time::Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = anonymous_kb(pid)?;
    }

    let answers = answers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let summary = format!(
        "REST {:?} ({} refusals without Retry-After), gRPC {:?}, unanswered {:?}; \
         anonymous memory idle {idle} kB, peak {peak} kB, after {after} kB",
        answers.rest, answers.refusals_without_retry_after, answers.grpc, answers.unanswered
    );
    println!("{summary}");
    let rest_ok = answers
        .rest
        .keys()
        .all(|status| matches!(status, 200 | 429 | 503));
    let grpc_ok = answers
        .grpc
        .keys()
        .all(|code| matches!(code.as_str(), "Ok" | "ResourceExhausted" | "Unavailable"));
    ensure!(
        rest_ok && grpc_ok,
        "an answer a client cannot retry on: {summary}"
    );
    ensure!(
        answers.refusals_without_retry_after == 0,
        "a refusal without Retry-After: {summary}"
    );
    ensure!(
        answers.unanswered.is_empty(),
        "requests without an answer: {summary}"
    );
    // The load went past the limits (something was shed) and work still got done.
    ensure!(
        answers.rest.get(&503).is_some_and(|n| *n > 0)
            && answers.rest.get(&200).is_some_and(|n| *n > 0),
        "the gateway shed nothing or served nothing: {summary}"
    );
    ensure!(
        answers
            .grpc
            .get("ResourceExhausted")
            .is_some_and(|n| *n > 0)
            && answers.grpc.get("Ok").is_some_and(|n| *n > 0),
        "product-service shed nothing or served nothing: {summary}"
    );
    ensure!(
        after <= 2 * idle,
        "memory did not come back within 2× idle: {summary}"
    );
    Ok(())
}
