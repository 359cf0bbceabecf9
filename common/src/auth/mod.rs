//! Defence in depth: every service verifies the bearer token itself (RS256 against the JWKS that
//! user-service publishes) and checks a per-method role table in which a method not listed is
//! denied, not open. Tokens of sessions revoked before they expire (a new password, new roles,
//! a deleted account) are refused too (see [`revocation`]).

mod claims;
pub mod jwks;
mod outgoing;
mod rbac;
pub mod revocation;
mod token;
mod verifier;

pub use claims::{Claims, Role};
pub use jwks::{JwksClient, KeySource, RemoteKeys};
pub use outgoing::{ServiceToken, forward_token};
pub use rbac::{Access, AuthLayer, Policy};
pub use revocation::{Revocation, RevocationList, RevocationStore, Revocations};
pub use token::{bearer_token, verify};
pub use verifier::{AuthError, Verifier, VerifierConfig};
