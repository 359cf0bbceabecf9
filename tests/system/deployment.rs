//! The Helm chart, run without a cluster: `helm template` renders it, and each service binary
//! starts from its container's exact command line (the image's entrypoint and the chart's args)
//! with only the chart's environment and its secrets as mounted files, against this machine's
//! PostgreSQL and RabbitMQ. The migration Jobs run first, as the install hook does; then the
//! services must report SERVING, the `helm test` pod's probe must pass, and the README's checkout
//! through the gateway must end CONFIRMED. Only addresses are rewritten to loopback ports, and
//! mount paths to a scratch folder.

use std::{process::Stdio, time::Duration};

use anyhow::{Context as _, bail, ensure};
use tokio::process::Command;

use crate::chart::{LocalDeployment, Routes, SERVICES, container, named, tails};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binaries_run_as_the_chart_deploys_them_and_a_checkout_succeeds() -> anyhow::Result<()>
{
    let (Ok(server), Ok(amqp)) = (std::env::var("DATABASE_URL"), std::env::var("AMQP_URL")) else {
        eprintln!(
            "skipped: DATABASE_URL and AMQP_URL are not both set, so the chart's deployment is not run"
        );
        return Ok(());
    };
    if Command::new("helm").arg("version").output().await.is_err() {
        eprintln!("skipped: helm is not on PATH (scripts/install-tools.sh installs it)");
        return Ok(());
    }
    let values = serde_json::json!({
        "services": {"product": {"extraEnv": {"PRODUCT_SEED_DEMO_CATALOGUE": "true"}}},
    });
    let mut deployment =
        LocalDeployment::install("deploy", &server, &amqp, &Routes::direct(), values).await?;
    for service in SERVICES {
        deployment.start(service)?;
    }
    for service in SERVICES {
        deployment
            .await_serving(service, Duration::from_secs(40))
            .await?;
    }
    deployment.start_gateway()?;

    // `helm test`'s pod: the `shop probe` it runs, against the same parts.
    let objects = &deployment.objects;
    let probe = named(objects, "Pod", "shop-test").context("the helm test pod")?;
    let probe = container(
        objects,
        probe,
        &deployment.scratch.path().join("shop-test"),
        &deployment.ports,
    )?;
    let output = probe
        .command(&deployment.bin)
        .stdout(Stdio::piped())
        .output()
        .await?;
    ensure!(
        output.status.success(),
        "the helm test probe failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let block = readme
        .split("<!-- gateway-checkout:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- gateway-checkout:end -->").next())
        .context("the README has no gateway checkout block")?;
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("GW", format!("http://{}", deployment.ports.gateway))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("is ORDER_STATUS_CONFIRMED") {
        deployment.stop().await;
        bail!(
            "the checkout through the gateway failed: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            tails(&deployment.logs)
        );
    }
    Ok(())
}
