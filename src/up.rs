//! `shop up`: every service and the gateway in one process, on fixed local ports by default or
//! on ephemeral ones (port 0) for tests.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use shop_common::{
    config::{ConfigError, LimitArgs, Secret, ShutdownArgs, bind},
    events::{BusError, EventBus, InProcessBus, RabbitBus, Subscription},
    metrics,
    service::Start,
    storage::{Db, StorageError, database_on},
    telemetry::Telemetry,
};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Dispatch, instrument::WithSubscriber as _};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Interface every server binds to.
    #[arg(long, env = "SHOP_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// gRPC port of user-service (0 picks a free one).
    #[arg(long, env = "SHOP_USER_PORT", default_value_t = 50051)]
    pub user_port: u16,
    /// gRPC port of product-service.
    #[arg(long, env = "SHOP_PRODUCT_PORT", default_value_t = 50052)]
    pub product_port: u16,
    /// gRPC port of order-service.
    #[arg(long, env = "SHOP_ORDER_PORT", default_value_t = 50053)]
    pub order_port: u16,
    /// gRPC port of payment-service.
    #[arg(long, env = "SHOP_PAYMENT_PORT", default_value_t = 50054)]
    pub payment_port: u16,
    /// REST port of the gateway.
    #[arg(long, env = "SHOP_GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,
    /// Port of the Prometheus `/metrics` endpoint, shared by every service of the process.
    #[arg(long, env = "SHOP_METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Folder of the SQLite databases when no `--database-url` is given.
    #[arg(long, env = "SHOP_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// A PostgreSQL server URL: each service gets its own database on it (`shop_user`, …),
    /// created if missing. Unset: SQLite files under `--data-dir`.
    #[arg(long, env = "SHOP_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// MongoDB URL for the product catalogue (`mongodb://host/shop_product`). Unset: the
    /// catalogue uses the SQL database like the other services.
    #[arg(long, env = "SHOP_MONGODB_URL", hide_env_values = true)]
    pub mongodb_url: Option<String>,
    /// A Kong declarative file for the gateway instead of the built-in `kong/kong.yaml`.
    #[arg(long, env = "SHOP_KONG_CONFIG")]
    pub kong_config: Option<PathBuf>,
    /// How long a checkout may stay without its order before the stock it reserved is given
    /// back (a crash between reserving and saving the order leaves such a checkout).
    #[arg(long, env = "SHOP_ABANDONED_CHECKOUT_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub abandoned_checkout_after: std::time::Duration,
    /// PEM RSA private key that signs tokens. Unset: `signing-key.pem` in `--data-dir`,
    /// generated on the first start (mode 0600) and kept, so restarts keep sessions valid.
    #[arg(long, env = "SHOP_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// RabbitMQ URL for the events. Unset: an in-process bus with the same guarantees.
    #[arg(long, env = "SHOP_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// The gateway's requests in flight at once; past it, 503 with `Retry-After`.
    #[arg(long, env = "SHOP_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub gateway_max_in_flight: u32,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

impl UpArgs {
    /// Every server on an ephemeral loopback port with its SQLite files in `data_dir`, as the
    /// tests run them.
    pub fn ephemeral(data_dir: &Path) -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            user_port: 0,
            product_port: 0,
            order_port: 0,
            payment_port: 0,
            gateway_port: 0,
            metrics_port: 0,
            data_dir: data_dir.to_owned(),
            database_url: None,
            mongodb_url: None,
            kong_config: None,
            signing_key_file: None,
            abandoned_checkout_after: std::time::Duration::from_secs(600),
            amqp_url: None,
            gateway_max_in_flight: 1024,
            limits: LimitArgs::default(),
            shutdown: ShutdownArgs::default(),
        }
    }
}

/// Where each part of a running system listens.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub user: SocketAddr,
    pub product: SocketAddr,
    pub order: SocketAddr,
    pub payment: SocketAddr,
    pub gateway: SocketAddr,
    pub metrics: SocketAddr,
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            (user_service::NAME, "grpc", self.user.to_string()),
            (product_service::NAME, "grpc", self.product.to_string()),
            (order_service::NAME, "grpc", self.order.to_string()),
            (payment_service::NAME, "grpc", self.payment.to_string()),
            (gateway::NAME, "http", format!("http://{}", self.gateway)),
            (
                "metrics",
                "http",
                format!("http://{}/metrics", self.metrics),
            ),
        ];
        for (name, protocol, address) in rows {
            writeln!(f, "  {name:<16} {protocol:<5} {address}")?;
        }
        Ok(())
    }
}

