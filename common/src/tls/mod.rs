//! Native TLS and mTLS for gRPC without a mesh (rustls): the certificate the server kit presents
//! and the client certificates it requires, and what outgoing channels trust and present.
//! Certificate files are read again when they change, so a rotation needs no restart.
//!
//! Inside Istio none of this is configured: the sidecar does mTLS, and the services speak
//! plaintext to it.

mod client;
mod reload;
mod server;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use client::ClientTls;
pub use server::ServerTls;
pub(crate) use server::TlsIncoming;

/// aws-lc-rs, named explicitly: the workspace builds rustls with both aws-lc-rs (lapin) and ring
/// (mongodb), and with two compiled in rustls cannot pick a process default by itself.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// HTTP/2 for gRPC; HTTP/1.1 for grpc-web, which the server kit also serves.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
