//! The SQL database a service owns. Stores are written once, over sqlx's `Any` driver, and run
//! on PostgreSQL (production, CI) or an SQLite file (the embedded default); the URL scheme picks
//! the backend here and nowhere else. Our schemas keep to what `Any` carries (text, integers,
//! bytes): ids are text, times are milliseconds, money is integer minor units. Statements use
//! `$n` placeholders, which SQLite accepts too.

use std::{str::FromStr as _, sync::Arc, time::Duration};

use sqlx::{
    Any, AnyPool, Connection as _, Executor as _, Transaction,
    any::AnyPoolOptions,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection},
    sqlite::SqliteConnectOptions,
};
use tokio::sync::Notify;

use crate::{
    config::ConfigError,
    events::outbox::{self, OutboxError},
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
    Outbox(#[from] OutboxError),
}

/// What a database URL names. MongoDB is here so a service that can use it (the catalogue)
/// decides by the same rule; [`Db`] itself is SQL only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    MongoDb,
}

impl Backend {
    /// The backend of `url`; any other scheme is a configuration error naming `setting`.
    pub fn of(setting: &str, url: &str) -> Result<Self, ConfigError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "sqlite" => Ok(Self::Sqlite),
            "mongodb" | "mongodb+srv" => Ok(Self::MongoDb),
            _ => Err(ConfigError::new(
                setting,
                "must start with postgres://, postgresql://, sqlite: or mongodb://",
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
            Self::MongoDb => "mongodb",
        }
    }
}

/// How long a pooled PostgreSQL connection may sit idle before it is pinged on its way out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A connection pool to the service's database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The service it belongs to, for its metrics.
    service: &'static str,
    /// Wakes this process's outbox relay when a transaction with events commits.
    committed: Arc<Notify>,
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://path`), creating an SQLite file and its
    /// folder if missing. A bad URL is a configuration error naming `setting`.
    pub async fn connect(setting: &str, url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(setting, url)?;
        let pool = match backend {
            Backend::Postgres => {
                PgConnectOptions::from_str(url)
                    .map_err(|e| ConfigError::new(setting, format!("not a PostgreSQL URL: {e}")))?;
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    // sqlx pings a connection as it comes back to the pool; pinging it again
                    // on the way out doubled the round trips of every query under load. Only
                    // one that sat idle a while (the server may have dropped it) is checked.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for > IDLE_BEFORE_PING {
                                conn.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Sqlite => connect_sqlite(setting, url).await?,
            Backend::MongoDb => {
                return Err(ConfigError::new(
                    setting,
                    "this service stores its data in SQL: use postgres:// or sqlite:",
                )
                .into());
            }
        };
        Ok(Self {
            pool,
            backend,
            service: "",
            committed: Arc::new(Notify::new()),
        })
    }

    /// Names the service this database belongs to: its transactions are reported under that
    /// name.
    pub fn of_service(mut self, service: &'static str) -> Self {
        self.service = service;
        self
    }

    /// Applies the service's migrations and installs the outbox and revocation tables; safe at
    /// every start.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), StorageError> {
        migrator.run(&self.pool).await?;
        outbox::install(self).await?;
        crate::auth::revocation::install(self).await?;
        Ok(())
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a transaction. On SQLite it takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// transaction that reads and then writes could otherwise fail to upgrade its lock.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, crate::Error> {
        let statement = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres | Backend::MongoDb => "BEGIN",
        };
        let started = std::time::Instant::now();
        let transaction = self.pool.begin_with(statement).await?;
        acquire_seconds()
            .with_label_values(&[self.service])
            .observe(started.elapsed().as_secs_f64());
        Ok(transaction)
    }

    /// Tells the relay that a transaction holding events committed.
    pub fn events_committed(&self) {
        self.committed.notify_one();
    }

    /// Returns when a transaction with events committed in this process, or after `at_most`.
    pub(crate) async fn committed_or(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.committed.notified()).await;
    }
}

/// How long a transaction waited for a connection and its BEGIN: the pool's waits.
fn acquire_seconds() -> &'static prometheus::HistogramVec {
    static HISTOGRAM: std::sync::LazyLock<prometheus::HistogramVec> =
        std::sync::LazyLock::new(|| {
            crate::metrics::seconds_histogram_vec(
                "db_transaction_acquire_seconds",
                "Time to get a pooled connection and begin a transaction",
                &["service"],
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ],
            )
        });
    &HISTOGRAM
}

async fn connect_sqlite(setting: &str, url: &str) -> Result<AnyPool, StorageError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| ConfigError::new(setting, format!("not an SQLite URL: {e}")))?;
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
    // `Any` reads only the URL, so the file is created by `mode=rwc` and the rest is set per
    // connection.
    let url = if in_memory || url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    };
    let pool = AnyPoolOptions::new()
        // Every in-memory connection would be a database of its own.
        .max_connections(if in_memory { 1 } else { 8 })
        // A file does not hang up, and each ping is a round trip to the connection's thread.
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // `synchronous = NORMAL`: in WAL mode a commit no longer waits for an fsync
                // (only checkpoints do), so the single writer holds the lock for far less time.
                // A killed process loses nothing committed; a power cut may lose the last
                // commits before the machine went down, which the embedded default accepts.
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                )
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    Ok(pool)
}

