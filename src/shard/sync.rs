//! The per-shard sync indexes: what Merkle sync (PROTOCOL.md §4.3, §4.4) and HTTP sync deltas
//! (§9, DECISIONS.md §4.5) read from the records a shard owns. Lives on the partition's owner
//! shard, inside `ShardData`, and is updated by `ShardData::apply` on every state change.
//!
//! Per LWW map: the leaf sums of the map's Merkle tree over this shard's keys, which keys sit in
//! which leaf, and the change index — every key once, ordered by when its current record
//! arrived here (a per-shard clock that only the wall clock moves). Per OR map: the leaf sums,
//! the keys per leaf, each key's item hash, which key holds each live tag (so a tombstone
//! finds its record under any key), and the tombstones each key's removals left (sync entries
//! carry them, so a stale client learns the removal).
//!
//! Sans-IO. It leaves out the tree above the leaves (`merkle`), gathering leaves from several
//! shards and the wire (`node`, `session::sync`, `endpoints::sync`).

use std::sync::Arc;

use ahash::AHashMap;

use super::data::{Change, ChangeEvent, ShardData};
use crate::crdt::{IndexSlot, LwwMap, OrMap};
use crate::hash::{lww_item_hash_after_key, or_entry_hash, Fnv1a};
use crate::hlc::Hlc;
use crate::merkle::{BucketPath, LeafIndex, LeafSum, LeafSums};
use crate::model::{LwwRecord, OrRecord, Timestamp};
use crate::protocol::{ClientOp, OpKind, OrMapEntry};
use crate::table::GrowingMap;

/// Which of a map's two possible trees: the LWW map's or the OR map's of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TreeKind {
    Lww,
    Or,
}

/// When a record arrived on one shard: that shard's arrival clock, strictly increasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Arrival {
    millis: u64,
    counter: u32,
}

/// A point in the node's arrival order: an arrival stamp and the shard that issued it, so two
/// shards' stamps are totally ordered. `rank` is the shard's index plus one; 0 (no shard) lies
/// before every shard's stamp with the same time, which is what a timestamp the server did not
/// issue gets.
///
/// On the wire it is `serverSyncTimestamp` (opaque to the client, echoed as the next
/// `lastSyncTimestamp`): a Timestamp `{millis, counter, nodeId: "<node id>/<shard>"}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArrivalPoint {
    pub millis: u64,
    pub counter: u32,
    pub rank: u32,
}

impl ArrivalPoint {
    fn on_shard(arrival: Arrival, shard: u16) -> ArrivalPoint {
        ArrivalPoint { millis: arrival.millis, counter: arrival.counter, rank: u32::from(shard) + 1 }
    }

    /// The wire form: the shard goes into the node id behind a `/`.
    pub fn to_timestamp(self, node_id: &str) -> Timestamp {
        let node_id = match self.rank {
            0 => node_id.to_string(),
            rank => format!("{node_id}/{}", rank - 1),
        };
        Timestamp::new(self.millis, self.counter, node_id)
    }

    /// Reads a `lastSyncTimestamp`. One we issued names its shard; any other timestamp counts
    /// as lying before every shard's stamp of the same millisecond and counter, so a foreign
    /// point re-sends rather than skips.
    pub fn from_timestamp(timestamp: &Timestamp) -> ArrivalPoint {
        let rank = timestamp
            .node_id
            .rsplit_once('/')
            .and_then(|(_, shard)| shard.parse::<u16>().ok())
            .map_or(0, |shard| u32::from(shard) + 1);
        ArrivalPoint { millis: timestamp.millis, counter: timestamp.counter, rank }
    }
}

/// How much one answer of changes may carry. At least one record always goes, so a single
/// record over the byte budget still makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBudget {
    pub records: usize,
    pub bytes: usize,
}

/// One shard's changes of a map after a point, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardDeltas {
    pub records: Vec<(ArrivalPoint, String, LwwRecord)>,
    /// Every change of the map after the point is in `records` (the budget did not cut it).
    pub complete: bool,
    /// The shard's arrival clock when it answered: anything arriving later is stamped after it.
    pub now: ArrivalPoint,
}

/// The changes of a map gathered from every shard, and the point the next request continues
/// from (the reply's `serverSyncTimestamp`).
#[derive(Clone, Debug, PartialEq)]
pub struct MergedDeltas {
    pub records: Vec<(String, LwwRecord)>,
    pub cut: ArrivalPoint,
    pub bytes: usize,
}

/// Roughly what a record costs in a reply, for the byte budget.
fn record_bytes(key: &str, record: &LwwRecord) -> usize {
    const FIELD_OVERHEAD_BYTES: usize = 48;
    key.len()
        + record.value.as_ref().map_or(0, |value| value.len())
        + record.timestamp.node_id.len()
        + FIELD_OVERHEAD_BYTES
}

/// Merges the shards' answers into one arrival-ordered list within `budget`, and picks the
/// point the next request continues from so that nothing is skipped:
/// - a shard whose answer the budget cut may hold more changes right after its last one, so the
///   merged list stops at the earliest such last change;
/// - if the list is cut (by that or by `budget`), the next request continues after its last
///   record: every change up to that point, on any shard, is in the list;
/// - if nothing was cut, it continues after the *earliest* shard clock: a change arriving on
///   any shard after its answer is stamped later than that. Changes between the earliest and a
///   later shard's clock come again next time: duplicates, which LWW merging absorbs, never gaps.
pub fn merge_deltas(parts: Vec<ShardDeltas>, budget: DeltaBudget) -> MergedDeltas {
    assert!(!parts.is_empty(), "one answer per shard");
    assert!(budget.records > 0);
    let limit = parts
        .iter()
        .filter(|part| !part.complete)
        .filter_map(|part| part.records.last().map(|(point, ..)| *point))
        .min();
    let earliest_clock = parts.iter().map(|part| part.now).min().expect("not empty");
    let mut all: Vec<(ArrivalPoint, String, LwwRecord)> = parts.into_iter().flat_map(|part| part.records).collect();
    all.sort_unstable_by_key(|(point, ..)| *point);
    let within_limit = limit.map_or(all.len(), |limit| all.partition_point(|(point, ..)| *point <= limit));
    let mut taken = 0;
    let mut bytes = 0;
    while taken < within_limit && taken < budget.records && (taken == 0 || bytes < budget.bytes) {
        bytes += record_bytes(&all[taken].1, &all[taken].2);
        taken += 1;
    }
    let cut = if limit.is_none() && taken == all.len() {
        earliest_clock
    } else {
        assert!(taken > 0, "an incomplete shard answer holds at least one record");
        all[taken - 1].0
    };
    all.truncate(taken);
    MergedDeltas { records: all.into_iter().map(|(_, key, record)| (key, record)).collect(), cut, bytes }
}

