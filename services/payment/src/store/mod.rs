//! Where payments live: one trait, backed by PostgreSQL or SQLite (one SQL text for both, see
//! `sql.rs`). A payment's status only moves from the one a change was decided on, in the
//! transaction that appends the event announcing it (outbox).

mod sql;

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope},
    paging::Cursor,
    storage::Sql,
};

use crate::domain::{Payment, Status};

/// The migrations of this service, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A status change and what it records.
#[derive(Debug)]
pub(crate) struct Settle<'a> {
    pub(crate) from: Status,
    pub(crate) to: Status,
    pub(crate) failure_reason: &'a str,
    pub(crate) provider_reference: &'a str,
    pub(crate) event: Option<Envelope>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    /// Only this user's payments; `None` for everyone's (admins).
    pub(crate) user_id: Option<String>,
    pub(crate) order_id: Option<String>,
}

pub(crate) trait PaymentStore: Send + Sync {
    /// The order's payment: `new` stored if the order has none yet, else the one it has.
    fn open<'a>(&'a self, new: &'a Payment) -> BoxFuture<'a, Result<Payment, Error>>;

    /// Moves the payment from `settle.from` to `settle.to` with its event; `None` when it was
    /// no longer in `from` (a concurrent change got there first).
    fn settle<'a>(
        &'a self,
        payment_id: &'a str,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Option<Payment>, Error>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Payment>, Error>>;

    /// Up to `limit` matching payments after `after`, newest first.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Payment>, Error>>;
}

/// The store on `sql`'s database.
pub(crate) fn open(sql: Sql) -> Arc<dyn PaymentStore> {
    sql::open(sql)
}
