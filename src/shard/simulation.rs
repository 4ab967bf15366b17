//! Deterministic multi-shard simulation of the sans-IO shard logic: several `ShardData`
//! instances in one thread, ops routed by the partition table exactly as `node` routes them,
//! delivered in seeded random interleavings with re-sends, checked against a naive model.
//! A failure prints the seed; rerun with that seed to replay it exactly.

use std::collections::BTreeMap;

use shardgrid_shards::{PartitionId, PartitionTable, ShardId};

use super::{OpOutcome, ShardData};
use crate::crdt::test_prng::Prng;
use crate::hash::{partition_of, PARTITION_COUNT};
use crate::model::{LwwRecord, Timestamp};
use crate::protocol::{ClientOp, OpKind};
use crate::query::Query;

const WALL_MS: u64 = 1_700_000_000_000;

fn value_bytes(number: u64) -> crate::model::ValueBytes {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Map(vec![(rmpv::Value::from("n"), rmpv::Value::from(number))]))
        .unwrap();
    crate::model::ValueBytes::from(out)
}

/// A random LWW put or remove from one of a few client clocks.
fn random_op(prng: &mut Prng, sequence: u64) -> ClientOp {
    let key = format!("key-{}", prng.below(40));
    // An HLC never stamps two writes alike, so the counter carries the op's sequence number;
    // the millis and node collide often, so ordering still exercises every comparison step.
    let timestamp =
        Timestamp::new(WALL_MS - 10_000 + prng.below(50), sequence as u32, format!("client{}", prng.below(3)));
    let kind = if prng.below(5) == 0 {
        OpKind::Remove { record: Some(LwwRecord { value: None, timestamp, ttl_ms: None }) }
    } else {
        OpKind::Put(LwwRecord { value: Some(value_bytes(sequence)), timestamp, ttl_ms: None })
    };
    ClientOp {
        id: Some(sequence.to_string().into()),
        map_name: "sim".into(),
        key: key.into(),
        kind,
        write_concern: None,
        timeout: None,
    }
}

/// The naive model: per key, the record with the greatest timestamp.
fn model(ops: &[ClientOp]) -> BTreeMap<String, LwwRecord> {
    let mut records: BTreeMap<String, LwwRecord> = BTreeMap::new();
    for op in ops {
        let record = match &op.kind {
            OpKind::Put(record) | OpKind::Remove { record: Some(record) } => record.clone(),
            _ => unreachable!("the simulation makes puts and removes with records"),
        };
        match records.get(op.key.as_str()) {
            Some(existing) if existing.timestamp >= record.timestamp => {}
            _ => {
                records.insert(op.key.to_string(), record);
            }
        }
    }
    records
}

/// Runs one seeded scenario on `shard_count` shards; returns the live rows the node answers.
fn run(seed: u64, shard_count: usize) -> BTreeMap<String, rmpv::Value> {
    let mut prng = Prng::from_seed(seed);
    let table = PartitionTable::new(PARTITION_COUNT, shard_count);
    let mut shards: Vec<ShardData> = (0..shard_count).map(|_| ShardData::new("server")).collect();
    // Several clients each build batches; every batch is split by owner, as `Node::apply_batch`
    // does, and the parts go into per-shard inboxes.
    let mut all_ops = Vec::new();
    let mut inboxes: Vec<Vec<ClientOp>> = vec![Vec::new(); shard_count];
    for sequence in 0..300 {
        let op = random_op(&mut prng, sequence);
        all_ops.push(op.clone());
        let owner = table.owner(PartitionId(partition_of(&op.key)));
        inboxes[owner.index()].push(op.clone());
        // The client re-sends unacknowledged ops: some ops arrive twice, later.
        if prng.below(4) == 0 {
            inboxes[owner.index()].push(op);
        }
    }
    // Shards consume their inboxes in a random interleaving, each in its own random order.
    for inbox in &mut inboxes {
        prng.shuffle(inbox);
    }
    let mut cursors = vec![0usize; shard_count];
    loop {
        let ready: Vec<usize> = (0..shard_count).filter(|&shard| cursors[shard] < inboxes[shard].len()).collect();
        if ready.is_empty() {
            break;
        }
        let shard = ready[prng.below(ready.len() as u64) as usize];
        let op = inboxes[shard][cursors[shard]].clone();
        cursors[shard] += 1;
        assert_eq!(table.owner(PartitionId(partition_of(&op.key))), ShardId(shard as u16));
        let (outcome, event) = shards[shard].apply(op, WALL_MS);
        assert_eq!(outcome == OpOutcome::Applied, event.is_some(), "seed={seed}: events exactly for state changes");
    }
    // Every key's record on its owner equals the model's.
    let expected = model(&all_ops);
    for (key, record) in &expected {
        let owner = table.owner(PartitionId(partition_of(key)));
        let stored = shards[owner.index()].lww_map("sim").and_then(|map| map.get(key)).cloned();
        assert_eq!(stored.as_ref(), Some(record), "seed={seed} shards={shard_count} key={key}");
    }
    // The node-wide snapshot is the union of every shard's rows.
    let query = Query::from_value(&rmpv::Value::Map(vec![])).unwrap();
    let cursor = query.resolve_cursor(WALL_MS);
    let mut rows = Vec::new();
    for shard in &shards {
        shard.snapshot("sim", &query, &cursor, WALL_MS, &mut rows);
    }
    let live: BTreeMap<String, rmpv::Value> = rows.into_iter().collect();
    let expected_live: Vec<&String> =
        expected.iter().filter(|(_, record)| !record.is_tombstone()).map(|(key, _)| key).collect();
    assert_eq!(live.keys().collect::<Vec<_>>(), expected_live, "seed={seed} shards={shard_count}");
    live
}

