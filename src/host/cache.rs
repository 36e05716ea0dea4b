//! A map that keeps at most a set number of entries, forgetting the oldest
//! first: what flowlat remembers of the host (cgroup names, container names)
//! is keyed by ids that come and go for as long as it runs, so no such memory
//! may grow with the number of ids ever seen.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Keys to values, at most `capacity` of them; inserting a new key beyond
/// that forgets the key inserted first. Replacing a key's value does not
/// make it younger: the order is that of first insertion, which is all a
/// cache of names that rarely change needs, and costs no bookkeeping on a hit.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// An empty map that holds at most `capacity` keys (at least one).
    pub(crate) fn new(capacity: usize) -> Bounded<K, V> {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_some() {
            return;
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.map.remove(&oldest);
            }
        }
    }

    /// How many keys it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entries_are_forgotten_beyond_the_bound() {
        let mut cache = Bounded::new(4096);
        for id in 0..10_000u64 {
            cache.insert(id, id.to_string());
        }
        assert_eq!(cache.len(), 4096);
        assert_eq!(cache.order.len(), 4096);
        assert!(cache.get(&(10_000 - 4096 - 1)).is_none());
        assert_eq!(cache.get(&9_999).map(String::as_str), Some("9999"));
    }

    #[test]
    fn replacing_a_value_keeps_one_entry_and_its_age() {
        let mut cache = Bounded::new(2);
        cache.insert("a", 1);
        cache.insert("a", 2);
        assert_eq!((cache.len(), cache.order.len()), (1, 1));
        assert_eq!(cache.get(&"a"), Some(&2));
        cache.insert("b", 3);
        cache.insert("c", 4);
        assert_eq!(cache.get(&"a"), None, "the first inserted went first");
        assert_eq!(cache.get(&"c"), Some(&4));
    }
}
