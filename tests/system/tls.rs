//! mTLS without a mesh, end to end: user, product and order services in this process with every
//! port and every channel between them on mTLS, a checkout crossing all of them; and the README's
//! example, run by bash exactly as written (openssl makes two CAs and their certificates, the real
//! product-service binary serves with mTLS, and grpcurl gets SERVING with the right client
//! certificate and is refused without one or with another CA's).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, ensure};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use shop_common::{
    client::{TracedChannel, lazy_channel},
    config::{ClientTlsArgs, Secret, ServerTlsArgs},
    service::Start,
};
use shop_proto::{
    order::v1::{self as order_pb, OrderStatus, order_service_client::OrderServiceClient},
    product::v1::{self as product_pb, product_service_client::ProductServiceClient},
    user::v1::{self as user_pb, user_service_client::UserServiceClient},
};
use tokio::{net::TcpListener, process::Command};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    chart::{binaries, free_port},
    saga::{address, authed},
};

/// One CA; every port presents a certificate it signed for 127.0.0.1, and every channel one it
/// signed as a client.
struct Pki {
    server: ServerTlsArgs,
    client: ClientTlsArgs,
    _dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, content: String| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, content)?;
            Ok(path)
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |usage| -> anyhow::Result<(String, String)> {
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth)?;
        let ca = write("ca.pem", ca_pem)?;
        Ok(Self {
            server: ServerTlsArgs {
                grpc_tls_cert_file: Some(write("server.pem", server_cert)?),
                grpc_tls_key_file: Some(write("server-key.pem", server_key)?),
                grpc_tls_client_ca_file: Some(ca.clone()),
            },
            client: ClientTlsArgs {
                grpc_client_tls_ca_file: Some(ca),
                grpc_client_tls_cert_file: Some(write("client.pem", client_cert)?),
                grpc_client_tls_key_file: Some(write("client-key.pem", client_key)?),
            },
            _dir: dir,
        })
    }
}

