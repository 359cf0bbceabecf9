//! The JWK Set on the wire (`shop.user.v1.Jwk`) and the client that keeps a verifier's keys in
//! step with user-service: fetched at start, refreshed periodically and when a token names a
//! `kid` it has not seen (a rotation), at most once per `min_interval`, through a circuit
//! breaker so that while user-service is down a token with a new `kid` fails fast instead of
//! queueing behind fetches that time out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::client::TracedChannel;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
    RSAKeyParameters, RSAKeyType,
};
use shop_proto::user::v1::{self as pb, user_service_client::UserServiceClient};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::Verifier;
use crate::{
    BoxFuture,
    config::ConfigError,
    resilience::{Breaker, BreakerSettings, is_outage},
    tls::ClientTls,
};

/// The breakers around user-service's keys and service tokens. The open period stays short:
/// tokens with a new key fail while it lasts, even after user-service is back.
pub const USER_SERVICE_BREAKER: BreakerSettings = BreakerSettings {
    failures: 5,
    open_for: Duration::from_secs(5),
    open_max: Duration::from_secs(30),
};

/// The RSA keys of `jwks` as the proto message carries them.
pub fn to_proto(jwks: &JwkSet) -> Vec<pb::Jwk> {
    jwks.keys
        .iter()
        .filter_map(|jwk| match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => Some(pb::Jwk {
                kty: "RSA".to_owned(),
                kid: jwk.common.key_id.clone().unwrap_or_default(),
                r#use: "sig".to_owned(),
                alg: "RS256".to_owned(),
                n: rsa.n.clone(),
                e: rsa.e.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The proto keys as a JWK Set; keys that are not RS256 signing keys are left out.
pub fn from_proto(keys: &[pb::Jwk]) -> JwkSet {
    JwkSet {
        keys: keys
            .iter()
            .filter(|k| k.kty == "RSA" && k.alg == "RS256" && !k.kid.is_empty())
            .map(|k| Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::RS256),
                    key_id: Some(k.kid.clone()),
                    ..CommonParameters::default()
                },
                algorithm: AlgorithmParameters::RSA(RSAKeyParameters {
                    key_type: RSAKeyType::RSA,
                    n: k.n.clone(),
                    e: k.e.clone(),
                }),
            })
            .collect(),
    }
}

/// Something that can fetch fresh keys into a verifier when a token names an unknown `kid`.
pub trait KeySource: Send + Sync {
    fn refresh(&self) -> BoxFuture<'_, ()>;
}

/// Fetches the JWKS from user-service over gRPC.
pub struct JwksClient {
    client: UserServiceClient<TracedChannel>,
    verifier: Arc<Verifier>,
    min_interval: Duration,
    last_fetch: Mutex<Option<Instant>>,
    breaker: Breaker,
}

impl JwksClient {
    /// `user_service_url` is like `http://user-service:50051`; nothing connects until the first
    /// fetch, so start-up order does not matter. Its breaker's metric names no service: a
    /// service's own client comes from [`RemoteKeys::new`].
    pub fn new(
        setting: &str,
        user_service_url: &str,
        tls: &ClientTls,
        verifier: Arc<Verifier>,
    ) -> Result<Self, ConfigError> {
        Self::of_service("", setting, user_service_url, tls, verifier)
    }

    fn of_service(
        service: &str,
        setting: &str,
        user_service_url: &str,
        tls: &ClientTls,
        verifier: Arc<Verifier>,
    ) -> Result<Self, ConfigError> {
        let channel = crate::client::lazy_channel(setting, user_service_url, tls)?;
        Ok(Self {
            client: UserServiceClient::new(channel),
            verifier,
            min_interval: Duration::from_secs(10),
            last_fetch: Mutex::new(None),
            breaker: Breaker::new(service, "user_service_jwks", USER_SERVICE_BREAKER),
        })
    }

    /// Fetches now, whatever the last fetch; returns how many keys the verifier took.
    pub async fn fetch(&self) -> Result<usize, tonic::Status> {
        let mut last = self.last_fetch.lock().await;
        self.fetch_locked(&mut last).await
    }

    async fn fetch_locked(&self, last: &mut Option<Instant>) -> Result<usize, tonic::Status> {
        *last = Some(Instant::now());
        let mut client = self.client.clone();
        let response = self
            .breaker
            .call(client.get_jwks(pb::GetJwksRequest {}), is_outage)
            .await?
            .into_inner();
        let added = self.verifier.add_jwks(&from_proto(&response.keys));
        tracing::debug!(keys = added, "jwks fetched");
        Ok(added)
    }

    /// Fetches at start, then every `every`, until `shutdown`. Failures are logged and retried
    /// on the next tick (or on the next unknown `kid`).
    pub async fn refresh_every(&self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(error) = self.fetch().await {
                        tracing::warn!(%error, "jwks fetch failed");
                    }
                }
            }
        }
    }
}

/// What every service that checks tokens needs: a verifier fed from user-service's JWKS and the
/// client that fetches them, every five minutes and again on an unknown `kid`.
#[derive(Clone)]
pub struct RemoteKeys {
    pub verifier: Arc<Verifier>,
    pub jwks: Arc<JwksClient>,
}

impl RemoteKeys {
    /// How often the keys are fetched without a reason.
    pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

    /// The keys of `service` (its breaker's metric label); `USER_SERVICE_URL` names the
    /// setting in errors. Nothing is fetched until [`JwksClient::refresh_every`] runs or a
    /// token names an unknown key.
    pub fn new(
        service: &str,
        user_service_url: &str,
        tls: &ClientTls,
        config: &super::VerifierConfig,
    ) -> Result<Self, ConfigError> {
        let verifier = Arc::new(Verifier::new(config));
        let jwks = Arc::new(JwksClient::of_service(
            service,
            "USER_SERVICE_URL",
            user_service_url,
            tls,
            verifier.clone(),
        )?);
        Ok(Self { verifier, jwks })
    }

    /// The auth layer enforcing `policy` with these keys.
    pub fn auth(&self, policy: super::Policy) -> super::AuthLayer {
        super::AuthLayer::new(self.verifier.clone(), policy).with_key_source(self.jwks.clone())
    }
}

impl KeySource for JwksClient {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // One fetch at a time; callers that waited behind it find it fresh and skip.
            let mut last = self.last_fetch.lock().await;
            if last.is_some_and(|at| at.elapsed() < self.min_interval) {
                return;
            }
            if let Err(error) = self.fetch_locked(&mut last).await {
                tracing::warn!(%error, "jwks fetch for an unknown key id failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn while_user_service_is_down_fetches_stop_reaching_it_after_a_few_failures()
    -> anyhow::Result<()> {
        let config = crate::config::JwtArgs::default().verifier_config();
        // Nothing listens on port 1: each fetch that goes out is refused.
        let keys = RemoteKeys::new(
            "jwks-test",
            "http://127.0.0.1:1",
            &ClientTls::none(),
            &config,
        )?;
        for _ in 0..USER_SERVICE_BREAKER.failures {
            let refused = keys
                .jwks
                .fetch()
                .await
                .err()
                .map(|s| s.message().to_owned());
            assert!(
                refused
                    .as_deref()
                    .is_some_and(|m| !m.contains("circuit breaker")),
                "{refused:?}"
            );
        }
        let status = keys.jwks.fetch().await.err();
        assert_eq!(
            status.as_ref().map(tonic::Status::code),
            Some(tonic::Code::Unavailable)
        );
        assert_eq!(
            status.as_ref().map(tonic::Status::message),
            Some("circuit breaker open for user_service_jwks")
        );
        Ok(())
    }
}
