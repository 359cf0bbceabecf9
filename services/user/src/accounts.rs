//! What the service does with accounts, for the API and start-up seeding alike: register, log
//! in, refresh, read, change and delete accounts, and issue service tokens. Who may see or change
//! which account is decided here.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::jwk::JwkSet;
use shop_common::{
    Error,
    auth::{Claims, Revocation, RevocationList, Role},
    clock::now_ms,
    events::Envelope,
    paging::Cursor,
};
use shop_proto::events::v1::{UserDeleted, UserRegistered};

use crate::{
    NAME,
    clients::ServiceClients,
    config::SeedUser,
    domain::{DisplayName, Email, NewUser, Password, User, UserChanges},
    passwords::Passwords,
    store::{EndSessions, NewRefreshToken, Rotation, UserStore},
    throttle::LoginThrottle,
    tokens::{TokenIssuer, hash_refresh_token},
};

/// Said for an unknown email and for a wrong password alike.
const BAD_CREDENTIALS: &str = "email or password is incorrect";
const BAD_REFRESH_TOKEN: &str = "refresh token is invalid, expired or revoked";

/// What a client holds after logging in or refreshing.
pub(crate) struct TokenPair {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in: Duration,
}

pub(crate) struct Accounts {
    pub(crate) store: UserStore,
    pub(crate) passwords: Passwords,
    pub(crate) tokens: TokenIssuer,
    pub(crate) clients: ServiceClients,
    pub(crate) throttle: LoginThrottle,
    /// What this service's auth layer refuses; changes made here go in at once.
    pub(crate) revocations: Arc<RevocationList>,
}

