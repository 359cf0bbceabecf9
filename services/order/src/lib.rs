//! The order service: orders and the checkout saga. PlaceOrder reserves stock at
//! product-service and writes the order with its `order.created` event in one transaction;
//! payment outcomes (events) confirm or cancel it.

mod api;
mod config;
mod domain;
mod events;
mod stock;
mod store;
mod sweeper;

use std::{sync::Arc, time::Duration};

pub use config::Config;
use shop_common::{
    auth::{AuthLayer, RemoteKeys, ServiceToken},
    config::ConfigError,
    events::{BusError, EventBus, RabbitBus, topology},
    grpc::{GrpcServer, ServeError, lazy_channel},
    storage::{Sql, StorageError},
};
use shop_proto::{
    order::v1::order_service_server::OrderServiceServer,
    product::v1::product_service_client::ProductServiceClient,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::OrderApi;

/// The name this service logs and reports under.
pub const NAME: &str = "order-service";

#[derive(Debug, thiserror::Error)]
pub enum OrderServiceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Serves the order service on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), OrderServiceError> {
    let bus = RabbitBus::from_setting(
        config.amqp_url.as_deref(),
        "order events stay in the outbox and payments are not seen",
    )
    .await?;
    serve_with(config, bus, listener, shutdown).await
}

/// [`serve`] with the event bus given (`shop up` shares one).
pub async fn serve_with(
    config: Config,
    bus: Option<Arc<dyn EventBus>>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), OrderServiceError> {
    let service_token = Arc::new(ServiceToken::new(
        "USER_SERVICE_URL",
        &config.user_service_url,
        config.client_id.clone(),
        config.client_secret()?,
    )?);
    let products = ProductServiceClient::new(lazy_channel(
        "PRODUCT_SERVICE_URL",
        &config.product_service_url,
    )?);
    let sql = Sql::connect("ORDER_DATABASE_URL", &config.database_url).await?;
    sql.migrate(&store::MIGRATOR).await?;
    tracing::info!(backend = sql.backend(), "order store ready");
    let store = store::open(sql.clone());

    let keys = RemoteKeys::start(
        &config.user_service_url,
        &config.jwt.verifier_config(),
        shutdown.clone(),
    )?;
    let mut tasks = vec![keys.refresher];
    if let Some(bus) = bus {
        let handler = Arc::new(events::PaymentOutcomes {
            store: store.clone(),
        });
        tasks.push(topology::consume(bus.as_ref(), NAME, handler, shutdown.clone()).await?);
        tasks.push(sql.spawn_relay(NAME, bus, shutdown.clone()));
    }

    let stock = Arc::new(stock::Stock {
        products,
        service_token,
        deadline: config.product_deadline,
    });
    let sweeper = sweeper::Sweeper {
        store: store.clone(),
        stock: stock.clone(),
        after: config.abandoned_checkout_after,
    };
    let every = (config.abandoned_checkout_after / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(60));
    tasks.push(sweeper.spawn(every, shutdown.clone()));
    let api = OrderApi { store, stock };
    let served = GrpcServer::new(NAME, shop_proto::FILE_DESCRIPTOR_SET, config.shutdown)
        .add_service(OrderServiceServer::new(api))
        .with_auth(AuthLayer::new(keys.verifier, api::policy()).with_key_source(keys.jwks))
        .serve(listener, shutdown)
        .await;
    for task in tasks {
        if let Err(error) = task.await {
            tracing::warn!(%error, "background task failed");
        }
    }
    Ok(served?)
}
