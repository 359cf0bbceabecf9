//! Where the catalogue and reservations live: one trait, backed by MongoDB (production) or SQL
//! (PostgreSQL, SQLite), chosen by the URL scheme. Every backend passes the same contract suite.

mod mongo;
mod revocations;
mod sql;

use shop_common::{BoxFuture, Error, paging::Cursor};

pub(crate) use self::{mongo::MongoStore, sql::SqlStore};

use crate::domain::{ListFilter, NewProduct, Product, ProductUpdate, ReservedLine, StockLine};

/// The migrations of the SQL backends, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(crate) trait ProductStore: Send + Sync {
    /// Errors: `AlreadyExists` when the sku is taken.
    fn create<'a>(&'a self, product: &'a NewProduct) -> BoxFuture<'a, Result<Product, Error>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Product>, Error>>;

    /// Up to `limit` matching products after `after`, in (created_at, id) order.
    fn list<'a>(
        &'a self,
        filter: &'a ListFilter,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Product>, Error>>;

    /// Replaces fields and stock if the stored version is `update.expected_version`.
    /// Errors: `NotFound`, `Aborted` (stale version), `AlreadyExists` (sku taken).
    fn update<'a>(
        &'a self,
        id: &'a str,
        update: &'a ProductUpdate,
    ) -> BoxFuture<'a, Result<Product, Error>>;

    /// False when there was no such product.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, Error>>;

    /// Takes stock for every line or for none. Idempotent by `order_id`: a repeat returns the
    /// first outcome, success or failure, and takes nothing more; once released, a repeat is
    /// refused (the stock is no longer held for it).
    /// Errors: `FailedPrecondition` (not enough stock), `NotFound` (no such product).
    fn reserve<'a>(
        &'a self,
        order_id: &'a str,
        lines: &'a [StockLine],
    ) -> BoxFuture<'a, Result<Vec<ReservedLine>, Error>>;

    /// Puts a reservation's stock back; false when there was nothing to release.
    fn release<'a>(&'a self, order_id: &'a str) -> BoxFuture<'a, Result<bool, Error>>;

    fn count(&self) -> BoxFuture<'_, Result<u64, Error>>;
}

pub(crate) fn stale_version(id: &str, expected: i64) -> Error {
    Error::Aborted(format!(
        "product {id} changed since version {expected}; read it again and retry"
    ))
}

pub(crate) fn sku_taken(sku: &str) -> Error {
    Error::AlreadyExists(format!("a product with sku {sku} already exists"))
}

pub(crate) fn not_enough_stock(sku: &str, id: &str, requested: i32, available: i32) -> Error {
    Error::FailedPrecondition(format!(
        "not enough stock of {sku} ({id}): {requested} requested, {available} available"
    ))
}

/// A repeat of a reservation whose stock was given back: the order id cannot hold stock again.
pub(crate) fn reservation_released(order_id: &str) -> Error {
    Error::FailedPrecondition(format!(
        "the stock reserved for order {order_id} was released; reserve under a new order id"
    ))
}

/// A rejected reservation as stored, so a repeat gets the same error.
pub(crate) fn rejection_to_columns(error: &Error) -> (&'static str, String) {
    match error {
        Error::NotFound(what) => ("not_found", what.clone()),
        other => ("out_of_stock", other.to_string()),
    }
}

pub(crate) fn rejection_from_columns(code: &str, message: String) -> Error {
    match code {
        "not_found" => Error::NotFound(message),
        _ => Error::FailedPrecondition(message),
    }
}
