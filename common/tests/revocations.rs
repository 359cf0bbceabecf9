//! The revocation store on SQL and the list built from it: on SQLite always, on PostgreSQL when
//! `DATABASE_URL` is set (each test in its own database).

use std::sync::Arc;

use shop_common::{
    auth::{
        AuthError, Claims, Revocation, RevocationStore, Revocations, Role,
        revocation::{KEPT_BEYOND_EXPIRY, SqlRevocations},
    },
    clock::now_ms,
    events::Envelope,
    storage::{Db, ScratchDatabase},
};
use sqlx::Row as _;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

const MINUTE_MS: i64 = 60_000;

struct Database {
    db: Db,
    _dir: Option<tempfile::TempDir>,
    _scratch: Option<ScratchDatabase>,
}

async fn sqlite() -> anyhow::Result<Option<Database>> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("revocations.db").display());
    let db = Db::connect("DATABASE_URL", &url).await?;
    db.migrate(&MIGRATOR).await?;
    Ok(Some(Database {
        db,
        _dir: Some(dir),
        _scratch: None,
    }))
}

async fn postgres() -> anyhow::Result<Option<Database>> {
    let Ok(server) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set, so PostgreSQL revocations are not tested");
        return Ok(None);
    };
    let name = format!("test_revocations_{}", uuid::Uuid::new_v4().simple());
    let (url, scratch) = ScratchDatabase::create(&server, &name).await?;
    let db = Db::connect("DATABASE_URL", &url).await?;
    db.migrate(&MIGRATOR).await?;
    Ok(Some(Database {
        db,
        _dir: None,
        _scratch: Some(scratch),
    }))
}

fn revoked(user_id: &str, not_before_ms: i64) -> Revocation {
    Revocation {
        user_id: user_id.to_owned(),
        not_before_ms,
        forget_after_ms: not_before_ms + 15 * MINUTE_MS,
    }
}

fn token(sub: &str, iat_ms: i64) -> Claims {
    let iat = u64::try_from(iat_ms / 1000).unwrap_or(0);
    Claims {
        sub: sub.to_owned(),
        email: String::new(),
        roles: vec![Role::Customer],
        iss: String::new(),
        aud: String::new(),
        exp: iat + 900,
        iat,
        jti: String::new(),
    }
}

async fn not_before_of(db: &Db, user_id: &str) -> anyhow::Result<Option<i64>> {
    let row = sqlx::query("SELECT not_before_ms FROM revoked_sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(|r| r.try_get("not_before_ms")).transpose()?)
}

/// Events applied twice and out of order leave the newest revocation; a list loaded afresh (a
/// restarted service) refuses what the first one refused; spent entries go.
async fn the_newest_revocation_is_kept_survives_a_restart_and_is_forgotten_when_spent(
    database: Database,
) -> anyhow::Result<()> {
    let db = &database.db;
    let store: Arc<dyn RevocationStore> = Arc::new(SqlRevocations::new(db.clone()));
    let now = now_ms();
    let revocations = Arc::new(Revocations::load("order-service", store.clone()).await?);
    let newer = revoked("u1", now);
    let older = revoked("u1", now - MINUTE_MS);
    let event = Envelope::new("user-service", &newer.to_event("password_changed"));
    revocations.apply(&event).await?;
    revocations.apply(&event).await?;
    let late = Envelope::new("user-service", &older.to_event("roles_changed"));
    revocations.apply(&late).await?;
    assert_eq!(not_before_of(db, "u1").await?, Some(now));
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer = $1")
            .bind("order-service")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(processed, 2, "one record per event id");

    let restarted = Revocations::load("order-service", store.clone()).await?;
    let list = restarted.list();
    assert_eq!(
        list.check(&token("u1", now - 1000)),
        Err(AuthError::Revoked)
    );
    assert_eq!(list.check(&token("u1", now)), Err(AuthError::Revoked));
    assert_eq!(list.check(&token("u1", now + 1000)), Ok(()));

    // Recorded by another replica: the next reload takes it in.
    store
        .record("order-service", "from-another-replica", &revoked("u2", now))
        .await?;
    assert_eq!(list.check(&token("u2", now)), Ok(()));
    restarted.reload().await?;
    assert_eq!(list.check(&token("u2", now)), Err(AuthError::Revoked));

    let kept = i64::try_from(KEPT_BEYOND_EXPIRY.as_millis())?;
    let spent_at = now + 15 * MINUTE_MS + kept + 1;
    assert_eq!(store.forget_spent(now).await?, 0);
    assert_eq!(store.forget_spent(spent_at).await?, 2);
    assert!(store.load(now).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn sqlite_keeps_the_newest_revocation_across_restarts_until_spent() -> anyhow::Result<()> {
    let Some(db) = sqlite().await? else {
        return Ok(());
    };
    the_newest_revocation_is_kept_survives_a_restart_and_is_forgotten_when_spent(db).await
}

#[tokio::test]
async fn postgres_keeps_the_newest_revocation_across_restarts_until_spent() -> anyhow::Result<()> {
    let Some(db) = postgres().await? else {
        return Ok(());
    };
    the_newest_revocation_is_kept_survives_a_restart_and_is_forgotten_when_spent(db).await
}
