//! The executor's registry of actors: a [`Slot`] per key, in [`PARTS`] small hash tables
//! chosen by the key's hash rather than one large one.
//!
//! A hash table grows by doubling: it allocates twice the buckets and moves every entry,
//! and the executor serves nothing meanwhile. In one table of 500,000 keys that is one move
//! of tens of megabytes, a stall of several milliseconds for every key that waits on this
//! executor. Split in 256 parts, each part doubles on its own, at about 1/256 of the size:
//! the same work in total, spread over many short pauses (tens of microseconds at a million
//! keys). Lookups cost the same: the key is hashed once, some of the hash's bits pick the
//! part and the part uses the whole hash.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::slot::Slot;
use crate::{Handler, ShardKey};

/// The number of parts; a power of two.
const PARTS: usize = 256;
/// Where the part's index is taken from the hash: above the bits a part uses for its
/// bucket index (the low ones, fewer than 32 in any table that fits in memory) and below
/// the 7 it keeps as a tag (the top ones).
const PART_SHIFT: u32 = 32;

/// A key's registry entry.
pub(super) struct Entry<H: Handler> {
    pub(super) key: ShardKey,
    pub(super) slot: Slot<H>,
}

/// The keys of one executor and their slots.
pub(super) struct Registry<H: Handler> {
    parts: Box<[HashTable<Entry<H>>]>,
    hasher: foldhash::fast::RandomState,
}

impl<H: Handler> Registry<H> {
    pub(super) fn new() -> Self {
        Self {
            parts: (0..PARTS).map(|_| HashTable::new()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The number of keys.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.parts.iter().map(HashTable::len).sum()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn part(hash: u64) -> usize {
        // The mask keeps the value below `PARTS`, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash >> PART_SHIFT) as usize & (PARTS - 1);
        index
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Slot<H>> {
        let hash = self.hash(key);
        self.parts[Self::part(hash)]
            .find(hash, |e| e.key.as_bytes() == key)
            .map(|e| &e.slot)
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot<H>> {
        let hash = self.hash(key);
        self.parts[Self::part(hash)]
            .find_mut(hash, |e| e.key.as_bytes() == key)
            .map(|e| &mut e.slot)
    }

    /// Adds a key that is not in the registry yet; returns its slot.
    pub(super) fn insert_new(&mut self, key: ShardKey, slot: Slot<H>) -> &mut Slot<H> {
        let hash = self.hash(key.as_bytes());
        let hasher = &self.hasher;
        let entry = self.parts[Self::part(hash)].insert_unique(hash, Entry { key, slot }, |e| {
            hasher.hash_one(e.key.as_bytes())
        });
        &mut entry.into_mut().slot
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<Slot<H>> {
        let hash = self.hash(key);
        let found = self.parts[Self::part(hash)]
            .find_entry(hash, |e| e.key.as_bytes() == key)
            .ok()?;
        Some(found.remove().0.slot)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Slot<H>> {
        self.parts.iter().flat_map(|p| p.iter().map(|e| &e.slot))
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Slot<H>> {
        self.parts
            .iter_mut()
            .flat_map(|p| p.iter_mut().map(|e| &mut e.slot))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&ShardKey, &mut Slot<H>)> {
        self.parts
            .iter_mut()
            .flat_map(|p| p.iter_mut().map(|e| (&e.key, &mut e.slot)))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &ShardKey> {
        self.parts.iter().flat_map(|p| p.iter().map(|e| &e.key))
    }

    /// Gives back the memory of parts that are mostly empty (after a wave of evictions).
    pub(super) fn shrink(&mut self) {
        let hasher = &self.hasher;
        for part in self.parts.iter_mut() {
            if part.capacity() > 16 && part.len() < part.capacity() / 4 {
                part.shrink_to_fit(|e| hasher.hash_one(e.key.as_bytes()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Incoming, Outcome};

    struct Nop;

    impl Handler for Nop {
        type State = ();
        type Signal = std::convert::Infallible;
        type Reply = ();
        type Error = String;

        async fn init(&self, _key: &ShardKey) -> Result<(), String> {
            Ok(())
        }

        async fn handle_message(
            &self,
            _state: &mut (),
            _message: &Incoming<'_>,
        ) -> Result<Outcome, String> {
            Ok(Outcome::Ack)
        }

        async fn handle_signal(&self, _state: &mut (), signal: Self::Signal) -> Result<(), String> {
            match signal {}
        }
    }

    #[test]
    fn keys_are_found_counted_and_removed_across_parts() {
        let mut registry: Registry<Nop> = Registry::new();
        let n = 10_000u64;
        for i in 0..n {
            let key = ShardKey::from(format!("key-{i}"));
            assert!(registry.get(key.as_bytes()).is_none());
            registry.insert_new(key, Slot::new(i)).last_active_ms += 1;
        }
        assert_eq!(registry.len(), 10_000);
        // The keys spread over the parts rather than piling into a few.
        let used = registry.parts.iter().filter(|p| !p.is_empty()).count();
        assert_eq!(used, PARTS);
        for i in 0..n {
            let slot = registry.get(format!("key-{i}").as_bytes());
            assert_eq!(slot.map(|s| s.last_active_ms), Some(i + 1));
        }
        assert_eq!(registry.keys().count(), 10_000);
        assert_eq!(registry.values().count(), 10_000);
        for i in (0..n).step_by(2) {
            assert!(registry.remove(format!("key-{i}").as_bytes()).is_some());
        }
        assert!(registry.remove(b"key-0").is_none());
        assert_eq!(registry.len(), 5_000);
        registry.shrink();
        for i in 0..n {
            let found = registry.get_mut(format!("key-{i}").as_bytes()).is_some();
            assert_eq!(found, i % 2 == 1, "key-{i}");
        }
        for (key, slot) in registry.iter_mut() {
            assert!(key.as_str().is_some());
            slot.busy = true;
        }
        assert!(registry.values_mut().all(|s| s.busy));
    }
}
