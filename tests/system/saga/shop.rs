//! The four services of one test, in this process on ephemeral ports, on one backend: the
//! embedded defaults (SQLite files, in-process bus) or PostgreSQL + RabbitMQ (a database per
//! service and a RabbitMQ vhost per test, so tests running side by side never see each other's
//! events). payment-service can be stopped and started again on its own.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use shop_common::{
    config::Secret,
    events::{EventBus, InProcessBus, RabbitBus},
    service::Start,
    storage::ScratchDatabase,
};
use shop_proto::{
    common::v1::Money,
    order::v1::{self as order_pb, order_service_client::OrderServiceClient},
    payment::v1::{self as payment_pb, payment_service_client::PaymentServiceClient},
    product::v1::{self as product_pb, product_service_client::ProductServiceClient},
    user::v1::{self as user_pb, user_service_client::UserServiceClient},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

use crate::helpers::{channel, wait_for_health};
use tonic_health::pb::health_check_response::ServingStatus;

/// Services subscribe to their events before they serve: serving means no event is missed.
async fn serving(addr: SocketAddr) -> anyhow::Result<Channel> {
    let channel = channel(addr).await?;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await?;
    Ok(channel)
}

const ADMIN_EMAIL: &str = "admin@saga.test";
const ADMIN_PASSWORD: &str = "admin password for saga tests";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite files and the in-process bus: what `shop up` runs with no settings.
    Embedded,
    /// PostgreSQL (`DATABASE_URL`) and RabbitMQ (`AMQP_URL`).
    PostgresRabbit,
}

/// A running payment-service and how to stop it.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

pub(crate) struct Shop {
    pub(crate) simulator: Arc<payment_service::Simulator>,
    pub(crate) admin: String,
    pub(crate) products: ProductServiceClient<Channel>,
    pub(crate) orders: OrderServiceClient<Channel>,
    pub(crate) order_channel: Channel,
    users: UserServiceClient<Channel>,
    user_addr: SocketAddr,
    payment_addr: SocketAddr,
    payment_database: String,
    payment: Option<Running>,
    bus: Arc<dyn EventBus>,
    vhost: Option<String>,
    /// This test's databases on the PostgreSQL server, dropped after [`Shop`]'s own drop.
    _pg_databases: Vec<ScratchDatabase>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// The RabbitMQ vhost of one test, with the guest user allowed in it.
async fn add_vhost(name: &str) -> anyhow::Result<()> {
    rabbitmqctl(&["add_vhost", name]).await?;
    rabbitmqctl(&[
        "set_permissions",
        "--vhost",
        name,
        "guest",
        ".*",
        ".*",
        ".*",
    ])
    .await
}

pub(crate) async fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .context("rabbitmqctl must be installed to run the saga tests on RabbitMQ")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn signing_key() -> anyhow::Result<String> {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let key = user_service::SigningKeys::generate_pem()?;
    Ok(KEY.get_or_init(|| key).clone())
}

fn spawn<E: std::error::Error + Send + Sync + 'static>(
    serve: impl Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move { Ok(serve.await?) })
}

impl Shop {
    /// `None` (skipped, said so) when the backend is not configured here.
    pub(crate) async fn start(backend: Backend) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut pg_databases = Vec::new();
        let (databases, bus, vhost): (Vec<String>, Arc<dyn EventBus>, _) = match backend {
            Backend::Embedded => {
                let file = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
                let names = ["user.db", "product.db", "order.db", "payment.db"];
                (
                    names.map(file).to_vec(),
                    Arc::new(InProcessBus::new()),
                    None,
                )
            }
            Backend::PostgresRabbit => {
                let (Ok(server), Ok(amqp)) =
                    (std::env::var("DATABASE_URL"), std::env::var("AMQP_URL"))
                else {
                    eprintln!(
                        "skipped: DATABASE_URL and AMQP_URL are not both set, so the saga is not tested on PostgreSQL + RabbitMQ"
                    );
                    return Ok(None);
                };
                let mut databases = Vec::new();
                for service in ["user", "product", "order", "payment"] {
                    let name = format!("test_saga_{run}_{service}");
                    let (url, scratch) = ScratchDatabase::create(&server, &name).await?;
                    databases.push(url);
                    pg_databases.push(scratch);
                }
                let vhost = format!("test-saga-{run}");
                add_vhost(&vhost).await?;
                let mut url = url::Url::parse(&amqp)?;
                url.set_path(&format!("/{vhost}"));
                let bus: Arc<dyn EventBus> = Arc::new(RabbitBus::connect(url.as_str()).await?);
                (databases, bus, Some(vhost))
            }
        };
        let [user_db, product_db, order_db, payment_db] = <[String; 4]>::try_from(databases)
            .map_err(|_| anyhow::anyhow!("one database per service"))?;
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let secret = Secret::new(format!("order-secret-{run}"));

