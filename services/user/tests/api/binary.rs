//! The `user-service` binary refuses bad configuration with exit status 2 and one line naming
//! the setting, before it serves anything.

use std::process::Command;

fn user_service(envs: &[(&str, &str)]) -> anyhow::Result<(Option<i32>, String)> {
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("user.db").display());
    let output = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env_clear()
        .env("USER_DATABASE_URL", db)
        .env("RUST_LOG", "error")
        .envs(envs.iter().copied())
        .output()?;
    Ok((output.status.code(), String::from_utf8(output.stderr)?))
}

#[test]
fn without_a_signing_key_the_binary_exits_2_naming_the_setting() -> anyhow::Result<()> {
    let (code, stderr) = user_service(&[])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("USER_SIGNING_KEY_FILE") && stderr.contains("USER_ALLOW_GENERATED_KEY"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_key_that_is_not_a_pem_is_refused_without_echoing_it() -> anyhow::Result<()> {
    let (code, stderr) = user_service(&[("USER_SIGNING_KEY", "secret-but-not-a-key")])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("USER_SIGNING_KEY"), "{stderr}");
    assert!(!stderr.contains("secret-but-not-a-key"), "{stderr}");
    Ok(())
}

#[test]
fn a_short_service_client_secret_is_refused_by_position() -> anyhow::Result<()> {
    let (code, stderr) = user_service(&[
        ("USER_ALLOW_GENERATED_KEY", "true"),
        ("USER_SERVICE_CLIENTS", "order-service:tiny"),
    ])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("USER_SERVICE_CLIENTS: entry 1"), "{stderr}");
    assert!(!stderr.contains("tiny"), "{stderr}");
    Ok(())
}

#[test]
fn a_database_url_of_another_kind_is_refused() -> anyhow::Result<()> {
    let (code, stderr) = user_service(&[
        ("USER_ALLOW_GENERATED_KEY", "true"),
        ("USER_DATABASE_URL", "mysql://db/shop"),
    ])?;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("USER_DATABASE_URL"), "{stderr}");
    Ok(())
}

/// `user-service migrate`, as the chart's migration job runs it: the URL comes from a file, the
/// schema is applied, and the binary exits 0 without serving; run again, it changes nothing.
#[test]
fn migrate_applies_the_schema_from_a_url_file_and_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("migrated.db");
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("sqlite://{}\n", db_path.display()))?;
    for run in 1..=2 {
        let output = Command::new(env!("CARGO_BIN_EXE_user-service"))
            .arg("migrate")
            .env_clear()
            .env("USER_DATABASE_URL_FILE", &url_file)
            .env("RUST_LOG", "error")
            .output()?;
        let stderr = String::from_utf8(output.stderr)?;
        assert_eq!(output.status.code(), Some(0), "run {run}: {stderr}");
    }
    assert!(db_path.exists(), "the database was created");

    let missing = dir.path().join("no-such-file");
    let output = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .arg("migrate")
        .env_clear()
        .env("USER_DATABASE_URL_FILE", &missing)
        .output()?;
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("USER_DATABASE_URL_FILE"), "{stderr}");
    Ok(())
}
