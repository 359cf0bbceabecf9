//! Settings of the payment service, from flags or the environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_common::config::{
    ClientTlsArgs, ConfigError, EventArgs, JwtArgs, LimitArgs, Secret, ServerTlsArgs, ShutdownArgs,
    secret_or_default,
};
use shop_common::resilience::{BreakerSettings, Retry};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "PAYMENT_GRPC_ADDR",
        default_value = "0.0.0.0:50054"
    )]
    pub listen: SocketAddr,

    /// `postgres://…` or `sqlite://path` (created if missing); migrations run at start. Default: `sqlite://data/payment.db`.
    #[arg(long, env = "PAYMENT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (with its password), as a secret store mounts it.
    #[arg(long, env = "PAYMENT_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// user-service, whose JWKS verifies callers' tokens.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_service_url: String,

    /// How long one call to the payment provider may take before it counts as failed.
    #[arg(long, env = "PAYMENT_PROVIDER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,

    /// Attempts per charge (the first included) on transient provider failures and timeouts.
    #[arg(long, env = "PAYMENT_CHARGE_ATTEMPTS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub charge_attempts: u32,

    /// Wait before the second attempt; doubles for each further one up to
    /// `PAYMENT_RETRY_MAX_DELAY`. Each wait is drawn at random from the upper half of its value,
    /// so charges that failed together are not retried together.
    #[arg(long, env = "PAYMENT_RETRY_DELAY", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,

    /// The longest wait between two attempts of a charge.
    #[arg(long, env = "PAYMENT_RETRY_MAX_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,

    /// Failed provider calls in a row (transient errors and timeouts; declines are answers) that
    /// open the provider's circuit breaker: calls then fail at once, without reaching it, and
    /// health reports NOT_SERVING until the breaker closes.
    #[arg(long, env = "PAYMENT_PROVIDER_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub provider_breaker_failures: u32,

    /// How long the breaker stays open before one call probes the provider.
    #[arg(long, env = "PAYMENT_PROVIDER_BREAKER_OPEN_FOR", default_value = "5s", value_parser = humantime::parse_duration)]
    pub provider_breaker_open_for: Duration,

    /// The longest the breaker stays open: each failed probe doubles the period, up to this.
    #[arg(long, env = "PAYMENT_PROVIDER_BREAKER_OPEN_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub provider_breaker_open_max: Duration,

    /// File where the card simulator keeps its charges, so refunds after a restart find them.
    /// Unset: in memory (`shop up` keeps it in its data dir).
    #[arg(long, env = "PAYMENT_SIMULATOR_LEDGER")]
    pub simulator_ledger: Option<PathBuf>,

    // Orders arrive as events: without RabbitMQ at `AMQP_URL` none is charged.
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
            "PAYMENT_DATABASE_URL",
            self.database_url.clone(),
            self.database_url_file.as_deref(),
            "sqlite://data/payment.db",
        )
    }

    /// Attempts per charge and the waits between them.
    pub(crate) fn retry(&self) -> Result<Retry, ConfigError> {
        if self.retry_max_delay < self.retry_delay {
            return Err(ConfigError::new(
                "PAYMENT_RETRY_MAX_DELAY",
                "must not be shorter than PAYMENT_RETRY_DELAY",
            ));
        }
        Ok(Retry {
            attempts: self.charge_attempts,
            first_delay: self.retry_delay,
            max_delay: self.retry_max_delay,
        })
    }

    /// When the provider's circuit breaker opens, and for how long.
    pub(crate) fn provider_breaker(&self) -> Result<BreakerSettings, ConfigError> {
        if self.provider_breaker_open_for.is_zero() {
            return Err(ConfigError::new(
                "PAYMENT_PROVIDER_BREAKER_OPEN_FOR",
                "must be longer than 0",
            ));
        }
        if self.provider_breaker_open_max < self.provider_breaker_open_for {
            return Err(ConfigError::new(
                "PAYMENT_PROVIDER_BREAKER_OPEN_MAX",
                "must not be shorter than PAYMENT_PROVIDER_BREAKER_OPEN_FOR",
            ));
        }
        Ok(BreakerSettings {
            failures: self.provider_breaker_failures,
            open_for: self.provider_breaker_open_for,
            open_max: self.provider_breaker_open_max,
        })
    }

    /// Defaults for a local run, as `shop up` and the tests start it.
    pub fn local(listen: SocketAddr, database_url: String, user_service_url: String) -> Self {
        Self {
            listen,
            database_url: Some(database_url),
            database_url_file: None,
            events: EventArgs::default(),
            user_service_url,
            provider_timeout: Duration::from_secs(10),
            charge_attempts: 4,
            retry_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
            provider_breaker_failures: 5,
            provider_breaker_open_for: Duration::from_secs(5),
            provider_breaker_open_max: Duration::from_secs(60),
            simulator_ledger: None,
            jwt: JwtArgs::default(),
            shutdown: ShutdownArgs::default(),
            limits: LimitArgs::default(),
            server_tls: ServerTlsArgs::default(),
            client_tls: ClientTlsArgs::default(),
        }
    }
}
