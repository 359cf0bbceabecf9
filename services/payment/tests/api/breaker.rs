//! The provider's circuit breaker seen from outside: while the provider fails it opens (the
//! metric says so, health reports NOT_SERVING, liveness stays SERVING, and orders fail at once
//! with `provider_unavailable` without reaching the provider, as the saga already handles);
//! once the provider answers again, one order probes it and the breaker closes.

use std::{sync::Arc, time::Duration};

use shop_common::grpc::LIVENESS;
use shop_proto::{
    DomainEvent as _,
    events::v1::{PaymentFailed, PaymentSucceeded},
};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{Switch, await_metric, metric, spawn_app};

/// Two attempts of 200 ms, 10 ms apart; two failures in a row open the breaker for 4 s.
fn quick_breaker(config: &mut payment_service::Config) {
    config.provider_timeout = Duration::from_millis(200);
    config.charge_attempts = 2;
    config.retry_delay = Duration::from_millis(10);
    config.retry_max_delay = Duration::from_millis(10);
    config.provider_breaker_failures = 2;
    config.provider_breaker_open_for = Duration::from_secs(4);
    config.provider_breaker_open_max = Duration::from_secs(4);
}

/// The breaker's metrics are the process's: its tests take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BREAKER: [(&str, &str); 2] = [
    ("service", "payment-service"),
    ("dependency", "payment_provider"),
];

fn transitions(to: &str) -> Option<f64> {
    let [service, dependency] = BREAKER;
    metric(
        "circuit_breaker_transitions_total",
        &[service, dependency, ("to", to)],
    )
}

#[tokio::test]
async fn the_provider_breaker_opens_while_it_fails_and_closes_once_it_answers_again()
-> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let provider = Arc::new(Switch::default());
    let app = spawn_app(provider.clone(), quick_breaker).await?;
    assert_eq!(metric("circuit_breaker_state", &BREAKER), Some(0.0));
    let before = |to| transitions(to).unwrap_or(0.0);
    let (opened, half_opened, closed) = (before("open"), before("half_open"), before("closed"));

    // Both attempts of the first order time out: the second failure in a row opens the
    // breaker, and the payment fails as it did before there were breakers.
    let first = app.place_order().await?;
    let failed = PaymentFailed::TYPE.to_owned();
    assert_eq!(
        app.next_outcome().await?,
        (failed.clone(), first, "provider_timeout".to_owned())
    );
    assert_eq!(provider.calls(), 2);
    assert_eq!(metric("circuit_breaker_state", &BREAKER), Some(1.0));
    assert_eq!(transitions("open"), Some(opened + 1.0));

    // While it is open an order fails at once, the provider never asked: no charge can
    // happen, and the saga cancels the order as it does for a provider that is down.
    let rejected = metric("circuit_breaker_rejected_total", &BREAKER).unwrap_or(0.0);
    let second = app.place_order().await?;
    assert_eq!(
        app.next_outcome().await?,
        (failed, second, "provider_unavailable".to_owned())
    );
    assert_eq!(
        provider.calls(),
        2,
        "the provider was not called while open"
    );
    assert_eq!(
        metric("circuit_breaker_rejected_total", &BREAKER),
        Some(rejected + 2.0),
        "both attempts were refused"
    );

    // Readiness follows within a round of checks (2 s); liveness does not move.
    app.await_health("", ServingStatus::NotServing, Duration::from_secs(3))
        .await?;
    assert_eq!(app.health(LIVENESS).await?, ServingStatus::Serving);

    // The provider comes back. At the end of the open period the breaker lets one call probe
    // (half-open), which readiness lets through, and the next order's success closes it.
    provider.bring_up();
    await_metric(
        "circuit_breaker_state",
        &BREAKER,
        2.0,
        Duration::from_secs(6),
    )
    .await?;
    app.await_health("", ServingStatus::Serving, Duration::from_secs(3))
        .await?;
    let third = app.place_order().await?;
    assert_eq!(
        app.next_outcome().await?,
        (PaymentSucceeded::TYPE.to_owned(), third, String::new())
    );
    assert_eq!(provider.calls(), 3, "one probe, which charged");
    assert_eq!(metric("circuit_breaker_state", &BREAKER), Some(0.0));
    assert_eq!(transitions("half_open"), Some(half_opened + 1.0));
    assert_eq!(transitions("closed"), Some(closed + 1.0));
    assert_eq!(app.health("").await?, ServingStatus::Serving);
    assert_eq!(app.health(LIVENESS).await?, ServingStatus::Serving);
    app.stop().await
}

