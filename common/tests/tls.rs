//! Native TLS and mTLS of the server kit and of outgoing channels, over real TLS on loopback with
//! certificates made here: who is refused, who gets an answer, and rotated files taking effect
//! on new connections without a restart.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use shop_common::{
    client::lazy_channel,
    config::{ClientTlsArgs, ServerTlsArgs, ShutdownArgs},
    grpc::{GrpcServer, ServeError},
    tls::ClientTls,
};
use tempfile::TempDir;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A certificate authority made for one test.
struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A leaf certificate and its key, as PEM: for 127.0.0.1 and localhost (server) or a client.
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> anyhow::Result<Leaf> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            der: cert.der().clone(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    fn server(&self) -> anyhow::Result<Leaf> {
        self.issue("server", ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self) -> anyhow::Result<Leaf> {
        self.issue("client", ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Leaf {
    der: CertificateDer<'static>,
    cert: String,
    key: String,
}

/// Writes `content` to `path` the way cert-manager and Vault Agent rotate: a new file renamed
/// over the old one.
fn replace(path: &Path, content: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("new");
    std::fs::write(&staged, content)?;
    std::fs::rename(&staged, path)?;
    Ok(())
}

/// A folder of PEM files for one test.
struct Files(TempDir);

impl Files {
    fn new() -> anyhow::Result<Self> {
        Ok(Self(tempfile::tempdir()?))
    }

    fn write(&self, name: &str, content: &str) -> anyhow::Result<PathBuf> {
        let path = self.0.path().join(name);
        replace(&path, content)?;
        Ok(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Server settings presenting `leaf`, requiring client certificates from `client_ca` if any.
    fn server(&self, leaf: &Leaf, client_ca: Option<&Ca>) -> anyhow::Result<ServerTlsArgs> {
        Ok(ServerTlsArgs {
            grpc_tls_cert_file: Some(self.write("server.pem", &leaf.cert)?),
            grpc_tls_key_file: Some(self.write("server-key.pem", &leaf.key)?),
            grpc_tls_client_ca_file: client_ca
                .map(|ca| self.write("client-ca.pem", &ca.pem))
                .transpose()?,
        })
    }

    /// Client settings trusting `ca` and presenting `leaf` if any.
    fn client(&self, ca: &Ca, leaf: Option<&Leaf>) -> anyhow::Result<ClientTls> {
        let args = ClientTlsArgs {
            grpc_client_tls_ca_file: Some(self.write("ca.pem", &ca.pem)?),
            grpc_client_tls_cert_file: leaf
                .map(|l| self.write("client.pem", &l.cert))
                .transpose()?,
            grpc_client_tls_key_file: leaf
                .map(|l| self.write("client-key.pem", &l.key))
                .transpose()?,
        };
        Ok(args.load()?)
    }
}

/// The server kit with only health and reflection, on an ephemeral loopback port.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    async fn start(tls: &ServerTlsArgs) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let server = GrpcServer::new(
            "tls-test",
            shop_proto::FILE_DESCRIPTOR_SET,
            ShutdownArgs::default(),
        )
        .with_tls(tls.load()?);
        let task = tokio::spawn(server.serve(listener, shutdown.clone()));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    fn https(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

/// One health check over a channel made by `lazy_channel`, as every service-to-service call is.
async fn health(url: &str, tls: &ClientTls) -> Result<ServingStatus, tonic::Status> {
    let channel =
        lazy_channel("TEST_URL", url, tls).map_err(|e| tonic::Status::internal(e.to_string()))?;
    check(&mut HealthClient::new(channel)).await
}

async fn check(
    client: &mut HealthClient<shop_common::client::TracedChannel>,
) -> Result<ServingStatus, tonic::Status> {
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

/// The certificate the server at `addr` presents to a bare TLS client that trusts `trusted`.
async fn served_certificate(
    addr: SocketAddr,
    trusted: &[&Ca],
) -> anyhow::Result<CertificateDer<'static>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in trusted {
        roots.add(ca.der.clone())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.clone().into_owned())
        .context("the server presented no certificate")
}

#[tokio::test]
async fn with_a_client_ca_a_client_presenting_a_certificate_it_signed_gets_an_answer()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, Some(&ca))?).await?;
    let client = files.client(&ca, Some(&ca.client()?))?;

    assert_eq!(
        health(&server.https(), &client).await?,
        ServingStatus::Serving
    );
    server.stop().await
}

#[tokio::test]
async fn with_a_client_ca_a_client_without_a_certificate_is_refused() -> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, Some(&ca))?).await?;
    let client = files.client(&ca, None)?;

    let refused = health(&server.https(), &client).await;
    assert!(
        refused.is_err(),
        "answered without a client certificate: {refused:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn with_a_client_ca_a_client_certificate_from_another_ca_is_refused() -> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let other = Ca::new("someone else's ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, Some(&ca))?).await?;
    // It trusts the right server, but its own certificate comes from elsewhere.
    let client = files.client(&ca, Some(&other.client()?))?;

    let refused = health(&server.https(), &client).await;
    assert!(
        refused.is_err(),
        "answered a foreign client certificate: {refused:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_plaintext_client_is_refused_by_a_tls_port() -> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, Some(&ca))?).await?;

    let url = format!("http://{}", server.addr);
    let refused = health(&url, &ClientTls::none()).await;
    assert!(
        refused.is_err(),
        "a TLS port answered plaintext: {refused:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn without_a_client_ca_the_port_is_tls_and_asks_for_no_client_certificate()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let other = Ca::new("someone else's ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, None)?).await?;

    assert_eq!(
        health(&server.https(), &files.client(&ca, None)?).await?,
        ServingStatus::Serving
    );
    // The client still checks the server: trusting another CA, it refuses to talk.
    let distrusted = health(&server.https(), &files.client(&other, None)?).await;
    assert!(
        distrusted.is_err(),
        "a client accepted a server it does not trust: {distrusted:?}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_rotated_server_certificate_is_presented_on_new_connections_without_a_restart()
-> anyhow::Result<()> {
    let old_ca = Ca::new("old ca")?;
    let new_ca = Ca::new("new ca")?;
    let (old, new) = (old_ca.server()?, new_ca.server()?);
    let files = Files::new()?;
    let server = Server::start(&files.server(&old, None)?).await?;
    let trusts_new = files.client(&new_ca, None)?;
    // One channel throughout: it reconnects after a failure, as a service's channel does.
    let channel = lazy_channel("TEST_URL", &server.https(), &trusts_new)?;
    let mut client = HealthClient::new(channel);

    assert_eq!(
        served_certificate(server.addr, &[&old_ca, &new_ca]).await?,
        old.der
    );
    assert!(
        check(&mut client).await.is_err(),
        "the old certificate passed for the new CA"
    );

    replace(&files.path("server-key.pem"), &new.key)?;
    replace(&files.path("server.pem"), &new.cert)?;

    assert_eq!(
        served_certificate(server.addr, &[&old_ca, &new_ca]).await?,
        new.der
    );
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    server.stop().await
}

#[tokio::test]
async fn a_rotation_to_an_unusable_file_keeps_serving_the_last_good_certificate()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let (first, second) = (ca.server()?, ca.server()?);
    let files = Files::new()?;
    let server = Server::start(&files.server(&first, None)?).await?;
    let client = files.client(&ca, None)?;

    // Half-written: a certificate cut short.
    replace(
        &files.path("server.pem"),
        &second.cert[..second.cert.len() / 2],
    )?;
    assert_eq!(served_certificate(server.addr, &[&ca]).await?, first.der);
    // Complete but not matching the old key yet (the key is replaced second).
    replace(&files.path("server.pem"), &second.cert)?;
    assert_eq!(served_certificate(server.addr, &[&ca]).await?, first.der);
    assert_eq!(
        health(&server.https(), &client).await?,
        ServingStatus::Serving
    );
    // Gone for a moment.
    std::fs::remove_file(files.path("server.pem"))?;
    assert_eq!(served_certificate(server.addr, &[&ca]).await?, first.der);

    replace(&files.path("server.pem"), &second.cert)?;
    replace(&files.path("server-key.pem"), &second.key)?;
    assert_eq!(served_certificate(server.addr, &[&ca]).await?, second.der);
    server.stop().await
}

#[tokio::test]
async fn a_rotated_client_certificate_is_presented_when_the_channel_reconnects()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let other = Ca::new("someone else's ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, Some(&ca))?).await?;
    let client = files.client(&ca, Some(&other.client()?))?;
    let mut health_client = HealthClient::new(lazy_channel("TEST_URL", &server.https(), &client)?);
    assert!(
        check(&mut health_client).await.is_err(),
        "a foreign client certificate passed"
    );

    let good = ca.client()?;
    replace(&files.path("client-key.pem"), &good.key)?;
    replace(&files.path("client.pem"), &good.cert)?;

    assert_eq!(check(&mut health_client).await?, ServingStatus::Serving);
    server.stop().await
}

/// The setting a bad configuration names, or a failure if it was accepted.
fn refused_setting<T: std::fmt::Debug>(
    result: Result<T, shop_common::config::ConfigError>,
) -> String {
    match result {
        Ok(accepted) => panic!("accepted: {accepted:?}"),
        Err(error) => {
            assert!(error.to_string().starts_with("invalid setting "), "{error}");
            error.setting
        }
    }
}

#[test]
fn half_a_certificate_and_key_pair_is_a_configuration_error_naming_the_missing_setting()
-> anyhow::Result<()> {
    let files = Files::new()?;
    let pem = files.write("any.pem", "irrelevant")?;
    let server =
        |cert: Option<&PathBuf>, key: Option<&PathBuf>, ca: Option<&PathBuf>| ServerTlsArgs {
            grpc_tls_cert_file: cert.cloned(),
            grpc_tls_key_file: key.cloned(),
            grpc_tls_client_ca_file: ca.cloned(),
        };
    assert_eq!(
        refused_setting(server(Some(&pem), None, None).load()),
        "GRPC_TLS_KEY_FILE"
    );
    assert_eq!(
        refused_setting(server(None, Some(&pem), None).load()),
        "GRPC_TLS_CERT_FILE"
    );
    assert_eq!(
        refused_setting(server(None, None, Some(&pem)).load()),
        "GRPC_TLS_CLIENT_CA_FILE"
    );
    assert!(
        server(None, None, None).load()?.is_none(),
        "no settings: plaintext"
    );

    let client =
        |ca: Option<&PathBuf>, cert: Option<&PathBuf>, key: Option<&PathBuf>| ClientTlsArgs {
            grpc_client_tls_ca_file: ca.cloned(),
            grpc_client_tls_cert_file: cert.cloned(),
            grpc_client_tls_key_file: key.cloned(),
        };
    assert_eq!(
        refused_setting(client(Some(&pem), Some(&pem), None).load()),
        "GRPC_CLIENT_TLS_KEY_FILE"
    );
    assert_eq!(
        refused_setting(client(Some(&pem), None, Some(&pem)).load()),
        "GRPC_CLIENT_TLS_CERT_FILE"
    );
    assert_eq!(
        refused_setting(client(None, Some(&pem), Some(&pem)).load()),
        "GRPC_CLIENT_TLS_CA_FILE"
    );
    assert!(
        !client(None, None, None).load()?.is_enabled(),
        "no settings: plaintext"
    );
    Ok(())
}

#[test]
fn a_missing_garbled_or_mismatched_file_is_a_configuration_error_naming_its_setting()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let (leaf, other) = (ca.server()?, ca.server()?);
    let files = Files::new()?;
    let good = files.server(&leaf, Some(&ca))?;
    let garbled = files.write(
        "garbled.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    )?;
    let empty = files.write("empty.pem", "")?;
    // PEM, but not X.509 inside.
    let junk = files.write(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n",
    )?;
    let other_key = files.write("other-key.pem", &other.key)?;
    let missing = files.path("missing.pem");

    let cases = [
        (
            ServerTlsArgs {
                grpc_tls_cert_file: Some(missing.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CERT_FILE",
            "cannot read",
        ),
        (
            ServerTlsArgs {
                grpc_tls_cert_file: Some(garbled.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CERT_FILE",
            "not a PEM file",
        ),
        (
            ServerTlsArgs {
                grpc_tls_cert_file: Some(empty.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CERT_FILE",
            "no PEM certificate",
        ),
        (
            ServerTlsArgs {
                grpc_tls_cert_file: Some(junk.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CERT_FILE",
            "not a usable certificate",
        ),
        (
            ServerTlsArgs {
                grpc_tls_client_ca_file: Some(junk.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CLIENT_CA_FILE",
            "",
        ),
        (
            ServerTlsArgs {
                grpc_tls_key_file: Some(empty.clone()),
                ..good.clone()
            },
            "GRPC_TLS_KEY_FILE",
            "no usable PEM private key",
        ),
        (
            ServerTlsArgs {
                grpc_tls_key_file: Some(other_key),
                ..good.clone()
            },
            "GRPC_TLS_KEY_FILE",
            "does not fit the certificate",
        ),
        (
            ServerTlsArgs {
                grpc_tls_client_ca_file: Some(missing.clone()),
                ..good.clone()
            },
            "GRPC_TLS_CLIENT_CA_FILE",
            "cannot read",
        ),
        (
            ServerTlsArgs {
                grpc_tls_client_ca_file: Some(garbled),
                ..good.clone()
            },
            "GRPC_TLS_CLIENT_CA_FILE",
            "not a PEM file",
        ),
    ];
    for (args, setting, reason) in cases {
        let error = args.load().expect_err("a bad file must be refused");
        assert_eq!(error.setting, setting, "{error}");
        assert!(error.reason.contains(reason), "{error}");
    }
    assert!(good.load()?.is_some_and(|tls| tls.is_mutual()));

    let client_leaf = ca.client()?;
    let junk_client = ClientTlsArgs {
        grpc_client_tls_ca_file: good.grpc_tls_client_ca_file.clone(),
        grpc_client_tls_cert_file: Some(junk),
        grpc_client_tls_key_file: Some(files.write("client-key.pem", &client_leaf.key)?),
    };
    assert_eq!(
        refused_setting(junk_client.load()),
        "GRPC_CLIENT_TLS_CERT_FILE"
    );
    let missing_ca = ClientTlsArgs {
        grpc_client_tls_ca_file: Some(missing),
        ..ClientTlsArgs::default()
    };
    assert_eq!(
        refused_setting(missing_ca.load()),
        "GRPC_CLIENT_TLS_CA_FILE"
    );
    Ok(())
}

// A lazy channel needs a runtime even before it connects.
#[tokio::test]
async fn a_url_whose_scheme_does_not_fit_the_client_tls_settings_is_a_configuration_error()
-> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let files = Files::new()?;
    let tls = files.client(&ca, None)?;

    let unencrypted = lazy_channel("PRODUCT_SERVICE_URL", "http://product:50052", &tls);
    assert_eq!(refused_setting(unencrypted), "PRODUCT_SERVICE_URL");
    let untrusted = lazy_channel(
        "PRODUCT_SERVICE_URL",
        "https://product:50052",
        &ClientTls::none(),
    );
    assert_eq!(refused_setting(untrusted), "PRODUCT_SERVICE_URL");
    lazy_channel("PRODUCT_SERVICE_URL", "https://product:50052", &tls)?;
    lazy_channel(
        "PRODUCT_SERVICE_URL",
        "http://product:50052",
        &ClientTls::none(),
    )?;
    Ok(())
}

#[tokio::test]
async fn grpc_web_over_http1_is_served_on_a_tls_port() -> anyhow::Result<()> {
    let ca = Ca::new("shop test ca")?;
    let files = Files::new()?;
    let server = Server::start(&files.server(&ca.server()?, None)?).await?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr).await?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // An empty HealthCheckRequest in one grpc-web frame.
    let frame = [0u8, 0, 0, 0, 0];
    let request = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(&frame).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("grpc-status:0"), "{answer}");
    server.stop().await
}
