//! The client side: the CA bundle outgoing channels trust and the certificate they present,
//! and the connector that does TCP plus the handshake for `https://` channels.

use std::{
    fmt, io,
    sync::Arc,
    task::{Context, Poll},
};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;

use super::{
    provider,
    reload::{PemFile, Reloading, pair_refused},
};
use crate::{
    BoxFuture,
    config::{ClientTlsArgs, ConfigError},
};

/// What outgoing gRPC channels trust and present; [`ClientTls::none`] when nothing is
/// configured, and then only `http://` URLs can be used.
#[derive(Clone, Default)]
pub struct ClientTls(Option<Arc<Reloading<ClientConfig>>>);

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientTls").field(&self.0.is_some()).finish()
    }
}

impl ClientTls {
    /// Plaintext channels only (`shop up`, the mesh, tests).
    pub fn none() -> Self {
        Self(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn connector(&self) -> Option<TlsConnector> {
        self.0.clone().map(|config| TlsConnector { config })
    }
}

impl ClientTlsArgs {
    /// The channels' TLS, read and checked now (a bad file stops the start with an error
    /// naming its setting); [`ClientTls::none`] when no CA is configured.
    pub fn load(&self) -> Result<ClientTls, ConfigError> {
        let identity = match (
            &self.grpc_client_tls_cert_file,
            &self.grpc_client_tls_key_file,
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                PemFile::new("GRPC_CLIENT_TLS_CERT_FILE", cert),
                PemFile::new("GRPC_CLIENT_TLS_KEY_FILE", key),
            )),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "GRPC_CLIENT_TLS_KEY_FILE",
                    "is required with GRPC_CLIENT_TLS_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "GRPC_CLIENT_TLS_CERT_FILE",
                    "is required with GRPC_CLIENT_TLS_KEY_FILE",
                ));
            }
        };
        let Some(ca) = self.grpc_client_tls_ca_file.as_deref() else {
            return match identity {
                Some(_) => Err(ConfigError::new(
                    "GRPC_CLIENT_TLS_CA_FILE",
                    "is required with GRPC_CLIENT_TLS_CERT_FILE: it is what servers' certificates are checked against",
                )),
                None => Ok(ClientTls::none()),
            };
        };
        let ca = PemFile::new("GRPC_CLIENT_TLS_CA_FILE", ca);
        let mut files = vec![ca.clone()];
        if let Some((cert, key)) = &identity {
            files.extend([cert.clone(), key.clone()]);
        }
        let build = move |contents: &[Vec<u8>]| {
            client_config(
                (&ca, &contents[0]),
                identity.as_ref().map(|(cert, key)| {
                    (
                        (cert, contents[1].as_slice()),
                        (key, contents[2].as_slice()),
                    )
                }),
            )
        };
        Ok(ClientTls(Some(Arc::new(Reloading::load(
            files,
            Box::new(build),
        )?))))
    }
}

type Identity<'a> = ((&'a PemFile, &'a [u8]), (&'a PemFile, &'a [u8]));

fn client_config(
    (ca_file, ca): (&PemFile, &[u8]),
    identity: Option<Identity<'_>>,
) -> Result<ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in ca_file.certificates(ca)? {
        roots.add(certificate).map_err(|e| ca_file.refused(e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ca_file.refused(e))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(((cert_file, cert), (key_file, key))) => builder
            .with_client_auth_cert(cert_file.certificates(cert)?, key_file.private_key(key)?)
            .map_err(|e| pair_refused(cert_file, key_file, &e))?,
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Connects to the URI's host and port and does the TLS handshake with the configuration current
/// at that moment, so a reconnect after a rotation presents the new certificate.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    config: Arc<Reloading<ClientConfig>>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidInput, reason);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("{host} is not a server name: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config.current())
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}
