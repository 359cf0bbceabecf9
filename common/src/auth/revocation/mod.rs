//! Sessions that end before their tokens expire. When an account's password or roles change, or
//! the account is deleted, user-service publishes `user.sessions_revoked`; every service that
//! checks tokens keeps the newest revocation per user in its own database (so a restart forgets
//! nothing) and in memory (so a call never waits for it), and its auth layer refuses the user's
//! tokens issued up to that moment.

mod list;
mod sql;

use std::{sync::Arc, time::Duration};

use shop_proto::{DomainEvent as _, events::v1::UserSessionsRevoked};
use tokio_util::sync::CancellationToken;

pub use list::{KEPT_BEYOND_EXPIRY, Revocation, RevocationList, spent_before};
pub(crate) use sql::install;
pub use sql::{SqlRevocations, record_in};

use crate::{
    BoxFuture, Error,
    clock::{now_ms, timestamp},
    events::{Envelope, EventHandler, HandlerError},
};

fn ms_of(time: Option<&prost_types::Timestamp>) -> i64 {
    time.map_or(0, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

impl Revocation {
    /// The revocation an event carries.
    pub fn from_event(event: &UserSessionsRevoked) -> Self {
        Self {
            user_id: event.user_id.clone(),
            not_before_ms: ms_of(event.not_before.as_ref()),
            forget_after_ms: ms_of(event.forget_after.as_ref()),
        }
    }

    /// The event announcing it; `reason` is for the logs of its consumers.
    pub fn to_event(&self, reason: &str) -> UserSessionsRevoked {
        UserSessionsRevoked {
            user_id: self.user_id.clone(),
            not_before: Some(timestamp(self.not_before_ms)),
            forget_after: Some(timestamp(self.forget_after_ms)),
            reason: reason.to_owned(),
        }
    }
}

/// Where a service keeps its revocations: its SQL database ([`SqlRevocations`]), or the
/// catalogue's MongoDB.
pub trait RevocationStore: Send + Sync {
    /// Records `revocation`, carried by event `event_id`, for `consumer`. Applying it twice
    /// changes nothing, and an older one never replaces a newer one.
    fn record<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
        revocation: &'a Revocation,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Every revocation that may still refuse a token at `now_ms`.
    fn load(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Revocation>, Error>>;

    /// Deletes the revocations whose tokens have all expired at `now_ms`; returns how many.
    fn forget_spent(&self, now_ms: i64) -> BoxFuture<'_, Result<u64, Error>>;
}

/// A service's revocation list and the store behind it.
pub struct Revocations {
    consumer: &'static str,
    store: Arc<dyn RevocationStore>,
    list: Arc<RevocationList>,
}

impl Revocations {
    /// How often the list takes in what the store holds: revocations that another replica of
    /// the service consumed (replicas share one queue, so each event reaches one of them).
    pub const RELOAD_EVERY: Duration = Duration::from_secs(5);
    /// How often spent entries are deleted from the store.
    const FORGET_EVERY: Duration = Duration::from_secs(60);

    /// The list as `store` holds it now; `consumer` names the service in `processed_events`.
    pub async fn load(
        consumer: &'static str,
        store: Arc<dyn RevocationStore>,
    ) -> Result<Self, Error> {
        let revocations = Self {
            consumer,
            store,
            list: Arc::default(),
        };
        revocations.reload().await?;
        tracing::info!(
            revoked_users = revocations.list.len(),
            "revocation list loaded"
        );
        Ok(revocations)
    }

    /// What the auth layer checks.
    pub fn list(&self) -> Arc<RevocationList> {
        self.list.clone()
    }

    /// Takes in what the store holds and forgets spent entries. Entries are only ever added or
    /// moved later here, so one applied meanwhile is never lost.
    pub async fn reload(&self) -> Result<(), Error> {
        let now = now_ms();
        for revocation in self.store.load(now).await? {
            self.list.insert(&revocation);
        }
        self.list.forget_spent(now);
        Ok(())
    }

    /// Applies a `user.sessions_revoked` event: stored (with its event id) first, then in the
    /// list, so acknowledging it after this returns loses nothing.
    pub async fn apply(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let event: UserSessionsRevoked = envelope.payload()?;
        let revocation = Revocation::from_event(&event);
        if revocation.user_id.is_empty() {
            return Err(HandlerError::Permanent(format!(
                "{} event {} names no user",
                UserSessionsRevoked::TYPE,
                envelope.id()
            )));
        }
        self.store
            .record(self.consumer, envelope.id(), &revocation)
            .await
            .map_err(|error| HandlerError::Transient(format!("{error:?}")))?;
        self.list.insert(&revocation);
        tracing::info!(
            user_id = %revocation.user_id,
            reason = %event.reason,
            not_before_ms = revocation.not_before_ms,
            "sessions revoked"
        );
        Ok(())
    }

    /// Reloads every [`Self::RELOAD_EVERY`] and deletes spent entries from the store every
    /// minute, until `shutdown`. Failures are logged and retried on the next tick.
    pub async fn maintain(&self, shutdown: CancellationToken) {
        let mut reloads = tokio::time::interval(Self::RELOAD_EVERY);
        let mut forgets = tokio::time::interval(Self::FORGET_EVERY);
        reloads.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        forgets.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = reloads.tick() => {
                    if let Err(error) = self.reload().await {
                        tracing::warn!(%error, "revocation list reload failed");
                    }
                }
                _ = forgets.tick() => match self.store.forget_spent(now_ms()).await {
                    Ok(forgotten) if forgotten > 0 => {
                        tracing::debug!(forgotten, "spent revocations deleted");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "deleting spent revocations failed"),
                },
            }
        }
    }

    /// The service's event handler with revocations taken out: `user.sessions_revoked` goes to
    /// [`Self::apply`], every other event to `inner`.
    pub fn handling(self: &Arc<Self>, inner: Arc<dyn EventHandler>) -> Arc<dyn EventHandler> {
        Arc::new(WithRevocations {
            revocations: self.clone(),
            inner,
        })
    }
}

struct WithRevocations {
    revocations: Arc<Revocations>,
    inner: Arc<dyn EventHandler>,
}

impl EventHandler for WithRevocations {
    fn handle<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), HandlerError>> {
        if envelope.event_type() == UserSessionsRevoked::TYPE {
            Box::pin(self.revocations.apply(envelope))
        } else {
            self.inner.handle(envelope)
        }
    }
}
