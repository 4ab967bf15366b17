//! The data a shard owns: for each map, the records of the keys in this shard's partitions,
//! and the shard's hybrid logical clock. Lives on the partition's owner shard.
//!
//! Sans-IO: ops and the wall-clock time come in, outcomes and change events go out. It never
//! talks to connections or other shards; `node` does that with what this returns.

use ahash::AHashMap;
use compact_str::CompactString;
use std::sync::Arc;

use crate::crdt::{LwwMap, LwwMerge, OrChange, OrMap};
use crate::hlc::Hlc;
use crate::limits::{CLOCK_DRIFT_MS_MAX, QUERY_SNAPSHOT_ROWS_MAX};
use crate::model::{LwwRecord, OrRecord, Timestamp, ValueBytes};
use crate::protocol::{ClientOp, OpKind};
use crate::query::{Query, ResolvedCursor};
use crate::search::index::SearchIndex;
use crate::search::{Hit, TermStats};
use crate::shard::sync::SyncIndexes;

/// What happened to one op on its owner shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutcome {
    /// The op changed state.
    Applied,
    /// The op was valid but changed nothing (a re-sent or older write; DECISIONS §2.1).
    Unchanged,
    /// The op was refused; the rest of its batch still applies (DECISIONS §1.8).
    Rejected { reason: String, code: u16 },
    /// A conflict resolver refused the write (`scripting`): nothing changed, the writer gets
    /// `MERGE_REJECTED`, and the op is still acknowledged so the client stops re-sending it.
    MergeRejected(Box<MergeRejection>),
    /// A conflict resolver stored another value than the one written (`scripting`). The
    /// writer gets no event for its own write, so it is sent this record.
    Merged(Box<MergedWrite>),
}

/// What `MERGE_REJECTED` tells the writer (PROTOCOL §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeRejection {
    pub map_name: CompactString,
    pub key: CompactString,
    /// The written value (msgpack; nil for a remove).
    pub attempted_value: ValueBytes,
    pub reason: String,
    /// The write's timestamp.
    pub timestamp: Timestamp,
}

/// The record a resolver's merge stored in place of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedWrite {
    pub map_name: CompactString,
    pub key: CompactString,
    pub record: LwwRecord,
}

/// A state change to announce to interested connections as a `SERVER_EVENT`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub map: Arc<str>,
    pub key: CompactString,
    pub change: Change,
    /// For LWW changes, the record the write replaced (live queries need to know whether the
    /// key matched before).
    pub previous: Option<LwwRecord>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put(LwwRecord),
    /// Carries the tombstone record (DECISIONS §3.1).
    Remove(LwwRecord),
    OrAdd(OrRecord),
    OrRemove {
        tag: String,
    },
}

/// One row of a query snapshot: a live record's key and decoded value.
pub type Row = (String, rmpv::Value);

/// Per-shard map data and clock. See the module doc.
pub struct ShardData {
    hlc: Hlc,
    pub(super) lww: AHashMap<Arc<str>, LwwMap>,
    pub(super) or: AHashMap<Arc<str>, OrMap>,
    /// Merkle leaf sums and the arrival-ordered change index of every map (`shard::sync`),
    /// kept current by `apply`.
    pub(super) sync: SyncIndexes,
    /// Full-text indexes of the LWW maps that have been searched (DECISIONS §6.1).
    search: AHashMap<Arc<str>, SearchIndex>,
}

impl ShardData {
    pub fn new(node_id: &str) -> ShardData {
        ShardData {
            hlc: Hlc::new(node_id),
            lww: AHashMap::new(),
            or: AHashMap::new(),
            sync: SyncIndexes::new(node_id),
            search: AHashMap::new(),
        }
    }

    /// The shard clock's `now`, for server-side timestamps.
    pub fn now(&mut self, wall_ms: u64) -> Timestamp {
        self.hlc.now(wall_ms)
    }

    /// A server timestamp later than `seen` (a write's timestamp that passed the drift check),
    /// for a record that must win over that write everywhere.
    pub fn now_after(&mut self, seen: &Timestamp, wall_ms: u64) -> Timestamp {
        // The caller checked the drift, so the update cannot fail.
        let _ = self.hlc.update(seen, wall_ms);
        self.hlc.now(wall_ms)
    }

    fn map_name(&self, name: &str) -> Arc<str> {
        // Reuse the interned name when the map exists, so events share one allocation.
        if let Some((existing, _)) = self.lww.get_key_value(name) {
            return Arc::clone(existing);
        }
        if let Some((existing, _)) = self.or.get_key_value(name) {
            return Arc::clone(existing);
        }
        Arc::from(name)
    }

    /// A timestamp too far ahead of the wall clock is refused before it can touch the clock.
    fn admit(&mut self, timestamp: &Timestamp, wall_ms: u64) -> Result<(), OpOutcome> {
        if timestamp.millis > wall_ms.saturating_add(CLOCK_DRIFT_MS_MAX) {
            return Err(OpOutcome::Rejected { reason: "timestamp too far in the future".into(), code: 400 });
        }
        // Drift was checked above with the same bound, so the update cannot fail.
        let _ = self.hlc.update(timestamp, wall_ms);
        Ok(())
    }

