//! The gRPC server kit every service is built with, and the tower layers it installs.

mod abortable;
mod client;
mod context;
mod red;
mod server;

pub use client::lazy_channel;
pub use context::{REQUEST_ID_HEADER, RequestContextLayer};
pub use red::RedMetricsLayer;
pub use server::{GrpcServer, ServeError};
