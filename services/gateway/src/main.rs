use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    shop_common::process::service_main(
        gateway::NAME,
        "GATEWAY_HTTP_ADDR",
        |config: &gateway::Config| config.listen,
        gateway::serve,
    )
    .await
}