/// See the module doc. Lives on the partition's owner shard, inside `ShardData`.
pub struct SyncIndexes {
    /// Stamps changes as they arrive. It is never fed client timestamps, so every shard's
    /// arrival clock stays within the wall clock's reach of the others.
    arrival_clock: Hlc,
    /// The epoch the next LWW index takes (0 names none, see `IndexSlot`).
    next_epoch: u32,
    lww: AHashMap<Arc<str>, LwwIndex>,
    or: AHashMap<Arc<str>, OrIndex>,
}

/// The sync index of one LWW map on one shard. What it keeps per key (the key's Merkle item
/// hash and where its entry sits in `changes`) lives beside the key's record, in the map's
/// `IndexSlot`, so a write pays one table lookup for both; a slot counts only when it carries
/// this index's `epoch`, so a reset index (a new epoch) sees every key as new.
struct LwwIndex {
    epoch: u32,
    leaves: LeafSums,
    leaf_keys: AHashMap<LeafIndex, Vec<Arc<str>>>,
    /// Each key once, at the arrival of its current record.
    changes: ChangeLog,
}

/// Maps with fewer records than this are not warmed before a batch (`ShardData::warm`): their
/// records, a few hundred KiB at most, stay in the core's caches anyway.
const WARM_RECORDS_MIN: usize = 2_048;

/// Entries of one change-log chunk; a chunk takes new entries until it holds this many.
const LOG_CHUNK_ENTRIES: usize = 1024;
/// A chunk shorter than this is never compacted: too little to win.
const LOG_CHUNK_COMPACT_MIN: usize = 16;

/// The change index of one map: every key once, in the order its current record arrived.
/// Arrival stamps come from one clock and only grow, so a change appends its entry and clears
/// the one it supersedes in place — O(1), where an ordered tree would remove and insert. The
/// log is cut into chunks; a chunk less than half live is compacted (its live entries keep
/// their order, their keys' slots are updated) and an empty one is dropped, so the log holds at
/// most about two entries per live key plus a little per chunk. Each compaction removes at least
/// as many entries as it keeps, which the writes that superseded them paid for.
#[derive(Default)]
struct ChangeLog {
    /// Ascending chunk ids, hence ascending arrivals.
    chunks: std::collections::VecDeque<LogChunk>,
    next_chunk: u64,
}

struct LogChunk {
    id: u64,
    /// Arrival order; `None` where a later change of the key superseded the entry.
    entries: Vec<(Arrival, Option<Arc<str>>)>,
    live: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogSlot {
    chunk: u64,
    offset: u32,
}

impl ChangeLog {
    fn position(&self, chunk: u64) -> usize {
        self.chunks.binary_search_by_key(&chunk, |chunk| chunk.id).expect("slots name existing chunks")
    }

    /// Appends `key` at `arrival`, the newest stamp yet.
    fn push(&mut self, arrival: Arrival, key: Arc<str>) -> LogSlot {
        let needs_chunk = self.chunks.back().is_none_or(|chunk| chunk.entries.len() >= LOG_CHUNK_ENTRIES);
        if needs_chunk {
            self.chunks.push_back(LogChunk { id: self.next_chunk, entries: Vec::with_capacity(64), live: 0 });
            self.next_chunk += 1;
        }
        let chunk = self.chunks.back_mut().expect("ensured above");
        debug_assert!(chunk.entries.last().is_none_or(|(last, _)| *last < arrival), "arrivals only grow");
        chunk.entries.push((arrival, Some(key)));
        chunk.live += 1;
        LogSlot { chunk: chunk.id, offset: (chunk.entries.len() - 1) as u32 }
    }

    /// Clears the entry at `slot`; returns its key and the chunk position if that chunk should
    /// now be compacted or dropped.
    fn clear(&mut self, slot: LogSlot) -> (Arc<str>, Option<usize>) {
        let position = self.position(slot.chunk);
        let last = position + 1 == self.chunks.len();
        let chunk = &mut self.chunks[position];
        let key = chunk.entries[slot.offset as usize].1.take().expect("a slot holds its key until cleared");
        chunk.live -= 1;
        let sparse = chunk.entries.len() >= LOG_CHUNK_COMPACT_MIN && chunk.live * 2 < chunk.entries.len();
        let due = !last && (chunk.live == 0 || sparse);
        (key, due.then_some(position))
    }

    /// Entries after `start`, oldest first.
    fn since(&self, start: Arrival) -> impl Iterator<Item = (Arrival, &Arc<str>)> + '_ {
        let first = self.chunks.partition_point(|chunk| chunk.entries.last().is_some_and(|(last, _)| *last < start));
        self.chunks.range(first..).flat_map(move |chunk| {
            let from = chunk.entries.partition_point(|(arrival, _)| *arrival < start);
            chunk.entries[from..].iter().filter_map(|(arrival, key)| key.as_ref().map(|key| (*arrival, key)))
        })
    }
}

impl LwwIndex {
    fn new(epoch: u32) -> LwwIndex {
        LwwIndex { epoch, leaves: LeafSums::default(), leaf_keys: AHashMap::new(), changes: ChangeLog::default() }
    }

    /// Puts `key`'s current record, stored in `records`, into the tree and the change index
    /// (idempotent for the tree; the key's change entry moves to `arrival`).
    fn refresh(&mut self, key: &str, arrival: Arrival, records: &mut LwwMap) {
        let (record, slot) = records.get_with_slot_mut(key).expect("an indexed key has a stored record");
        // The key is hashed once for its leaf and its item hash.
        let mut key_hasher = Fnv1a::new();
        key_hasher.write_text(key);
        let leaf = LeafIndex::of_key_hash(key_hasher.finish());
        let item_hash = lww_item_hash_after_key(key_hasher, &record.timestamp);
        if slot.epoch == self.epoch {
            // The common overwrite: the key's entries are updated in place.
            let old_hash = std::mem::replace(&mut slot.item_hash, item_hash);
            let (name, due) = self.changes.clear(LogSlot { chunk: slot.chunk, offset: slot.offset });
            let moved = self.changes.push(arrival, name);
            (slot.chunk, slot.offset) = (moved.chunk, moved.offset);
            self.leaves.replace_item(leaf, Some(old_hash), Some(item_hash));
            if let Some(position) = due {
                self.compact(position, records);
            }
            return;
        }
        let name: Arc<str> = Arc::from(key);
        self.leaf_keys.entry(leaf).or_default().push(Arc::clone(&name));
        self.leaves.add_key(leaf);
        self.leaves.replace_item(leaf, None, Some(item_hash));
        let logged = self.changes.push(arrival, name);
        *slot = IndexSlot { epoch: self.epoch, item_hash, chunk: logged.chunk, offset: logged.offset };
    }

