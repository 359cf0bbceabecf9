//! The checkout saga end to end: user, product, order and payment services in this process,
//! over real gRPC, on the embedded defaults and on PostgreSQL + RabbitMQ.

mod faults;
mod shop;

use std::time::Duration;

use anyhow::Context as _;
use shop_proto::{
    common::v1::Money,
    order::v1::{self as pb, OrderStatus},
    payment::v1::PaymentStatus,
};
use tonic::Code;

pub(crate) use self::shop::{Backend, Shop};
pub(crate) use self::shop::{address, authed};

/// Long enough for a loaded CI machine; a healthy run takes well under a second per order.
const SETTLE: Duration = Duration::from_secs(30);

/// Runs each test on both backends (a missing backend is skipped, said so).
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    crate::saga::run(crate::saga::Backend::Embedded, super::$test).await
                }
            )*
        }
        mod postgres_rabbitmq {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    crate::saga::run(crate::saga::Backend::PostgresRabbit, super::$test).await
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;

pub(crate) async fn run<F>(backend: Backend, test: impl FnOnce(Shop) -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    match Shop::start(backend).await? {
        Some(shop) => test(shop).await,
        None => Ok(()),
    }
}

on_both_backends!(
    a_paid_order_is_confirmed_with_one_charge,
    a_declined_card_cancels_the_order_and_returns_the_stock,
    a_flaky_provider_is_retried_into_exactly_one_charge,
    a_provider_that_never_answers_fails_the_payment,
    twenty_concurrent_retries_of_one_key_make_one_order,
    a_reused_key_with_another_basket_is_refused,
    a_cancelled_paid_order_is_refunded_and_restocked,
    an_admin_refund_cancels_the_order_and_restocks,
    client_prices_are_ignored,
    bad_requests_and_other_users_orders_are_refused,
    out_of_stock_makes_no_order,
    orders_list_newest_first_in_pages_and_by_status,
);

pub(crate) async fn place(
    shop: &mut Shop,
    token: &str,
    request: pb::PlaceOrderRequest,
) -> anyhow::Result<pb::Order> {
    let placed = shop.orders.place_order(authed(request, token)?).await?;
    placed.into_inner().order.context("no order")
}

async fn a_paid_order_is_confirmed_with_one_charge(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 1250).await?;
    let request = Shop::place_request(&product, 3, "tok_visa", "happy");
    let placed = place(&mut shop, &customer, request).await?;
    assert_eq!(placed.status(), OrderStatus::PendingPayment);
    let total = placed.total.clone().context("no total")?;
    assert_eq!((total.amount_minor, total.currency.as_str()), (3750, "EUR"));

    let id = placed.order_id.as_str();
    shop.await_status(&customer, id, OrderStatus::Confirmed, SETTLE)
        .await?;
    assert_eq!(shop.stock(&product).await?, 7);
    let payments = shop.payments_of(&customer, id).await?;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status(), PaymentStatus::Succeeded);
    assert_eq!(payments[0].amount, Some(total));
    assert_eq!(shop.simulator.totals().charges, 1);
    Ok(())
}

async fn a_declined_card_cancels_the_order_and_returns_the_stock(
    mut shop: Shop,
) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(5, 999).await?;
    let request = Shop::place_request(&product, 2, "tok_declined", "declined");
    let placed = place(&mut shop, &customer, request).await?;
    assert_eq!(shop.stock(&product).await?, 3, "reserved while paying");

    let id = placed.order_id.as_str();
    let order = shop
        .await_status(&customer, id, OrderStatus::Cancelled, SETTLE)
        .await?;
    assert_eq!(order.cancel_reason, "payment_failed");
    let payments = shop.payments_of(&customer, id).await?;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status(), PaymentStatus::Failed);
    assert_eq!(payments[0].failure_reason, "card_declined");
    assert_eq!(shop.simulator.totals().charges, 0);
    shop.await_stock(&product, 5, SETTLE).await?;
    Ok(())
}

async fn a_flaky_provider_is_retried_into_exactly_one_charge(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(5, 100).await?;
    let request = Shop::place_request(&product, 1, "tok_flaky", "flaky");
    let placed = place(&mut shop, &customer, request).await?;
    shop.await_status(&customer, &placed.order_id, OrderStatus::Confirmed, SETTLE)
        .await?;
    let totals = shop.simulator.totals();
    assert_eq!(
        (totals.charges, totals.attempts),
        (1, 3),
        "two failures, then one charge"
    );
    let payments = shop.payments_of(&customer, &placed.order_id).await?;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status(), PaymentStatus::Succeeded);
    Ok(())
}

