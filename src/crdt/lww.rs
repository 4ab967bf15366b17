//! shardgrid::crdt::lww: the last-writer-wins map (PROTOCOL.md §6.2, DECISIONS.md §1.1, §1.2,
//! §2.1): one record per key, the record with the highest timestamp wins, removes are
//! tombstones that win like any other record.
//!
//! It stores records exactly as they arrived and never re-stamps them; choosing the timestamp
//! of a write, rejecting timestamps from the future and deciding when tombstones may be
//! collected are the caller's business.

use compact_str::CompactString;

use crate::model::{LwwRecord, Timestamp};
use crate::table::GrowingMap;

/// What merging one record did to the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LwwMerge {
    /// The record is now the key's record. `previous` is the record it replaced (tombstones
    /// included), or `None` when the key was absent.
    Applied { previous: Option<LwwRecord> },
    /// The stored record's timestamp is equal or newer: nothing changed (DECISIONS.md §2.1).
    Unchanged,
}

/// The records of one LWW map, tombstones and expired records included. Lives on the
/// partition's owner shard; the shard holds one per map it owns keys of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LwwMap {
    /// Keys of up to 24 bytes live inside the table's slot, without an allocation of their own.
    records: GrowingMap<CompactString, Stored>,
    /// Key and value bytes of the stored records (`record_bytes`), kept as records come and go.
    bytes: usize,
}

/// A few words kept beside each record for the owner shard's sync index (its Merkle item hash
/// and change-log place, `shard::sync`), so a write finds the key's index entry in the same
/// table lookup as its record instead of a second table. The map never reads them; a new
/// record's slot is all zeros, and epoch 0 names no index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSlot {
    pub epoch: u32,
    pub item_hash: u32,
    pub chunk: u64,
    pub offset: u32,
}

/// One stored record and its index slot. Two maps are equal when their records are: slots
/// say where an index put a key, not what the map holds.
#[derive(Clone, Debug)]
struct Stored {
    record: LwwRecord,
    slot: IndexSlot,
}

impl PartialEq for Stored {
    fn eq(&self, other: &Stored) -> bool {
        self.record == other.record
    }
}

/// What a stored record counts toward `LwwMap::bytes`: its key and its value.
fn record_bytes(key: &str, record: &LwwRecord) -> usize {
    key.len() + record.value.as_ref().map_or(0, |value| value.len())
}

impl LwwMap {
    pub fn new() -> LwwMap {
        LwwMap::default()
    }

    /// Merges `record` into `key`: it replaces the stored record only if its timestamp is
    /// strictly greater. An equal timestamp keeps the stored record, so a re-sent op is a no-op.
    pub fn merge(&mut self, key: &str, record: LwwRecord) -> LwwMerge {
        match self.records.get_mut(key) {
            Some(current) if record.timestamp > current.record.timestamp => {
                self.bytes = self.bytes + record_bytes(key, &record) - record_bytes(key, &current.record);
                let previous = std::mem::replace(&mut current.record, record);
                LwwMerge::Applied { previous: Some(previous) }
            }
            Some(_) => LwwMerge::Unchanged,
            None => {
                self.bytes += record_bytes(key, &record);
                self.records.insert(CompactString::from(key), Stored { record, slot: IndexSlot::default() });
                LwwMerge::Applied { previous: None }
            }
        }
    }

    /// Reads `key`'s stored record and the first byte of its value, for a caller that wants
    /// those lines in cache before it writes the key (`ShardData::warm`): the key's index slot
    /// and a number made of what was read.
    pub fn touch(&self, key: &str) -> Option<(IndexSlot, u64)> {
        self.records.get(key).map(|stored| {
            let first = stored.record.value.as_ref().and_then(|value| value.first()).copied().unwrap_or(0);
            (stored.slot, u64::from(stored.record.timestamp.counter) ^ u64::from(first))
        })
    }

