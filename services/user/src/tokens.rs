//! Minting tokens: RS256 access tokens carrying the account's roles, opaque single-use refresh
//! tokens (only their SHA-256 is stored), and short-lived `service` tokens for service clients.

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use shop_common::{
    Error,
    auth::{Claims, Role},
    config::JwtArgs,
};

use crate::{domain::User, keys::SigningKeys};

pub(crate) struct TokenIssuer {
    pub(crate) keys: Arc<SigningKeys>,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    pub(crate) service_ttl: Duration,
}

/// A refresh token as handed to the client, and the hash the store keeps.
pub(crate) struct RefreshToken {
    pub(crate) plain: String,
    pub(crate) hash: String,
}

impl TokenIssuer {
    pub(crate) fn new(
        keys: Arc<SigningKeys>,
        jwt: &JwtArgs,
        access_ttl: Duration,
        refresh_ttl: Duration,
        service_ttl: Duration,
    ) -> Self {
        Self {
            keys,
            issuer: jwt.jwt_issuer.clone(),
            audience: jwt.jwt_audience.clone(),
            access_ttl,
            refresh_ttl,
            service_ttl,
        }
    }

    pub(crate) fn access_token(&self, user: &User) -> Result<String, Error> {
        self.sign(&user.id, &user.email, user.roles.clone(), self.access_ttl)
    }

    pub(crate) fn service_token(&self, client_id: &str) -> Result<String, Error> {
        self.sign(client_id, "", vec![Role::Service], self.service_ttl)
    }

    fn sign(
        &self,
        sub: &str,
        email: &str,
        roles: Vec<Role>,
        ttl: Duration,
    ) -> Result<String, Error> {
        let now = jsonwebtoken::get_current_timestamp();
        self.keys.sign(&Claims {
            sub: sub.to_owned(),
            email: email.to_owned(),
            roles,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        })
    }

    pub(crate) fn refresh_token(&self) -> RefreshToken {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let plain = URL_SAFE_NO_PAD.encode(bytes);
        RefreshToken {
            hash: hash_refresh_token(&plain),
            plain,
        }
    }

    pub(crate) fn refresh_expiry_ms(&self) -> i64 {
        shop_common::clock::now_ms()
            .saturating_add(i64::try_from(self.refresh_ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Refresh tokens carry 256 random bits, so a plain SHA-256 is enough to keep a database leak
/// from yielding usable tokens.
pub(crate) fn hash_refresh_token(plain: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(plain.as_bytes()))
}
