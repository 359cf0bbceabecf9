//! Revocations in a service's SQL database (PostgreSQL or SQLite): the `revoked_sessions` table,
//! created beside the outbox for every service at start, so a restarted service still refuses
//! what it refused before.

use sqlx::{AnyConnection, Row as _};

use super::{Revocation, RevocationStore, spent_before};
use crate::{BoxFuture, Error, events::outbox::record_processed, storage::Db};

/// One portable text: `BIGINT` has integer affinity on SQLite.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS revoked_sessions (
    user_id TEXT PRIMARY KEY,
    not_before_ms BIGINT NOT NULL,
    forget_after_ms BIGINT NOT NULL
);
";

/// Creates the table if missing; safe at every start.
pub(crate) async fn install(db: &Db) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(SCHEMA).execute(db.pool()).await?;
    Ok(())
}

/// Records `revocation` inside the caller's transaction (user-service, with the change that
/// causes it); a later `not_before` already recorded for the user is kept.
pub async fn record_in(conn: &mut AnyConnection, revocation: &Revocation) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO revoked_sessions (user_id, not_before_ms, forget_after_ms)
         VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
           SET not_before_ms = excluded.not_before_ms, forget_after_ms = excluded.forget_after_ms
           WHERE revoked_sessions.not_before_ms < excluded.not_before_ms",
    )
    .bind(&revocation.user_id)
    .bind(revocation.not_before_ms)
    .bind(revocation.forget_after_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The store of a service on SQL.
pub struct SqlRevocations {
    db: Db,
}

impl SqlRevocations {
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl RevocationStore for SqlRevocations {
    fn record<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
        revocation: &'a Revocation,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut tx = self.db.begin().await?;
            if record_processed(&mut tx, consumer, event_id).await? {
                record_in(&mut tx, revocation).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn load(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Revocation>, Error>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT user_id, not_before_ms, forget_after_ms FROM revoked_sessions
                 WHERE forget_after_ms >= $1",
            )
            .bind(spent_before(now_ms))
            .fetch_all(self.db.pool())
            .await?;
            let revocations = rows
                .iter()
                .map(|row| {
                    Ok::<_, sqlx::Error>(Revocation {
                        user_id: row.try_get("user_id")?,
                        not_before_ms: row.try_get("not_before_ms")?,
                        forget_after_ms: row.try_get("forget_after_ms")?,
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(revocations)
        })
    }

    fn forget_spent(&self, now_ms: i64) -> BoxFuture<'_, Result<u64, Error>> {
        Box::pin(async move {
            let deleted = sqlx::query("DELETE FROM revoked_sessions WHERE forget_after_ms < $1")
                .bind(spent_before(now_ms))
                .execute(self.db.pool())
                .await?
                .rows_affected();
            Ok(deleted)
        })
    }
}
