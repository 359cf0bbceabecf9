use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::migrating_service_main(
        user_service::NAME,
        "USER_GRPC_ADDR",
        |config: &user_service::Config| config.listen,
        user_service::serve,
        user_service::migrate,
    )
    .await
}
