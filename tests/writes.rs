//! End-to-end: writes routed across shards, acknowledgements, events and reads, against the
//! real binary with two shards.

mod common;

use common::*;
use rmpv::Value;
use shardgrid::hash::{partition_of, PARTITION_COUNT};

/// One key per partition, so a batch of them touches every partition (and so both shards).
fn key_per_partition() -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; PARTITION_COUNT as usize];
    let mut remaining = PARTITION_COUNT as usize;
    let mut index = 0;
    while remaining > 0 {
        let key = format!("key-{index}");
        let slot = &mut keys[partition_of(&key) as usize];
        if slot.is_none() {
            *slot = Some(key);
            remaining -= 1;
        }
        index += 1;
    }
    keys.into_iter().map(Option::unwrap).collect()
}

// Goal: a batch over all 271 partitions is applied on both shards and acknowledged once, and
// other connections (whichever shard the kernel put them on) read every row back.
// Method: one OP_BATCH of 271 puts, then QUERY_SUB from several fresh connections.
#[test]
fn batch_over_every_partition_is_read_back_from_other_connections() {
    let server = Server::two_shards();
    let mut writer = server.client();
    let keys = key_per_partition();
    let now = now_ms();
    let ops: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| put_op(index as u64 + 1, "items", key, map(vec![("n", Value::from(index))]), now))
        .collect();
    writer.send(&op_batch(ops));
    let ack = writer.recv_type("OP_ACK");
    assert_eq!(get(&ack, "payload.lastId").as_str(), Some("271"));
    assert_eq!(get(&ack, "payload.achievedLevel").as_str(), Some("APPLIED"));

    for reader_index in 0..4 {
        let mut reader = server.client();
        let payload = query(&mut reader, &format!("q{reader_index}"), "items", map(vec![]));
        let mut got = result_keys(&payload);
        got.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(got, want, "reader {reader_index} sees every partition's row");
        assert_eq!(get(&payload, "cursorStatus").as_str(), Some("none"));
    }
}

// Goal: the values stored are exactly the values written, and a query's where/sort/limit are
// applied across shards. Method: write rows spread over both shards, query with a filter.
#[test]
fn query_filters_sorts_and_limits_across_shards() {
    let server = Server::two_shards();
    let mut client = server.client();
    let now = now_ms();
    let ops: Vec<Value> = (0..40)
        .map(|n| {
            let value =
                map(vec![("n", Value::from(n)), ("even", Value::from(n % 2 == 0)), ("name", s(&format!("item {n}")))]);
            put_op(n + 1, "things", &format!("thing-{n}"), value, now)
        })
        .collect();
    client.send(&op_batch(ops));
    client.recv_type("OP_ACK");
    let query_value = map(vec![
        ("where", map(vec![("even", Value::from(true))])),
        ("sort", Value::Array(vec![map(vec![("field", s("n")), ("direction", s("desc"))])])),
        ("limit", Value::from(5)),
    ]);
    let payload = query(&mut client, "top", "things", query_value);
    assert_eq!(result_keys(&payload), vec!["thing-38", "thing-36", "thing-34", "thing-32", "thing-30"]);
    assert_eq!(get(&payload, "hasMore"), &Value::from(true));
    assert_eq!(get(&payload, "results.0.value.name").as_str(), Some("item 38"));
    let cursor = get(&payload, "nextCursor").as_str().expect("a cursor with limit and sort").to_string();

    let next_query = map(vec![
        ("where", map(vec![("even", Value::from(true))])),
        ("sort", Value::Array(vec![map(vec![("field", s("n")), ("direction", s("desc"))])])),
        ("limit", Value::from(5)),
        ("cursor", s(&cursor)),
    ]);
    let next = query(&mut client, "top2", "things", next_query);
    assert_eq!(result_keys(&next), vec!["thing-28", "thing-26", "thing-24", "thing-22", "thing-20"]);
    assert_eq!(get(&next, "cursorStatus").as_str(), Some("valid"));
}