async fn a_provider_that_never_answers_fails_the_payment(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(5, 100).await?;
    let request = Shop::place_request(&product, 1, "tok_timeout", "timeout");
    let placed = place(&mut shop, &customer, request).await?;
    let order = shop
        .await_status(&customer, &placed.order_id, OrderStatus::Cancelled, SETTLE)
        .await?;
    assert_eq!(order.cancel_reason, "payment_failed");
    let payments = shop.payments_of(&customer, &placed.order_id).await?;
    assert_eq!(payments[0].failure_reason, "provider_timeout");
    assert_eq!(shop.simulator.totals().charges, 0);
    shop.await_stock(&product, 5, SETTLE).await?;
    Ok(())
}

async fn twenty_concurrent_retries_of_one_key_make_one_order(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(50, 500).await?;
    let request = Shop::place_request(&product, 2, "tok_visa", "same-key");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut orders = shop.orders.clone();
        let request = authed(request.clone(), &customer)?;
        calls.spawn(async move { orders.place_order(request).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(outcome) = calls.join_next().await {
        let order = outcome??.into_inner().order.context("no order")?;
        ids.insert(order.order_id);
    }
    assert_eq!(ids.len(), 1, "every retry got the same order: {ids:?}");
    let id = ids.pop_first().context("no order")?;
    shop.await_status(&customer, &id, OrderStatus::Confirmed, SETTLE)
        .await?;
    assert_eq!(shop.stock(&product).await?, 48, "stock taken once");
    let list = pb::ListOrdersRequest::default();
    let listed = shop.orders.list_orders(authed(list, &customer)?).await?;
    assert_eq!(listed.into_inner().orders.len(), 1);
    assert_eq!(shop.payments_of(&customer, &id).await?.len(), 1);
    assert_eq!(shop.simulator.totals().charges, 1);
    Ok(())
}

async fn a_reused_key_with_another_basket_is_refused(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(50, 500).await?;
    let first = place(
        &mut shop,
        &customer,
        Shop::place_request(&product, 1, "tok_visa", "k"),
    )
    .await?;
    let again = place(
        &mut shop,
        &customer,
        Shop::place_request(&product, 1, "tok_visa", "k"),
    )
    .await?;
    assert_eq!(first.order_id, again.order_id);

    let changed = Shop::place_request(&product, 2, "tok_visa", "k");
    let refused = shop.orders.place_order(authed(changed, &customer)?).await;
    let status = refused
        .err()
        .context("a different basket under a used key was accepted")?;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("use a new key"),
        "{}",
        status.message()
    );

    // Keys are per user: another customer's "k" is another order.
    let other = shop.customer().await?;
    let theirs = place(
        &mut shop,
        &other,
        Shop::place_request(&product, 2, "tok_visa", "k"),
    )
    .await?;
    assert_ne!(theirs.order_id, first.order_id);
    Ok(())
}

async fn a_cancelled_paid_order_is_refunded_and_restocked(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 700).await?;
    let placed = place(
        &mut shop,
        &customer,
        Shop::place_request(&product, 4, "tok_visa", "c"),
    )
    .await?;
    let id = placed.order_id.as_str();
    shop.await_status(&customer, id, OrderStatus::Confirmed, SETTLE)
        .await?;

    let cancel = pb::CancelOrderRequest {
        order_id: id.to_owned(),
        reason: "changed my mind".to_owned(),
    };
    let cancelled = shop
        .orders
        .cancel_order(authed(cancel.clone(), &customer)?)
        .await?;
    let order = cancelled.into_inner().order.context("no order")?;
    assert_eq!(order.status(), OrderStatus::Cancelled);
    assert_eq!(order.cancel_reason, "customer_request");

    shop.await_stock(&product, 10, SETTLE).await?;
    let (shop_ref, customer_ref) = (&shop, customer.as_str());
    eventually(SETTLE, || async move {
        let payments = shop_ref.payments_of(customer_ref, id).await?;
        Ok(payments.len() == 1 && payments[0].status() == PaymentStatus::Refunded)
    })
    .await?;
    assert_eq!(shop.simulator.totals().refunds, 1);

    let again = shop.orders.cancel_order(authed(cancel, &customer)?).await;
    let status = again
        .err()
        .context("a cancelled order was cancelled again")?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is cancelled"),
        "{}",
        status.message()
    );
    Ok(())
}

