//! The revocation list an auth layer checks on every call: per user, the newest instant before
//! which their access tokens are refused. It lives in memory, so a call never waits for a
//! database; [`super::Revocations`] fills it from the service's store and from events.

use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::Duration,
};

use crate::auth::{AuthError, Claims};

/// How long an entry is kept after the last token it revokes has expired: verifiers accept
/// `exp` with a leeway (30 s by default), and the clocks of issuer and verifier may differ.
pub const KEPT_BEYOND_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The access tokens of `user_id` issued up to `not_before_ms` no longer count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: String,
    /// Milliseconds since the epoch: the moment of the change.
    pub not_before_ms: i64,
    /// Every token this revokes has expired by then (milliseconds since the epoch).
    pub forget_after_ms: i64,
}

impl Revocation {
    /// The last second whose tokens are refused. A token's `iat` has whole seconds only, so a
    /// token issued in the revocation's own second cannot be told apart from one issued just
    /// before it: both are refused.
    pub fn last_refused_second(&self) -> i64 {
        self.not_before_ms.div_euclid(1000)
    }

    /// The first moment (milliseconds since the epoch) at which an issued token is admitted:
    /// the start of the next second. User-service answers the change only then, so a sign-in
    /// that follows its answer gets a token that works.
    pub fn admits_from_ms(&self) -> i64 {
        self.last_refused_second()
            .saturating_add(1)
            .saturating_mul(1000)
    }

    /// Whether a token of this user issued at `iat` (seconds) is refused.
    pub fn refuses(&self, iat: u64) -> bool {
        i64::try_from(iat).is_ok_and(|iat| iat <= self.last_refused_second())
    }

    /// Whether every token it revokes has expired, with [`KEPT_BEYOND_EXPIRY`] to spare.
    pub fn is_spent(&self, now_ms: i64) -> bool {
        self.forget_after_ms < spent_before(now_ms)
    }
}

/// Revocations whose `forget_after_ms` is earlier than this at `now_ms` are spent: every token
/// they revoke has expired, [`KEPT_BEYOND_EXPIRY`] ago.
pub fn spent_before(now_ms: i64) -> i64 {
    now_ms.saturating_sub(i64::try_from(KEPT_BEYOND_EXPIRY.as_millis()).unwrap_or(i64::MAX))
}

/// Per user, the newest revocation.
#[derive(Debug, Default)]
pub struct RevocationList {
    // A poisoned lock is taken over: every write is one whole map operation, so the map is never
    // left half-changed.
    entries: RwLock<HashMap<String, Revocation>>,
}

impl RevocationList {
    /// Refuses the claims of a token issued before its user's sessions were revoked.
    pub fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&claims.sub) {
            Some(revocation) if revocation.refuses(claims.iat) => Err(AuthError::Revoked),
            _ => Ok(()),
        }
    }

    /// Adds `revocation`, or moves its user's entry later; an older one changes nothing, so
    /// events may arrive twice and in any order.
    pub fn insert(&self, revocation: &Revocation) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(&revocation.user_id) {
            Some(entry) => {
                entry.not_before_ms = entry.not_before_ms.max(revocation.not_before_ms);
                entry.forget_after_ms = entry.forget_after_ms.max(revocation.forget_after_ms);
            }
            None => {
                entries.insert(revocation.user_id.clone(), revocation.clone());
            }
        }
    }

    /// Drops the entries whose tokens have all expired; returns how many.
    pub fn forget_spent(&self, now_ms: i64) -> usize {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|_, revocation| !revocation.is_spent(now_ms));
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    const MINUTE_MS: i64 = 60_000;

    fn token(sub: &str, iat: u64) -> Claims {
        Claims {
            sub: sub.to_owned(),
            email: String::new(),
            roles: vec![Role::Customer],
            iss: String::new(),
            aud: String::new(),
            exp: iat + 900,
            iat,
            jti: String::new(),
        }
    }

    fn revoked(user_id: &str, not_before_ms: i64) -> Revocation {
        Revocation {
            user_id: user_id.to_owned(),
            not_before_ms,
            forget_after_ms: not_before_ms + 15 * MINUTE_MS,
        }
    }

    #[test]
    fn tokens_up_to_the_revocations_second_are_refused_and_later_ones_admitted() {
        let list = RevocationList::default();
        // 1_700_000_000.250 s: tokens of second 1_700_000_000 may come from before it.
        list.insert(&revoked("u1", 1_700_000_000_250));
        assert_eq!(
            list.check(&token("u1", 1_699_999_999)),
            Err(AuthError::Revoked)
        );
        assert_eq!(
            list.check(&token("u1", 1_700_000_000)),
            Err(AuthError::Revoked),
            "the same second is refused: iat cannot tell before from after"
        );
        assert_eq!(list.check(&token("u1", 1_700_000_001)), Ok(()));
        assert_eq!(
            list.check(&token("u2", 1_600_000_000)),
            Ok(()),
            "others are untouched"
        );
    }

    #[test]
    fn a_revocation_on_a_whole_second_refuses_that_second_and_admits_the_next() {
        let revocation = revoked("u1", 1_700_000_000_000);
        assert!(revocation.refuses(1_700_000_000));
        assert!(!revocation.refuses(1_700_000_001));
        assert_eq!(revocation.admits_from_ms(), 1_700_000_001_000);
        let late = revoked("u1", 1_700_000_000_999);
        assert!(late.refuses(1_700_000_000));
        assert_eq!(late.admits_from_ms(), 1_700_000_001_000);
    }

    #[test]
    fn a_token_issued_from_the_admitted_moment_on_is_admitted() {
        let revocation = revoked("u1", 1_700_000_000_400);
        let first = u64::try_from(revocation.admits_from_ms() / 1000).unwrap_or(0);
        assert!(!revocation.refuses(first));
        assert!(revocation.refuses(first - 1));
    }

    #[test]
    fn the_newest_revocation_wins_whatever_the_order_of_arrival() {
        let list = RevocationList::default();
        list.insert(&revoked("u1", 2_000_000));
        list.insert(&revoked("u1", 1_000_000));
        assert_eq!(list.check(&token("u1", 1_500)), Err(AuthError::Revoked));
        assert_eq!(list.check(&token("u1", 2_001)), Ok(()));
        list.insert(&revoked("u1", 3_000_000));
        assert_eq!(list.check(&token("u1", 2_001)), Err(AuthError::Revoked));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn entries_are_forgotten_only_once_their_tokens_expired_with_time_to_spare() {
        let list = RevocationList::default();
        let revocation = revoked("u1", 1_000_000);
        list.insert(&revocation);
        let kept = i64::try_from(KEPT_BEYOND_EXPIRY.as_millis()).unwrap_or(i64::MAX);
        assert_eq!(list.forget_spent(revocation.forget_after_ms + kept), 0);
        assert_eq!(list.check(&token("u1", 999)), Err(AuthError::Revoked));
        assert_eq!(list.forget_spent(revocation.forget_after_ms + kept + 1), 1);
        assert!(list.is_empty());
    }

    #[test]
    fn an_iat_beyond_i64_is_not_refused_and_does_not_panic() {
        let last = Revocation {
            user_id: "u1".to_owned(),
            not_before_ms: i64::MAX,
            forget_after_ms: i64::MAX,
        };
        assert!(!last.refuses(u64::MAX));
        assert!(last.refuses(1_700_000_000));
        assert_eq!(last.admits_from_ms(), i64::MAX);
    }
}
