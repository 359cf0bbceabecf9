//! The contract every event bus meets.

use std::{
    sync::{Arc, Mutex, Once},
    time::Duration,
};

use anyhow::{Context as _, bail};
use opentelemetry::trace::TraceContextExt as _;
use shop_common::{
    BoxFuture,
    config::TelemetryArgs,
    events::{Envelope, EventBus, EventHandler, HandlerError, RetryPolicy, Subscription},
};
use shop_proto::events::v1::OrderCreated;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Records what it was given; fails the first `fail_first` attempts of every event.
#[derive(Default)]
struct Recorder {
    fail_first: u32,
    attempts: Mutex<Vec<String>>,
    applied: Mutex<Vec<(Envelope, String)>>,
}

impl Recorder {
    fn failing(fail_first: u32) -> Arc<Self> {
        Arc::new(Self {
            fail_first,
            ..Self::default()
        })
    }

    fn applied_ids(&self) -> Vec<String> {
        lock(&self.applied)
            .iter()
            .map(|(e, _)| e.id().to_owned())
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventHandler for Recorder {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let attempt = {
                let mut attempts = lock(&self.attempts);
                attempts.push(envelope.id().to_owned());
                attempts.iter().filter(|id| *id == envelope.id()).count()
            };
            if u32::try_from(attempt).unwrap_or(u32::MAX) <= self.fail_first {
                return Err(HandlerError::Transient(format!(
                    "simulated failure {attempt}"
                )));
            }
            let trace_id = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string();
            lock(&self.applied).push((envelope.clone(), trace_id));
            Ok(())
        })
    }
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_millis(10),
        multiplier: 2,
        max_delay: Duration::from_millis(100),
    }
}

/// A consumer name no other test uses, so tests sharing a broker never share a queue.
fn consumer(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A routing-key prefix no other test uses: tests share one exchange on a real broker, and
/// each must see only its own events.
fn unique_prefix() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// `envelope` under a routing key of this test's own: `<prefix>.<its type>`.
fn under(prefix: &str, mut envelope: Envelope) -> Envelope {
    envelope.0.event_type = format!("{prefix}.{}", envelope.0.event_type);
    envelope
}

fn order_created(prefix: &str, order_id: &str) -> Envelope {
    let event = OrderCreated {
        order_id: order_id.to_owned(),
        user_id: "user-1".to_owned(),
        ..OrderCreated::default()
    };
    under(prefix, Envelope::new("order-service", &event))
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting until {what}"))
}

async fn subscribe(
    bus: &impl EventBus,
    consumer: &str,
    keys: &[&str],
    retry: RetryPolicy,
    handler: Arc<impl EventHandler + 'static>,
) -> anyhow::Result<CancellationToken> {
    let stop = CancellationToken::new();
    let subscription = Subscription {
        consumer: consumer.to_owned(),
        routing_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        retry,
    };
    // The task ends with the token; tests cancel it (or drop the runtime) when done.
    drop(bus.subscribe(subscription, handler, stop.clone()).await?);
    Ok(stop)
}

pub(crate) async fn a_published_event_reaches_its_subscriber(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Arc::new(Recorder::default());
    let name = consumer("round-trip");
    let _stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    let event = order_created(&prefix, "order-1");
    bus.publish(&event).await?;
    until("the event is applied", || handler.applied_ids().len() == 1).await?;
    let (received, _) = lock(&handler.applied)[0].clone();
    assert_eq!(received, event);
    let payload: OrderCreated = received.payload()?;
    assert_eq!(payload.order_id, "order-1");
    Ok(())
}

pub(crate) async fn the_trace_context_survives_the_hop(bus: impl EventBus) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    static TELEMETRY: Once = Once::new();
    TELEMETRY.call_once(|| {
        // Kept for the whole test binary: spans need a tracer provider to get trace ids.
        std::mem::forget(shop_common::telemetry::init(
            "events-test",
            &TelemetryArgs::default(),
        ));
    });
    let handler = Arc::new(Recorder::default());
    let name = consumer("trace");
    let _stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;

    let span = tracing::info_span!("place_order");
    let producer_trace = span.context().span().span_context().trace_id().to_string();
    let event = {
        let _entered = span.enter();
        order_created(&prefix, "order-traced")
    };
    assert!(
        event.0.traceparent.contains(&producer_trace),
        "{}",
        event.0.traceparent
    );
    bus.publish(&event).await?;
    until("the event is applied", || handler.applied_ids().len() == 1).await?;
    let (_, consumer_trace) = lock(&handler.applied)[0].clone();
    assert_eq!(consumer_trace, producer_trace);
    Ok(())
}

