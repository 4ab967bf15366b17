//! End-to-end Merkle sync over WebSocket (PROTOCOL §4.3, §4.4, §6.6; DECISIONS §2.4, §3.1,
//! §4.3, §4.4): a client holding a stale copy of an LWW or OR map converges to the server's
//! state by the sync exchange alone, with the data spread over two shards; the exchange moves
//! O(differences); bad sync input gets protocol errors and applies nothing.

mod common;
mod sync_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use common::*;
use rmpv::Value;
use shardgrid::hash::partition_of;
use shardgrid::model::{OrRecord, Timestamp};
use sync_support::*;

const OPS_PER_BATCH: usize = 10_000;

fn or_add(id: usize, map_name: &str, key: &str, record: &OrRecord) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("OR_ADD")),
        ("key", s(key)),
        ("orRecord", or_record_value(record)),
    ])
}

fn or_remove(id: usize, map_name: &str, key: &str, tag: &str) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("OR_REMOVE")),
        ("key", s(key)),
        ("orTag", s(tag)),
    ])
}

/// Sends `ops` in `OP_BATCH`es and waits for each `OP_ACK`; returns the bytes sent.
fn write_batches(client: &mut Client, ops: Vec<Value>) -> usize {
    let mut sent_bytes = 0;
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let batch: Vec<Value> = ops.by_ref().take(OPS_PER_BATCH).collect();
        let bytes = encode(&op_batch(batch));
        sent_bytes += bytes.len();
        client.send_bytes(&bytes);
        client.recv_type("OP_ACK");
    }
    sent_bytes
}

/// Two shards, JWT auth, and a per-connection rate limit far above what writing a big map with
/// back-to-back OP_BATCHes needs (the default, 20 000 ops/s, would answer 429).
fn big_map_server() -> Server {
    Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--rate-limit-ops", "1000000000"])
}

/// A timestamp `offset` ms after a base an hour in the past, from `node`.
fn stamp(base: u64, offset: u64, node: &str) -> Timestamp {
    Timestamp::new(base + offset, 0, node)
}

fn value(text: &str) -> Value {
    map(vec![("v", s(text))])
}

/// Asserts the keys fall on both shards of a two-shard server (partitions are split into two
/// contiguous halves).
fn assert_on_both_shards<'a>(keys: impl IntoIterator<Item = &'a String>) {
    let partitions: BTreeSet<u16> = keys.into_iter().map(|key| partition_of(key)).collect();
    assert!(partitions.first().unwrap() < &100 && partitions.last().unwrap() > &171, "keys on both shards");
}

#[test]
fn stale_lww_client_converges_over_websocket() {
    // Goal: issue 6 — a client whose copy is stale (keys older on it, keys it misses, keys the
    // server deleted, keys it changed offline) ends with exactly the server's records, tombstones
    // included, by sending its pending ops and walking the tree; afterwards the roots agree, so
    // the next sync moves only SYNC_INIT and the root. Method: a writer builds the map on two
    // shards; the client's replica is the map's earlier state plus offline edits; it sends its
    // op log, walks, and is compared with a model and with a fresh client's full walk.
    let server = Server::two_shards();
    let mut writer = server.client();
    let base = now_ms() - 3_600_000;
    let map_name = "todos";
    let keys: Vec<String> = (0..340).map(|index| format!("todo-{index}")).collect();
    assert_on_both_shards(&keys);

    let mut model = BTreeMap::new();
    let mut client_copy = LwwReplica::default();
    let mut ops = Vec::new();
    for (index, key) in keys[..300].iter().enumerate() {
        let timestamp = stamp(base, index as u64, "writer");
        ops.push(put(index + 1, map_name, key, value("original"), &timestamp));
        model_merge(&mut model, key, value("original"), timestamp.clone());
        client_copy.merge(key, value("original"), timestamp);
    }
    write_batches(&mut writer, ops);

    // While the client is away: updates, new keys, deletions.
    let mut ops = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let timestamp = stamp(base, 100_000 + index as u64, "writer");
        if !(40..300).contains(&index) {
            ops.push(put(1_000 + index, map_name, key, value("server-edit"), &timestamp));
            model_merge(&mut model, key, value("server-edit"), timestamp);
        } else if index < 80 {
            ops.push(remove(1_000 + index, map_name, key, &timestamp));
            model_merge(&mut model, key, Value::Nil, timestamp);
        }
    }
    write_batches(&mut writer, ops);

    // The client's offline edits, still in its op log: newer ones win, older ones lose.
    let mut pending = Vec::new();
    for (index, key) in keys.iter().enumerate().take(120) {
        let offset = match index {
            0..10 => 50_000,
            80..120 => 200_000,
            _ => continue,
        };
        let timestamp = stamp(base, offset + index as u64, "client-c");
        pending.push(put(pending.len() + 1, map_name, key, value("client-edit"), &timestamp));
        client_copy.merge(key, value("client-edit"), timestamp.clone());
        model_merge(&mut model, key, value("client-edit"), timestamp);
    }

    let mut client = server.client();
    write_batches(&mut client, pending);
    let mut wire = Wire::new(&mut client);
    let stats = lww_walk(&mut wire, map_name, &mut client_copy);
    assert!(stats.leaves_received > 0, "{stats:?}");
    assert_eq!(client_copy.records, model, "the client holds exactly the server's records");
    for key in &keys[40..80] {
        assert_eq!(client_copy.records[key].0, Value::Nil, "{key} is a tombstone");
    }

    // In sync now: the next sync is SYNC_INIT and SYNC_RESP_ROOT, nothing else.
    let (sent_before, received_before) = (wire.sent_bytes, wire.received_bytes);
    let again = lww_walk(&mut wire, map_name, &mut client_copy);
    assert_eq!(again.bucket_requests, 0);
    assert!(wire.sent_bytes - sent_before < 64 && wire.received_bytes - received_before < 128);

    // A client starting empty gets the same records (tombstones as nil values).
    let mut fresh_client = server.client();
    let mut fresh = LwwReplica::default();
    lww_walk(&mut Wire::new(&mut fresh_client), map_name, &mut fresh);
    assert_eq!(fresh.records, model);
}