// Goal: other interested connections get SERVER_EVENTs for state changes (removes carry the
// tombstone), the writer gets none, and a re-sent op changes nothing and sends nothing.
// Method: a subscriber, a writer; put, re-send, remove; fence with PING.
#[test]
fn server_events_reach_other_interested_connections_only() {
    let server = Server::two_shards();
    let mut subscriber = server.client();
    let mut writer = server.client();
    query(&mut subscriber, "all", "todos", map(vec![]));
    let now = now_ms();
    let put = put_op(1, "todos", "todo-1", map(vec![("title", s("Buy milk"))]), now);
    writer.send(&op_batch(vec![put.clone()]));
    assert_eq!(get(&writer.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("1"));
    writer.expect_silence();

    let event = subscriber.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.eventType").as_str(), Some("PUT"));
    assert_eq!(get(&event, "payload.key").as_str(), Some("todo-1"));
    assert_eq!(get(&event, "payload.record.value.title").as_str(), Some("Buy milk"));
    assert_eq!(get(&event, "payload.record.timestamp.nodeId").as_str(), Some("client-a"), "client timestamps are kept");
    let update = subscriber.recv_type("QUERY_UPDATE");
    assert_eq!(get(&update, "payload.changeType").as_str(), Some("ENTER"));

    // The client re-sends unacknowledged ops; a repeat is acked but changes nothing.
    writer.send(&op_batch(vec![put]));
    writer.recv_type("OP_ACK");
    subscriber.expect_silence();

    let remove = map(vec![
        ("id", s("2")),
        ("mapName", s("todos")),
        ("opType", s("REMOVE")),
        ("key", s("todo-1")),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(now + 1, 0, "client-a"))])),
    ]);
    writer.send(&op_batch(vec![remove]));
    writer.recv_type("OP_ACK");
    let event = subscriber.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.eventType").as_str(), Some("REMOVE"));
    assert_eq!(get(&event, "payload.record.value"), &Value::Nil);
    assert_eq!(get(&event, "payload.record.timestamp.millis").as_f64(), Some((now + 1) as f64));
    let update = subscriber.recv_type("QUERY_UPDATE");
    assert_eq!(get(&update, "payload.changeType").as_str(), Some("LEAVE"));
    assert_eq!(get(&update, "payload.value"), &Value::Nil);
    let payload = query(&mut subscriber, "after", "todos", map(vec![]));
    assert!(result_keys(&payload).is_empty(), "a tombstone is not a row");
}

// Goal: a writer that was alone on its shard in a map (its events are not even encoded for
// that shard) does not keep later-interested connections there from getting events. Method:
// one shard; a writer writes alone, then a second connection becomes interested (by a query,
// and a third by a write of its own), then the writer writes again.
#[test]
fn connections_interested_after_a_lone_writer_get_its_later_events() {
    let server = Server::start(&["--cores", "0", "--jwt-secret", SECRET]);
    let mut writer = server.client();
    let now = now_ms();
    writer.send(&op_batch(vec![put_op(1, "solo", "a", map(vec![("n", Value::from(1))]), now)]));
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(vec![put_op(2, "solo", "a", map(vec![("n", Value::from(2))]), now + 1)]));
    writer.recv_type("OP_ACK");

    let mut reader = server.client();
    let rows = query(&mut reader, "q", "solo", map(vec![]));
    assert_eq!(result_keys(&rows), vec!["a"]);
    let mut other_writer = server.client();
    other_writer.send(&op_batch(vec![put_op(1, "solo", "b", map(vec![("n", Value::from(0))]), now)]));
    other_writer.recv_type("OP_ACK");
    assert_eq!(get(&reader.recv_type("SERVER_EVENT"), "payload.key").as_str(), Some("b"));
    assert_eq!(get(&reader.recv_type("QUERY_UPDATE"), "payload.key").as_str(), Some("b"));
    assert_eq!(get(&writer.recv_type("SERVER_EVENT"), "payload.key").as_str(), Some("b"));

    writer.send(&op_batch(vec![put_op(3, "solo", "a", map(vec![("n", Value::from(3))]), now + 2)]));
    writer.recv_type("OP_ACK");
    for client in [&mut reader, &mut other_writer] {
        let event = client.recv_type("SERVER_EVENT");
        assert_eq!(get(&event, "payload.key").as_str(), Some("a"));
        assert_eq!(get(&event, "payload.record.value.n").as_u64(), Some(3));
    }
}

// Goal: a writer's own messages take effect in order (DECISIONS §2.2): a QUERY_SUB sent right
// after an OP_BATCH, without waiting for the ack, sees the batch.
#[test]
fn a_query_after_a_batch_sees_it() {
    let server = Server::two_shards();
    let mut client = server.client();
    let now = now_ms();
    let ops = (0..50).map(|n| put_op(n + 1, "ordered", &format!("k{n}"), Value::from(n), now)).collect();
    client.send(&op_batch(ops));
    client
        .send(&msg_payload("QUERY_SUB", vec![("queryId", s("q")), ("mapName", s("ordered")), ("query", map(vec![]))]));
    assert_eq!(type_of(&client.recv()), "OP_ACK");
    let response = client.recv_type("QUERY_RESP");
    assert_eq!(result_keys(get(&response, "payload")).len(), 50);
}

