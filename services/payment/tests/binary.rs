//! The `payment-service` binary as a deployment runs it: `migrate` applies the schema and exits;
//! a broker URL file that is missing exits 2 naming the setting.

use std::process::Command;

fn payment_service(envs: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .arg("migrate")
        .env_clear()
        .env("RUST_LOG", "error")
        .envs(envs.iter().copied())
        .output()?;
    Ok((output.status.code(), String::from_utf8(output.stderr)?))
}

#[test]
fn migrate_applies_the_schema_and_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("payment.db");
    let url = format!("sqlite://{}", db.display());
    let (code, stderr) = payment_service(&[("PAYMENT_DATABASE_URL", url.as_str())])?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(db.exists(), "the database was created");
    Ok(())
}

#[test]
fn a_missing_broker_url_file_exits_2_naming_the_setting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("payment.db").display());
    let (code, stderr) = payment_service(&[
        ("PAYMENT_DATABASE_URL", url.as_str()),
        ("AMQP_URL_FILE", "/nonexistent/amqp-url"),
    ])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("AMQP_URL_FILE"), "{stderr}");
    Ok(())
}
