//! The embedded defaults survive `kill -9` like the RabbitMQ path: the real `shop up` binary takes
//! orders and cancellations, is killed with SIGKILL while calls are in flight, and restarts on
//! the same data dir, three times. Then every order reaches a final state, stock is conserved,
//! no order is charged twice and no cancelled order stays charged.

use std::{collections::HashMap, net::SocketAddr, process::Stdio, time::Duration};

use anyhow::Context as _;
use futures::future::join_all;
use shop::up::DEMO_ACCOUNTS;
use shop_proto::{
    order::v1::{self as order_pb, OrderStatus, order_service_client::OrderServiceClient},
    payment::v1::{
        self as payment_pb, PaymentStatus, payment_service_client::PaymentServiceClient,
    },
    product::v1::{self as product_pb, product_service_client::ProductServiceClient},
    user::v1::{LoginRequest, user_service_client::UserServiceClient},
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    chart::free_port,
    helpers::{channel, wait_for_health},
    saga::{address, authed, eventually},
};

/// `shop up` as a child process on ports of its own.
struct Running {
    child: Child,
    user: SocketAddr,
    product: SocketAddr,
    order: SocketAddr,
    payment: SocketAddr,
}

impl Running {
    /// `shop up` on `data`, serving. A port found free can be taken by another test before
    /// shop up binds it: shop up then exits at once (and a probe may reach that test's server
    /// instead); it is started again on other ports.
    async fn start(data: &std::path::Path) -> anyhow::Result<Self> {
        let mut exits = Vec::new();
        for _ in 0..3 {
            let mut running = Self::spawn(data)?;
            let ready = running.ready().await;
            let exited = match ready {
                Ok(()) => running.child.try_wait()?,
                // A start that failed may still be on its way out.
                Err(_) => tokio::time::timeout(Duration::from_secs(2), running.child.wait())
                    .await
                    .ok()
                    .transpose()?,
            };
            match exited {
                None => return ready.map(|()| running),
                Some(status) => exits.push(status.to_string()),
            }
        }
        anyhow::bail!("shop up exited as it started, three times: {exits:?}")
    }

    /// `shop up` started on ports that were free a moment ago.
    fn spawn(data: &std::path::Path) -> anyhow::Result<Self> {
        let ports: Vec<u16> = (0..6).map(|_| free_port()).collect::<Result<_, _>>()?;
        let child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .arg("up")
            .arg("--data-dir")
            .arg(data)
            .args(["--user-port", &ports[0].to_string()])
            .args(["--product-port", &ports[1].to_string()])
            .args(["--order-port", &ports[2].to_string()])
            .args(["--payment-port", &ports[3].to_string()])
            .args(["--gateway-port", &ports[4].to_string()])
            .args(["--metrics-port", &ports[5].to_string()])
            // Checkouts cut by a kill give their stock back soon, not after the default 10 min.
            .args(["--abandoned-checkout-after", "3s"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Self {
            child,
            user: at(ports[0]),
            product: at(ports[1]),
            order: at(ports[2]),
            payment: at(ports[3]),
        })
    }

    /// Waits until each service listens and reports SERVING.
    async fn ready(&self) -> anyhow::Result<()> {
        for addr in [self.user, self.product, self.order, self.payment] {
            eventually(Duration::from_secs(60), || async move {
                Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
            })
            .await
            .with_context(|| format!("shop up did not listen on {addr}"))?;
            let channel = channel(addr).await?;
            wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(60)).await?;
        }
        Ok(())
    }

    /// SIGKILL: no drain, no flush, nothing the process gets to finish.
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    async fn orders(&self) -> anyhow::Result<OrderServiceClient<Channel>> {
        Ok(OrderServiceClient::new(channel(self.order).await?))
    }
}

async fn sign_in(running: &Running) -> anyhow::Result<String> {
    let (_, email, password) = DEMO_ACCOUNTS[1];
    let mut users = UserServiceClient::new(channel(running.user).await?);
    let reply = users
        .login(LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        })
        .await?
        .into_inner();
    reply
        .tokens
        .map(|t| t.access_token)
        .context("login returned no token")
}

async fn stock_of(running: &Running, ids: &[String]) -> anyhow::Result<HashMap<String, i32>> {
    let mut products = ProductServiceClient::new(channel(running.product).await?);
    let mut stock = HashMap::new();
    for id in ids {
        let product = products
            .get_product(product_pb::GetProductRequest {
                product_id: id.clone(),
            })
            .await?
            .into_inner()
            .product
            .context("no product")?;
        stock.insert(id.clone(), product.stock);
    }
    Ok(stock)
}

/// Every order of the signed-in customer.
async fn all_orders(running: &Running, token: &str) -> anyhow::Result<Vec<order_pb::Order>> {
    let mut client = running.orders().await?;
    let mut orders = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_orders(authed(
                order_pb::ListOrdersRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            )?)
            .await?
            .into_inner();
        orders.extend(page.orders);
        if page.next_page_token.is_empty() {
            return Ok(orders);
        }
        page_token = page.next_page_token;
    }
}

