//! A small pool of signed-in accounts whose tokens every virtual user shares. Signing in costs an
//! argon2 hash (deliberately slow, and the user-service hashes about one per core at a time), so
//! the pool is made once, a few at a time, and kept fresh with refresh tokens rather than logins.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _, stream};
use tokio::time::Instant;

use super::{
    driver::{Call, Driver, Failure, Reply},
    stats::{Recorder, Step},
};

/// Every load account shares this password; they are test accounts on a loopback system.
const PASSWORD: &str = "load generator password";
/// How long one account may keep being refused (rate limits, a busy hasher) before the set-up
/// gives up: the gateway allows 30 sign-ins a minute per client, so 20 accounts (a registration
/// and a login each) take over a minute.
const SIGN_IN_BUDGET: Duration = Duration::from_secs(180);
/// Waits of this or more are said on stderr, so a slow set-up is not a mystery.
const NOTABLE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Tokens {
    access: Arc<str>,
    refresh: String,
    /// Refreshed from here on: three quarters into the access token's life.
    renew_at: Instant,
}

struct Account {
    email: String,
    tokens: RwLock<Tokens>,
}

pub(crate) struct Accounts {
    accounts: Vec<Account>,
}

/// `load-0007@load.shop.local`: the same names every run, so a second run signs in to the
/// accounts of the first.
fn email(index: usize) -> String {
    format!("load-{index:04}@load.shop.local")
}

fn tokens_of(reply: Reply, obtained: Instant) -> Result<Tokens, Failure> {
    let Reply::Tokens {
        access,
        refresh,
        expires_in_secs,
    } = reply
    else {
        return Err(Failure::BadReply("the answer has no tokens".into()));
    };
    Ok(Tokens {
        access: access.into(),
        refresh,
        renew_at: obtained + Duration::from_secs(expires_in_secs.max(4) * 3 / 4),
    })
}

/// Registers the account (one that exists already answers ALREADY_EXISTS: fine), then logs in.
/// Registering first keeps the user-service's failed sign-in throttle out of the set-up: a login
/// to an account that does not exist yet counts as a failed sign-in of this client, and twenty of
/// them lock the generator out for minutes. A refusal to retry (a rate limit's 429, the hasher's
/// RESOURCE_EXHAUSTED) is retried after the wait the server names, within [`SIGN_IN_BUDGET`].
async fn sign_in<D: Driver>(
    driver: &D,
    email: &str,
    timeout: Duration,
    progress: bool,
) -> Result<Tokens, Failure> {
    let give_up = Instant::now() + SIGN_IN_BUDGET;
    let mut registered = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = if registered {
            let call = Call::Login {
                email,
                password: PASSWORD,
            };
            match within(timeout, driver.call(call)).await {
                Ok(reply) => match tokens_of(reply, Instant::now()) {
                    Ok(tokens) => return Ok(tokens),
                    Err(failure) => failure,
                },
                Err(failure) => failure,
            }
        } else {
            let register = Call::Register {
                email,
                password: PASSWORD,
                display_name: "Load Generator",
            };
            match within(timeout, driver.call(register)).await {
                // Registered now, or by an earlier run (with another password, the login says).
                Ok(_) => {
                    registered = true;
                    continue;
                }
                Err(failure) if failure.is_conflict() => {
                    registered = true;
                    continue;
                }
                Err(failure) => failure,
            }
        };
        if !failure.is_retryable() {
            return Err(failure);
        }
        let wait = failure
            .retry_after()
            .unwrap_or(Duration::from_millis(250) * attempt)
            .min(Duration::from_secs(60));
        if Instant::now() + wait > give_up {
            return Err(failure);
        }
        if progress && wait >= NOTABLE_WAIT {
            eprintln!(
                "signing in {email}: {failure}; retrying in {}s",
                wait.as_secs()
            );
        }
        tokio::time::sleep(wait).await;
    }
}

async fn within(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<Reply, Failure>>,
) -> Result<Reply, Failure> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

impl Accounts {
    /// Signs in `count` accounts, `parallel` at a time.
    pub(crate) async fn sign_in<D: Driver>(
        driver: &D,
        count: usize,
        parallel: usize,
        timeout: Duration,
        progress: bool,
    ) -> Result<Self, String> {
        let accounts = stream::iter(0..count)
            .map(|index| async move {
                let email = email(index);
                let tokens = sign_in(driver, &email, timeout, progress)
                    .await
                    .map_err(|failure| format!("signing in {email}: {failure}"))?;
                Ok::<_, String>(Account {
                    email,
                    tokens: RwLock::new(tokens),
                })
            })
            .buffered(parallel.max(1))
            .try_collect()
            .await?;
        Ok(Self { accounts })
    }

    pub(crate) fn len(&self) -> usize {
        self.accounts.len()
    }

    /// The access token of account `index` (modulo the pool).
    pub(crate) fn token(&self, index: usize) -> Arc<str> {
        let account = &self.accounts[index % self.accounts.len()];
        let tokens = account
            .tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        tokens.access.clone()
    }

    /// Refreshes every token past its renewal time (a refresh token is single-use: the answer
    /// brings the next one); one that cannot be refreshed is replaced by a new login. The
    /// requests are recorded like any other, due at the renewal time.
    pub(crate) async fn refresh_due<D: Driver>(
        &self,
        driver: &D,
        recorder: &Arc<Recorder>,
        timeout: Duration,
    ) {
        for account in &self.accounts {
            let current = account
                .tokens
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if Instant::now() < current.renew_at {
                continue;
            }
            let pending = recorder.pending(Step::Refresh, current.renew_at);
            let sent = Instant::now();
            let call = Call::Refresh {
                refresh_token: &current.refresh,
            };
            let result = match tokio::time::timeout(timeout, driver.call(call)).await {
                Ok(result) => result.and_then(|reply| tokens_of(reply, sent)),
                Err(_) => Err(Failure::Timeout),
            };
            pending.answered(sent, Instant::now(), result.as_ref().map(|_| ()));
            let renewed = match result {
                Ok(tokens) => Ok(tokens),
                // Rate limited or busy: the token is still good for a while; the next check
                // tries again.
                Err(failure) if failure.is_retryable() => Err(failure),
                Err(_) => {
                    let pending = recorder.pending(Step::Login, Instant::now());
                    let sent = Instant::now();
                    let result = sign_in(driver, &account.email, timeout, false).await;
                    pending.answered(sent, Instant::now(), result.as_ref().map(|_| ()));
                    result
                }
            };
            if let Ok(tokens) = renewed {
                *account
                    .tokens
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = tokens;
            }
        }
    }
}
