//! `product-service migrate`, as a deployment's migration job runs it before any replica: it
//! applies the schema and declares the service's queue, so `order.cancelled` events published
//! before product-service first starts wait for it.

use std::process::Command;

use anyhow::{Context as _, bail};

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("rabbitmqctl must be installed to test queue declaration")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[test]
fn migrate_applies_the_schema_and_declares_the_queue() -> anyhow::Result<()> {
    let Ok(amqp) = std::env::var("AMQP_URL") else {
        eprintln!("skipped: AMQP_URL is not set, so queue declaration by migrate is not tested");
        return Ok(());
    };
    let vhost = format!("test-migrate-{}", uuid::Uuid::new_v4().simple());
    rabbitmqctl(&["add_vhost", &vhost])?;
    let outcome = (|| {
        rabbitmqctl(&[
            "set_permissions",
            "--vhost",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        let mut url = url::Url::parse(&amqp)?;
        url.set_path(&format!("/{vhost}"));
        let dir = tempfile::tempdir()?;
        let db = format!("sqlite://{}", dir.path().join("product.db").display());
        let output = Command::new(env!("CARGO_BIN_EXE_product-service"))
            .arg("migrate")
            .env_clear()
            .env("PRODUCT_DATABASE_URL", &db)
            .env("AMQP_URL", url.as_str())
            .env("RUST_LOG", "error")
            .output()?;
        let stderr = String::from_utf8(output.stderr)?;
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        let queues = rabbitmqctl(&["list_queues", "--vhost", &vhost, "name", "--quiet"])?;
        assert!(
            queues.lines().any(|q| q.trim() == product_service::NAME),
            "no {} queue in {queues:?}",
            product_service::NAME
        );
        anyhow::Ok(())
    })();
    rabbitmqctl(&["delete_vhost", &vhost])?;
    outcome
}
