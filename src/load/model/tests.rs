//! The models against a real HTTP server on loopback. Waits are asserted against generous
//! bounds: a stall of one second is looked for as "at least 0.9 s", fast answers as "under 0.5 s".

use std::{sync::Arc, time::Duration};

use http::HeaderMap;
use tokio::time::Instant;

use super::*;
use crate::load::{
    journey::Context,
    rest::RestDriver,
    stats::{CUT_OFF, Latencies, Recorder, Totals},
    testing::{TestServer, serve},
};

const SECOND: u64 = 1_000_000;

async fn load(
    server: &TestServer,
    model: Model,
    max_in_flight: usize,
    duration: Duration,
) -> Totals {
    let url = server.url().parse().unwrap_or_default();
    let started = Instant::now();
    let recorder = Arc::new(Recorder::new(started));
    let ctx = Arc::new(Context {
        driver: RestDriver::new(url, HeaderMap::new(), Duration::from_secs(2)),
        catalogue: None,
        accounts: None,
        recorder: recorder.clone(),
        deadline: started + duration,
        timeout: Duration::from_secs(10),
        confirm_timeout: Duration::from_secs(30),
    });
    let schedule = Schedule {
        scenario: Scenario::Url,
        model,
        max_in_flight,
        grace: Duration::from_millis(500),
        seed: 1,
        progress: false,
    };
    run(ctx, schedule).await;
    recorder.totals()
}

/// Samples of at least `micros`.
fn at_least(h: &hdrhistogram::Histogram<u64>, micros: u64) -> u64 {
    h.count_between(micros, h.max().max(micros))
}

#[test]
fn arrivals_ramp_up_linearly_then_keep_the_rate() {
    let at = |i| arrival_offset(i, 100.0, Duration::from_secs(10)).as_secs_f64();
    assert_eq!(at(0), 0.0);
    // 500 arrivals during a 10 s ramp to 100/s; the 125th is due at 5 s (a quarter of them).
    assert!((at(125) - 5.0).abs() < 1e-9, "{}", at(125));
    assert!((at(500) - 10.0).abs() < 1e-9, "{}", at(500));
    assert!((at(1500) - 20.0).abs() < 1e-9, "{}", at(1500));
    let flat = |i| arrival_offset(i, 200.0, Duration::ZERO).as_secs_f64();
    assert!((flat(400) - 2.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_the_closed_model_counts_for_every_request_due_during_it() -> anyhow::Result<()>
{
    let server = serve(Some(20), Duration::from_secs(1)).await?;
    // Ten users share one connection slot: while request 20 stalls, the other nine become
    // due (100 ms think) and wait for the slot.
    let think = Think {
        min: Duration::from_millis(100),
        max: Duration::from_millis(100),
    };
    let model = Model::Closed {
        users: 10,
        think,
        ramp_up: Duration::ZERO,
    };
    let totals = load(&server, model, 1, Duration::from_secs(3)).await;
    let overall = &totals.overall;
    let latency = Latencies::of(&overall.latency);
    let service = Latencies::of(&overall.service);
    assert_eq!(overall.error_count(), 0, "{:?}", overall.errors);
    assert!(overall.latency.len() > 100, "{latency:?}");
    // The stalled request and the nine that waited behind it, each from its due time.
    assert!(
        at_least(&overall.latency, SECOND * 9 / 10) >= 8,
        "{latency:?}"
    );
    assert!(latency.p99_ms >= 900.0, "{latency:?}");
    // From the send, only the stalled request was slow: that is what timing from the send hides.
    assert!(
        at_least(&overall.service, SECOND * 9 / 10) <= 2,
        "{service:?}"
    );
    assert!(service.p99_ms < 500.0, "{service:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_in_the_open_model_counts_for_every_arrival_due_during_it() -> anyhow::Result<()> {
    let server = serve(Some(50), Duration::from_secs(1)).await?;
    let model = Model::Open {
        per_second: 100.0,
        ramp_up: Duration::ZERO,
    };
    let totals = load(&server, model, 1, Duration::from_secs(3)).await;
    let overall = &totals.overall;
    let latency = Latencies::of(&overall.latency);
    let service = Latencies::of(&overall.service);
    assert_eq!(overall.error_count(), 0, "{:?}", overall.errors);
    // About 100 arrivals fall due during the one-second stall; they are sent when it ends, so
    // from their due times half of them waited over 0.5 s.
    assert!(at_least(&overall.latency, SECOND / 2) >= 30, "{latency:?}");
    assert!(latency.p99_ms >= 900.0, "{latency:?}");
    assert!(at_least(&overall.service, SECOND / 2) <= 2, "{service:?}");
    assert!(service.p99_ms < 500.0, "{service:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_sends_at_its_rate_whatever_the_server_does() -> anyhow::Result<()> {
    let server = serve(None, Duration::ZERO).await?;
    let model = Model::Open {
        per_second: 200.0,
        ramp_up: Duration::ZERO,
    };
    let totals = load(&server, model, 64, Duration::from_secs(2)).await;
    let sent = totals.overall.latency.len();
    // 200/s for 2 s: 400, whatever the server's speed (a closed loop would send thousands).
    assert!((380..=420).contains(&sent), "{sent}");
    assert_eq!(
        server.served.load(std::sync::atomic::Ordering::SeqCst),
        sent
    );
    assert_eq!(totals.overall.error_count(), 0);
    // Spread over the two seconds, not sent in a burst.
    let busiest = totals
        .timeline
        .iter()
        .map(|p| p.requests)
        .max()
        .unwrap_or(0);
    assert!(busiest <= 260, "{:?}", totals.timeline);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stops_by_itself_and_counts_what_is_unanswered_as_cut_off() -> anyhow::Result<()> {
    let server = serve(Some(1), Duration::from_secs(30)).await?;
    let think = Think {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };
    let model = Model::Closed {
        users: 1,
        think,
        ramp_up: Duration::ZERO,
    };
    let started = Instant::now();
    let totals = load(&server, model, 1, Duration::from_millis(500)).await;
    // Duration 0.5 s + grace 0.5 s, not the 30 s the server would take.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let cut = &totals.overall.errors[CUT_OFF];
    assert_eq!(cut.count, 1);
    assert_eq!(totals.overall.latency.len(), 1);
    // Recorded with the wait it had when the run gave up on it: at least duration + grace.
    assert!(Latencies::of(&totals.overall.latency).max_ms >= 1000.0);
    Ok(())
}