/// Accounts `shop up` creates for local use, printed at start-up.
pub const DEMO_ACCOUNTS: [(&str, &str, &str); 2] = [
    ("admin", "admin@shop.local", "admin-password-local"),
    ("customer", "customer@shop.local", "customer-password-local"),
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
}

/// A part of the system that stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{part} failed: {message}")]
pub struct PartFailed {
    pub part: &'static str,
    pub message: String,
}

/// The running system. Dropping it does not stop it: cancel the token given to [`start`] and
/// [`System::wait`].
pub struct System {
    pub endpoints: Endpoints,
    parts: JoinSet<Result<(), PartFailed>>,
    shutdown: CancellationToken,
}

/// Binds every listener first, so a taken port fails before anything runs, then starts each part.
/// With `telemetry`, each service logs and traces under its own `service.name`; without (tests
/// that need no traces), everything runs in the process's default dispatch.
pub async fn start(
    args: &UpArgs,
    telemetry: Option<&Telemetry>,
    shutdown: CancellationToken,
) -> Result<System, StartError> {
    let listen = |port| SocketAddr::new(args.bind, port);
    let user = bind("--user-port", listen(args.user_port)).await?;
    let product = bind("--product-port", listen(args.product_port)).await?;
    let order = bind("--order-port", listen(args.order_port)).await?;
    let payment = bind("--payment-port", listen(args.payment_port)).await?;
    let gateway = bind("--gateway-port", listen(args.gateway_port)).await?;
    let metrics = bind("--metrics-port", listen(args.metrics_port)).await?;
    let endpoints = Endpoints {
        user: local_addr(&user, "--user-port")?,
        product: local_addr(&product, "--product-port")?,
        order: local_addr(&order, "--order-port")?,
        payment: local_addr(&payment, "--payment-port")?,
        gateway: local_addr(&gateway, "--gateway-port")?,
        metrics: local_addr(&metrics, "--metrics-port")?,
    };

    let bus: Arc<dyn EventBus> = match &args.amqp_url {
        Some(url) => Arc::new(RabbitBus::connect(url).await?),
        // Its queues are kept in a journal, so a crash loses no event (RabbitMQ keeps them
        // itself).
        None => {
            let journal = Db::connect("--data-dir", &database_url(args, "bus").await?).await?;
            Arc::new(InProcessBus::durable(journal).await?)
        }
    };

    // Every consumer's queue exists before any service publishes, so no event of this run is
    // unroutable because its consumer had not started yet.
    bus.declare(&[
        Subscription::new(product_service::NAME, product_service::CONSUMES),
        Subscription::new(order_service::NAME, order_service::CONSUMES),
        Subscription::new(payment_service::NAME, payment_service::CONSUMES),
    ])
    .await?;

    let mut parts = JoinSet::new();
    let token = || shutdown.clone();
    let dispatch = |name: &str| match telemetry {
        Some(telemetry) => telemetry.dispatch(name),
        None => Ok(tracing::dispatcher::get_default(Dispatch::clone)),
    };
    let start = |listener| Start::new(listener, shutdown.clone()).with_bus(bus.clone());
    let timing = &args.shutdown;
    let mut user_config =
        user_service::Config::local(endpoints.user, database_url(args, "user").await?);
    user_config.shutdown = timing.clone();
    user_config.limits = args.limits.clone();
    user_config.allow_generated_key = false;
    user_config.signing_key_file = Some(match &args.signing_key_file {
        Some(path) => path.clone(),
        None => crate::signing_key::in_data_dir(&args.data_dir)?,
    });
    user_config.seed_users = DEMO_ACCOUNTS
        .iter()
        .map(|(role, email, password)| user_service::SeedUser {
            email: (*email).to_owned(),
            password: Secret::new(*password),
            display_name: format!("Demo {role}"),
            admin: *role == "admin",
        })
        .collect();
    // order-service's credentials at user-service, made up for this run.
    let order_secret = Secret::new(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ));
    user_config.service_clients = Some(format!("order-service:{}", order_secret.expose()));
    parts.spawn(part(
        dispatch(user_service::NAME)?,
        user_service::NAME,
        user_service::serve(user_config, start(user)),
    ));
    let product_database = match &args.mongodb_url {
        Some(url) => url.clone(),
        None => database_url(args, "product").await?,
    };
    let mut product_config = product_service::Config::local(
        endpoints.product,
        product_database,
        format!("http://{}", endpoints.user),
    );
    product_config.shutdown = timing.clone();
    product_config.limits = args.limits.clone();
    product_config.seed_demo_catalogue = true;
    parts.spawn(part(
        dispatch(product_service::NAME)?,
        product_service::NAME,
        product_service::serve(product_config, start(product)),
    ));
    let mut order_config = order_service::Config::local(
        endpoints.order,
        database_url(args, "order").await?,
        format!("http://{}", endpoints.user),
        format!("http://{}", endpoints.product),
        order_secret,
    );
    order_config.shutdown = timing.clone();
    order_config.limits = args.limits.clone();
    order_config.abandoned_checkout_after = args.abandoned_checkout_after;
    parts.spawn(part(
        dispatch(order_service::NAME)?,
        order_service::NAME,
        order_service::serve(order_config, start(order)),
    ));
    let mut payment_config = payment_service::Config::local(
        endpoints.payment,
        database_url(args, "payment").await?,
        format!("http://{}", endpoints.user),
    );
    payment_config.shutdown = timing.clone();
    payment_config.limits = args.limits.clone();
    payment_config.simulator_ledger = Some(args.data_dir.join("simulator.ledger"));
    parts.spawn(part(
        dispatch(payment_service::NAME)?,
        payment_service::NAME,
        payment_service::serve(payment_config, start(payment)),
    ));
    let mut gateway_config = gateway::Config::local(
        endpoints.gateway,
        &[
            ("user-service", format!("http://{}", endpoints.user)),
            ("product-service", format!("http://{}", endpoints.product)),
            ("order-service", format!("http://{}", endpoints.order)),
            ("payment-service", format!("http://{}", endpoints.payment)),
        ],
    );
    gateway_config.kong_config.clone_from(&args.kong_config);
    gateway_config.max_in_flight = args.gateway_max_in_flight;
    parts.spawn(part(
        dispatch(gateway::NAME)?,
        gateway::NAME,
        gateway::serve(gateway_config, Start::new(gateway, token())),
    ));
    parts.spawn(part(
        dispatch("metrics")?,
        "metrics",
        metrics::serve(metrics, token()),
    ));
    Ok(System {
        endpoints,
        parts,
        shutdown,
    })
}

