//! The user service: accounts, login with rotating refresh tokens, RS256 access tokens, the
//! JWKS that every verifier reads, and `service` tokens for the other services.

mod api;
mod clients;
mod config;
mod domain;
mod keys;
mod passwords;
mod store;
mod tokens;

use std::sync::Arc;

pub use config::{Config, SeedUser};
pub use keys::{KeyError, SigningKeys};
use shop_common::{
    Error,
    auth::{AuthLayer, Role, Verifier},
    config::ConfigError,
    events::{BusError, EventPublisher, RabbitBus},
    grpc::{GrpcServer, ServeError},
    storage::{Sql, StorageError},
};
use shop_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::UserApi,
    clients::ServiceClients,
    domain::{DisplayName, Email, Password},
    passwords::Passwords,
    tokens::TokenIssuer,
};

/// The name this service logs and reports under.
pub const NAME: &str = "user-service";

#[derive(Debug, thiserror::Error)]
pub enum UserServiceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[error("seeding account {email}: {source}")]
    Seed {
        email: String,
        #[source]
        source: Error,
    },
    #[error("password hasher: {0}")]
    Hasher(#[source] Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Serves the user service on `listener` until `shutdown` is cancelled, then drains. Events go
/// to RabbitMQ at `AMQP_URL`; without it they wait in the outbox.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), UserServiceError> {
    let publisher: Option<Arc<dyn EventPublisher>> = RabbitBus::from_setting(
        config.amqp_url.as_deref(),
        "events stay in the outbox until it is",
    )
    .await?
    .map(|bus| bus as Arc<dyn EventPublisher>);
    serve_with(config, publisher, listener, shutdown).await
}

/// [`serve`] with the event publisher given (`shop up` shares one in-process bus).
pub async fn serve_with(
    config: Config,
    publisher: Option<Arc<dyn EventPublisher>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), UserServiceError> {
    let keys = Arc::new(signing_keys(&config)?);
    let clients = ServiceClients::new(&config.service_clients()?);
    let seeds = config.accounts_to_seed()?;
    let sql = Sql::connect("USER_DATABASE_URL", &config.database_url).await?;
    sql.migrate(&store::MIGRATOR).await?;
    tracing::info!(
        backend = sql.backend(),
        kid = keys.signing_kid(),
        service_clients = clients.len(),
        "user store ready"
    );

    let verifier = Arc::new(Verifier::new(&config.jwt.verifier_config()));
    verifier.add_jwks(keys.jwks());
    let api = UserApi {
        store: store::open(sql.clone()),
        passwords: Passwords::new().map_err(UserServiceError::Hasher)?,
        tokens: Arc::new(TokenIssuer::new(
            keys,
            &config.jwt,
            config.access_token_ttl,
            config.refresh_token_ttl,
            config.service_token_ttl,
        )),
        clients,
    };
    for seed in seeds {
        seed_account(&api, &seed)
            .await
            .map_err(|source| UserServiceError::Seed {
                email: seed.email.clone(),
                source,
            })?;
    }

    let relay = publisher.map(|p| sql.spawn_relay(NAME, p, shutdown.clone()));
    let served = GrpcServer::new(NAME, shop_proto::FILE_DESCRIPTOR_SET, config.shutdown)
        .add_service(UserServiceServer::new(api))
        .with_auth(AuthLayer::new(verifier, api::policy()))
        .serve(listener, shutdown)
        .await;
    if let Some(relay) = relay
        && let Err(error) = relay.await
    {
        tracing::warn!(%error, "outbox relay task failed");
    }
    Ok(served?)
}

fn signing_keys(config: &Config) -> Result<SigningKeys, ConfigError> {
    let retired = config
        .previous_signing_key_files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "USER_PREVIOUS_SIGNING_KEY_FILES",
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    match config.signing_key_pem()? {
        Some(pem) => SigningKeys::from_pems(pem.expose(), &retired)
            .map_err(|e| ConfigError::new("USER_SIGNING_KEY", e)),
        None if config.allow_generated_key => {
            tracing::warn!(
                "no signing key configured: generated a throw-away one; tokens die with this process"
            );
            let generated = SigningKeys::generate_pem()
                .map_err(|e| ConfigError::new("USER_ALLOW_GENERATED_KEY", e))?;
            SigningKeys::from_pems(&generated, &retired)
                .map_err(|e| ConfigError::new("USER_PREVIOUS_SIGNING_KEY_FILES", e))
        }
        None => Err(ConfigError::new(
            "USER_SIGNING_KEY_FILE",
            "is required (or USER_SIGNING_KEY); for a throw-away key in local runs set USER_ALLOW_GENERATED_KEY=true",
        )),
    }
}

/// Creates the account unless its email is taken; an existing account is left as it is.
async fn seed_account(api: &UserApi, seed: &SeedUser) -> Result<(), Error> {
    let email = Email::parse("email", &seed.email)?;
    if api.store.credentials(email.as_str()).await?.is_some() {
        return Ok(());
    }
    let password = Password::parse("password", seed.password.expose(), &email)?;
    let roles = if seed.admin {
        vec![Role::Customer, Role::Admin]
    } else {
        vec![Role::Customer]
    };
    let name = DisplayName::parse("display_name", &seed.display_name)?;
    match api.create_account(email, &password, name, roles).await {
        Ok(user) => {
            tracing::info!(user_id = %user.id, email = %user.email, admin = seed.admin, "account seeded");
            Ok(())
        }
        // Another replica seeded it first.
        Err(Error::AlreadyExists(_)) => Ok(()),
        Err(error) => Err(error),
    }
}
