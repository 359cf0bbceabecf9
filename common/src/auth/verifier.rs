//! Token verification: RS256 only (no `none`, no HMAC, so a public key can never be used as an
//! HMAC secret), a known `kid`, and `iss`, `aud`, `exp` checked with a small leeway.

use std::{collections::HashMap, sync::RwLock};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, JwkSet},
};

use super::Claims;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    /// Deliberately vague: the client learns the token is not accepted, not why.
    #[error("invalid or expired token")]
    Invalid,
    /// Issued before its account's password or roles changed, or before it was deleted.
    #[error(
        "this session was revoked (the password or roles changed, or the account was deleted); sign in again"
    )]
    Revoked,
    #[error("{0}")]
    Forbidden(String),
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Missing | AuthError::Invalid | AuthError::Revoked => {
                Self::unauthenticated(error.to_string())
            }
            AuthError::Forbidden(_) => Self::permission_denied(error.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp`, in seconds.
    pub leeway_seconds: u64,
}

/// Verifies tokens against a set of public keys by `kid`. Several keys may be present, so a
/// rotation keeps old tokens valid until they expire.
pub struct Verifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
}

impl Verifier {
    pub fn new(config: &VerifierConfig) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = config.leeway_seconds;
        Self {
            keys: RwLock::new(HashMap::new()),
            validation,
        }
    }

    /// Adds (or replaces) the RSA keys of a JWK Set; keys of other types are skipped.
    pub fn add_jwks(&self, jwks: &JwkSet) -> usize {
        let mut added = 0;
        for jwk in &jwks.keys {
            // Only RSA: an `oct` key in a JWKS would otherwise become an HMAC secret.
            if !matches!(jwk.algorithm, AlgorithmParameters::RSA(_)) {
                continue;
            }
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            self.insert(kid, key);
            added += 1;
        }
        added
    }

    /// Adds a public key in PEM form under `kid`.
    pub fn add_pem(&self, kid: &str, public_pem: &[u8]) -> Result<(), jsonwebtoken::errors::Error> {
        let key = DecodingKey::from_rsa_pem(public_pem)?;
        self.insert(kid.to_owned(), key);
        Ok(())
    }

    fn insert(&self, kid: String, key: DecodingKey) {
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(kid, key);
        }
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.keys
            .read()
            .map(|k| k.contains_key(kid))
            .unwrap_or(false)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let keys = self.keys.read().map_err(|_| AuthError::Invalid)?;
        let key = keys.get(&kid).ok_or(AuthError::Invalid)?;
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                tracing::debug!(%error, "token rejected");
                AuthError::Invalid
            })
    }
}