// Goal: whatever the shard count and delivery order (re-sends included), the node converges to
// the model, and 1, 2 and 3 shards answer a query identically.
// Method: 200 seeds x 3 shard counts of the scenario above.
#[test]
fn shards_converge_to_the_model_in_every_interleaving() {
    for seed in 0..200 {
        let one = run(seed, 1);
        assert_eq!(run(seed, 2), one, "seed={seed}: 2 shards differ from 1");
        assert_eq!(run(seed, 3), one, "seed={seed}: 3 shards differ from 1");
    }
}

// Goal: a page cut from per-shard snapshots equals the page from one store (sort + limit +
// cursor), so QUERY_RESP does not depend on the shard count.
// Method: rows spread over 4 shards, a sorted limited query paged to the end.
#[test]
fn paging_across_shards_matches_one_store() {
    let query_value = rmpv::Value::Map(vec![
        (
            rmpv::Value::from("sort"),
            rmpv::Value::Array(vec![rmpv::Value::Map(vec![
                (rmpv::Value::from("field"), rmpv::Value::from("n")),
                (rmpv::Value::from("direction"), rmpv::Value::from("desc")),
            ])]),
        ),
        (rmpv::Value::from("limit"), rmpv::Value::from(7)),
    ]);
    for shard_count in [1, 4] {
        let table = PartitionTable::new(PARTITION_COUNT, shard_count);
        let mut shards: Vec<ShardData> = (0..shard_count).map(|_| ShardData::new("server")).collect();
        for number in 0..50u64 {
            let key = format!("row-{number}");
            let record = LwwRecord {
                value: Some(value_bytes(number % 10)),
                timestamp: Timestamp::new(WALL_MS, 0, "c"),
                ttl_ms: None,
            };
            let op = ClientOp {
                id: None,
                map_name: "sim".into(),
                key: key.as_str().into(),
                kind: OpKind::Put(record),
                write_concern: None,
                timeout: None,
            };
            shards[table.owner(PartitionId(partition_of(&key))).index()].apply(op, WALL_MS);
        }
        let mut seen = Vec::new();
        let mut cursor_text: Option<String> = None;
        loop {
            let mut value = query_value.clone();
            if let (rmpv::Value::Map(entries), Some(text)) = (&mut value, &cursor_text) {
                entries.push((rmpv::Value::from("cursor"), rmpv::Value::from(text.as_str())));
            }
            let query = Query::from_value(&value).unwrap();
            let cursor = query.resolve_cursor(WALL_MS);
            let mut rows = Vec::new();
            for shard in &shards {
                shard.snapshot("sim", &query, &cursor, WALL_MS, &mut rows);
            }
            let page = query.select_resolved(rows, &cursor, WALL_MS);
            seen.extend(page.rows.iter().map(|(key, _)| key.clone()));
            match page.next_cursor {
                Some(next) if page.has_more => cursor_text = Some(next),
                _ => break,
            }
        }
        let mut expected: Vec<(u64, String)> =
            (0..50u64).map(|number| (number % 10, format!("row-{number}"))).collect();
        expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        assert_eq!(seen, expected.into_iter().map(|(_, key)| key).collect::<Vec<_>>(), "shards={shard_count}");
    }
}
