//! Token verification: RS256 only (no `none`, no HMAC, so a public key can never be used as an
//! HMAC secret), a known `kid`, and `iss`, `aud`, `exp` checked with a small leeway. Tokens that
//! passed are remembered until they expire, so a client's next call costs a lookup, not an RSA
//! verification.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, JwkSet},
};
use sha2::{Digest as _, Sha256};

use super::Claims;
use crate::cache::ExpiringCache;

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
    /// How many verified tokens are remembered at most; 0 verifies every call afresh.
    pub cache_size: usize,
}

/// A key and what it was made from, so that a fetch bringing the same key again (every JWKS
/// refresh does) can be told from a different key under a known `kid`.
struct Key {
    decoding: DecodingKey,
    source: Vec<u8>,
}

/// Verifies tokens against a set of public keys by `kid`. Several keys may be present, so a
/// rotation keeps old tokens valid until they expire.
pub struct Verifier {
    keys: RwLock<HashMap<String, Key>>,
    validation: Validation,
    /// The claims of tokens that passed, by the SHA-256 of the token (a digest keeps an entry
    /// small, a token is ~800 bytes, and no other token matches it), each until its `exp` plus
    /// the leeway, the moment `jsonwebtoken` would refuse it. What the bearer may do is still
    /// decided on every call (roles, revocation).
    verified: ExpiringCache<[u8; 32], Claims, u64>,
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
            verified: ExpiringCache::new(config.cache_size),
            validation,
        }
    }

    /// Adds (or replaces) the RSA keys of a JWK Set; keys of other types are skipped.
    pub fn add_jwks(&self, jwks: &JwkSet) -> usize {
        let mut added = 0;
        for jwk in &jwks.keys {
            // Only RSA: an `oct` key in a JWKS would otherwise become an HMAC secret.
            let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
                continue;
            };
            let (Some(kid), Ok(decoding)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let source = format!("{}.{}", rsa.n, rsa.e).into_bytes();
            self.insert(kid, Key { decoding, source });
            added += 1;
        }
        added
    }

    /// Adds a public key in PEM form under `kid`.
    pub fn add_pem(&self, kid: &str, public_pem: &[u8]) -> Result<(), jsonwebtoken::errors::Error> {
        let decoding = DecodingKey::from_rsa_pem(public_pem)?;
        let source = public_pem.to_vec();
        self.insert(kid.to_owned(), Key { decoding, source });
        Ok(())
    }

    fn insert(&self, kid: String, key: Key) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let replaced = keys
            .get(&kid)
            .is_some_and(|known| known.source != key.source);
        keys.insert(kid, key);
        if replaced {
            // A token verified with the key this `kid` named before may not pass any more.
            self.verified.clear();
        }
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(kid)
    }

    /// The claims of `token` if it passes, from the cache when it passed before and has not
    /// expired since. Failures are never remembered: a token naming a key fetched later passes
    /// then.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now = now_seconds();
        let digest = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.verified.get(&digest, now) {
            return Ok(claims);
        }
        let generation = self.verified.generation();
        let claims = self.verify_signed(token)?;
        let expires = claims.exp.saturating_add(self.validation.leeway);
        self.verified
            .insert(digest, claims.clone(), expires, generation, now);
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid);
        }
        let kid = header.kid.ok_or(AuthError::Invalid)?;
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let key = keys.get(&kid).ok_or(AuthError::Invalid)?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| {
                tracing::debug!(%error, "token rejected");
                AuthError::Invalid
            })
    }

    /// How many verified tokens are remembered now.
    pub fn cached(&self) -> usize {
        self.verified.len()
    }
}

