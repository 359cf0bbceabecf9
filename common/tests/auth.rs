//! Token verification and per-method roles over real gRPC: the kit's auth layer in front of a
//! test payment service whose handler reports who called it.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use shop_common::{
    BoxFuture,
    auth::{Access, AuthLayer, Claims, KeySource, Policy, Role, Verifier, VerifierConfig},
    config::ShutdownArgs,
    grpc::GrpcServer,
};
use shop_proto::payment::v1::{
    GetPaymentRequest, GetPaymentResponse, ListPaymentsRequest, ListPaymentsResponse, Payment,
    RefundPaymentRequest, RefundPaymentResponse,
    payment_service_client::PaymentServiceClient,
    payment_service_server::{PaymentService, PaymentServiceServer},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, transport::Channel};

const ISSUER: &str = "https://users.shop.test";
const AUDIENCE: &str = "shop";

/// Answers with the caller's subject, as the auth layer left it in the request.
struct WhoAmI;

#[tonic::async_trait]
impl PaymentService for WhoAmI {
    async fn get_payment(
        &self,
        request: Request<GetPaymentRequest>,
    ) -> Result<Response<GetPaymentResponse>, Status> {
        let caller = request
            .extensions()
            .get::<Claims>()
            .map(|c| c.sub.clone())
            .ok_or_else(|| Status::internal("no claims reached the handler"))?;
        Ok(Response::new(GetPaymentResponse {
            payment: Some(Payment {
                user_id: caller,
                ..Payment::default()
            }),
        }))
    }

    async fn list_payments(
        &self,
        _: Request<ListPaymentsRequest>,
    ) -> Result<Response<ListPaymentsResponse>, Status> {
        Ok(Response::new(ListPaymentsResponse::default()))
    }

    async fn refund_payment(
        &self,
        _: Request<RefundPaymentRequest>,
    ) -> Result<Response<RefundPaymentResponse>, Status> {
        Ok(Response::new(RefundPaymentResponse::default()))
    }
}

struct Key {
    private: Vec<u8>,
    public: Vec<u8>,
}

fn openssl(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let output = std::process::Command::new("openssl")
        .args(args)
        .output()
        .context("the auth tests make RSA keys with the openssl command")?;
    anyhow::ensure!(output.status.success(), "openssl {args:?} failed");
    Ok(output.stdout)
}

