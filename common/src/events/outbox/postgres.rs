//! The outbox and the processed-events record on PostgreSQL. Appends also `pg_notify`, so the
//! relay wakes as soon as the transaction commits instead of on its next poll.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row as _, postgres::PgListener};
use tokio::sync::Mutex;

use super::{
    BACKLOG_SQL, Backlog, OutboxError, OutboxSource, PendingEvent, age_since, decode_row, now_ms,
};
use crate::events::{Envelope, bus::BoxFuture};

const CHANNEL: &str = "shop_outbox";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    created_at_ms BIGINT NOT NULL,
    published_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE published_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
";

/// Creates the outbox and processed-events tables if missing; safe at every start.
pub async fn install(pool: &PgPool) -> Result<(), OutboxError> {
    sqlx::raw_sql(SCHEMA).execute(pool).await?;
    Ok(())
}

/// Appends `envelope` inside the caller's transaction.
pub async fn append(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), OutboxError> {
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, aggregate_id, envelope, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(envelope.id())
    .bind(envelope.event_type())
    .bind(&envelope.0.aggregate_id)
    .bind(envelope.encode())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that `consumer` applied `event_id`, inside the transaction that applies it. Returns
/// false when it was already recorded: the caller then skips the effect (a redelivery).
pub async fn record_processed(
    conn: &mut PgConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, OutboxError> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The relay's view of a PostgreSQL outbox.
pub struct PgOutbox {
    pool: PgPool,
    listener: Mutex<Option<PgListener>>,
}

impl PgOutbox {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            listener: Mutex::new(None),
        }
    }
}

impl OutboxSource for PgOutbox {
    fn pending(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PendingEvent>, OutboxError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, envelope FROM outbox WHERE published_at_ms IS NULL ORDER BY seq LIMIT $1",
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
            sqlx::query("UPDATE outbox SET published_at_ms = $1 WHERE seq = ANY($2)")
                .bind(now_ms())
                .bind(seqs)
                .execute(&self.pool)
                .await?;
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
            let mut slot = self.listener.lock().await;
            if slot.is_none() {
                match listen(&self.pool).await {
                    Ok(listener) => *slot = Some(listener),
                    Err(error) => tracing::warn!(%error, "outbox LISTEN failed; polling"),
                }
            }
            let Some(listener) = slot.as_mut() else {
                tokio::time::sleep(at_most).await;
                return;
            };
            match tokio::time::timeout(at_most, listener.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "outbox LISTEN connection lost");
                    *slot = None;
                }
            }
        })
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