    /// Applies one op to this shard's data. The caller routed it here: the op's key belongs to
    /// one of this shard's partitions. Every state change also updates the sync indexes.
    pub fn apply(&mut self, op: ClientOp, wall_ms: u64) -> (OpOutcome, Option<ChangeEvent>) {
        let (outcome, event) = self.apply_op(op, wall_ms);
        if let Some(event) = &event {
            self.track_sync(event, wall_ms);
        }
        (outcome, event)
    }

    fn apply_op(&mut self, op: ClientOp, wall_ms: u64) -> (OpOutcome, Option<ChangeEvent>) {
        let ClientOp { map_name, key, kind, .. } = op;
        match kind {
            OpKind::Put(record) | OpKind::Remove { record: Some(record) } => {
                if let Err(rejected) = self.admit(&record.timestamp, wall_ms) {
                    return (rejected, None);
                }
                self.merge_lww(&map_name, key, record, wall_ms)
            }
            OpKind::Remove { record: None } => {
                let record = LwwRecord { value: None, timestamp: self.hlc.now(wall_ms), ttl_ms: None };
                self.merge_lww(&map_name, key, record, wall_ms)
            }
            OpKind::OrAdd(record) => {
                if let Err(rejected) = self.admit(&record.timestamp, wall_ms) {
                    return (rejected, None);
                }
                let map = self.map_name(&map_name);
                let or_map = self.or.entry(Arc::clone(&map)).or_default();
                match or_map.add(&key, record.clone()) {
                    OrChange::Changed => (
                        OpOutcome::Applied,
                        Some(ChangeEvent { map, key, change: Change::OrAdd(record), previous: None }),
                    ),
                    OrChange::Unchanged => (OpOutcome::Unchanged, None),
                }
            }
            OpKind::OrRemove { tag } => {
                let map = self.map_name(&map_name);
                let or_map = self.or.entry(Arc::clone(&map)).or_default();
                match or_map.remove(&key, &tag) {
                    OrChange::Changed => (
                        OpOutcome::Applied,
                        Some(ChangeEvent { map, key, change: Change::OrRemove { tag }, previous: None }),
                    ),
                    OrChange::Unchanged => (OpOutcome::Unchanged, None),
                }
            }
            OpKind::Noop => (OpOutcome::Unchanged, None),
        }
    }

    fn merge_lww(
        &mut self,
        map_name: &str,
        key: CompactString,
        record: LwwRecord,
        wall_ms: u64,
    ) -> (OpOutcome, Option<ChangeEvent>) {
        let map = self.map_name(map_name);
        // The map exists after its first write: found by name, without the name's reference
        // count going up and down for an `entry`.
        let lww = match self.lww.get_mut(map_name) {
            Some(lww) => lww,
            None => self.lww.entry(Arc::clone(&map)).or_default(),
        };
        match lww.merge(&key, record.clone()) {
            LwwMerge::Applied { previous } => {
                if let Some(index) = self.search.get_mut(&map) {
                    index_record(index, &key, &record, wall_ms);
                }
                let change = if record.is_tombstone() { Change::Remove(record) } else { Change::Put(record) };
                (OpOutcome::Applied, Some(ChangeEvent { map, key, change, previous }))
            }
            LwwMerge::Unchanged => (OpOutcome::Unchanged, None),
        }
    }

    /// Appends to `rows` the best rows of LWW map `map` for `query`: live records that match,
    /// lie after `cursor`, at most one more than the query's page size. The union of every
    /// shard's rows therefore holds the node-wide page and tells whether more follow.
    pub fn snapshot(&self, map: &str, query: &Query, cursor: &ResolvedCursor, now_ms: u64, rows: &mut Vec<Row>) {
        let Some(lww) = self.lww.get(map) else { return };
        let keep = query.page_size().min(QUERY_SNAPSHOT_ROWS_MAX) + 1;
        let mut found: Vec<Row> = Vec::new();
        for (key, record) in lww.iter() {
            let Some(bytes) = record.value.as_ref().filter(|_| !record.is_expired(now_ms)) else { continue };
            // Values were decoded once on the way in, so this cannot fail; skip defensively.
            let Ok(value) = rmpv::decode::read_value(&mut &bytes[..]) else { continue };
            if query.matches(&value) && query.is_after_cursor(cursor, key, &value) {
                found.push((key.to_string(), value));
                // Keep the buffer near the page size while scanning a large map.
                if found.len() >= keep * 2 {
                    keep_best(query, &mut found, keep);
                }
            }
        }
        keep_best(query, &mut found, keep);
        rows.append(&mut found);
    }