fn rsa_key(dir: &Path, name: &str) -> anyhow::Result<Key> {
    let path = dir.join(name);
    let path = path.to_str().context("utf-8 temp path")?;
    openssl(&["genrsa", "-out", path, "2048"])?;
    Ok(Key {
        private: std::fs::read(path)?,
        public: openssl(&["rsa", "-in", path, "-pubout"])?,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn claims(sub: &str, roles: &[Role]) -> Claims {
    Claims {
        sub: sub.to_owned(),
        email: format!("{sub}@example.com"),
        roles: roles.to_vec(),
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        exp: now() + 900,
        iat: now(),
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

fn sign(key: &Key, kid: &str, claims: &Claims) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&key.private)?,
    )?)
}

struct Fixture {
    old: Key,
    new: Key,
    stranger: Key,
    verifier: Arc<Verifier>,
    client: PaymentServiceClient<Channel>,
    channel: Channel,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

async fn fixture() -> anyhow::Result<Fixture> {
    fixture_with(|_, _| None).await
}

/// The fixture, its auth layer given the key source `source` makes (from the verifier and the
/// new key).
async fn fixture_with(
    source: impl FnOnce(Arc<Verifier>, &Key) -> Option<Arc<dyn KeySource>>,
) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let (old, new, stranger) = (
        rsa_key(dir.path(), "old.pem")?,
        rsa_key(dir.path(), "new.pem")?,
        rsa_key(dir.path(), "stranger.pem")?,
    );
    let verifier = Arc::new(Verifier::new(&VerifierConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        leeway_seconds: 30,
        cache_size: 100,
    }));
    verifier.add_pem("old", &old.public)?;
    let policy = Policy::new([
        (
            "/shop.payment.v1.PaymentService/GetPayment",
            Access::Roles(&[Role::Customer, Role::Admin]),
        ),
        (
            "/shop.payment.v1.PaymentService/RefundPayment",
            Access::Roles(&[Role::Admin]),
        ),
        // ListPayments is left out on purpose: forgotten methods must be denied.
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = GrpcServer::new(
        "auth-test",
        shop_proto::FILE_DESCRIPTOR_SET,
        ShutdownArgs::default(),
    )
    .add_service(PaymentServiceServer::new(WhoAmI));
    let auth = AuthLayer::new(verifier.clone(), policy);
    let server = server.with_auth(match source(verifier.clone(), &new) {
        Some(source) => auth.with_key_source(source),
        None => auth,
    });
    tokio::spawn(server.serve(listener, stop.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(Fixture {
        old,
        new,
        stranger,
        verifier,
        client: PaymentServiceClient::new(channel.clone()),
        channel,
        _stop: stop.drop_guard(),
        _dir: dir,
    })
}

impl Fixture {
    async fn get(&self, token: Option<&str>) -> Result<String, Status> {
        let mut request = Request::new(GetPaymentRequest::default());
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("header"))?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = self.client.clone().get_payment(request).await?;
        Ok(response
            .into_inner()
            .payment
            .map(|p| p.user_id)
            .unwrap_or_default())
    }
}

fn code(result: Result<String, Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test]
async fn tokens_are_verified_and_roles_enforced_per_method() -> anyhow::Result<()> {
    let f = fixture().await?;
    let customer = claims("user-1", &[Role::Customer]);

    // A valid token reaches the handler with its claims.
    assert_eq!(
        f.get(Some(&sign(&f.old, "old", &customer)?)).await?,
        "user-1"
    );

    // Everything else is UNAUTHENTICATED, with one message that says nothing about why.
    let expired = Claims {
        exp: now() - 120,
        ..customer.clone()
    };
    let wrong_audience = Claims {
        aud: "another-shop".into(),
        ..customer.clone()
    };
    let wrong_issuer = Claims {
        iss: "https://evil.test".into(),
        ..customer.clone()
    };
    let header_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"old"}"#);
    let admin_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("user-1", &[Role::Admin]))?);
    let valid = sign(&f.old, "old", &customer)?;
    let mut parts = valid.split('.');
    let (header, _, signature) = (
        parts.next().context("header")?,
        parts.next().context("payload")?,
        parts.next().context("signature")?,
    );
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("old".into());
    let rejected = [
        ("expired", sign(&f.old, "old", &expired)?),
        ("wrong audience", sign(&f.old, "old", &wrong_audience)?),
        ("wrong issuer", sign(&f.old, "old", &wrong_issuer)?),
        ("unknown key", sign(&f.stranger, "stranger", &customer)?),
        ("known kid, wrong key", sign(&f.stranger, "old", &customer)?),
        ("alg none", format!("{header_none}.{admin_body}.")),
        (
            "HS256 keyed with the public key",
            jsonwebtoken::encode(&hs256, &customer, &EncodingKey::from_secret(&f.old.public))?,
        ),
        (
            "tampered payload",
            format!("{header}.{admin_body}.{signature}"),
        ),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (case, token) in rejected {
        let status = f.get(Some(&token)).await.expect_err(case);
        assert_eq!(status.code(), Code::Unauthenticated, "{case}");
        assert_eq!(status.message(), "invalid or expired token", "{case}");
    }
    assert_eq!(code(f.get(None).await), Code::Unauthenticated, "no token");

    // Authenticated but not allowed: PERMISSION_DENIED.
    let customer_token = sign(&f.old, "old", &customer)?;
    let mut refund = Request::new(RefundPaymentRequest::default());
    refund
        .metadata_mut()
        .insert("authorization", format!("Bearer {customer_token}").parse()?);
    let status = f
        .client
        .clone()
        .refund_payment(refund)
        .await
        .expect_err("admins only");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("admin"), "{}", status.message());

    // A method missing from the table is denied even to an admin.
    let admin_token = sign(&f.old, "old", &claims("root", &[Role::Admin]))?;
    let mut list = Request::new(ListPaymentsRequest::default());
    list.metadata_mut()
        .insert("authorization", format!("Bearer {admin_token}").parse()?);
    let status = f
        .client
        .clone()
        .list_payments(list)
        .await
        .expect_err("not in the table");
    assert_eq!(status.code(), Code::PermissionDenied);
    Ok(())
}

