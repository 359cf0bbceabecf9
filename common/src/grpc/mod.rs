//! The gRPC server kit every service is built with, and the tower layers it installs.

mod abortable;
mod context;
mod red;
mod server;

pub use context::{REQUEST_ID_HEADER, RequestContextLayer};
pub use red::RedMetricsLayer;
pub use server::{GrpcServer, LIVENESS, ServeError};
