//! One live query's result set on the subscriber's shard, and the `QUERY_UPDATE`s it implies.
//!
//! Owners send `Upsert`/`Gone` per key, each stamped with the owner's write sequence; they pass
//! the `SnapshotGate` (buffered while a snapshot of every shard is in flight — the first one or
//! a refill — and dropped when the snapshot already reflects them).
//!
//! Without a `limit` the result set is the set of matching keys. With a `limit` it is the top-N
//! window in the query's order; every matching row outside it is worse than the window's last
//! row. A row entering displaces the last one; a row leaving (or falling to the last place while
//! rows may exist outside) makes the window refill from every shard (DECISIONS §3.3), and the
//! difference between the old and the new window becomes `ENTER`/`UPDATE`/`LEAVE`.

use std::sync::Arc;

use ahash::AHashSet;
use rmpv::Value;
use shardgrid_shards::ShardId;

use super::gate::SnapshotGate;
use super::{LiveChange, QueryUpdate};
use crate::model::ValueBytes;
use crate::query::{Page, Query};

/// What the subscriber's shard must do after a change.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    pub updates: Vec<QueryUpdate>,
    /// Snapshot every shard again and call `on_snapshot`.
    pub refill: bool,
}

/// A window row: key, decoded value (for ordering), stored bytes (for sending).
type WindowRow = (String, Value, ValueBytes);

enum Rows {
    /// No limit: the keys currently in the subscriber's result set.
    Keys(AHashSet<String>),
    /// A limit: the window in query order, and whether matching rows may exist outside it.
    Window { rows: Vec<WindowRow>, limit: usize, outside: bool },
}

/// See the module doc. Lives on the subscriber's shard.
pub struct LiveQuery {
    query: Arc<Query>,
    rows: Rows,
    gate: SnapshotGate<LiveChange>,
}

fn decode(bytes: &ValueBytes) -> Value {
    // Values were validated as msgpack when they were written.
    rmpv::decode::read_value(&mut &bytes[..]).unwrap_or(Value::Nil)
}

fn encode(value: &Value) -> ValueBytes {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec cannot fail");
    ValueBytes::from(out)
}

impl LiveQuery {
    /// A subscription whose first snapshot is in flight.
    pub fn new(query: Arc<Query>, shard_count: usize) -> LiveQuery {
        let rows = match query.limit() {
            Some(limit) => Rows::Window { rows: Vec::new(), limit, outside: false },
            None => Rows::Keys(AHashSet::new()),
        };
        LiveQuery { query, rows, gate: SnapshotGate::new(shard_count) }
    }

    pub fn is_snapshotting(&self) -> bool {
        self.gate.is_snapshotting()
    }

    /// Marks a refill as started: changes are buffered until `on_snapshot`.
    pub fn begin_refill(&mut self) {
        self.gate.begin();
    }