impl System {
    /// Waits until every part has stopped. When one fails the others are stopped too, and the
    /// first failure is returned.
    pub async fn wait(mut self) -> Result<(), PartFailed> {
        let mut first_failure = None;
        while let Some(joined) = self.parts.join_next().await {
            let outcome = joined.unwrap_or_else(|e| {
                Err(PartFailed {
                    part: "task",
                    message: e.to_string(),
                })
            });
            if let Err(failure) = outcome {
                tracing::error!(part = failure.part, error = %failure.message, "part failed; stopping");
                self.shutdown.cancel();
                first_failure.get_or_insert(failure);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

/// One part of the system, run in its own dispatch.
async fn part<E: fmt::Display>(
    dispatch: Dispatch,
    name: &'static str,
    serve: impl Future<Output = Result<(), E>>,
) -> Result<(), PartFailed> {
    serve
        .with_subscriber(dispatch)
        .await
        .map_err(|e| PartFailed {
            part: name,
            message: e.to_string(),
        })
}

/// Service `name`'s database: its own on the PostgreSQL server if one is given, else an SQLite
/// file under the data folder.
async fn database_url(args: &UpArgs, name: &str) -> Result<String, StartError> {
    match &args.database_url {
        Some(server) => Ok(database_on(server, &format!("shop_{name}")).await?),
        None => Ok(format!(
            "sqlite://{}",
            args.data_dir.join(format!("{name}.db")).display()
        )),
    }
}

fn local_addr(listener: &TcpListener, setting: &str) -> Result<SocketAddr, ConfigError> {
    listener
        .local_addr()
        .map_err(|e| ConfigError::new(setting, format!("cannot read the bound address: {e}")))
}
