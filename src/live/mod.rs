//! shardgrid::live: live queries across shards, without IO.
//!
//! A `QUERY_SUB` is registered on every shard (a map spans all partitions). Each owner keeps a
//! `SubscriptionIndex` and evaluates its own writes against it, telling the subscriber's shard
//! `Upsert`/`Gone` per matching subscription, stamped with the owner's write sequence. The
//! subscriber's shard keeps one `LiveQuery` per subscription: it merges those changes into the
//! result set (refilling a limited window from every shard when a row leaves it) and decides
//! the `QUERY_UPDATE`s (`ENTER`/`UPDATE`/`LEAVE`). `node` moves the messages.

pub mod gate;
pub mod index;
pub mod window;

#[cfg(test)]
mod simulation;

use shardgrid_shards::ShardId;

use crate::model::{LwwRecord, ValueBytes};
use crate::shard::{Change, ChangeEvent};
use index::SubscriptionIndex;

/// A live subscription anywhere on the node: the subscriber's shard and its number there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey {
    pub shard: ShardId,
    pub local: u64,
}

/// What an owner tells a subscriber about one key, after one of its writes.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveChange {
    /// The key's new value matches (and lies after the subscription's cursor).
    Upsert { key: String, value: ValueBytes },
    /// The key matched before the write and does not now.
    Gone { key: String },
}

impl LiveChange {
    pub fn key(&self) -> &str {
        match self {
            LiveChange::Upsert { key, .. } | LiveChange::Gone { key } => key,
        }
    }
}

/// One change for one subscription, as it travels to the subscriber's shard.
#[derive(Clone, Debug, PartialEq)]
pub struct SubChange {
    pub sub: SubKey,
    /// The owner's write sequence when it made the change (see `LiveQuery`).
    pub seq: u64,
    pub owner: ShardId,
    pub change: LiveChange,
}

/// A `QUERY_UPDATE` to send: the subscriber's view of one key changed.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryUpdate {
    Enter { key: String, value: ValueBytes },
    Update { key: String, value: ValueBytes },
    Leave { key: String },
}

/// A record's value if it is live at `now_ms`, decoded and as stored.
pub fn live_value(record: Option<&LwwRecord>, now_ms: u64) -> Option<(rmpv::Value, ValueBytes)> {
    let record = record.filter(|record| record.is_live(now_ms))?;
    let bytes = record.value.clone()?;
    // Values were validated as msgpack when they were written.
    let value = rmpv::decode::read_value(&mut &bytes[..]).ok()?;
    Some((value, bytes))
}

/// Evaluates one applied LWW change against the owner's subscriptions (OR-map changes do not
/// feed live queries) and appends a change per subscription whose view of the key changed.
pub fn evaluate_event(
    index: &SubscriptionIndex,
    event: &ChangeEvent,
    now_ms: u64,
    changes: &mut Vec<(SubKey, LiveChange)>,
) {
    if !index.has_map(&event.map) {
        return;
    }
    let record = match &event.change {
        Change::Put(record) | Change::Remove(record) => record,
        Change::OrAdd(_) | Change::OrRemove { .. } => return,
    };
    let before = live_value(event.previous.as_ref(), now_ms);
    let after = live_value(Some(record), now_ms);
    index.evaluate(
        &event.map,
        &event.key,
        before.as_ref().map(|(value, _)| value),
        after.as_ref().map(|(value, bytes)| (value, bytes)),
        changes,
    );
}
