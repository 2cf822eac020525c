//! The id → slot lookup of accounts.
//!
//! The table holds only slots (4 bytes each); a probe compares against the engine's own list of
//! ids (`account_ids`, in creation order). At a million accounts that makes it 10 MB instead of
//! the 66 MB that a map of `(Id, u32)` pairs takes (2²¹ buckets of 32 bytes), so fewer lookups
//! miss the cache and the TLB, and a lookup of an account just created or next to one just used
//! finds its id in cache. Derived state: rebuilt from the ids after loading, never iterated, so
//! its order cannot reach an output.

use crate::event::Id;
use hashbrown::HashTable;
use std::hash::Hasher;

#[derive(Clone, Debug, Default)]
pub(super) struct AccountIndex {
    table: HashTable<u32>,
}

impl AccountIndex {
    /// The index of `ids` (slot `i` holds `ids[i]`).
    pub(super) fn build(ids: &[Id]) -> Self {
        let mut index = AccountIndex { table: HashTable::with_capacity(ids.len()) };
        for slot in 0..ids.len() {
            index.insert(ids, slot as u32);
        }
        index
    }

    pub(super) fn get(&self, ids: &[Id], id: &str) -> Option<u32> {
        self.table.find(hash(id), |&slot| ids[slot as usize] == id).copied()
    }

    /// Files `ids[slot]`, which must not be filed yet.
    pub(super) fn insert(&mut self, ids: &[Id], slot: u32) {
        self.table.insert_unique(hash(&ids[slot as usize]), slot, |&s| hash(&ids[s as usize]));
    }

    pub(super) fn reserve(&mut self, ids: &[Id], additional: usize) {
        self.table.reserve(additional, |&s| hash(&ids[s as usize]));
    }
}

fn hash(id: &str) -> u64 {
    let mut h = IdHasher::default();
    h.write(id.as_bytes());
    h.finish()
}

/// A multiply-rotate hash over 8-byte words (the Fx hash of the Rust compiler), several times
/// faster than SipHash on short ids. Ids come from the venue, not from anonymous users, so hash
/// flooding is not a concern.
#[derive(Default)]
struct IdHasher(u64);

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    /// The multiply leaves the low bits (which pick the hash table's slot) depending only on
    /// the input's low bits; rotating brings the well-mixed high bits down (as rustc-hash 2
    /// does).
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_filed_id_and_nothing_else() {
        let mut ids: Vec<Id> = (0..5000).map(|i| Id::from(format!("acct-{i}"))).collect();
        ids.push(Id::from("a-long-account-id-that-lives-on-the-heap-0001"));
        let mut index = AccountIndex::build(&ids[..100]);
        index.reserve(&ids, ids.len() - 100);
        for slot in 100..ids.len() {
            index.insert(&ids, slot as u32);
        }
        for (slot, id) in ids.iter().enumerate() {
            assert_eq!(index.get(&ids, id), Some(slot as u32), "{id}");
        }
        for missing in ["acct-5000", "acct-", "", "a-long-account-id-that-lives-on-the-heap-0002"] {
            assert_eq!(index.get(&ids, missing), None, "{missing}");
        }
    }
}
