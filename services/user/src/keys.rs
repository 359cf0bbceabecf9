//! The RSA keys that sign tokens: one signs, all (retired ones too) are published in the JWKS so
//! a rotation never invalidates tokens still in flight. Key ids are RFC 7638 thumbprints, so the
//! same key always gets the same `kid`, on every replica.

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use shop_common::{Error, auth::Claims};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

pub struct SigningKeys {
    signing_kid: String,
    signing_key: EncodingKey,
    jwks: JwkSet,
}

impl SigningKeys {
    /// `signing_pem` signs; `retired_pems` (private or public keys) only verify.
    pub fn from_pems(signing_pem: &str, retired_pems: &[String]) -> Result<Self, KeyError> {
        let signing_key = EncodingKey::from_rsa_pem(signing_pem.as_bytes())
            .map_err(|e| KeyError(format!("not a PEM RSA private key: {e}")))?;
        let signing = published(
            Jwk::from_encoding_key(&signing_key, Algorithm::RS256)
                .map_err(|e| KeyError(format!("cannot read the public part of the key: {e}")))?,
        )?;
        let signing_kid = signing.common.key_id.clone().unwrap_or_default();
        let mut keys = vec![signing];
        for (i, pem) in retired_pems.iter().enumerate() {
            let jwk =
                public_jwk(pem).map_err(|e| KeyError(format!("retired key {}: {}", i + 1, e.0)))?;
            if !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
                keys.push(jwk);
            }
        }
        Ok(Self {
            signing_kid,
            signing_key,
            jwks: JwkSet { keys },
        })
    }

    /// A fresh 2048-bit private key in PKCS#8 PEM, for local runs without a configured one.
    pub fn generate_pem() -> Result<String, KeyError> {
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048)
            .map_err(|e| KeyError(format!("cannot generate an RSA key: {e}")))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError(format!("cannot encode the generated key: {e}")))?;
        Ok(pem.to_string())
    }

    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// Every public key, the signing one first.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing_key).map_err(Error::internal)
    }
}

fn public_jwk(pem: &str) -> Result<Jwk, KeyError> {
    let jwk = if pem.contains("PRIVATE KEY") {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError(format!("not a PEM RSA private key: {e}")))?;
        Jwk::from_encoding_key(&key, Algorithm::RS256)
    } else {
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError(format!("not a PEM RSA public key: {e}")))?;
        Jwk::from_decoding_key(&key, Some(Algorithm::RS256))
    }
    .map_err(|e| KeyError(format!("cannot read the public part of the key: {e}")))?;
    published(jwk)
}

/// The JWK as published: `use: sig`, `alg: RS256` and the thumbprint as `kid`.
fn published(mut jwk: Jwk) -> Result<Jwk, KeyError> {
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyError(format!("cannot compute the key id: {e}")))?;
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(Algorithm::RS256.into());
    Ok(jwk)
}
