//! The user service: accounts, login with rotating refresh tokens, RS256 access tokens, the
//! JWKS that every verifier reads, and `service` tokens for the other services.

mod accounts;
mod api;
mod clients;
mod config;
mod domain;
mod keys;
mod passwords;
mod store;
mod throttle;
mod tokens;

use std::sync::Arc;

pub use config::{Config, SeedUser};
pub use keys::{KeyError, SigningKeys};
use shop_common::{
    auth::{AuthLayer, Verifier},
    config::ConfigError,
    service::{self, Service, Start, StartError},
};
use shop_proto::user::v1::user_service_server::UserServiceServer;

use crate::{
    accounts::Accounts, api::UserApi, clients::ServiceClients, passwords::Passwords,
    store::UserStore, throttle::LoginThrottle, tokens::TokenIssuer,
};

/// The name this service logs and reports under.
pub const NAME: &str = "user-service";

/// Serves the user service until `start.shutdown` is cancelled, then drains. Its events go to
/// the bus; without one they wait in the outbox.
pub async fn serve(config: Config, start: Start) -> Result<(), StartError> {
    let server_tls = config.server_tls.load()?;
    let keys = Arc::new(signing_keys(&config)?);
    let clients = ServiceClients::new(&config.service_clients()?);
    let seeds = config.accounts_to_seed()?;
    let mut service = Service::start(NAME, start, &config.events).await?;
    let db = service
        .database(
            "USER_DATABASE_URL",
            config.database_url()?.expose(),
            &store::MIGRATOR,
        )
        .await?;
    tracing::info!(
        kid = keys.signing_kid(),
        service_clients = clients.len(),
        "signing keys ready"
    );
    let verifier = Arc::new(Verifier::new(&config.jwt.verifier_config()));
    verifier.add_jwks(keys.jwks());
    let store = UserStore::new(db.clone());
    // Its own table, written with each change: no event to wait for here.
    let revocations = service
        .revocations(Arc::new(store.revocations()))
        .await?
        .list();
    let accounts = Accounts {
        store,
        passwords: Passwords::new().map_err(|e| StartError::step("password hasher", e))?,
        tokens: TokenIssuer::new(
            keys,
            &config.jwt,
            config.access_token_ttl,
            config.refresh_token_ttl,
            config.service_token_ttl,
        ),
        clients,
        throttle: LoginThrottle::default(),
        revocations: revocations.clone(),
    };
    for seed in &seeds {
        accounts
            .seed(seed)
            .await
            .map_err(|e| StartError::step(format!("seeding account {}", seed.email), e))?;
    }
    service.publish_outbox(&db);
    let api = UserApi { accounts };
    let server = service
        .grpc(config.shutdown.clone())
        .with_limits(config.limits.clone())
        .with_tls(server_tls)
        .add_service(UserServiceServer::new(api))
        .with_auth(AuthLayer::new(verifier, api::policy()).with_revocations(revocations));
    service.serve(server).await
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

/// `user-service migrate`: applies the migrations (and declares the event queue), then exits.
pub async fn migrate(config: Config) -> Result<(), StartError> {
    let url = config.database_url()?;
    service::migrate(
        NAME,
        "USER_DATABASE_URL",
        url.expose(),
        &store::MIGRATOR,
        &config.events,
        &[],
    )
    .await
}
