//! Where payments live: PostgreSQL or SQLite, one SQL text for both (see `sql.rs`). A payment's
//! status only moves from the one a change was decided on, in the transaction that appends the
//! event announcing it (outbox).

mod sql;

use shop_common::events::Envelope;

pub(crate) use self::sql::PaymentStore;
use crate::domain::Status;

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