// Goal: write concern is reported honestly with the memory backend: PERSISTED is acked as
// APPLIED with per-op results; a timestamp too far ahead is rejected alone (DECISIONS §1.8,
// §4.6). Method: a batch with writeConcern PERSISTED and one future op.
#[test]
fn write_concern_and_future_timestamps() {
    let server = Server::two_shards();
    let mut client = server.client();
    let now = now_ms();
    let good = put_op(1, "wc", "a", Value::from(1), now);
    let future = put_op(2, "wc", "b", Value::from(2), now + 10 * 60_000);
    let batch =
        msg_payload("OP_BATCH", vec![("ops", Value::Array(vec![good, future])), ("writeConcern", s("PERSISTED"))]);
    client.send(&batch);
    let rejected = client.recv_type("OP_REJECTED");
    assert_eq!(get(&rejected, "payload.opId").as_str(), Some("2"));
    assert_eq!(get(&rejected, "payload.reason").as_str(), Some("timestamp too far in the future"));
    assert_eq!(get(&rejected, "payload.code").as_u64(), Some(400));
    let ack = client.recv_type("OP_ACK");
    assert_eq!(get(&ack, "payload.lastId").as_str(), Some("2"));
    assert_eq!(get(&ack, "payload.achievedLevel").as_str(), Some("APPLIED"), "never PERSISTED without storage");
    assert_eq!(get(&ack, "payload.results.0.opId").as_str(), Some("1"));
    assert_eq!(get(&ack, "payload.results.0.success"), &Value::from(true));
    assert_eq!(get(&ack, "payload.results.0.achievedLevel").as_str(), Some("APPLIED"));
    assert_eq!(get(&ack, "payload.results.1.success"), &Value::from(false));
    let payload = query(&mut client, "q", "wc", map(vec![]));
    assert_eq!(result_keys(&payload), vec!["a"]);
}

// Goal: CLIENT_OP is applied and acked with its own id; OR-map adds and removes by tag produce
// OR_ADD/OR_REMOVE events. Method: a subscriber interested through a write of its own.
#[test]
fn client_op_and_or_map_events() {
    let server = Server::two_shards();
    let mut watcher = server.client();
    let mut writer = server.client();
    let now = now_ms();
    // The watcher becomes interested in "tags" by writing to it (DECISIONS §3.1).
    watcher.send(&msg_payload(
        "CLIENT_OP",
        vec![
            ("id", s("5")),
            ("mapName", s("tags")),
            ("opType", s("PUT")),
            ("key", s("w")),
            ("record", map(vec![("value", Value::from(1)), ("timestamp", timestamp(now, 0, "w"))])),
        ],
    ));
    assert_eq!(get(&watcher.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("5"));
    let tag = format!("{now}:0:client-a");
    let add = map(vec![
        ("id", s("1")),
        ("mapName", s("tags")),
        ("opType", s("OR_ADD")),
        ("key", s("post-1")),
        ("orRecord", map(vec![("value", s("red")), ("timestamp", timestamp(now, 0, "client-a")), ("tag", s(&tag))])),
    ]);
    writer.send(&op_batch(vec![add]));
    writer.recv_type("OP_ACK");
    let event = watcher.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.eventType").as_str(), Some("OR_ADD"));
    assert_eq!(get(&event, "payload.orRecord.tag").as_str(), Some(tag.as_str()), "the client's tag is kept");
    let remove = map(vec![
        ("id", s("2")),
        ("mapName", s("tags")),
        ("opType", s("OR_REMOVE")),
        ("key", s("post-1")),
        ("orTag", s(&tag)),
    ]);
    writer.send(&op_batch(vec![remove.clone()]));
    writer.recv_type("OP_ACK");
    let event = watcher.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.eventType").as_str(), Some("OR_REMOVE"));
    assert_eq!(get(&event, "payload.orTag").as_str(), Some(tag.as_str()));
    writer.send(&op_batch(vec![remove]));
    writer.recv_type("OP_ACK");
    watcher.expect_silence();
}
