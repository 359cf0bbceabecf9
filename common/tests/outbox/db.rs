//! One test database per test, on either backend, with the few operations the suite needs.

use std::{str::FromStr as _, sync::Arc, time::Duration};

use shop_common::events::{
    Envelope, EventPublisher,
    outbox::{
        OutboxRelay, OutboxSource, RelayConfig,
        postgres::{self, PgOutbox},
        sqlite::{self, SqliteOutbox},
    },
};
use sqlx::{
    Connection as _, PgPool, Row as _, SqlitePool,
    postgres::{PgConnectOptions, PgConnection},
    sqlite::SqliteConnectOptions,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) enum Db {
    Postgres(PgPool),
    Sqlite {
        pool: SqlitePool,
        outbox: SqliteOutbox,
        _dir: tempfile::TempDir,
    },
}

impl Db {
    pub(crate) async fn sqlite() -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("outbox.db"))
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await?;
        sqlite::install(&pool).await?;
        sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .execute(&pool)
            .await?;
        Ok(Some(Self::Sqlite {
            outbox: SqliteOutbox::new(pool.clone()),
            pool,
            _dir: dir,
        }))
    }

    /// A fresh database on the `DATABASE_URL` server; `None` (skipped, said so) without one.
    pub(crate) async fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped: DATABASE_URL is not set, so the PostgreSQL outbox is not tested");
            return Ok(None);
        };
        let name = format!("test_outbox_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&url).await?;
        // The name is ours (a UUID), not input.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let pool = PgPool::connect_with(PgConnectOptions::from_str(&url)?.database(&name)).await?;
        postgres::install(&pool).await?;
        sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .execute(&pool)
            .await?;
        Ok(Some(Self::Postgres(pool)))
    }

    /// Appends `events` in one transaction, committed or rolled back.
    pub(crate) async fn append(&self, events: &[Envelope], commit: bool) -> anyhow::Result<()> {
        match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for event in events {
                    postgres::append(&mut tx, event).await?;
                }
                if commit {
                    tx.commit().await?
                } else {
                    tx.rollback().await?
                }
            }
            Self::Sqlite { pool, outbox, .. } => {
                let mut tx = pool.begin().await?;
                for event in events {
                    sqlite::append(&mut tx, event).await?;
                }
                if commit {
                    tx.commit().await?;
                    outbox.wake();
                } else {
                    tx.rollback().await?;
                }
            }
        }
        Ok(())
    }

    /// Applies an event's effect at most once for `consumer`: the record and the effect share
    /// one transaction. Returns whether the effect was applied.
    pub(crate) async fn apply_once(&self, consumer: &str, event_id: &str) -> anyhow::Result<bool> {
        Ok(match self {
            Self::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let first = postgres::record_processed(&mut tx, consumer, event_id).await?;
                if first {
                    sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                first
            }
            Self::Sqlite { pool, .. } => {
                let mut tx = pool.begin().await?;
                let first = sqlite::record_processed(&mut tx, consumer, event_id).await?;
                if first {
                    sqlx::query("INSERT INTO effects (event_id) VALUES (?)")
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                first
            }
        })
    }

    pub(crate) async fn effects(&self, event_id: &str) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query("SELECT count(*) AS n FROM effects WHERE event_id = $1")
                    .bind(event_id)
                    .fetch_one(pool)
                    .await?
                    .try_get("n")?
            }
            Self::Sqlite { pool, .. } => {
                sqlx::query("SELECT count(*) AS n FROM effects WHERE event_id = ?")
                    .bind(event_id)
                    .fetch_one(pool)
                    .await?
                    .try_get("n")?
            }
        })
    }

    pub(crate) async fn pending(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Postgres(pool) => PgOutbox::new(pool.clone()).backlog().await?.pending,
            Self::Sqlite { outbox, .. } => outbox.backlog().await?.pending,
        })
    }

    /// Starts a relay publishing to `publisher` until `stop` is cancelled.
    pub(crate) fn relay(
        &self,
        publisher: Arc<dyn EventPublisher>,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let config = RelayConfig {
            batch_size: 10,
            poll_interval,
            max_backoff: Duration::from_millis(200),
        };
        match self {
            Self::Postgres(pool) => {
                let relay = OutboxRelay::new("test", PgOutbox::new(pool.clone()), config);
                tokio::spawn(relay.run(publisher, stop))
            }
            Self::Sqlite { outbox, .. } => {
                let relay = OutboxRelay::new("test", outbox.clone(), config);
                tokio::spawn(relay.run(publisher, stop))
            }
        }
    }
}