impl Accounts {
    /// Creates an account with `roles`. Errors: ALREADY_EXISTS when the email is taken.
    pub(crate) async fn register(
        &self,
        email: Email,
        password: &Password,
        display_name: DisplayName,
        roles: Vec<Role>,
    ) -> Result<User, Error> {
        let new = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email,
            display_name,
            roles,
            password_hash: self.passwords.hash(password.expose()).await?,
        };
        let event = Envelope::new(
            NAME,
            &UserRegistered {
                user_id: new.id.clone(),
                email: new.email.as_str().to_owned(),
                display_name: new.display_name.as_str().to_owned(),
            },
        );
        let user = self.store.create(&new, &event).await?;
        tracing::info!(user_id = %user.id, "account registered");
        Ok(user)
    }

    /// Creates a configured account unless its email is taken; an existing account is left as
    /// it is.
    pub(crate) async fn seed(&self, seed: &SeedUser) -> Result<(), Error> {
        let email = Email::parse("email", &seed.email)?;
        if self.store.credentials(email.as_str()).await?.is_some() {
            return Ok(());
        }
        let password = Password::parse("password", seed.password.expose(), &email)?;
        let roles = if seed.admin {
            vec![Role::Customer, Role::Admin]
        } else {
            vec![Role::Customer]
        };
        let name = DisplayName::parse("display_name", &seed.display_name)?;
        match self.register(email, &password, name, roles).await {
            Ok(user) => {
                tracing::info!(user_id = %user.id, email = %user.email, admin = seed.admin, "account seeded");
                Ok(())
            }
            // Another replica seeded it first.
            Err(Error::AlreadyExists(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// A new token pair for the account, if the password is its own. An unknown email costs
    /// one hash too and gets the same answer, so neither timing nor message tells them apart.
    pub(crate) async fn login(
        &self,
        email: &str,
        password: &str,
        client: &str,
    ) -> Result<(User, TokenPair), Error> {
        let email = crate::domain::normalise_email(email);
        let attempt = self
            .throttle
            .attempt(&email, client, Instant::now())
            .map_err(|wait| {
                Error::exhausted(
                    format!(
                        "too many failed sign-ins; try again in {} s",
                        wait.as_secs_f64().ceil().max(1.0)
                    ),
                    wait,
                )
            })?;
        // No stored email holds NUL (registration refuses it), and PostgreSQL refuses the
        // byte in a query parameter: answer like any unknown email instead of INTERNAL.
        let found = if email.contains('\0') {
            None
        } else {
            self.store.credentials(&email).await?
        };
        let hash = found.as_ref().map(|(_, hash)| hash.as_str());
        let matches = self.passwords.verify(password, hash).await?;
        let user = match found {
            Some((user, _)) if matches => user,
            _ => return Err(Error::Unauthenticated(BAD_CREDENTIALS.to_owned())),
        };
        self.throttle.succeeded(attempt);
        let refresh = self.tokens.refresh_token();
        self.store
            .add_refresh_token(&NewRefreshToken {
                hash: refresh.hash,
                user_id: user.id.clone(),
                family_id: uuid::Uuid::new_v4().to_string(),
                expires_at_ms: self.tokens.refresh_expiry_ms(),
            })
            .await?;
        let pair = self.pair(self.tokens.access_token(&user)?, refresh.plain);
        Ok((user, pair))
    }

    /// Spends a refresh token for the next pair of its family; a spent one revokes the family.
    pub(crate) async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, Error> {
        let presented = hash_refresh_token(refresh_token.trim());
        let next = self.tokens.refresh_token();
        let rotation = self
            .store
            .rotate_refresh_token(&presented, &next.hash, self.tokens.refresh_expiry_ms())
            .await?;
        let Rotation::Rotated(user) = rotation else {
            return Err(Error::Unauthenticated(BAD_REFRESH_TOKEN.to_owned()));
        };
        Ok(self.pair(self.tokens.access_token(&user)?, next.plain))
    }

    fn pair(&self, access_token: String, refresh_token: String) -> TokenPair {
        TokenPair {
            access_token,
            refresh_token,
            expires_in: self.tokens.access_ttl,
        }
    }

    /// The account `id` if the caller may see it: its owner, an admin or a service. Others get
    /// NOT_FOUND, so account ids cannot be probed.
    pub(crate) async fn visible(&self, caller: &Claims, id: &str) -> Result<User, Error> {
        let allowed = caller.may_see(id) || caller.has_role(Role::Service);
        let user = if allowed {
            self.store.get(id).await?
        } else {
            None
        };
        user.ok_or_else(|| Error::NotFound(format!("user {id}")))
    }

    /// Applies `changes` and, unless empty, `new_password` (checked against the email the
    /// account will have). Only admins change roles. A new password or other roles end the
    /// account's sessions: tokens issued before are refused, and a sign-in after the answer
    /// works (see [`Accounts::sessions_ended`]).
    pub(crate) async fn update(
        &self,
        caller: &Claims,
        id: &str,
        mut changes: UserChanges,
        new_password: &str,
    ) -> Result<User, Error> {
        if changes.roles.is_some() && !caller.has_role(Role::Admin) {
            return Err(Error::PermissionDenied(
                "only an admin may change roles".into(),
            ));
        }
        let current = self.visible(caller, id).await?;
        if !new_password.is_empty() {
            let email_after = match &changes.email {
                Some(email) => email.clone(),
                None => Email::parse("user.email", &current.email)?,
            };
            let password = Password::parse("new_password", new_password, &email_after)?;
            changes.password_hash = Some(self.passwords.hash(password.expose()).await?);
        }
        if changes.email.is_none()
            && changes.display_name.is_none()
            && changes.roles.is_none()
            && changes.password_hash.is_none()
        {
            return Err(Error::invalid(
                "update_mask",
                "names nothing to change and no new_password is given",
            ));
        }
        let roles_change = changes
            .roles
            .as_ref()
            .is_some_and(|roles| !same_roles(roles, &current.roles));
        let reason = if changes.password_hash.is_some() {
            Some("password_changed")
        } else if roles_change {
            Some("roles_changed")
        } else {
            None
        };
        let end = reason.map(|reason| EndSessions {
            reason,
            access_ttl: self.tokens.access_ttl,
        });
        let updated = self
            .store
            .update(id, &changes, end.as_ref())
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
        if let Some(revoked) = &updated.revoked {
            let reason = reason.unwrap_or_default();
            tracing::info!(user_id = %id, changed_by = %caller.sub, reason, "sessions ended");
            self.sessions_ended(revoked).await;
        }
        Ok(updated.user)
    }

    /// Puts `revoked` in this service's list, then waits for the next whole second: tokens
    /// carry `iat` in seconds and those of the revocation's second are refused, so answering
    /// earlier would let the client sign in to a token that is refused.
    async fn sessions_ended(&self, revoked: &Revocation) {
        self.revocations.insert(revoked);
        let wait = revoked.admits_from_ms().saturating_sub(now_ms());
        if let Ok(wait) = u64::try_from(wait) {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Up to `limit` accounts after `after`, oldest first.
    pub(crate) async fn list(
        &self,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Vec<User>, Error> {
        self.store.list(after, limit).await
    }

    /// Deletes the account; only its owner and admins may, and to anyone else it does not
    /// exist.
    pub(crate) async fn delete(&self, caller: &Claims, id: &str) -> Result<(), Error> {
        let not_found = || Error::NotFound(format!("user {id}"));
        if !caller.may_see(id) {
            return Err(not_found());
        }
        let event = Envelope::new(
            NAME,
            &UserDeleted {
                user_id: id.to_owned(),
            },
        );
        let end = EndSessions {
            reason: "account_deleted",
            access_ttl: self.tokens.access_ttl,
        };
        let revoked = self
            .store
            .delete(id, &event, &end)
            .await?
            .ok_or_else(not_found)?;
        // Nobody signs in to a deleted account, so there is no second to wait out.
        self.revocations.insert(&revoked);
        tracing::info!(user_id = %id, deleted_by = %caller.sub, "account deleted");
        Ok(())
    }

    /// The public keys of every token this service signed and may still see.
    pub(crate) fn jwks(&self) -> &JwkSet {
        self.tokens.keys.jwks()
    }

    /// A `service` token for a registered client, and how long it lives.
    pub(crate) fn service_token(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(String, Duration), Error> {
        if !self.clients.verify(client_id, client_secret) {
            return Err(Error::Unauthenticated(
                "unknown client or wrong secret".to_owned(),
            ));
        }
        Ok((
            self.tokens.service_token(client_id)?,
            self.tokens.service_ttl,
        ))
    }
}

/// Whether two role lists grant the same (order and repeats aside).
fn same_roles(a: &[Role], b: &[Role]) -> bool {
    a.iter().all(|role| b.contains(role)) && b.iter().all(|role| a.contains(role))
}