    /// Drops the superseded entries of the chunk at `position` (or the whole chunk when none is
    /// live) and re-points the moved keys at their new offsets.
    fn compact(&mut self, position: usize, records: &mut LwwMap) {
        let chunk = &mut self.changes.chunks[position];
        if chunk.live == 0 {
            self.changes.chunks.remove(position);
            return;
        }
        chunk.entries.retain(|(_, key)| key.is_some());
        chunk.entries.shrink_to_fit();
        for (offset, (_, key)) in chunk.entries.iter().enumerate() {
            let key = key.as_ref().expect("only live entries are left");
            let (_, slot) = records.get_with_slot_mut(key).expect("every logged key has a stored record");
            slot.offset = offset as u32;
        }
    }
}

/// The sync index of one OR map on one shard.
#[derive(Default)]
struct OrIndex {
    leaves: LeafSums,
    /// Keys with a visible record or a removal attributed to them. A key never leaves: its
    /// tombstones are kept for good (PROTOCOL.md §6.4).
    keys: GrowingMap<Arc<str>, OrKeyMeta>,
    leaf_keys: AHashMap<LeafIndex, Vec<Arc<str>>>,
    /// Tag -> the key holding the visible record with that tag.
    live_tags: AHashMap<String, Arc<str>>,
    /// More holders of a tag another key already holds. Tags are globally unique, so this stays
    /// empty unless a client reuses one; it keeps the tree exact even then.
    shared_tags: AHashMap<String, Vec<Arc<str>>>,
}

#[derive(Default)]
struct OrKeyMeta {
    /// `or_entry_hash` of the key's visible records; `None` when it has none (not in the tree).
    item_hash: Option<u32>,
    /// Tags whose removal took a record of this key (or named this key when no record had the
    /// tag), in the order they came.
    tombstones: Vec<String>,
}

impl OrIndex {
    /// The interned name of `key`, counting it into its leaf the first time.
    fn intern(&mut self, key: &str) -> Arc<str> {
        if let Some((name, _)) = self.keys.get_key_value(key) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(key);
        self.keys.insert(Arc::clone(&name), OrKeyMeta::default());
        let leaf = LeafIndex::of_key(key);
        self.leaf_keys.entry(leaf).or_default().push(Arc::clone(&name));
        self.leaves.add_key(leaf);
        name
    }

    /// Recomputes `key`'s item hash from its visible records in `map` and indexes their tags.
    /// Idempotent.
    fn refresh(&mut self, key: &str, map: &OrMap) {
        let name = self.intern(key);
        let mut has_records = false;
        for record in map.records(key) {
            has_records = true;
            self.index_tag(&record.tag, &name);
        }
        let item_hash = has_records.then(|| or_entry_hash(key, map.records(key)));
        let meta = self.keys.get_mut(key).expect("interned above");
        let old = std::mem::replace(&mut meta.item_hash, item_hash);
        self.leaves.replace_item(LeafIndex::of_key(key), old, item_hash);
    }

    fn index_tag(&mut self, tag: &str, name: &Arc<str>) {
        match self.live_tags.get(tag) {
            None => {
                self.live_tags.insert(tag.to_string(), Arc::clone(name));
            }
            Some(holder) if holder == name => {}
            Some(_) => {
                let extra = self.shared_tags.entry(tag.to_string()).or_default();
                if !extra.contains(name) {
                    extra.push(Arc::clone(name));
                }
            }
        }
    }

    /// `tag` was newly tombstoned by a remove naming `key`: every key holding it loses the
    /// record and keeps the tag among its tombstones; with no holder, `key` keeps it.
    fn on_remove(&mut self, key: &str, tag: &str, map: &OrMap) {
        let mut holders: Vec<Arc<str>> = self.live_tags.remove(tag).into_iter().collect();
        holders.extend(self.shared_tags.remove(tag).unwrap_or_default());
        if holders.is_empty() {
            holders.push(self.intern(key));
        }
        for holder in holders {
            self.refresh(&holder, map);
            self.keys.get_mut(&*holder).expect("refreshed above").tombstones.push(tag.to_string());
        }
    }

    /// A fresh index that keeps only the removals attributed to keys: the OR map's flat
    /// tombstone set cannot say which key a tag belonged to.
    fn keeping_attribution(&self) -> OrIndex {
        let mut fresh = OrIndex::default();
        for (key, meta) in &self.keys {
            if !meta.tombstones.is_empty() {
                fresh.intern(key);
                fresh.keys.get_mut(&**key).expect("interned above").tombstones = meta.tombstones.clone();
            }
        }
        fresh
    }
}

/// Hands out the next LWW index epoch. Epochs never repeat within a shard's life (a
/// rebuild every second would take over a century to wrap), so no stale slot can pass for a
/// fresh one.
fn take_epoch(next_epoch: &mut u32) -> u32 {
    let epoch = *next_epoch;
    *next_epoch = next_epoch.checked_add(1).expect("LWW index epochs exhausted");
    epoch
}

impl SyncIndexes {
    pub fn new(node_id: &str) -> SyncIndexes {
        SyncIndexes { arrival_clock: Hlc::new(node_id), next_epoch: 1, lww: AHashMap::new(), or: AHashMap::new() }
    }

    fn tick(&mut self, wall_ms: u64) -> Arrival {
        let (millis, counter) = self.arrival_clock.tick(wall_ms);
        Arrival { millis, counter }
    }

    fn lww_index(&mut self, map: &Arc<str>) -> &mut LwwIndex {
        let next_epoch = &mut self.next_epoch;
        self.lww.entry(Arc::clone(map)).or_insert_with(|| LwwIndex::new(take_epoch(next_epoch)))
    }

    fn or_index(&mut self, map: &Arc<str>) -> &mut OrIndex {
        self.or.entry(Arc::clone(map)).or_default()
    }
}

/// A rebuild of the sync indexes from the records, walked in bounded steps
/// ([`ShardData::sync_rebuild_step`]) so the shard keeps serving in between. One map at a time:
/// its index is reset when its turn comes, then its keys are put back a chunk per step. Writes
/// between steps refresh their keys as usual; refreshing is idempotent, so a key written before
/// its turn and refreshed again by the walk counts once. Until a map's walk ends, its tree
/// lacks the keys not yet walked: sync still answers, from the partial tree, which costs a
/// client walking more buckets (or, for a bucket it does not see, one more round), never data.
pub struct SyncRebuild {
    maps: Vec<(TreeKind, Arc<str>)>,
    current: Option<(TreeKind, Arc<str>, Vec<String>)>,
}

