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
    let provider = Arc::new(Switch::default());
    let app = spawn_app(provider.clone(), |config| {
        config.provider_timeout = Duration::from_millis(200);
        config.charge_attempts = 2;
        config.retry_delay = Duration::from_millis(10);
        config.retry_max_delay = Duration::from_millis(10);
        config.provider_breaker_failures = 2;
        config.provider_breaker_open_for = Duration::from_secs(4);
        config.provider_breaker_open_max = Duration::from_secs(4);
    })
    .await?;
    assert_eq!(metric("circuit_breaker_state", &BREAKER), Some(0.0));

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
    assert_eq!(transitions("open"), Some(1.0));

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
    assert_eq!(transitions("half_open"), Some(1.0));
    assert_eq!(transitions("closed"), Some(1.0));
    assert_eq!(app.health("").await?, ServingStatus::Serving);
    assert_eq!(app.health(LIVENESS).await?, ServingStatus::Serving);
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