pub(crate) async fn a_handler_that_keeps_failing_dead_letters_the_event_and_replay_brings_it_back(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    // Fails 3 times; with 3 attempts allowed the event is dead-lettered, and a replay (attempt 4
    // of the handler) succeeds.
    let handler = Recorder::failing(3);
    let name = consumer("dlq");
    let _stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    let event = order_created(&prefix, "order-dlq");
    bus.publish(&event).await?;

    let mut letters = Vec::new();
    for _ in 0..500 {
        letters = bus.dead_letters(&name).await?;
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [letter] = &letters[..] else {
        bail!("expected one dead letter, got {letters:?}");
    };
    assert_eq!(letter.envelope.id(), event.id());
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.reason, "simulated failure 3");
    assert_eq!(lock(&handler.attempts).len(), 3);
    assert!(handler.applied_ids().is_empty());
    let metrics = shop_common::metrics::render();
    let labels = format!(r#"{{consumer="{name}",event_type="{key}"}}"#);
    assert!(
        metrics.contains(&format!("events_retried_total{labels} 2")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("events_dead_lettered_total{labels} 1")),
        "{metrics}"
    );
    let sent = format!(r#"{{event_type="{key}"}} 1"#);
    assert!(
        metrics.contains(&format!("events_published_total{sent}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("events_confirmed_total{sent}")),
        "{metrics}"
    );

    bus.replay(&name, event.id()).await?;
    until("the replayed event is applied", || {
        handler.applied_ids().len() == 1
    })
    .await?;
    let metrics = shop_common::metrics::render();
    assert!(
        metrics.contains(&format!("events_consumed_total{labels} 1")),
        "{metrics}"
    );
    assert!(bus.dead_letters(&name).await?.is_empty());
    assert!(
        bus.replay(&name, event.id()).await.is_err(),
        "a replayed letter is gone"
    );
    Ok(())
}

pub(crate) async fn a_transient_failure_is_retried_until_it_succeeds(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Recorder::failing(2);
    let name = consumer("retry");
    let _stop = subscribe(&bus, &name, &[&key], fast_retries(5), handler.clone()).await?;
    bus.publish(&order_created(&prefix, "order-retry")).await?;
    until("the event is applied", || handler.applied_ids().len() == 1).await?;
    assert_eq!(lock(&handler.attempts).len(), 3);
    assert!(bus.dead_letters(&name).await?.is_empty());
    Ok(())
}

pub(crate) async fn events_wait_while_their_consumer_is_stopped(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Arc::new(Recorder::default());
    let name = consumer("stopped");
    let stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let events: Vec<Envelope> = (0..20)
        .map(|i| order_created(&prefix, &format!("order-{i}")))
        .collect();
    for event in &events {
        bus.publish(event).await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        handler.applied_ids().is_empty(),
        "nothing is consumed while stopped"
    );

    let _stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    until("every waiting event is applied", || {
        handler.applied_ids().len() == events.len()
    })
    .await?;
    let mut applied = handler.applied_ids();
    let mut expected: Vec<String> = events.iter().map(|e| e.id().to_owned()).collect();
    applied.sort();
    expected.sort();
    assert_eq!(applied, expected);
    Ok(())
}

pub(crate) async fn events_published_before_their_consumer_first_starts_wait_once_declared(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let name = consumer("declared");
    let declared = Subscription {
        consumer: name.clone(),
        routing_keys: vec![key.clone()],
        retry: fast_retries(3),
    };
    bus.declare(std::slice::from_ref(&declared)).await?;
    bus.declare(std::slice::from_ref(&declared)).await?;
    let events: Vec<Envelope> = (0..5)
        .map(|i| order_created(&prefix, &format!("early-{i}")))
        .collect();
    for event in &events {
        bus.publish(event).await?;
    }
    let handler = Arc::new(Recorder::default());
    let _stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    until("the early events are applied", || {
        handler.applied_ids().len() == events.len()
    })
    .await?;
    Ok(())
}

pub(crate) async fn a_consumer_gets_only_the_keys_it_bound(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let pattern = format!("{prefix}.payment.*");
    let handler = Arc::new(Recorder::default());
    let name = consumer("keys");
    let _stop = subscribe(&bus, &name, &[&pattern], fast_retries(3), handler.clone()).await?;
    bus.publish(&order_created(&prefix, "order-unbound"))
        .await?;
    let succeeded = shop_proto::events::v1::PaymentSucceeded {
        payment_id: "pay-1".to_owned(),
        ..Default::default()
    };
    let paid = under(&prefix, Envelope::new("payment-service", &succeeded));
    bus.publish(&paid).await?;
    until("the bound event is applied", || {
        !handler.applied_ids().is_empty()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handler.applied_ids(), vec![paid.id().to_owned()]);
    Ok(())
}

/// Only for a bus that keeps its queues in a database: `open` gives a new bus on the same one,
/// as a restarted process would have.
pub(crate) async fn a_restart_delivers_what_was_not_handled_and_keeps_dead_letters<B, F>(
    open: impl Fn() -> F,
) -> anyhow::Result<()>
where
    B: EventBus,
    F: std::future::Future<Output = anyhow::Result<B>>,
{
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let (waiting, failing) = (consumer("waiting"), consumer("failing"));
    let bus = open().await?;
    let handled = Arc::new(Recorder::default());
    let stop = subscribe(&bus, &waiting, &[&key], fast_retries(3), handled.clone()).await?;
    let doomed = Recorder::failing(u32::MAX);
    let stop_doomed = subscribe(&bus, &failing, &[&key], fast_retries(1), doomed).await?;
    let first = order_created(&prefix, "order-handled");
    bus.publish(&first).await?;
    until("the first event is handled", || {
        handled.applied_ids().len() == 1
    })
    .await?;
    let mut dead = 0;
    for _ in 0..500 {
        dead = bus.dead_letters(&failing).await?.len();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead, 1, "the failing consumer dead-letters the first event");
    stop.cancel();
    stop_doomed.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = order_created(&prefix, "order-waiting");
    bus.publish(&second).await?;
    drop(bus);

    let bus = open().await?;
    let after = Arc::new(Recorder::default());
    let _stop = subscribe(&bus, &waiting, &[&key], fast_retries(3), after.clone()).await?;
    until("the waiting event is delivered after the restart", || {
        after.applied_ids().len() == 1
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        after.applied_ids(),
        [second.id().to_owned()],
        "only what was not handled comes again"
    );
    let letters = bus.dead_letters(&failing).await?;
    let ids: Vec<&str> = letters.iter().map(|l| l.envelope.id()).collect();
    assert!(
        ids.contains(&first.id()),
        "the dead letter survived: {ids:?}"
    );
    let fixed = Arc::new(Recorder::default());
    let _fixed = subscribe(&bus, &failing, &[&key], fast_retries(3), fixed.clone()).await?;
    bus.replay(&failing, first.id()).await?;
    until("the replayed dead letter is handled", || {
        fixed.applied_ids().contains(&first.id().to_owned())
    })
    .await?;
    Ok(())
}

/// Takes `hold` over each event and records which events of which order ran at once.
struct Slow {
    hold: Duration,
    /// The order ids whose events are being handled now.
    running: Mutex<Vec<String>>,
    most_at_once: Mutex<usize>,
    /// An order id seen twice in `running`: two events of one aggregate at once.
    overlapped: Mutex<bool>,
    /// (order id, event id) in the order handling began.
    began: Mutex<Vec<(String, String)>>,
}

impl Slow {
    fn new(hold: Duration) -> Arc<Self> {
        Arc::new(Self {
            hold,
            running: Mutex::default(),
            most_at_once: Mutex::default(),
            overlapped: Mutex::default(),
            began: Mutex::default(),
        })
    }
}

impl EventHandler for Slow {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let order: OrderCreated = envelope.payload()?;
            {
                let mut running = lock(&self.running);
                if running.contains(&order.order_id) {
                    *lock(&self.overlapped) = true;
                }
                running.push(order.order_id.clone());
                let mut most = lock(&self.most_at_once);
                *most = (*most).max(running.len());
                lock(&self.began).push((order.order_id.clone(), envelope.id().to_owned()));
            }
            tokio::time::sleep(self.hold).await;
            let mut running = lock(&self.running);
            if let Some(at) = running.iter().position(|id| *id == order.order_id) {
                running.remove(at);
            }
            Ok(())
        })
    }
}

/// One slow event does not hold up the events of other aggregates behind it.
pub(crate) async fn events_of_different_aggregates_are_handled_at_once(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Slow::new(Duration::from_millis(300));
    let name = consumer("at-once");
    let stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    for n in 0..8 {
        bus.publish(&order_created(&prefix, &format!("order-{n}")))
            .await?;
    }
    until("every event began", || lock(&handler.began).len() == 8).await?;
    until("every event ended", || lock(&handler.running).is_empty()).await?;
    let most = *lock(&handler.most_at_once);
    assert!(most >= 2, "at most {most} event(s) were handled at once");
    stop.cancel();
    Ok(())
}

/// The events of one aggregate are handled one after the other, in the order they were
/// published, while other aggregates' events go on beside them.
pub(crate) async fn the_events_of_one_aggregate_are_handled_one_at_a_time_in_order(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Slow::new(Duration::from_millis(30));
    let name = consumer("in-order");
    let stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    let mut published: Vec<(String, String)> = Vec::new();
    for _ in 0..6 {
        for order in ["order-a", "order-b"] {
            let event = order_created(&prefix, order);
            published.push((order.to_owned(), event.id().to_owned()));
            bus.publish(&event).await?;
        }
    }
    until("every event began", || lock(&handler.began).len() == 12).await?;
    until("every event ended", || lock(&handler.running).is_empty()).await?;
    assert!(
        !*lock(&handler.overlapped),
        "two events of one order ran at once"
    );
    let began = lock(&handler.began).clone();
    for order in ["order-a", "order-b"] {
        let of = |list: &[(String, String)]| -> Vec<String> {
            list.iter()
                .filter(|(o, _)| o == order)
                .map(|(_, id)| id.clone())
                .collect()
        };
        assert_eq!(of(&began), of(&published), "{order} out of order");
    }
    assert!(
        *lock(&handler.most_at_once) >= 2,
        "the two orders' events ran beside each other"
    );
    stop.cancel();
    Ok(())
}

/// The outbox relay publishes a batch at a time (on RabbitMQ: every message sent before any
/// confirm is awaited): all of it must be confirmed, and an order's events must arrive in the
/// order of the batch.
pub(crate) async fn a_batch_is_confirmed_whole_and_arrives_in_its_order(
    bus: impl EventBus,
) -> anyhow::Result<()> {
    let prefix = unique_prefix();
    let key = format!("{prefix}.order.created");
    let handler = Arc::new(Recorder::default());
    let name = consumer("batch");
    let stop = subscribe(&bus, &name, &[&key], fast_retries(3), handler.clone()).await?;
    let batch: Vec<Envelope> = (0..150)
        .map(|_| order_created(&prefix, "order-1"))
        .collect();
    let envelopes: Vec<&Envelope> = batch.iter().collect();
    let published = bus.publish_in_order(&envelopes).await;
    assert!(published.error.is_none(), "{:?}", published.error);
    assert_eq!(published.confirmed, batch.len());
    until("the whole batch is applied", || {
        handler.applied_ids().len() == batch.len()
    })
    .await?;
    let sent: Vec<&str> = batch.iter().map(Envelope::id).collect();
    assert_eq!(
        handler.applied_ids(),
        sent,
        "applied out of the batch's order"
    );
    stop.cancel();
    Ok(())
}
