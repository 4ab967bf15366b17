//! The snapshot gate shared by every subscription coordinator on the subscriber's shard (live
//! queries and live searches): changes from owner shards pass through it. While a snapshot of
//! every shard is in flight, changes are buffered; when it lands, changes the snapshot already
//! reflects (sequence at or below the one each owner reported with its answer) are dropped and
//! the rest replayed. Owners stamp changes with their write sequence (one per applied batch, so
//! a batch's changes share it), and changes from one owner arrive in order, so this is exact
//! whichever order replies and changes arrive in.

use shardgrid_shards::ShardId;

/// See the module doc. `C` is the coordinator's change type.
pub struct SnapshotGate<C> {
    /// Per owner shard: the write sequence the last snapshot reflects. Only snapshots raise
    /// it: the changes of one batch share a sequence, and every one of them is new.
    reflected_seq: Vec<u64>,
    /// `Some` while a snapshot is in flight: the changes that arrived meanwhile.
    buffered: Option<Vec<(ShardId, u64, C)>>,
}

impl<C> SnapshotGate<C> {
    /// A gate whose first snapshot is in flight.
    pub fn new(shard_count: usize) -> SnapshotGate<C> {
        SnapshotGate { reflected_seq: vec![0; shard_count], buffered: Some(Vec::new()) }
    }

    pub fn is_snapshotting(&self) -> bool {
        self.buffered.is_some()
    }

    /// A new snapshot is in flight: buffer from now on.
    pub fn begin(&mut self) {
        if self.buffered.is_none() {
            self.buffered = Some(Vec::new());
        }
    }

    /// Lets a change through if it is new and no snapshot is in flight; buffers or drops it
    /// otherwise.
    pub fn admit(&mut self, owner: ShardId, seq: u64, change: C) -> Option<C> {
        if let Some(buffered) = &mut self.buffered {
            buffered.push((owner, seq, change));
            return None;
        }
        if seq <= self.reflected_seq[owner.index()] {
            return None; // Already reflected in the last snapshot.
        }
        Some(change)
    }

    /// The snapshot landed with each owner's sequence: opens the gate and returns the buffered
    /// changes, to be offered to `admit` again in order (a caller that starts another snapshot
    /// meanwhile gets the rest buffered again).
    pub fn finish(&mut self, seqs: &[u64]) -> Vec<(ShardId, u64, C)> {
        assert_eq!(seqs.len(), self.reflected_seq.len(), "one sequence per shard");
        for (reflected, seq) in self.reflected_seq.iter_mut().zip(seqs) {
            *reflected = (*reflected).max(*seq);
        }
        self.buffered.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every change of one batch passes: they share the owner's write sequence. Regression: the
    // gate used to let only the first change of each batch through, so a live query saw one
    // update per owner per OP_BATCH.
    #[test]
    fn changes_sharing_a_sequence_all_pass() {
        let mut gate = SnapshotGate::new(2);
        assert!(gate.finish(&[0, 0]).is_empty());
        for change in ["a", "b", "c"] {
            assert_eq!(gate.admit(ShardId(1), 1, change), Some(change));
        }
        assert_eq!(gate.admit(ShardId(0), 1, "d"), Some("d"));
        assert_eq!(gate.admit(ShardId(1), 2, "e"), Some("e"));
    }

    // Changes a snapshot reflects are dropped, all of a batch's included; later ones pass.
    #[test]
    fn changes_at_or_below_the_snapshot_are_dropped() {
        let mut gate = SnapshotGate::new(1);
        for (seq, change) in [(3, "a"), (3, "b"), (4, "c"), (4, "d"), (5, "e")] {
            assert_eq!(gate.admit(ShardId(0), seq, change), None, "buffered while the snapshot is in flight");
        }
        let replay: Vec<_> =
            gate.finish(&[4]).into_iter().filter_map(|(owner, seq, c)| gate.admit(owner, seq, c)).collect();
        assert_eq!(replay, ["e"]);
        assert_eq!(gate.admit(ShardId(0), 5, "f"), Some("f"), "the rest of batch 5");
    }
}
