//! product-service over real gRPC, with a real user-service issuing the tokens. The contract
//! suite runs on SQLite, on PostgreSQL (`DATABASE_URL`) and on MongoDB (`MONGODB_URL`); a
//! backend that is not configured is skipped, and says so.

mod helpers;
mod migrate;
mod suite;

macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    crate::suite::$test(crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    crate::suite::$test(crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod mongodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() -> anyhow::Result<()> {
                    crate::suite::$test(crate::helpers::Backend::Mongo).await
                }
            )*
        }
    };
}

on_every_backend!(
    an_admin_creates_updates_and_deletes_products_and_anyone_reads_them,
    stale_updates_are_aborted_and_skus_stay_unique,
    bad_input_is_refused_naming_the_field,
    only_admins_write_and_only_services_reserve,
    lists_filter_by_category_price_and_text,
    pagination_walks_the_catalogue_once_while_products_are_added,
    a_hundred_orders_racing_for_ten_units_get_exactly_ten,
    reserving_twice_for_one_order_takes_stock_once,
    a_reservation_takes_every_item_or_none_and_release_gives_it_back,
    a_cancelled_order_releases_its_stock,
    a_revoked_session_is_refused_and_stays_refused_after_a_restart,
    a_change_shows_in_the_next_read_of_the_product_and_of_its_listings,
);
