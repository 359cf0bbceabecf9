use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::migrating_service_main(
        order_service::NAME,
        "ORDER_GRPC_ADDR",
        |config: &order_service::Config| config.listen,
        order_service::serve,
        order_service::migrate,
    )
    .await
}
