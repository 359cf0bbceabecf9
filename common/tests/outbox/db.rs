//! One test database per test, on either backend, with the few operations the suite needs.

use std::{sync::Arc, time::Duration};

use shop_common::{
    events::{
        Envelope, EventPublisher,
        outbox::{self, Outbox, OutboxRelay, RelayConfig},
    },
    storage::{Db as Database, ScratchDatabase},
};
use sqlx::Row as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// No migrations of a service: only the outbox tables (installed by `migrate`) and this.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

pub(crate) struct Db {
    /// Events are appended through the relay's own pool, as in a service: its commits wake the
    /// relay in-process.
    db: Database,
    _dir: Option<tempfile::TempDir>,
    _scratch: Option<ScratchDatabase>,
}

impl Db {
    async fn open(
        url: &str,
        dir: Option<tempfile::TempDir>,
        scratch: Option<ScratchDatabase>,
    ) -> anyhow::Result<Self> {
        let db = Database::connect("DATABASE_URL", url).await?;
        db.migrate(&MIGRATOR).await?;
        sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
            .execute(db.pool())
            .await?;
        Ok(Self {
            db,
            _dir: dir,
            _scratch: scratch,
        })
    }

    pub(crate) async fn sqlite() -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
        Ok(Some(Self::open(&url, Some(dir), None).await?))
    }

    /// A fresh database on the `DATABASE_URL` server; `None` (skipped, said so) without one.
    pub(crate) async fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(server) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped: DATABASE_URL is not set, so the PostgreSQL outbox is not tested");
            return Ok(None);
        };
        let name = format!("test_outbox_{}", uuid::Uuid::new_v4().simple());
        let (url, scratch) = ScratchDatabase::create(&server, &name).await?;
        Ok(Some(Self::open(&url, None, Some(scratch)).await?))
    }

    /// Appends `events` in one transaction, committed or rolled back.
    pub(crate) async fn append(&self, events: &[Envelope], commit: bool) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        for event in events {
            outbox::append(&mut tx, event).await?;
        }
        if commit {
            tx.commit().await?;
            self.db.events_committed();
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }

    /// Applies an event's effect at most once for `consumer`: the record and the effect share
    /// one transaction. Returns whether the effect was applied.
    pub(crate) async fn apply_once(&self, consumer: &str, event_id: &str) -> anyhow::Result<bool> {
        let mut tx = self.db.begin().await?;
        let first = outbox::record_processed(&mut tx, consumer, event_id).await?;
        if first {
            sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(first)
    }

    pub(crate) async fn effects(&self, event_id: &str) -> anyhow::Result<i64> {
        Ok(
            sqlx::query("SELECT count(*) AS n FROM effects WHERE event_id = $1")
                .bind(event_id)
                .fetch_one(self.db.pool())
                .await?
                .try_get("n")?,
        )
    }

    pub(crate) async fn pending(&self) -> anyhow::Result<i64> {
        Ok(Outbox::new(self.db.clone()).backlog().await?.pending)
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
        let relay = OutboxRelay::new("test", Outbox::new(self.db.clone()), config);
        tokio::spawn(relay.run(publisher, stop))
    }
}
