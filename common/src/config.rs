//! Settings shared by every binary: server and telemetry knobs, and secrets that may come from a
//! file (`NAME_FILE`, as Vault Agent writes them) instead of the environment.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::net::TcpListener;

/// A setting that could not be used; its message names the setting so an operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(setting: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            setting: setting.into(),
            reason: reason.to_string(),
        }
    }
}

/// Prints one line naming the bad setting and exits with status 2, the code clap uses for usage
/// errors, so bad configuration never surfaces as a panic.
pub fn exit_on_config_error(error: &ConfigError) -> ! {
    eprintln!("error: {error}");
    std::process::exit(2)
}

/// A value that must not reach logs: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a resolved setting came from, for start-up messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Direct,
    File(String),
}

/// Resolves a setting that may be given directly (`NAME` / `--flag`) or through a file
/// (`NAME_FILE`). Giving both is refused: silently preferring one hides a mistake.
/// Trailing newlines are trimmed, since secret files usually end with one.
pub fn value_or_file(
    name: &str,
    value: Option<String>,
    file: Option<&Path>,
) -> Result<Option<(Secret, Source)>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            name,
            format!("both {name} and {name}_FILE are set; set only one"),
        )),
        (Some(value), None) => Ok(Some((Secret(value), Source::Direct))),
        (None, Some(path)) => {
            let setting = format!("{name}_FILE");
            let content = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(&setting, format!("cannot read {}: {e}", path.display()))
            })?;
            let trimmed = content.trim_end_matches(['\r', '\n']);
            if trimmed.is_empty() {
                return Err(ConfigError::new(
                    setting,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some((
                Secret(trimmed.to_owned()),
                Source::File(path.display().to_string()),
            )))
        }
        (None, None) => Ok(None),
    }
}

/// A secret setting with a default: given directly, through `NAME_FILE`, or else `default`
/// (a local-run value such as an SQLite file, never a real credential).
pub fn secret_or_default(
    name: &str,
    value: Option<String>,
    file: Option<&Path>,
    default: &str,
) -> Result<Secret, ConfigError> {
    Ok(
        value_or_file(name, value, file)?
            .map_or_else(|| Secret::new(default), |(secret, _)| secret),
    )
}

/// How much a gRPC server takes on at once, shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Calls a gRPC server runs at once; the next one is answered RESOURCE_EXHAUSTED with
    /// `retry-after: 1` at once (health and reflection never are), so overload costs callers a
    /// fast refusal instead of a queue that grows until they time out.
    #[arg(long, env = "GRPC_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub grpc_max_in_flight: u32,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            grpc_max_in_flight: 512,
        }
    }
}

/// Shutdown behaviour of a server, shared by every service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// How long in-flight calls may run after the server stops accepting new ones.
    #[arg(long, env = "SHUTDOWN_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace_period: Duration,

    /// How long health reports NOT_SERVING before the server stops accepting calls, so load
    /// balancers and kubelet readiness move traffic away first.
    #[arg(long, env = "SHUTDOWN_DRAIN_DELAY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_drain_delay: Duration,
}

impl Default for ShutdownArgs {
    fn default() -> Self {
        Self {
            shutdown_grace_period: Duration::from_secs(10),
            shutdown_drain_delay: Duration::ZERO,
        }
    }
}

/// TLS of a service's gRPC port, without a mesh (inside Istio the sidecar does mTLS and these
/// stay unset). PEM files, as cert-manager or Vault Agent write them; read again when they
/// change. Without a certificate the port is plaintext.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// The server's certificate chain (PEM), leaf first.
    #[arg(long, env = "GRPC_TLS_CERT_FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,

    /// The private key of that certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GRPC_TLS_KEY_FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,

    /// CA bundle (PEM); when set, every client must present a certificate it signed (mTLS).
    #[arg(long, env = "GRPC_TLS_CLIENT_CA_FILE")]
    pub grpc_tls_client_ca_file: Option<PathBuf>,
}

/// TLS of the gRPC channels a service opens to others (`https://` URLs), without a mesh.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// CA bundle (PEM) that servers' certificates are checked against; needed for `https://`.
    #[arg(long, env = "GRPC_CLIENT_TLS_CA_FILE")]
    pub grpc_client_tls_ca_file: Option<PathBuf>,

    /// The certificate (PEM) this service presents to servers that require one.
    #[arg(long, env = "GRPC_CLIENT_TLS_CERT_FILE")]
    pub grpc_client_tls_cert_file: Option<PathBuf>,

    /// The private key of that certificate (PEM).
    #[arg(long, env = "GRPC_CLIENT_TLS_KEY_FILE")]
    pub grpc_client_tls_key_file: Option<PathBuf>,
}

