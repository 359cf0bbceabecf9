//! RabbitMQ under faults: the broker drops every connection mid-stream, and publishing and
//! consuming carry on by themselves without losing an event. Its own test binary, because
//! `rabbitmqctl close_all_connections` would disturb any other test running beside it.

use std::{
    collections::HashSet,
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

#[derive(Default)]
struct Seen(Mutex<HashSet<String>>);

impl Seen {
    fn count(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl EventHandler for Seen {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Ok(mut seen) = self.0.lock() {
                seen.insert(envelope.id().to_owned());
            }
            Ok(())
        })
    }
}

async fn close_all_connections() -> anyhow::Result<()> {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "fault test"])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("rabbitmqctl must be installed to run the broker fault test")?;
    anyhow::ensure!(status.success(), "rabbitmqctl close_all_connections failed");
    Ok(())
}

#[tokio::test]
async fn dropped_broker_connections_lose_no_event() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("AMQP_URL") else {
        eprintln!("skipped: AMQP_URL is not set, so broker faults are not tested");
        return Ok(());
    };
    let bus = RabbitBus::connect(&url).await?;
    const EVENTS: usize = 300;
    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let consumer = format!("test-faults-{}", uuid::Uuid::new_v4().simple());
    let task = bus
        .subscribe(
            Subscription {
                consumer,
                routing_keys: vec!["order.created".to_owned()],
                retry: RetryPolicy::default(),
            },
            seen.clone(),
            stop.clone(),
        )
        .await?;

    let mut published = HashSet::new();
    for i in 0..EVENTS {
        if i == EVENTS / 3 || i == 2 * EVENTS / 3 {
            close_all_connections().await?;
        }
        let created = shop_proto::events::v1::OrderCreated {
            order_id: format!("order-{i}"),
            ..Default::default()
        };
        let event = Envelope::new("fault-test", &created);
        bus.publish(&event)
            .await
            .with_context(|| format!("publishing event {i}"))?;
        published.insert(event.id().to_owned());
    }

    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.count() < EVENTS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .with_context(|| format!("only {} of {EVENTS} events arrived", seen.count()))?;
    let received = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        received, published,
        "every published event arrives, and nothing else"
    );
    stop.cancel();
    task.await?;
    Ok(())
}
