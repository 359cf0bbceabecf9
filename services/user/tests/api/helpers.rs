//! Starting user-service on an ephemeral port against a fresh database, and the calls and
//! tokens the suite needs.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::ThumbprintHash};
use shop_common::{
    BoxFuture,
    auth::{Claims, Role},
    config::Secret,
    events::{
        Envelope, EventBus as _, EventHandler, HandlerError, InProcessBus, RetryPolicy,
        Subscription,
    },
    service::{Start, StartError},
    storage::ScratchDatabase,
};
use shop_proto::user::v1::{self as pb, user_service_client::UserServiceClient};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};
use user_service::{Config, SeedUser, SigningKeys};

pub(crate) const ADMIN_EMAIL: &str = "admin@shop.test";
pub(crate) const ADMIN_PASSWORD: &str = "admin password for tests";
pub(crate) const CLIENT_ID: &str = "order-service";
pub(crate) const CLIENT_SECRET: &str = "order-service-secret-for-tests";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A database of the test's own, kept across restarts of the service.
pub(crate) struct Db {
    url: String,
    _dir: Option<tempfile::TempDir>,
    _scratch: Option<ScratchDatabase>,
}

impl Db {
    /// `None` (skipped, said so) for PostgreSQL without `DATABASE_URL`.
    pub(crate) async fn fresh(backend: Backend) -> anyhow::Result<Option<Self>> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("user.db").display());
                Ok(Some(Self {
                    url,
                    _dir: Some(dir),
                    _scratch: None,
                }))
            }
            Backend::Postgres => {
                let Ok(server) = std::env::var("DATABASE_URL") else {
                    eprintln!("skipped: DATABASE_URL is not set, so PostgreSQL is not tested");
                    return Ok(None);
                };
                let name = format!("test_user_{}", uuid::Uuid::new_v4().simple());
                let (url, scratch) = ScratchDatabase::create(&server, &name).await?;
                Ok(Some(Self {
                    url,
                    _dir: None,
                    _scratch: Some(scratch),
                }))
            }
        }
    }
}

/// Two signing keys, generated once per test binary (RSA generation is slow).
pub(crate) fn key_pem(which: usize) -> anyhow::Result<&'static str> {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    let keys = match KEYS.get() {
        Some(keys) => keys,
        None => {
            let generated = (0..2)
                .map(|_| SigningKeys::generate_pem())
                .collect::<Result<Vec<_>, _>>()?;
            KEYS.get_or_init(|| generated)
        }
    };
    keys.get(which)
        .map(String::as_str)
        .context("only two test keys")
}

pub(crate) fn kid_of(pem: &str) -> anyhow::Result<String> {
    let keys = SigningKeys::from_pems(pem, &[])?;
    let jwk = keys.jwks().keys.first().context("no key")?;
    Ok(jwk.thumbprint(ThumbprintHash::SHA256)?)
}

/// Signs `claims` with `pem` under `kid`, as a forger holding that key would.
pub(crate) fn sign(pem: &str, kid: &str, claims: &Claims) -> anyhow::Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes())?,
    )?)
}

pub(crate) fn claims_for(sub: &str, roles: &[Role]) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: sub.to_owned(),
        email: String::new(),
        roles: roles.to_vec(),
        iss: "shop-mesh".to_owned(),
        aud: "shop-api".to_owned(),
        exp: now + 600,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

/// Every event the service published, in order.
#[derive(Default)]
pub(crate) struct Events(Mutex<Vec<Envelope>>);

impl Events {
    pub(crate) fn of_type(&self, event_type: &str) -> Vec<Envelope> {
        self.0
            .lock()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.event_type() == event_type)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to 10 s for `count` events of `event_type`.
    pub(crate) async fn wait_for(
        &self,
        event_type: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Envelope>> {
        for _ in 0..200 {
            let found = self.of_type(event_type);
            if found.len() >= count {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "expected {count} {event_type} events, got {}",
            self.of_type(event_type).len()
        )
    }
}

impl EventHandler for Events {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            if let Ok(mut events) = self.0.lock() {
                events.push(envelope.clone());
            }
            Ok(())
        })
    }
}

pub(crate) struct App {
    pub(crate) client: UserServiceClient<Channel>,
    pub(crate) addr: SocketAddr,
    pub(crate) events: Arc<Events>,
    pub(crate) db: Db,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), StartError>>,
}