#[tokio::test]
async fn a_token_signed_with_the_old_key_still_verifies_after_rotation() -> anyhow::Result<()> {
    let f = fixture().await?;
    let before = sign(&f.old, "old", &claims("user-2", &[Role::Customer]))?;
    assert!(!f.verifier.knows("new"));
    f.verifier.add_pem("new", &f.new.public)?;
    let after = sign(&f.new, "new", &claims("user-3", &[Role::Customer]))?;
    assert_eq!(f.get(Some(&before)).await?, "user-2");
    assert_eq!(f.get(Some(&after)).await?, "user-3");
    Ok(())
}

/// Stands in for the JWKS endpoint after a rotation: each refresh publishes the new key.
struct RotatedKeys {
    verifier: Arc<Verifier>,
    new_public: Vec<u8>,
    refreshes: AtomicU32,
}

impl KeySource for RotatedKeys {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            if let Err(error) = self.verifier.add_pem("new", &self.new_public) {
                tracing::error!(%error, "test key rejected");
            }
        })
    }
}

#[tokio::test]
async fn a_token_naming_an_unknown_key_makes_the_layer_fetch_keys_once_and_verify_again()
-> anyhow::Result<()> {
    let rotated = std::sync::OnceLock::new();
    let f = fixture_with(|verifier, new| {
        let source = Arc::new(RotatedKeys {
            verifier,
            new_public: new.public.clone(),
            refreshes: AtomicU32::new(0),
        });
        let _ = rotated.set(source.clone());
        Some(source)
    })
    .await?;
    let source = rotated.get().context("the fixture made the source")?;
    let old_key_token = sign(&f.old, "old", &claims("user-4", &[Role::Customer]))?;
    assert_eq!(f.get(Some(&old_key_token)).await?, "user-4");
    assert_eq!(
        source.refreshes.load(Ordering::SeqCst),
        0,
        "known kid: no fetch"
    );

    let new_key_token = sign(&f.new, "new", &claims("user-5", &[Role::Customer]))?;
    assert_eq!(f.get(Some(&new_key_token)).await?, "user-5");
    assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(f.get(Some(&new_key_token)).await?, "user-5");
    assert_eq!(
        source.refreshes.load(Ordering::SeqCst),
        1,
        "now known: no fetch"
    );

    let forged = sign(&f.stranger, "stranger", &claims("user-6", &[Role::Admin]))?;
    assert_eq!(code(f.get(Some(&forged)).await), Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn health_needs_no_token() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(f.channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;
    assert_eq!(
        answer.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    Ok(())
}

/// The key's RSA modulus as a JWK `n` (base64url, no padding), read with openssl.
fn modulus(dir: &Path, key: &Key) -> anyhow::Result<String> {
    let path = dir.join("for-modulus.pem");
    std::fs::write(&path, &key.private)?;
    let out = openssl(&[
        "rsa",
        "-in",
        path.to_str().context("utf-8 path")?,
        "-noout",
        "-modulus",
    ])?;
    let hex = String::from_utf8(out)?
        .trim()
        .strip_prefix("Modulus=")
        .context("openssl prints Modulus=…")?
        .to_owned();
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[tokio::test]
async fn keys_from_a_standard_jwk_set_verify_tokens() -> anyhow::Result<()> {
    let f = fixture().await?;
    let n = modulus(f._dir.path(), &f.new)?;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(serde_json::json!({
        "keys": [
            { "kty": "RSA", "kid": "from-jwks", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB" },
            { "kty": "oct", "kid": "symmetric", "k": "c2VjcmV0" }
        ]
    }))?;
    assert_eq!(f.verifier.add_jwks(&jwks), 1, "only the RSA key is taken");
    let token = sign(&f.new, "from-jwks", &claims("user-4", &[Role::Customer]))?;
    assert_eq!(f.get(Some(&token)).await?, "user-4");
    Ok(())
}