impl SyncRebuild {
    pub fn is_done(&self) -> bool {
        self.maps.is_empty() && self.current.is_none()
    }
}

impl ShardData {
    /// Looks up the stored records of a batch's keys before its ops are applied in turn. The
    /// lookups do not depend on each other, so the processor overlaps their cache misses, where
    /// applying op by op waits for each miss in turn: the record's table slot, its old value
    /// (which the journal copies) and the change-log entry the write supersedes. Changes
    /// nothing.
    pub fn warm(&self, ops: &[ClientOp]) {
        let mut seen = 0u64;
        let mut current: Option<(&str, &LwwMap, Option<&LwwIndex>)> = None;
        for op in ops {
            if !matches!(op.kind, OpKind::Put(_) | OpKind::Remove { .. }) {
                continue;
            }
            let (records, index) = match current {
                Some((name, records, index)) if name == op.map_name => (records, index),
                _ => {
                    let Some(records) = self.lww.get(op.map_name.as_str()) else { continue };
                    let index = self.sync.lww.get(op.map_name.as_str());
                    current = Some((op.map_name.as_str(), records, index));
                    (records, index)
                }
            };
            // A map this small stays in cache between its writes: nothing to overlap.
            if records.len() < WARM_RECORDS_MIN {
                continue;
            }
            let Some((slot, read)) = records.touch(&op.key) else { continue };
            seen ^= read;
            if let Some(index) = index.filter(|index| index.epoch == slot.epoch) {
                // A slot of the index's epoch names a live entry (as `ChangeLog::clear` relies on).
                let chunk = &index.changes.chunks[index.changes.position(slot.chunk)];
                seen ^= chunk.entries[slot.offset as usize].0.millis;
            }
        }
        std::hint::black_box(seen);
    }

    /// Updates the sync indexes for one state change of `apply`.
    pub(super) fn track_sync(&mut self, event: &ChangeEvent, wall_ms: u64) {
        match &event.change {
            Change::Put(_) | Change::Remove(_) => {
                let arrival = self.sync.tick(wall_ms);
                let records = self.lww.get_mut(&event.map).expect("the write went into this map");
                self.sync.lww_index(&event.map).refresh(&event.key, arrival, records);
            }
            Change::OrAdd(_) => {
                let map = self.or.get(&event.map).expect("the add went into this map");
                self.sync.or_index(&event.map).refresh(&event.key, map);
            }
            Change::OrRemove { tag } => {
                let map = self.or.get(&event.map).expect("the remove went into this map");
                self.sync.or_index(&event.map).on_remove(&event.key, tag, map);
            }
        }
    }

    /// This shard's leaf sums of `map` under `path`, one per leaf in order; `None` when this
    /// shard holds nothing of the map.
    pub fn merkle_leaves(&self, map: &str, kind: TreeKind, path: BucketPath) -> Option<Vec<LeafSum>> {
        let leaves = match kind {
            TreeKind::Lww => &self.sync.lww.get(map)?.leaves,
            TreeKind::Or => &self.sync.or.get(map)?.leaves,
        };
        if leaves.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(path.leaves().len());
        leaves.copy_range(path.leaves(), &mut out);
        Some(out)
    }

    /// Every record of LWW map `map` in `leaf` that this shard owns, tombstones included, by key.
    pub fn lww_leaf_records(&self, map: &str, leaf: LeafIndex) -> Vec<(String, LwwRecord)> {
        let (Some(index), Some(records)) = (self.sync.lww.get(map), self.lww.get(map)) else { return Vec::new() };
        let mut out: Vec<(String, LwwRecord)> = index
            .leaf_keys
            .get(&leaf)
            .into_iter()
            .flatten()
            .filter_map(|key| records.get(key).map(|record| (key.to_string(), record.clone())))
            .collect();
        out.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        out
    }

    /// The sync entries of OR map `map` for the keys in `leaf` that this shard owns, by key:
    /// keys with visible records and keys that only have removals.
    pub fn or_leaf_entries(&self, map: &str, leaf: LeafIndex) -> Vec<OrMapEntry> {
        let Some(index) = self.sync.or.get(map) else { return Vec::new() };
        let mut keys: Vec<&Arc<str>> = index.leaf_keys.get(&leaf).into_iter().flatten().collect();
        keys.sort_unstable();
        keys.into_iter().map(|key| self.or_entry(map, key)).collect()
    }

    /// The sync entry of each of `keys` in OR map `map` (empty lists for a key it lacks).
    pub fn or_entries(&self, map: &str, keys: &[String]) -> Vec<OrMapEntry> {
        keys.iter().map(|key| self.or_entry(map, key)).collect()
    }

    fn or_entry(&self, map: &str, key: &str) -> OrMapEntry {
        let mut records: Vec<OrRecord> =
            self.or.get(map).map(|or_map| or_map.records(key).cloned().collect()).unwrap_or_default();
        records.sort_unstable_by(|left, right| left.tag.cmp(&right.tag));
        let tombstones = self
            .sync
            .or
            .get(map)
            .and_then(|index| index.keys.get(key))
            .map(|meta| meta.tombstones.clone())
            .unwrap_or_default();
        OrMapEntry { key: key.to_string(), records, tombstones }
    }

    /// Which of `tags` this shard holds as visible records of OR map `map`, as `(tag, key)`.
    pub fn or_tag_holders(&self, map: &str, tags: &[String]) -> Vec<(String, String)> {
        let Some(index) = self.sync.or.get(map) else { return Vec::new() };
        let mut holders = Vec::new();
        for tag in tags {
            if let Some(key) = index.live_tags.get(tag.as_str()) {
                holders.push((tag.clone(), key.to_string()));
            }
            for key in index.shared_tags.get(tag.as_str()).into_iter().flatten() {
                holders.push((tag.clone(), key.to_string()));
            }
        }
        holders
    }

