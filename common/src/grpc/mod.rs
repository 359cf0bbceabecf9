//! The gRPC server kit every service is built with, and the tower layers it installs.

mod abortable;
mod context;
mod readiness;
mod red;
mod server;
mod shed;
mod status;
mod undecodable;

pub(crate) use context::rpc_names;
pub use context::{REQUEST_ID_HEADER, RequestContextLayer};
pub use readiness::{Check, Readiness, ReadinessTiming};
pub use red::RedMetricsLayer;
pub use server::{GrpcServer, LIVENESS, ServeError};
pub use shed::ShedLayer;
pub(crate) use status::{OnStatus, StatusBody, record_on, status_in};
pub use undecodable::UndecodableLayer;
