//! Role-based access per gRPC method, declared in one table per service. Health and reflection
//! are always public; a method missing from the table is denied.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{AuthError, Claims, KeySource, RevocationList, Role, Verifier, bearer_token};

#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// No token needed (register, login, browsing the catalogue).
    Public,
    /// A valid token with at least one of these roles.
    Roles(&'static [Role]),
}

const ALWAYS_PUBLIC: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Method path (`/shop.order.v1.OrderService/PlaceOrder`) → who may call it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    methods: Arc<HashMap<String, Access>>,
}

impl Policy {
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Access)>) -> Self {
        Self {
            methods: Arc::new(
                entries
                    .into_iter()
                    .map(|(path, access)| (path.to_owned(), access))
                    .collect(),
            ),
        }
    }

    fn access(&self, path: &str) -> Option<Access> {
        if ALWAYS_PUBLIC.iter().any(|prefix| path.starts_with(prefix)) {
            return Some(Access::Public);
        }
        self.methods.get(path).copied()
    }
}

/// Verifies the bearer token, refuses revoked sessions and enforces the policy before a call
/// reaches its handler; the claims travel on in the request extensions
/// (`request.extensions().get::<Claims>()`).
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    policy: Policy,
    key_source: Option<Arc<dyn KeySource>>,
    revocations: Option<Arc<RevocationList>>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<Verifier>, policy: Policy) -> Self {
        Self {
            verifier,
            policy,
            key_source: None,
            revocations: None,
        }
    }

    /// Where to fetch keys when a token names a `kid` the verifier does not know yet (the
    /// issuer rotated); the call is then verified once more.
    pub fn with_key_source(mut self, source: Arc<dyn KeySource>) -> Self {
        self.key_source = Some(source);
        self
    }

    /// Refuses tokens issued before their user's sessions were revoked (see
    /// [`super::revocation`]).
    pub fn with_revocations(mut self, revocations: Arc<RevocationList>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = super::verify(&self.verifier, self.key_source.as_deref(), token).await?;
        if let Some(revocations) = &self.revocations {
            revocations.check(&claims)?;
        }
        Ok(claims)
    }

    async fn authorize<B>(&self, request: &mut Request<B>) -> Result<(), AuthError> {
        let path = request.uri().path();
        let token = bearer_token(request.headers()).map(str::to_owned);
        match self.policy.access(path) {
            None => Err(AuthError::Forbidden(format!(
                "{path} is not open to any role"
            ))),
            Some(Access::Public) => {
                // A public call may still say who it is (GetJwks from a signed-in page).
                if let Some(token) = token
                    && let Ok(claims) = self.verify(&token).await
                {
                    request.extensions_mut().insert(claims);
                }
                Ok(())
            }
            Some(Access::Roles(roles)) => {
                let claims = self.verify(&token.ok_or(AuthError::Missing)?).await?;
                if !roles.iter().any(|role| claims.has_role(*role)) {
                    let needed: Vec<String> = roles
                        .iter()
                        .map(|r| format!("{r:?}").to_lowercase())
                        .collect();
                    return Err(AuthError::Forbidden(format!(
                        "{} requires the role {}",
                        request.uri().path(),
                        needed.join(" or ")
                    )));
                }
                request.extensions_mut().insert(claims);
                Ok(())
            }
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResBody> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes with the call; a fresh clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            match layer.authorize(&mut request).await {
                Ok(()) => inner.call(request).await,
                Err(error) => Ok(tonic::Status::from(error).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{
        Revocation,
        verifier::testing::{claims, keys, now, sign, verifier},
    };

    #[tokio::test]
    async fn a_revoked_sessions_token_is_refused_even_when_its_verification_is_cached() {
        let verifier = Arc::new(verifier(100, 30));
        let [key, _] = keys();
        verifier.add_pem("k1", &key.public).expect("a public key");
        let revocations = Arc::new(RevocationList::default());
        let layer = AuthLayer::new(verifier.clone(), Policy::default())
            .with_revocations(revocations.clone());
        let token = sign(key, "k1", &claims("u1", now() + 900));
        assert!(layer.verify(&token).await.is_ok());
        assert_eq!(verifier.cached(), 1);
        let at_ms = i64::try_from(now() * 1000).unwrap_or(i64::MAX);
        revocations.insert(&Revocation {
            user_id: "u1".to_owned(),
            not_before_ms: at_ms,
            forget_after_ms: at_ms + 900_000,
        });
        assert_eq!(layer.verify(&token).await, Err(AuthError::Revoked));
        assert_eq!(
            verifier.cached(),
            1,
            "refused by the list, not for want of a cache entry"
        );
    }
}
