//! shardgrid::crdt::ormap: the observed-remove multi-value map (PROTOCOL.md §6.4,
//! DECISIONS.md §1.3, §2.1): per key a set of records indexed by their add tag, plus one
//! tombstone set of removed tags for the whole map.
//!
//! Tags are the client's and are kept as sent; removing is by tag. Tombstones are never pruned
//! here: PROTOCOL.md §6.4 allows it only once every replica has seen them, which this server
//! does not track. Merkle hashing of entries is `hash::or_entry_hash` over [`OrMap::records`].

use ahash::{AHashMap, AHashSet};

use crate::model::OrRecord;
use crate::table::GrowingMap;

/// Whether an OR-Map operation changed the map's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrChange {
    Changed,
    /// The tag was already present with an equal or newer timestamp, or already tombstoned:
    /// a no-op that produces no event (DECISIONS.md §2.1).
    Unchanged,
}

impl OrChange {
    pub fn is_changed(self) -> bool {
        self == OrChange::Changed
    }
}

/// The state of one OR map. Lives on the partition's owner shard.
///
/// A tag is globally unique, but a remove names a key too, and `ORMAP_PUSH_DIFF` sends the
/// whole map's tombstone set with every entry (PROTOCOL.md §4.4). So a tombstone can arrive
/// under a key other than the one holding its record. The tombstone hides that record at once
/// (every read filters by the tombstone set); the record itself is deleted when a remove names
/// its own key, or by [`OrMap::purge_tombstoned`].
#[derive(Clone, Debug, Default)]
pub struct OrMap {
    /// key -> tag -> record. A key with no records has no entry.
    entries: GrowingMap<String, AHashMap<String, OrRecord>>,
    tombstones: AHashSet<String>,
    /// Key, tag and value bytes of the stored records plus the tombstoned tags' bytes, kept as
    /// they come and go.
    bytes: usize,
}

/// What a stored record counts toward `OrMap::bytes`.
fn record_bytes(key: &str, record: &OrRecord) -> usize {
    key.len() + record.tag.len() + record.value.len()
}

impl OrMap {
    pub fn new() -> OrMap {
        OrMap::default()
    }

    /// `OR_ADD`: ignored if the tag is tombstoned; inserted if the tag is new to the key;
    /// replaces the stored record of that tag only if its timestamp is strictly newer.
    pub fn add(&mut self, key: &str, record: OrRecord) -> OrChange {
        if self.tombstones.contains(&record.tag) {
            return OrChange::Unchanged;
        }
        let records = match self.entries.get_mut(key) {
            Some(records) => records,
            None => self.entries.entry(key.to_owned()).or_default(),
        };
        match records.get_mut(&record.tag) {
            Some(current) if record.timestamp > current.timestamp => {
                self.bytes = self.bytes + record_bytes(key, &record) - record_bytes(key, current);
                *current = record;
                OrChange::Changed
            }
            Some(_) => OrChange::Unchanged,
            None => {
                self.bytes += record_bytes(key, &record);
                records.insert(record.tag.clone(), record);
                OrChange::Changed
            }
        }
    }

    /// `OR_REMOVE`: tombstones `tag` and deletes the key's record with that tag. A tag seen
    /// for the first time is a change even if no record carries it yet: the tombstone keeps
    /// a delayed add of that tag out. A tag already tombstoned is a no-op.
    pub fn remove(&mut self, key: &str, tag: &str) -> OrChange {
        let newly_tombstoned = self.insert_tombstone(tag);
        // Also on a repeated remove: the record may have been kept when the tombstone first
        // arrived under another key (see the type's doc). It was hidden, so no change shows.
        if let Some(records) = self.entries.get_mut(key) {
            if let Some(removed) = records.remove(tag) {
                self.bytes -= record_bytes(key, &removed);
            }
            if records.is_empty() {
                self.entries.remove(key);
            }
        }
        if newly_tombstoned {
            OrChange::Changed
        } else {
            OrChange::Unchanged
        }
    }

