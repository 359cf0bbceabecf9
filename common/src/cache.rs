//! A bounded map of values that expire, for caches in front of slow work (token verification,
//! catalogue reads). Full, it drops expired entries first, then arbitrary ones, an eighth of
//! its size at a time: an entry dropped early only costs doing the work again. Removals are
//! numbered and remembered per key, so a value read before a change is not put back after it,
//! while values of other keys still are.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::{PoisonError, RwLock},
};

/// Values of type `V` by `K`, each live until its own expiry time `T` (an `Instant`, or seconds
/// since the epoch). Cheap to read from many tasks at once; writers take a short lock.
pub struct ExpiringCache<K, V, T> {
    capacity: usize,
    // A poisoned lock is taken over: every write is one whole map operation.
    inner: RwLock<Inner<K, V, T>>,
}

struct Inner<K, V, T> {
    entries: HashMap<K, Slot<V, T>>,
    /// Counts removals; [`ExpiringCache::generation`] reads it.
    generation: u64,
    /// Values read before this generation are refused for every key: the cache was cleared
    /// then, or a removal it no longer remembers happened.
    refused_before: u64,
}

enum Slot<V, T> {
    Live(V, T),
    /// Removed at this generation: a value read before it is stale.
    Removed(u64),
}

impl<K: Eq + Hash, V: Clone, T: Ord + Copy> ExpiringCache<K, V, T> {
    /// Holds at most `capacity` entries; 0 holds none.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: RwLock::new(Inner {
                entries: HashMap::new(),
                generation: 0,
                refused_before: 0,
            }),
        }
    }

    /// The value of `key` if it is there and `now` is not past its expiry.
    pub fn get<Q>(&self, key: &Q, now: T) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        match inner.entries.get(key) {
            Some(Slot::Live(value, expires)) if now <= *expires => Some(value.clone()),
            _ => None,
        }
    }

    /// Read before doing the work whose outcome [`Self::insert`] keeps.
    pub fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .generation
    }

    /// Keeps `value` until `expires`, unless `key` was removed (or the cache cleared) since
    /// `generation` was read: the value may predate that change. Returns whether it was kept.
    pub fn insert(&self, key: K, value: V, expires: T, generation: u64, now: T) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let removed_since = match inner.entries.get(&key) {
            Some(Slot::Removed(at)) => *at > generation,
            _ => false,
        };
        if generation < inner.refused_before || removed_since {
            return false;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            inner.make_room(self.capacity, Some(now));
        }
        inner.entries.insert(key, Slot::Live(value, expires));
        true
    }

    /// Forgets `key`, and any value being computed meanwhile.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        let at = inner.generation;
        if let Some(slot) = inner.entries.get_mut(key) {
            *slot = Slot::Removed(at);
        } else if self.capacity > 0 {
            if inner.entries.len() >= self.capacity {
                inner.make_room(self.capacity, None);
            }
            inner.entries.insert(key.to_owned(), Slot::Removed(at));
        }
    }

    /// Forgets everything, and any value being computed meanwhile.
    pub fn clear(&self) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.entries.clear();
        inner.generation += 1;
        inner.refused_before = inner.generation;
    }

    /// How many values are kept (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .values()
            .filter(|slot| matches!(slot, Slot::Live(..)))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash, V, T: Ord + Copy> Inner<K, V, T> {
    /// Drops expired values (when `now` is known), then arbitrary entries, down to seven
    /// eighths of `capacity`. A removal forgotten here still refuses what was read before it.
    fn make_room(&mut self, capacity: usize, now: Option<T>) {
        if let Some(now) = now {
            self.entries.retain(|_, slot| match slot {
                Slot::Live(_, expires) => now <= *expires,
                Slot::Removed(_) => true,
            });
        }
        let keep = capacity - capacity.div_ceil(8);
        let mut excess = self.entries.len().saturating_sub(keep);
        let mut forgotten = 0;
        self.entries.retain(|_, slot| {
            if excess == 0 {
                return true;
            }
            excess -= 1;
            if let Slot::Removed(at) = slot {
                forgotten = forgotten.max(*at);
            }
            false
        });
        self.refused_before = self.refused_before.max(forgotten);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_answered_up_to_its_expiry_and_not_after() {
        let cache = ExpiringCache::new(10);
        assert!(cache.insert("a", 1, 100_u64, cache.generation(), 50));
        assert_eq!(cache.get("a", 100), Some(1));
        assert_eq!(cache.get("a", 101), None);
        assert_eq!(cache.get("b", 50), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first_and_never_grows_past_its_size() {
        let cache = ExpiringCache::new(16);
        let generation = cache.generation();
        for n in 0..8 {
            cache.insert(n, "expired", 100_u64, generation, 50);
        }
        for n in 8..16 {
            cache.insert(n, "live", 1_000, generation, 50);
        }
        assert_eq!(cache.len(), 16);
        cache.insert(16, "live", 1_000, generation, 500);
        assert_eq!(cache.len(), 9, "the 8 expired went, the live stayed");
        for n in 8..=16 {
            assert_eq!(cache.get(&n, 500), Some("live"), "{n}");
        }
        for n in 17..=200 {
            cache.insert(n, "live", 1_000, generation, 500);
            assert!(cache.len() <= 16, "{} entries", cache.len());
        }
        assert_eq!(cache.get(&200, 500), Some("live"), "the newest is kept");
    }

    #[test]
    fn a_value_read_before_its_keys_removal_is_not_kept_but_other_keys_are() {
        let cache = ExpiringCache::new(10);
        let before = cache.generation();
        cache.remove(&"a");
        assert!(
            !cache.insert("a", 1, 100_u64, before, 50),
            "read before the change"
        );
        assert!(cache.insert("b", 2, 100, before, 50), "another key");
        assert!(
            cache.insert("a", 3, 100, cache.generation(), 50),
            "read after it"
        );
        assert_eq!(cache.get("a", 50), Some(3));
        cache.remove(&"a");
        assert_eq!(cache.get("a", 50), None);
    }

    #[test]
    fn a_value_read_before_a_clear_is_not_kept() {
        let cache = ExpiringCache::new(10);
        let before = cache.generation();
        assert!(cache.insert("a", 1, 100_u64, before, 50));
        cache.clear();
        assert_eq!(cache.get("a", 50), None);
        assert!(!cache.insert("b", 2, 100, before, 50));
        assert!(cache.insert("b", 2, 100, cache.generation(), 50));
    }

    #[test]
    fn a_removal_pushed_out_of_a_full_cache_still_refuses_what_was_read_before_it() {
        let cache = ExpiringCache::new(8);
        let before = cache.generation();
        cache.remove(&0);
        let after = cache.generation();
        for n in 1..=20 {
            cache.insert(n, n, 100, after, 50);
        }
        assert!(cache.len() <= 8);
        // Which entries make way is arbitrary: push everything out, the removal included.
        cache
            .inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .make_room(1, None);
        assert!(cache.is_empty());
        assert!(!cache.insert(0, 0, 100, before, 50));
        assert!(cache.insert(0, 0, 100, cache.generation(), 50));
    }

    #[test]
    fn a_cache_of_size_zero_keeps_nothing() {
        let cache = ExpiringCache::new(0);
        assert!(!cache.insert("a", 1, 100_u64, cache.generation(), 50));
        assert!(cache.is_empty());
    }
}
