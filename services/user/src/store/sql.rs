//! The user store in SQL, one text for PostgreSQL and SQLite.

use shop_common::{
    Error,
    auth::{Revocation, revocation},
    clock::now_ms,
    events::{Envelope, outbox},
    paging::Cursor,
    storage::Db,
};
use sqlx::{AnyConnection, Row as _, any::AnyRow};

use super::{EndSessions, NewRefreshToken, Rotation, Updated, email_taken};
use crate::domain::{NewUser, User, UserChanges, roles_from_column, roles_to_column};

/// The columns of a [`User`], spliced into statements at compile time.
macro_rules! user_columns {
    () => {
        "user_id, email, display_name, roles, created_at_ms, updated_at_ms"
    };
}

fn user(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        roles: roles_from_column(row.try_get("roles")?),
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

pub(crate) struct UserStore {
    db: Db,
}

impl UserStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Errors: `AlreadyExists` when the email is taken.
    pub(crate) async fn create(&self, new: &NewUser, event: &Envelope) -> Result<User, Error> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO users (user_id, email, display_name, roles, password_hash,
                 created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&new.id)
        .bind(new.email.as_str())
        .bind(new.display_name.as_str())
        .bind(roles_to_column(&new.roles))
        .bind(&new.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(email_taken)?;
        outbox::append(&mut tx, event).await?;
        tx.commit().await?;
        self.db.events_committed();
        Ok(User {
            id: new.id.clone(),
            email: new.email.as_str().to_owned(),
            display_name: new.display_name.as_str().to_owned(),
            roles: new.roles.clone(),
            created_at_ms: now,
            updated_at_ms: now,
        })
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<User>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE user_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.as_ref().map(user).transpose()?)
    }

    /// The account and its password hash, by normalised email.
    pub(crate) async fn credentials(&self, email: &str) -> Result<Option<(User, String)>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(self.db.pool())
        .await?;
        let found = row
            .map(|row| Ok::<_, sqlx::Error>((user(&row)?, row.try_get("password_hash")?)))
            .transpose()?;
        Ok(found)
    }

    /// Applies `changes`, and with `end` ends the account's sessions in the same transaction.
    /// Errors: `AlreadyExists` when the new email is taken.
    pub(crate) async fn update(
        &self,
        id: &str,
        changes: &UserChanges,
        end: Option<&EndSessions>,
    ) -> Result<Option<Updated>, Error> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE users SET email = COALESCE($2, email),
                 display_name = COALESCE($3, display_name),
                 roles = COALESCE($4, roles),
                 password_hash = COALESCE($5, password_hash),
                 updated_at_ms = $6
             WHERE user_id = $1 RETURNING ",
            user_columns!()
        ))
        .bind(id)
        .bind(changes.email.as_ref().map(|e| e.as_str().to_owned()))
        .bind(changes.display_name.as_ref().map(|n| n.as_str().to_owned()))
        .bind(changes.roles.as_deref().map(roles_to_column))
        .bind(changes.password_hash.clone())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(email_taken)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let updated = user(&row)?;
        let revoked = match end {
            Some(end) => Some(end_sessions(&mut tx, id, end).await?),
            None => None,
        };
        tx.commit().await?;
        if revoked.is_some() {
            self.db.events_committed();
        }
        Ok(Some(Updated {
            user: updated,
            revoked,
        }))
    }

    /// Up to `limit` accounts after `after`, oldest first.
    pub(crate) async fn list(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<User>, Error> {
        let (at, id) = Cursor::bounds(after);
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users
             WHERE created_at_ms > $1 OR (created_at_ms = $1 AND user_id > $2)
             ORDER BY created_at_ms, user_id LIMIT $3"
        ))
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows.iter().map(user).collect::<Result<_, _>>()?)
    }

    /// Deletes the account and its refresh tokens, announces `event` and ends its sessions;
    /// `None` when there was no such account.
    pub(crate) async fn delete(
        &self,
        id: &str,
        event: &Envelope,
        end: &EndSessions,
    ) -> Result<Option<Revocation>, Error> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM users WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        outbox::append(&mut tx, event).await?;
        let revoked = end_sessions(&mut tx, id, end).await?;
        tx.commit().await?;
        self.db.events_committed();
        Ok(Some(revoked))
    }

    /// The revocations this store records (see [`end_sessions`]), for the revocation list.
    pub(crate) fn revocations(&self) -> revocation::SqlRevocations {
        revocation::SqlRevocations::new(self.db.clone())
    }

    pub(crate) async fn add_refresh_token(&self, token: &NewRefreshToken) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.hash)
        .bind(&token.family_id)
        .bind(&token.user_id)
        .bind(token.expires_at_ms)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Spends the token with hash `presented` and stores `next_hash` in its family, atomically.
    pub(crate) async fn rotate_refresh_token(
        &self,
        presented: &str,
        next_hash: &str,
        next_expires_at_ms: i64,
    ) -> Result<Rotation, Error> {
        let now = now_ms();
        let mut tx = self.db.begin().await?;
        // Spending first takes the row lock, so of two concurrent refreshes with one token
        // exactly one rotates; the other sees it spent.
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET spent_at_ms = $2
             WHERE token_hash = $1 AND spent_at_ms IS NULL
               AND revoked_at_ms IS NULL AND expires_at_ms > $2
             RETURNING family_id, user_id",
        )
        .bind(presented)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = spent {
            let family: String = row.try_get("family_id")?;
            let user_id: String = row.try_get("user_id")?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(next_hash)
            .bind(&family)
            .bind(&user_id)
            .bind(next_expires_at_ms)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE user_id = $1"
            ))
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
            let owner = user(&row)?;
            tx.commit().await?;
            return Ok(Rotation::Rotated(owner));
        }
        let known = sqlx::query(
            "SELECT family_id, user_id, spent_at_ms FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = known else {
            return Ok(Rotation::Invalid);
        };
        let spent_at: Option<i64> = row.try_get("spent_at_ms")?;
        if spent_at.is_none() {
            return Ok(Rotation::Invalid);
        }
        let family: String = row.try_get("family_id")?;
        let user_id: String = row.try_get("user_id")?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at_ms = $2
             WHERE family_id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(&family)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::warn!(%user_id, %family, "spent refresh token presented again; family revoked");
        Ok(Rotation::Reused)
    }
}

/// Revokes the account's refresh tokens, records the revocation of its access tokens issued
/// until now, and appends `user.sessions_revoked`, inside the caller's transaction. The moment
/// is taken last, after the change's own writes, so it is as close to the commit as it can be.
async fn end_sessions(
    tx: &mut AnyConnection,
    id: &str,
    end: &EndSessions,
) -> Result<Revocation, Error> {
    let now = now_ms();
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at_ms = $2
         WHERE user_id = $1 AND revoked_at_ms IS NULL",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let revoked = Revocation {
        user_id: id.to_owned(),
        not_before_ms: now,
        forget_after_ms: now
            .saturating_add(i64::try_from(end.access_ttl.as_millis()).unwrap_or(i64::MAX)),
    };
    revocation::record_in(&mut *tx, &revoked).await?;
    let event = Envelope::new(crate::NAME, &revoked.to_event(end.reason));
    outbox::append(&mut *tx, &event).await?;
    Ok(revoked)
}
