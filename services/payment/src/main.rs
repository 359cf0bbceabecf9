use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::migrating_service_main(
        payment_service::NAME,
        "PAYMENT_GRPC_ADDR",
        |config: &payment_service::Config| config.listen,
        payment_service::serve,
        payment_service::migrate,
    )
    .await
}
