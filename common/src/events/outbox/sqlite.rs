//! The outbox and the processed-events record on SQLite (the embedded default). SQLite has no
//! NOTIFY, so appenders in this process call [`SqliteOutbox::wake`] after committing, and the
//! relay also polls.

use std::{sync::Arc, time::Duration};

use sqlx::{Row as _, SqliteConnection, SqlitePool};
use tokio::sync::Notify;

use super::{
    BACKLOG_SQL, Backlog, OutboxError, OutboxSource, PendingEvent, age_since, decode_row, now_ms,
};
use crate::events::{Envelope, bus::BoxFuture};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    envelope BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    published_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at_ms INTEGER NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
";

/// Creates the outbox and processed-events tables if missing; safe at every start.
pub async fn install(pool: &SqlitePool) -> Result<(), OutboxError> {
    sqlx::raw_sql(SCHEMA).execute(pool).await?;
    Ok(())
}

/// Appends `envelope` inside the caller's transaction.
pub async fn append(conn: &mut SqliteConnection, envelope: &Envelope) -> Result<(), OutboxError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, envelope, created_at_ms)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(envelope.id())
    .bind(envelope.event_type())
    .bind(&envelope.0.aggregate_id)
    .bind(envelope.encode())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records that `consumer` applied `event_id`, inside the transaction that applies it. Returns
/// false when it was already recorded: the caller then skips the effect (a redelivery).
pub async fn record_processed(
    conn: &mut SqliteConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, OutboxError> {
    let inserted = sqlx::query(
        "INSERT OR IGNORE INTO processed_events (consumer, event_id, processed_at_ms)
         VALUES (?, ?, ?)",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The relay's view of an SQLite outbox; clones share the wake-up signal.
#[derive(Clone)]
pub struct SqliteOutbox {
    pool: SqlitePool,
    new_rows: Arc<Notify>,
}

impl SqliteOutbox {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            new_rows: Arc::new(Notify::new()),
        }
    }

    /// Tells the relay that a transaction with events just committed.
    pub fn wake(&self) {
        self.new_rows.notify_one();
    }
}

impl OutboxSource for SqliteOutbox {
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingEvent>, OutboxError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, envelope FROM outbox WHERE published_at_ms IS NULL ORDER BY seq LIMIT ?",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| decode_row(row.try_get("seq")?, row.try_get::<&[u8], _>("envelope")?))
                .collect()
        })
    }

    fn mark_published<'a>(&'a self, seqs: &'a [i64]) -> BoxFuture<'a, Result<(), OutboxError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let now = now_ms();
            for seq in seqs {
                sqlx::query("UPDATE outbox SET published_at_ms = ? WHERE seq = ?")
                    .bind(now)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, OutboxError>> {
        Box::pin(async move {
            let row = sqlx::query(BACKLOG_SQL).fetch_one(&self.pool).await?;
            Ok(Backlog {
                pending: row.try_get("pending")?,
                oldest_age: age_since(row.try_get("oldest")?),
            })
        })
    }

    fn wait_for_new(&self, at_most: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = tokio::time::timeout(at_most, self.new_rows.notified()).await;
        })
    }
}
