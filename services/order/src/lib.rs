//! The order service: orders and the checkout saga. PlaceOrder reserves stock at
//! product-service and writes the order with its `order.created` event in one transaction;
//! payment outcomes (events) confirm or cancel it.

mod api;
mod config;
mod domain;
mod events;
mod metrics;
mod orders;
mod stock;
mod store;
mod sweeper;

use std::{sync::Arc, time::Duration};

pub use config::Config;
pub use events::CONSUMES;
use shop_common::{
    auth::{ServiceToken, revocation::SqlRevocations},
    client::lazy_channel,
    service::{self, Service, Start, StartError},
};
use shop_proto::{
    order::v1::order_service_server::OrderServiceServer,
    product::v1::product_service_client::ProductServiceClient,
};

use crate::{api::OrderApi, orders::Orders, stock::Stock, store::OrderStore};

/// The name this service logs and reports under.
pub const NAME: &str = "order-service";

/// Serves the order service until `start.shutdown` is cancelled, then drains.
pub async fn serve(config: Config, start: Start) -> Result<(), StartError> {
    let server_tls = config.server_tls.load()?;
    let client_tls = config.client_tls.load()?;
    let stock = Stock {
        products: ProductServiceClient::new(lazy_channel(
            "PRODUCT_SERVICE_URL",
            &config.product_service_url,
            &client_tls,
        )?),
        service_token: ServiceToken::new(
            "USER_SERVICE_URL",
            &config.user_service_url,
            &client_tls,
            config.client_id.clone(),
            config.client_secret()?,
        )?,
        deadline: config.product_deadline,
    };
    let mut service = Service::start(NAME, start, &config.events).await?;
    let db = service
        .database(
            "ORDER_DATABASE_URL",
            config.database_url()?.expose(),
            &store::MIGRATOR,
        )
        .await?;
    let keys = service.remote_keys(&config.user_service_url, &client_tls, &config.jwt)?;
    let revocations = service
        .revocations(Arc::new(SqlRevocations::new(db.clone())))
        .await?;
    let orders = Arc::new(Orders {
        store: OrderStore::new(db.clone()),
        stock,
    });
    service.publish_outbox(&db);
    let handler = Arc::new(events::PaymentOutcomes {
        orders: orders.clone(),
    });
    service
        .consume(CONSUMES, revocations.handling(handler))
        .await?;
    let sweep_every = (config.abandoned_checkout_after / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(60));
    service.spawn(sweeper::run(
        orders.clone(),
        config.abandoned_checkout_after,
        sweep_every,
        service.stopping(),
    ));
    let server = service
        .grpc(config.shutdown.clone())
        .with_limits(config.limits.clone())
        .with_tls(server_tls)
        .add_service(OrderServiceServer::new(OrderApi { orders }))
        .with_auth(
            keys.auth(api::policy())
                .with_revocations(revocations.list()),
        );
    service.serve(server).await
}

/// `order-service migrate`: applies the migrations (and declares the event queue), then exits.
pub async fn migrate(config: Config) -> Result<(), StartError> {
    let url = config.database_url()?;
    service::migrate(
        NAME,
        "ORDER_DATABASE_URL",
        url.expose(),
        &store::MIGRATOR,
        &config.events,
        CONSUMES,
    )
    .await
}