    /// Merges one sync entry (`ORMAP_SYNC_RESP_LEAF`, `ORMAP_PUSH_DIFF`): every tombstone is
    /// applied as a remove on `key` first, then every record as an add, so a record whose tag
    /// the same entry tombstones is dropped. Returns whether anything changed.
    pub fn merge_entry<R, T>(&mut self, key: &str, records: R, tombstones: T) -> bool
    where
        R: IntoIterator<Item = OrRecord>,
        T: IntoIterator,
        T::Item: AsRef<str>,
    {
        let mut changed = false;
        for tag in tombstones {
            changed |= self.remove(key, tag.as_ref()).is_changed();
        }
        for record in records {
            changed |= self.add(key, record).is_changed();
        }
        changed
    }

    /// Merges another replica's whole state: its tombstones, then its visible records.
    /// Returns whether anything changed.
    pub fn merge_map(&mut self, other: &OrMap) -> bool {
        let mut changed = false;
        for tag in &other.tombstones {
            changed |= self.insert_tombstone(tag);
        }
        if changed {
            // New tombstones may name records under any key; one pass finds them all.
            self.purge_tombstoned();
        }
        for (key, records) in &other.entries {
            for record in records.values().filter(|record| !other.tombstones.contains(&record.tag)) {
                changed |= self.add(key, record.clone()).is_changed();
            }
        }
        changed
    }