/// An earlier delivery of `order.created` charged the card and stopped before it settled the
/// payment (its process was killed, or its database went away): the payment is pending and the
/// provider holds the charge. When the event comes back while the breaker is open, no attempt
/// reaches the provider; settling the payment failed then would cancel an order whose money was
/// taken (the chaos suite caught one such order). It stays pending, the event is retried, and
/// once the breaker lets a call through the provider answers with the charge it holds.
#[tokio::test]
async fn a_payment_left_pending_is_not_failed_on_the_breakers_word() -> anyhow::Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let provider = Arc::new(Switch::default());
    let app = spawn_app(provider.clone(), quick_breaker).await?;
    let pending_order = uuid::Uuid::new_v4().to_string();
    let payment_id = uuid::Uuid::new_v4().to_string();
    let db = sqlx::sqlite::SqlitePool::connect(&app.database).await?;
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, user_id, amount_minor, currency, status,
             failure_reason, provider_reference, created_at_ms, updated_at_ms)
         VALUES ($1, $2, 'a-customer', 1000, 'EUR', 'pending', '', '', 0, 0)",
    )
    .bind(&payment_id)
    .bind(&pending_order)
    .execute(&db)
    .await?;

    // The provider stops answering: another order's two attempts time out, the breaker opens.
    let first = app.place_order().await?;
    assert_eq!(
        app.next_outcome().await?,
        (
            PaymentFailed::TYPE.to_owned(),
            first,
            "provider_timeout".to_owned()
        )
    );
    assert_eq!(metric("circuit_breaker_state", &BREAKER), Some(1.0));
    let calls = provider.calls();

    // It answers again, but the breaker stays open for 4 s: the pending payment's event comes
    // back meanwhile, and is settled only by the provider's answer once a call goes through.
    provider.bring_up();
    app.announce_order(&pending_order).await?;
    assert_eq!(
        app.next_outcome().await?,
        (
            PaymentSucceeded::TYPE.to_owned(),
            pending_order,
            String::new()
        )
    );
    assert_eq!(provider.calls(), calls + 1, "asked once, by the probe");
    let (status, reference): (String, String) =
        sqlx::query_as("SELECT status, provider_reference FROM payments WHERE payment_id = $1")
            .bind(&payment_id)
            .fetch_one(&db)
            .await?;
    assert_eq!(
        (status.as_str(), reference),
        ("succeeded", format!("ch_{payment_id}")),
        "the payment the earlier delivery opened, with the provider's charge"
    );
    db.close().await;
    app.stop().await
}

#[tokio::test]
async fn an_open_period_longer_than_its_maximum_is_refused_naming_the_setting() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let database = format!("sqlite://{}", dir.path().join("payment.db").display());
    let mut config = payment_service::Config::local(
        listener.local_addr()?,
        database,
        "http://127.0.0.1:1".to_owned(),
    );
    config.provider_breaker_open_for = Duration::from_secs(30);
    config.provider_breaker_open_max = Duration::from_secs(10);
    let start = shop_common::service::Start::new(listener, Default::default());
    let served = payment_service::serve_with(config, Arc::new(Switch::default()), start);
    // Without the check it would start and serve until stopped.
    let refused = tokio::time::timeout(Duration::from_secs(10), served)
        .await?
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        refused.as_deref(),
        Some(
            "invalid setting PAYMENT_PROVIDER_BREAKER_OPEN_MAX: must not be shorter than PAYMENT_PROVIDER_BREAKER_OPEN_FOR"
        )
    );
    Ok(())
}
