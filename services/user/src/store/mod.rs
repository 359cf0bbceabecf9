//! Where accounts and refresh tokens live: PostgreSQL or SQLite, one SQL text for both (see
//! `sql.rs`). Events are appended to the outbox in the same transaction as the change they
//! announce.

mod sql;

use shop_common::{Error, storage::is_unique_violation};

use crate::domain::User;

pub(crate) use self::sql::UserStore;

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

/// Ends every session of the account, in the transaction of the change that calls for it: its
/// refresh tokens are revoked, and its access tokens issued until then are refused once
/// `user.sessions_revoked` reaches the services (here, at once).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndSessions {
    /// For the logs of the event's consumers: `password_changed`, `roles_changed`,
    /// `account_deleted`.
    pub(crate) reason: &'static str,
    /// How long the access tokens live, so consumers know when to forget the revocation.
    pub(crate) access_ttl: std::time::Duration,
}

/// An account after an update, and the revocation the update recorded, if it ended sessions.
#[derive(Debug, Clone)]
pub(crate) struct Updated {
    pub(crate) user: User,
    pub(crate) revoked: Option<shop_common::auth::Revocation>,
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

/// Errors on a taken email mean the same on both backends.
fn email_taken(error: sqlx::Error) -> Error {
    if is_unique_violation(&error) {
        return Error::AlreadyExists("an account with this email already exists".to_owned());
    }
    error.into()
}
