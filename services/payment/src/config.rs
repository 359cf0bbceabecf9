//! Settings of the payment service, from flags or the environment.

use std::{net::SocketAddr, time::Duration};

use shop_common::config::{EventArgs, JwtArgs, ShutdownArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "PAYMENT_GRPC_ADDR",
        default_value = "0.0.0.0:50054"
    )]
    pub listen: SocketAddr,

    /// `postgres://…` or `sqlite://path` (created if missing); migrations run at start.
    #[arg(
        long,
        env = "PAYMENT_DATABASE_URL",
        default_value = "sqlite://data/payment.db",
        hide_env_values = true
    )]
    pub database_url: String,

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

    /// Wait before the second attempt; doubles for each further one.
    #[arg(long, env = "PAYMENT_RETRY_DELAY", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,

    // Orders arrive as events: without RabbitMQ at `AMQP_URL` none is charged.
    #[command(flatten)]
    pub events: EventArgs,

    #[command(flatten)]
    pub jwt: JwtArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

impl Config {
    /// Defaults for a local run, as `shop up` and the tests start it.
    pub fn local(listen: SocketAddr, database_url: String, user_service_url: String) -> Self {
        Self {
            listen,
            database_url,
            events: EventArgs::default(),
            user_service_url,
            provider_timeout: Duration::from_secs(10),
            charge_attempts: 4,
            retry_delay: Duration::from_millis(200),
            jwt: JwtArgs::default(),
            shutdown: ShutdownArgs::default(),
        }
    }
}
