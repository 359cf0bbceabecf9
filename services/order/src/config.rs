//! Settings of the order service, from flags or the environment.

use std::net::SocketAddr;

use shop_common::config::ShutdownArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the gRPC server (health, reflection and grpc-web included).
    #[arg(
        long = "listen",
        env = "ORDER_GRPC_ADDR",
        default_value = "0.0.0.0:50053"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}