    /// This shard's share of `map`'s search statistics for `terms`. The first search of a map
    /// builds its index from the records this shard holds; from then on writes keep it current.
    pub fn search_stats(&mut self, map: &str, terms: &[String], wall_ms: u64) -> TermStats {
        let name = self.map_name(map);
        if !self.search.contains_key(map) {
            let mut index = SearchIndex::default();
            if let Some(lww) = self.lww.get(map) {
                for (key, record) in lww.iter() {
                    index_record(&mut index, key, record, wall_ms);
                }
            }
            self.search.insert(name, index);
        }
        self.search[map].stats(terms)
    }

    /// This shard's best hits for `terms` scored with the global `stats`.
    pub fn search_top(&self, map: &str, terms: &[String], stats: &TermStats, limit: usize, min_score: f64) -> Vec<Hit> {
        self.search.get(map).map(|index| index.top(terms, stats, limit, min_score)).unwrap_or_default()
    }

    pub fn lww_map(&self, map: &str) -> Option<&LwwMap> {
        self.lww.get(map)
    }

    pub fn or_map(&self, map: &str) -> Option<&OrMap> {
        self.or.get(map)
    }

    /// Live keys over all maps, for statistics.
    pub fn record_count(&self) -> usize {
        self.lww.values().map(LwwMap::len).sum()
    }

    /// Key and value bytes held over all maps (`LwwMap::bytes`, `OrMap::bytes`), for statistics.
    pub fn data_bytes(&self) -> usize {
        self.lww.values().map(LwwMap::bytes).sum::<usize>() + self.or.values().map(OrMap::bytes).sum::<usize>()
    }

    /// Installs one record recovered from this shard's log, as `apply` would merge it but
    /// without an event, without the drift check and without updating the sync indexes (the record was admitted when it was
    /// written; refusing it now would lose it). Feeds the clock, so server timestamps stay
    /// ahead of everything stored. Returns whether the record is now the current state (a
    /// record that loses its merge is superseded on disk too).
    pub fn install(&mut self, map_name: &str, key: &str, change: Change, wall_ms: u64) -> bool {
        if let Change::Put(record) | Change::Remove(record) = &change {
            // A clock far behind the stored timestamp only means later server stamps lag it.
            let _ = self.hlc.update(&record.timestamp, wall_ms);
        }
        let map = self.map_name(map_name);
        let event = match change {
            Change::Put(record) | Change::Remove(record) => self.merge_lww(&map, key.into(), record, wall_ms).1,
            Change::OrAdd(record) => {
                let _ = self.hlc.update(&record.timestamp, wall_ms);
                let changed = self.or.entry(Arc::clone(&map)).or_default().add(key, record.clone()).is_changed();
                changed.then(|| ChangeEvent { map, key: key.into(), change: Change::OrAdd(record), previous: None })
            }
            Change::OrRemove { tag } => {
                let changed = self.or.entry(Arc::clone(&map)).or_default().remove(key, &tag).is_changed();
                changed.then(|| ChangeEvent { map, key: key.into(), change: Change::OrRemove { tag }, previous: None })
            }
        };
        // The sync indexes are not kept per record here: most recovered records are superseded
        // by later ones, so the caller rebuilds them once from the final state
        // (`begin_sync_rebuild`), which walks each live key once.
        event.is_some()
    }

    /// Whether the LWW record of `map`/`key` is the one stamped `timestamp` (and a tombstone
    /// exactly when `tombstone`): compaction keeps a stored record only while it is current.
    pub fn lww_is_current(&self, map: &str, key: &str, timestamp: (u64, u32, &str), tombstone: bool) -> bool {
        let Some(record) = self.lww.get(map).and_then(|records| records.get(key)) else { return false };
        let (millis, counter, node_id) = timestamp;
        record.is_tombstone() == tombstone
            && record.timestamp.millis == millis
            && record.timestamp.counter == counter
            && record.timestamp.node_id == node_id
    }

    /// Whether the OR record of `map`/`key` with `tag` is present (not removed) and stamped
    /// `timestamp`.
    pub fn or_is_current(&self, map: &str, key: &str, tag: &str, timestamp: (u64, u32, &str)) -> bool {
        let Some(record) = self.or.get(map).and_then(|or_map| or_map.get(key, tag)) else { return false };
        let (millis, counter, node_id) = timestamp;
        record.timestamp.millis == millis && record.timestamp.counter == counter && record.timestamp.node_id == node_id
    }
}

/// Keeps the `keep` best rows in query order (in no particular order).
fn keep_best(query: &Query, rows: &mut Vec<Row>, keep: usize) {
    if rows.len() > keep {
        rows.select_nth_unstable_by(keep - 1, |a, b| query.compare((&a.0, &a.1), (&b.0, &b.1)));
        rows.truncate(keep);
    }
}

/// Puts a record's live value into a search index (or takes the key out).
fn index_record(index: &mut SearchIndex, key: &str, record: &LwwRecord, wall_ms: u64) {
    let live = record.value.as_ref().filter(|_| record.is_live(wall_ms));
    match live.and_then(|bytes| rmpv::decode::read_value(&mut &bytes[..]).ok().map(|value| (value, bytes))) {
        Some((value, bytes)) => index.update(key, Some((&value, bytes))),
        None => index.update(key, None),
    }
}
