//! The bearer token of a request, read and verified the same way by every service's auth layer
//! and by the gateway's `jwt` plugin.

use http::HeaderMap;

use super::{AuthError, Claims, KeySource, Verifier};

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235). `None` when the header is missing, not text, another scheme, or empty.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verifies `token`; when it names a key the verifier does not know yet (the issuer rotated),
/// fetches the keys from `source` (rate-limited there) and verifies once more.
pub async fn verify(
    verifier: &Verifier,
    source: Option<&dyn KeySource>,
    token: &str,
) -> Result<Claims, AuthError> {
    match verifier.verify(token) {
        Err(AuthError::Invalid) if names_unknown_key(verifier, token) => match source {
            Some(source) => {
                source.refresh().await;
                verifier.verify(token)
            }
            None => Err(AuthError::Invalid),
        },
        verified => verified,
    }
}

fn names_unknown_key(verifier: &Verifier, token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|header| header.kid)
        .is_some_and(|kid| !verifier.knows(&kid))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(authorization) {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_trimmed() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer_token(&headers(value)), Some("abc"), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_token() {
        for value in ["Basic abc", "Bearer", "Bearer   ", "abc", ""] {
            assert_eq!(bearer_token(&headers(value)), None, "{value:?}");
        }
    }
}