/// Log and trace settings, shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `json` for log shippers, `text` for people, `auto` picks text on a terminal.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` env-filter syntax, e.g. `info,shop_common=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`; unset means no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Headers sent with every trace export, `key=value,key2=value2` (a vendor's API key, say).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", hide_env_values = true)]
    pub otlp_headers: Option<String>,

    /// File holding the OTLP headers, as a secret store mounts it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS_FILE")]
    pub otlp_headers_file: Option<PathBuf>,

    /// Which spans are exported, in env-filter syntax, independently of `RUST_LOG`: quieter
    /// logs must not cost traces.
    #[arg(long, env = "OTEL_TRACES_FILTER", default_value = "info")]
    pub trace_filter: String,

    /// Sampler of new traces: `parentbased_always_on`, `parentbased_traceidratio`,
    /// `parentbased_always_off`, `always_on`, `always_off` or `traceidratio`.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on"
    )]
    pub trace_sampler: String,

    /// The ratio of the `traceidratio` samplers, 0.0 to 1.0.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG")]
    pub trace_sampler_arg: Option<String>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            otlp_headers: None,
            otlp_headers_file: None,
            trace_filter: "info".to_owned(),
            trace_sampler: "parentbased_always_on".to_owned(),
            trace_sampler_arg: None,
        }
    }
}

/// Binds a listening socket; a failure names the setting that chose the address.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::new(setting, format!("cannot listen on {addr}: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Json,
    Text,
}

/// Where a standalone service binary listens for Prometheus scrapes.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
}

/// Where a service's events go and come from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EventArgs {
    /// RabbitMQ URL. Unset (and no file): events wait in the outbox and nothing is consumed.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// File holding the RabbitMQ URL (with its password), as a secret store mounts it.
    #[arg(long, env = "AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
}

impl EventArgs {
    /// The broker URL, if one is configured.
    pub fn url(&self) -> Result<Option<Secret>, ConfigError> {
        Ok(value_or_file(
            "AMQP_URL",
            self.amqp_url.clone(),
            self.amqp_url_file.as_deref(),
        )?
        .map(|(url, _)| url))
    }
}

/// What a token must say to be accepted here: who issued it and for whom. Shared by the
/// issuer (user-service) and every verifier, so the two cannot disagree.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// `iss` of every token user-service issues and every service accepts.
    #[arg(long, env = "JWT_ISSUER", default_value = "shop-mesh")]
    pub jwt_issuer: String,

    /// `aud` of every token.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "shop-api")]
    pub jwt_audience: String,

    /// Clock skew tolerated when checking `exp`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// How many verified tokens each verifier remembers until they expire, so a client's next
    /// call skips the RSA verification; 0 verifies every call.
    #[arg(long, env = "JWT_VERIFIED_CACHE_SIZE", default_value_t = 10_000)]
    pub jwt_verified_cache_size: usize,
}

impl Default for JwtArgs {
    fn default() -> Self {
        Self {
            jwt_issuer: "shop-mesh".to_owned(),
            jwt_audience: "shop-api".to_owned(),
            jwt_leeway: Duration::from_secs(30),
            jwt_verified_cache_size: 10_000,
        }
    }
}

impl JwtArgs {
    pub fn verifier_config(&self) -> crate::auth::VerifierConfig {
        crate::auth::VerifierConfig {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_seconds: self.jwt_leeway.as_secs(),
            cache_size: self.jwt_verified_cache_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_file_setting_is_read_and_its_trailing_newline_trimmed() -> anyhow::Result<()> {
        let mut file = tempfile::NamedTempFile::new()?;
        writeln!(file, "postgres://shop:s3cret@db/shop")?;
        let (secret, source) = value_or_file("DATABASE_URL", None, Some(file.path()))?
            .ok_or_else(|| anyhow::anyhow!("expected a value"))?;
        assert_eq!(secret.expose(), "postgres://shop:s3cret@db/shop");
        assert_eq!(source, Source::File(file.path().display().to_string()));
        Ok(())
    }

    #[test]
    fn a_missing_file_names_the_file_setting() {
        let err = value_or_file("DATABASE_URL", None, Some(Path::new("/nonexistent/db-url")))
            .expect_err("a missing file must fail");
        assert_eq!(err.setting, "DATABASE_URL_FILE");
        assert!(err.to_string().contains("/nonexistent/db-url"), "{err}");
    }

    #[test]
    fn an_empty_file_is_refused() -> anyhow::Result<()> {
        let file = tempfile::NamedTempFile::new()?;
        let err = value_or_file("JWT_KEY", None, Some(file.path())).expect_err("empty must fail");
        assert_eq!(err.setting, "JWT_KEY_FILE");
        Ok(())
    }

    #[test]
    fn value_and_file_together_are_refused() {
        let err = value_or_file("DATABASE_URL", Some("x".into()), Some(Path::new("/tmp/y")))
            .expect_err("ambiguous settings must fail");
        assert_eq!(err.setting, "DATABASE_URL");
    }

    #[test]
    fn secrets_do_not_print_their_value() {
        let secret = Secret::new("hunter2hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "*** Secret(***)");
    }
}
