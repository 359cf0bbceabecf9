//! A burst of sign-ins against the real `user-service` binary: argon2id takes 19 MiB per hash, so
//! hashing is bounded (a few threads, a short queue, then RESOURCE_EXHAUSTED) and the process's
//! memory stays near its idle size instead of growing by a gigabyte and staying there.

use std::{process::Stdio, time::Duration};

use anyhow::Context as _;
use shop_proto::user::v1::{LoginRequest, user_service_client::UserServiceClient};
use tokio::process::Command;
use tonic::Code;

/// A field of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("a number")?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_parallel_sign_ins_stay_within_bounded_memory() -> anyhow::Result<()> {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc, so process memory cannot be read here");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env(
            "USER_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("u.db").display()),
        )
        .env("USER_ALLOW_GENERATED_KEY", "true")
        .env("USER_BOOTSTRAP_ADMIN_EMAIL", "admin@memory.test")
        .env(
            "USER_BOOTSTRAP_ADMIN_PASSWORD",
            "the admin password of this test",
        )
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("running")?;
    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(connected) = UserServiceClient::connect(url.clone()).await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.context("user-service did not start")?;
    let idle_kb = status_kb(pid, "VmRSS:")?;

    let attempts = (0..64).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .login(LoginRequest {
                    email: "admin@memory.test".to_owned(),
                    password: format!("wrong password number {i}"),
                })
                .await
                .map(|_| Code::Ok)
                .unwrap_or_else(|status| status.code())
        }
    });
    let codes = futures::future::join_all(attempts).await;
    let peak_kb = status_kb(pid, "VmHWM:")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kb = status_kb(pid, "VmRSS:")?;
    child.kill().await?;

    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Unauthenticated | Code::ResourceExhausted)),
        "{codes:?}"
    );
    assert!(
        codes.contains(&Code::Unauthenticated),
        "some were checked: {codes:?}"
    );
    // 64 concurrent hashes would take 64 × 19 MiB; a bounded hasher, a few of them.
    assert!(
        peak_kb < idle_kb + 200 * 1024,
        "peak {peak_kb} kB vs idle {idle_kb} kB"
    );
    assert!(
        after_kb < idle_kb + 100 * 1024,
        "after the burst {after_kb} kB vs idle {idle_kb} kB (peak {peak_kb} kB)"
    );
    Ok(())
}