/// Seconds since the epoch, as `exp` counts them.
fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keys and tokens for the tests of the auth layer.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::OnceLock;

    use jsonwebtoken::{EncodingKey, Header};

    use super::*;
    use crate::auth::Role;

    pub(crate) const ISSUER: &str = "https://users.shop.test";
    pub(crate) const AUDIENCE: &str = "shop";

    pub(crate) struct TestKey {
        pub(crate) private: Vec<u8>,
        pub(crate) public: Vec<u8>,
    }

    fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the auth tests make RSA keys with the openssl command");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input).expect("openssl takes the key");
        }
        let output = child.wait_with_output().expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    fn make_key() -> TestKey {
        let private = openssl(&["genrsa", "2048"], None);
        let public = openssl(&["rsa", "-pubout"], Some(&private));
        TestKey { private, public }
    }

    /// Two RSA keys, made once per test binary.
    pub(crate) fn keys() -> &'static [TestKey; 2] {
        static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
        KEYS.get_or_init(|| [make_key(), make_key()])
    }

    pub(crate) fn verifier(cache_size: usize, leeway_seconds: u64) -> Verifier {
        Verifier::new(&VerifierConfig {
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            leeway_seconds,
            cache_size,
        })
    }

    pub(crate) fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            email: format!("{sub}@example.com"),
            roles: vec![Role::Customer],
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            exp,
            iat: now_seconds(),
            jti: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub(crate) fn sign(key: &TestKey, kid: &str, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_rsa_pem(&key.private).expect("a PEM RSA key");
        jsonwebtoken::encode(&header, claims, &key).expect("signed")
    }

    pub(crate) fn now() -> u64 {
        now_seconds()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{testing::*, *};

    #[test]
    fn a_verified_token_is_remembered_and_answered_with_the_same_claims() {
        let verifier = verifier(100, 30);
        let [key, _] = keys();
        verifier.add_pem("k1", &key.public).expect("a public key");
        let claims = claims("u1", now() + 900);
        let token = sign(key, "k1", &claims);
        assert_eq!(verifier.verify(&token), Ok(claims.clone()));
        assert_eq!(verifier.cached(), 1);
        assert_eq!(verifier.verify(&token), Ok(claims));
        assert_eq!(verifier.cached(), 1);
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_even_when_it_was_cached() {
        let verifier = verifier(100, 2);
        let [key, _] = keys();
        verifier.add_pem("k1", &key.public).expect("a public key");
        // Expired already, admitted for the two seconds of leeway.
        let exp = now() - 1;
        let token = sign(key, "k1", &claims("u1", exp));
        assert!(verifier.verify(&token).is_ok());
        assert_eq!(verifier.cached(), 1);
        while now() <= exp + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(verifier.verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn a_token_altered_after_it_was_cached_is_refused() {
        let verifier = verifier(100, 30);
        let [key, _] = keys();
        verifier.add_pem("k1", &key.public).expect("a public key");
        let token = sign(key, "k1", &claims("u1", now() + 900));
        assert!(verifier.verify(&token).is_ok());
        let (signed, signature) = token.rsplit_once('.').expect("three parts");
        let forged = format!("{signed}x.{signature}");
        assert_eq!(verifier.verify(&forged), Err(AuthError::Invalid));
    }

    #[test]
    fn a_refused_token_is_not_remembered_so_it_passes_once_its_key_arrives() {
        let verifier = verifier(100, 30);
        let [key, _] = keys();
        let token = sign(key, "k1", &claims("u1", now() + 900));
        assert_eq!(verifier.verify(&token), Err(AuthError::Invalid));
        assert_eq!(verifier.cached(), 0);
        verifier.add_pem("k1", &key.public).expect("a public key");
        assert!(verifier.verify(&token).is_ok());
    }

    #[test]
    fn another_key_under_a_known_kid_forgets_what_the_old_key_verified() {
        let verifier = verifier(100, 30);
        let [old, new] = keys();
        verifier.add_pem("k1", &old.public).expect("a public key");
        let token = sign(old, "k1", &claims("u1", now() + 900));
        assert!(verifier.verify(&token).is_ok());
        verifier.add_pem("k1", &old.public).expect("a public key");
        assert_eq!(verifier.cached(), 1, "the same key again changes nothing");
        verifier.add_pem("k1", &new.public).expect("a public key");
        assert_eq!(verifier.verify(&token), Err(AuthError::Invalid));
    }

    #[test]
    fn a_cache_of_size_zero_remembers_nothing() {
        let verifier = verifier(0, 30);
        let [key, _] = keys();
        verifier.add_pem("k1", &key.public).expect("a public key");
        let token = sign(key, "k1", &claims("u1", now() + 900));
        assert!(verifier.verify(&token).is_ok());
        assert_eq!(verifier.cached(), 0);
    }
}
