//! The outbox contract every backend meets.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use shop_common::{
    BoxFuture,
    events::{
        BusError, Envelope, EventBus, EventHandler, EventPublisher, HandlerError, InProcessBus,
        RetryPolicy, Subscription,
    },
};
use shop_proto::{DomainEvent as _, events::v1::OrderCreated};
use tokio_util::sync::CancellationToken;

use crate::db::Db;

const CONSUMER: &str = "outbox-test";
const KEY: &str = OrderCreated::TYPE;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn event(aggregate: &str) -> Envelope {
    let created = OrderCreated {
        order_id: aggregate.to_owned(),
        ..OrderCreated::default()
    };
    Envelope::new("outbox-test", &created)
}

/// Records delivered event ids in arrival order; with a database, applies each at most once.
struct Consumer {
    delivered: Mutex<Vec<String>>,
    db: Option<Arc<Db>>,
}

impl EventHandler for Consumer {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Some(db) = &self.db {
                db.apply_once(CONSUMER, envelope.id())
                    .await
                    .map_err(|e| HandlerError::Transient(e.to_string()))?;
            }
            lock(&self.delivered).push(envelope.id().to_owned());
            Ok(())
        })
    }
}

async fn bus_with_consumer(db: Option<Arc<Db>>) -> anyhow::Result<(InProcessBus, Arc<Consumer>)> {
    let bus = InProcessBus::new();
    let consumer = Arc::new(Consumer {
        delivered: Mutex::new(Vec::new()),
        db,
    });
    let subscription = Subscription {
        consumer: CONSUMER.to_owned(),
        routing_keys: vec![KEY.to_owned()],
        retry: RetryPolicy::default(),
    };
    // The consumer task ends with the test's runtime.
    drop(
        bus.subscribe(subscription, consumer.clone(), CancellationToken::new())
            .await?,
    );
    Ok((bus, consumer))
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(within, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting until {what}"))
}

/// Waits until no event is pending: the relay marks a batch after the bus took it, so the last
/// mark may trail the delivery a little.
async fn all_marked(db: &Db) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while db.pending().await? != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::Ok(())
    })
    .await
    .context("delivered events stayed pending: the relay did not mark them")?
}

/// Fails its first `failures` publishes; with `after_publish`, it fails only after the event
/// reached the bus, as a relay that died before marking the row would.
struct Flaky {
    bus: InProcessBus,
    failures: u32,
    after_publish: bool,
    calls: AtomicU32,
}

impl EventPublisher for Flaky {
    fn publish<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = call < self.failures;
            if fail && !self.after_publish {
                return Err(BusError::Unavailable("broker down (simulated)".into()));
            }
            self.bus.publish(envelope).await?;
            if fail {
                return Err(BusError::Unavailable(
                    "crashed before marking (simulated)".into(),
                ));
            }
            Ok(())
        })
    }
}

pub(crate) async fn committed_events_are_published_in_order_and_rolled_back_ones_never(
    db: Db,
) -> anyhow::Result<()> {
    let (bus, consumer) = bus_with_consumer(None).await?;
    let committed: Vec<Envelope> = (0..25)
        .map(|i| event(&format!("order-{}", i % 3)))
        .collect();
    let rolled_back: Vec<Envelope> = (0..5).map(|_| event("order-x")).collect();
    db.append(&committed, true).await?;
    db.append(&rolled_back, false).await?;

    let stop = CancellationToken::new();
    let relay = db.relay(Arc::new(bus), Duration::from_millis(50), stop.clone());
    until(
        "every committed event arrives",
        Duration::from_secs(10),
        || lock(&consumer.delivered).len() >= committed.len(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let expected: Vec<String> = committed.iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(
        *lock(&consumer.delivered),
        expected,
        "in append order, rolled back ones absent"
    );
    all_marked(&db).await?;
    stop.cancel();
    relay.await?;
    Ok(())
}

pub(crate) async fn the_relay_wakes_on_a_new_event_without_waiting_for_its_poll(
    db: Db,
) -> anyhow::Result<()> {
    let (bus, consumer) = bus_with_consumer(None).await?;
    let stop = CancellationToken::new();
    // A poll interval far longer than the test: only a wake-up can deliver in time.
    let relay = db.relay(Arc::new(bus), Duration::from_secs(60), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.append(&[event("order-wake")], true).await?;
    until("the event arrives", Duration::from_secs(5), || {
        lock(&consumer.delivered).len() == 1
    })
    .await?;
    stop.cancel();
    relay.await?;
    Ok(())
}

pub(crate) async fn failed_publishes_are_retried_in_order_and_nothing_is_lost(
    db: Db,
) -> anyhow::Result<()> {
    let (bus, consumer) = bus_with_consumer(None).await?;
    let events: Vec<Envelope> = (0..15).map(|_| event("order-retry")).collect();
    db.append(&events, true).await?;
    let flaky = Flaky {
        bus,
        failures: 3,
        after_publish: false,
        calls: AtomicU32::new(0),
    };
    let stop = CancellationToken::new();
    let relay = db.relay(Arc::new(flaky), Duration::from_millis(50), stop.clone());
    until("every event arrives", Duration::from_secs(10), || {
        lock(&consumer.delivered).len() >= events.len()
    })
    .await?;
    let expected: Vec<String> = events.iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(*lock(&consumer.delivered), expected);
    all_marked(&db).await?;
    stop.cancel();
    relay.await?;
    Ok(())
}

pub(crate) async fn a_crash_between_publish_and_mark_delivers_twice_and_applies_once(
    db: Db,
) -> anyhow::Result<()> {
    let db = Arc::new(db);
    let (bus, consumer) = bus_with_consumer(Some(db.clone())).await?;
    let crashed = event("order-crash");
    db.append(std::slice::from_ref(&crashed), true).await?;
    let flaky = Flaky {
        bus,
        failures: 1,
        after_publish: true,
        calls: AtomicU32::new(0),
    };
    let stop = CancellationToken::new();
    let relay = db.relay(Arc::new(flaky), Duration::from_millis(50), stop.clone());
    until(
        "the event is delivered twice",
        Duration::from_secs(10),
        || lock(&consumer.delivered).len() == 2,
    )
    .await?;
    assert_eq!(
        db.effects(crashed.id()).await?,
        1,
        "applied once despite two deliveries"
    );
    all_marked(&db).await?;
    stop.cancel();
    relay.await?;
    Ok(())
}

pub(crate) async fn a_processed_event_is_recorded_once_per_consumer(db: Db) -> anyhow::Result<()> {
    assert!(db.apply_once("payments", "event-1").await?);
    assert!(!db.apply_once("payments", "event-1").await?);
    assert!(db.apply_once("orders", "event-1").await?);
    assert_eq!(db.effects("event-1").await?, 2);
    Ok(())
}
