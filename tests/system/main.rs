//! System tests: the whole shop running in-process (or as the real `shop` binary), exercised over
//! real gRPC, grpc-web and HTTP on loopback.

#[path = "../support/chart.rs"]
mod chart;
mod crash;
mod deployment;
mod dlq_cli;
mod gateway;
mod helpers;
mod load;
mod observability;
mod overload;
mod process;
mod readiness;
mod revocation;
mod saga;
mod server_kit;
mod sessions;
mod tls;
