//! Deterministic multi-shard simulation of live queries: owner shards (`ShardData` plus a
//! `SubscriptionIndex`) and one subscriber's `LiveQuery`, in one thread. Writes, registration,
//! snapshot replies and change deliveries interleave in seeded random orders — replies and
//! changes from one owner travel on different queues, as on the mesh — and at the end the
//! subscriber's view (QUERY_RESP plus every QUERY_UPDATE applied like the client does) must
//! equal a fresh query. A failure prints the seed; rerun with it to replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rmpv::Value;
use shardgrid_shards::{PartitionId, PartitionTable, ShardId};

use super::index::SubscriptionIndex;
use super::window::LiveQuery;
use super::{evaluate_event, LiveChange, QueryUpdate, SubKey};
use crate::crdt::test_prng::Prng;
use crate::hash::{partition_of, PARTITION_COUNT};
use crate::model::{LwwRecord, Timestamp};
use crate::protocol::{ClientOp, OpKind};
use crate::query::{Query, ResolvedCursor};
use crate::shard::{Row, ShardData};

const NOW: u64 = 1_700_000_000_000;

struct Owner {
    data: ShardData,
    index: SubscriptionIndex,
    write_seq: u64,
    /// Snapshot requests from the subscriber (the request queue toward this owner).
    requests: VecDeque<bool /* register too */>,
    /// Replies toward the subscriber: (rows, seq).
    replies: VecDeque<(Vec<Row>, u64)>,
    /// Changes toward the subscriber: (seq, change).
    changes: VecDeque<(u64, LiveChange)>,
}

fn value(number: u64, group: &str) -> crate::model::ValueBytes {
    let mut out = Vec::new();
    let value = Value::Map(vec![(Value::from("n"), Value::from(number)), (Value::from("g"), Value::from(group))]);
    rmpv::encode::write_value(&mut out, &value).unwrap();
    crate::model::ValueBytes::from(out)
}

fn queries() -> Vec<Value> {
    let group_a = Value::Map(vec![(Value::from("g"), Value::from("a"))]);
    let sort = Value::Array(vec![Value::Map(vec![
        (Value::from("field"), Value::from("n")),
        (Value::from("direction"), Value::from("asc")),
    ])]);
    vec![
        Value::Map(vec![(Value::from("where"), group_a.clone())]),
        Value::Map(vec![
            (Value::from("where"), group_a),
            (Value::from("sort"), sort.clone()),
            (Value::from("limit"), Value::from(3)),
        ]),
        Value::Map(vec![(Value::from("sort"), sort), (Value::from("limit"), Value::from(4))]),
    ]
}

fn fresh_view(owners: &[Owner], query: &Query, cursor: &ResolvedCursor) -> BTreeMap<String, Value> {
    let mut rows = Vec::new();
    for owner in owners {
        owner.data.snapshot("live", query, cursor, NOW, &mut rows);
    }
    query.select_resolved(rows, cursor, NOW).rows.into_iter().collect()
}

