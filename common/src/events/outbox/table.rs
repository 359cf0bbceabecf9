//! The `outbox` and `processed_events` tables, on PostgreSQL or SQLite. The relay wakes when a
//! transaction with events commits in its own process ([`Db::events_committed`]) and polls
//! besides. No `NOTIFY` for other processes: PostgreSQL serialises every committing transaction
//! that notified on one lock held through its WAL flush, so under load each checkout queued
//! behind the others' commits (PlaceOrder p99 130 ms at 50 in flight); and the process that
//! wrote the events runs the relay that publishes them, so the others had nothing to wake for.

use std::time::Duration;

use sqlx::{Any, AnyConnection, Row as _, any::AnyArguments, query::Query};

use super::{Backlog, OutboxError, PendingEvent};
use crate::{
    clock::now_ms,
    events::Envelope,
    storage::{Backend, Db},
};

const POSTGRES_SCHEMA: &str = "
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

/// The same tables where SQLite spells them differently (row ids, blobs).
const SQLITE_SCHEMA: &str = "
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
pub(crate) async fn install(db: &Db) -> Result<(), OutboxError> {
    let schema = match db.backend() {
        Backend::Postgres | Backend::MongoDb => POSTGRES_SCHEMA,
        Backend::Sqlite => SQLITE_SCHEMA,
    };
    sqlx::raw_sql(schema).execute(db.pool()).await?;
    Ok(())
}

macro_rules! event_columns {
    () => {
        "event_id, event_type, aggregate_id, envelope, created_at_ms"
    };
}

/// The outbox's columns for one event, for a statement that appends it along with other writes
/// (PostgreSQL's data-modifying `WITH`); [`bind_event`] binds their values in this order.
pub const EVENT_COLUMNS: &str = event_columns!();

/// Binds the values of [`EVENT_COLUMNS`] for `envelope` to the next five placeholders.
pub fn bind_event<'q>(
    query: Query<'q, Any, AnyArguments>,
    envelope: &Envelope,
) -> Query<'q, Any, AnyArguments> {
    query
        .bind(envelope.id())
        .bind(envelope.event_type())
        .bind(&envelope.0.aggregate_id)
        .bind(envelope.encode())
        .bind(now_ms())
}

/// Appends `envelope` inside the caller's transaction; after committing, the caller calls
/// [`Db::events_committed`].
pub async fn append(conn: &mut AnyConnection, envelope: &Envelope) -> Result<(), OutboxError> {
    let insert = sqlx::query(concat!(
        "INSERT INTO outbox (",
        event_columns!(),
        ") VALUES ($1, $2, $3, $4, $5)"
    ));
    bind_event(insert, envelope).execute(&mut *conn).await?;
    Ok(())
}

/// Records that `consumer` applied `event_id`, inside the transaction that applies it (or on
/// its own, for an event that changes nothing). Returns false when it was already recorded: the
/// caller then skips the effect (a redelivery).
pub async fn record_processed(
    conn: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, OutboxError> {
    let inserted = sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at_ms)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The relay's view of a service's outbox.
pub struct Outbox {
    db: Db,
}

impl Outbox {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Up to `limit` unpublished events, oldest first.
    pub async fn pending(&self, limit: usize) -> Result<Vec<PendingEvent>, OutboxError> {
        let rows = sqlx::query(
            "SELECT seq, envelope FROM outbox WHERE published_at_ms IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let bytes: Vec<u8> = row.try_get("envelope")?;
                let envelope = Envelope::decode(&bytes)
                    .map_err(|source| OutboxError::Corrupt { seq, source })?;
                Ok(PendingEvent { seq, envelope })
            })
            .collect()
    }

    /// One statement for the whole batch, outside any transaction: one round trip and one
    /// commit, where a transaction with an UPDATE per event took three per event and more.
    pub async fn mark_published(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (2..seqs.len() + 2).map(|n| format!("${n}")).collect();
        let sql = format!(
            "UPDATE outbox SET published_at_ms = $1 WHERE seq IN ({})",
            placeholders.join(", ")
        );
        // Only numbered placeholders are put in the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
        for seq in seqs {
            query = query.bind(seq);
        }
        query.execute(self.db.pool()).await?;
        Ok(())
    }

    pub async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let row = sqlx::query(
            "SELECT count(*) AS pending, min(created_at_ms) AS oldest
             FROM outbox WHERE published_at_ms IS NULL",
        )
        .fetch_one(self.db.pool())
        .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(Backlog {
            pending: row.try_get("pending")?,
            oldest_age: oldest
                .map(|at| Duration::from_millis(u64::try_from(now_ms() - at).unwrap_or(0)))
                .unwrap_or_default(),
        })
    }

    /// Returns when new rows may be there, or after `at_most`.
    pub async fn wait_for_new(&self, at_most: Duration) {
        self.db.committed_or(at_most).await;
    }
}
