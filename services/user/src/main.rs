use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::service_main(
        user_service::NAME,
        "USER_GRPC_ADDR",
        |config: &user_service::Config| config.listen,
        user_service::serve,
    )
    .await
}