fn spawn<E: std::error::Error + Send + Sync + 'static>(
    serve: impl Future<Output = Result<(), E>> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move { Ok(serve.await?) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_mtls_on_every_port_and_channel_a_checkout_crosses_every_service() -> anyhow::Result<()>
{
    let pki = Pki::new()?;
    let data = tempfile::tempdir()?;
    let sqlite = |name: &str| format!("sqlite://{}", data.path().join(name).display());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let secret = Secret::new("order-secret-for-the-mtls-test");
    let (email, password) = ("mtls@example.com", "a long enough password");

    let user = TcpListener::bind("127.0.0.1:0").await?;
    let user_url = format!("https://{}", user.local_addr()?);
    let mut users = user_service::Config::local(user.local_addr()?, sqlite("user.db"));
    users.server_tls = pki.server.clone();
    users.service_clients = Some(format!("order-service:{}", secret.expose()));
    users.seed_users = vec![user_service::SeedUser {
        email: email.to_owned(),
        password: Secret::new(password),
        display_name: "Mutual".to_owned(),
        admin: false,
    }];
    let _user = spawn(user_service::serve(
        users,
        Start::new(user, shutdown.clone()),
    ));

    let product = TcpListener::bind("127.0.0.1:0").await?;
    let product_url = format!("https://{}", product.local_addr()?);
    let mut products = product_service::Config::local(
        product.local_addr()?,
        sqlite("product.db"),
        user_url.clone(),
    );
    products.seed_demo_catalogue = true;
    products.server_tls = pki.server.clone();
    products.client_tls = pki.client.clone();
    let _product = spawn(product_service::serve(
        products,
        Start::new(product, shutdown.clone()),
    ));

    let order = TcpListener::bind("127.0.0.1:0").await?;
    let order_url = format!("https://{}", order.local_addr()?);
    let mut orders = order_service::Config::local(
        order.local_addr()?,
        sqlite("order.db"),
        user_url.clone(),
        product_url.clone(),
        secret,
    );
    orders.server_tls = pki.server.clone();
    orders.client_tls = pki.client.clone();
    let _order = spawn(order_service::serve(
        orders,
        Start::new(order, shutdown.clone()),
    ));

    // The test's own channels are made like the services' own.
    let tls = pki.client.load()?;
    let channel = |url: &str| lazy_channel("TEST_URL", url, &tls);
    wait_until_serving(channel(&order_url)?).await?;
    wait_until_serving(channel(&product_url)?).await?;

    let token = UserServiceClient::new(channel(&user_url)?)
        .login(user_pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner()
        .tokens
        .context("no tokens")?
        .access_token;
    let product_id = ProductServiceClient::new(channel(&product_url)?)
        .list_products(product_pb::ListProductsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .products
        .first()
        .context("the demo catalogue is empty")?
        .product_id
        .clone();
    // order-service checks the token with keys fetched from user-service, gets its own service
    // token there, and reserves stock at product-service, which checks that token in turn: every
    // hop over mTLS.
    let placed = OrderServiceClient::new(channel(&order_url)?)
        .place_order(authed(
            order_pb::PlaceOrderRequest {
                items: vec![order_pb::PlaceOrderItem {
                    product_id,
                    quantity: 1,
                }],
                shipping_address: Some(address()),
                payment_method_token: "tok_visa".to_owned(),
                idempotency_key: "mtls-checkout".to_owned(),
            },
            &token,
        )?)
        .await?
        .into_inner()
        .order
        .context("no order")?;
    assert_eq!(placed.status(), OrderStatus::PendingPayment);

    // And a caller without a client certificate gets nothing from any of them.
    let anonymous = ClientTlsArgs {
        grpc_client_tls_ca_file: pki.client.grpc_client_tls_ca_file.clone(),
        ..ClientTlsArgs::default()
    }
    .load()?;
    for url in [&user_url, &product_url, &order_url] {
        let refused = tonic_health::pb::health_client::HealthClient::new(lazy_channel(
            "TEST_URL", url, &anonymous,
        )?)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
        assert!(
            refused.is_err(),
            "{url} answered without a client certificate"
        );
    }
    Ok(())
}

async fn wait_until_serving(channel: TracedChannel) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    loop {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map(|answer| answer.into_inner().status());
        if let Ok(ServingStatus::Serving) = status {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "not serving after 30 s: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_readme_mtls_example_answers_the_right_client_and_refuses_the_others()
-> anyhow::Result<()> {
    for tool in ["openssl", "grpcurl"] {
        if Command::new(tool).arg("-version").output().await.is_err() {
            eprintln!("skipped: {tool} is not on PATH (scripts/install-tools.sh installs grpcurl)");
            return Ok(());
        }
    }
    let bin = binaries()?;
    ensure!(
        bin.join("product-service").exists(),
        "no product-service binary in {}: cargo build -p product-service",
        bin.display()
    );
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))?;
    let block = readme
        .split("<!-- mtls:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- mtls:end -->").next())
        .context("the README has no mTLS block")?;
    let script = block
        .trim()
        .trim_start_matches("```sh")
        .trim_end_matches("```");
    let port = free_port()?;
    let scratch = tempfile::tempdir()?;
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let run = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PORT", port.to_string())
        .env("PATH", path)
        .env("TMPDIR", scratch.path())
        // The example's service runs on its own: no broker, no settings of the test's machine.
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .env_remove("GRPC_CLIENT_TLS_CA_FILE")
        .env_remove("GRPC_CLIENT_TLS_CERT_FILE")
        .env_remove("GRPC_CLIENT_TLS_KEY_FILE")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("the README's mTLS block ran for two minutes")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // One answer only: the refused calls printed no status.
    assert_eq!(
        stdout.matches("\"status\": \"SERVING\"").count(),
        1,
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("refused: no client certificate"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("refused: a certificate from another CA"),
        "{stdout}\n{stderr}"
    );
    Ok(())
}