        let user_listener = TcpListener::bind("127.0.0.1:0").await?;
        let user_addr = user_listener.local_addr()?;
        let user_url = format!("http://{user_addr}");
        let mut users = user_service::Config::local(user_addr, user_db);
        users.signing_key = Some(signing_key()?);
        users.service_clients = Some(format!("order-service:{}", secret.expose()));
        users.seed_users = vec![user_service::SeedUser {
            email: ADMIN_EMAIL.to_owned(),
            password: Secret::new(ADMIN_PASSWORD),
            display_name: "Admin".to_owned(),
            admin: true,
        }];
        let start = |listener| Start::new(listener, shutdown.clone()).with_bus(bus.clone());
        tasks.push(spawn(user_service::serve(users, start(user_listener))));

        let product_listener = TcpListener::bind("127.0.0.1:0").await?;
        let product_addr = product_listener.local_addr()?;
        let products = product_service::Config::local(product_addr, product_db, user_url.clone());
        tasks.push(spawn(product_service::serve(
            products,
            start(product_listener),
        )));

        let order_listener = TcpListener::bind("127.0.0.1:0").await?;
        let order_addr = order_listener.local_addr()?;
        let orders = order_service::Config::local(
            order_addr,
            order_db,
            user_url,
            format!("http://{product_addr}"),
            secret,
        );
        tasks.push(spawn(order_service::serve(orders, start(order_listener))));

        let order_channel = serving(order_addr).await?;
        let mut users = UserServiceClient::new(channel(user_addr).await?);
        let admin = login(&mut users, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
        let mut shop = Self {
            simulator: Arc::new(payment_service::Simulator::new()),
            admin,
            products: ProductServiceClient::new(serving(product_addr).await?),
            orders: OrderServiceClient::new(order_channel.clone()),
            order_channel,
            users,
            user_addr,
            payment_addr: user_addr,
            payment_database: payment_db,
            payment: None,
            bus,
            vhost,
            _pg_databases: pg_databases,
            shutdown,
            tasks,
            _dir: dir,
        };
        shop.start_payments().await?;
        Ok(Some(shop))
    }

    /// Starts payment-service (again): its queue kept the events that arrived meanwhile.
    pub(crate) async fn start_payments(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        self.payment_addr = listener.local_addr()?;
        let mut config = payment_service::Config::local(
            self.payment_addr,
            self.payment_database.clone(),
            format!("http://{}", self.user_addr),
        );
        // Short, so tok_timeout and tok_flaky play out in a test's time.
        config.provider_timeout = Duration::from_millis(300);
        config.retry_delay = Duration::from_millis(20);
        let stop = self.shutdown.child_token();
        let task = spawn(payment_service::serve_with(
            config,
            self.simulator.clone(),
            Start::new(listener, stop.clone()).with_bus(self.bus.clone()),
        ));
        self.payment = Some(Running { stop, task });
        serving(self.payment_addr).await?;
        Ok(())
    }

    /// Stops payment-service and waits until it has.
    pub(crate) async fn stop_payments(&mut self) -> anyhow::Result<()> {
        if let Some(running) = self.payment.take() {
            running.stop.cancel();
            running.task.await??;
        }
        Ok(())
    }

    pub(crate) fn users(&self) -> UserServiceClient<Channel> {
        self.users.clone()
    }

    pub(crate) async fn payments(&self) -> anyhow::Result<PaymentServiceClient<Channel>> {
        Ok(PaymentServiceClient::new(channel(self.payment_addr).await?))
    }

    /// Drops every connection of this test's vhost, as a broker failover would.
    pub(crate) async fn drop_broker_connections(&self) -> anyhow::Result<()> {
        let Some(vhost) = &self.vhost else {
            bail!("the embedded backend has no broker");
        };
        rabbitmqctl(&["close_all_connections", "--vhost", vhost, "saga fault test"]).await
    }

