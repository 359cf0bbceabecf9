//! What every shop service shares: configuration, telemetry, the gRPC server kit, the start-up
//! path, metrics, shutdown signalling, storage, events, resilience and the error convention.

pub mod allocator;
pub mod auth;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod fields;
pub mod grpc;
pub mod metrics;
pub mod paging;
pub mod process;
pub mod resilience;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod tls;

pub use error::Error;

/// A boxed future, for traits that must stay object-safe (stores, buses, handlers).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
