//! The one start-up path of every service. A service's `serve` lists what it has (its database,
//! the keys that check tokens, the events it publishes and consumes, its own background tasks)
//! through a [`Service`], which owns every task it starts, serves gRPC with the server kit, and
//! on shutdown stops the tasks and waits for each of them.

use std::{future::Future, sync::Arc, time::Duration};

use sqlx::migrate::Migrator;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber as _;

use crate::{
    auth::{RemoteKeys, RevocationStore, Revocations},
    config::{ConfigError, EventArgs, JwtArgs, ShutdownArgs},
    events::{
        self, BusError, EventBus, EventHandler, RabbitBus, Subscription,
        outbox::{Outbox, OutboxRelay, RelayConfig},
    },
    grpc::{Check, GrpcServer, Readiness, ServeError},
    storage::{Db, StorageError},
    tls::ClientTls,
};

/// How often a database pool's use is sampled.
const POOL_EVERY: Duration = Duration::from_secs(5);

/// How often a consumer's queue depth is sampled.
const LAG_EVERY: Duration = Duration::from_secs(15);

/// What a service is started with besides its own settings.
pub struct Start {
    pub listener: TcpListener,
    /// A bus the caller shares (`shop up`, tests). Without one the service connects to
    /// `AMQP_URL` itself, if that is set.
    pub bus: Option<Arc<dyn EventBus>>,
    pub shutdown: CancellationToken,
}

impl Start {
    pub fn new(listener: TcpListener, shutdown: CancellationToken) -> Self {
        Self {
            listener,
            bus: None,
            shutdown,
        }
    }

    pub fn with_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }
}

/// Why a service did not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    /// A start-up step of the service's own (seeding, a hasher) failed.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: crate::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

impl StartError {
    pub fn step(step: impl Into<String>, source: crate::Error) -> Self {
        Self::Step {
            step: step.into(),
            source,
        }
    }
}

/// A service being started: see the module documentation.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    bus: Option<Arc<dyn EventBus>>,
    shutdown: CancellationToken,
    /// Stops the background tasks once the server has stopped, so a consumer or the relay
    /// still runs while in-flight calls drain.
    stop: CancellationToken,
    tasks: JoinSet<()>,
    /// What health waits for and follows: the database, once [`Service::database`] opened it.
    readiness: Readiness,
}

impl Service {
    /// Starts `name` (it labels logs, metrics and its queue). Connects to RabbitMQ when `start`
    /// brings no bus and `events` names one.
    pub async fn start(
        name: &'static str,
        start: Start,
        events: &EventArgs,
    ) -> Result<Self, StartError> {
        let bus = match (start.bus, events.url()?) {
            (Some(bus), _) => Some(bus),
            (None, Some(url)) => {
                Some(Arc::new(RabbitBus::connect(url.expose()).await?) as Arc<dyn EventBus>)
            }
            (None, None) => {
                tracing::warn!(
                    service = name,
                    "AMQP_URL is not set: events wait in the outbox and none are consumed"
                );
                None
            }
        };
        Ok(Self {
            name,
            listener: start.listener,
            bus,
            shutdown: start.shutdown,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            readiness: Readiness::default(),
        })
    }

