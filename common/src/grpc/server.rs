//! The server builder every service uses: health, reflection (v1 and v1alpha), grpc-web,
//! request context, RED metrics, graceful shutdown and, when configured, TLS or mTLS, so no
//! service repeats them.

use std::{convert::Infallible, time::Duration};

use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Service;

use tokio_stream::StreamExt as _;

use tracing::instrument::WithSubscriber as _;

use super::{
    Readiness, RedMetricsLayer, RequestContextLayer, ShedLayer, UndecodableLayer,
    abortable::Abortable,
};
use crate::{
    BoxFuture,
    auth::AuthLayer,
    config::{LimitArgs, ShutdownArgs},
    telemetry::DispatchLayer,
    tls::{ServerTls, TlsIncoming},
};

const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// A health entry that is SERVING for as long as the process serves at all, draining included:
/// what a liveness probe asks, so a service that is only not ready is never restarted.
pub const LIVENESS: &str = "liveness";
const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reflection set-up failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A gRPC server under construction. Add the service's API with [`GrpcServer::add_service`], name
/// the dependencies readiness follows with [`GrpcServer::ready_while`], then [`GrpcServer::serve`].
pub struct GrpcServer {
    name: String,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    health: HealthReporter,
    readiness: Readiness,
    auth: Option<AuthLayer>,
    tls: Option<ServerTls>,
    limits: LimitArgs,
    shutdown: ShutdownArgs,
}

