//! The payment service: charges orders when `order.created` arrives (through a
//! `PaymentProvider`; the shipped one is a deterministic simulator), announces the outcome, and
//! refunds cancelled orders and admin requests.

mod api;
mod config;
mod domain;
mod events;
mod metrics;
mod payments;
mod provider;
mod store;

use std::sync::Arc;

pub use config::Config;
pub use events::CONSUMES;
pub use provider::{ChargeError, PaymentProvider, Simulator, SimulatorTotals};
use shop_common::{
    auth::revocation::SqlRevocations,
    config::ConfigError,
    resilience::Breaker,
    service::{self, Service, Start, StartError},
};
use shop_proto::payment::v1::payment_service_server::PaymentServiceServer;

use crate::{api::PaymentApi, payments::Payments, store::PaymentStore};

/// The name this service logs and reports under.
pub const NAME: &str = "payment-service";

/// Serves the payment service with the simulator until `start.shutdown` is cancelled.
pub async fn serve(config: Config, start: Start) -> Result<(), StartError> {
    let simulator = match &config.simulator_ledger {
        Some(path) => Simulator::keeping(path).map_err(|e| {
            ConfigError::new(
                "PAYMENT_SIMULATOR_LEDGER",
                format!("cannot use {}: {e}", path.display()),
            )
        })?,
        None => Simulator::new(),
    };
    serve_with(config, Arc::new(simulator), start).await
}

/// [`serve`] with the payment provider given (the tests watch a simulator of their own).
pub async fn serve_with(
    config: Config,
    provider: Arc<dyn PaymentProvider>,
    start: Start,
) -> Result<(), StartError> {
    let server_tls = config.server_tls.load()?;
    let client_tls = config.client_tls.load()?;
    let retry = config.retry()?;
    let breaker = Breaker::new(NAME, "payment_provider", config.provider_breaker()?);
    let mut service = Service::start(NAME, start, &config.events).await?;
    let db = service
        .database(
            "PAYMENT_DATABASE_URL",
            config.database_url()?.expose(),
            &store::MIGRATOR,
        )
        .await?;
    let keys = service.remote_keys(&config.user_service_url, &client_tls, &config.jwt)?;
    let revocations = service
        .revocations(Arc::new(SqlRevocations::new(db.clone())))
        .await?;
    // Required: charging and refunding are what this service is for, and with the breaker open
    // neither can happen; reads still answer, but a replica that cannot take money is not ready.
    service.require("payment provider", breaker.check());
    let payments = Arc::new(Payments {
        store: PaymentStore::new(db.clone()),
        provider,
        timeout: config.provider_timeout,
        retry,
        breaker,
    });
    service.publish_outbox(&db);
    let handler = Arc::new(events::OrderEvents {
        payments: payments.clone(),
    });
    service
        .consume(CONSUMES, revocations.handling(handler))
        .await?;
    let server = service
        .grpc(config.shutdown.clone())
        .with_limits(config.limits.clone())
        .with_tls(server_tls)
        .add_service(PaymentServiceServer::new(PaymentApi { payments }))
        .with_auth(
            keys.auth(api::policy())
                .with_revocations(revocations.list()),
        );
    service.serve(server).await
}

/// `payment-service migrate`: applies the migrations (and declares the event queue), then exits.
pub async fn migrate(config: Config) -> Result<(), StartError> {
    let url = config.database_url()?;
    service::migrate(
        NAME,
        "PAYMENT_DATABASE_URL",
        url.expose(),
        &store::MIGRATOR,
        &config.events,
        CONSUMES,
    )
    .await
}
