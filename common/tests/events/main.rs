//! The event bus contract, written once and run against every bus: the in-process one always,
//! RabbitMQ when `AMQP_URL` is set.

mod suite;

use shop_common::{
    events::{InProcessBus, RabbitBus},
    storage::Db,
};

async fn in_process() -> anyhow::Result<Option<InProcessBus>> {
    Ok(Some(InProcessBus::new()))
}

/// A SQLite file of the test's own; kept (in the temp dir) because the bus outlives this call.
fn journal_file() -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?.keep();
    Ok(format!("sqlite://{}", dir.join("bus.db").display()))
}

async fn journalled(url: &str) -> anyhow::Result<InProcessBus> {
    let db = Db::connect("bus journal", url).await?;
    Ok(InProcessBus::durable(db).await?)
}

async fn durable() -> anyhow::Result<Option<InProcessBus>> {
    Ok(Some(journalled(&journal_file()?).await?))
}

#[tokio::test]
async fn a_durable_bus_restarted_on_its_journal_delivers_what_was_not_handled() -> anyhow::Result<()>
{
    let url = journal_file()?;
    suite::a_restart_delivers_what_was_not_handled_and_keeps_dead_letters(|| journalled(&url)).await
}

/// The broker from `AMQP_URL`; without it the RabbitMQ tests say so and count as skipped.
async fn rabbit() -> anyhow::Result<Option<RabbitBus>> {
    match std::env::var("AMQP_URL") {
        Ok(url) => Ok(Some(RabbitBus::connect(&url).await?)),
        Err(_) => {
            eprintln!("skipped: AMQP_URL is not set, so the RabbitMQ bus is not tested");
            Ok(None)
        }
    }
}

macro_rules! bus_contract {
    ($module:ident, $make:expr) => {
        mod $module {
            #[tokio::test]
            async fn a_published_event_reaches_its_subscriber() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::a_published_event_reaches_its_subscriber(bus).await
            }

            #[tokio::test]
            async fn the_trace_context_survives_the_hop() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::the_trace_context_survives_the_hop(bus).await
            }

            #[tokio::test]
            async fn a_handler_that_keeps_failing_dead_letters_the_event_and_replay_brings_it_back()
            -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::a_handler_that_keeps_failing_dead_letters_the_event_and_replay_brings_it_back(bus).await
            }

            #[tokio::test]
            async fn a_transient_failure_is_retried_until_it_succeeds() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::a_transient_failure_is_retried_until_it_succeeds(bus).await
            }

            #[tokio::test]
            async fn events_wait_while_their_consumer_is_stopped() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::events_wait_while_their_consumer_is_stopped(bus).await
            }

            #[tokio::test]
            async fn events_published_before_their_consumer_first_starts_wait_once_declared()
            -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::events_published_before_their_consumer_first_starts_wait_once_declared(bus).await
            }

            #[tokio::test]
            async fn a_consumer_gets_only_the_keys_it_bound() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::a_consumer_gets_only_the_keys_it_bound(bus).await
            }

            #[tokio::test]
            async fn events_of_different_aggregates_are_handled_at_once() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::events_of_different_aggregates_are_handled_at_once(bus).await
            }

            #[tokio::test]
            async fn the_events_of_one_aggregate_are_handled_one_at_a_time_in_order()
            -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::the_events_of_one_aggregate_are_handled_one_at_a_time_in_order(bus).await
            }

            #[tokio::test]
            async fn a_batch_is_confirmed_whole_and_arrives_in_its_order() -> anyhow::Result<()> {
                let Some(bus) = $make.await? else { return Ok(()) };
                crate::suite::a_batch_is_confirmed_whole_and_arrives_in_its_order(bus).await
            }
        }
    };
}

bus_contract!(in_process, crate::in_process());
bus_contract!(durable_in_process, crate::durable());
bus_contract!(rabbitmq, crate::rabbit());