#[test]
fn stale_or_client_converges_and_pushes_its_state_back() {
    // Goal: issue 6 — an OR-map client with a stale copy (tags it misses, tags the server
    // removed, keys the server emptied, keys it lacks) and offline changes the server never got
    // (new tags, removed tags, keys only it has) converges with the server in one walk: it merges
    // the server's leaves and pushes its state back with ORMAP_PUSH_DIFF, which the server merges
    // with OR-set semantics and announces to other interested connections as OR_ADD/OR_REMOVE,
    // never with an OP_ACK. Method: a writer builds the map over two shards; the client's
    // replica is the earlier state plus local edits; an observer watches events; afterwards the
    // roots agree and a fresh client's walk yields the same records.
    let server = Server::two_shards();
    let mut writer = server.client();
    let base = now_ms() - 3_600_000;
    let map_name = "tags";
    let keys: Vec<String> = (0..60).map(|index| format!("post-{index}")).collect();
    assert_on_both_shards(&keys);

    let mut model = OrReplica::default();
    let mut client_copy = OrReplica::default();
    let mut ops = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        for (slot, text) in ["a", "b"].into_iter().enumerate() {
            let record =
                or_record(&s(&format!("{text}{index}")), stamp(base, 10 * index as u64 + slot as u64, "writer"));
            ops.push(or_add(ops.len() + 1, map_name, key, &record));
            model.add(key, record.clone());
            client_copy.add(key, record);
        }
    }
    write_batches(&mut writer, ops);
    let first_tag = |index: usize| stamp(base, 10 * index as u64, "writer").to_string();

    let mut observer = server.client();
    let mut observer_wire = Wire::new(&mut observer);
    or_walk(&mut observer_wire, map_name, &mut OrReplica::default());

    // While the client is away: new tags, removed tags, emptied keys, new keys.
    let mut ops = Vec::new();
    let new_keys: Vec<String> = (0..10).map(|index| format!("new-{index}")).collect();
    for (index, key) in keys.iter().enumerate() {
        match index {
            0..10 => {
                let record = or_record(&s("c"), stamp(base, 5_000 + index as u64, "writer"));
                ops.push(or_add(ops.len() + 1, map_name, key, &record));
                model.add(key, record);
            }
            10..20 => {
                ops.push(or_remove(ops.len() + 1, map_name, key, &first_tag(index)));
                model.remove(key, &first_tag(index));
            }
            20..25 => {
                for slot in 0..2 {
                    let tag = stamp(base, 10 * index as u64 + slot, "writer").to_string();
                    ops.push(or_remove(ops.len() + 1, map_name, key, &tag));
                    model.remove(key, &tag);
                }
            }
            _ => {}
        }
    }
    for (index, key) in new_keys.iter().enumerate() {
        let record = or_record(&s("fresh"), stamp(base, 6_000 + index as u64, "writer"));
        ops.push(or_add(ops.len() + 1, map_name, key, &record));
        model.add(key, record);
    }
    write_batches(&mut writer, ops);

    // The client's own changes that never reached the server: they travel only in pushes.
    let server_leaves: BTreeSet<usize> = keys.iter().chain(&new_keys).map(|key| leaf_of(key)).collect();
    let only_client: Vec<String> = (0..)
        .map(|index| format!("mine-{index}"))
        .filter(|key| !server_leaves.contains(&leaf_of(key)))
        .take(5)
        .collect();
    let mut pushed_adds = BTreeSet::new();
    let mut pushed_removes = BTreeSet::new();
    for (index, key) in keys.iter().enumerate().take(45).skip(30) {
        if index < 40 {
            let record = or_record(&s("offline"), stamp(base, 7_000 + index as u64, "client-c"));
            pushed_adds.insert(record.tag.clone());
            client_copy.add(key, record.clone());
            model.add(key, record);
        } else {
            pushed_removes.insert(first_tag(index));
            client_copy.remove(key, &first_tag(index));
            model.remove(key, &first_tag(index));
        }
    }
    for (index, key) in only_client.iter().enumerate() {
        let record = or_record(&s("only-mine"), stamp(base, 8_000 + index as u64, "client-c"));
        pushed_adds.insert(record.tag.clone());
        client_copy.add(key, record.clone());
        model.add(key, record);
    }

    let mut client = server.client();
    let mut wire = Wire::new(&mut client);
    let stats = or_walk(&mut wire, map_name, &mut client_copy);
    assert!(stats.leaves_received > 0 && stats.pushes > 0, "{stats:?}");
    wire.fence();
    assert_eq!(client_copy.items, model.items, "the client holds exactly the server's records");

    // Pushes are never acknowledged, and the roots now agree.
    let again = or_walk(&mut wire, map_name, &mut client_copy);
    assert_eq!(again.bucket_requests, 0, "in sync after one walk");

    // The observer heard about every pushed change.
    let mut heard_adds = BTreeSet::new();
    let mut heard_removes = BTreeSet::new();
    let deadline = Instant::now() + RECV_TIMEOUT;
    while (heard_adds != pushed_adds || heard_removes != pushed_removes) && Instant::now() < deadline {
        let event = observer_wire.recv();
        if type_of(&event) != "SERVER_EVENT" {
            continue;
        }
        match get(&event, "payload.eventType").as_str().unwrap() {
            "OR_ADD" => {
                let tag = get(&event, "payload.orRecord.tag").as_str().unwrap().to_string();
                if pushed_adds.contains(&tag) {
                    heard_adds.insert(tag);
                }
            }
            "OR_REMOVE" => {
                let tag = get(&event, "payload.orTag").as_str().unwrap().to_string();
                if pushed_removes.contains(&tag) {
                    heard_removes.insert(tag);
                }
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(heard_adds, pushed_adds);
    assert_eq!(heard_removes, pushed_removes);

    // A client starting empty ends with the same records.
    let mut fresh_client = server.client();
    let mut fresh = OrReplica::default();
    let mut fresh_wire = Wire::new(&mut fresh_client);
    or_walk(&mut fresh_wire, map_name, &mut fresh);
    assert_eq!(fresh.items, model.items);
    assert_eq!(fresh.root(), client_copy.root());
}

#[test]
fn syncing_ten_changed_keys_of_a_big_map_moves_under_one_percent_of_it() {
    // Goal: issue 6 — the exchange moves O(differences): 10 changed keys in a 100 000-key map
    // cost less than 1% of the map's bytes. Method: write the map with big OP_BATCHes, counting
    // their bytes; a client holding the same records misses 10 later updates; count every byte
    // of its sync walk, both ways.
    let server = big_map_server();
    let mut writer = server.client();
    let base = now_ms() - 3_600_000;
    let map_name = "big";
    let mut client_copy = LwwReplica::default();
    let mut ops = Vec::with_capacity(100_000);
    for index in 0..100_000usize {
        let key = format!("key-{index}");
        let timestamp = stamp(base, index as u64, "writer");
        let record = map(vec![("n", Value::from(index)), ("title", s("a record of the big map"))]);
        ops.push(put(index + 1, map_name, &key, record.clone(), &timestamp));
        client_copy.merge(&key, record, timestamp);
    }
    let map_bytes = write_batches(&mut writer, ops);

    let mut changed = BTreeMap::new();
    let mut ops = Vec::new();
    for index in (0..100_000usize).step_by(9_973).take(10) {
        let key = format!("key-{index}");
        let timestamp = stamp(base, 200_000 + index as u64, "writer");
        ops.push(put(ops.len() + 1, map_name, &key, s("changed"), &timestamp));
        changed.insert(key, (s("changed"), timestamp));
    }
    write_batches(&mut writer, ops);

    let mut client = server.client();
    let mut wire = Wire::new(&mut client);
    let stats = lww_walk(&mut wire, map_name, &mut client_copy);
    let sync_bytes = wire.sent_bytes + wire.received_bytes;
    println!(
        "10 of 100000 keys: map {map_bytes} bytes, sync {sync_bytes} bytes ({} sent, {} received), {stats:?}",
        wire.sent_bytes, wire.received_bytes
    );
    assert!(sync_bytes * 100 < map_bytes, "sync moved {sync_bytes} of {map_bytes} bytes");
    for (key, record) in &changed {
        assert_eq!(client_copy.records.get(key), Some(record));
    }
    assert_eq!(lww_walk(&mut wire, map_name, &mut client_copy).bucket_requests, 0, "in sync");
}

/// Sends one bucket request and returns the reply (or error).
fn ask_bucket(wire: &mut Wire<'_>, message_type: &str, map_name: &str, path: &str) -> Value {
    wire.send(&msg_payload(message_type, vec![("mapName", s(map_name)), ("path", s(path))]));
    wire.recv_reply()
}

#[test]
fn every_bucket_request_is_answered_and_bad_paths_are_refused() {
    // Goal: DECISIONS §4.4 — empty and unknown nodes get an empty answer (silence would make an
    // OR client lose data); a path that is not hex or is deeper than the tree gets ERROR 400 and
    // the connection stays usable. Method: ask a server holding one key for nodes of it, of an
    // unknown map, and for bad paths, with both message types.
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&op_batch(vec![put_op(1, "known", "todo-1", s("x"), now_ms())]));
    client.recv_type("OP_ACK");
    let mut wire = Wire::new(&mut client);

    wire.send(&msg("SYNC_INIT", vec![("mapName", s("unknown"))]));
    let root = wire.recv_reply();
    assert_eq!(get(&root, "payload.rootHash").as_u64(), Some(0), "empty map: root 0");

    for (request, buckets_reply, leaf_reply, leaf_field) in [
        ("MERKLE_REQ_BUCKET", "SYNC_RESP_BUCKETS", "SYNC_RESP_LEAF", "records"),
        ("ORMAP_MERKLE_REQ_BUCKET", "ORMAP_SYNC_RESP_BUCKETS", "ORMAP_SYNC_RESP_LEAF", "entries"),
    ] {
        for (map_name, path) in [("unknown", ""), ("unknown", "7"), ("unknown", "7f"), ("known", "0"), ("known", "00")]
        {
            let reply = ask_bucket(&mut wire, request, map_name, path);
            assert_eq!(type_of(&reply), buckets_reply, "{request} {map_name} {path:?}: {reply}");
            assert_eq!(get(&reply, "payload.path"), &s(path));
            assert_eq!(get(&reply, "payload.buckets"), &Value::Map(Vec::new()));
        }
        for (map_name, path) in [("unknown", "abc"), ("known", "000"), ("known", "FFF")] {
            let reply = ask_bucket(&mut wire, request, map_name, path);
            assert_eq!(type_of(&reply), leaf_reply, "{request} {map_name} {path:?}: {reply}");
            assert_eq!(get(&reply, &format!("payload.{leaf_field}")), &Value::Array(Vec::new()));
        }
        for path in ["xyz", "d3g", "abcd", "-1", " ", &"0".repeat(10_000)] {
            let reply = ask_bucket(&mut wire, request, "known", path);
            assert_eq!(type_of(&reply), "ERROR", "{request} {path:?}: {reply}");
            assert_eq!(get(&reply, "payload.code").as_u64(), Some(400));
        }
    }
    // "todo-1" lives in leaf d39 (hashes.json): the LWW tree lists it, upper case or not.
    let reply = ask_bucket(&mut wire, "MERKLE_REQ_BUCKET", "known", "D3");
    assert_eq!(get(&reply, "payload.path"), &s("D3"));
    let Value::Map(buckets) = get(&reply, "payload.buckets") else { panic!("{reply}") };
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].0, s("9"));
    let leaf = ask_bucket(&mut wire, "MERKLE_REQ_BUCKET", "known", "d39");
    assert_eq!(get(&leaf, "payload.records.0.key"), &s("todo-1"));

    // A request without a path is malformed; the connection stays open.
    wire.send(&msg_payload("MERKLE_REQ_BUCKET", vec![("mapName", s("known"))]));
    let reply = wire.recv_reply();
    assert_eq!(get(&reply, "payload.code").as_u64(), Some(400), "{reply}");
    wire.fence();
}

