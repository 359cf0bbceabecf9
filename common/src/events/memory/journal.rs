//! The in-process bus's journal: every delivery is a row from the moment it is published until
//! its consumer has handled it (or it is dead-lettered), so a process killed with `kill -9`
//! finds on restart what it had not handled yet, as a RabbitMQ queue would keep it. Publishing
//! returns once the rows are committed: the outbox marks an event published only then.

use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::Row as _;
use tracing::{Dispatch, instrument::WithSubscriber as _};

use super::super::{BusError, Envelope};
pub(super) use crate::clock::now_ms;
use crate::storage::{Backend, Db};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bus_deliveries (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    consumer TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    attempt BIGINT NOT NULL,
    due_at_ms BIGINT NOT NULL,
    dead_reason TEXT
)";

/// A delivery as the journal holds it.
pub(super) struct Saved {
    pub(super) id: String,
    pub(super) consumer: String,
    pub(super) envelope: Envelope,
    pub(super) attempt: u32,
    pub(super) due_at_ms: i64,
    pub(super) dead_reason: Option<String>,
}

pub(super) struct Journal {
    db: Db,
    /// Publish order, so a restart delivers in the order events were published.
    next_seq: AtomicI64,
}

fn unavailable(error: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("the bus journal: {error}"))
}

impl Journal {
    pub(super) async fn open(db: Db) -> Result<Self, BusError> {
        let schema = match db.backend() {
            Backend::Sqlite => SCHEMA.replace("BYTEA", "BLOB"),
            Backend::Postgres | Backend::MongoDb => SCHEMA.to_owned(),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
            .execute(db.pool())
            .await
            .map_err(unavailable)?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM bus_deliveries")
            .fetch_one(db.pool())
            .await
            .map_err(unavailable)?;
        Ok(Self {
            db,
            next_seq: AtomicI64::new(last.unwrap_or(0) + 1),
        })
    }

    /// Every delivery still owed, oldest first.
    pub(super) async fn load(&self) -> Result<Vec<Saved>, BusError> {
        untraced(async move {
            let rows = sqlx::query(
                "SELECT id, consumer, envelope, attempt, due_at_ms, dead_reason
                 FROM bus_deliveries ORDER BY seq",
            )
            .fetch_all(self.db.pool())
            .await
            .map_err(unavailable)?;
            let mut saved = Vec::with_capacity(rows.len());
            for row in rows {
                let id: String = row.try_get("id").map_err(unavailable)?;
                let bytes: Vec<u8> = row.try_get("envelope").map_err(unavailable)?;
                let envelope = match Envelope::decode(&bytes) {
                    Ok(envelope) => envelope,
                    Err(error) => {
                        tracing::error!(delivery = %id, %error, "undecodable delivery in the bus journal; skipped");
                        continue;
                    }
                };
                let attempt: i64 = row.try_get("attempt").map_err(unavailable)?;
                saved.push(Saved {
                    id,
                    consumer: row.try_get("consumer").map_err(unavailable)?,
                    envelope,
                    attempt: u32::try_from(attempt).unwrap_or(1),
                    due_at_ms: row.try_get("due_at_ms").map_err(unavailable)?,
                    dead_reason: row.try_get("dead_reason").map_err(unavailable)?,
                });
            }
            Ok(saved)
        })
        .await
    }

    /// Writes one delivery of `envelope` per consumer in `ids` (`(delivery id, consumer)`),
    /// all or none.
    pub(super) async fn enqueue(
        &self,
        envelope: &Envelope,
        ids: &[(String, String)],
    ) -> Result<(), BusError> {
        untraced(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let bytes = envelope.encode();
            let mut tx = self.db.begin().await.map_err(unavailable)?;
            for (id, consumer) in ids {
                sqlx::query(
                    "INSERT INTO bus_deliveries (id, seq, consumer, envelope, attempt, due_at_ms)
                     VALUES ($1, $2, $3, $4, 1, $5)",
                )
                .bind(id)
                .bind(self.next_seq.fetch_add(1, Ordering::Relaxed))
                .bind(consumer)
                .bind(&bytes)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// Handled: the delivery is gone.
    pub(super) async fn done(&self, id: &str) -> Result<(), BusError> {
        untraced(async move {
            sqlx::query("DELETE FROM bus_deliveries WHERE id = $1")
                .bind(id)
                .execute(self.db.pool())
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    /// Failed, to be tried again as `attempt` at `due_at_ms`.
    pub(super) async fn retry(
        &self,
        id: &str,
        attempt: u32,
        due_at_ms: i64,
    ) -> Result<(), BusError> {
        untraced(async move {
            sqlx::query("UPDATE bus_deliveries SET attempt = $2, due_at_ms = $3 WHERE id = $1")
                .bind(id)
                .bind(i64::from(attempt))
                .bind(due_at_ms)
                .execute(self.db.pool())
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    /// Dead-lettered with `reason` after `attempts`.
    pub(super) async fn dead(&self, id: &str, attempts: u32, reason: &str) -> Result<(), BusError> {
        untraced(async move {
            sqlx::query("UPDATE bus_deliveries SET attempt = $2, dead_reason = $3 WHERE id = $1")
                .bind(id)
                .bind(i64::from(attempts))
                .bind(reason)
                .execute(self.db.pool())
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }

    /// Replayed: a dead letter becomes a first attempt, due now.
    pub(super) async fn revive(&self, id: &str) -> Result<(), BusError> {
        untraced(async move {
            sqlx::query(
                "UPDATE bus_deliveries SET attempt = 1, due_at_ms = $2, dead_reason = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(now_ms())
            .execute(self.db.pool())
            .await
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }
}

/// Journal work runs with no tracing at all: under `shop up` the journal's pool is shared by
/// services that each trace in a dispatch of their own, and a span carried into a connection
/// from another dispatch would be closed in a registry that never knew it.
async fn untraced<T>(work: impl std::future::Future<Output = T>) -> T {
    work.with_subscriber(Dispatch::none()).await
}
