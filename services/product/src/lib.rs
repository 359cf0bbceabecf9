//! The product service: the catalogue (MongoDB or SQL, by URL scheme) and stock reservations
//! that never oversell.

mod api;
mod catalogue;
mod config;
mod demo;
mod domain;
mod events;
mod metrics;
mod store;

use std::sync::Arc;

pub use config::Config;
pub use events::CONSUMES;
use shop_common::{
    auth::{RevocationStore, revocation::SqlRevocations},
    service::{self, Service, Start, StartError},
    storage::Backend,
};
use shop_proto::product::v1::product_service_server::ProductServiceServer;

use crate::{
    api::ProductApi,
    catalogue::{Catalogue, ReadCache},
    store::{MongoStore, ProductStore, SqlStore},
};

/// The name this service logs and reports under.
pub const NAME: &str = "product-service";

/// Serves the product service until `start.shutdown` is cancelled, then drains.
pub async fn serve(config: Config, start: Start) -> Result<(), StartError> {
    let server_tls = config.server_tls.load()?;
    let client_tls = config.client_tls.load()?;
    let mut service = Service::start(NAME, start, &config.events).await?;
    let (store, revoked) = open_store(&mut service, config.database_url()?.expose()).await?;
    let catalogue = Arc::new(Catalogue::new(
        store,
        ReadCache {
            ttl: config.read_cache_ttl,
            size: config.read_cache_size,
        },
    ));
    if config.seed_demo_catalogue {
        catalogue
            .seed_demo()
            .await
            .map_err(|e| StartError::step("catalogue store", e))?;
    }
    let keys = service.remote_keys(&config.user_service_url, &client_tls, &config.jwt)?;
    let revocations = service.revocations(revoked).await?;
    let handler = Arc::new(events::ReleaseOnCancel {
        catalogue: catalogue.clone(),
    });
    service
        .consume(CONSUMES, revocations.handling(handler))
        .await?;
    let server = service
        .grpc(config.shutdown.clone())
        .with_limits(config.limits.clone())
        .with_tls(server_tls)
        .add_service(ProductServiceServer::new(ProductApi { catalogue }))
        .with_auth(
            keys.auth(api::policy())
                .with_revocations(revocations.list()),
        );
    service.serve(server).await
}

/// The catalogue on MongoDB or SQL, as the URL's scheme says, and the revoked sessions beside
/// it.
async fn open_store(
    service: &mut Service,
    url: &str,
) -> Result<(Arc<dyn ProductStore>, Arc<dyn RevocationStore>), StartError> {
    const SETTING: &str = "PRODUCT_DATABASE_URL";
    match Backend::of(SETTING, url)? {
        Backend::MongoDb => {
            let store = Arc::new(MongoStore::connect(SETTING, url).await?);
            tracing::info!(service = NAME, backend = "mongodb", "store ready");
            let answers = store.clone();
            service.require(
                "database",
                Arc::new(move || {
                    let store = answers.clone();
                    Box::pin(async move { store.ping().await })
                }),
            );
            let revoked = store.revocations();
            Ok((store, revoked))
        }
        Backend::Postgres | Backend::Sqlite => {
            let db = service.database(SETTING, url, &store::MIGRATOR).await?;
            let revoked = Arc::new(SqlRevocations::new(db.clone()));
            Ok((Arc::new(SqlStore::new(db)), revoked))
        }
    }
}

/// `product-service migrate`: applies the SQL migrations or creates the MongoDB indexes (and
/// declares the event queue), then exits.
pub async fn migrate(config: Config) -> Result<(), StartError> {
    const SETTING: &str = "PRODUCT_DATABASE_URL";
    let url = config.database_url()?;
    match Backend::of(SETTING, url.expose())? {
        Backend::MongoDb => {
            MongoStore::connect(SETTING, url.expose()).await?;
            tracing::info!(service = NAME, backend = "mongodb", "indexes ready");
            service::declare_queue(NAME, &config.events, CONSUMES).await
        }
        Backend::Postgres | Backend::Sqlite => {
            service::migrate(
                NAME,
                SETTING,
                url.expose(),
                &store::MIGRATOR,
                &config.events,
                CONSUMES,
            )
            .await
        }
    }
}