fn push_diff(map_name: &str, entries: Vec<Value>) -> Value {
    msg_payload("ORMAP_PUSH_DIFF", vec![("mapName", s(map_name)), ("entries", Value::Array(entries))])
}

fn diff_request(wire: &mut Wire<'_>, map_name: &str, keys: &[&str]) -> Vec<(String, Vec<OrRecord>, Vec<String>)> {
    wire.send(&msg_payload(
        "ORMAP_DIFF_REQUEST",
        vec![("mapName", s(map_name)), ("keys", Value::Array(keys.iter().map(|key| s(key)).collect()))],
    ));
    let reply = wire.recv_reply();
    assert_eq!(type_of(&reply), "ORMAP_DIFF_RESPONSE", "{reply}");
    let Value::Array(entries) = get(&reply, "payload.entries") else { panic!("{reply}") };
    entries.iter().map(or_entry_of).collect()
}

#[test]
fn pushes_refuse_future_records_and_malformed_pushes_apply_nothing() {
    // Goal: DECISIONS §1.8, §2.4 and issue 6's bad input — a pushed record stamped more than the
    // drift bound ahead is refused (ERROR 400) while the rest of the push applies; a malformed
    // push changes nothing; a push is never acknowledged. Method: push, then read the keys back
    // with ORMAP_DIFF_REQUEST.
    let server = Server::two_shards();
    let mut client = server.client();
    let mut wire = Wire::new(&mut client);
    let now = now_ms();
    let good = or_record(&s("good"), Timestamp::new(now, 0, "client-c"));
    let future = or_record(&s("future"), Timestamp::new(now + 600_000, 0, "client-c"));
    let entry = |key: &str, records: Vec<&OrRecord>| {
        map(vec![
            ("key", s(key)),
            ("records", Value::Array(records.into_iter().map(or_record_value).collect())),
            ("tombstones", Value::Array(Vec::new())),
        ])
    };
    wire.send(&push_diff("pushes", vec![entry("f1", vec![&good, &future])]));
    let error = wire.recv_reply();
    assert_eq!(type_of(&error), "ERROR", "{error}");
    assert_eq!(get(&error, "payload.code").as_u64(), Some(400));
    assert!(get(&error, "payload.message").as_str().unwrap().contains("1 records refused"), "{error}");
    let entries = diff_request(&mut wire, "pushes", &["f1"]);
    assert_eq!(entries[0].1, vec![good.clone()], "the good record applied, the future one not");

    // Malformed: an entry without tombstones, a record with a fractional millis.
    let other = or_record(&s("other"), Timestamp::new(now, 1, "client-c"));
    let missing_tombstones = map(vec![("key", s("f2")), ("records", Value::Array(vec![or_record_value(&other)]))]);
    wire.send(&push_diff("pushes", vec![entry("f2", vec![&other]), missing_tombstones]));
    let error = wire.recv_reply();
    assert_eq!(get(&error, "payload.code").as_u64(), Some(400), "{error}");
    let mut fractional = or_record_value(&other);
    if let Value::Map(fields) = &mut fractional {
        fields[1].1 = map(vec![("millis", Value::F64(1.5)), ("counter", Value::from(0)), ("nodeId", s("c"))]);
    }
    let bad_stamp =
        map(vec![("key", s("f2")), ("records", Value::Array(vec![fractional])), ("tombstones", Value::Array(vec![]))]);
    wire.send(&push_diff("pushes", vec![entry("f2", vec![&other]), bad_stamp]));
    let error = wire.recv_reply();
    assert_eq!(get(&error, "payload.code").as_u64(), Some(400), "{error}");
    let entries = diff_request(&mut wire, "pushes", &["f2"]);
    assert!(entries[0].1.is_empty(), "nothing of a malformed push applied");

    // A valid push gets no reply at all.
    wire.send(&push_diff("pushes", vec![entry("f3", vec![&other])]));
    wire.send(&msg("PING", vec![("timestamp", Value::from(1))]));
    assert_eq!(type_of(&wire.recv()), "PONG", "no OP_ACK or anything else before the PONG");
}

