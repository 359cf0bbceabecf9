//! Settings of the order service, from flags or the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_common::config::{
    ClientTlsArgs, ConfigError, EventArgs, JwtArgs, LimitArgs, Secret, ServerTlsArgs, ShutdownArgs,
    secret_or_default, value_or_file,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "ORDER_GRPC_ADDR",
        default_value = "0.0.0.0:50053"
    )]
    pub listen: SocketAddr,

    /// `postgres://…` or `sqlite://path` (created if missing); migrations run at start. Default: `sqlite://data/order.db`.
    #[arg(long, env = "ORDER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (with its password), as a secret store mounts it.
    #[arg(long, env = "ORDER_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// user-service: the JWKS that verifies callers, and this service's own token.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_service_url: String,

    /// product-service: prices and stock reservations.
    #[arg(
        long,
        env = "PRODUCT_SERVICE_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub product_service_url: String,

    /// This service's client id at user-service (for its `service` token).
    #[arg(long, env = "ORDER_CLIENT_ID", default_value = "order-service")]
    pub client_id: String,

    /// Its client secret; prefer `ORDER_CLIENT_SECRET_FILE`.
    #[arg(long, env = "ORDER_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,

    #[arg(long, env = "ORDER_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Deadline of each call to product-service.
    #[arg(long, env = "ORDER_PRODUCT_DEADLINE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub product_deadline: Duration,

    /// A checkout that reserved stock but wrote no order is released after this long (the
    /// client had that long to retry with the same idempotency key).
    #[arg(long, env = "ORDER_ABANDONED_CHECKOUT_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub abandoned_checkout_after: Duration,

    // Payment outcomes arrive as events: without RabbitMQ at `AMQP_URL` orders stay pending.
    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub jwt: JwtArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub server_tls: ServerTlsArgs,

    #[command(flatten)]
    pub client_tls: ClientTlsArgs,
}

impl Config {
    /// The database URL: given, from its file, or the local SQLite file.
    pub(crate) fn database_url(&self) -> Result<Secret, ConfigError> {
        secret_or_default(
            "ORDER_DATABASE_URL",
            self.database_url.clone(),
            self.database_url_file.as_deref(),
            "sqlite://data/order.db",
        )
    }

    /// Defaults for a local run, as `shop up` and the tests start it.
    pub fn local(
        listen: SocketAddr,
        database_url: String,
        user_service_url: String,
        product_service_url: String,
        client_secret: Secret,
    ) -> Self {
        Self {
            listen,
            database_url: Some(database_url),
            database_url_file: None,
            events: EventArgs::default(),
            user_service_url,
            product_service_url,
            client_id: "order-service".to_owned(),
            client_secret: Some(client_secret.expose().to_owned()),
            client_secret_file: None,
            product_deadline: Duration::from_secs(5),
            abandoned_checkout_after: Duration::from_secs(600),
            jwt: JwtArgs::default(),
            shutdown: ShutdownArgs::default(),
            limits: LimitArgs::default(),
            server_tls: ServerTlsArgs::default(),
            client_tls: ClientTlsArgs::default(),
        }
    }

    pub(crate) fn client_secret(&self) -> Result<Secret, ConfigError> {
        value_or_file(
            "ORDER_CLIENT_SECRET",
            self.client_secret.clone(),
            self.client_secret_file.as_deref(),
        )?
        .map(|(secret, _)| secret)
        .ok_or_else(|| {
            ConfigError::new(
                "ORDER_CLIENT_SECRET_FILE",
                "is required (or ORDER_CLIENT_SECRET): order-service reserves stock with its own service token",
            )
        })
    }
}
