//! `shop load` from its command line against a real HTTP server on loopback: the report files,
//! the loopback refusal, and the original single-URL entry point.

use std::time::Duration;

use super::{
    LoadArgs, LoadCommand, LoadError, Summary, execute, run,
    testing::{TestServer, serve},
};

fn command(server: &TestServer, extra: &[&str]) -> anyhow::Result<LoadCommand> {
    let url = server.url();
    let mut args = vec![
        "--scenario",
        "url",
        "--url",
        &url,
        "--users",
        "4",
        "--think",
        "20ms..40ms",
        "--duration",
        "1500ms",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    Ok(LoadCommand::try_parse_from(&args)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_parses_back_and_the_svg_is_a_well_formed_plot() -> anyhow::Result<()> {
    let server = serve(None, Duration::ZERO).await?;
    let dir = tempfile::tempdir()?;
    let (json, svg) = (dir.path().join("load.json"), dir.path().join("load.svg"));
    let (json_arg, svg_arg) = (json.display().to_string(), svg.display().to_string());
    let summary = execute(&command(
        &server,
        &["--json", &json_arg, "--svg", &svg_arg],
    )?)
    .await?;
    assert!(summary.requests > 20, "{summary}");
    assert_eq!(summary.errors, 0, "{summary}");
    assert!(summary.passed());

    // Floats may differ in their last digit after the round trip; counts and names may not.
    let read: Summary = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    assert_eq!(
        (
            read.requests,
            read.errors,
            read.overall.count,
            read.steps.len()
        ),
        (
            summary.requests,
            summary.errors,
            summary.overall.count,
            summary.steps.len()
        )
    );
    assert!((read.overall.p99_ms - summary.overall.p99_ms).abs() < 1e-9);
    assert_eq!(read.timeline.len(), summary.timeline.len());
    let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    for field in [
        "requests",
        "errors",
        "rps",
        "overall",
        "steps",
        "timeline",
        "distribution",
    ] {
        assert!(raw.get(field).is_some(), "no {field} in {raw}");
    }
    assert_eq!(raw["steps"][0]["step"], "url");
    assert!(raw["overall"]["p99_ms"].as_f64().is_some(), "{raw}");
    assert!(raw["timeline"].as_array().is_some_and(|t| !t.is_empty()));

    let text = std::fs::read_to_string(&svg)?;
    let document = roxmltree::Document::parse(&text)?;
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = document
        .descendants()
        .filter_map(|node| node.text())
        .collect();
    for caption in ["Latency over time", "Latency by percentile", "Throughput"] {
        assert!(
            texts.iter().any(|t| t.contains(caption)),
            "no {caption:?} in {texts:?}"
        );
    }
    let lines = document
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline")
        .count();
    assert!(lines >= 4, "{lines} lines drawn");
    Ok(())
}

#[tokio::test]
async fn a_target_off_this_machine_is_refused_unless_allowed() -> anyhow::Result<()> {
    let args = [
        "--scenario",
        "url",
        "--url",
        "http://192.0.2.1:8080/",
        "--duration",
        "1s",
        "--quiet",
    ];
    let refused = execute(&LoadCommand::try_parse_from(&args)?).await;
    let Err(error @ LoadError::Remote { .. }) = refused else {
        anyhow::bail!("a remote target was not refused: {refused:?}");
    };
    let message = error.to_string();
    assert!(message.contains("--allow-remote"), "{message}");
    assert!(message.contains("192.0.2.1"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_single_url_entry_point_still_reports() -> anyhow::Result<()> {
    let server = serve(None, Duration::ZERO).await?;
    let args = LoadArgs {
        url: server.url(),
        concurrency: 2,
        duration: Duration::from_millis(300),
        headers: vec!["X-Request-ID: load".to_owned()],
    };
    let report = run(&args).await?;
    assert!(report.ok > 0, "{report}");
    assert_eq!(report.requests, report.ok + report.not_ok + report.failed);
    assert_eq!(report.failed, 0, "{report}");
    let https = LoadArgs {
        url: "https://example.com".to_owned(),
        ..args
    };
    let error = run(&https).await.err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("--url: only http:// URLs are supported")
    );
    Ok(())
}
