//! The `order-service` binary as a deployment runs it: `migrate` applies the schema from a URL
//! file and exits; bad configuration exits 2 with one line naming the setting.

use std::process::Command;

fn order_service(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let output = Command::new(env!("CARGO_BIN_EXE_order-service"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "error")
        .envs(envs.iter().copied())
        .output()?;
    Ok((output.status.code(), String::from_utf8(output.stderr)?))
}

#[test]
fn migrate_reads_the_url_file_applies_the_schema_twice_alike_and_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("order.db");
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("sqlite://{}\n", db.display()))?;
    let url_file = url_file.display().to_string();
    for run in 1..=2 {
        let (code, stderr) = order_service(
            &["migrate"],
            &[("ORDER_DATABASE_URL_FILE", url_file.as_str())],
        )?;
        assert_eq!(code, Some(0), "run {run}: {stderr}");
    }
    assert!(db.exists(), "the database was created");
    Ok(())
}

#[test]
fn a_url_given_twice_is_refused_naming_the_setting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, "sqlite://elsewhere.db")?;
    let url_file = url_file.display().to_string();
    let (code, stderr) = order_service(
        &["migrate"],
        &[
            ("ORDER_DATABASE_URL", "sqlite://here.db"),
            ("ORDER_DATABASE_URL_FILE", url_file.as_str()),
        ],
    )?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ORDER_DATABASE_URL"), "{stderr}");
    Ok(())
}

#[test]
fn without_its_client_secret_the_service_exits_2_naming_the_setting() -> anyhow::Result<()> {
    let (code, stderr) = order_service(
        &["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"],
        &[("ORDER_DATABASE_URL", "sqlite::memory:")],
    )?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ORDER_CLIENT_SECRET_FILE"), "{stderr}");
    Ok(())
}
