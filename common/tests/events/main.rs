//! The event bus contract, written once and run against every bus: the in-process one always,
//! RabbitMQ when `AMQP_URL` is set.

mod suite;

macro_rules! bus_contract {
    ($module:ident, $make:expr) => {
        mod $module {
            #[tokio::test]
            async fn a_published_event_reaches_its_subscriber() -> anyhow::Result<()> {
                crate::suite::a_published_event_reaches_its_subscriber($make).await
            }

            #[tokio::test]
            async fn the_trace_context_survives_the_hop() -> anyhow::Result<()> {
                crate::suite::the_trace_context_survives_the_hop($make).await
            }

            #[tokio::test]
            async fn a_handler_that_keeps_failing_dead_letters_the_event_and_replay_brings_it_back()
            -> anyhow::Result<()> {
                crate::suite::a_handler_that_keeps_failing_dead_letters_the_event_and_replay_brings_it_back($make).await
            }

            #[tokio::test]
            async fn a_transient_failure_is_retried_until_it_succeeds() -> anyhow::Result<()> {
                crate::suite::a_transient_failure_is_retried_until_it_succeeds($make).await
            }

            #[tokio::test]
            async fn events_wait_while_their_consumer_is_stopped() -> anyhow::Result<()> {
                crate::suite::events_wait_while_their_consumer_is_stopped($make).await
            }

            #[tokio::test]
            async fn a_consumer_gets_only_the_keys_it_bound() -> anyhow::Result<()> {
                crate::suite::a_consumer_gets_only_the_keys_it_bound($make).await
            }
        }
    };
}

bus_contract!(in_process, shop_common::events::InProcessBus::new());
