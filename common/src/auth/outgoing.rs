//! Credentials on outgoing calls: on behalf of a user the caller's own token travels on, so the
//! callee checks the user's rights; as the service itself, a `service` token from user-service,
//! fetched on first use and renewed a little before it expires, through a circuit breaker: while
//! user-service is down, callers waiting for a token fail fast instead of queueing one time-out
//! after another behind the fetch.

use std::time::{Duration, Instant};

use shop_proto::user::v1::{IssueServiceTokenRequest, user_service_client::UserServiceClient};
use tokio::sync::Mutex;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
};

use super::jwks::USER_SERVICE_BREAKER;
use crate::{
    client::TracedChannel,
    config::{ConfigError, Secret},
    resilience::{Breaker, is_outage},
    tls::ClientTls,
};

const AUTHORIZATION: &str = "authorization";

/// Copies the caller's `authorization` header onto a request made on the caller's behalf.
pub fn forward_token<A, B>(incoming: &Request<A>, outgoing: &mut Request<B>) {
    if let Some(value) = incoming.metadata().get(AUTHORIZATION) {
        outgoing.metadata_mut().insert(AUTHORIZATION, value.clone());
    }
}

/// This service's own `service` token, for internal-only methods (stock reservation).
pub struct ServiceToken {
    client: UserServiceClient<TracedChannel>,
    client_id: String,
    client_secret: Secret,
    cached: Mutex<Option<(AsciiMetadataValue, Instant)>>,
    breaker: Breaker,
}

impl ServiceToken {
    /// Nothing connects until the first call needs a token. `client_id` names the calling
    /// service, and labels its breaker's metric.
    pub fn new(
        setting: &str,
        user_service_url: &str,
        tls: &ClientTls,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Result<Self, ConfigError> {
        let channel = crate::client::lazy_channel(setting, user_service_url, tls)?;
        let client_id = client_id.into();
        Ok(Self {
            client: UserServiceClient::new(channel),
            breaker: Breaker::new(&client_id, "user_service_token", USER_SERVICE_BREAKER),
            client_id,
            client_secret,
            cached: Mutex::new(None),
        })
    }

    /// Puts the service token on `request`. Errors: UNAUTHENTICATED when user-service refuses
    /// the client, UNAVAILABLE when it does not answer.
    pub async fn authorize<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        let value = self.header().await?;
        request.metadata_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    async fn header(&self) -> Result<AsciiMetadataValue, Status> {
        let mut cached = self.cached.lock().await;
        if let Some((value, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(value.clone());
        }
        let mut client = self.client.clone();
        let issue = client.issue_service_token(IssueServiceTokenRequest {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose().to_owned(),
        });
        let issued = self.breaker.call(issue, is_outage).await?.into_inner();
        let value: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {}", issued.access_token)).map_err(|_| {
                Status::internal("user-service issued a token that is not header-safe")
            })?;
        // Renew at 80 % of the lifetime, so a token never expires in flight.
        let lifetime = Duration::from_secs(u64::try_from(issued.expires_in).unwrap_or(0));
        *cached = Some((value.clone(), Instant::now() + lifetime.mul_f64(0.8)));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn while_user_service_is_down_token_requests_fail_fast_after_a_few_failures()
    -> anyhow::Result<()> {
        // Nothing listens on port 1: each request that goes out is refused.
        let token = ServiceToken::new(
            "USER_SERVICE_URL",
            "http://127.0.0.1:1",
            &ClientTls::none(),
            "token-test",
            Secret::new("secret"),
        )?;
        for _ in 0..USER_SERVICE_BREAKER.failures {
            let refused = token.authorize(&mut Request::new(())).await.err();
            assert_eq!(refused.map(|s| s.code()), Some(tonic::Code::Unavailable));
        }
        let status = token.authorize(&mut Request::new(())).await.err();
        assert_eq!(
            status.as_ref().map(Status::message),
            Some("circuit breaker open for user_service_token")
        );
        Ok(())
    }
}
