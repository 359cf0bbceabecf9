//! Settings of the product service, from flags or the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_common::config::{
    ClientTlsArgs, ConfigError, EventArgs, JwtArgs, LimitArgs, Secret, ServerTlsArgs, ShutdownArgs,
    secret_or_default,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "PRODUCT_GRPC_ADDR",
        default_value = "0.0.0.0:50052"
    )]
    pub listen: SocketAddr,

    /// `mongodb://…` (production), `postgres://…` or `sqlite://path` (created if missing). Default: `sqlite://data/product.db`.
    #[arg(long, env = "PRODUCT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (with its password), as a secret store mounts it.
    #[arg(long, env = "PRODUCT_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// user-service, whose JWKS verifies callers' tokens.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_service_url: String,

    /// Fill an empty catalogue with demo products at start (local runs).
    #[arg(long, env = "PRODUCT_SEED_DEMO_CATALOGUE", default_value_t = false)]
    pub seed_demo_catalogue: bool,

    /// How long a product or a listing page read from the store is answered from memory. A
    /// change made through this replica shows at once, one made through another after this at
    /// most; 0 reads the store every time.
    #[arg(long, env = "PRODUCT_READ_CACHE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub read_cache_ttl: Duration,

    /// How many products, and how many listing pages, the read cache keeps at most.
    #[arg(long, env = "PRODUCT_READ_CACHE_SIZE", default_value_t = 10_000)]
    pub read_cache_size: usize,

    // Cancelled orders arrive as events: without RabbitMQ at `AMQP_URL` their stock stays held.
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
            "PRODUCT_DATABASE_URL",
            self.database_url.clone(),
            self.database_url_file.as_deref(),
            "sqlite://data/product.db",
        )
    }

    /// Defaults for a local run, as `shop up` and the tests start it.
    pub fn local(listen: SocketAddr, database_url: String, user_service_url: String) -> Self {
        Self {
            listen,
            database_url: Some(database_url),
            database_url_file: None,
            events: EventArgs::default(),
            user_service_url,
            seed_demo_catalogue: false,
            read_cache_ttl: Duration::from_secs(1),
            read_cache_size: 10_000,
            jwt: JwtArgs::default(),
            shutdown: ShutdownArgs::default(),
            limits: LimitArgs::default(),
            server_tls: ServerTlsArgs::default(),
            client_tls: ClientTlsArgs::default(),
        }
    }
}