async fn an_admin_refund_cancels_the_order_and_restocks(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 700).await?;
    let request = Shop::place_request(&product, 3, "tok_visa", "refund");
    let placed = place(&mut shop, &customer, request).await?;
    let id = placed.order_id.as_str();
    shop.await_status(&customer, id, OrderStatus::Confirmed, SETTLE)
        .await?;
    let payment = shop.payments_of(&customer, id).await?;
    let payment_id = payment.first().context("no payment")?.payment_id.clone();

    let refund = shop_proto::payment::v1::RefundPaymentRequest {
        payment_id: payment_id.clone(),
        reason: "damaged in transit".to_owned(),
    };
    let mut payments = shop.payments().await?;
    let denied = payments
        .refund_payment(authed(refund.clone(), &customer)?)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(
        denied,
        Some(Code::PermissionDenied),
        "customers cancel instead"
    );
    let refunded = payments
        .refund_payment(authed(refund.clone(), &shop.admin)?)
        .await?;
    let refunded = refunded.into_inner().payment.context("no payment")?;
    assert_eq!(refunded.status(), PaymentStatus::Refunded);
    let again = payments
        .refund_payment(authed(refund, &shop.admin)?)
        .await?;
    let again = again.into_inner().payment.context("no payment")?;
    assert_eq!(
        again.status(),
        PaymentStatus::Refunded,
        "refunding twice is refunding once"
    );

    let order = shop
        .await_status(&customer, id, OrderStatus::Cancelled, SETTLE)
        .await?;
    assert_eq!(order.cancel_reason, "payment_refunded");
    shop.await_stock(&product, 10, SETTLE).await?;
    assert_eq!(shop.simulator.totals().refunds, 1);
    Ok(())
}

/// A PlaceOrderRequest as a client might send it, with a price on each line. Field numbers
/// match the real message; the price (field 3) is not part of it, so the server must ignore it.
#[derive(Clone, PartialEq, prost::Message)]
struct PricedRequest {
    #[prost(message, repeated, tag = "1")]
    items: Vec<PricedItem>,
    #[prost(message, optional, tag = "2")]
    shipping_address: Option<pb::Address>,
    #[prost(string, tag = "3")]
    payment_method_token: String,
    #[prost(string, tag = "4")]
    idempotency_key: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PricedItem {
    #[prost(string, tag = "1")]
    product_id: String,
    #[prost(int32, tag = "2")]
    quantity: i32,
    #[prost(message, optional, tag = "3")]
    unit_price: Option<Money>,
}

async fn client_prices_are_ignored(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 4999).await?;
    let request = PricedRequest {
        items: vec![PricedItem {
            product_id: product.clone(),
            quantity: 2,
            unit_price: Some(Money {
                amount_minor: 1,
                currency: "EUR".to_owned(),
            }),
        }],
        shipping_address: Some(address()),
        payment_method_token: "tok_visa".to_owned(),
        idempotency_key: "priced".to_owned(),
    };
    let mut grpc = tonic::client::Grpc::new(shop.order_channel.clone());
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/shop.order.v1.OrderService/PlaceOrder");
    let codec = tonic_prost::ProstCodec::<PricedRequest, pb::PlaceOrderResponse>::default();
    let response = grpc.unary(authed(request, &customer)?, path, codec).await?;
    let order = response.into_inner().order.context("no order")?;
    let total = order.total.context("no total")?;
    assert_eq!(
        total.amount_minor,
        2 * 4999,
        "the catalogue price, not the client's"
    );
    assert_eq!(
        order.items[0].unit_price.as_ref().map(|m| m.amount_minor),
        Some(4999)
    );
    Ok(())
}

