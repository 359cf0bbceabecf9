//! The real `shop` binary: start-up, SIGTERM handling and configuration errors.

use std::{collections::HashMap, process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{channel, health_status, wait_for_health};

/// `shop up` on ephemeral ports, with its SQLite files in a folder of its own under cargo's
/// scratch directory for tests.
pub(crate) fn shop() -> Command {
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("shop-up-{}", uuid::Uuid::new_v4().simple()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command
        .arg("up")
        .env("SHOP_DATA_DIR", data)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for port in ["USER", "PRODUCT", "ORDER", "PAYMENT", "GATEWAY", "METRICS"] {
        command.env(format!("SHOP_{port}_PORT"), "0");
    }
    command
}

/// What a child wrote to stdout after its start-up table, line by line (its JSON log lines).
pub(crate) type Output = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Reads the start-up table (`  user-service     grpc  127.0.0.1:PORT`) until the Ctrl-C line.
async fn endpoints(child: &mut Child) -> anyhow::Result<HashMap<String, String>> {
    Ok(endpoints_and_output(child).await?.0)
}

/// [`endpoints`], and the lines the child writes after them.
pub(crate) async fn endpoints_and_output(
    child: &mut Child,
) -> anyhow::Result<(HashMap<String, String>, Output)> {
    let stdout = child.stdout.take().context("stdout is piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut found = HashMap::new();
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("Press Ctrl-C") {
                return Ok(found);
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [name, "grpc" | "http", address] = fields[..] {
                found.insert(name.to_owned(), address.to_owned());
            }
        }
        bail!("shop exited before printing its endpoints")
    };
    let found = tokio::time::timeout(Duration::from_secs(30), read).await??;
    // Keep draining stdout so the child never blocks on a full pipe.
    let output = Output::default();
    let kept = output.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    Ok((found, output))
}

async fn exit_status_and_stderr(command: &mut Command) -> anyhow::Result<(Option<i32>, String)> {
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await??;
    Ok((output.status.code(), String::from_utf8(output.stderr)?))
}

#[tokio::test]
async fn shop_up_serves_health_on_every_grpc_port() -> anyhow::Result<()> {
    let mut child = shop().spawn()?;
    let endpoints = endpoints(&mut child).await?;
    for service in [
        "user-service",
        "product-service",
        "order-service",
        "payment-service",
    ] {
        let address = endpoints.get(service).context("service in the table")?;
        let channel = channel(address.parse()?).await?;
        wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await?;
    }
    assert!(endpoints.contains_key("gateway") && endpoints.contains_key("metrics"));
    Ok(())
}

#[tokio::test]
async fn sigterm_turns_health_not_serving_then_exits_zero() -> anyhow::Result<()> {
    let mut child = shop().env("SHUTDOWN_DRAIN_DELAY", "2s").spawn()?;
    let endpoints = endpoints(&mut child).await?;
    let address = endpoints.get("order-service").context("order-service")?;
    let channel = channel(address.parse()?).await?;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await?;

    let pid = child.id().context("child is running")?;
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    assert!(killed.success());
    // During the drain delay the server still answers, and says it is going away.
    wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(2)).await?;

    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await??;
    assert_eq!(status.code(), Some(0), "shop must exit 0 after SIGTERM");
    assert!(
        health_status(&channel, "").await.is_err(),
        "nothing answers after exit"
    );
    Ok(())
}

#[tokio::test]
async fn an_unparseable_port_exits_non_zero_naming_the_setting() -> anyhow::Result<()> {
    let (code, stderr) = exit_status_and_stderr(shop().env("SHOP_USER_PORT", "fifty")).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--user-port"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_taken_port_exits_non_zero_naming_the_setting() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let (code, stderr) = exit_status_and_stderr(shop().env("SHOP_GATEWAY_PORT", &port)).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--gateway-port"), "{stderr}");
    assert!(stderr.contains(&port), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_file_exits_non_zero_naming_the_setting() -> anyhow::Result<()> {
    let (code, stderr) = exit_status_and_stderr(shop().env(
        "OTEL_EXPORTER_OTLP_HEADERS_FILE",
        "/nonexistent/otlp-headers",
    ))
    .await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_HEADERS_FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/otlp-headers"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn a_secret_file_is_read_and_its_content_checked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad-headers");
    std::fs::write(&bad, "x-api-key=abc,secret-without-a-value\n")?;
    let (code, stderr) =
        exit_status_and_stderr(shop().env("OTEL_EXPORTER_OTLP_HEADERS_FILE", &bad)).await?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_HEADERS_FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("header #2 is not key=value"), "{stderr}");
    assert!(
        !stderr.contains("secret-without"),
        "secrets stay out of errors: {stderr}"
    );

    let good = dir.path().join("good-headers");
    std::fs::write(&good, "x-api-key=abc\n")?;
    let mut child = shop()
        .env("OTEL_EXPORTER_OTLP_HEADERS_FILE", &good)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .spawn()?;
    let endpoints = endpoints(&mut child).await?;
    let address = endpoints.get("user-service").context("user-service")?;
    let channel = channel(address.parse()?).await?;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(10)).await?;
    Ok(())
}

/// `shop probe`, as the chart's `helm test` pod runs it: every check passes against a running
/// system, and one dead address makes it fail, naming that address.
#[tokio::test]
async fn shop_probe_passes_on_a_running_system_and_names_what_is_down() -> anyhow::Result<()> {
    let mut child = shop().spawn()?;
    let endpoints = endpoints(&mut child).await?;
    let mut probe = Command::new(env!("CARGO_BIN_EXE_shop"));
    probe.args(["probe", "--wait", "10s"]);
    for service in [
        "user-service",
        "product-service",
        "order-service",
        "payment-service",
    ] {
        let address = endpoints.get(service).context("service in the table")?;
        probe.args(["--grpc", &format!("http://{address}")]);
    }
    let gateway = endpoints.get("gateway").context("gateway")?;
    probe.args(["--http", &format!("{gateway}/v1/products?pageSize=1")]);
    let output = tokio::time::timeout(Duration::from_secs(30), probe.output()).await??;
    let stdout = String::from_utf8(output.stdout)?;
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        5,
        "{stdout}"
    );

    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let output = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["probe", "--timeout", "2s", "--grpc"])
        .arg(format!("http://{dead}"))
        .args(["--http", &format!("{gateway}/v1/products?pageSize=1")])
        .output()
        .await?;
    let stdout = String::from_utf8(output.stdout)?;
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL  grpc http://{dead}")),
        "{stdout}"
    );
    Ok(())
}
