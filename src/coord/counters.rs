//! The PN counters of one shard (PROTOCOL §4.8, §6.5): per name, the merged state and the
//! connections subscribed to its updates. Lives on the counter name's owner shard.
//!
//! Sans-IO: a `COUNTER_REQUEST` subscribes and returns the state; a `COUNTER_SYNC` merges,
//! subscribes the sender and returns the merged state plus the other subscribers to push a
//! `COUNTER_UPDATE` to. A sync that changes nothing (DECISIONS §2.1: a re-sent state) sends
//! the sender its `COUNTER_UPDATE` but pushes nothing to others: they already hold that state.
//! Wire spellings are the protocol layer's concern; invalid totals never reach this table
//! (the decoder refuses them, and `PnCounter::merge` ignores them besides).

use std::sync::Arc;

use ahash::{AHashMap, AHashSet};

use crate::crdt::PnCounter;
use crate::model::PnCounterState;
use crate::shard::ConnRef;

struct CounterEntry {
    counter: PnCounter,
    subscribers: AHashSet<ConnRef>,
}

/// What a `COUNTER_SYNC` did.
#[derive(Debug, PartialEq)]
pub struct SyncOutcome {
    /// The merged state, for the sender's `COUNTER_UPDATE`.
    pub state: PnCounterState,
    /// The other subscribers to push a `COUNTER_UPDATE` to; empty when nothing changed.
    pub others: Vec<ConnRef>,
}

/// See the module doc. Lives on the counter names' owner shard.
#[derive(Default)]
pub struct CounterTable {
    counters: AHashMap<Arc<str>, CounterEntry>,
}

impl CounterTable {
    fn entry(&mut self, name: &str) -> &mut CounterEntry {
        if !self.counters.contains_key(name) {
            let entry = CounterEntry { counter: PnCounter::new(), subscribers: AHashSet::new() };
            self.counters.insert(Arc::from(name), entry);
        }
        self.counters.get_mut(name).expect("inserted above")
    }

    /// `COUNTER_REQUEST`: subscribes `conn` and returns the current state (empty for a new
    /// counter).
    pub fn request(&mut self, name: &str, conn: ConnRef) -> PnCounterState {
        let entry = self.entry(name);
        entry.subscribers.insert(conn);
        entry.counter.state().clone()
    }

    /// `COUNTER_SYNC`: merges `state`, subscribes `conn`, and says whom to tell.
    pub fn sync(&mut self, name: &str, state: &PnCounterState, conn: ConnRef) -> SyncOutcome {
        let entry = self.entry(name);
        let changed = entry.counter.merge(state);
        entry.subscribers.insert(conn);
        let mut others: Vec<ConnRef> = if changed {
            entry.subscribers.iter().copied().filter(|subscriber| *subscriber != conn).collect()
        } else {
            Vec::new()
        };
        // One push per shard follows; sorting groups them and keeps the order reproducible.
        others.sort_by_key(|subscriber| (subscriber.shard, subscriber.conn));
        SyncOutcome { state: entry.counter.state().clone(), others }
    }

    /// Ends `conn`'s subscription to `name` (on close). A counter with no state and no
    /// subscriber is forgotten: it is indistinguishable from one never asked for.
    pub fn unsubscribe(&mut self, name: &str, conn: ConnRef) {
        let Some(entry) = self.counters.get_mut(name) else { return };
        entry.subscribers.remove(&conn);
        if entry.subscribers.is_empty() && entry.counter.state() == &PnCounterState::default() {
            self.counters.remove(name);
        }
    }

    pub fn counter_count(&self) -> usize {
        self.counters.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgrid_shards::ShardId;

    fn conn(shard: u16, conn: u64) -> ConnRef {
        ConnRef { shard: ShardId(shard), conn }
    }

    fn state(positive: &[(&str, f64)], negative: &[(&str, f64)]) -> PnCounterState {
        PnCounterState {
            positive: positive.iter().map(|(node, total)| (node.to_string(), *total)).collect(),
            negative: negative.iter().map(|(node, total)| (node.to_string(), *total)).collect(),
        }
    }

    // Goal: request subscribes and reports; a changing sync tells every other subscriber, an
    // unchanged one only answers the sender. Method: three connections on two shards.
    #[test]
    fn sync_merges_and_names_the_other_subscribers() {
        let mut table = CounterTable::default();
        assert_eq!(table.request("likes", conn(0, 1)), PnCounterState::default());
        table.request("likes", conn(1, 2));
        let outcome = table.sync("likes", &state(&[("a", 3.0)], &[("b", 1.0)]), conn(1, 3));
        assert_eq!(outcome.state, state(&[("a", 3.0)], &[("b", 1.0)]));
        assert_eq!(outcome.others, vec![conn(0, 1), conn(1, 2)]);
        // Re-sent (and older) totals change nothing: no pushes, the merged state answered.
        let outcome = table.sync("likes", &state(&[("a", 2.0)], &[]), conn(0, 1));
        assert_eq!(outcome.state, state(&[("a", 3.0)], &[("b", 1.0)]));
        assert!(outcome.others.is_empty());
        // The syncing sender is now subscribed too.
        let outcome = table.sync("likes", &state(&[("c", 1.0)], &[]), conn(0, 1));
        assert_eq!(outcome.others, vec![conn(1, 2), conn(1, 3)]);
    }

    // Goal: unsubscribing stops pushes, and empty unfollowed counters are forgotten while
    // counters with state are kept. Method: subscribe, unsubscribe, inspect.
    #[test]
    fn unsubscribe_forgets_only_empty_counters() {
        let mut table = CounterTable::default();
        table.request("empty", conn(0, 1));
        table.sync("kept", &state(&[("a", 1.0)], &[]), conn(0, 1));
        table.unsubscribe("empty", conn(0, 1));
        table.unsubscribe("kept", conn(0, 1));
        table.unsubscribe("never", conn(0, 1));
        assert_eq!(table.counter_count(), 1);
        assert_eq!(table.request("kept", conn(1, 9)), state(&[("a", 1.0)], &[]));
        let outcome = table.sync("kept", &state(&[("a", 2.0)], &[]), conn(1, 9));
        assert!(outcome.others.is_empty(), "the unsubscribed connection gets nothing");
    }
}