    /// The key's records whose tags are not tombstoned, expired ones included (they stay in
    /// Merkle hashing and sync, PROTOCOL.md §6.3). In no particular order.
    pub fn records<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a OrRecord> + 'a {
        let tombstones = &self.tombstones;
        self.entries
            .get(key)
            .into_iter()
            .flat_map(|records| records.values())
            .filter(move |record| !tombstones.contains(&record.tag))
    }

    /// The key's visible records at `now_ms`: not tombstoned and not expired.
    pub fn live_records<'a>(&'a self, key: &str, now_ms: u64) -> impl Iterator<Item = &'a OrRecord> + 'a {
        self.records(key).filter(move |record| !record.is_expired(now_ms))
    }

    /// The key's visible values at `now_ms`.
    pub fn live_values<'a>(
        &'a self,
        key: &str,
        now_ms: u64,
    ) -> impl Iterator<Item = &'a crate::model::ValueBytes> + 'a {
        self.live_records(key, now_ms).map(|record| &record.value)
    }

    /// The key's record with `tag`, unless the tag is tombstoned.
    pub fn get(&self, key: &str, tag: &str) -> Option<&OrRecord> {
        if self.tombstones.contains(tag) {
            return None;
        }
        self.entries.get(key)?.get(tag)
    }

    /// Key, tag and value bytes of the stored records, and the tombstoned tags' bytes (no
    /// hash-table overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_tombstoned(&self, tag: &str) -> bool {
        self.tombstones.contains(tag)
    }

    /// Every tombstoned tag of the map, in no particular order.
    pub fn tombstones(&self) -> impl Iterator<Item = &str> + '_ {
        self.tombstones.iter().map(String::as_str)
    }

    /// The keys with at least one non-tombstoned record (expired ones count), in no particular
    /// order. These are exactly the keys of the map's Merkle tree.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries
            .iter()
            .filter(|(_, records)| records.keys().any(|tag| !self.tombstones.contains(tag)))
            .map(|(key, _)| key.as_str())
    }

    /// Deletes records whose tags are tombstoned (kept when the tombstone came under another
    /// key) and returns how many. Changes no visible state; a maintenance pass may call it.
    pub fn purge_tombstoned(&mut self) -> usize {
        let tombstones = &self.tombstones;
        let mut purged = 0;
        let mut bytes_purged = 0;
        self.entries.retain(|key, records| {
            records.retain(|tag, record| {
                let keep = !tombstones.contains(tag);
                if !keep {
                    purged += 1;
                    bytes_purged += record_bytes(key, record);
                }
                keep
            });
            !records.is_empty()
        });
        self.bytes -= bytes_purged;
        purged
    }

    /// Adds `tag` to the tombstone set; true if it was not there.
    fn insert_tombstone(&mut self, tag: &str) -> bool {
        if self.tombstones.contains(tag) {
            return false;
        }
        self.tombstones.insert(tag.to_owned());
        self.bytes += tag.len();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeMap, BTreeSet};

    use crate::crdt::test_prng::Prng;
    use crate::model::{Timestamp, ValueBytes};

    fn record(tag: &str, millis: u64, value: &str) -> OrRecord {
        OrRecord {
            value: ValueBytes::from(value.as_bytes()),
            timestamp: Timestamp::new(millis, 0, "client"),
            tag: tag.to_string(),
            ttl_ms: None,
        }
    }

    fn tags_of(map: &OrMap, key: &str) -> Vec<String> {
        let mut tags: Vec<String> = map.records(key).map(|record| record.tag.clone()).collect();
        tags.sort();
        tags
    }

    #[test]
    fn add_inserts_new_tags_and_replaces_only_with_newer_timestamps() {
        // Goal: §6.4 OR_ADD rule and DECISIONS §2.1 no-op for a present tag.
        // Method: add two tags, then the same tag again with an equal, older and newer stamp.
        let mut map = OrMap::new();
        assert_eq!(map.add("k", record("t1", 10, "a")), OrChange::Changed);
        assert_eq!(map.add("k", record("t2", 10, "b")), OrChange::Changed);
        assert_eq!(map.add("k", record("t1", 10, "a")), OrChange::Unchanged);
        assert_eq!(map.add("k", record("t1", 10, "other")), OrChange::Unchanged);
        assert_eq!(map.add("k", record("t1", 9, "older")), OrChange::Unchanged);
        assert_eq!(map.get("k", "t1"), Some(&record("t1", 10, "a")));
        assert_eq!(map.add("k", record("t1", 11, "newer")), OrChange::Changed);
        assert_eq!(map.get("k", "t1"), Some(&record("t1", 11, "newer")));
        assert_eq!(tags_of(&map, "k"), ["t1", "t2"]);
        assert_eq!(map.keys().collect::<Vec<_>>(), ["k"]);
    }

    #[test]
    fn remove_tombstones_the_tag_and_deletes_its_record() {
        // Goal: §6.4 OR_REMOVE: the record goes, the tag is tombstoned, a second remove is a
        // no-op, and the key disappears with its last record.
        // Method: add two tags, remove both, remove one again.
        let mut map = OrMap::new();
        map.add("k", record("t1", 10, "a"));
        map.add("k", record("t2", 10, "b"));
        assert_eq!(map.remove("k", "t1"), OrChange::Changed);
        assert_eq!(tags_of(&map, "k"), ["t2"]);
        assert!(map.is_tombstoned("t1"));
        assert_eq!(map.remove("k", "t1"), OrChange::Unchanged);
        assert_eq!(map.remove("k", "t2"), OrChange::Changed);
        assert_eq!(map.keys().count(), 0);
        assert!(map.entries.is_empty());
        let mut tombstones: Vec<&str> = map.tombstones().collect();
        tombstones.sort_unstable();
        assert_eq!(tombstones, ["t1", "t2"]);
    }

    #[test]
    fn remove_before_add_keeps_the_late_add_out() {
        // Goal: a remove that overtakes its add is still a change (a new tombstone) and the
        // add arriving later is ignored. Method: remove an unknown tag, then add it.
        let mut map = OrMap::new();
        assert_eq!(map.remove("k", "t1"), OrChange::Changed);
        assert_eq!(map.add("k", record("t1", 10, "a")), OrChange::Unchanged);
        assert_eq!(map.records("k").count(), 0);
        assert_eq!(map.get("k", "t1"), None);
    }

    #[test]
    fn tombstone_under_another_key_hides_the_record_until_purged() {
        // Goal: a push-diff tombstone named under the wrong key still hides the record; a
        // remove under the right key or a purge then deletes it without a visible change.
        // Method: tombstone t1 via key "other", read "k", then purge.
        let mut map = OrMap::new();
        map.add("k", record("t1", 10, "a"));
        map.add("k", record("t2", 10, "b"));
        assert_eq!(map.remove("other", "t1"), OrChange::Changed);
        assert_eq!(tags_of(&map, "k"), ["t2"]);
        assert_eq!(map.get("k", "t1"), None);
        assert_eq!(map.purge_tombstoned(), 1);
        assert_eq!(map.purge_tombstoned(), 0);
        assert_eq!(tags_of(&map, "k"), ["t2"]);
        // A key whose only record is hidden is not in the tree.
        map.add("solo", record("t3", 10, "c"));
        map.remove("elsewhere", "t3");
        assert_eq!(map.keys().collect::<Vec<_>>(), ["k"]);
        assert_eq!(map.remove("solo", "t3"), OrChange::Unchanged);
        assert!(!map.entries.contains_key("solo"));
    }

    #[test]
    fn live_values_skip_expired_records() {
        // Goal: §6.3 for OR records: expired is invisible to reads but still a record.
        // Method: one record with TTL 50 at t=100, read at 150 and 151.
        let mut map = OrMap::new();
        let mut expiring = record("t1", 100, "soon");
        expiring.ttl_ms = Some(50);
        map.add("k", expiring);
        map.add("k", record("t2", 100, "stays"));
        let mut at_expiry: Vec<&[u8]> = map.live_values("k", 150).map(|value| value.as_ref()).collect();
        at_expiry.sort_unstable();
        assert_eq!(at_expiry, [b"soon".as_slice(), b"stays".as_slice()]);
        let after: Vec<&[u8]> = map.live_values("k", 151).map(|value| value.as_ref()).collect();
        assert_eq!(after, [b"stays".as_slice()]);
        assert_eq!(map.live_records("k", 151).count(), 1);
        assert_eq!(map.records("k").count(), 2);
    }

    #[test]
    fn merge_entry_applies_tombstones_before_records() {
        // Goal: the client's entry merge: tombstones first, so a record tombstoned in the same
        // entry is dropped; a second identical merge reports no change.
        // Method: merge an entry carrying t1 both as a record and as a tombstone.
        let mut map = OrMap::new();
        map.add("k", record("t0", 5, "old"));
        let records = vec![record("t1", 10, "a"), record("t2", 10, "b")];
        assert!(map.merge_entry("k", records.clone(), ["t1", "t0"]));
        assert_eq!(tags_of(&map, "k"), ["t2"]);
        assert!(!map.merge_entry("k", records, ["t1", "t0"]));
        assert!(!map.merge_entry("k", Vec::new(), Vec::<String>::new()));
    }

    /// A pool of operations over three keys where each tag belongs to one key and the tag and
    /// timestamp determine the record, as with the client's tags. Removes name the wrong key
    /// one time in four, as `ORMAP_PUSH_DIFF` tombstones do.
    #[derive(Clone, Debug)]
    enum Op {
        Add(String, OrRecord),
        Remove(String, String),
    }

    fn key_of_tag(tag_index: u64) -> String {
        format!("k{}", tag_index % 3)
    }

    fn random_op(prng: &mut Prng) -> Op {
        let tag_index = prng.below(12);
        let tag = format!("tag-{tag_index}");
        let key = key_of_tag(tag_index);
        if prng.below(4) == 0 {
            let key = if prng.below(4) == 0 { key_of_tag(tag_index + 1) } else { key };
            return Op::Remove(key, tag);
        }
        let timestamp = Timestamp::new(prng.below(4), 0, "client");
        let identity = format!("{tag}@{timestamp}");
        let ttl_ms = match crate::hash::fnv1a_utf16(&identity) % 3 {
            0 => Some(5),
            _ => None,
        };
        Op::Add(key, OrRecord { value: ValueBytes::from(identity.as_bytes()), timestamp, tag, ttl_ms })
    }

    fn apply(map: &mut OrMap, op: &Op) -> OrChange {
        match op {
            Op::Add(key, record) => map.add(key, record.clone()),
            Op::Remove(key, tag) => map.remove(key, tag),
        }
    }

    /// Everything a client can observe: visible records per key, and the tombstone set.
    type Visible = (BTreeMap<String, BTreeMap<String, OrRecord>>, BTreeSet<String>);

    fn visible(map: &OrMap) -> Visible {
        let records = map
            .keys()
            .map(|key| (key.to_string(), map.records(key).map(|record| (record.tag.clone(), record.clone())).collect()))
            .collect();
        (records, map.tombstones().map(str::to_string).collect())
    }

    fn random_state(prng: &mut Prng) -> OrMap {
        let mut map = OrMap::new();
        for _ in 0..prng.below(16) {
            apply(&mut map, &random_op(prng));
        }
        map
    }

    /// `OrMap::bytes` counted from scratch, hidden records included.
    fn recounted_bytes(map: &OrMap) -> usize {
        let records: usize = map
            .entries
            .iter()
            .flat_map(|(key, records)| records.values().map(move |record| record_bytes(key, record)))
            .sum();
        records + map.tombstones().map(str::len).sum::<usize>()
    }

    fn merged(left: &OrMap, right: &OrMap) -> OrMap {
        let mut result = left.clone();
        result.merge_map(right);
        result
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent() {
        // Goal: merge_map is a join on what clients observe. Method: random states from seeded
        // op pools, merged in every grouping, compared by visible state; a failure prints the
        // seed to replay.
        for seed in 0..256 {
            let mut prng = Prng::from_seed(seed);
            let (a, b, c) = (random_state(&mut prng), random_state(&mut prng), random_state(&mut prng));
            assert_eq!(visible(&merged(&a, &b)), visible(&merged(&b, &a)), "commutative, seed={seed}");
            assert_eq!(
                visible(&merged(&merged(&a, &b), &c)),
                visible(&merged(&a, &merged(&b, &c))),
                "associative, seed={seed}"
            );
            assert_eq!(visible(&merged(&a, &a)), visible(&a), "idempotent, seed={seed}");
            let mut again = merged(&a, &b);
            assert!(!again.merge_map(&b), "re-merge reports a change, seed={seed}");
            let mut all = merged(&again, &c);
            assert_eq!(all.bytes(), recounted_bytes(&all), "bytes after merges, seed={seed}");
            all.purge_tombstoned();
            assert_eq!(all.bytes(), recounted_bytes(&all), "bytes after a purge, seed={seed}");
        }
    }

    #[test]
    fn entry_sync_converges_like_a_whole_map_merge() {
        // Goal: syncing entry by entry, as ORMAP_PUSH_DIFF does (every entry carrying the whole
        // tombstone set), reaches the same visible state as merge_map. Method: random states,
        // one pushed into the other per key.
        for seed in 0..128 {
            let mut prng = Prng::from_seed(seed);
            let (a, b) = (random_state(&mut prng), random_state(&mut prng));
            let mut pushed = a.clone();
            let tombstones: Vec<&str> = b.tombstones().collect();
            for key in b.keys() {
                pushed.merge_entry(key, b.records(key).cloned(), tombstones.iter());
            }
            // Tombstones of keys without visible records travel with some other entry, or (no
            // entry at all) in a whole-map merge; push them under a fixed key to compare.
            pushed.merge_entry("k0", Vec::new(), tombstones.iter());
            assert_eq!(visible(&pushed), visible(&merged(&a, &b)), "seed={seed}");
        }
    }

    #[test]
    fn any_delivery_order_converges_to_the_model() {
        // Goal: the same ops applied in any order give the same visible state, equal to a
        // naive model: per tag never removed, its add with the greatest timestamp.
        // Method: shuffle a seeded op pool (with repeats) several times per seed.
        for seed in 0..128 {
            let mut prng = Prng::from_seed(seed);
            let mut ops: Vec<Op> = (0..40).map(|_| random_op(&mut prng)).collect();
            let removed: BTreeSet<String> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Remove(_, tag) => Some(tag.clone()),
                    Op::Add(..) => None,
                })
                .collect();
            let mut model: BTreeMap<String, BTreeMap<String, OrRecord>> = BTreeMap::new();
            for op in &ops {
                let Op::Add(key, record) = op else { continue };
                if removed.contains(&record.tag) {
                    continue;
                }
                let newest =
                    model.entry(key.clone()).or_default().entry(record.tag.clone()).or_insert_with(|| record.clone());
                if record.timestamp > newest.timestamp {
                    *newest = record.clone();
                }
            }
            for round in 0..4 {
                prng.shuffle(&mut ops);
                let mut map = OrMap::new();
                for op in &ops {
                    apply(&mut map, op);
                }
                assert_eq!(visible(&map), (model.clone(), removed.clone()), "seed={seed} round={round}");
            }
        }
    }
}
