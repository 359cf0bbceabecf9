//! A user-service (for real tokens) and a product-service on the backend under test, both on
//! ephemeral ports, sharing one in-process event bus.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::Context as _;
use product_service::Config;
use shop_common::{
    config::Secret,
    events::{EventBus, InProcessBus},
    service::Start,
    storage::ScratchDatabase,
};
use shop_proto::{
    common::v1::Money,
    product::v1::{self as pb, product_service_client::ProductServiceClient},
    user::v1::{self as user_pb, user_service_client::UserServiceClient},
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{Request, transport::Channel};

const ADMIN_EMAIL: &str = "admin@shop.test";
const ADMIN_PASSWORD: &str = "admin password for tests";
const CLIENT_ID: &str = "order-service";
const CLIENT_SECRET: &str = "order-service-secret-for-tests";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
    Mongo,
}

/// The catalogue database of one test (and, on PostgreSQL, the guard that drops it); `None`
/// (skipped, said so) when the backend is absent.
async fn database(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> anyhow::Result<Option<(String, Option<ScratchDatabase>)>> {
    let name = format!("test_product_{}", uuid::Uuid::new_v4().simple());
    match backend {
        Backend::Sqlite => Ok(Some((
            format!("sqlite://{}", dir.path().join("product.db").display()),
            None,
        ))),
        Backend::Postgres => {
            let Ok(server) = std::env::var("DATABASE_URL") else {
                eprintln!("skipped: DATABASE_URL is not set, so PostgreSQL is not tested");
                return Ok(None);
            };
            let (url, scratch) = ScratchDatabase::create(&server, &name).await?;
            Ok(Some((url, Some(scratch))))
        }
        Backend::Mongo => {
            let Ok(server) = std::env::var("MONGODB_URL") else {
                eprintln!("skipped: MONGODB_URL is not set, so MongoDB is not tested");
                return Ok(None);
            };
            let (base, query) = server.split_once('?').unwrap_or((&server, ""));
            let base = base.trim_end_matches('/');
            let url = if query.is_empty() {
                format!("{base}/{name}")
            } else {
                format!("{base}/{name}?{query}")
            };
            Ok(Some((url, None)))
        }
    }
}

fn signing_key() -> anyhow::Result<String> {
    static KEY: OnceLock<String> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key.clone());
    }
    let key = user_service::SigningKeys::generate_pem()?;
    Ok(KEY.get_or_init(|| key).clone())
}

pub(crate) struct Shop {
    pub(crate) products: ProductServiceClient<Channel>,
    pub(crate) bus: Arc<InProcessBus>,
    pub(crate) admin: String,
    /// The admin's user id (the `sub` of `admin`).
    pub(crate) admin_id: String,
    pub(crate) customer: String,
    pub(crate) service: String,
    catalogue: String,
    user_url: String,
    shutdown: CancellationToken,
    /// Stops product-service alone (see [`Shop::restart_products`]).
    product_stop: CancellationToken,
    product_task: Option<JoinHandle<anyhow::Result<()>>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _scratch: Option<ScratchDatabase>,
    _dir: tempfile::TempDir,
}

/// product-service on `catalogue` and a port of its own, consuming from `bus`.
async fn start_products(
    catalogue: &str,
    user_url: &str,
    bus: Arc<InProcessBus>,
    stop: CancellationToken,
) -> anyhow::Result<(
    ProductServiceClient<Channel>,
    JoinHandle<anyhow::Result<()>>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = Config::local(addr, catalogue.to_owned(), user_url.to_owned());
    // A read cache that never expires in a test: a read after a change shows the change only
    // if the change dropped what the cache held, so every such read in the suite checks that.
    config.read_cache_ttl = Duration::from_secs(3600);
    let task = tokio::spawn(async move {
        let bus: Arc<dyn EventBus> = bus;
        let start = Start::new(listener, stop).with_bus(bus);
        product_service::serve(config, start).await?;
        anyhow::Ok(())
    });
    Ok((ProductServiceClient::new(channel(addr).await?), task))
}

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .timeout(Duration::from_secs(30))
        .connect()
        .await?)
}

impl Shop {
    pub(crate) async fn start(backend: Backend) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let Some((catalogue, scratch)) = database(backend, &dir).await? else {
            return Ok(None);
        };
        let shutdown = CancellationToken::new();
        let bus = Arc::new(InProcessBus::new());

