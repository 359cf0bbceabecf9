//! The product service: the catalogue and stock.

mod config;

pub use config::Config;
use shop_common::grpc::{GrpcServer, ServeError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The name this service logs and reports under.
pub const NAME: &str = "product-service";

/// Serves the product service on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    GrpcServer::new(NAME, shop_proto::FILE_DESCRIPTOR_SET, config.shutdown)
        .serve(listener, shutdown)
        .await
}
