//! The product service: the catalogue (MongoDB or SQL, by URL scheme) and stock reservations
//! that never oversell.

mod api;
mod config;
mod demo;
mod domain;
mod events;
mod store;

use std::sync::Arc;

pub use config::Config;
use shop_common::{
    Error,
    auth::{AuthLayer, RemoteKeys},
    config::ConfigError,
    events::{BusError, EventBus, RabbitBus, topology},
    grpc::{GrpcServer, ServeError},
    storage::{Sql, StorageError},
};
use shop_proto::product::v1::product_service_server::ProductServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{api::ProductApi, store::ProductStore};

/// The name this service logs and reports under.
pub const NAME: &str = "product-service";

#[derive(Debug, thiserror::Error)]
pub enum ProductServiceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("catalogue store: {0}")]
    Store(#[source] Error),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Serves the product service on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ProductServiceError> {
    let bus = RabbitBus::from_setting(
        config.amqp_url.as_deref(),
        "cancelled orders will not release stock",
    )
    .await?;
    serve_with(config, bus, listener, shutdown).await
}

/// [`serve`] with the event bus given (`shop up` shares one in-process bus).
pub async fn serve_with(
    config: Config,
    bus: Option<Arc<dyn EventBus>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ProductServiceError> {
    let store = open_store(&config.database_url).await?;
    if config.seed_demo_catalogue {
        seed(store.as_ref())
            .await
            .map_err(ProductServiceError::Store)?;
    }

    let keys = RemoteKeys::start(
        &config.user_service_url,
        &config.jwt.verifier_config(),
        shutdown.clone(),
    )?;

    let consumer = match &bus {
        Some(bus) => {
            let handler = Arc::new(events::ReleaseOnCancel {
                store: store.clone(),
            });
            Some(topology::consume(bus.as_ref(), NAME, handler, shutdown.clone()).await?)
        }
        None => None,
    };

    let served = GrpcServer::new(NAME, shop_proto::FILE_DESCRIPTOR_SET, config.shutdown)
        .add_service(ProductServiceServer::new(ProductApi { store }))
        .with_auth(AuthLayer::new(keys.verifier, api::policy()).with_key_source(keys.jwks))
        .serve(listener, shutdown)
        .await;
    for task in [Some(keys.refresher), consumer].into_iter().flatten() {
        if let Err(error) = task.await {
            tracing::warn!(%error, "background task failed");
        }
    }
    Ok(served?)
}

async fn open_store(url: &str) -> Result<Arc<dyn ProductStore>, ProductServiceError> {
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let store = store::MongoStore::connect("PRODUCT_DATABASE_URL", url).await?;
        tracing::info!(backend = "mongodb", "catalogue store ready");
        return Ok(Arc::new(store));
    }
    let sql = Sql::connect("PRODUCT_DATABASE_URL", url).await?;
    sql.migrate(&store::MIGRATOR).await?;
    tracing::info!(backend = sql.backend(), "catalogue store ready");
    Ok(store::open_sql(sql))
}

/// Fills an empty catalogue with the demo products; a catalogue with anything in it is left
/// alone.
async fn seed(store: &dyn ProductStore) -> Result<(), Error> {
    if store.count().await? > 0 {
        return Ok(());
    }
    let products = demo::catalogue();
    for product in &products {
        match store.create(product).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(error) => return Err(error),
        }
    }
    tracing::info!(products = products.len(), "demo catalogue seeded");
    Ok(())
}
