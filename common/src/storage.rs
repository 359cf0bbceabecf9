//! The SQL database a service owns, chosen by the URL scheme: PostgreSQL in production and CI,
//! an SQLite file for the embedded default. Also creates per-service databases on one server.

use std::{str::FromStr as _, sync::Arc, time::Duration};

use sqlx::{
    Connection as _, PgPool, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::ConfigError,
    events::{
        EventPublisher,
        outbox::{self, OutboxRelay, RelayConfig, postgres::PgOutbox, sqlite::SqliteOutbox},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("database is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
}

/// A connection pool to the service's database. For SQLite it also carries the in-process
/// wake-up of the outbox relay, since SQLite has no NOTIFY.
#[derive(Clone)]
pub enum Sql {
    Postgres(PgPool),
    Sqlite {
        pool: SqlitePool,
        outbox: SqliteOutbox,
    },
}

impl Sql {
    /// Connects to `url` (`postgres://…` or `sqlite://path`), creating an SQLite file and its
    /// folder if missing. A bad URL is a configuration error naming `setting`.
    pub async fn connect(setting: &str, url: &str) -> Result<Self, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| ConfigError::new(setting, format!("not a PostgreSQL URL: {e}")))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            return Ok(Self::Postgres(pool));
        }
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| ConfigError::new(setting, format!("not an SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(folder) = options.get_filename().parent()
                && !folder.as_os_str().is_empty()
            {
                std::fs::create_dir_all(folder).map_err(|e| {
                    ConfigError::new(
                        setting,
                        format!("cannot create folder {}: {e}", folder.display()),
                    )
                })?;
            }
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            // Every in-memory connection would be a database of its own.
            let pool = SqlitePoolOptions::new()
                .max_connections(if in_memory { 1 } else { 8 })
                .connect_with(options)
                .await?;
            let outbox = SqliteOutbox::new(pool.clone());
            return Ok(Self::Sqlite { pool, outbox });
        }
        Err(ConfigError::new(
            setting,
            "must start with postgres://, postgresql:// or sqlite:",
        )
        .into())
    }

    /// Applies the service's migrations and installs the outbox tables; safe at every start.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), StorageError> {
        match self {
            Self::Postgres(pool) => {
                migrator.run(pool).await?;
                outbox::postgres::install(pool).await?;
            }
            Self::Sqlite { pool, .. } => {
                migrator.run(pool).await?;
                outbox::sqlite::install(pool).await?;
            }
        }
        Ok(())
    }

    /// Tells the relay that a transaction holding events committed (PostgreSQL's NOTIFY does
    /// that by itself).
    pub fn events_committed(&self) {
        if let Self::Sqlite { outbox, .. } = self {
            outbox.wake();
        }
    }

    /// Starts the outbox relay publishing this database's events until `shutdown`.
    pub fn spawn_relay(
        &self,
        name: &str,
        publisher: Arc<dyn EventPublisher>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let config = RelayConfig::default();
        match self {
            Self::Postgres(pool) => {
                let relay = OutboxRelay::new(name, PgOutbox::new(pool.clone()), config);
                tokio::spawn(relay.run(publisher, shutdown))
            }
            Self::Sqlite { outbox, .. } => {
                let relay = OutboxRelay::new(name, outbox.clone(), config);
                tokio::spawn(relay.run(publisher, shutdown))
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite { .. } => "sqlite",
        }
    }
}

/// The URL of database `name` on the PostgreSQL server of `server_url`, created if missing, so
/// one server can hold every service's database (`shop_user`, `shop_order`, …).
pub async fn database_on(server_url: &str, name: &str) -> Result<String, StorageError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(ConfigError::new(
            "database name",
            format!("{name:?} must be 1 to 63 of a-z, 0-9 and _"),
        )
        .into());
    }
    let mut url = url::Url::parse(server_url)
        .map_err(|e| ConfigError::new("--database-url", format!("not a URL: {e}")))?;
    let mut admin = PgConnection::connect(server_url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        // `name` was checked above to be a plain identifier; CREATE DATABASE takes no parameters.
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await;
        match created {
            Ok(_) => tracing::info!(database = name, "database created"),
            // Another process created it in between: what we wanted.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e.into()),
        }
    }
    admin.close().await.ok();
    url.set_path(name);
    Ok(url.to_string())
}

/// A database error as the client should see it: the database not answering is UNAVAILABLE
/// (worth a retry), anything else INTERNAL. Unique violations are the caller's to translate
/// first (see [`is_unique_violation`]).
pub fn db_error(error: sqlx::Error) -> crate::Error {
    match &error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => crate::Error::unavailable("database", error),
        _ => crate::Error::internal(error),
    }
}

pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// An outbox append failure, translated like [`db_error`].
pub fn outbox_error(error: outbox::OutboxError) -> crate::Error {
    match error {
        outbox::OutboxError::Database(e) => db_error(e),
        other => crate::Error::internal(other),
    }
}
