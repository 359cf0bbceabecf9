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
    entries: HashMap<K, Entry<V, T>>,
    /// Counts removals; [`ExpiringCache::generation`] reads it.
    generation: u64,
    /// Values read before this generation are refused for every key: the cache was cleared
    /// then, or a removal it no longer remembers happened.
    refused_before: u64,
}

struct Entry<V, T> {
    /// The value and its expiry; none since the key was removed.
    value: Option<(V, T)>,
    /// The generation of the key's last removal (0: never): a value read before it is stale,
    /// even once a fresher one was kept.
    removed_at: u64,
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
        match inner.entries.get(key).and_then(|e| e.value.as_ref()) {
            Some((value, expires)) if now <= *expires => Some(value.clone()),
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

    /// Whether `key` was removed (or the cache cleared) after `generation` was read: a value
    /// read since then may predate the change.
    pub fn changed_since<Q>(&self, key: &Q, generation: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.changed_since(key, generation)
    }

    /// Keeps `value` until `expires`, unless `key` changed since `generation` was read (see
    /// [`Self::changed_since`]). Returns whether it was kept.
    pub fn insert(&self, key: K, value: V, expires: T, generation: u64, now: T) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if inner.changed_since(&key, generation) {
            return false;
        }
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.value = Some((value, expires));
            return true;
        }
        if inner.entries.len() >= self.capacity {
            inner.make_room(self.capacity, Some(now));
        }
        let value = Some((value, expires));
        inner.entries.insert(
            key,
            Entry {
                value,
                removed_at: 0,
            },
        );
        true
    }

    /// Forgets `key`'s value, and refuses any value of it being read meanwhile.
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.generation += 1;
        let removed_at = inner.generation;
        if self.capacity == 0 {
            // Nothing to remember the key in: every read begun before counts as changed.
            inner.refused_before = removed_at;
            return;
        }
        if let Some(entry) = inner.entries.get_mut(key) {
            *entry = Entry {
                value: None,
                removed_at,
            };
            return;
        }
        if inner.entries.len() >= self.capacity {
            inner.make_room(self.capacity, None);
        }
        let entry = Entry {
            value: None,
            removed_at,
        };
        inner.entries.insert(key.to_owned(), entry);
    }

    /// Forgets everything, and refuses every value being read meanwhile.
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
            .filter(|entry| entry.value.is_some())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash, V, T: Ord + Copy> Inner<K, V, T> {
    fn changed_since<Q>(&self, key: &Q, generation: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        generation < self.refused_before
            || self
                .entries
                .get(key)
                .is_some_and(|entry| entry.removed_at > generation)
    }

    /// Drops expired values (when `now` is known), then arbitrary entries, down to seven
    /// eighths of `capacity`. A removal forgotten here still refuses what was read before it.
    fn make_room(&mut self, capacity: usize, now: Option<T>) {
        let mut forgotten = 0;
        if let Some(now) = now {
            self.entries.retain(|_, entry| {
                let expired = entry
                    .value
                    .as_ref()
                    .is_some_and(|(_, expires)| now > *expires);
                if expired {
                    forgotten = forgotten.max(entry.removed_at);
                }
                !expired
            });
        }
        let keep = capacity - capacity.div_ceil(8);
        let mut excess = self.entries.len().saturating_sub(keep);
        self.entries.retain(|_, entry| {
            if excess == 0 {
                return true;
            }
            excess -= 1;
            forgotten = forgotten.max(entry.removed_at);
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
    fn a_value_read_before_a_removal_does_not_replace_one_read_after_it() {
        let cache = ExpiringCache::new(10);
        let first = cache.generation();
        cache.remove(&"a");
        let second = cache.generation();
        assert!(cache.insert("a", "fresh", 100_u64, second, 50));
        assert!(cache.changed_since(&"a", first));
        assert!(!cache.changed_since(&"a", second));
        assert!(!cache.insert("a", "stale", 100, first, 50));
        assert_eq!(cache.get("a", 50), Some("fresh"));
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
    fn a_cache_of_size_zero_keeps_nothing_but_still_tells_what_changed() {
        let cache = ExpiringCache::new(0);
        let before = cache.generation();
        assert!(!cache.insert("a", 1, 100_u64, before, 50));
        assert!(cache.is_empty());
        assert!(!cache.changed_since(&"a", before));
        cache.remove(&"a");
        assert!(cache.changed_since(&"a", before));
    }
}