        let user_listener = TcpListener::bind("127.0.0.1:0").await?;
        let user_addr = user_listener.local_addr()?;
        let mut users = user_service::Config::local(
            user_addr,
            format!("sqlite://{}", dir.path().join("user.db").display()),
        );
        users.signing_key = Some(signing_key()?);
        users.service_clients = Some(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
        users.seed_users = vec![user_service::SeedUser {
            email: ADMIN_EMAIL.to_owned(),
            password: Secret::new(ADMIN_PASSWORD),
            display_name: "Admin".to_owned(),
            admin: true,
        }];
        let user_task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                user_service::serve(users, Start::new(user_listener, shutdown)).await?;
                anyhow::Ok(())
            }
        });

        let user_url = format!("http://{user_addr}");
        let product_stop = shutdown.child_token();
        let (products, product_task) =
            start_products(&catalogue, &user_url, bus.clone(), product_stop.clone()).await?;

        let mut users = UserServiceClient::new(channel(user_addr).await?);
        let login = |email: &str, password: &str| user_pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        let signed_in = users
            .login(login(ADMIN_EMAIL, ADMIN_PASSWORD))
            .await?
            .into_inner();
        let admin_id = signed_in
            .user
            .as_ref()
            .map(|u| u.user_id.clone())
            .context("no user in the login response")?;
        let admin = token(signed_in)?;
        users
            .register(user_pb::RegisterRequest {
                email: "ada@example.com".to_owned(),
                password: "correct horse battery".to_owned(),
                display_name: "Ada".to_owned(),
            })
            .await?;
        let customer = token(
            users
                .login(login("ada@example.com", "correct horse battery"))
                .await?
                .into_inner(),
        )?;
        let service = users
            .issue_service_token(user_pb::IssueServiceTokenRequest {
                client_id: CLIENT_ID.to_owned(),
                client_secret: CLIENT_SECRET.to_owned(),
            })
            .await?
            .into_inner()
            .access_token;

        Ok(Some(Self {
            products,
            bus,
            admin,
            admin_id,
            customer,
            service,
            catalogue,
            user_url,
            shutdown,
            product_stop,
            product_task: Some(product_task),
            tasks: vec![user_task],
            _scratch: scratch,
            _dir: dir,
        }))
    }

    /// Stops product-service and starts it again on the same catalogue, with a new bus: nothing
    /// is delivered again, so what it knows afterwards it kept in its store.
    pub(crate) async fn restart_products(&mut self) -> anyhow::Result<()> {
        self.product_stop.cancel();
        if let Some(task) = self.product_task.take() {
            task.await??;
        }
        self.bus = Arc::new(InProcessBus::new());
        self.product_stop = self.shutdown.child_token();
        let (products, task) = start_products(
            &self.catalogue,
            &self.user_url,
            self.bus.clone(),
            self.product_stop.clone(),
        )
        .await?;
        self.products = products;
        self.product_task = Some(task);
        Ok(())
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for task in self.tasks.into_iter().chain(self.product_task) {
            task.await??;
        }
        Ok(())
    }

    pub(crate) fn client(&self) -> ProductServiceClient<Channel> {
        self.products.clone()
    }

    /// Creates a product as the admin.
    pub(crate) async fn create(&self, product: pb::Product) -> anyhow::Result<pb::Product> {
        self.client()
            .create_product(bearer(
                pb::CreateProductRequest {
                    product: Some(product),
                },
                &self.admin,
            ))
            .await?
            .into_inner()
            .product
            .context("no product in the response")
    }

    pub(crate) async fn get(&self, id: &str) -> anyhow::Result<pb::Product> {
        self.client()
            .get_product(pb::GetProductRequest {
                product_id: id.to_owned(),
            })
            .await?
            .into_inner()
            .product
            .context("no product in the response")
    }

    pub(crate) async fn reserve(
        &self,
        order_id: &str,
        items: &[(&str, i32)],
    ) -> Result<pb::ReserveStockResponse, tonic::Status> {
        let request = pb::ReserveStockRequest {
            order_id: order_id.to_owned(),
            items: items
                .iter()
                .map(|(id, quantity)| pb::StockItem {
                    product_id: (*id).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
        };
        Ok(self
            .client()
            .reserve_stock(bearer(request, &self.service))
            .await?
            .into_inner())
    }
}

fn token(response: user_pb::LoginResponse) -> anyhow::Result<String> {
    Ok(response.tokens.context("no tokens")?.access_token)
}

pub(crate) fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A valid product to vary.
pub(crate) fn product(sku: &str, category: &str, price: i64, stock: i32) -> pb::Product {
    pb::Product {
        sku: sku.to_owned(),
        name: format!("Product {sku}"),
        description: format!("The {category} item called {sku}"),
        category: category.to_owned(),
        price: Some(Money {
            amount_minor: price,
            currency: "EUR".to_owned(),
        }),
        stock,
        ..pb::Product::default()
    }
}
