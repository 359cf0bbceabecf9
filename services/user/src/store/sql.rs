//! The user store in SQL. The statements are portable (`$n` placeholders work on SQLite too), so
//! the implementation is written once and stamped out per backend by `sql_store!`: the two
//! differ only in their pool type and outbox module.

use std::sync::Arc;

use shop_common::{
    Error,
    events::{BoxFuture, Envelope, outbox},
    storage::Sql,
};
use sqlx::Row as _;

use super::{NewRefreshToken, Rotation, UserStore, db_error, now_ms, outbox_error};
use shop_common::paging::Cursor;

use crate::domain::{NewUser, User, UserChanges, roles_from_column, roles_to_column};

macro_rules! user_columns {
    () => {
        "user_id, email, display_name, roles, created_at_ms, updated_at_ms"
    };
}

pub(super) fn open(sql: Sql) -> Arc<dyn UserStore> {
    match &sql {
        Sql::Postgres(pool) => Arc::new(PgUserStore {
            pool: pool.clone(),
            sql,
        }),
        Sql::Sqlite { pool, .. } => Arc::new(SqliteUserStore {
            pool: pool.clone(),
            sql,
        }),
    }
}

macro_rules! sql_store {
    ($store:ident, $db:ty, $outbox:ident) => {
        struct $store {
            pool: sqlx::Pool<$db>,
            sql: Sql,
        }

        impl $store {
            fn user(row: &<$db as sqlx::Database>::Row) -> Result<User, sqlx::Error> {
                Ok(User {
                    id: row.try_get("user_id")?,
                    email: row.try_get("email")?,
                    display_name: row.try_get("display_name")?,
                    roles: roles_from_column(row.try_get("roles")?),
                    created_at_ms: row.try_get("created_at_ms")?,
                    updated_at_ms: row.try_get("updated_at_ms")?,
                })
            }
        }

        impl UserStore for $store {
            fn create<'a>(
                &'a self,
                user: &'a NewUser,
                event: &'a Envelope,
            ) -> BoxFuture<'a, Result<User, Error>> {
                Box::pin(async move {
                    let now = now_ms();
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
                    sqlx::query(
                        "INSERT INTO users (user_id, email, display_name, roles, password_hash,
                             created_at_ms, updated_at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(&user.id)
                    .bind(user.email.as_str())
                    .bind(user.display_name.as_str())
                    .bind(roles_to_column(&user.roles))
                    .bind(&user.password_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    outbox::$outbox::append(&mut tx, event)
                        .await
                        .map_err(outbox_error)?;
                    tx.commit().await.map_err(db_error)?;
                    self.sql.events_committed();
                    Ok(User {
                        id: user.id.clone(),
                        email: user.email.as_str().to_owned(),
                        display_name: user.display_name.as_str().to_owned(),
                        roles: user.roles.clone(),
                        created_at_ms: now,
                        updated_at_ms: now,
                    })
                })
            }

            fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<User>, Error>> {
                Box::pin(async move {
                    sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users WHERE user_id = $1"
                    ))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .and_then(|row| row.as_ref().map(Self::user).transpose())
                    .map_err(db_error)
                })
            }

            fn credentials<'a>(
                &'a self,
                email: &'a str,
            ) -> BoxFuture<'a, Result<Option<(User, String)>, Error>> {
                Box::pin(async move {
                    let row = sqlx::query(concat!(
                        "SELECT ",
                        user_columns!(),
                        ", password_hash FROM users WHERE email = $1"
                    ))
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error)?;
                    row.map(|row| Ok((Self::user(&row)?, row.try_get("password_hash")?)))
                        .transpose()
                        .map_err(db_error)
                })
            }

            fn update<'a>(
                &'a self,
                id: &'a str,
                changes: &'a UserChanges,
            ) -> BoxFuture<'a, Result<Option<User>, Error>> {
                Box::pin(async move {
                    let now = now_ms();
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
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
                    .map_err(db_error)?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    if changes.password_hash.is_some() {
                        sqlx::query(
                            "UPDATE refresh_tokens SET revoked_at_ms = $2
                             WHERE user_id = $1 AND revoked_at_ms IS NULL",
                        )
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                    let user = Self::user(&row).map_err(db_error)?;
                    tx.commit().await.map_err(db_error)?;
                    Ok(Some(user))
                })
            }

            fn list<'a>(
                &'a self,
                after: Option<&'a Cursor>,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<User>, Error>> {
                Box::pin(async move {
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
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error)?;
                    rows.iter()
                        .map(Self::user)
                        .collect::<Result<_, _>>()
                        .map_err(db_error)
                })
            }

            fn delete<'a>(
                &'a self,
                id: &'a str,
                event: &'a Envelope,
            ) -> BoxFuture<'a, Result<bool, Error>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
                    sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let deleted = sqlx::query("DELETE FROM users WHERE user_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?
                        .rows_affected();
                    if deleted == 0 {
                        return Ok(false);
                    }
                    outbox::$outbox::append(&mut tx, event)
                        .await
                        .map_err(outbox_error)?;
                    tx.commit().await.map_err(db_error)?;
                    self.sql.events_committed();
                    Ok(true)
                })
            }

            fn add_refresh_token<'a>(
                &'a self,
                token: &'a NewRefreshToken,
            ) -> BoxFuture<'a, Result<(), Error>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .bind(&token.hash)
                    .bind(&token.family_id)
                    .bind(&token.user_id)
                    .bind(token.expires_at_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
                    Ok(())
                })
            }

            fn rotate_refresh_token<'a>(
                &'a self,
                presented: &'a str,
                next_hash: &'a str,
                next_expires_at_ms: i64,
            ) -> BoxFuture<'a, Result<Rotation, Error>> {
                Box::pin(async move {
                    let now = now_ms();
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
                    // Spending first takes the row lock, so of two concurrent refreshes with
                    // one token exactly one rotates; the other sees it spent.
                    let spent = sqlx::query(
                        "UPDATE refresh_tokens SET spent_at_ms = $2
                         WHERE token_hash = $1 AND spent_at_ms IS NULL
                           AND revoked_at_ms IS NULL AND expires_at_ms > $2
                         RETURNING family_id, user_id",
                    )
                    .bind(presented)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    if let Some(row) = spent {
                        let family: String = row.try_get("family_id").map_err(db_error)?;
                        let user_id: String = row.try_get("user_id").map_err(db_error)?;
                        sqlx::query(
                            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at_ms)
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(next_hash)
                        .bind(&family)
                        .bind(&user_id)
                        .bind(next_expires_at_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                        let user = sqlx::query(concat!(
                            "SELECT ",
                            user_columns!(),
                            " FROM users WHERE user_id = $1"
                        ))
                        .bind(&user_id)
                        .fetch_one(&mut *tx)
                        .await
                        .and_then(|row| Self::user(&row))
                        .map_err(db_error)?;
                        tx.commit().await.map_err(db_error)?;
                        return Ok(Rotation::Rotated(user));
                    }
                    let known = sqlx::query(
                        "SELECT family_id, user_id, spent_at_ms FROM refresh_tokens
                         WHERE token_hash = $1",
                    )
                    .bind(presented)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    let Some(row) = known else {
                        return Ok(Rotation::Invalid);
                    };
                    let spent_at: Option<i64> = row.try_get("spent_at_ms").map_err(db_error)?;
                    if spent_at.is_none() {
                        return Ok(Rotation::Invalid);
                    }
                    let family: String = row.try_get("family_id").map_err(db_error)?;
                    let user_id: String = row.try_get("user_id").map_err(db_error)?;
                    sqlx::query(
                        "UPDATE refresh_tokens SET revoked_at_ms = $2
                         WHERE family_id = $1 AND revoked_at_ms IS NULL",
                    )
                    .bind(&family)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                    tx.commit().await.map_err(db_error)?;
                    tracing::warn!(%user_id, %family, "spent refresh token presented again; family revoked");
                    Ok(Rotation::Reused)
                })
            }
        }
    };
}

sql_store!(PgUserStore, sqlx::Postgres, postgres);
sql_store!(SqliteUserStore, sqlx::Sqlite, sqlite);