    /// Installs a snapshot (`page`: the merged page of every shard's rows; `seqs`: each shard's
    /// write sequence when it took its rows). The first snapshot becomes `QUERY_RESP` and
    /// yields no updates of its own; a refill yields the difference from the previous view.
    /// Buffered changes are then replayed.
    pub fn on_snapshot(&mut self, page: &Page, seqs: &[u64], first: bool) -> Reaction {
        let mut reaction = Reaction::default();
        let buffered = self.gate.finish(seqs);
        match &mut self.rows {
            Rows::Keys(keys) => {
                let fresh: AHashSet<String> = page.rows.iter().map(|(key, _)| key.clone()).collect();
                if !first {
                    for (key, value) in &page.rows {
                        let update = if keys.contains(key) {
                            QueryUpdate::Update { key: key.clone(), value: encode(value) }
                        } else {
                            QueryUpdate::Enter { key: key.clone(), value: encode(value) }
                        };
                        reaction.updates.push(update);
                    }
                    reaction.updates.extend(
                        keys.iter()
                            .filter(|key| !fresh.contains(*key))
                            .map(|key| QueryUpdate::Leave { key: key.clone() }),
                    );
                }
                *keys = fresh;
            }
            Rows::Window { rows, outside, .. } => {
                let fresh: Vec<WindowRow> =
                    page.rows.iter().map(|(key, value)| (key.clone(), value.clone(), encode(value))).collect();
                if !first {
                    for (key, _, _) in
                        rows.iter().filter(|(key, _, _)| !fresh.iter().any(|(fresh_key, _, _)| fresh_key == key))
                    {
                        reaction.updates.push(QueryUpdate::Leave { key: key.clone() });
                    }
                    for (key, value, bytes) in &fresh {
                        match rows.iter().find(|(old_key, _, _)| old_key == key) {
                            None => {
                                reaction.updates.push(QueryUpdate::Enter { key: key.clone(), value: bytes.clone() })
                            }
                            Some((_, old_value, _)) if old_value != value => {
                                reaction.updates.push(QueryUpdate::Update { key: key.clone(), value: bytes.clone() })
                            }
                            Some(_) => {}
                        }
                    }
                }
                *rows = fresh;
                *outside = page.has_more;
            }
        }
        for (owner, seq, change) in buffered {
            let more = self.on_change(owner, seq, change);
            reaction.updates.extend(more.updates);
            if more.refill {
                // Stop replaying: the refill's snapshot supersedes what is left, and changes
                // newer than it will be replayed after it.
                reaction.refill = true;
            }
            if reaction.refill {
                self.begin_refill();
            }
        }
        reaction
    }

    /// Applies one owner change (or buffers it while a snapshot is in flight).
    pub fn on_change(&mut self, owner: ShardId, seq: u64, change: LiveChange) -> Reaction {
        let Some(change) = self.gate.admit(owner, seq, change) else { return Reaction::default() };
        let query = Arc::clone(&self.query);
        match &mut self.rows {
            Rows::Keys(keys) => Reaction { updates: apply_to_keys(keys, change).into_iter().collect(), refill: false },
            Rows::Window { rows, limit, outside } => apply_to_window(&query, rows, *limit, outside, change),
        }
    }
}

fn apply_to_keys(keys: &mut AHashSet<String>, change: LiveChange) -> Option<QueryUpdate> {
    match change {
        LiveChange::Upsert { key, value } => {
            if keys.insert(key.clone()) {
                Some(QueryUpdate::Enter { key, value })
            } else {
                Some(QueryUpdate::Update { key, value })
            }
        }
        LiveChange::Gone { key } => keys.remove(&key).then_some(QueryUpdate::Leave { key }),
    }
}