    /// Starts a part with no events at all (the gateway): no bus, no warning about one.
    pub fn without_events(name: &'static str, start: Start) -> Self {
        Self {
            name,
            listener: start.listener,
            bus: None,
            shutdown: start.shutdown,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            readiness: Readiness::default(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The token background tasks stop on.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Opens the service's SQL database (`setting` names the URL's setting in errors) and
    /// applies its migrations.
    pub async fn database(
        &mut self,
        setting: &str,
        url: &str,
        migrator: &Migrator,
    ) -> Result<Db, StartError> {
        let db = Db::connect(setting, url).await?.of_service(self.name);
        db.migrate(migrator).await?;
        tracing::info!(
            service = self.name,
            backend = db.backend().name(),
            "store ready"
        );
        let answers = db.clone();
        self.require(
            "database",
            Arc::new(move || {
                let db = answers.clone();
                Box::pin(async move { db.ping().await.map_err(|e| e.to_string()) })
            }),
        );
        let stop = self.stopping();
        let pool = db.pool().clone();
        self.spawn(crate::metrics::report_pool(
            self.name, pool, POOL_EVERY, stop,
        ));
        Ok(db)
    }

    /// Makes health follow `dependency`: NOT_SERVING while `check` fails. The database opened
    /// by [`Service::database`] is required already; a store of another kind adds its own. The
    /// broker is not: the outbox keeps what is published while it is away, so requests can
    /// still be served (and it answered at start, or the service would not have started).
    pub fn require(&mut self, dependency: &'static str, check: Check) {
        self.readiness.require(dependency, check);
    }

    /// The keys that verify callers' tokens, fetched from user-service and kept fresh.
    pub fn remote_keys(
        &mut self,
        user_service_url: &str,
        tls: &ClientTls,
        jwt: &JwtArgs,
    ) -> Result<RemoteKeys, StartError> {
        let keys = RemoteKeys::new(self.name, user_service_url, tls, &jwt.verifier_config())?;
        let jwks = keys.jwks.clone();
        let stop = self.stopping();
        self.spawn(async move { jwks.refresh_every(RemoteKeys::REFRESH_EVERY, stop).await });
        Ok(keys)
    }

    /// The service's revocation list, loaded from `store` now and kept in step with it (see
    /// [`Revocations::maintain`]); its events come through [`Revocations::handling`].
    pub async fn revocations(
        &mut self,
        store: Arc<dyn RevocationStore>,
    ) -> Result<Arc<Revocations>, StartError> {
        let revocations = Arc::new(
            Revocations::load(self.name, store)
                .await
                .map_err(|e| StartError::step("revocation list", e))?,
        );
        let maintained = revocations.clone();
        let stop = self.stopping();
        self.spawn(async move { maintained.maintain(stop).await });
        Ok(revocations)
    }

    /// Publishes what `db`'s outbox holds, once the bus has it; without a bus the events wait.
    pub fn publish_outbox(&mut self, db: &Db) {
        let Some(bus) = self.bus.clone() else {
            return;
        };
        let relay = OutboxRelay::new(self.name, Outbox::new(db.clone()), RelayConfig::default());
        let stop = self.stopping();
        self.spawn(relay.run(bus, stop));
    }

    /// Declares the service's queue and starts delivering its events to `handler`.
    pub async fn consume(
        &mut self,
        event_types: &[&str],
        handler: Arc<dyn EventHandler>,
    ) -> Result<(), StartError> {
        let Some(bus) = self.bus.clone() else {
            return Ok(());
        };
        let consumer = bus
            .subscribe(
                Subscription::new(self.name, event_types),
                handler,
                self.stopping(),
            )
            .await?;
        self.spawn(async move {
            if let Err(error) = consumer.await {
                tracing::warn!(%error, "event consumer task failed");
            }
        });
        let stop = self.stopping();
        self.spawn(events::report_lag(bus, self.name, LAG_EVERY, stop));
        Ok(())
    }

    /// Runs `task` until it ends by itself or on [`Service::stopping`], in this service's
    /// dispatch (its logs and spans name it).
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task.with_current_subscriber());
    }

    /// The server kit for this service: health, reflection, grpc-web, metrics, drain.
    pub fn grpc(&self, timing: ShutdownArgs) -> GrpcServer {
        GrpcServer::new(self.name, shop_proto::FILE_DESCRIPTOR_SET, timing)
    }

    /// Serves `server` until shutdown, then stops the background tasks and waits for them.
    pub async fn serve(self, server: GrpcServer) -> Result<(), StartError> {
        let listener = self.listener;
        let served = server
            .ready_while(self.readiness)
            .serve(listener, self.shutdown)
            .await;
        finish(self.stop, self.tasks).await;
        Ok(served?)
    }

    /// [`Service::serve`] for a server that is not gRPC (the gateway): `server` gets the
    /// listener and the shutdown signal.
    pub async fn run<F, Fut, E>(self, server: F) -> Result<(), StartError>
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        StartError: From<E>,
    {
        let served = server(self.listener, self.shutdown).await;
        finish(self.stop, self.tasks).await;
        Ok(served?)
    }
}

/// What `<service> migrate` does for a service on SQL: applies its migrations, then declares its
/// queue. Idempotent, so a deployment's migration job may run it at every install and upgrade.
pub async fn migrate(
    name: &'static str,
    setting: &str,
    url: &str,
    migrator: &Migrator,
    events: &EventArgs,
    consumes: &[&str],
) -> Result<(), StartError> {
    let db = Db::connect(setting, url).await?;
    db.migrate(migrator).await?;
    tracing::info!(
        service = name,
        backend = db.backend().name(),
        "migrations applied"
    );
    declare_queue(name, events, consumes).await
}

/// Declares the queue and bindings of a service that consumes `consumes`, when a broker is
/// configured, so events published before its first start wait for it instead of being
/// unroutable.
pub async fn declare_queue(
    name: &'static str,
    events: &EventArgs,
    consumes: &[&str],
) -> Result<(), StartError> {
    let Some(url) = events.url()? else {
        return Ok(());
    };
    if consumes.is_empty() {
        return Ok(());
    }
    let bus = RabbitBus::connect(url.expose()).await?;
    bus.declare(&[Subscription::new(name, consumes)]).await?;
    tracing::info!(service = name, "event queue declared");
    Ok(())
}

async fn finish(stop: CancellationToken, mut tasks: JoinSet<()>) {
    stop.cancel();
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined {
            tracing::warn!(%error, "background task failed");
        }
    }
}
