use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::migrating_service_main(
        product_service::NAME,
        "PRODUCT_GRPC_ADDR",
        |config: &product_service::Config| config.listen,
        product_service::serve,
        product_service::migrate,
    )
    .await
}
