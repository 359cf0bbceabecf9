//! Where accounts and refresh tokens live: one trait, backed by PostgreSQL or SQLite (one SQL
//! text for both, see `sql.rs`). Events are appended to the outbox in the same transaction as
//! the change they announce.

mod sql;

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope},
    storage::Sql,
};

use shop_common::paging::Cursor;

use crate::domain::{NewUser, User, UserChanges};

/// The migrations of this service, embedded in the binary.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A refresh token to store: only its hash.
#[derive(Debug, Clone)]
pub(crate) struct NewRefreshToken {
    pub(crate) hash: String,
    pub(crate) user_id: String,
    pub(crate) family_id: String,
    pub(crate) expires_at_ms: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rotation {
    /// The token was live; it is now spent and the next one of its family is stored.
    Rotated(User),
    /// The token had been spent already: a stolen copy, or a replay. Its family is revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

pub(crate) trait UserStore: Send + Sync {
    /// Errors: `AlreadyExists` when the email is taken.
    fn create<'a>(
        &'a self,
        user: &'a NewUser,
        event: &'a Envelope,
    ) -> BoxFuture<'a, Result<User, Error>>;

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<User>, Error>>;

    /// The account and its password hash, by normalised email.
    fn credentials<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<Option<(User, String)>, Error>>;

    /// Applies `changes`; a new password also revokes every refresh token of the account.
    /// Errors: `AlreadyExists` when the new email is taken.
    fn update<'a>(
        &'a self,
        id: &'a str,
        changes: &'a UserChanges,
    ) -> BoxFuture<'a, Result<Option<User>, Error>>;

    /// Up to `limit` accounts after `after`, oldest first.
    fn list<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<User>, Error>>;

    /// Deletes the account and its refresh tokens; false when there was none.
    fn delete<'a>(&'a self, id: &'a str, event: &'a Envelope)
    -> BoxFuture<'a, Result<bool, Error>>;

    fn add_refresh_token<'a>(
        &'a self,
        token: &'a NewRefreshToken,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Spends the token with hash `presented` and stores `next_hash` in its family, atomically.
    fn rotate_refresh_token<'a>(
        &'a self,
        presented: &'a str,
        next_hash: &'a str,
        next_expires_at_ms: i64,
    ) -> BoxFuture<'a, Result<Rotation, Error>>;
}

/// The store on `sql`'s database.
pub(crate) fn open(sql: Sql) -> Arc<dyn UserStore> {
    sql::open(sql)
}

pub(crate) use shop_common::clock::now_ms;

/// Database errors mean the same on both backends; a unique violation is a taken email.
fn db_error(error: sqlx::Error) -> Error {
    if shop_common::storage::is_unique_violation(&error) {
        return Error::AlreadyExists("an account with this email already exists".to_owned());
    }
    shop_common::storage::db_error(error)
}

fn outbox_error(error: shop_common::events::outbox::OutboxError) -> Error {
    match error {
        shop_common::events::outbox::OutboxError::Database(e) => db_error(e),
        other => Error::internal(other),
    }
}