fn apply_to_window(
    query: &Query,
    rows: &mut Vec<WindowRow>,
    limit: usize,
    outside: &mut bool,
    change: LiveChange,
) -> Reaction {
    let mut reaction = Reaction::default();
    let order = |a: &WindowRow, b: &WindowRow| query.compare((&a.0, &a.1), (&b.0, &b.1));
    match change {
        LiveChange::Upsert { key, value: bytes } => {
            let value = decode(&bytes);
            let candidate = (key.clone(), value, bytes.clone());
            if let Some(position) = rows.iter().position(|(row_key, _, _)| *row_key == key) {
                rows[position] = candidate;
                rows.sort_by(order);
                reaction.updates.push(QueryUpdate::Update { key: key.clone(), value: bytes });
                let is_last = rows.last().is_some_and(|(last_key, _, _)| *last_key == key);
                // It may now rank below a row outside the window, which only a refill can see.
                if is_last && rows.len() == limit && *outside {
                    reaction.refill = true;
                }
            } else if rows.len() < limit {
                rows.push(candidate);
                rows.sort_by(order);
                reaction.updates.push(QueryUpdate::Enter { key, value: bytes });
            } else if rows.last().is_some_and(|last| order(&candidate, last).is_lt()) {
                rows.push(candidate);
                rows.sort_by(order);
                let (displaced, _, _) = rows.pop().expect("the window overflowed by one");
                reaction.updates.push(QueryUpdate::Enter { key, value: bytes });
                reaction.updates.push(QueryUpdate::Leave { key: displaced });
                *outside = true;
            } else {
                *outside = true;
            }
        }
        LiveChange::Gone { key } => {
            if let Some(position) = rows.iter().position(|(row_key, _, _)| *row_key == key) {
                rows.remove(position);
                reaction.updates.push(QueryUpdate::Leave { key });
                if *outside {
                    reaction.refill = true; // A slot freed: the next row enters from the whole map.
                }
            }
        }
    }
    reaction
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(limit: i64) -> Arc<Query> {
        let value = Value::Map(vec![
            (
                Value::from("sort"),
                Value::Array(vec![Value::Map(vec![
                    (Value::from("field"), Value::from("n")),
                    (Value::from("direction"), Value::from("asc")),
                ])]),
            ),
            (Value::from("limit"), Value::from(limit)),
        ]);
        Arc::new(Query::from_value(&value).unwrap())
    }

    fn n(number: i64) -> ValueBytes {
        encode(&Value::Map(vec![(Value::from("n"), Value::from(number))]))
    }

    fn page(query: &Query, rows: &[(&str, i64)]) -> Page {
        let rows = rows.iter().map(|(key, number)| (key.to_string(), decode(&n(*number)))).collect();
        query.select(rows, 0)
    }

    const S0: ShardId = ShardId(0);

    // Goal: a better row displaces the window's last; a leaving row with rows outside asks for
    // a refill whose difference enters the next row. Method: limit 2 over four rows.
    #[test]
    fn window_displaces_and_refills() {
        let query = limited(2);
        let mut live = LiveQuery::new(Arc::clone(&query), 1);
        let first = page(&query, &[("a", 1), ("b", 2), ("c", 3)]);
        assert_eq!(live.on_snapshot(&first, &[1], true), Reaction::default());
        let reaction = live.on_change(S0, 2, LiveChange::Upsert { key: "z".into(), value: n(0) });
        assert_eq!(
            reaction.updates,
            vec![QueryUpdate::Enter { key: "z".into(), value: n(0) }, QueryUpdate::Leave { key: "b".into() }]
        );
        let reaction = live.on_change(S0, 3, LiveChange::Gone { key: "a".into() });
        assert_eq!(reaction.updates, vec![QueryUpdate::Leave { key: "a".into() }]);
        assert!(reaction.refill);
        live.begin_refill();
        // A change racing the refill, already reflected in it (seq 3 <= 4), is dropped.
        live.on_change(S0, 4, LiveChange::Upsert { key: "b".into(), value: n(2) });
        let refill = page(&query, &[("z", 0), ("b", 2), ("c", 3)]);
        let reaction = live.on_snapshot(&refill, &[4], false);
        assert_eq!(reaction.updates, vec![QueryUpdate::Enter { key: "b".into(), value: n(2) }]);
        assert!(!reaction.refill);
    }

    // Goal: changes that arrive before the first snapshot are replayed after it, and those the
    // snapshot already reflects are dropped. Method: unlimited query, seq around the snapshot's.
    #[test]
    fn buffers_until_the_first_snapshot() {
        let query = Arc::new(Query::from_value(&Value::Map(vec![])).unwrap());
        let mut live = LiveQuery::new(Arc::clone(&query), 2);
        assert!(live
            .on_change(ShardId(1), 5, LiveChange::Upsert { key: "old".into(), value: n(1) })
            .updates
            .is_empty());
        assert!(live
            .on_change(ShardId(1), 7, LiveChange::Upsert { key: "new".into(), value: n(2) })
            .updates
            .is_empty());
        let snapshot = page(&query, &[("old", 1)]);
        let reaction = live.on_snapshot(&snapshot, &[0, 5], true);
        assert_eq!(reaction.updates, vec![QueryUpdate::Enter { key: "new".into(), value: n(2) }]);
        let reaction = live.on_change(ShardId(1), 8, LiveChange::Gone { key: "old".into() });
        assert_eq!(reaction.updates, vec![QueryUpdate::Leave { key: "old".into() }]);
        assert!(live.on_change(ShardId(1), 9, LiveChange::Gone { key: "never".into() }).updates.is_empty());
    }
}