fn run(seed: u64, shard_count: usize, query_value: &Value) {
    let mut prng = Prng::from_seed(seed);
    let table = PartitionTable::new(PARTITION_COUNT, shard_count);
    let query = Arc::new(Query::from_value(query_value).unwrap());
    let cursor = Arc::new(query.resolve_cursor(NOW));
    let sub = SubKey { shard: ShardId(0), local: 1 };
    let map: Arc<str> = Arc::from("live");
    let mut owners: Vec<Owner> = (0..shard_count)
        .map(|_| Owner {
            data: ShardData::new("server"),
            index: SubscriptionIndex::default(),
            write_seq: 0,
            requests: VecDeque::new(),
            replies: VecDeque::new(),
            changes: VecDeque::new(),
        })
        .collect();
    let mut live: Option<LiveQuery> = None;
    let mut view: BTreeMap<String, Value> = BTreeMap::new();
    let mut gathered: Vec<Option<(Vec<Row>, u64)>> = vec![None; shard_count];
    let mut first_snapshot = true;
    let register_at = prng.below(60);
    let mut sequence = 0u64;

    for step in 0..400u64 {
        if step == register_at {
            live = Some(LiveQuery::new(Arc::clone(&query), shard_count));
            owners.iter_mut().for_each(|owner| owner.requests.push_back(true));
        }
        match prng.below(4) {
            // A write on its owner.
            0 | 1 if step < 300 => {
                sequence += 1;
                let key = format!("k{}", prng.below(12));
                let timestamp = Timestamp::new(NOW - 1_000 + sequence, 0, "c");
                let kind = if prng.below(5) == 0 {
                    OpKind::Remove { record: Some(LwwRecord { value: None, timestamp, ttl_ms: None }) }
                } else {
                    let group = if prng.below(2) == 0 { "a" } else { "b" };
                    OpKind::Put(LwwRecord { value: Some(value(prng.below(10), group)), timestamp, ttl_ms: None })
                };
                let owner = &mut owners[table.owner(PartitionId(partition_of(&key))).index()];
                let op = ClientOp {
                    id: None,
                    map_name: "live".into(),
                    key: key.into(),
                    kind,
                    write_concern: None,
                    timeout: None,
                };
                let (_, event) = owner.data.apply(op, NOW);
                owner.write_seq += 1;
                if let Some(event) = event {
                    let mut changes = Vec::new();
                    evaluate_event(&owner.index, &event, NOW, &mut changes);
                    for (_, change) in changes {
                        owner.changes.push_back((owner.write_seq, change));
                    }
                }
            }
            // An owner handles a snapshot request.
            2 => {
                let index = prng.below(shard_count as u64) as usize;
                let owner = &mut owners[index];
                if let Some(register) = owner.requests.pop_front() {
                    if register {
                        owner.index.register(sub, Arc::clone(&map), Arc::clone(&query), Arc::clone(&cursor));
                    }
                    let mut rows = Vec::new();
                    owner.data.snapshot("live", &query, &cursor, NOW, &mut rows);
                    owner.replies.push_back((rows, owner.write_seq));
                }
            }
            // The subscriber receives the head of one owner's reply or change queue.
            _ => {
                let index = prng.below(shard_count as u64) as usize;
                let Some(live) = live.as_mut() else { continue };
                let take_reply = prng.below(2) == 0;
                let owner = &mut owners[index];
                let mut updates = Vec::new();
                let mut refill = false;
                if take_reply {
                    if let Some(reply) = owner.replies.pop_front() {
                        gathered[index] = Some(reply);
                        if let Some(reaction) =
                            complete_snapshot(&mut gathered, &query, &cursor, live, &mut view, &mut first_snapshot)
                        {
                            updates = reaction.updates;
                            refill = reaction.refill;
                        }
                    }
                } else if let Some((seq, change)) = owner.changes.pop_front() {
                    let reaction = live.on_change(ShardId(index as u16), seq, change);
                    updates = reaction.updates;
                    refill = reaction.refill;
                }
                apply_updates(&mut view, updates);
                if refill {
                    live.begin_refill();
                    owners.iter_mut().for_each(|owner| owner.requests.push_back(false));
                }
            }
        }
    }
    // Drain: owners answer every request and the subscriber receives everything.
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "seed={seed}: the simulation does not settle");
        let mut progressed = false;
        for index in 0..shard_count {
            let owner = &mut owners[index];
            if let Some(register) = owner.requests.pop_front() {
                if register {
                    owner.index.register(sub, Arc::clone(&map), Arc::clone(&query), Arc::clone(&cursor));
                }
                let mut rows = Vec::new();
                owner.data.snapshot("live", &query, &cursor, NOW, &mut rows);
                owner.replies.push_back((rows, owner.write_seq));
                progressed = true;
            }
            let live = live.as_mut().expect("registered before the drain");
            let mut updates = Vec::new();
            let mut refill = false;
            if let Some((seq, change)) = owners[index].changes.pop_front() {
                let reaction = live.on_change(ShardId(index as u16), seq, change);
                updates.extend(reaction.updates);
                refill |= reaction.refill;
                progressed = true;
            }
            if let Some(reply) = owners[index].replies.pop_front() {
                progressed = true;
                gathered[index] = Some(reply);
                if let Some(reaction) =
                    complete_snapshot(&mut gathered, &query, &cursor, live, &mut view, &mut first_snapshot)
                {
                    updates.extend(reaction.updates);
                    refill |= reaction.refill;
                }
            }
            apply_updates(&mut view, updates);
            if refill {
                live.begin_refill();
                owners.iter_mut().for_each(|owner| owner.requests.push_back(false));
            }
        }
        if !progressed {
            break;
        }
    }
    let expected = fresh_view(&owners, &query, &cursor);
    assert_eq!(view, expected, "seed={seed} shards={shard_count} query={query_value}");
}

/// Once every owner has answered, merges the replies into a page and installs it in the
/// subscriber: the first one becomes its view (QUERY_RESP), later ones yield updates.
fn complete_snapshot(
    gathered: &mut [Option<(Vec<Row>, u64)>],
    query: &Query,
    cursor: &ResolvedCursor,
    live: &mut LiveQuery,
    view: &mut BTreeMap<String, Value>,
    first_snapshot: &mut bool,
) -> Option<super::window::Reaction> {
    if !gathered.iter().all(Option::is_some) {
        return None;
    }
    let mut rows = Vec::new();
    let mut seqs = Vec::new();
    for slot in gathered.iter_mut() {
        let (part, seq) = slot.take().expect("checked above");
        rows.extend(part);
        seqs.push(seq);
    }
    let page = query.select_resolved(rows, cursor, NOW);
    if *first_snapshot {
        *view = page.rows.iter().cloned().collect();
    }
    let reaction = live.on_snapshot(&page, &seqs, *first_snapshot);
    *first_snapshot = false;
    Some(reaction)
}

/// Applies updates as the client does: LEAVE removes, ENTER/UPDATE upsert.
fn apply_updates(view: &mut BTreeMap<String, Value>, updates: Vec<QueryUpdate>) {
    for update in updates {
        match update {
            QueryUpdate::Enter { key, value } | QueryUpdate::Update { key, value } => {
                view.insert(key, rmpv::decode::read_value(&mut &value[..]).unwrap());
            }
            QueryUpdate::Leave { key } => {
                view.remove(&key);
            }
        }
    }
}

// Goal: whatever the interleaving of writes, registration, snapshot replies and changes, every
// subscriber's final view equals a fresh query — for an indexed filter, a filtered top-3 window
// and an unfiltered top-4 window, on 1 to 3 shards.
// Method: 150 seeds per query and shard count of the scenario above.
#[test]
fn subscriber_view_equals_a_fresh_query() {
    for query_value in queries() {
        for shard_count in 1..=3 {
            for seed in 0..150 {
                run(seed, shard_count, &query_value);
            }
        }
    }
}
