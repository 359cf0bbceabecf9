//! What a token says about its bearer.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    /// Another service of the mesh, calling on its own behalf.
    Service,
}

/// The claims user-service puts in every access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (or the service client id).
    pub sub: String,
    #[serde(default)]
    pub email: String,
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    pub iat: u64,
    /// Token id, unique per token.
    pub jti: String,
}

impl Claims {
    /// The caller of a call the auth layer let through; UNAUTHENTICATED when there is none (a
    /// public method called without a token).
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("missing bearer token"))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}
