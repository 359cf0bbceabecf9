//! The `gateway` binary refuses a Kong file it cannot use with exit status 2 and one line naming
//! the setting, before it serves anything.

use std::process::Command;

#[test]
fn an_unreadable_kong_file_exits_2_naming_the_setting() -> anyhow::Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env_clear()
        .env("GATEWAY_KONG_CONFIG", "/nonexistent/kong.yaml")
        .env("RUST_LOG", "error")
        .output()?;
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("GATEWAY_KONG_CONFIG"), "{stderr}");
    assert!(stderr.contains("/nonexistent/kong.yaml"), "{stderr}");
    Ok(())
}

#[test]
fn a_kong_file_with_a_plugin_it_does_not_know_exits_2() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("kong.yaml");
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nplugins:\n  - name: bot-detection\nservices: []\n",
    )?;
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
        .env_clear()
        .env("GATEWAY_KONG_CONFIG", &file)
        .env("RUST_LOG", "error")
        .output()?;
    let stderr = String::from_utf8(output.stderr)?;
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bot-detection"), "{stderr}");
    Ok(())
}
