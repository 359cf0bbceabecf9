//! The request-side plugins of `kong.yaml` other than rate limiting: `jwt` (verified against
//! user-service's JWKS rather than a consumer's PEM, so rotation needs no config change),
//! `correlation-id` and `cors`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use shop_common::auth::{self, AuthError, Claims, KeySource, RemoteKeys, Verifier};
use tonic::Code;

use crate::{errors::ApiError, kong::Plugin};

/// The `jwt` plugin: a bearer token every protected route requires.
pub(crate) struct Jwt {
    verifier: Arc<Verifier>,
    keys: Arc<dyn KeySource>,
}

impl Jwt {
    pub(crate) fn new(keys: RemoteKeys) -> Self {
        Self {
            verifier: keys.verifier,
            keys: keys.jwks,
        }
    }

    pub(crate) async fn verify(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let unauthorized = |error: AuthError| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::Unauthenticated,
                error.to_string(),
            )
        };
        let token = auth::bearer_token(headers).ok_or_else(|| unauthorized(AuthError::Missing))?;
        auth::verify(&self.verifier, Some(self.keys.as_ref()), token)
            .await
            .map_err(unauthorized)
    }
}

/// The `correlation-id` plugin: the client's id or a new UUID, sent upstream and echoed.
#[derive(Debug, Clone)]
pub(crate) struct Correlation {
    pub(crate) header: http::HeaderName,
    pub(crate) echo: bool,
}

impl Correlation {
    pub(crate) fn from_plugin(plugin: &Plugin) -> Self {
        let header = plugin
            .str("header_name")
            .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .unwrap_or(http::HeaderName::from_static("kong-request-id"));
        Self {
            header,
            echo: plugin.bool("echo_downstream").unwrap_or(false),
        }
    }

    pub(crate) fn id(&self, headers: &HeaderMap) -> String {
        headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
    }
}

/// The `cors` plugin.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    origins: Vec<String>,
    methods: Vec<String>,
    headers: Vec<String>,
    exposed: Vec<String>,
    credentials: bool,
    max_age: Option<u64>,
}

impl Cors {
    pub(crate) fn from_plugin(plugin: &Plugin) -> Self {
        Self {
            origins: plugin.strings("origins"),
            methods: plugin.strings("methods"),
            headers: plugin.strings("headers"),
            exposed: plugin.strings("exposed_headers"),
            credentials: plugin.bool("credentials").unwrap_or(false),
            max_age: plugin.u64("max_age"),
        }
    }

    fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
        (self.origins.iter().any(|o| o == "*" || o == origin)).then_some(origin)
    }

    /// Headers for a response to a request from an allowed origin.
    pub(crate) fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = self.allowed_origin(request) else {
            return;
        };
        let mut put = |name: header::HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                response.insert(name, value);
            }
        };
        put(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        put(header::VARY, "Origin");
        if self.credentials {
            put(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
        }
        if !self.exposed.is_empty() {
            put(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                &self.exposed.join(", "),
            );
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`), if it is one.
    pub(crate) fn preflight(&self, method: &Method, request: &HeaderMap) -> Option<HeaderMap> {
        if method != Method::OPTIONS || !request.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let mut response = HeaderMap::new();
        self.decorate(request, &mut response);
        let mut put = |name: header::HeaderName, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.insert(name, value);
            }
        };
        put(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods.join(", "),
        );
        put(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.headers.join(", "),
        );
        if let Some(max_age) = self.max_age {
            put(header::ACCESS_CONTROL_MAX_AGE, max_age.to_string());
        }
        Some(response)
    }
}
