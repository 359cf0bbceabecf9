//! Where orders live: one trait, backed by PostgreSQL or SQLite (one SQL text for both, see
//! `sql.rs`). Every change is one transaction with the events it announces (outbox) and, for a
//! change caused by an event, the record that the event was applied (idempotent consumer).

mod sql;

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope},
    paging::Cursor,
    storage::Sql,
};

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

/// Decides a change from the order as it is inside the transaction.
pub(crate) type Decide<'a> = dyn Fn(&Order) -> Result<Option<Change>, Error> + Send + Sync + 'a;

#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    /// Only this user's orders; `None` for everyone's (admins).
    pub(crate) user_id: Option<String>,
    pub(crate) status: Option<Status>,
}

pub(crate) trait OrderStore: Send + Sync {
    /// Stores the order with its `order.created` event, unless one was placed under its key
    /// already (also concurrently): then that one is returned.
    fn place<'a>(
        &'a self,
        order: &'a Order,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<Placed, Error>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Order>, Error>>;

    /// Up to `limit` matching orders after `after`, newest first.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Order>, Error>>;

    /// Reads the order, lets `decide` choose a change, and applies it with its events, all in
    /// one transaction; a concurrent change makes it decide again on the fresh order.
    fn change<'a>(
        &'a self,
        order_id: &'a str,
        applying: Option<Applying<'a>>,
        decide: &'a Decide<'a>,
    ) -> BoxFuture<'a, Result<Changed, Error>>;
}

/// The store on `sql`'s database.
pub(crate) fn open(sql: Sql) -> Arc<dyn OrderStore> {
    sql::open(sql)
}
