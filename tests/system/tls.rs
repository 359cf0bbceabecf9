//! The README's mTLS example, run by bash exactly as written: openssl makes two CAs and their
//! certificates, the real product-service binary serves with mTLS, and grpcurl gets SERVING with
//! the right client certificate and is refused without one or with another CA's.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use tokio::process::Command;

/// The folder the service binaries were built into (next to this test's own).
fn binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let folder = exe
        .parent()
        .and_then(Path::parent)
        .context("the test binary sits in target/<profile>/deps")?;
    Ok(folder.to_owned())
}

#[tokio::test]
async fn the_readme_mtls_example_answers_the_right_client_and_refuses_the_others()
-> anyhow::Result<()> {
    for tool in ["openssl", "grpcurl"] {
        if Command::new(tool).arg("-version").output().await.is_err() {
            eprintln!("skipped: {tool} is not on PATH (scripts/install-tools.sh installs grpcurl)");
            return Ok(());
        }
    }
    let bin = binaries()?;
    ensure!(
        bin.join("product-service").exists(),
        "no product-service binary in {}: cargo build -p product-service",
        bin.display()
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let block = readme
        .split("<!-- mtls:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- mtls:end -->").next())
        .context("the README has no mTLS block")?;
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let scratch = tempfile::tempdir()?;
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PORT", port.to_string())
        .env("PATH", path)
        .env("TMPDIR", scratch.path())
        // The example's service runs on its own: no broker, no settings of the test's machine.
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("GRPC_CLIENT_TLS_CA_FILE")
        .env_remove("GRPC_CLIENT_TLS_CERT_FILE")
        .env_remove("GRPC_CLIENT_TLS_KEY_FILE")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the README's mTLS block ran for two minutes")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // One answer only: the refused calls printed no status.
    assert_eq!(
        stdout.matches("\"status\": \"SERVING\"").count(),
        1,
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("refused: no client certificate"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("refused: a certificate from another CA"),
        "{stdout}\n{stderr}"
    );
    Ok(())
}
