//! Settings of the gateway, from flags or the environment.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use shop_common::config::{ClientTlsArgs, ConfigError, JwtArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address of the public REST endpoint.
    #[arg(
        long = "listen",
        env = "GATEWAY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// A Kong declarative configuration to honour instead of the `kong/kong.yaml` built in.
    #[arg(long, env = "GATEWAY_KONG_CONFIG")]
    pub kong_config: Option<PathBuf>,

    /// Replaces Kong services' URLs for local runs: `user-service=http://127.0.0.1:50051,…`.
    #[arg(long, env = "GATEWAY_UPSTREAMS", default_value = "")]
    pub upstreams: String,

    /// user-service, whose JWKS verifies tokens on routes with the `jwt` plugin.
    #[arg(
        long,
        env = "USER_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub user_service_url: String,

    /// The largest request body accepted, in bytes.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Requests the gateway works on at once; the next one is answered 503 with
    /// `Retry-After: 1` at once, so overload costs clients a fast refusal instead of a queue
    /// that grows until they time out (and memory with it).
    #[arg(long, env = "GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,

    #[command(flatten)]
    pub jwt: JwtArgs,

    #[command(flatten)]
    pub client_tls: ClientTlsArgs,
}

impl Config {
    /// Defaults for a local run with the upstreams given, as `shop up` and the tests start it.
    pub fn local(listen: SocketAddr, upstreams: &[(&str, String)]) -> Self {
        let user_service_url = upstreams
            .iter()
            .find(|(name, _)| *name == "user-service")
            .map_or_else(
                || "http://127.0.0.1:50051".to_owned(),
                |(_, url)| url.clone(),
            );
        Self {
            listen,
            kong_config: None,
            upstreams: upstreams
                .iter()
                .map(|(name, url)| format!("{name}={url}"))
                .collect::<Vec<_>>()
                .join(","),
            user_service_url,
            max_body_bytes: 1024 * 1024,
            max_in_flight: 1024,
            jwt: JwtArgs::default(),
            client_tls: ClientTlsArgs::default(),
        }
    }

    pub(crate) fn upstreams(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        self.upstreams
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .split_once('=')
                    .map(|(name, url)| (name.trim().to_owned(), url.trim().to_owned()))
                    .filter(|(name, url)| !name.is_empty() && url.starts_with("http"))
                    .ok_or_else(|| {
                        ConfigError::new(
                            "GATEWAY_UPSTREAMS",
                            format!("entry {entry:?} must be `kong-service-name=http://host:port`"),
                        )
                    })
            })
            .collect()
    }
}
