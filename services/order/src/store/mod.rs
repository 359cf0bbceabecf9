//! Where orders live: PostgreSQL or SQLite, one SQL text for both but a few statements (see
//! `sql.rs`). Every change is one transaction with the events it announces (outbox) and, for a
//! change caused by an event, the record that the event was applied (idempotent consumer).

mod sql;

use shop_common::{Error, events::Envelope};

pub(crate) use self::sql::OrderStore;
use crate::domain::{Order, Status};

/// The migrations of this service, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What placing did: stored the new order, or found the one placed earlier under its key.
#[derive(Debug)]
pub(crate) enum Placed {
    New(Order),
    Existing(Order),
}

/// A decided change of an order: its new status, why (for cancellations), and what to announce.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) status: Status,
    pub(crate) cancel_reason: String,
    pub(crate) events: Vec<Envelope>,
}

/// What [`OrderStore::change`] did.
#[derive(Debug)]
pub(crate) enum Changed {
    Applied(Order),
    /// The decision was to leave the order as it is.
    Unchanged(Order),
    /// The event had been applied before (a redelivery): nothing was done.
    Duplicate,
    Missing,
}

/// The event a change applies, recorded in the change's transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Applying<'a> {
    pub(crate) consumer: &'a str,
    pub(crate) event_id: &'a str,
}

/// Decides a change from the order as read; the change is applied only while the order still
/// has the status it was decided on, or decided again.
pub(crate) type Decide<'a> = dyn Fn(&Order) -> Result<Option<Change>, Error> + Send + Sync + 'a;

#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    /// Only this user's orders; `None` for everyone's (admins).
    pub(crate) user_id: Option<String>,
    pub(crate) status: Option<Status>,
}

#[cfg(test)]
mod tests {
    use shop_common::{
        events::Envelope,
        paging::Cursor,
        storage::{self, Db},
    };

    use super::*;
    use crate::domain::{Address, Item, Status};

    async fn migrated(url: &str) -> Db {
        let db = Db::connect("ORDER_DATABASE_URL", url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        db.migrate(&MIGRATOR)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        db
    }

    /// Placing `id` is refused because its stock was released, and writes no order.
    async fn refused_as_swept(store: &OrderStore, id: &str) {
        let late = store.place(&order(id), &created(id)).await;
        let message = late.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("stock was released"), "{message}");
        assert!(
            store.get(id).await.ok().flatten().is_none(),
            "no order without stock"
        );
    }