/// Places `count` orders and cancels `cancel` at once, and kills the process `after` the calls
/// went out, while they are in flight.
async fn round(
    running: Running,
    token: &str,
    products: &[String],
    count: usize,
    cancel: &[String],
    after: Duration,
) -> anyhow::Result<()> {
    let orders = running.orders().await?;
    let mut placing = Vec::new();
    for i in 0..count {
        let request = order_pb::PlaceOrderRequest {
            items: vec![order_pb::PlaceOrderItem {
                product_id: products[i % products.len()].clone(),
                quantity: 1 + i32::try_from(i % 2).unwrap_or(0),
            }],
            shipping_address: Some(address()),
            payment_method_token: "tok_visa".to_owned(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        let request = authed(request, token)?;
        let mut orders = orders.clone();
        placing.push(async move { orders.place_order(request).await.map(|_| ()) });
    }
    let mut cancelling = Vec::new();
    for id in cancel {
        let request = authed(
            order_pb::CancelOrderRequest {
                order_id: id.clone(),
                reason: "changed my mind".to_owned(),
            },
            token,
        )?;
        let mut orders = orders.clone();
        cancelling.push(async move { orders.cancel_order(request).await.map(|_| ()) });
    }
    let calls = tokio::spawn(async move { tokio::join!(join_all(placing), join_all(cancelling)) });
    tokio::time::sleep(after).await;
    running.kill().await?;
    // Calls cut by the kill fail; the ones answered before it were committed.
    let _ = calls.await;
    Ok(())
}

fn is_final(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::Confirmed | OrderStatus::Cancelled | OrderStatus::Shipped
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_checkout_loses_no_order_no_stock_and_no_refund() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let running = Running::start(data.path()).await?;
    let token = sign_in(&running).await?;
    let mut products = ProductServiceClient::new(channel(running.product).await?);
    let listed = products
        .list_products(product_pb::ListProductsRequest {
            page_size: 3,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids: Vec<String> = listed
        .products
        .iter()
        .map(|p| p.product_id.clone())
        .collect();
    anyhow::ensure!(ids.len() == 3, "the demo catalogue has products");
    let initial = stock_of(&running, &ids).await?;

    let mut running = running;
    for (n, after) in [0u64, 60, 250].into_iter().enumerate() {
        // Confirmed orders of earlier rounds are cancelled while new ones come in.
        let confirmed: Vec<String> = all_orders(&running, &token)
            .await?
            .into_iter()
            .filter(|o| o.status() == OrderStatus::Confirmed)
            .map(|o| o.order_id)
            .take(4)
            .collect();
        round(
            running,
            &token,
            &ids,
            12,
            &confirmed,
            Duration::from_millis(after),
        )
        .await
        .with_context(|| format!("round {n}"))?;
        running = Running::start(data.path()).await?;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let orders = loop {
        let orders = all_orders(&running, &token).await?;
        let pending: Vec<String> = orders
            .iter()
            .filter(|o| !is_final(o.status()))
            .map(|o| format!("{} {:?}", o.order_id, o.status()))
            .collect();
        if pending.is_empty() {
            break orders;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "orders never final after the restarts: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    anyhow::ensure!(!orders.is_empty(), "no order was accepted at all");

    let mut payments = PaymentServiceClient::new(channel(running.payment).await?);
    let mut sold: HashMap<String, i32> = HashMap::new();
    for order in &orders {
        let listed = payments
            .list_payments(authed(
                payment_pb::ListPaymentsRequest {
                    order_id: order.order_id.clone(),
                    page_size: 100,
                    ..Default::default()
                },
                &token,
            )?)
            .await?
            .into_inner()
            .payments;
        let charged = listed
            .iter()
            .filter(|p| p.status() == PaymentStatus::Succeeded)
            .count();
        let ever_charged = listed
            .iter()
            .filter(|p| {
                matches!(
                    p.status(),
                    PaymentStatus::Succeeded | PaymentStatus::Refunded
                )
            })
            .count();
        assert!(
            ever_charged <= 1,
            "order {} charged {ever_charged} times",
            order.order_id
        );
        match order.status() {
            OrderStatus::Cancelled => {
                assert_eq!(
                    charged, 0,
                    "cancelled order {} is still charged",
                    order.order_id
                )
            }
            _ => {
                assert_eq!(
                    charged, 1,
                    "confirmed order {} has no charge",
                    order.order_id
                );
                for item in &order.items {
                    *sold.entry(item.product_id.clone()).or_default() += item.quantity;
                }
            }
        }
    }
    // A checkout the kill cut between reserving and saving its order gives its stock back once
    // the sweeper finds it abandoned (3 s here).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = stock_of(&running, &ids).await?;
        let off: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let sold = sold.get(id).copied().unwrap_or(0);
                (now[id] + sold != initial[id]).then(|| {
                    format!(
                        "{id}: stock {} + sold {sold} != initial {}",
                        now[id], initial[id]
                    )
                })
            })
            .collect();
        if off.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "stock is not conserved: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    running.kill().await?;
    Ok(())
}
