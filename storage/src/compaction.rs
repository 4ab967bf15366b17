//! Compaction planning: per-segment accounting of live bytes, and the choice of the next
//! segment to rewrite. Lives on the log's shard.
//!
//! The caller says which records are live (it knows the merge rules; this crate does not):
//! each record appended or recovered is `added` to its segment's stats, and `killed` when a
//! later record supersedes it. A segment is rewritten when the bytes worth keeping fall below a
//! fraction of its size. Tombstones are kept while younger than the grace period (a late write
//! older than the tombstone must still lose to it); past it they count as reclaimable, and the
//! caller drops them during the rewrite when no older copy of their key is left on disk.
//!
//! The estimate only chooses victims; whether a record is copied is decided against the
//! shard's data when the rewrite reaches it.

use std::collections::BTreeMap;

use crate::SegmentId;

/// Accounting of one segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Framed bytes of every record in the segment.
    pub record_bytes: u64,
    /// Framed bytes of the records still live (tombstones included).
    pub live_bytes: u64,
    /// Framed bytes of the live tombstones.
    pub tombstone_bytes: u64,
    /// The newest timestamp (ms) of any tombstone ever added here: when it is past the grace
    /// period, every tombstone here is.
    pub tombstone_millis_max: u64,
}

impl SegmentStats {
    /// Bytes worth keeping at `now_ms`: live records, less tombstones all past their grace.
    pub fn keep_bytes(&self, now_ms: u64, grace_ms: u64) -> u64 {
        let tombstones_expired =
            self.tombstone_bytes > 0 && self.tombstone_millis_max.saturating_add(grace_ms) < now_ms;
        if tombstones_expired {
            self.live_bytes - self.tombstone_bytes
        } else {
            self.live_bytes
        }
    }
}

/// When to rewrite a segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionPolicy {
    /// Rewrite a segment once the bytes worth keeping are below this fraction of its size.
    pub live_fraction_min: f64,
    /// Tombstones younger than this (by their timestamp) are kept.
    pub tombstone_grace_ms: u64,
}

/// Live accounting of every segment of one shard's log.
#[derive(Clone, Debug, Default)]
pub struct SegmentTable {
    segments: BTreeMap<SegmentId, SegmentStats>,
}

impl SegmentTable {
    /// A record of `framed` bytes now lies in `segment`, live.
    pub fn add(&mut self, segment: SegmentId, framed: u64, tombstone_millis: Option<u64>) {
        let stats = self.segments.entry(segment).or_default();
        stats.record_bytes += framed;
        stats.live_bytes += framed;
        if let Some(millis) = tombstone_millis {
            stats.tombstone_bytes += framed;
            stats.tombstone_millis_max = stats.tombstone_millis_max.max(millis);
        }
    }

    /// A record of `framed` bytes in `segment` is no longer live.
    pub fn kill(&mut self, segment: SegmentId, framed: u64, tombstone: bool) {
        let stats = self.segments.get_mut(&segment).unwrap_or_else(|| panic!("kill in unknown segment {segment}"));
        assert!(stats.live_bytes >= framed, "segment {segment}: killing more than is live");
        stats.live_bytes -= framed;
        if tombstone {
            assert!(stats.tombstone_bytes >= framed, "segment {segment}: killing more tombstone bytes than are live");
            stats.tombstone_bytes -= framed;
        }
    }

    /// Forgets a segment that was deleted.
    pub fn remove(&mut self, segment: SegmentId) {
        self.segments.remove(&segment);
    }

    pub fn get(&self, segment: SegmentId) -> Option<&SegmentStats> {
        self.segments.get(&segment)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SegmentId, &SegmentStats)> + '_ {
        self.segments.iter().map(|(segment, stats)| (*segment, stats))
    }

    /// The sealed segment (older than `active`) with the smallest fraction worth keeping,
    /// if that fraction is below the policy's minimum. Ties go to the oldest.
    pub fn pick_victim(
        &self,
        active: SegmentId,
        segment_bytes: u64,
        now_ms: u64,
        policy: CompactionPolicy,
    ) -> Option<SegmentId> {
        let mut best: Option<(SegmentId, f64)> = None;
        for (segment, stats) in self.segments.range(..active) {
            let fraction = stats.keep_bytes(now_ms, policy.tombstone_grace_ms) as f64 / segment_bytes as f64;
            if fraction < policy.live_fraction_min && best.is_none_or(|(_, best_fraction)| fraction < best_fraction) {
                best = Some((*segment, fraction));
            }
        }
        best.map(|(segment, _)| segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CompactionPolicy = CompactionPolicy { live_fraction_min: 0.5, tombstone_grace_ms: 1_000 };

    // Goal: the emptiest sealed segment below the threshold is chosen; the active one never.
    #[test]
    fn picks_the_emptiest_sealed_segment() {
        let mut table = SegmentTable::default();
        for segment in 1..=3 {
            table.add(SegmentId(segment), 1_000, None);
        }
        table.kill(SegmentId(1), 700, false);
        table.kill(SegmentId(2), 900, false);
        table.kill(SegmentId(3), 1_000, false);
        assert_eq!(table.pick_victim(SegmentId(3), 1_000, 0, POLICY), Some(SegmentId(2)));
        assert_eq!(table.pick_victim(SegmentId(1), 1_000, 0, POLICY), None, "nothing sealed");
    }

    // Goal: tombstones count as worth keeping until the newest one in the segment is past
    // the grace period. Method: a segment of tombstones, before and after the grace.
    #[test]
    fn tombstones_past_grace_are_reclaimable() {
        let mut table = SegmentTable::default();
        table.add(SegmentId(1), 800, Some(10_000));
        table.add(SegmentId(1), 200, None);
        assert_eq!(table.pick_victim(SegmentId(2), 1_000, 10_500, POLICY), None, "within grace");
        assert_eq!(table.pick_victim(SegmentId(2), 1_000, 11_001, POLICY), Some(SegmentId(1)));
        table.kill(SegmentId(1), 800, true);
        assert_eq!(table.get(SegmentId(1)).unwrap().tombstone_bytes, 0);
    }
}