    /// Runs `check` on a store on SQLite, then on this machine's PostgreSQL when `DATABASE_URL`
    /// is set (their SQL differs where an order is placed): a database of its own, dropped
    /// after a pass and kept after a failure.
    async fn on_every_backend<F: Future<Output = ()>>(check: impl Fn(OrderStore) -> F) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sqlite = format!("sqlite://{}", dir.path().join("order.db").display());
        check(OrderStore::new(migrated(&sqlite).await)).await;
        let Ok(server) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped on PostgreSQL: DATABASE_URL is not set");
            return;
        };
        let name = format!("test_order_store_{}", uuid::Uuid::new_v4().simple());
        let (url, _scratch) = storage::ScratchDatabase::create(&server, &name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let db = migrated(&url).await;
        check(OrderStore::new(db.clone())).await;
        db.pool().close().await;
    }

    fn order(id: &str) -> Order {
        Order {
            id: id.to_owned(),
            user_id: "u1".to_owned(),
            idempotency_key: id.to_owned(),
            fingerprint: "f".to_owned(),
            status: Status::PendingPayment,
            items: vec![Item {
                product_id: "p1".to_owned(),
                sku: "S".to_owned(),
                name: "N".to_owned(),
                quantity: 1,
                unit_price_minor: 100,
                currency: "EUR".to_owned(),
            }],
            total_minor: 100,
            currency: "EUR".to_owned(),
            address: Address {
                recipient: "r".to_owned(),
                line1: "l".to_owned(),
                line2: String::new(),
                city: "c".to_owned(),
                postal_code: "p".to_owned(),
                country: "DE".to_owned(),
            },
            cancel_reason: String::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn created(id: &str) -> Envelope {
        Envelope::new(
            "test",
            &shop_proto::events::v1::OrderCreated {
                order_id: id.to_owned(),
                ..Default::default()
            },
        )
    }

    /// `order` placed the way a checkout places it: its checkout noted, then the order written.
    async fn place_new(store: &OrderStore, order: &Order) {
        store
            .begin_checkout(&order.id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let placed = store.place(order, &created(&order.id)).await;
        assert!(matches!(placed, Ok(Placed::New(_))), "{placed:?}");
    }

    #[tokio::test]
    async fn an_abandoned_checkout_is_taken_once_and_its_late_order_refused() {
        on_every_backend(|store| async move {
            store
                .begin_checkout("o1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .begin_checkout("o2")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // o2 becomes an order in time; o1 does not.
            let placed = store.place(&order("o2"), &created("o2")).await;
            assert!(matches!(placed, Ok(Placed::New(_))), "{placed:?}");

            let fresh = store.take_abandoned(0, 10).await.unwrap_or_default();
            assert!(
                fresh.is_empty(),
                "nothing is older than the cut-off: {fresh:?}"
            );
            let taken = store.take_abandoned(i64::MAX, 10).await.unwrap_or_default();
            assert_eq!(taken, ["o1"], "only the checkout without an order");
            let again = store.take_abandoned(i64::MAX, 10).await.unwrap_or_default();
            assert!(again.is_empty(), "taken once: {again:?}");

            // The slow PlaceOrder of o1 finally tries to write its order: its stock is gone.
            refused_as_swept(&store, "o1").await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_retry_of_a_swept_checkout_cannot_place_its_order() {
        on_every_backend(|store| async move {
            store
                .begin_checkout("o1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let taken = store.take_abandoned(i64::MAX, 10).await.unwrap_or_default();
            assert_eq!(taken, ["o1"]);

            // The client retries under the same key while the sweeper is still releasing the
            // stock: the retry notes the checkout again and product-service still answers with the
            // reservation it holds. Its order must be refused all the same, or it would stand on
            // stock that the release is about to give back.
            store
                .begin_checkout("o1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            refused_as_swept(&store, "o1").await;
        })
        .await;
    }

    /// Orders come with their own lines, newest first, a page of `limit` orders (not rows).
    #[tokio::test]
    async fn listed_orders_carry_their_own_lines_page_by_page() {
        on_every_backend(|store| async move {
            let lines = |id: &str, count: usize| -> Vec<Item> {
                (0..count)
                    .map(|n| Item {
                        product_id: format!("{id}-p{n}"),
                        quantity: i32::try_from(n + 1).unwrap_or(1),
                        ..order(id).items[0].clone()
                    })
                    .collect()
            };
            for (at, (id, count)) in [("o1", 2), ("o2", 3), ("o3", 1)].into_iter().enumerate() {
                let mut new = order(id);
                new.items = lines(id, count);
                new.created_at_ms = i64::try_from(at).unwrap_or(0) + 1;
                place_new(&store, &new).await;
            }
            let filter = ListFilter::default();
            let first = store.list(&filter, None, 2).await.unwrap_or_default();
            let seen: Vec<(&str, Vec<Item>)> = first
                .iter()
                .map(|o| (o.id.as_str(), o.items.clone()))
                .collect();
            assert_eq!(seen, [("o3", lines("o3", 1)), ("o2", lines("o2", 3))]);

            let after = Cursor {
                created_at_ms: first[1].created_at_ms,
                id: first[1].id.clone(),
            };
            let rest = store
                .list(&filter, Some(&after), 2)
                .await
                .unwrap_or_default();
            let seen: Vec<(&str, Vec<Item>)> = rest
                .iter()
                .map(|o| (o.id.as_str(), o.items.clone()))
                .collect();
            assert_eq!(seen, [("o1", lines("o1", 2))]);
            assert_eq!(
                store.get("o2").await.ok().flatten().map(|o| o.items),
                Some(lines("o2", 3)),
                "one order read alone has the same lines"
            );
        })
        .await;
    }

    /// A decision that confirms the order and announces `events`.
    fn confirm(events: Vec<Envelope>) -> impl Fn(&Order) -> Result<Option<Change>, Error> {
        move |_| {
            Ok(Some(Change {
                status: Status::Confirmed,
                cancel_reason: String::new(),
                events: events.clone(),
            }))
        }
    }

    /// The ids of the events waiting in the outbox, oldest first.
    async fn outbox_ids(store: &OrderStore) -> Vec<String> {
        shop_common::events::outbox::Outbox::new(store.db().clone())
            .pending(100)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|pending| pending.envelope.id().to_owned())
            .collect()
    }

    async fn change(
        store: &OrderStore,
        order_id: &str,
        event_id: &str,
        decide: &Decide<'_>,
    ) -> Changed {
        let applying = Applying {
            consumer: "test",
            event_id,
        };
        store
            .change(order_id, Some(applying), decide)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn an_event_changes_an_order_once_and_appends_its_events_in_order() {
        on_every_backend(|store| async move {
            place_new(&store, &order("o1")).await;
            let announced = [created("o1"), created("o1")];
            let mut expected = outbox_ids(&store).await;
            expected.extend(announced.iter().map(|e| e.id().to_owned()));

            let decide = confirm(announced.to_vec());
            let changed = change(&store, "o1", "e1", &decide).await;
            let Changed::Applied(applied) = changed else {
                panic!("{changed:?}");
            };
            assert_eq!(applied.status, Status::Confirmed);
            assert_eq!(applied.items.len(), 1, "the order is read with its line");
            let stored = store.get("o1").await.ok().flatten().map(|o| o.status);
            assert_eq!(stored, Some(Status::Confirmed));
            assert_eq!(outbox_ids(&store).await, expected);

            // The same event again changes nothing and announces nothing.
            let again = change(&store, "o1", "e1", &decide).await;
            assert!(matches!(again, Changed::Duplicate), "{again:?}");
            assert_eq!(outbox_ids(&store).await, expected);

            // An event for an order that does not exist is not recorded as applied.
            let missing = change(&store, "nope", "e2", &decide).await;
            assert!(matches!(missing, Changed::Missing), "{missing:?}");
            let keep = |_: &Order| Ok(None);
            let later = change(&store, "o1", "e2", &keep).await;
            assert!(matches!(later, Changed::Unchanged(_)), "{later:?}");
            // A decision to change nothing still records the event.
            let repeat = change(&store, "o1", "e2", &keep).await;
            assert!(matches!(repeat, Changed::Duplicate), "{repeat:?}");
        })
        .await;
    }

    /// A redelivery racing the first delivery (the broker hands a message to another consumer
    /// while the first is still applying it) is applied once.
    #[tokio::test]
    async fn one_event_delivered_several_times_at_once_changes_the_order_once() {
        on_every_backend(|store| async move {
            place_new(&store, &order("o1")).await;
            let announced = created("o1");
            let mut expected = outbox_ids(&store).await;
            expected.push(announced.id().to_owned());

            let decide = confirm(vec![announced]);
            let deliveries = (0..8).map(|_| change(&store, "o1", "e1", &decide));
            let outcomes = futures::future::join_all(deliveries).await;
            let applied = outcomes
                .iter()
                .filter(|c| matches!(c, Changed::Applied(_)))
                .count();
            let duplicates = outcomes
                .iter()
                .filter(|c| matches!(c, Changed::Duplicate))
                .count();
            assert_eq!((applied, duplicates), (1, 7), "{outcomes:?}");
            assert_eq!(outbox_ids(&store).await, expected, "announced once");
        })
        .await;
    }

    #[tokio::test]
    async fn a_refused_checkout_is_forgotten() {
        on_every_backend(|store| async move {
            store
                .begin_checkout("o1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .end_checkout("o1")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let taken = store.take_abandoned(i64::MAX, 10).await.unwrap_or_default();
            assert!(taken.is_empty(), "{taken:?}");
        })
        .await;
    }
}
