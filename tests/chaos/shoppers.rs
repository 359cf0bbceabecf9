//! The traffic under the faults: customers placing orders over gRPC with the cards of the
//! simulator, retrying with the same idempotency key as a careful client does when the answer
//! is lost (UNAVAILABLE, a deadline, a cut connection), and now and then cancelling a confirmed
//! order so refunds run under faults too.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use shop_proto::{
    common::v1::Money,
    order::v1::{self as order_pb, OrderStatus, order_service_client::OrderServiceClient},
    product::v1::{self as product_pb, product_service_client::ProductServiceClient},
    user::v1::{self as user_pb, user_service_client::UserServiceClient},
};
use tonic::{Code, Request, transport::Channel};

/// The simulator's cards and how often shoppers use each: most approve, some fail transiently
/// twice per charge (a failing provider), some never answer (a provider slower than its
/// timeout), some are declined.
const CARDS: [(&str, u32); 4] = [
    ("tok_visa", 85),
    ("tok_flaky", 7),
    ("tok_timeout", 3),
    ("tok_declined", 5),
];

/// How long one order may keep being retried before the shopper gives up on it.
const PATIENCE: Duration = Duration::from_secs(90);

/// What the shoppers saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) accepted: AtomicU64,
    pub(crate) out_of_stock: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) cancel_requests: AtomicU64,
    pub(crate) unexpected: AtomicU64,
}

pub(crate) fn lazy(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

pub(crate) fn authed<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

pub(crate) async fn login(users: Channel, email: &str, password: &str) -> anyhow::Result<String> {
    let reply = UserServiceClient::new(users)
        .login(user_pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    Ok(reply.tokens.context("login gave no tokens")?.access_token)
}

/// Registers `count` customers and signs them in.
pub(crate) async fn customers(users: Channel, count: usize) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let email = format!("{}@chaos.test", uuid::Uuid::new_v4().simple());
        let password = "chaos customer password";
        UserServiceClient::new(users.clone())
            .register(user_pb::RegisterRequest {
                email: email.clone(),
                password: password.to_owned(),
                display_name: "Chaos customer".to_owned(),
            })
            .await?;
        tokens.push(login(users.clone(), &email, password).await?);
    }
    Ok(tokens)
}

/// `count` products with `stock` units each, created by the admin; their ids.
pub(crate) async fn products(
    products: Channel,
    admin: &str,
    count: usize,
    stock: i32,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let request = product_pb::CreateProductRequest {
            product: Some(product_pb::Product {
                sku: format!("CHAOS-{n}-{}", uuid::Uuid::new_v4().simple()),
                name: format!("Chaos product {n}"),
                category: "chaos".to_owned(),
                price: Some(Money {
                    amount_minor: 500 + 100 * i64::try_from(n)?,
                    currency: "EUR".to_owned(),
                }),
                stock,
                ..Default::default()
            }),
        };
        let created = ProductServiceClient::new(products.clone())
            .create_product(authed(request, admin)?)
            .await?
            .into_inner();
        ids.push(created.product.context("no product")?.product_id);
    }
    Ok(ids)
}

/// A fault's answer, worth asking again with the same key: the call may or may not have
/// happened.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unauthenticated
    )
}

fn card() -> &'static str {
    let total: u32 = CARDS.iter().map(|(_, weight)| weight).sum();
    let mut pick = fastrand::u32(0..total);
    for (card, weight) in CARDS {
        if pick < weight {
            return card;
        }
        pick -= weight;
    }
    CARDS[0].0
}

/// One shopper: places orders until `target` orders have been accepted by all shoppers.
pub(crate) async fn shop(
    orders: Channel,
    token: String,
    products: Arc<Vec<String>>,
    target: u64,
    tally: Arc<Tally>,
) {
    while tally.accepted.load(Ordering::SeqCst) < target {
        let mut items = Vec::new();
        for product in fastrand::choose_multiple(products.iter(), fastrand::usize(1..=2)) {
            items.push(order_pb::PlaceOrderItem {
                product_id: product.clone(),
                quantity: fastrand::i32(1..=2),
            });
        }
        let request = order_pb::PlaceOrderRequest {
            items,
            shipping_address: Some(order_pb::Address {
                recipient: "Grace Hopper".to_owned(),
                line1: "1 Compiler Lane".to_owned(),
                line2: String::new(),
                city: "Arlington".to_owned(),
                postal_code: "22201".to_owned(),
                country: "US".to_owned(),
            }),
            payment_method_token: card().to_owned(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        match place(&orders, &token, request, &tally).await {
            Placed::Accepted(order_id) => {
                tally.accepted.fetch_add(1, Ordering::SeqCst);
                if fastrand::u32(0..100) < 8 {
                    cancel_once_confirmed(&orders, &token, &order_id, &tally).await;
                }
            }
            Placed::OutOfStock => {
                tally.out_of_stock.fetch_add(1, Ordering::SeqCst);
            }
            Placed::GaveUp => {
                tally.abandoned.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

enum Placed {
    Accepted(String),
    OutOfStock,
    GaveUp,
}

async fn place(
    orders: &Channel,
    token: &str,
    request: order_pb::PlaceOrderRequest,
    tally: &Tally,
) -> Placed {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let Ok(call) = authed(request.clone(), token) else {
            return Placed::GaveUp;
        };
        match OrderServiceClient::new(orders.clone())
            .place_order(call)
            .await
        {
            Ok(reply) => {
                if let Some(order) = reply.into_inner().order {
                    return Placed::Accepted(order.order_id);
                }
                tally.unexpected.fetch_add(1, Ordering::SeqCst);
                return Placed::GaveUp;
            }
            Err(status) if status.code() == Code::FailedPrecondition => return Placed::OutOfStock,
            Err(status) if transient(status.code()) => {}
            Err(status) => {
                tracing::warn!(%status, "unexpected answer to PlaceOrder");
                tally.unexpected.fetch_add(1, Ordering::SeqCst);
                return Placed::GaveUp;
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Placed::GaveUp;
        }
        tally.retries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(pause + Duration::from_millis(fastrand::u64(0..100))).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Waits (briefly) for the order to be confirmed, then asks to cancel it: its charge must be
/// refunded and its stock returned, whatever the faults do meanwhile.
async fn cancel_once_confirmed(orders: &Channel, token: &str, order_id: &str, tally: &Tally) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let Ok(call) = authed(
            order_pb::GetOrderRequest {
                order_id: order_id.to_owned(),
            },
            token,
        ) else {
            return;
        };
        let status = OrderServiceClient::new(orders.clone())
            .get_order(call)
            .await
            .ok()
            .and_then(|reply| reply.into_inner().order)
            .map(|order| order.status());
        match status {
            Some(OrderStatus::Confirmed) => break,
            Some(OrderStatus::Cancelled) => return,
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    tally.cancel_requests.fetch_add(1, Ordering::SeqCst);
    for _ in 0..20 {
        let Ok(call) = authed(
            order_pb::CancelOrderRequest {
                order_id: order_id.to_owned(),
                reason: "chaos shopper changed their mind".to_owned(),
            },
            token,
        ) else {
            return;
        };
        match OrderServiceClient::new(orders.clone())
            .cancel_order(call)
            .await
        {
            Ok(_) => return,
            Err(status) if transient(status.code()) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Not cancellable (yet, or any more): the invariants judge the outcome.
            Err(_) => return,
        }
    }
}