#[test]
fn diff_requests_answer_every_key_in_order() {
    // Goal: PROTOCOL §4.4 — ORMAP_DIFF_REQUEST answers each asked key, unknown keys with empty
    // lists, in the order asked, with the tags removed from the key. Method: keys on both
    // shards, one with a removed tag, plus unknown keys.
    let server = Server::two_shards();
    let mut client = server.client();
    let base = now_ms() - 1_000;
    let records: Vec<(String, OrRecord)> = (0..6)
        .map(|index| {
            (format!("key-{index}"), or_record(&s(&format!("v{index}")), Timestamp::new(base + index, 0, "w")))
        })
        .collect();
    assert_on_both_shards(records.iter().map(|(key, _)| key));
    let mut ops: Vec<Value> =
        records.iter().enumerate().map(|(index, (key, record))| or_add(index + 1, "diff", key, record)).collect();
    ops.push(or_remove(10, "diff", "key-0", &records[0].1.tag));
    write_batches(&mut client, ops);
    let mut wire = Wire::new(&mut client);
    let asked = ["key-3", "nope", "key-0", "key-5", "also-nope"];
    let entries = diff_request(&mut wire, "diff", &asked);
    assert_eq!(entries.iter().map(|(key, ..)| key.as_str()).collect::<Vec<_>>(), asked);
    assert_eq!(entries[0].1, vec![records[3].1.clone()]);
    assert_eq!((entries[1].1.len(), entries[1].2.len()), (0, 0));
    assert_eq!((entries[2].1.len(), entries[2].2.clone()), (0, vec![records[0].1.tag.clone()]));
    assert_eq!(entries[3].1, vec![records[5].1.clone()]);
}

