//! Credentials on outgoing calls: on behalf of a user the caller's own token travels on, so the
//! callee checks the user's rights; as the service itself, a `service` token from user-service,
//! fetched on first use and renewed a little before it expires.

use std::time::{Duration, Instant};

use shop_proto::user::v1::{IssueServiceTokenRequest, user_service_client::UserServiceClient};
use tokio::sync::Mutex;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
};

use crate::{
    client::TracedChannel,
    config::{ConfigError, Secret},
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
}

impl ServiceToken {
    /// Nothing connects until the first call needs a token.
    pub fn new(
        setting: &str,
        user_service_url: &str,
        tls: &ClientTls,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Result<Self, ConfigError> {
        let channel = crate::client::lazy_channel(setting, user_service_url, tls)?;
        Ok(Self {
            client: UserServiceClient::new(channel),
            client_id: client_id.into(),
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
        let issued = self
            .client
            .clone()
            .issue_service_token(IssueServiceTokenRequest {
                client_id: self.client_id.clone(),
                client_secret: self.client_secret.expose().to_owned(),
            })
            .await?
            .into_inner();
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
