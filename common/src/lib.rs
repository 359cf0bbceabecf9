//! What every shop service shares: configuration, telemetry, the gRPC server kit, metrics,
//! shutdown signalling and the error convention.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod fields;
pub mod grpc;
pub mod metrics;
pub mod paging;
pub mod process;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

pub use error::Error;