impl GrpcServer {
    /// `name` labels logs (`user-service`); `descriptor_set` is what reflection serves.
    pub fn new(
        name: impl Into<String>,
        descriptor_set: &'static [u8],
        shutdown: ShutdownArgs,
    ) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Self {
            name: name.into(),
            routes,
            services: Vec::new(),
            descriptor_sets: vec![descriptor_set],
            health,
            readiness: Readiness::default(),
            auth: None,
            tls: None,
            limits: LimitArgs::default(),
            shutdown,
        }
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible, Response = Response<Body>>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.services.push(S::NAME);
        self
    }

    /// Health is SERVING while every dependency of `readiness` answers (checked at start and
    /// then every few seconds), NOT_SERVING otherwise. Without any, the server is ready as soon
    /// as it listens.
    pub fn ready_while(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Verifies tokens and enforces the service's role table on every call.
    pub fn with_auth(mut self, auth: AuthLayer) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Serves over TLS (`Some`), requiring client certificates if it has a client CA;
    /// plaintext with `None`.
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// How many calls it runs at once; past that, calls are shed (see [`ShedLayer`]).
    pub fn with_limits(mut self, limits: LimitArgs) -> Self {
        self.limits = limits;
        self
    }

    /// The health reporter, for parts that later go NOT_SERVING (an open circuit breaker).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` is cancelled, then: health goes NOT_SERVING, the
    /// server keeps answering for the drain delay (so probes and load balancers see it), stops
    /// accepting, and gives in-flight calls the grace period before it returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let Self {
            name,
            mut routes,
            services,
            descriptor_sets,
            health,
            readiness,
            auth,
            tls,
            limits,
            shutdown: timing,
        } = self;
        let health_names: Vec<&str> = std::iter::once("")
            .chain(services.iter().copied())
            .collect();
        set_status(&health, &health_names, ServingStatus::NotServing).await;
        health
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;

        routes.add_service(reflection(&descriptor_sets, &services).build_v1()?);
        routes.add_service(reflection(&descriptor_sets, &services).build_v1alpha()?);
        let known = services
            .iter()
            .copied()
            .chain([HEALTH_SERVICE])
            .chain(REFLECTION_SERVICES);
        let max_in_flight = usize::try_from(limits.grpc_max_in_flight).unwrap_or(usize::MAX);
        let layers = tower::ServiceBuilder::new()
            .layer(DispatchLayer::current())
            .layer(RequestContextLayer)
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(RedMetricsLayer::new(known))
            // Shed before the token is verified: a refusal must cost next to nothing.
            .layer(ShedLayer::new(&name, max_in_flight))
            .option_layer(auth)
            .layer(UndecodableLayer);

        let security = match &tls {
            None => "plaintext",
            Some(tls) if tls.is_mutual() => "mtls",
            Some(_) => "tls",
        };
        match listener.local_addr() {
            Ok(addr) => tracing::info!(service = %name, %addr, security, "grpc server listening"),
            Err(error) => {
                tracing::warn!(service = %name, %error, "grpc server listening on an unknown address")
            }
        }

        let watcher = tokio::spawn(
            readiness
                .watch(
                    name.clone(),
                    health.clone(),
                    health_names.iter().map(|s| (*s).to_owned()).collect(),
                )
                .with_current_subscriber(),
        );
        let stop_watching = watcher.abort_handle();

        let drained = {
            let shutdown = shutdown.clone();
            let health = health.clone();
            let names: Vec<String> = health_names.iter().map(|s| (*s).to_owned()).collect();
            let name = name.clone();
            let drain_delay = timing.shutdown_drain_delay;
            async move {
                shutdown.cancelled().await;
                // Stopped and gone before NOT_SERVING is set, so no late check turns it back.
                watcher.abort();
                let _ = watcher.await;
                set_status(&health, &names, ServingStatus::NotServing).await;
                tracing::info!(service = %name, ?drain_delay, "not serving; draining");
                tokio::time::sleep(drain_delay).await;
            }
        };

        let abort = CancellationToken::new();
        let incoming = {
            let abort = abort.clone();
            // Without it the first answer on a new connection waits for the client's delayed
            // ACK (about 40 ms).
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(move |io| io.map(|io| Abortable::new(io, abort.clone())))
        };
        let router = Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            // A gateway or sidecar carries many clients on one connection and cancels a call
            // for each that goes away. At h2's default of 20 such resets before the server took
            // the calls up, it closed the whole connection (GOAWAY), failing everyone else's
            // calls on it. The calls in flight stay bounded by the shed limit regardless.
            .http2_max_pending_accept_reset_streams(Some(max_in_flight))
            .layer(layers)
            .add_routes(routes.routes());
        let server: BoxFuture<'_, Result<(), tonic::transport::Error>> = match tls {
            Some(tls) => Box::pin(
                router.serve_with_incoming_shutdown(TlsIncoming::new(incoming, tls), drained),
            ),
            None => Box::pin(router.serve_with_incoming_shutdown(incoming, drained)),
        };
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(timing.shutdown_drain_delay + timing.shutdown_grace_period).await;
        };

        tokio::pin!(server, deadline);
        loop {
            tokio::select! {
                result = &mut server => {
                    stop_watching.abort();
                    tracing::info!(service = %name, "grpc server stopped");
                    return result.map_err(ServeError::from);
                }
                () = &mut deadline, if !abort.is_cancelled() => {
                    tracing::warn!(service = %name, grace = ?timing.shutdown_grace_period, "grace period over; closing connections with calls in flight");
                    abort.cancel();
                }
            }
        }
    }
}

async fn set_status(health: &HealthReporter, names: &[impl AsRef<str>], status: ServingStatus) {
    for name in names {
        health.set_service_status(name, status).await;
    }
}

/// Reflection advertises only what this server serves, though the descriptor set holds every
/// service of the mesh. The builder is not `Clone`, hence one per protocol version.
fn reflection<'a>(
    descriptor_sets: &[&'a [u8]],
    services: &[&'static str],
) -> tonic_reflection::server::Builder<'a> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .include_reflection_service(false);
    for set in descriptor_sets {
        builder = builder.register_encoded_file_descriptor_set(set);
    }
    for name in services
        .iter()
        .copied()
        .chain([HEALTH_SERVICE])
        .chain(REFLECTION_SERVICES)
    {
        builder = builder.with_service_name(name);
    }
    builder
}
