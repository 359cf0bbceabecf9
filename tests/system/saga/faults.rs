//! The saga when parts fail: payment-service down while orders arrive, and every broker
//! connection dropped in the middle of a few hundred checkouts.

use std::time::Duration;

use anyhow::Context as _;
use shop_proto::{
    order::v1::OrderStatus,
    payment::v1::{ListPaymentsRequest, PaymentStatus},
};

use super::{
    SETTLE, place,
    shop::{Backend, Shop, authed},
};

super::on_both_backends!(orders_placed_while_payment_service_is_down_all_complete);

mod postgres_rabbitmq_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_order_settles_once_when_broker_connections_drop() -> anyhow::Result<()> {
        super::super::run(
            super::Backend::PostgresRabbit,
            super::every_order_settles_once_when_broker_connections_drop,
        )
        .await
    }
}

async fn orders_placed_while_payment_service_is_down_all_complete(
    mut shop: Shop,
) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(100, 300).await?;
    shop.stop_payments().await?;

    let mut ids = Vec::new();
    for i in 0..10 {
        let request = Shop::place_request(&product, 1, "tok_visa", &format!("down-{i}"));
        ids.push(place(&mut shop, &customer, request).await?.order_id);
    }
    // Nobody charges them while payment-service is away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(
            shop.order(&customer, id).await?.status(),
            OrderStatus::PendingPayment
        );
    }
    assert_eq!(shop.simulator.totals().charges, 0);

    shop.start_payments().await?;
    for id in &ids {
        shop.await_status(&customer, id, OrderStatus::Confirmed, SETTLE)
            .await?;
    }
    assert_eq!(shop.simulator.totals().charges, ids.len());
    assert_eq!(shop.stock(&product).await?, 90);
    Ok(())
}

/// Every fifth order is paid with a declined card, so both saga branches run through the faults.
async fn every_order_settles_once_when_broker_connections_drop(
    mut shop: Shop,
) -> anyhow::Result<()> {
    const ORDERS: usize = 200;
    const CLIENTS: usize = 8;
    let customer = shop.customer().await?;
    let product = shop.product(1_000, 100).await?;

    let mut placing = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let mut orders = shop.orders.clone();
        let (customer, product) = (customer.clone(), product.clone());
        placing.spawn(async move {
            let mut placed = Vec::new();
            for n in (client..ORDERS).step_by(CLIENTS) {
                let card = if n % 5 == 0 {
                    "tok_declined"
                } else {
                    "tok_visa"
                };
                let request = Shop::place_request(&product, 1, card, &format!("drop-{n}"));
                let order = orders.place_order(authed(request, &customer)?).await?;
                placed.push(order.into_inner().order.context("no order")?.order_id);
            }
            anyhow::Ok(placed)
        });
    }
    // Drop every connection twice while orders are being placed and paid.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        shop.drop_broker_connections().await?;
    }
    let mut ids = Vec::new();
    while let Some(placed) = placing.join_next().await {
        ids.extend(placed??);
    }
    assert_eq!(ids.len(), ORDERS);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (confirmed, cancelled) = loop {
        let mut counts = (0, 0);
        for id in &ids {
            match shop.order(&customer, id).await?.status() {
                OrderStatus::Confirmed => counts.0 += 1,
                OrderStatus::Cancelled => counts.1 += 1,
                _ => {}
            }
        }
        if counts.0 + counts.1 == ORDERS {
            break counts;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "after 120 s only {} of {ORDERS} orders are settled",
            counts.0 + counts.1
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((confirmed, cancelled), (ORDERS * 4 / 5, ORDERS / 5));

    // One payment per order; exactly the confirmed ones charged, each once.
    let mut payments = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListPaymentsRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = shop
            .payments()
            .await?
            .list_payments(authed(request, &customer)?)
            .await?
            .into_inner();
        payments.extend(page.payments);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let succeeded = payments
        .iter()
        .filter(|p| p.status() == PaymentStatus::Succeeded)
        .count();
    assert_eq!(payments.len(), ORDERS, "one payment per order");
    assert_eq!(succeeded, confirmed);
    assert_eq!(
        shop.simulator.totals().charges,
        confirmed,
        "nobody charged twice"
    );
    shop.await_stock(&product, 1_000 - i32::try_from(confirmed)?, SETTLE)
        .await?;
    Ok(())
}