async fn bad_requests_and_other_users_orders_are_refused(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 100).await?;
    for (quantity, key) in [(0, "q0"), (10_000, "q10000")] {
        let request = Shop::place_request(&product, quantity, "tok_visa", key);
        let status = shop
            .orders
            .place_order(authed(request, &customer)?)
            .await
            .err()
            .context("a bad quantity was accepted")?;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "items[0].quantity must be between 1 and 100"
        );
    }
    let no_token = Shop::place_request(&product, 1, "tok_visa", "anonymous");
    let status = shop
        .orders
        .place_order(no_token)
        .await
        .err()
        .context("no token, yet placed")?;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        shop.stock(&product).await?,
        10,
        "refused requests take no stock"
    );

    let mine = place(
        &mut shop,
        &customer,
        Shop::place_request(&product, 1, "tok_visa", "mine"),
    )
    .await?;
    let intruder = shop.customer().await?;
    let get = pb::GetOrderRequest {
        order_id: mine.order_id.clone(),
    };
    let status = shop
        .orders
        .get_order(authed(get.clone(), &intruder)?)
        .await
        .err();
    assert_eq!(status.map(|s| s.code()), Some(Code::NotFound));
    let cancel = pb::CancelOrderRequest {
        order_id: mine.order_id.clone(),
        reason: String::new(),
    };
    let status = shop
        .orders
        .cancel_order(authed(cancel, &intruder)?)
        .await
        .err();
    assert_eq!(status.map(|s| s.code()), Some(Code::NotFound));
    let listed = shop
        .orders
        .list_orders(authed(pb::ListOrdersRequest::default(), &intruder)?)
        .await?;
    assert!(listed.into_inner().orders.is_empty());
    // The admin sees it, and everyone's orders when asking for them.
    let admin = shop.admin.clone();
    assert_eq!(
        shop.order(&admin, &mine.order_id).await?.order_id,
        mine.order_id
    );
    let all = pb::ListOrdersRequest {
        all_users: true,
        ..Default::default()
    };
    let listed = shop.orders.list_orders(authed(all, &admin)?).await?;
    assert_eq!(listed.into_inner().orders.len(), 1);
    Ok(())
}

async fn out_of_stock_makes_no_order(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(2, 100).await?;
    let request = Shop::place_request(&product, 3, "tok_visa", "too-many");
    let status = shop
        .orders
        .place_order(authed(request, &customer)?)
        .await
        .err()
        .context("an order beyond the stock was placed")?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not enough stock"),
        "{}",
        status.message()
    );
    let listed = shop
        .orders
        .list_orders(authed(pb::ListOrdersRequest::default(), &customer)?)
        .await?;
    assert!(listed.into_inner().orders.is_empty());
    assert_eq!(shop.stock(&product).await?, 2);
    Ok(())
}

async fn orders_list_newest_first_in_pages_and_by_status(mut shop: Shop) -> anyhow::Result<()> {
    let customer = shop.customer().await?;
    let product = shop.product(10, 100).await?;
    let mut ids = Vec::new();
    for (key, card) in [
        ("l1", "tok_visa"),
        ("l2", "tok_declined"),
        ("l3", "tok_visa"),
    ] {
        let placed = place(
            &mut shop,
            &customer,
            Shop::place_request(&product, 1, card, key),
        )
        .await?;
        ids.push(placed.order_id);
    }
    shop.await_status(&customer, &ids[1], OrderStatus::Cancelled, SETTLE)
        .await?;
    for id in [&ids[0], &ids[2]] {
        shop.await_status(&customer, id, OrderStatus::Confirmed, SETTLE)
            .await?;
    }

    let list = |page_token: String, status: OrderStatus| pb::ListOrdersRequest {
        page_size: 2,
        page_token,
        status: status.into(),
        all_users: false,
    };
    let first = shop
        .orders
        .list_orders(authed(
            list(String::new(), OrderStatus::Unspecified),
            &customer,
        )?)
        .await?
        .into_inner();
    let second = shop
        .orders
        .list_orders(authed(
            list(first.next_page_token.clone(), OrderStatus::Unspecified),
            &customer,
        )?)
        .await?
        .into_inner();
    let walked: Vec<&str> = first
        .orders
        .iter()
        .chain(&second.orders)
        .map(|o| o.order_id.as_str())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(
        walked, newest_first,
        "two pages, newest first, each order once"
    );
    assert!(second.next_page_token.is_empty());

    let cancelled = shop
        .orders
        .list_orders(authed(
            list(String::new(), OrderStatus::Cancelled),
            &customer,
        )?)
        .await?
        .into_inner();
    let cancelled: Vec<&str> = cancelled
        .orders
        .iter()
        .map(|o| o.order_id.as_str())
        .collect();
    assert_eq!(cancelled, [ids[1].as_str()]);

    let bad = pb::ListOrdersRequest {
        page_token: "not-a-token".to_owned(),
        ..Default::default()
    };
    let status = shop.orders.list_orders(authed(bad, &customer)?).await.err();
    assert_eq!(
        status.map(|s| (s.code(), s.message().to_owned())),
        Some((
            Code::InvalidArgument,
            "page_token is not a page token from a previous response".to_owned()
        ))
    );
    Ok(())
}

/// Polls `check` until it holds, failing after `within`.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await? {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