impl App {
    /// The service on a fresh database, signing with test key 0, with a bootstrap admin and one
    /// service client.
    pub(crate) async fn spawn(backend: Backend) -> anyhow::Result<Option<Self>> {
        let Some(db) = Db::fresh(backend).await? else {
            return Ok(None);
        };
        let signing_key = key_pem(0)?.to_owned();
        Ok(Some(
            Self::spawn_on(db, |config| {
                config.signing_key = Some(signing_key);
            })
            .await?,
        ))
    }

    pub(crate) async fn spawn_on(db: Db, adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = Config::local(addr, db.url.clone());
        config.allow_generated_key = false;
        config.service_clients = Some(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        config.seed_users = vec![SeedUser {
            email: ADMIN_EMAIL.to_owned(),
            password: Secret::new(ADMIN_PASSWORD),
            display_name: "Admin".to_owned(),
            admin: true,
        }];
        adjust(&mut config);

        let bus = Arc::new(InProcessBus::new());
        let events = Arc::new(Events::default());
        let shutdown = CancellationToken::new();
        bus.subscribe(
            Subscription {
                consumer: "test".to_owned(),
                routing_keys: vec!["user.*".to_owned()],
                retry: RetryPolicy::default(),
            },
            events.clone(),
            shutdown.clone(),
        )
        .await?;
        let task = tokio::spawn(user_service::serve(
            config,
            Start::new(listener, shutdown.clone()).with_bus(bus),
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let mut client = UserServiceClient::new(channel);
        // Start-up (migrations, seeding) happens before the server answers.
        let mut ready = false;
        for _ in 0..100 {
            if task.is_finished() {
                break;
            }
            if client.get_jwks(pb::GetJwksRequest {}).await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            let outcome = task.await?;
            anyhow::bail!("user-service did not start: {outcome:?}");
        }
        Ok(Self {
            client,
            addr,
            events,
            db,
            shutdown,
            task,
        })
    }

    /// Stops the service and hands back its database for a restart.
    pub(crate) async fn stop(self) -> anyhow::Result<Db> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(self.db)
    }

    pub(crate) async fn register(&self, email: &str, password: &str) -> anyhow::Result<pb::User> {
        self.client
            .clone()
            .register(pb::RegisterRequest {
                email: email.to_owned(),
                password: password.to_owned(),
                display_name: "Test User".to_owned(),
            })
            .await?
            .into_inner()
            .user
            .context("no user in the response")
    }

    pub(crate) async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<pb::TokenPair, tonic::Status> {
        self.client
            .clone()
            .login(pb::LoginRequest {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| tonic::Status::internal("no tokens in the response"))
    }

    pub(crate) async fn refresh(
        &self,
        refresh_token: &str,
    ) -> Result<pb::TokenPair, tonic::Status> {
        self.client
            .clone()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: refresh_token.to_owned(),
            })
            .await?
            .into_inner()
            .tokens
            .ok_or_else(|| tonic::Status::internal("no tokens in the response"))
    }

    pub(crate) async fn me(&self, access_token: &str) -> Result<pb::User, tonic::Status> {
        self.client
            .clone()
            .get_me(bearer(pb::GetMeRequest {}, access_token))
            .await?
            .into_inner()
            .user
            .ok_or_else(|| tonic::Status::internal("no user in the response"))
    }

    pub(crate) async fn jwks_json(&self) -> anyhow::Result<serde_json::Value> {
        let keys = self
            .client
            .clone()
            .get_jwks(pb::GetJwksRequest {})
            .await?
            .into_inner()
            .keys;
        let keys: Vec<_> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": k.kty, "kid": k.kid, "use": k.r#use, "alg": k.alg, "n": k.n, "e": k.e,
                })
            })
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }
}

pub(crate) fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The Python of the tools venv (`scripts/install-tools.sh`), if PyJWT is there.
pub(crate) fn pyjwt_python() -> Option<PathBuf> {
    let venv = std::env::var_os("SHOP_TOOLS_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/shop-mesh/tools-venv"))
        })?;
    let python = venv.join("bin/python");
    let has_jwt = std::process::Command::new(&python)
        .args(["-c", "import jwt"])
        .output()
        .is_ok_and(|out| out.status.success());
    has_jwt.then_some(python)
}
