//! Health that means ready: a service is SERVING only while its database answers. Here
//! user-service's PostgreSQL database stops taking connections and its sessions are cut: health
//! goes NOT_SERVING (liveness stays SERVING, so nothing restarts it), and SERVING again once the
//! database is back.

use std::time::Duration;

use shop_common::{grpc::LIVENESS, service::Start, storage::ScratchDatabase};
use sqlx::{Connection as _, PgConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{channel, health_status, wait_for_health};

/// Lets `database` take connections or not, and cuts the ones it has.
async fn set_reachable(server: &str, database: &str, reachable: bool) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(server).await?;
    // `database` is this test's own identifier; ALTER DATABASE takes no parameters.
    let alter = format!("ALTER DATABASE {database} WITH ALLOW_CONNECTIONS {reachable}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(alter))
        .execute(&mut admin)
        .await?;
    if !reachable {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&mut admin)
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_the_database_away_and_back() -> anyhow::Result<()> {
    let Ok(server) = std::env::var("DATABASE_URL") else {
        eprintln!("skipped: DATABASE_URL is not set, so a database cannot be taken away");
        return Ok(());
    };
    let database = format!("test_ready_{}", uuid::Uuid::new_v4().simple());
    let (url, _scratch) = ScratchDatabase::create(&server, &database).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let config = user_service::Config::local(addr, url);
    let served = tokio::spawn(user_service::serve(
        config,
        Start::new(listener, shutdown.clone()),
    ));
    let channel = channel(addr).await?;
    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(20)).await?;

    set_reachable(&server, &database, false).await?;
    let lost = wait_for_health(&channel, ServingStatus::NotServing, Duration::from_secs(20)).await;
    let live = health_status(&channel, LIVENESS).await;
    set_reachable(&server, &database, true).await?;
    lost?;
    assert_eq!(
        live?,
        ServingStatus::Serving,
        "liveness must not follow the database"
    );

    wait_for_health(&channel, ServingStatus::Serving, Duration::from_secs(30)).await?;
    shutdown.cancel();
    served.await??;
    Ok(())
}
