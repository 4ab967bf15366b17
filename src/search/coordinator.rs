//! One live search on the subscriber's shard (`SEARCH_SUB`): the set of keys the subscriber
//! has, and the `SEARCH_UPDATE`s owner changes imply (PROTOCOL §6.13: a matching document is
//! `UPDATE` if already in the set, else `ENTER`; a document that stops matching `LEAVE`s).
//! Changes pass the same `SnapshotGate` as live queries, so updates that race the initial
//! `SEARCH_RESP` are neither lost nor doubled.

use ahash::AHashSet;
use shardgrid_shards::ShardId;

use super::subscriptions::SearchChange;
use super::Hit;
use crate::live::gate::SnapshotGate;
use crate::protocol::ChangeType;

/// A `SEARCH_UPDATE` to send.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchUpdate {
    pub change_type: ChangeType,
    /// For `LEAVE`: score 0, no terms, no value (PROTOCOL §6.13).
    pub hit: Hit,
}

/// See the module doc. Lives on the subscriber's shard.
pub struct LiveSearch {
    gate: SnapshotGate<SearchChange>,
    keys: AHashSet<String>,
}

impl LiveSearch {
    pub fn new(shard_count: usize) -> LiveSearch {
        LiveSearch { gate: SnapshotGate::new(shard_count), keys: AHashSet::new() }
    }

    /// Installs the initial results (sent as `SEARCH_RESP`) and replays changes that raced them.
    pub fn on_snapshot(&mut self, hits: &[Hit], seqs: &[u64]) -> Vec<SearchUpdate> {
        let buffered = self.gate.finish(seqs);
        self.keys = hits.iter().map(|hit| hit.key.clone()).collect();
        buffered.into_iter().filter_map(|(owner, seq, change)| self.on_change(owner, seq, change)).collect()
    }

    pub fn on_change(&mut self, owner: ShardId, seq: u64, change: SearchChange) -> Option<SearchUpdate> {
        match self.gate.admit(owner, seq, change)? {
            SearchChange::Upsert { key, value, score, matched_terms } => {
                let change_type = if self.keys.insert(key.clone()) { ChangeType::Enter } else { ChangeType::Update };
                Some(SearchUpdate { change_type, hit: Hit { key, score, matched_terms, value } })
            }
            SearchChange::Gone { key } => self.keys.remove(&key).then(|| SearchUpdate {
                change_type: ChangeType::Leave,
                hit: Hit { key, score: 0.0, matched_terms: Vec::new(), value: crate::model::ValueBytes::from(&[][..]) },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(key: &str) -> SearchChange {
        SearchChange::Upsert { key: key.into(), value: Default::default(), score: 1.0, matched_terms: vec!["t".into()] }
    }

    // Goal: ENTER/UPDATE/LEAVE follow membership, and a change raced by the snapshot (seq at or
    // below the owner's) is not applied twice.
    #[test]
    fn membership_drives_change_types() {
        let mut live = LiveSearch::new(1);
        assert_eq!(live.on_change(ShardId(0), 3, upsert("a")), None, "buffered");
        let hit = Hit { key: "a".into(), score: 1.0, matched_terms: vec![], value: Default::default() };
        assert!(live.on_snapshot(&[hit], &[3]).is_empty(), "reflected in the snapshot");
        assert_eq!(live.on_change(ShardId(0), 4, upsert("a")).unwrap().change_type, ChangeType::Update);
        assert_eq!(live.on_change(ShardId(0), 5, upsert("b")).unwrap().change_type, ChangeType::Enter);
        assert_eq!(
            live.on_change(ShardId(0), 6, SearchChange::Gone { key: "a".into() }).unwrap().change_type,
            ChangeType::Leave
        );
        assert_eq!(live.on_change(ShardId(0), 7, SearchChange::Gone { key: "zz".into() }), None);
    }
}
