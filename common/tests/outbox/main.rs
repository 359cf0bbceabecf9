//! The transactional outbox and the idempotent-consumer record, written once and run on SQLite
//! always and on PostgreSQL when `DATABASE_URL` is set (each test in its own database).

mod db;
mod suite;

macro_rules! outbox_contract {
    ($module:ident, $make:expr) => {
        mod $module {
            #[tokio::test]
            async fn committed_events_are_published_in_order_and_rolled_back_ones_never()
            -> anyhow::Result<()> {
                let Some(db) = $make.await? else {
                    return Ok(());
                };
                crate::suite::committed_events_are_published_in_order_and_rolled_back_ones_never(db)
                    .await
            }

            #[tokio::test]
            async fn the_relay_wakes_on_a_new_event_without_waiting_for_its_poll()
            -> anyhow::Result<()> {
                let Some(db) = $make.await? else {
                    return Ok(());
                };
                crate::suite::the_relay_wakes_on_a_new_event_without_waiting_for_its_poll(db).await
            }

            #[tokio::test]
            async fn failed_publishes_are_retried_in_order_and_nothing_is_lost()
            -> anyhow::Result<()> {
                let Some(db) = $make.await? else {
                    return Ok(());
                };
                crate::suite::failed_publishes_are_retried_in_order_and_nothing_is_lost(db).await
            }

            #[tokio::test]
            async fn a_crash_between_publish_and_mark_delivers_twice_and_applies_once()
            -> anyhow::Result<()> {
                let Some(db) = $make.await? else {
                    return Ok(());
                };
                crate::suite::a_crash_between_publish_and_mark_delivers_twice_and_applies_once(db)
                    .await
            }

            #[tokio::test]
            async fn a_processed_event_is_recorded_once_per_consumer() -> anyhow::Result<()> {
                let Some(db) = $make.await? else {
                    return Ok(());
                };
                crate::suite::a_processed_event_is_recorded_once_per_consumer(db).await
            }
        }
    };
}

outbox_contract!(sqlite, crate::db::Db::sqlite());
outbox_contract!(postgres, crate::db::Db::postgres());
