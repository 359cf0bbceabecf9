//! The server side: the certificate a gRPC port presents, the client CA that makes it require
//! client certificates (mTLS), and the stream of accepted connections that does the handshakes.

use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use rustls::{ServerConfig, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    task::JoinSet,
};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::instrument::WithSubscriber as _;

use super::{
    SERVER_ALPN, provider,
    reload::{PemFile, Reloading, pair_refused},
};
use crate::config::{ConfigError, ServerTlsArgs};

/// A client that connects and says nothing holds a handshake slot at most this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for a gRPC port; with a client CA, mutual.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<Reloading<ServerConfig>>,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Whether clients must present a certificate from the client CA.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }
}

impl ServerTlsArgs {
    /// The server's TLS, or `None` when no certificate is configured (plaintext: the default,
    /// and the setting inside a mesh). Reads and checks every file now, so a bad one stops the
    /// start with an error naming its setting.
    pub fn load(&self) -> Result<Option<ServerTls>, ConfigError> {
        let (cert, key) = match (&self.grpc_tls_cert_file, &self.grpc_tls_key_file) {
            (None, None) => {
                return match self.grpc_tls_client_ca_file {
                    Some(_) => Err(ConfigError::new(
                        "GRPC_TLS_CLIENT_CA_FILE",
                        "needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE: client certificates are asked for only over TLS",
                    )),
                    None => Ok(None),
                };
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "GRPC_TLS_KEY_FILE",
                    "is required with GRPC_TLS_CERT_FILE",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "GRPC_TLS_CERT_FILE",
                    "is required with GRPC_TLS_KEY_FILE",
                ));
            }
            (Some(cert), Some(key)) => (
                PemFile::new("GRPC_TLS_CERT_FILE", cert),
                PemFile::new("GRPC_TLS_KEY_FILE", key),
            ),
        };
        let client_ca = self
            .grpc_tls_client_ca_file
            .as_deref()
            .map(|path| PemFile::new("GRPC_TLS_CLIENT_CA_FILE", path));
        let mutual = client_ca.is_some();
        let files = [Some(cert.clone()), Some(key.clone()), client_ca.clone()]
            .into_iter()
            .flatten()
            .collect();
        let build = move |contents: &[Vec<u8>]| {
            server_config(
                (&cert, &contents[0]),
                (&key, &contents[1]),
                client_ca.as_ref().map(|ca| (ca, contents[2].as_slice())),
            )
        };
        Ok(Some(ServerTls {
            config: Arc::new(Reloading::load(files, Box::new(build))?),
            mutual,
        }))
    }
}

fn server_config(
    (cert_file, cert): (&PemFile, &[u8]),
    (key_file, key): (&PemFile, &[u8]),
    client_ca: Option<(&PemFile, &[u8])>,
) -> Result<ServerConfig, ConfigError> {
    let chain = cert_file.certificates(cert)?;
    let key = key_file.private_key(key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_file.refused(e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((ca_file, ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in ca_file.certificates(ca)? {
                roots.add(certificate).map_err(|e| ca_file.refused(e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_file.refused(e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| pair_refused(cert_file, key_file, &e))?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

pin_project_lite::pin_project! {
    /// Accepted TCP connections, each after its TLS handshake. Handshakes run on tasks of their
    /// own, so a slow client does not hold up the next; one that fails is logged and dropped,
    /// never passed on (tonic stops serving on an error it does not know).
    pub(crate) struct TlsIncoming<S, IO> {
        #[pin]
        tcp: S,
        tls: ServerTls,
        handshakes: JoinSet<Option<TlsIo<IO>>>,
        tcp_done: bool,
    }
}

impl<S, IO> TlsIncoming<S, IO> {
    pub(crate) fn new(tcp: S, tls: ServerTls) -> Self {
        Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
            tcp_done: false,
        }
    }
}

impl<S, IO, E> Stream for TlsIncoming<S, IO>
where
    S: Stream<Item = Result<IO, E>>,
    IO: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Unpin + Send + 'static,
{
    type Item = Result<TlsIo<IO>, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while !*this.tcp_done {
            match this.tcp.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(io))) => {
                    this.handshakes
                        .spawn(handshake(io, this.tls.clone()).with_current_subscriber());
                }
                // tonic decides which accept errors are worth stopping for.
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => *this.tcp_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match ready!(this.handshakes.poll_join_next(cx)) {
                Some(Ok(Some(io))) => return Poll::Ready(Some(Ok(io))),
                Some(Ok(None)) => {}
                Some(Err(error)) => tracing::warn!(%error, "tls handshake task failed"),
                None if *this.tcp_done => return Poll::Ready(None),
                // Nothing in flight: the TCP stream's waker is registered.
                None => return Poll::Pending,
            }
        }
    }
}

async fn handshake<IO>(io: IO, tls: ServerTls) -> Option<TlsIo<IO>>
where
    IO: AsyncRead + AsyncWrite + Connected<ConnectInfo = TcpConnectInfo> + Unpin,
{
    let peer = io
        .connect_info()
        .remote_addr()
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.current());
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(TlsIo { inner: stream }),
        Ok(Err(error)) if is_refusal(&error) => {
            // The caller's problem (no or a foreign certificate, plaintext), not the server's.
            tracing::info!(%peer, %error, "tls handshake refused");
            None
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "tls handshake timed out");
            None
        }
    }
}

/// Whether rustls refused the peer, rather than the connection dropping (a TCP probe).
fn is_refusal(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

pin_project_lite::pin_project! {
    /// A server connection after its handshake; it reports the TCP peer like a plain one.
    pub(crate) struct TlsIo<IO> {
        #[pin]
        inner: tokio_rustls::server::TlsStream<IO>,
    }
}

impl<IO> Connected for TlsIo<IO>
where
    IO: Connected + AsyncRead + AsyncWrite + Unpin,
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.get_ref().0.connect_info()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
