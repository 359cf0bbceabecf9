//! The payment service: charges orders when `order.created` arrives (through a
//! `PaymentProvider`; the shipped one is a deterministic simulator), announces the outcome, and
//! refunds cancelled orders and admin requests.

mod api;
mod config;
mod domain;
mod events;
mod payments;
mod provider;
mod store;

use std::sync::Arc;

pub use config::Config;
pub use provider::{ChargeError, PaymentProvider, Simulator, SimulatorTotals};
use shop_common::{
    auth::{AuthLayer, RemoteKeys},
    config::ConfigError,
    events::{BusError, EventBus, RabbitBus, topology},
    grpc::{GrpcServer, ServeError},
    storage::{Sql, StorageError},
};
use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{api::PaymentApi, payments::Payments};

/// The name this service logs and reports under.
pub const NAME: &str = "payment-service";

#[derive(Debug, thiserror::Error)]
pub enum PaymentServiceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Serves the payment service with the simulator on `listener` until `shutdown` is cancelled.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), PaymentServiceError> {
    let bus =
        RabbitBus::from_setting(config.amqp_url.as_deref(), "no order will be charged").await?;
    serve_with(config, bus, Arc::new(Simulator::new()), listener, shutdown).await
}

/// [`serve`] with the event bus and the provider given (`shop up` and the tests).
pub async fn serve_with(
    config: Config,
    bus: Option<Arc<dyn EventBus>>,
    provider: Arc<dyn PaymentProvider>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), PaymentServiceError> {
    let sql = Sql::connect("PAYMENT_DATABASE_URL", &config.database_url).await?;
    sql.migrate(&store::MIGRATOR).await?;
    tracing::info!(backend = sql.backend(), "payment store ready");
    let store = store::open(sql.clone());
    let payments = Arc::new(Payments {
        store: store.clone(),
        provider,
        timeout: config.provider_timeout,
        attempts: config.charge_attempts,
        retry_delay: config.retry_delay,
    });

    let keys = RemoteKeys::start(
        &config.user_service_url,
        &config.jwt.verifier_config(),
        shutdown.clone(),
    )?;
    let mut tasks = vec![keys.refresher];
    if let Some(bus) = bus {
        let handler = Arc::new(events::OrderEvents {
            payments: payments.clone(),
        });
        tasks.push(topology::consume(bus.as_ref(), NAME, handler, shutdown.clone()).await?);
        tasks.push(sql.spawn_relay(NAME, bus, shutdown.clone()));
    }

    let served = GrpcServer::new(NAME, shop_proto::FILE_DESCRIPTOR_SET, config.shutdown)
        .add_service(PaymentServiceServer::new(PaymentApi { store, payments }))
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