#[test]
#[ignore = "scale measurement (about a minute in release): cargo test --release --test merkle_sync -- --ignored --nocapture"]
fn measure_syncing_1000_changed_keys_of_a_million() {
    // Goal: report the time and bytes to sync 1 000 changed keys out of 1 000 000, and what
    // gathering the complete leaves costs. Method: as the 100 000-key test, ten times bigger,
    // timing SYNC_INIT alone and the whole walk; prints the figures.
    let server = big_map_server();
    let mut writer = server.client();
    let base = now_ms() - 3_600_000;
    let map_name = "million";
    let mut client_copy = LwwReplica::default();
    let mut ops = Vec::with_capacity(1_000_000);
    for index in 0..1_000_000usize {
        let key = format!("key-{index}");
        let timestamp = stamp(base, index as u64, "writer");
        let record = map(vec![("n", Value::from(index)), ("title", s("a record of the big map"))]);
        ops.push(put(index + 1, map_name, &key, record.clone(), &timestamp));
        client_copy.merge(&key, record, timestamp);
    }
    let write_started = Instant::now();
    let map_bytes = write_batches(&mut writer, ops);
    let write_elapsed = write_started.elapsed();
    let mut ops = Vec::new();
    for index in (0..1_000_000usize).step_by(997).take(1_000) {
        let key = format!("key-{index}");
        ops.push(put(ops.len() + 1, map_name, &key, s("changed"), &stamp(base, 2_000_000 + index as u64, "writer")));
    }
    write_batches(&mut writer, ops);

    let mut client = server.client();
    let mut wire = Wire::new(&mut client);
    let mut init_times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        wire.send(&msg("SYNC_INIT", vec![("mapName", s(map_name))]));
        wire.recv_reply();
        init_times.push(started.elapsed());
    }
    init_times.sort();
    let (sent_before, received_before) = (wire.sent_bytes, wire.received_bytes);
    let started = Instant::now();
    let stats = lww_walk(&mut wire, map_name, &mut client_copy);
    let elapsed = started.elapsed();
    let sync_bytes = wire.sent_bytes - sent_before + wire.received_bytes - received_before;
    println!("wrote 1000000 keys ({map_bytes} bytes of OP_BATCH) in {write_elapsed:?}");
    println!(
        "SYNC_INIT round trip (gathers 2 x 4096 leaf sums): median {:?}, max {:?}",
        init_times[10], init_times[19]
    );
    println!(
        "synced 1000 changed keys of 1000000 in {elapsed:?}: {sync_bytes} bytes ({:.2}% of the map), {stats:?}",
        100.0 * sync_bytes as f64 / map_bytes as f64
    );
    assert_eq!(lww_walk(&mut wire, map_name, &mut client_copy).bucket_requests, 0, "in sync");
}
