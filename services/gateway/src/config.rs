//! Settings of the gateway, from flags or the environment.

use std::net::SocketAddr;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the public REST endpoint.
    #[arg(
        long = "listen",
        env = "GATEWAY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
}
