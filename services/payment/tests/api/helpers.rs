//! One payment-service per test: SQLite in a temporary directory, an in-process bus that the
//! test publishes orders on and reads the payment events from, and a provider it switches.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use payment_service::{ChargeError, Config, PaymentProvider};
use shop_common::{
    BoxFuture,
    events::{
        Envelope, EventBus, EventHandler, EventPublisher as _, HandlerError, InProcessBus,
        Subscription,
    },
    service::Start,
};
use shop_proto::{
    DomainEvent as _,
    common::v1::Money,
    events::v1::{OrderCreated, OrderLine, PaymentFailed, PaymentSucceeded},
};
use tokio::{
    net::TcpListener,
    sync::{Mutex, mpsc},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A provider that is down (every charge hangs, so the caller's timeout fires) until the test
/// brings it up (every charge approves).
#[derive(Debug, Default)]
pub(crate) struct Switch {
    up: AtomicBool,
    calls: AtomicU32,
}

impl Switch {
    pub(crate) fn bring_up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Charges the provider was asked for, answered or not.
    pub(crate) fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl PaymentProvider for Switch {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        _amount_minor: i64,
        _currency: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<String, ChargeError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.up.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(format!("ch_{key}"))
        })
    }

    fn refund<'a>(&'a self, _reference: &'a str) -> BoxFuture<'a, Result<(), ChargeError>> {
        Box::pin(async { Ok(()) })
    }
}

/// What the saga hears from payment-service: `payment.succeeded` and `payment.failed`.
struct Outcomes(mpsc::UnboundedSender<Envelope>);

impl EventHandler for Outcomes {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        let _ = self.0.send(envelope.clone());
        Box::pin(async { Ok(()) })
    }
}

pub(crate) struct App {
    pub(crate) channel: Channel,
    bus: Arc<InProcessBus>,
    outcomes: Mutex<mpsc::UnboundedReceiver<Envelope>>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    /// The service's SQLite database, for what a test reads or leaves there itself.
    pub(crate) database: String,
    _dir: tempfile::TempDir,
}

/// Starts payment-service with `provider` and the settings `tune` makes, and waits until it is
/// SERVING.
pub(crate) async fn spawn_app(
    provider: Arc<dyn PaymentProvider>,
    tune: impl FnOnce(&mut Config),
) -> anyhow::Result<App> {
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let database = format!("sqlite://{}", dir.path().join("payment.db").display());
    // No user-service: nothing here needs a token, and its key fetches may fail.
    let mut config = Config::local(addr, database.clone(), "http://127.0.0.1:1".to_owned());
    tune(&mut config);
    let bus = Arc::new(InProcessBus::new());
    let (sender, outcomes) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let observer = bus
        .subscribe(
            Subscription::new(
                "payment-test-observer",
                &[PaymentSucceeded::TYPE, PaymentFailed::TYPE],
            ),
            Arc::new(Outcomes(sender)),
            stop.clone(),
        )
        .await?;
    let start = Start::new(listener, stop.clone()).with_bus(bus.clone());
    let served = payment_service::serve_with(config, provider, start);
    let task = tokio::spawn(async move {
        served.await?;
        observer.await?;
        Ok(())
    });
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let app = App {
        channel,
        bus,
        outcomes: Mutex::new(outcomes),
        stop,
        task,
        database,
        _dir: dir,
    };
    app.await_health("", ServingStatus::Serving, Duration::from_secs(30))
        .await?;
    Ok(app)
}

impl App {
    /// Publishes `order.created` for a new order of 1 000 minor units; returns the order id.
    pub(crate) async fn place_order(&self) -> anyhow::Result<String> {
        let order_id = uuid::Uuid::new_v4().to_string();
        self.announce_order(&order_id).await?;
        Ok(order_id)
    }

    /// Publishes `order.created` for order `order_id` of 1 000 minor units.
    pub(crate) async fn announce_order(&self, order_id: &str) -> anyhow::Result<()> {
        let price = Money {
            amount_minor: 1_000,
            currency: "EUR".to_owned(),
        };
        let order = OrderCreated {
            order_id: order_id.to_owned(),
            user_id: uuid::Uuid::new_v4().to_string(),
            lines: vec![OrderLine {
                product_id: uuid::Uuid::new_v4().to_string(),
                sku: "SKU-1".to_owned(),
                quantity: 1,
                unit_price: Some(price.clone()),
            }],
            total: Some(price),
            payment_method_token: "tok_visa".to_owned(),
        };
        self.bus
            .publish(&Envelope::new("order-service", &order))
            .await?;
        Ok(())
    }

    /// The next payment outcome announced, as (event type, order id, failure reason).
    pub(crate) async fn next_outcome(&self) -> anyhow::Result<(String, String, String)> {
        let envelope =
            tokio::time::timeout(Duration::from_secs(20), self.outcomes.lock().await.recv())
                .await
                .context("no payment outcome within 20 s")?
                .context("the bus stopped")?;
        Ok(match envelope.event_type() {
            PaymentFailed::TYPE => {
                let failed: PaymentFailed = envelope.payload()?;
                (
                    PaymentFailed::TYPE.to_owned(),
                    failed.order_id,
                    failed.reason,
                )
            }
            _ => {
                let succeeded: PaymentSucceeded = envelope.payload()?;
                (
                    PaymentSucceeded::TYPE.to_owned(),
                    succeeded.order_id,
                    String::new(),
                )
            }
        })
    }

    pub(crate) async fn health(&self, service: &str) -> anyhow::Result<ServingStatus> {
        let response = HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    /// Polls health of `service` ("" is the whole server) until it reports `want`.
    pub(crate) async fn await_health(
        &self,
        service: &str,
        want: ServingStatus,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.health(service).await;
            if matches!(&status, Ok(s) if *s == want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("health of {service:?} stayed {status:?}, wanted {want:?} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// The value of the sample of `name` whose labels include every one of `labels`, as a
/// Prometheus scrape of this process would read it.
pub(crate) fn metric(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    shop_common::metrics::render().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (pairs, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|(key, value)| pairs.contains(&format!("{key}=\"{value}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// Polls `metric` until it reads `want`.
pub(crate) async fn await_metric(
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let value = metric(name, labels);
        if value == Some(want) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name}{labels:?} stayed {value:?}, wanted {want} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
