//! `shop events dlq list|replay` against the real broker: a dead letter shows with its reason,
//! and replay hands it back to the consumer.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use shop_common::{
    BoxFuture,
    events::{
        Envelope, EventBus, EventHandler, EventPublisher, HandlerError, RabbitBus, RetryPolicy,
        Subscription,
    },
};
use tokio_util::sync::CancellationToken;

/// Refuses every event until `accept` is set, then records them.
#[derive(Default)]
struct Gate {
    accept: Mutex<bool>,
    applied: Mutex<Vec<String>>,
}

impl EventHandler for Gate {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if !*self
                .accept
                .lock()
                .map_err(|_| HandlerError::Transient("poisoned".into()))?
            {
                return Err(HandlerError::Transient("warehouse offline".into()));
            }
            if let Ok(mut applied) = self.applied.lock() {
                applied.push(envelope.id().to_owned());
            }
            Ok(())
        })
    }
}

async fn shop_events(url: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(["events", "dlq"])
            .args(args)
            .env("AMQP_URL", url)
            .env("RUST_LOG", "warn")
            .output(),
    )
    .await??;
    Ok((
        output.status.success(),
        String::from_utf8(output.stdout)?,
        String::from_utf8(output.stderr)?,
    ))
}

#[tokio::test]
async fn the_cli_lists_a_dead_letter_with_its_reason_and_replays_it() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("AMQP_URL") else {
        eprintln!("skipped: AMQP_URL is not set, so the dead-letter CLI is not tested");
        return Ok(());
    };
    let bus = RabbitBus::connect(&url).await?;
    let consumer = format!("test-cli-{}", uuid::Uuid::new_v4().simple());
    let key = format!("{consumer}.order.created");
    let gate = Arc::new(Gate::default());
    let stop = CancellationToken::new();
    let task = bus
        .subscribe(
            Subscription {
                consumer: consumer.clone(),
                routing_keys: vec![key.clone()],
                retry: RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                },
            },
            gate.clone(),
            stop.clone(),
        )
        .await?;
    let mut event = Envelope::new(
        "dlq-test",
        &shop_proto::events::v1::OrderCreated {
            order_id: "order-cli".to_owned(),
            ..Default::default()
        },
    );
    // A routing key of this test's own, so no other consumer on the broker sees the event.
    event.0.event_type.clone_from(&key);
    bus.publish(&event).await?;

    let mut listed = String::new();
    for _ in 0..100 {
        let (ok, stdout, stderr) = shop_events(&url, &["list", "--consumer", &consumer]).await?;
        assert!(ok, "{stderr}");
        if stdout.contains(event.id()) {
            listed = stdout;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed.contains("warehouse offline"), "{listed}");
    assert!(listed.contains(&key), "{listed}");

    *gate
        .accept
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))? = true;
    let (ok, stdout, stderr) = shop_events(
        &url,
        &["replay", "--consumer", &consumer, "--event-id", event.id()],
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(stdout.contains("replayed"), "{stdout}");
    tokio::time::timeout(Duration::from_secs(10), async {
        while gate.applied.lock().map(|a| a.is_empty()).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the replayed event never reached the consumer")?;

    let (ok, _, stderr) = shop_events(
        &url,
        &["replay", "--consumer", &consumer, "--event-id", event.id()],
    )
    .await?;
    assert!(!ok, "replaying a letter twice fails");
    assert!(stderr.contains("no dead letter"), "{stderr}");
    stop.cancel();
    task.await?;
    Ok(())
}