    /// Registers a customer and returns their access token.
    pub(crate) async fn customer(&mut self) -> anyhow::Result<String> {
        let email = format!("{}@saga.test", uuid::Uuid::new_v4().simple());
        let password = "customer password for saga tests";
        self.users
            .register(user_pb::RegisterRequest {
                email: email.clone(),
                password: password.to_owned(),
                display_name: "Customer".to_owned(),
            })
            .await?;
        login(&mut self.users, &email, password).await
    }

    /// A new product (as the admin) with `stock` units at `price_minor` EUR.
    pub(crate) async fn product(&mut self, stock: i32, price_minor: i64) -> anyhow::Result<String> {
        let sku = format!("SAGA-{}", uuid::Uuid::new_v4().simple());
        let request = product_pb::CreateProductRequest {
            product: Some(product_pb::Product {
                sku,
                name: "Saga test product".to_owned(),
                category: "tests".to_owned(),
                price: Some(Money {
                    amount_minor: price_minor,
                    currency: "EUR".to_owned(),
                }),
                stock,
                ..Default::default()
            }),
        };
        let created = self
            .products
            .create_product(authed(request, &self.admin)?)
            .await?
            .into_inner();
        Ok(created.product.context("no product")?.product_id)
    }

    pub(crate) async fn stock(&self, product_id: &str) -> anyhow::Result<i32> {
        let product = self
            .products
            .clone()
            .get_product(product_pb::GetProductRequest {
                product_id: product_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(product.product.context("no product")?.stock)
    }

    /// Waits until the product's stock is `expected` (releases arrive by event).
    pub(crate) async fn await_stock(
        &self,
        product_id: &str,
        expected: i32,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let stock = self.stock(product_id).await?;
            if stock == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("stock of {product_id} is {stock} after {within:?}, not {expected}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn order(
        &self,
        token: &str,
        order_id: &str,
    ) -> anyhow::Result<order_pb::Order> {
        let request = order_pb::GetOrderRequest {
            order_id: order_id.to_owned(),
        };
        let order = self
            .orders
            .clone()
            .get_order(authed(request, token)?)
            .await?;
        order.into_inner().order.context("no order")
    }

    /// The order's payments, as its owner sees them.
    pub(crate) async fn payments_of(
        &self,
        token: &str,
        order_id: &str,
    ) -> anyhow::Result<Vec<payment_pb::Payment>> {
        let request = payment_pb::ListPaymentsRequest {
            order_id: order_id.to_owned(),
            ..Default::default()
        };
        let listed = self
            .payments()
            .await?
            .list_payments(authed(request, token)?)
            .await?;
        Ok(listed.into_inner().payments)
    }

    /// Waits until the order reaches `status`, failing with the status it is stuck in.
    pub(crate) async fn await_status(
        &self,
        token: &str,
        order_id: &str,
        status: order_pb::OrderStatus,
        within: Duration,
    ) -> anyhow::Result<order_pb::Order> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let order = self.order(token, order_id).await?;
            if order.status() == status {
                return Ok(order);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "order {order_id} is {:?} after {within:?}, not {status:?}",
                    order.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn place_request(
        product_id: &str,
        quantity: i32,
        card: &str,
        key: &str,
    ) -> order_pb::PlaceOrderRequest {
        order_pb::PlaceOrderRequest {
            items: vec![order_pb::PlaceOrderItem {
                product_id: product_id.to_owned(),
                quantity,
            }],
            shipping_address: Some(address()),
            payment_method_token: card.to_owned(),
            idempotency_key: key.to_owned(),
        }
    }
}

pub(crate) fn address() -> order_pb::Address {
    order_pb::Address {
        recipient: "Ada Lovelace".to_owned(),
        line1: "1 Analytical Row".to_owned(),
        line2: String::new(),
        city: "London".to_owned(),
        postal_code: "N1 7AA".to_owned(),
        country: "GB".to_owned(),
    }
}

pub(crate) fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn login(
    users: &mut UserServiceClient<Channel>,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = users
        .login(user_pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    Ok(response.tokens.context("no tokens")?.access_token)
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
        if let Some(vhost) = self.vhost.take() {
            // Best effort: a leftover vhost is only untidy.
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["delete_vhost", &vhost])
                .output();
        }
        // The databases (`_pg_databases`) are dropped after this, the services' tasks aborted.
    }
}
