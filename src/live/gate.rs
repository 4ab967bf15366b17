//! The snapshot gate shared by every subscription coordinator on the subscriber's shard (live
//! queries and live searches): changes from owner shards pass through it. While a snapshot of
//! every shard is in flight, changes are buffered; when it lands, changes the snapshot already
//! reflects (sequence at or below the one each owner reported with its answer) are dropped and
//! the rest replayed. Owners stamp changes with their write sequence, and changes from one owner
//! arrive in order, so this is exact whichever order replies and changes arrive in.

use shardgrid_shards::ShardId;

/// See the module doc. `C` is the coordinator's change type.
pub struct SnapshotGate<C> {
    /// Per owner shard: the highest write sequence already reflected.
    applied_seq: Vec<u64>,
    /// `Some` while a snapshot is in flight: the changes that arrived meanwhile.
    buffered: Option<Vec<(ShardId, u64, C)>>,
}

impl<C> SnapshotGate<C> {
    /// A gate whose first snapshot is in flight.
    pub fn new(shard_count: usize) -> SnapshotGate<C> {
        SnapshotGate { applied_seq: vec![0; shard_count], buffered: Some(Vec::new()) }
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
        let applied = &mut self.applied_seq[owner.index()];
        if seq <= *applied {
            return None; // Already reflected in the last snapshot.
        }
        *applied = seq;
        Some(change)
    }

    /// The snapshot landed with each owner's sequence: opens the gate and returns the buffered
    /// changes, to be offered to `admit` again in order (a caller that starts another snapshot
    /// meanwhile gets the rest buffered again).
    pub fn finish(&mut self, seqs: &[u64]) -> Vec<(ShardId, u64, C)> {
        assert_eq!(seqs.len(), self.applied_seq.len(), "one sequence per shard");
        for (applied, seq) in self.applied_seq.iter_mut().zip(seqs) {
            *applied = (*applied).max(*seq);
        }
        self.buffered.take().unwrap_or_default()
    }
}
