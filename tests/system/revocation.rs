//! Ended sessions (issue 15, finding 6): once an account is deleted, or its password or roles
//! change, the access tokens issued before are refused by every service and its refresh tokens
//! are revoked, while a new sign-in works at once. Run on `shop up` (SQLite, in-process bus),
//! across a restart of it, and on PostgreSQL + RabbitMQ.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shop::up::{self, DEMO_ACCOUNTS, Endpoints, UpArgs};
use shop_proto::{
    order::v1::{
        Address, PlaceOrderItem, PlaceOrderRequest, order_service_client::OrderServiceClient,
    },
    payment::v1::{ListPaymentsRequest, payment_service_client::PaymentServiceClient},
    product::v1::{
        CreateProductRequest, ListProductsRequest, Product,
        product_service_client::ProductServiceClient,
    },
    user::v1::{
        DeleteUserRequest, GetMeRequest, LoginRequest, RefreshTokenRequest, RegisterRequest,
        TokenPair, UpdateUserRequest, User, user_service_client::UserServiceClient,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status, transport::Channel};

use crate::{
    helpers::{channel, spawn_system},
    saga::{Backend, Shop},
};

/// How long a revocation may take to reach a service here: milliseconds when healthy.
const PROPAGATION: Duration = Duration::from_secs(20);

/// What the scenarios talk to, whichever way the system was started.
struct Target {
    users: UserServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    products: ProductServiceClient<Channel>,
    admin: String,
    product_id: String,
}

impl Target {
    /// `shop up`'s services, its demo admin and one of its demo products.
    async fn of_shop_up(endpoints: &Endpoints) -> anyhow::Result<Self> {
        let users = UserServiceClient::new(channel(endpoints.user).await?);
        let products = ProductServiceClient::new(channel(endpoints.product).await?);
        let listed = products
            .clone()
            .list_products(ListProductsRequest {
                page_size: 1,
                ..ListProductsRequest::default()
            })
            .await?
            .into_inner();
        let product_id = listed
            .products
            .first()
            .map(|p| p.product_id.clone())
            .context("shop up has no demo product")?;
        let mut target = Self {
            users,
            orders: OrderServiceClient::new(channel(endpoints.order).await?),
            payments: PaymentServiceClient::new(channel(endpoints.payment).await?),
            products,
            admin: String::new(),
            product_id,
        };
        let (_, email, password) = DEMO_ACCOUNTS[0];
        target.admin = target.sign_in(email, password).await?.access_token;
        Ok(target)
    }

    /// The saga harness's services (PostgreSQL + RabbitMQ), its admin and a fresh product.
    async fn of_saga(mut shop: Shop) -> anyhow::Result<(Self, Shop)> {
        let product_id = shop.product(1000, 500).await?;
        let target = Self {
            users: shop.users(),
            orders: shop.orders.clone(),
            payments: shop.payments().await?,
            products: shop.products.clone(),
            admin: shop.admin.clone(),
            product_id,
        };
        Ok((target, shop))
    }

    /// A new customer, signed in: their id and tokens.
    async fn customer(&self, password: &str) -> anyhow::Result<(String, String, TokenPair)> {
        let email = format!("{}@revocation.test", uuid::Uuid::new_v4().simple());
        let registered = self
            .users
            .clone()
            .register(RegisterRequest {
                email: email.clone(),
                password: password.to_owned(),
                display_name: "Revocation test".to_owned(),
            })
            .await?
            .into_inner()
            .user
            .context("no user")?;
        let tokens = self.sign_in(&email, password).await?;
        Ok((registered.user_id, email, tokens))
    }

    async fn place_order(&self, token: &str) -> Result<(), Status> {
        let request = PlaceOrderRequest {
            items: vec![PlaceOrderItem {
                product_id: self.product_id.clone(),
                quantity: 1,
            }],
            shipping_address: Some(address()),
            payment_method_token: "tok_visa".to_owned(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        self.orders
            .clone()
            .place_order(with(request, token)?)
            .await?;
        Ok(())
    }

    async fn list_payments(&self, token: &str) -> Result<(), Status> {
        let request = ListPaymentsRequest::default();
        let mut payments = self.payments.clone();
        payments.list_payments(with(request, token)?).await?;
        Ok(())
    }

    async fn create_product(&self, token: &str) -> Result<(), Status> {
        let request = CreateProductRequest {
            product: Some(Product {
                sku: format!("REVOKE-{}", uuid::Uuid::new_v4().simple()),
                name: "Revocation test product".to_owned(),
                category: "tests".to_owned(),
                price: Some(shop_proto::common::v1::Money {
                    amount_minor: 100,
                    currency: "EUR".to_owned(),
                }),
                stock: 1,
                ..Product::default()
            }),
        };
        let mut products = self.products.clone();
        products.create_product(with(request, token)?).await?;
        Ok(())
    }

    async fn me(&self, token: &str) -> Result<User, Status> {
        let me = self
            .users
            .clone()
            .get_me(with(GetMeRequest {}, token)?)
            .await?;
        me.into_inner()
            .user
            .ok_or_else(|| Status::internal("no user in the response"))
    }

    async fn refresh(&self, refresh_token: &str) -> Result<(), Status> {
        let request = RefreshTokenRequest {
            refresh_token: refresh_token.to_owned(),
        };
        self.users.clone().refresh_token(request).await?;
        Ok(())
    }

    async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<TokenPair> {
        let response = self
            .users
            .clone()
            .login(LoginRequest {
                email: email.to_owned(),
                password: password.to_owned(),
            })
            .await?
            .into_inner();
        response.tokens.context("no tokens")
    }

    /// As the admin, sets the roles of `user_id`.
    async fn set_roles(&self, user_id: &str, roles: &[&str]) -> anyhow::Result<()> {
        let request = UpdateUserRequest {
            user: Some(User {
                user_id: user_id.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ..User::default()
            }),
            // No mask: the fields given, here the roles.
            update_mask: None,
            new_password: String::new(),
        };
        let request = with(request, &self.admin)?;
        self.users.clone().update_user(request).await?;
        Ok(())
    }

    /// As the account itself, sets a new password.
    async fn change_password(
        &self,
        user_id: &str,
        token: &str,
        new_password: &str,
    ) -> anyhow::Result<()> {
        let request = UpdateUserRequest {
            user: Some(User {
                user_id: user_id.to_owned(),
                ..User::default()
            }),
            update_mask: None,
            new_password: new_password.to_owned(),
        };
        self.users
            .clone()
            .update_user(with(request, token)?)
            .await?;
        Ok(())
    }
}

/// `message` with `token` as its bearer.
fn with<T>(message: T, token: &str) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::internal("the token is not header-safe"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn address() -> Address {
    Address {
        recipient: "Ada Lovelace".to_owned(),
        line1: "1 Analytical Row".to_owned(),
        line2: String::new(),
        city: "London".to_owned(),
        postal_code: "N1 7AA".to_owned(),
        country: "GB".to_owned(),
    }
}

/// Asserts the call is refused as a revoked session: UNAUTHENTICATED, saying what to do.
fn assert_revoked(what: &str, outcome: Result<(), Status>) {
    match outcome {
        Err(status) => {
            assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
            assert!(
                status.message().contains("sign in again"),
                "{what}: {:?}",
                status.message()
            );
        }
        Ok(()) => panic!("{what} was accepted with a revoked token"),
    }
}

/// Repeats `call` until it is refused as a revoked session (the revocation travels as an
/// event), failing with what it last answered after [`PROPAGATION`].
async fn refused_soon<F, Fut>(what: &str, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Status>>,
{
    let started = Instant::now();
    loop {
        let outcome = call().await;
        if let Err(status) = &outcome
            && status.code() == Code::Unauthenticated
        {
            assert_revoked(what, outcome);
            return Ok(started.elapsed());
        }
        if started.elapsed() > PROPAGATION {
            bail!("{what} still answers {outcome:?} after {PROPAGATION:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const PASSWORD: &str = "a long enough first password";
const NEW_PASSWORD: &str = "a long enough second password";

/// An admin deletes a customer: the customer's token no longer orders, lists payments or reads
/// the account, and the refresh token is dead.
async fn a_deleted_accounts_token_is_refused_everywhere(target: &Target) -> anyhow::Result<()> {
    let (user_id, _, tokens) = target.customer(PASSWORD).await?;
    let token = tokens.access_token.as_str();
    target.place_order(token).await?;
    target.list_payments(token).await?;

    let request = DeleteUserRequest {
        user_id: user_id.clone(),
    };
    let request = with(request, &target.admin)?;
    target.users.clone().delete_user(request).await?;

    let took = refused_soon("PlaceOrder", || target.place_order(token)).await?;
    eprintln!("order-service refused the deleted account's token after {took:?}");
    refused_soon("ListPayments", || target.list_payments(token)).await?;
    assert_revoked("GetMe", target.me(token).await.map(|_| ()));
    let refreshed = target.refresh(&tokens.refresh_token).await;
    assert_eq!(
        refreshed.map_err(|s| s.code()),
        Err(Code::Unauthenticated),
        "the refresh token died with the account"
    );
    Ok(())
}

/// A customer changes their password: the old token is refused by order-service and
/// user-service, the old refresh token is dead, and a sign-in right after works everywhere.
async fn a_new_password_ends_the_old_sessions_and_a_fresh_sign_in_works(
    target: &Target,
) -> anyhow::Result<()> {
    let (user_id, email, tokens) = target.customer(PASSWORD).await?;
    let old = tokens.access_token.as_str();
    target.place_order(old).await?;

    target.change_password(&user_id, old, NEW_PASSWORD).await?;
    // user-service checks its own list, which the change updated before answering.
    assert_revoked("GetMe", target.me(old).await.map(|_| ()));
    refused_soon("PlaceOrder", || target.place_order(old)).await?;
    let refreshed = target.refresh(&tokens.refresh_token).await;
    assert_eq!(refreshed.map_err(|s| s.code()), Err(Code::Unauthenticated));

    // Signed in right after: the same second as the change would be refused, so the change
    // answered only once its second was over.
    let fresh = target.sign_in(&email, NEW_PASSWORD).await?;
    let fresh = fresh.access_token.as_str();
    assert_eq!(target.me(fresh).await?.user_id, user_id);
    target.place_order(fresh).await?;
    target.list_payments(fresh).await?;
    Ok(())
}

/// An admin demoted to customer: the token that still says `admin` no longer writes the
/// catalogue (product-service), and a new sign-in carries the new roles.
async fn a_demoted_admins_token_no_longer_writes_the_catalogue(
    target: &Target,
) -> anyhow::Result<()> {
    let (user_id, email, _) = target.customer(PASSWORD).await?;
    target.set_roles(&user_id, &["customer", "admin"]).await?;
    let admin = target.sign_in(&email, PASSWORD).await?;
    let admin = admin.access_token.as_str();
    target.create_product(admin).await?;

    target.set_roles(&user_id, &["customer"]).await?;
    refused_soon("CreateProduct", || target.create_product(admin)).await?;

    let customer = target.sign_in(&email, PASSWORD).await?;
    let refused = target.create_product(&customer.access_token).await;
    assert_eq!(
        refused.map_err(|s| s.code()),
        Err(Code::PermissionDenied),
        "the new token says customer"
    );
    Ok(())
}

/// Runs `scenario` on `shop up` on the embedded defaults.
async fn on_shop_up<F>(scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Target) -> anyhow::Result<()>,
{
    let system = spawn_system().await?;
    let target = Target::of_shop_up(&system.endpoints).await?;
    scenario(&target).await
}

/// Runs `scenario` on PostgreSQL + RabbitMQ (skipped, said so, without them).
async fn on_postgres_rabbitmq<F>(scenario: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(&Target) -> anyhow::Result<()>,
{
    let Some(shop) = Shop::start(Backend::PostgresRabbit).await? else {
        return Ok(());
    };
    let (target, _shop) = Target::of_saga(shop).await?;
    scenario(&target).await
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod shop_up {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    super::on_shop_up(super::$test).await
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    super::on_postgres_rabbitmq(super::$test).await
                }
            )*
        }
    };
}

on_both_backends!(
    a_deleted_accounts_token_is_refused_everywhere,
    a_new_password_ends_the_old_sessions_and_a_fresh_sign_in_works,
    a_demoted_admins_token_no_longer_writes_the_catalogue,
);

/// The services keep their revocation lists in their databases: after `shop up` restarts on the
/// same data dir (no event is delivered again), the old token is still refused everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_stays_refused_after_a_restart() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let args = UpArgs::ephemeral(data.path());

    let shutdown = CancellationToken::new();
    let system = up::start(&args, None, shutdown.clone()).await?;
    let target = Target::of_shop_up(&system.endpoints).await?;
    let (user_id, email, tokens) = target.customer(PASSWORD).await?;
    let old = tokens.access_token.clone();
    target.place_order(&old).await?;
    target.change_password(&user_id, &old, NEW_PASSWORD).await?;
    refused_soon("PlaceOrder", || target.place_order(&old)).await?;
    refused_soon("ListPayments", || target.list_payments(&old)).await?;
    shutdown.cancel();
    system.wait().await?;

    let shutdown = CancellationToken::new();
    let system = up::start(&args, None, shutdown.clone()).await?;
    let target = Target::of_shop_up(&system.endpoints).await?;
    assert_revoked("PlaceOrder", target.place_order(&old).await);
    assert_revoked("ListPayments", target.list_payments(&old).await);
    assert_revoked("GetMe", target.me(&old).await.map(|_| ()));
    let fresh = target.sign_in(&email, NEW_PASSWORD).await?;
    target.place_order(&fresh.access_token).await?;
    shutdown.cancel();
    system.wait().await?;
    Ok(())
}