/// The URL of database `name` on the PostgreSQL server of `server_url`, created if missing, so
/// one server can hold every service's database (`shop_user`, `shop_order`, …).
pub async fn database_on(server_url: &str, name: &str) -> Result<String, StorageError> {
    plain_database_name(name)?;
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

/// Drops database `name` from the PostgreSQL server of `server_url`, ending its sessions first;
/// nothing if it is gone already.
async fn drop_database(server_url: &str, name: &str) -> Result<(), StorageError> {
    plain_database_name(name)?;
    let mut admin = PgConnection::connect(server_url).await?;
    // `name` was checked to be a plain identifier; DROP DATABASE takes no parameters.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await.ok();
    Ok(())
}

/// A test's database: dropped, its sessions ended, when this is, so a developer's server does
/// not collect them; kept when this is dropped by a panic (a failed assertion), so the failed
/// test's data can be looked at.
pub struct ScratchDatabase {
    server_url: String,
    name: String,
}

impl ScratchDatabase {
    /// Database `name` made on the server of `server_url` ([`database_on`]): its URL, and the
    /// guard that drops it.
    pub async fn create(server_url: &str, name: &str) -> Result<(String, Self), StorageError> {
        let url = database_on(server_url, name).await?;
        let guard = Self {
            server_url: server_url.to_owned(),
            name: name.to_owned(),
        };
        Ok((url, guard))
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("database {} kept for the post-mortem", self.name);
            return;
        }
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop cannot await on the caller's runtime: a thread with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(drop_database(&server_url, &name)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(Ok(())))) {
            eprintln!("database {} was left on the server: {dropped:?}", self.name);
        }
    }
}

/// A database name that can go into a statement's text as it is: 1 to 63 of a-z, 0-9 and _.
fn plain_database_name(name: &str) -> Result<(), ConfigError> {
    let plain = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Ok(())
    } else {
        Err(ConfigError::new(
            "database name",
            format!("{name:?} must be 1 to 63 of a-z, 0-9 and _"),
        ))
    }
}

/// A database error as the client should see it: one a retry may get past is UNAVAILABLE (see
/// [`is_transient`]), anything else INTERNAL. Unique violations are the caller's to translate
/// first (see [`is_unique_violation`]), so `?` on a store call does the rest.
impl From<sqlx::Error> for crate::Error {
    fn from(error: sqlx::Error) -> Self {
        if is_transient(&error) {
            Self::unavailable("database", error)
        } else {
            Self::internal(error)
        }
    }
}

/// Whether a retry may get past `error`: the database did not answer or the connection broke;
/// on PostgreSQL also a lost connection (class 08), a session ended by the server, a shutdown
/// or a cancelled statement (class 57, `pg_terminate_backend` among them), too many connections
/// (53300), and a transaction given up to a concurrent one (40001, 40P01); on SQLite a busy or
/// locked database. Event handlers retry these instead of dead-lettering the event: a release
/// of stock whose session was terminated went to the dead-letter queue, and its stock with it.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            if code.len() == 5 {
                // PostgreSQL's SQLSTATE: always five characters.
                code.starts_with("08")
                    || code.starts_with("57")
                    || matches!(code.as_ref(), "53300" | "40001" | "40P01")
            } else {
                // SQLite's result code, extended: the primary code is its low byte.
                code.parse::<u32>()
                    .is_ok_and(|n| matches!(n & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
            }
        }),
        _ => false,
    }
}

const SQLITE_BUSY: u32 = 5;
const SQLITE_LOCKED: u32 = 6;

/// An outbox failure, translated like a database error.
impl From<OutboxError> for crate::Error {
    fn from(error: OutboxError) -> Self {
        match error {
            OutboxError::Database(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_backend() {
        let cases = [
            ("postgres://db/shop", Backend::Postgres),
            ("postgresql://db/shop", Backend::Postgres),
            ("sqlite://data/shop.db", Backend::Sqlite),
            ("sqlite::memory:", Backend::Sqlite),
            ("mongodb://db/shop", Backend::MongoDb),
            ("mongodb+srv://cluster/shop", Backend::MongoDb),
        ];
        for (url, backend) in cases {
            assert_eq!(
                Backend::of("DATABASE_URL", url).ok(),
                Some(backend),
                "{url}"
            );
        }
        let error = Backend::of("ORDER_DATABASE_URL", "mysql://db/shop").err();
        assert_eq!(
            error.map(|e| e.setting),
            Some("ORDER_DATABASE_URL".to_owned())
        );
    }

    /// A session the server ends (the chaos suite's `pg-terminate-backend`) is worth a retry,
    /// a statement the server refuses is not; on this machine's PostgreSQL when `DATABASE_URL`
    /// is set.
    #[tokio::test]
    async fn a_terminated_session_is_unavailable_and_a_bad_statement_internal() {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("skipped: DATABASE_URL is not set");
            return;
        };
        let mut conn = PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = sqlx::query("SELECT no_such_column FROM pg_database")
            .execute(&mut conn)
            .await
            .err()
            .map(crate::Error::from);
        assert!(
            matches!(refused, Some(crate::Error::Internal(_))),
            "{refused:?}"
        );
        let terminated = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&mut conn)
            .await
            .err()
            .map(crate::Error::from);
        assert!(
            matches!(terminated, Some(crate::Error::Unavailable { .. })),
            "{terminated:?}"
        );
    }

    #[tokio::test]
    async fn a_catalogue_url_is_refused_by_an_sql_service_naming_the_setting() {
        let error = Db::connect("ORDER_DATABASE_URL", "mongodb://db/shop")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("ORDER_DATABASE_URL"), "{error}");
    }
}
