//! Settings of the user service, from flags or the environment. Secrets may be given directly or
//! as `*_FILE` paths (as Vault Agent writes them); the two are never both accepted.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use shop_common::config::{
    ConfigError, EventArgs, JwtArgs, LimitArgs, Secret, ServerTlsArgs, ShutdownArgs,
    secret_or_default, value_or_file,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "USER_GRPC_ADDR",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,

    /// `postgres://…` or `sqlite://path` (created if missing). Default: `sqlite://data/user.db`.
    #[arg(long, env = "USER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// File holding the database URL (with its password), as a secret store mounts it.
    #[arg(long, env = "USER_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// PEM RSA private key that signs new tokens.
    #[arg(long, env = "USER_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,

    /// File holding the PEM RSA private key that signs new tokens.
    #[arg(long, env = "USER_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,

    /// Files of retired PEM keys (private or public), comma-separated: they no longer sign, but
    /// stay in the JWKS so tokens they signed verify until they expire.
    #[arg(long, env = "USER_PREVIOUS_SIGNING_KEY_FILES", value_delimiter = ',')]
    pub previous_signing_key_files: Vec<PathBuf>,

    /// Without a configured key, generate a throw-away one at start-up (local runs only:
    /// replicas would each sign with a different key, and restarts invalidate every token).
    #[arg(long, env = "USER_ALLOW_GENERATED_KEY", default_value_t = false)]
    pub allow_generated_key: bool,

    /// Lifetime of access tokens.
    #[arg(long, env = "USER_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Lifetime of refresh tokens.
    #[arg(long, env = "USER_REFRESH_TOKEN_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub refresh_token_ttl: Duration,

    /// Lifetime of service tokens (IssueServiceToken).
    #[arg(long, env = "USER_SERVICE_TOKEN_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub service_token_ttl: Duration,

    /// Service clients allowed to obtain a `service` token: `id:secret,id2:secret2`.
    #[arg(long, env = "USER_SERVICE_CLIENTS", hide_env_values = true)]
    pub service_clients: Option<String>,

    /// File holding the service clients, one `id:secret` per line.
    #[arg(long, env = "USER_SERVICE_CLIENTS_FILE")]
    pub service_clients_file: Option<PathBuf>,

    /// Email of an admin account created at start-up if missing.
    #[arg(long, env = "USER_BOOTSTRAP_ADMIN_EMAIL")]
    pub bootstrap_admin_email: Option<String>,

    /// Password of the bootstrap admin.
    #[arg(long, env = "USER_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub bootstrap_admin_password: Option<String>,

    /// File holding the password of the bootstrap admin.
    #[arg(long, env = "USER_BOOTSTRAP_ADMIN_PASSWORD_FILE")]
    pub bootstrap_admin_password_file: Option<PathBuf>,

    // `user.registered` and `user.deleted` go to RabbitMQ at `AMQP_URL`.
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

    /// Accounts created at start-up if missing, besides the bootstrap admin (`shop up`'s demo
    /// users). Not a flag.
    #[arg(skip)]
    pub seed_users: Vec<SeedUser>,
}

/// An account to create at start-up if its email is not taken.
#[derive(Debug, Clone)]
pub struct SeedUser {
    pub email: String,
    pub password: Secret,
    pub display_name: String,
    pub admin: bool,
}

impl Config {
    /// The database URL: given, from its file, or the local SQLite file.
    pub(crate) fn database_url(&self) -> Result<Secret, ConfigError> {
        secret_or_default(
            "USER_DATABASE_URL",
            self.database_url.clone(),
            self.database_url_file.as_deref(),
            "sqlite://data/user.db",
        )
    }

    /// Defaults for a local run on `database_url`, as `shop up` and the tests start it.
    pub fn local(listen: SocketAddr, database_url: String) -> Self {
        Self {
            listen,
            database_url: Some(database_url),
            database_url_file: None,
            events: EventArgs::default(),
            signing_key: None,
            signing_key_file: None,
            previous_signing_key_files: Vec::new(),
            allow_generated_key: true,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            service_token_ttl: Duration::from_secs(5 * 60),
            service_clients: None,
            service_clients_file: None,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            bootstrap_admin_password_file: None,
            jwt: JwtArgs::default(),
            shutdown: ShutdownArgs::default(),
            limits: LimitArgs::default(),
            server_tls: ServerTlsArgs::default(),
            seed_users: Vec::new(),
        }
    }

    /// The PEM of the signing key, from `USER_SIGNING_KEY` or its file.
    pub(crate) fn signing_key_pem(&self) -> Result<Option<Secret>, ConfigError> {
        Ok(value_or_file(
            "USER_SIGNING_KEY",
            self.signing_key.clone(),
            self.signing_key_file.as_deref(),
        )?
        .map(|(secret, _)| secret))
    }

    /// Client id → secret of every configured service client.
    pub(crate) fn service_clients(&self) -> Result<Vec<(String, Secret)>, ConfigError> {
        let Some((list, _)) = value_or_file(
            "USER_SERVICE_CLIENTS",
            self.service_clients.clone(),
            self.service_clients_file.as_deref(),
        )?
        else {
            return Ok(Vec::new());
        };
        list.expose()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
            .map(|(i, entry)| match entry.split_once(':') {
                Some((id, secret)) if !id.is_empty() && secret.len() >= 16 => {
                    Ok((id.to_owned(), Secret::new(secret)))
                }
                // The entry holds a secret: name its position, never its content.
                _ => Err(ConfigError::new(
                    "USER_SERVICE_CLIENTS",
                    format!(
                        "entry {} must be `id:secret` with a secret of at least 16 characters",
                        i + 1
                    ),
                )),
            })
            .collect()
    }

    /// Every account to ensure at start-up: the bootstrap admin, then the seed users.
    pub(crate) fn accounts_to_seed(&self) -> Result<Vec<SeedUser>, ConfigError> {
        let password = value_or_file(
            "USER_BOOTSTRAP_ADMIN_PASSWORD",
            self.bootstrap_admin_password.clone(),
            self.bootstrap_admin_password_file.as_deref(),
        )?;
        let mut accounts = match (&self.bootstrap_admin_email, password) {
            (Some(email), Some((password, _))) => vec![SeedUser {
                email: email.clone(),
                password,
                display_name: "Administrator".to_owned(),
                admin: true,
            }],
            (None, None) => Vec::new(),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "USER_BOOTSTRAP_ADMIN_PASSWORD_FILE",
                    "is required when USER_BOOTSTRAP_ADMIN_EMAIL is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "USER_BOOTSTRAP_ADMIN_EMAIL",
                    "is required when a bootstrap admin password is set",
                ));
            }
        };
        accounts.extend(self.seed_users.iter().cloned());
        Ok(accounts)
    }
}
