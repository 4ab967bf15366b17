//! The record index of one shard's log: for each record key (LWW map key, OR tag, counter), the
//! segment holding its current record and how many of its records are on disk. It feeds the
//! live-byte accounting (`SegmentTable`) that picks compaction victims, and tells compaction
//! when a tombstone is the last record of its key on disk (only then may it go: an older record
//! left behind would come back at the next recovery). Lives on the log's shard.
//!
//! Keys are 128-bit hashes, so the index costs about 40 bytes per key and no key strings.
//! It is an estimate where it can afford to be: whether a record is copied is decided against
//! `ShardData` when compaction reaches it.

use ahash::RandomState;
use shardgrid_storage::compaction::SegmentTable;
use shardgrid_storage::{RecordKind, SegmentId};

use crate::table::GrowingMap;

/// The hash identifying one record key.
pub type KeyHash = u128;

/// One key's current record.
#[derive(Clone, Copy, Debug)]
struct KeyEntry {
    segment: SegmentId,
    framed: u32,
    tombstone: bool,
    /// Records of this key on disk, current and superseded.
    copies: u32,
}

/// See the module doc.
pub struct KeyIndex {
    entries: GrowingMap<KeyHash, KeyEntry>,
    low: RandomState,
    high: RandomState,
}

impl Default for KeyIndex {
    fn default() -> Self {
        // Fixed seeds: the index never leaves the process, but a run is easier to reason about
        // when it hashes the same way every time.
        KeyIndex {
            entries: GrowingMap::default(),
            low: RandomState::with_seeds(0x5348_4152, 0x4447_5249, 0x445f_4b45, 0x595f_4c4f),
            high: RandomState::with_seeds(0x5348_4152, 0x4447_5249, 0x445f_4b45, 0x595f_4849),
        }
    }
}

impl KeyIndex {
    /// The key of a record: LWW and counter records by map and key, OR records by map, key and
    /// tag (each tag is its own record).
    pub fn hash(&self, kind: RecordKind, map: &str, key: &str, tag: &str) -> KeyHash {
        let class: u8 = match kind {
            RecordKind::LwwPut | RecordKind::LwwTombstone => 1,
            RecordKind::OrAdd | RecordKind::OrRemove => 2,
            RecordKind::CounterState => 3,
            RecordKind::Metadata => 4,
        };
        let item = (class, map, key, tag);
        (u128::from(self.high.hash_one(item)) << 64) | u128::from(self.low.hash_one(item))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A record of key `hash` now lies in `segment`. `current`: it is the key's current state
    /// (it supersedes the previous current record); otherwise it is dead on arrival.
    pub fn record(
        &mut self,
        table: &mut SegmentTable,
        hash: KeyHash,
        segment: SegmentId,
        framed: u64,
        tombstone_millis: Option<u64>,
        current: bool,
    ) {
        table.add(segment, framed, tombstone_millis);
        let tombstone = tombstone_millis.is_some();
        match self.entries.get_mut(&hash) {
            Some(entry) if current => {
                table.kill(entry.segment, u64::from(entry.framed), entry.tombstone);
                *entry = KeyEntry { segment, framed: framed as u32, tombstone, copies: entry.copies + 1 };
            }
            Some(entry) => {
                table.kill(segment, framed, tombstone);
                entry.copies += 1;
            }
            None if current => {
                self.entries.insert(hash, KeyEntry { segment, framed: framed as u32, tombstone, copies: 1 });
            }
            None => table.kill(segment, framed, tombstone),
        }
    }

    /// A record that is always kept (OR removes, counter and metadata records) lies in `segment`.
    pub fn record_kept(&mut self, table: &mut SegmentTable, segment: SegmentId, framed: u64) {
        table.add(segment, framed, None);
    }

    /// Key `hash`'s current record stopped being current with no record of its own (an OR
    /// tag was removed): it is dead.
    pub fn kill(&mut self, table: &mut SegmentTable, hash: KeyHash) {
        if let Some(entry) = self.entries.remove(&hash) {
            table.kill(entry.segment, u64::from(entry.framed), entry.tombstone);
        }
    }

    /// Compaction copied the current record of `hash` out of `victim` into `segment`.
    pub fn moved(
        &mut self,
        table: &mut SegmentTable,
        hash: KeyHash,
        victim: SegmentId,
        segment: SegmentId,
        framed: u64,
        tombstone_millis: Option<u64>,
    ) {
        table.add(segment, framed, tombstone_millis);
        match self.entries.get_mut(&hash) {
            Some(entry) if entry.segment == victim => entry.segment = segment,
            Some(entry) => {
                // A second copy of the current record (the first lies elsewhere).
                table.kill(segment, framed, tombstone_millis.is_some());
                entry.copies += 1;
            }
            None => table.kill(segment, framed, tombstone_millis.is_some()),
        }
    }

    /// Compaction dropped a record of `hash` from `victim` that is not current. Returns whether
    /// the key's entry points into `victim` (then it may refer to this very record, if the
    /// index could not see it stop being current: the caller calls `forget_if_in` once the
    /// whole victim is handled).
    pub fn dropped(&mut self, hash: KeyHash, victim: SegmentId) -> bool {
        match self.entries.get_mut(&hash) {
            Some(entry) => {
                entry.copies = entry.copies.saturating_sub(1);
                entry.segment == victim
            }
            None => false,
        }
    }

    /// Forgets `hash` if its entry still points into `victim` after every current record there
    /// was moved out: it referred to a dropped record, and must never point into a deleted
    /// segment.
    pub fn forget_if_in(&mut self, hash: KeyHash, victim: SegmentId) {
        if self.entries.get(&hash).is_some_and(|entry| entry.segment == victim) {
            self.entries.remove(&hash);
        }
    }

    /// Whether the tombstone of `hash` in `victim` is the only record of its key on disk; if
    /// so it is forgotten here (the caller drops it).
    pub fn drop_last_tombstone(&mut self, hash: KeyHash, victim: SegmentId) -> bool {
        match self.entries.get(&hash) {
            Some(entry) if entry.tombstone && entry.segment == victim && entry.copies == 1 => {
                self.entries.remove(&hash);
                true
            }
            _ => false,
        }
    }
}