    /// The records of LWW map `map` whose current version arrived on this shard (`shard`)
    /// after `after`, oldest first, within `budget`.
    pub fn lww_changes_after(
        &mut self,
        map: &str,
        after: ArrivalPoint,
        shard: u16,
        budget: DeltaBudget,
        wall_ms: u64,
    ) -> ShardDeltas {
        assert!(budget.records > 0);
        let now = ArrivalPoint::on_shard(self.sync.tick(wall_ms), shard);
        let (Some(index), Some(records)) = (self.sync.lww.get(map), self.lww.get(map)) else {
            return ShardDeltas { records: Vec::new(), complete: true, now };
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut complete = true;
        let start = Arrival { millis: after.millis, counter: after.counter };
        for (arrival, key) in index.changes.since(start) {
            let point = ArrivalPoint::on_shard(arrival, shard);
            if point <= after {
                continue;
            }
            if out.len() >= budget.records || (!out.is_empty() && bytes >= budget.bytes) {
                complete = false;
                break;
            }
            let Some(record) = records.get(key) else { continue };
            bytes += record_bytes(key, record);
            out.push((point, key.to_string(), record.clone()));
        }
        ShardDeltas { records: out, complete, now }
    }

    /// Starts rebuilding every map's sync index from the records (see [`SyncRebuild`]).
    pub fn begin_sync_rebuild(&self) -> SyncRebuild {
        let mut maps: Vec<(TreeKind, Arc<str>)> =
            self.lww.keys().map(|name| (TreeKind::Lww, Arc::clone(name))).collect();
        maps.extend(self.or.keys().map(|name| (TreeKind::Or, Arc::clone(name))));
        SyncRebuild { maps, current: None }
    }

    /// Walks up to `keys_max` keys of a rebuild; returns whether it is done.
    pub fn sync_rebuild_step(&mut self, rebuild: &mut SyncRebuild, keys_max: usize, wall_ms: u64) -> bool {
        let mut walked = 0;
        while walked < keys_max {
            let Some((kind, map, keys)) = &mut rebuild.current else {
                let Some((kind, map)) = rebuild.maps.pop() else { return true };
                rebuild.current = Some(self.reset_sync_index(kind, map));
                continue;
            };
            let Some(key) = keys.pop() else {
                rebuild.current = None;
                continue;
            };
            walked += 1;
            match kind {
                TreeKind::Lww => {
                    let Some(records) = self.lww.get_mut(&**map).filter(|records| records.get(&key).is_some()) else {
                        continue;
                    };
                    let arrival = self.sync.tick(wall_ms);
                    self.sync.lww_index(map).refresh(&key, arrival, records);
                }
                TreeKind::Or => {
                    let Some(or_map) = self.or.get(&**map) else { continue };
                    self.sync.or_index(map).refresh(&key, or_map);
                }
            }
        }
        rebuild.is_done()
    }

    /// Empties one map's index (OR maps keep their removals' attribution) and lists its keys.
    fn reset_sync_index(&mut self, kind: TreeKind, map: Arc<str>) -> (TreeKind, Arc<str>, Vec<String>) {
        let keys: Vec<String> = match kind {
            TreeKind::Lww => {
                let fresh = LwwIndex::new(take_epoch(&mut self.sync.next_epoch));
                self.sync.lww.insert(Arc::clone(&map), fresh);
                self.lww.get(&map).map(|records| records.iter().map(|(key, _)| key.to_string()).collect())
            }
            TreeKind::Or => {
                let fresh = self.sync.or.get(&map).map(OrIndex::keeping_attribution).unwrap_or_default();
                self.sync.or.insert(Arc::clone(&map), fresh);
                self.or.get(&map).map(|or_map| or_map.keys().map(str::to_string).collect())
            }
        }
        .unwrap_or_default();
        (kind, map, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::{BTreeMap, BTreeSet};

    use crate::crdt::test_prng::Prng;
    use crate::hash::{lww_item_hash, partition_of};
    use crate::merkle::{add_leaves, children, root_hash, LEAF_COUNT};
    use crate::protocol::{ClientOp, OpKind};
    use crate::shard::OpOutcome;

    const NOW_MS: u64 = 1_800_000_000_000;

    fn op(map: &str, key: &str, kind: OpKind) -> ClientOp {
        ClientOp { id: None, map_name: map.into(), key: key.into(), kind, write_concern: None, timeout: None }
    }

    // Goal: the change log lists every key once, at its newest arrival, in arrival order, and
    // compaction keeps it within a few entries per live key. Method: rewrite a skewed set of keys
    // thousands of times (several chunks compacted and dropped) and compare with a model.
    #[test]
    fn change_log_keeps_each_key_once_in_arrival_order() {
        let mut prng = Prng::from_seed(11);
        let mut index = LwwIndex::new(1);
        let mut records = LwwMap::new();
        let mut model: BTreeMap<String, Arrival> = BTreeMap::new();
        for step in 0..20_000u32 {
            // Most writes go to a few hot keys, so old chunks empty out and get compacted.
            let key =
                if prng.below(10) < 8 { format!("hot{}", prng.below(8)) } else { format!("k{}", prng.below(500)) };
            let arrival = Arrival { millis: 1_000 + u64::from(step / 7), counter: step % 7 };
            records.merge(&key, lww(Some("v"), u64::from(step), "n"));
            index.refresh(&key, arrival, &mut records);
            model.insert(key, arrival);
        }
        let mut expected: Vec<(Arrival, String)> = model.iter().map(|(key, arrival)| (*arrival, key.clone())).collect();
        expected.sort();
        let all: Vec<(Arrival, String)> = index
            .changes
            .since(Arrival { millis: 0, counter: 0 })
            .map(|(arrival, key)| (arrival, key.to_string()))
            .collect();
        assert_eq!(all, expected);
        let middle = expected[expected.len() / 2].0;
        let tail: Vec<(Arrival, String)> =
            index.changes.since(middle).map(|(arrival, key)| (arrival, key.to_string())).collect();
        assert_eq!(tail, expected[expected.len() / 2..].to_vec());
        let entries: usize = index.changes.chunks.iter().map(|chunk| chunk.entries.len()).sum();
        let bound = 2 * model.len() + LOG_CHUNK_COMPACT_MIN * index.changes.chunks.len() + LOG_CHUNK_ENTRIES;
        assert!(entries <= bound, "{entries} entries for {} keys", model.len());
        for key in model.keys() {
            let (_, slot) = records.get_with_slot_mut(key).unwrap();
            assert_eq!(slot.epoch, index.epoch);
            let chunk = &index.changes.chunks[index.changes.position(slot.chunk)];
            assert_eq!(chunk.entries[slot.offset as usize].1.as_deref(), Some(key.as_str()));
        }
    }

    // Goal: warming a batch changes nothing: a shard that warms every batch before applying it
    // ends with the same records, tree and change log, and answers the same outcomes, as one
    // that does not. Method: seeded batches of puts and removes over a map past
    // `WARM_RECORDS_MIN` records and a small one, applied to both shards; the warmed shard also
    // warms an op on a map that does not exist.
    #[test]
    fn warming_a_batch_changes_nothing() {
        let mut prng = Prng::from_seed(5);
        let (mut warmed, mut plain) = (ShardData::new("n"), ShardData::new("n"));
        for step in 0..600u64 {
            let mut batch = Vec::new();
            for index in 0..10 {
                let (map, keys) = if prng.below(4) == 0 { ("small", 5) } else { ("big", 4 * WARM_RECORDS_MIN as u64) };
                let key = format!("k{}", prng.below(keys));
                let millis = NOW_MS - 1_000_000 + step * 10 + index;
                let kind = if prng.below(8) == 0 {
                    OpKind::Remove { record: Some(lww(None, millis, "c")) }
                } else {
                    OpKind::Put(lww(Some("v"), millis, "c"))
                };
                batch.push(op(map, &key, kind));
            }
            let mut seen = batch.clone();
            seen.push(op("absent", "k1", OpKind::Put(lww(Some("v"), NOW_MS, "c"))));
            warmed.warm(&seen);
            for op in batch {
                let warmed_result = warmed.apply(op.clone(), NOW_MS);
                assert_eq!(warmed_result, plain.apply(op, NOW_MS), "step {step}");
            }
        }
        assert!(warmed.lww_map("big").unwrap().len() >= WARM_RECORDS_MIN, "the big map is warmed");
        assert!(warmed.lww_map("absent").is_none());
        for map in ["big", "small"] {
            assert_eq!(warmed.lww_map(map), plain.lww_map(map), "{map}");
            assert_eq!(
                warmed.merkle_leaves(map, TreeKind::Lww, BucketPath::ROOT),
                plain.merkle_leaves(map, TreeKind::Lww, BucketPath::ROOT),
                "{map}"
            );
            let since = |data: &ShardData| -> Vec<(Arrival, String)> {
                let changes = &data.sync.lww[map].changes;
                changes.since(Arrival { millis: 0, counter: 0 }).map(|(at, key)| (at, key.to_string())).collect()
            };
            assert_eq!(since(&warmed), since(&plain), "{map}");
        }
    }

    fn lww(value: Option<&str>, millis: u64, node: &str) -> LwwRecord {
        LwwRecord {
            value: value.map(|text| crate::model::ValueBytes::from(text.as_bytes())),
            timestamp: Timestamp::new(millis, 0, node),
            ttl_ms: None,
        }
    }

    fn or_record(tag: &str, value: &str, millis: u64) -> OrRecord {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &rmpv::Value::from(value)).unwrap();
        OrRecord {
            value: crate::model::ValueBytes::from(bytes),
            timestamp: Timestamp::new(millis, 0, "c"),
            tag: tag.into(),
            ttl_ms: None,
        }
    }

    /// Two shards splitting the key space by partition, as the node does.
    struct TwoShards {
        shards: [ShardData; 2],
    }

    impl TwoShards {
        fn new() -> TwoShards {
            TwoShards { shards: [ShardData::new("n"), ShardData::new("n")] }
        }

        fn owner(key: &str) -> usize {
            usize::from(partition_of(key) % 2)
        }

        fn apply(&mut self, op: ClientOp) -> OpOutcome {
            let owner = TwoShards::owner(&op.key);
            self.shards[owner].apply(op, NOW_MS).0
        }

        fn leaves(&self, map: &str, kind: TreeKind, path: BucketPath) -> Vec<LeafSum> {
            let mut total = vec![LeafSum::default(); path.leaves().len()];
            for shard in &self.shards {
                if let Some(part) = shard.merkle_leaves(map, kind, path) {
                    add_leaves(&mut total, &part);
                }
            }
            total
        }
    }

    /// The client's tree, built the naive way from a whole map: item hashes per leaf.
    fn client_leaves(items: &BTreeMap<String, Option<u32>>) -> Vec<LeafSum> {
        let mut leaves = vec![LeafSum::default(); LEAF_COUNT];
        for (key, item) in items {
            let leaf = &mut leaves[LeafIndex::of_key(key).get()];
            leaf.keys += 1;
            if let Some(item) = item {
                leaf.hash = leaf.hash.wrapping_add(crate::hash::mix(*item));
            }
        }
        leaves
    }

    fn lww_model_items(model: &BTreeMap<String, LwwRecord>) -> BTreeMap<String, Option<u32>> {
        model.iter().map(|(key, record)| (key.clone(), Some(lww_item_hash(key, &record.timestamp)))).collect()
    }

    fn random_lww_op(prng: &mut Prng, model: &mut BTreeMap<String, LwwRecord>) -> ClientOp {
        let key = format!("k{}", prng.below(60));
        let millis = 1_000 + prng.below(50);
        let node = ["a", "b"][prng.below(2) as usize];
        let record = if prng.below(4) == 0 { lww(None, millis, node) } else { lww(Some("v"), millis, node) };
        let newer = model.get(&key).is_none_or(|current| record.timestamp > current.timestamp);
        if newer {
            model.insert(key.clone(), record.clone());
        }
        let kind = if record.value.is_none() { OpKind::Remove { record: Some(record) } } else { OpKind::Put(record) };
        op("m", &key, kind)
    }

    #[test]
    fn lww_leaf_sums_across_shards_equal_the_clients_tree() {
        // Goal: DECISIONS §4.3 — the per-shard incremental leaf sums add up to exactly the
        // client's tree of the same records, after any sequence of puts, removes, re-sent and
        // stale writes. Method: seeded random ops on two shards and a model map; compare leaves,
        // root and root buckets with the tree built naively from the model.
        for seed in 0..48 {
            let mut prng = Prng::from_seed(seed);
            let mut shards = TwoShards::new();
            let mut model = BTreeMap::new();
            for step in 0..300 {
                let op = random_lww_op(&mut prng, &mut model);
                shards.apply(op);
                if step % 50 == 49 {
                    let expected = client_leaves(&lww_model_items(&model));
                    let actual = shards.leaves("m", TreeKind::Lww, BucketPath::ROOT);
                    assert_eq!(actual, expected, "seed={seed} step={step}");
                    assert_eq!(root_hash(&actual), root_hash(&expected), "seed={seed}");
                    assert_eq!(children(BucketPath::ROOT, &actual), children(BucketPath::ROOT, &expected));
                }
            }
            // Every key's record comes back from exactly one shard's leaf.
            for (key, record) in &model {
                let leaf = LeafIndex::of_key(key);
                let found: Vec<(String, LwwRecord)> = shards
                    .shards
                    .iter()
                    .flat_map(|shard| shard.lww_leaf_records("m", leaf))
                    .filter(|(k, _)| k == key)
                    .collect();
                assert_eq!(found, vec![(key.clone(), record.clone())], "seed={seed}");
            }
        }
    }

    /// The OR model: key -> tag -> record, plus the tombstoned tags.
    #[derive(Default)]
    struct OrModel {
        entries: BTreeMap<String, BTreeMap<String, OrRecord>>,
        tombstones: BTreeSet<String>,
    }

    impl OrModel {
        fn items(&self) -> BTreeMap<String, Option<u32>> {
            self.entries
                .iter()
                .filter(|(_, records)| !records.is_empty())
                .map(|(key, records)| (key.clone(), Some(or_entry_hash(key, records.values()))))
                .collect()
        }
    }

    #[test]
    fn or_leaf_sums_follow_adds_and_removes_under_any_key() {
        // Goal: the OR tree equals the client's formula over the visible records after adds,
        // removes by the right key, removes naming another key (tags are globally unique) and
        // re-sent ops; a key emptied by removes stays listed (hash 0) and its leaf entry carries
        // the removed tags. Method: seeded random ops on two shards against a model.
        for seed in 0..48 {
            let mut prng = Prng::from_seed(seed);
            let mut shards = TwoShards::new();
            let mut model = OrModel::default();
            let mut next_tag = 0;
            for _ in 0..300 {
                let key = format!("k{}", prng.below(30));
                if prng.below(3) > 0 || model.entries.values().all(BTreeMap::is_empty) {
                    next_tag += 1;
                    let tag = format!("{next_tag}:0:c");
                    let record = or_record(&tag, &format!("v{}", prng.below(5)), next_tag);
                    model.entries.entry(key.clone()).or_default().insert(tag, record.clone());
                    shards.apply(op("o", &key, OpKind::OrAdd(record)));
                } else {
                    // Remove a random live tag, naming its key — or, on the same shard, any key.
                    let live: Vec<(String, String)> = model
                        .entries
                        .iter()
                        .flat_map(|(key, records)| records.keys().map(move |tag| (key.clone(), tag.clone())))
                        .collect();
                    let (holder, tag) = live[prng.below(live.len() as u64) as usize].clone();
                    let named = if prng.below(2) == 0 {
                        holder.clone()
                    } else {
                        (0..30)
                            .map(|i| format!("k{i}"))
                            .find(|k| TwoShards::owner(k) == TwoShards::owner(&holder))
                            .unwrap()
                    };
                    model.entries.get_mut(&holder).unwrap().remove(&tag);
                    model.tombstones.insert(tag.clone());
                    shards.apply(op("o", &named, OpKind::OrRemove { tag: tag.clone() }));
                    // Re-sent: no change.
                    assert_eq!(shards.apply(op("o", &named, OpKind::OrRemove { tag })), OpOutcome::Unchanged);
                }
            }
            let actual = shards.leaves("o", TreeKind::Or, BucketPath::ROOT);
            let expected_items = model.items();
            assert_eq!(root_hash(&actual), root_hash(&client_leaves(&expected_items)), "seed={seed}");
            for (leaf, sum) in actual.iter().enumerate() {
                let expected_hash = expected_items
                    .iter()
                    .filter(|(key, _)| LeafIndex::of_key(key).get() == leaf)
                    .fold(0u32, |sum, (_, item)| sum.wrapping_add(crate::hash::mix(item.unwrap())));
                assert_eq!(sum.hash, expected_hash, "seed={seed} leaf={leaf}");
            }
            // Each key's entries: its visible records, and every removed tag of its records.
            for (key, records) in &model.entries {
                let leaf = LeafIndex::of_key(key);
                let entry = shards.shards[TwoShards::owner(key)]
                    .or_leaf_entries("o", leaf)
                    .into_iter()
                    .find(|entry| &entry.key == key)
                    .unwrap_or_else(|| panic!("seed={seed}: {key} listed in its leaf"));
                let tags: Vec<&String> = entry.records.iter().map(|record| &record.tag).collect();
                assert_eq!(tags, records.keys().collect::<Vec<_>>(), "seed={seed}");
                assert!(entry.tombstones.iter().all(|tag| model.tombstones.contains(tag)));
            }
            let attributed: BTreeSet<String> = shards
                .shards
                .iter()
                .flat_map(|shard| {
                    (0..LEAF_COUNT).flat_map(move |leaf| shard.or_leaf_entries("o", LeafIndex::new(leaf)))
                })
                .flat_map(|entry| entry.tombstones)
                .collect();
            assert_eq!(attributed, model.tombstones, "seed={seed}: every removal is attributed to a key");
        }
    }

    #[test]
    fn tag_holders_are_found_on_the_shard_that_holds_them() {
        // Goal: a pushed tombstone can be routed to the key holding its tag. Method: add two
        // tags, look them up with an unknown one; remove one and look again.
        let mut data = ShardData::new("n");
        data.apply(op("o", "a", OpKind::OrAdd(or_record("t1", "x", 1))), NOW_MS);
        data.apply(op("o", "b", OpKind::OrAdd(or_record("t2", "y", 2))), NOW_MS);
        let tags = vec!["t1".to_string(), "t2".to_string(), "t9".to_string()];
        assert_eq!(data.or_tag_holders("o", &tags), vec![("t1".into(), "a".into()), ("t2".into(), "b".into())]);
        data.apply(op("o", "a", OpKind::OrRemove { tag: "t1".into() }), NOW_MS);
        assert_eq!(data.or_tag_holders("o", &tags), vec![("t2".into(), "b".into())]);
        let entries = data.or_entries("o", &["a".to_string(), "zz".to_string()]);
        assert_eq!(entries[0], OrMapEntry { key: "a".into(), records: vec![], tombstones: vec!["t1".into()] });
        assert_eq!(entries[1], OrMapEntry { key: "zz".into(), records: vec![], tombstones: vec![] });
    }

    #[test]
    fn rebuild_in_chunks_with_writes_in_between_gives_the_incremental_tree() {
        // Goal: issue item 4 — rebuilding from the records in bounded chunks, with writes landing
        // between chunks, ends with exactly the tree incremental updates give. Method: build a
        // shard's state with random ops, rebuild it in chunks of 7 keys while applying more ops
        // to it and to an untouched twin, then compare the trees and the leaf contents.
        for seed in 0..24 {
            let mut prng = Prng::from_seed(seed);
            let mut rebuilt = ShardData::new("n");
            let mut twin = ShardData::new("n");
            let mut model = BTreeMap::new();
            let mut ops = Vec::new();
            for index in 0..200 {
                ops.push(random_lww_op(&mut prng, &mut model));
                ops.push(op(
                    "o",
                    &format!("k{}", prng.below(40)),
                    OpKind::OrAdd(or_record(&format!("{index}:0:c"), "v", 1)),
                ));
            }
            for op in ops {
                rebuilt.apply(op.clone(), NOW_MS);
                twin.apply(op, NOW_MS);
            }
            let mut rebuild = rebuilt.begin_sync_rebuild();
            let mut steps = 0;
            while !rebuilt.sync_rebuild_step(&mut rebuild, 7, NOW_MS) {
                steps += 1;
                for _ in 0..3 {
                    let op = random_lww_op(&mut prng, &mut model);
                    rebuilt.apply(op.clone(), NOW_MS);
                    twin.apply(op, NOW_MS);
                }
                let tag = format!("r{steps}:0:c");
                let add = op("o", &format!("k{}", prng.below(40)), OpKind::OrAdd(or_record(&tag, "w", 2)));
                rebuilt.apply(add.clone(), NOW_MS);
                twin.apply(add, NOW_MS);
            }
            assert!(steps > 10, "the rebuild took several steps");
            for (map, kind) in [("m", TreeKind::Lww), ("o", TreeKind::Or)] {
                assert_eq!(
                    rebuilt.merkle_leaves(map, kind, BucketPath::ROOT),
                    twin.merkle_leaves(map, kind, BucketPath::ROOT),
                    "seed={seed} map={map}"
                );
            }
            for leaf in (0..LEAF_COUNT).map(LeafIndex::new) {
                assert_eq!(rebuilt.lww_leaf_records("m", leaf), twin.lww_leaf_records("m", leaf), "seed={seed}");
                assert_eq!(rebuilt.or_leaf_entries("o", leaf), twin.or_leaf_entries("o", leaf), "seed={seed}");
            }
            // The change index holds every key once.
            let all = rebuilt.lww_changes_after(
                "m",
                ArrivalPoint::default(),
                0,
                DeltaBudget { records: 1_000, bytes: 1 << 20 },
                NOW_MS,
            );
            assert!(all.complete);
            assert_eq!(all.records.len(), model.len(), "seed={seed}");
        }
    }

    fn poll(shards: &mut TwoShards, after: ArrivalPoint, budget: DeltaBudget, wall_ms: u64) -> MergedDeltas {
        let parts = shards
            .shards
            .iter_mut()
            .enumerate()
            .map(|(shard, data)| data.lww_changes_after("m", after, shard as u16, budget, wall_ms))
            .collect();
        merge_deltas(parts, budget)
    }

    #[test]
    fn polling_the_change_index_misses_nothing_whatever_the_writers_clocks() {
        // Goal: DECISIONS §4.5 — a client polling with the previous reply's point receives every
        // change made after it, in arrival order, even when the writer's clock lags far behind
        // and even when budgets cut replies. Method: interleave random writes (timestamps from a
        // clock running behind the wall clock) on two shards with polls under small budgets;
        // the union of what the polls return must end equal to the model.
        for seed in 0..32 {
            let mut prng = Prng::from_seed(seed);
            let mut shards = TwoShards::new();
            let mut model: BTreeMap<String, LwwRecord> = BTreeMap::new();
            let mut seen: BTreeMap<String, LwwRecord> = BTreeMap::new();
            let mut after = ArrivalPoint::default();
            let mut wall_ms = NOW_MS;
            let mut lagging_millis = 1_000;
            for round in 0..60 {
                for _ in 0..prng.below(12) {
                    lagging_millis += 1;
                    let key = format!("k{}", prng.below(40));
                    let record = lww(Some(&format!("v{round}")), lagging_millis, "slow");
                    model.insert(key.clone(), record.clone());
                    let owner = TwoShards::owner(&key);
                    shards.shards[owner].apply(op("m", &key, OpKind::Put(record)), wall_ms);
                    wall_ms += prng.below(2);
                }
                let budget = DeltaBudget { records: 1 + prng.below(6) as usize, bytes: 40 + prng.below(400) as usize };
                let merged = poll(&mut shards, after, budget, wall_ms);
                assert!(merged.cut >= after || merged.records.is_empty(), "seed={seed}");
                for (key, record) in merged.records {
                    seen.insert(key, record);
                }
                after = merged.cut;
            }
            // Drain what is left.
            loop {
                let merged = poll(&mut shards, after, DeltaBudget { records: 5, bytes: 1 << 20 }, wall_ms);
                let empty = merged.records.is_empty();
                for (key, record) in merged.records {
                    seen.insert(key, record);
                }
                after = merged.cut;
                if empty {
                    break;
                }
            }
            assert_eq!(seen, model, "seed={seed}");
        }
    }

    #[test]
    fn a_complete_poll_continues_from_the_earliest_shard_clock() {
        // Goal: with nothing cut, the next point is the earliest shard clock, so a change that
        // lands on a shard right after it answered is in the next poll. Method: poll, write to
        // the shard whose clock is later, poll again from the cut.
        let mut shards = TwoShards::new();
        let key = (0..).map(|i| format!("x{i}")).find(|key| TwoShards::owner(key) == 1).unwrap();
        let first = poll(&mut shards, ArrivalPoint::default(), DeltaBudget { records: 10, bytes: 1 << 20 }, NOW_MS);
        assert!(first.records.is_empty());
        assert_eq!(first.cut.rank, 1, "shard 0 answered first, at the same millisecond");
        shards.shards[1].apply(op("m", &key, OpKind::Put(lww(Some("v"), 5, "w"))), NOW_MS);
        let second = poll(&mut shards, first.cut, DeltaBudget { records: 10, bytes: 1 << 20 }, NOW_MS);
        assert_eq!(second.records.len(), 1);
        assert_eq!(second.records[0].0, key);
    }

    #[test]
    fn arrival_points_survive_the_wire() {
        // Goal: serverSyncTimestamp is read back as the same point; foreign timestamps sort
        // before every shard's stamp of the same time. Method: round trips.
        let point = ArrivalPoint { millis: 17, counter: 3, rank: 2 };
        let wire = point.to_timestamp("node");
        assert_eq!(wire, Timestamp::new(17, 3, "node/1"));
        assert_eq!(ArrivalPoint::from_timestamp(&wire), point);
        let foreign = ArrivalPoint::from_timestamp(&Timestamp::new(17, 3, "client-a"));
        assert_eq!(foreign.rank, 0);
        assert!(foreign < ArrivalPoint { millis: 17, counter: 3, rank: 1 });
    }
}