    /// The stored record of `key`, tombstone or expired record included.
    pub fn get(&self, key: &str) -> Option<&LwwRecord> {
        self.records.get(key).map(|stored| &stored.record)
    }

    /// The stored record of `key` and its index slot.
    pub fn get_with_slot_mut(&mut self, key: &str) -> Option<(&LwwRecord, &mut IndexSlot)> {
        self.records.get_mut(key).map(|stored| (&stored.record, &mut stored.slot))
    }

    /// The record of `key` if it is live at `now_ms`: absent for tombstones and expired records.
    pub fn get_live(&self, key: &str, now_ms: u64) -> Option<&LwwRecord> {
        self.get(key).filter(|record| record.is_live(now_ms))
    }

    /// Every stored record, tombstones included, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LwwRecord)> + '_ {
        self.records.iter().map(|(key, stored)| (key.as_str(), &stored.record))
    }

    /// Number of stored records, tombstones included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Key and value bytes of the stored records, tombstones included (no hash-table overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops tombstones whose timestamp is strictly older than `older_than` and returns how
    /// many went. Live and expired records stay. After this, a put older than a dropped
    /// tombstone would be accepted again, so the caller picks `older_than` past its grace period.
    pub fn remove_tombstones_older_than(&mut self, older_than: &Timestamp) -> usize {
        let len_before = self.records.len();
        let mut bytes_dropped = 0;
        self.records.retain(|key, stored| {
            let record = &stored.record;
            let keep = !(record.is_tombstone() && record.timestamp < *older_than);
            if !keep {
                bytes_dropped += record_bytes(key, record);
            }
            keep
        });
        self.bytes -= bytes_dropped;
        len_before - self.records.len()
    }

    /// Forgets `key` entirely, without leaving a tombstone. For tests and repair tools; a
    /// client-visible remove is a merge of a tombstone. The owner's sync index is not told
    /// (nor by `remove_tombstones_older_than`): rebuild it after.
    pub fn remove_key(&mut self, key: &str) -> Option<LwwRecord> {
        let removed = self.records.remove(key)?.record;
        self.bytes -= record_bytes(key, &removed);
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use crate::model::ValueBytes;

    use crate::crdt::test_prng::Prng;

    fn put(millis: u64, counter: u32, node_id: &str, value: &str) -> LwwRecord {
        LwwRecord {
            value: Some(ValueBytes::from(value.as_bytes())),
            timestamp: Timestamp::new(millis, counter, node_id),
            ttl_ms: None,
        }
    }

    fn tombstone(millis: u64, counter: u32, node_id: &str) -> LwwRecord {
        LwwRecord { value: None, timestamp: Timestamp::new(millis, counter, node_id), ttl_ms: None }
    }

    #[test]
    fn first_record_of_a_key_is_applied() {
        // Goal: a key without a record takes any record. Method: merge into an empty map.
        let mut map = LwwMap::new();
        assert_eq!(map.merge("k", put(5, 0, "a", "x")), LwwMerge::Applied { previous: None });
        assert_eq!(map.get("k"), Some(&put(5, 0, "a", "x")));
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn strictly_newer_record_replaces_and_returns_the_previous() {
        // Goal: a newer timestamp wins and the caller learns what it replaced.
        // Method: newer by millis, by counter, and by node id (byte order).
        let mut map = LwwMap::new();
        map.merge("k", put(5, 0, "a", "x"));
        assert_eq!(map.merge("k", put(6, 0, "a", "y")), LwwMerge::Applied { previous: Some(put(5, 0, "a", "x")) });
        assert_eq!(map.merge("k", put(6, 1, "a", "z")), LwwMerge::Applied { previous: Some(put(6, 0, "a", "y")) });
        // "B" (0x42) < "a" (0x61) byte-wise, so "a" keeps the key against "B".
        assert_eq!(map.merge("k", put(6, 1, "B", "w")), LwwMerge::Unchanged);
        assert_eq!(map.merge("k", put(6, 1, "b", "v")), LwwMerge::Applied { previous: Some(put(6, 1, "a", "z")) });
        assert_eq!(map.get("k"), Some(&put(6, 1, "b", "v")));
    }

    #[test]
    fn equal_or_older_timestamp_is_a_no_op() {
        // Goal: DECISIONS §2.1: a re-sent or stale op changes nothing, even with another value.
        // Method: merge the same record, an equal timestamp with a new value, and an older one.
        let mut map = LwwMap::new();
        map.merge("k", put(5, 3, "a", "x"));
        assert_eq!(map.merge("k", put(5, 3, "a", "x")), LwwMerge::Unchanged);
        assert_eq!(map.merge("k", put(5, 3, "a", "other")), LwwMerge::Unchanged);
        assert_eq!(map.merge("k", put(5, 2, "z", "older")), LwwMerge::Unchanged);
        assert_eq!(map.get("k"), Some(&put(5, 3, "a", "x")));
    }

    #[test]
    fn tombstone_hides_older_puts_and_loses_to_newer_ones() {
        // Goal: DECISIONS §1.2: a tombstone merges like any record and a stale put stays hidden.
        // Method: remove, then replay an older put, then a newer one.
        let mut map = LwwMap::new();
        map.merge("k", put(5, 0, "a", "x"));
        assert_eq!(map.merge("k", tombstone(6, 0, "a")), LwwMerge::Applied { previous: Some(put(5, 0, "a", "x")) });
        assert_eq!(map.get_live("k", 0), None);
        assert_eq!(map.merge("k", put(5, 9, "z", "stale")), LwwMerge::Unchanged);
        assert_eq!(map.get("k"), Some(&tombstone(6, 0, "a")));
        assert_eq!(map.merge("k", put(7, 0, "a", "back")), LwwMerge::Applied { previous: Some(tombstone(6, 0, "a")) });
        assert_eq!(map.get_live("k", 0), Some(&put(7, 0, "a", "back")));
        // A tombstone for an absent key is stored, so a delayed older put cannot resurrect it.
        assert_eq!(map.merge("gone", tombstone(3, 0, "a")), LwwMerge::Applied { previous: None });
        assert_eq!(map.merge("gone", put(2, 0, "a", "late")), LwwMerge::Unchanged);
    }

    #[test]
    fn get_live_hides_expired_records_strictly_after_their_ttl() {
        // Goal: §6.3: a record is absent once millis + ttl < now (strict), present at equality.
        // Method: one record with a TTL read at, and one past, its expiry instant.
        let mut map = LwwMap::new();
        let mut record = put(100, 0, "a", "x");
        record.ttl_ms = Some(50);
        map.merge("k", record.clone());
        assert_eq!(map.get_live("k", 150), Some(&record));
        assert_eq!(map.get_live("k", 151), None);
        // The expired record is still stored (it stays in Merkle hashing and sync).
        assert_eq!(map.get("k"), Some(&record));
    }

    #[test]
    fn tombstone_gc_drops_only_older_tombstones() {
        // Goal: the GC helper removes tombstones strictly older than the bound and nothing else.
        // Method: a map with old and new tombstones and an old live record.
        let mut map = LwwMap::new();
        map.merge("old-tombstone", tombstone(10, 0, "a"));
        map.merge("boundary-tombstone", tombstone(20, 0, "a"));
        map.merge("new-tombstone", tombstone(30, 0, "a"));
        map.merge("old-put", put(5, 0, "a", "x"));
        assert_eq!(map.remove_tombstones_older_than(&Timestamp::new(20, 0, "a")), 1);
        let mut keys: Vec<&str> = map.iter().map(|(key, _)| key).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["boundary-tombstone", "new-tombstone", "old-put"]);
        assert_eq!(map.remove_key("old-put"), Some(put(5, 0, "a", "x")));
        assert_eq!(map.len(), 2);
        assert!(!map.is_empty());
    }

    /// A record pool where the timestamp identifies the write: two records with the same
    /// timestamp are the same record, as they are when the client re-sends an op.
    fn random_record(prng: &mut Prng) -> (String, LwwRecord) {
        const NODES: [&str; 3] = ["a", "b", "node-c"];
        let key = format!("k{}", prng.below(5));
        let timestamp = Timestamp::new(prng.below(20), prng.below(3) as u32, NODES[prng.index(NODES.len())]);
        // Key and timestamp must determine the rest of the record, so derive it from them.
        let identity = format!("{key}@{timestamp}");
        let fingerprint = crate::hash::fnv1a_utf16(&identity);
        let value = match fingerprint % 4 {
            0 => None,
            _ => Some(ValueBytes::from(identity.as_bytes())),
        };
        let ttl_ms = match fingerprint % 5 {
            0 => Some(u64::from(fingerprint % 10) + 1),
            _ => None,
        };
        (key, LwwRecord { value, timestamp, ttl_ms })
    }

    fn random_state(prng: &mut Prng) -> LwwMap {
        let mut map = LwwMap::new();
        for _ in 0..prng.below(12) {
            let (key, record) = random_record(prng);
            map.merge(&key, record);
        }
        map
    }

    fn recounted_bytes(map: &LwwMap) -> usize {
        map.iter().map(|(key, record)| record_bytes(key, record)).sum()
    }

    fn merged(left: &LwwMap, right: &LwwMap) -> LwwMap {
        let mut result = left.clone();
        for (key, record) in right.iter() {
            result.merge(key, record.clone());
        }
        result
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent() {
        // Goal: the LWW map is a join semilattice under merge. Method: random states from a
        // seeded pool (timestamps identify records), merged both ways round; a failure prints
        // the seed to replay.
        for seed in 0..256 {
            let mut prng = Prng::from_seed(seed);
            let (a, b, c) = (random_state(&mut prng), random_state(&mut prng), random_state(&mut prng));
            assert_eq!(merged(&a, &b), merged(&b, &a), "commutative, seed={seed}");
            assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)), "associative, seed={seed}");
            assert_eq!(merged(&a, &a), a, "idempotent, seed={seed}");
            let mut all = merged(&merged(&a, &b), &c);
            assert_eq!(all.bytes(), recounted_bytes(&all), "bytes after merges, seed={seed}");
            all.remove_tombstones_older_than(&Timestamp::new(10, 0, "a"));
            assert_eq!(all.bytes(), recounted_bytes(&all), "bytes after tombstone GC, seed={seed}");
            // Idempotent in effects too: re-merging what is already there reports no change.
            let mut again = merged(&a, &b);
            for (key, record) in b.iter() {
                assert_eq!(again.merge(key, record.clone()), LwwMerge::Unchanged, "seed={seed}");
            }
        }
    }

    #[test]
    fn any_delivery_order_converges_to_the_newest_record_per_key() {
        // Goal: the same records applied in any order give the same map, and it matches a naive
        // model (per key, the record with the greatest timestamp). Method: shuffle a seeded
        // pool, with duplicates, several times per seed.
        for seed in 0..128 {
            let mut prng = Prng::from_seed(seed);
            let mut pool: Vec<(String, LwwRecord)> = (0..40).map(|_| random_record(&mut prng)).collect();
            let mut model: BTreeMap<String, LwwRecord> = BTreeMap::new();
            for (key, record) in &pool {
                let newest = model.entry(key.clone()).or_insert_with(|| record.clone());
                if record.timestamp > newest.timestamp {
                    *newest = record.clone();
                }
            }
            for round in 0..4 {
                prng.shuffle(&mut pool);
                let mut map = LwwMap::new();
                for (key, record) in &pool {
                    map.merge(key, record.clone());
                }
                let state: BTreeMap<String, LwwRecord> =
                    map.iter().map(|(key, record)| (key.to_string(), record.clone())).collect();
                assert_eq!(state, model, "seed={seed} round={round}");
            }
        }
    }
}
