//! End-to-end: live queries across two shards — QUERY_UPDATE ENTER/UPDATE/LEAVE for writes on
//! either shard, limited windows that refill from the whole map, unsubscription, disconnects,
//! projection and bad queries.
//!
//! "Nothing arrives" is checked with a fence: a second write whose key lies in the same
//! partition as the first travels the same owner queue, so once the fence's update arrives,
//! anything the first write caused has arrived before it.

mod common;

use common::*;
use rmpv::Value;
use shardgrid::hash::partition_of;

/// A key other than `key` in the same partition (so on the same owner and queue).
fn same_partition_key(key: &str) -> String {
    (0..).map(|index| format!("fence-{index}")).find(|candidate| partition_of(candidate) == partition_of(key)).unwrap()
}

fn task(status: &str, priority: i64) -> Value {
    map(vec![("status", s(status)), ("priority", Value::from(priority))])
}

fn put(client: &mut Client, id: u64, map_name: &str, key: &str, value: Value) {
    client.send(&op_batch(vec![put_op(id, map_name, key, value, now_ms() + id)]));
    client.recv_type("OP_ACK");
}

/// Like `put`, for a writer that also subscribes: its own QUERY_UPDATEs may arrive before its
/// OP_ACK, so they are kept in `stash` in arrival order.
fn put_keeping_updates(client: &mut Client, stash: &mut Vec<Value>, id: u64, map_name: &str, key: &str, value: Value) {
    client.send(&op_batch(vec![put_op(id, map_name, key, value, now_ms() + id)]));
    loop {
        let message = client.recv();
        match type_of(&message).as_str() {
            "OP_ACK" => return,
            "QUERY_UPDATE" => stash.push(message),
            "SERVER_EVENT" => {}
            other => panic!("unexpected {other}: {message}"),
        }
    }
}

fn remove(client: &mut Client, id: u64, map_name: &str, key: &str) {
    let op = map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("REMOVE")),
        ("key", s(key)),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(now_ms() + id, 0, "client-a"))])),
    ]);
    client.send(&op_batch(vec![op]));
    client.recv_type("OP_ACK");
}

/// The next QUERY_UPDATE payload, skipping SERVER_EVENTs.
fn next_update(client: &mut Client) -> (String, String, Value) {
    summarize(&client.recv_type("QUERY_UPDATE"))
}

fn summarize(update: &Value) -> (String, String, Value) {
    let payload = get(update, "payload");
    (
        get(payload, "changeType").as_str().unwrap().to_string(),
        get(payload, "key").as_str().unwrap().to_string(),
        get(payload, "value").clone(),
    )
}

fn subscribe(client: &mut Client, query_id: &str, map_name: &str, query_value: Value) -> Value {
    query(client, query_id, map_name, query_value)
}

fn open_tasks() -> Value {
    map(vec![("where", map(vec![("status", s("open"))]))])
}

// Goal: every change of a multi-op OP_BATCH reaches a live query, not just one per owner shard
// (the changes of one batch share the owner's write sequence). Regression: the snapshot gate
// let only the first of them through. Method: one batch of 20 puts to keys on both shards,
// then a second batch updating them all; the subscriber gets 20 ENTERs and 20 UPDATEs.
#[test]
fn every_change_of_a_batch_reaches_the_live_query() {
    let server = Server::two_shards();
    let mut subscriber = server.client();
    assert!(result_keys(&subscribe(&mut subscriber, "all", "batched", map(vec![]))).is_empty());
    let mut writer = server.client();
    let keys: Vec<String> = (0..20).map(|index| format!("row-{index}")).collect();
    for (round, change) in [(0u64, "ENTER"), (1, "UPDATE")] {
        let now = now_ms() + round;
        let ops = keys
            .iter()
            .enumerate()
            .map(|(index, key)| put_op(index as u64 + 1, "batched", key, Value::from(round), now));
        writer.send(&op_batch(ops.collect()));
        writer.recv_type("OP_ACK");
        let mut seen: Vec<String> = (0..keys.len())
            .map(|_| {
                let (change_type, key, _) = next_update(&mut subscriber);
                assert_eq!(change_type, change, "{key}");
                key
            })
            .collect();
        seen.sort();
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(seen, expected);
    }
}

// Goal: subscribers on several connections (so both shards) get ENTER, UPDATE and LEAVE for
// writes landing on both shards, the writer's own subscription included, and nothing for writes
// that never match. Method: four subscribers, writes to keys owned by both shards.
#[test]
fn enter_update_leave_reach_every_subscriber() {
    let server = Server::two_shards();
    let mut subscribers: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for (index, subscriber) in subscribers.iter_mut().enumerate() {
        let payload = subscribe(subscriber, &format!("open-{index}"), "tasks", open_tasks());
        assert!(result_keys(&payload).is_empty());
    }
    let mut writer = server.client();
    subscribe(&mut writer, "mine", "tasks", open_tasks());
    let mut own: Vec<Value> = Vec::new();
    let keys: Vec<String> = (0..6).map(|index| format!("task-{index}")).collect();
    let mut id = 0;
    for key in &keys {
        id += 1;
        put_keeping_updates(&mut writer, &mut own, id, "tasks", key, task("open", 1));
    }
    id += 1;
    put_keeping_updates(&mut writer, &mut own, id, "tasks", &keys[0], task("open", 5));
    id += 1;
    put_keeping_updates(&mut writer, &mut own, id, "tasks", &keys[1], task("done", 1));
    id += 1;
    writer.send(&op_batch(vec![map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s("tasks")),
        ("opType", s("REMOVE")),
        ("key", s(&keys[2])),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(now_ms() + id, 0, "client-a"))])),
    ])]));
    loop {
        let message = writer.recv();
        match type_of(&message).as_str() {
            "OP_ACK" => break,
            "QUERY_UPDATE" => own.push(message),
            _ => {}
        }
    }
    // A write that never matched: silent, proven by a fence in the same partition.
    id += 1;
    put_keeping_updates(&mut writer, &mut own, id, "tasks", "never-open", task("done", 9));
    let fence = same_partition_key("never-open");
    id += 1;
    put_keeping_updates(&mut writer, &mut own, id, "tasks", &fence, task("open", 0));

    let mut expected: Vec<(String, String)> = keys.iter().map(|key| ("ENTER".to_string(), key.clone())).collect();
    expected.extend([
        ("UPDATE".to_string(), keys[0].clone()),
        ("LEAVE".to_string(), keys[1].clone()),
        ("LEAVE".to_string(), keys[2].clone()),
        ("ENTER".to_string(), fence.clone()),
    ]);
    expected.sort();
    let check = |updates: Vec<(String, String, Value)>, who: &str| {
        let mut summary: Vec<(String, String)> =
            updates.iter().map(|(change, key, _)| (change.clone(), key.clone())).collect();
        summary.sort();
        assert_eq!(summary, expected, "{who}");
        let updated = updates.iter().find(|(change, key, _)| change == "UPDATE" && *key == keys[0]).unwrap();
        assert_eq!(get(&updated.2, "priority").as_u64(), Some(5), "{who}");
    };
    for (index, subscriber) in subscribers.iter_mut().enumerate() {
        let updates = (0..expected.len()).map(|_| next_update(subscriber)).collect();
        check(updates, &format!("subscriber {index}"));
    }
    // The writer's own subscription sees its own writes (DECISIONS §3.2).
    while own.len() < expected.len() {
        own.push(writer.recv_type("QUERY_UPDATE"));
    }
    check(own.iter().map(summarize).collect(), "writer");
}

// Goal: a sorted, limited window stays the top N: a better row displaces the last (ENTER +
// LEAVE), and a row leaving pulls in the next row from the whole map, including rows the window
// never held (DECISIONS §3.3). Method: limit 3 by priority asc over rows on both shards.
#[test]
fn limited_window_refills_from_the_whole_map() {
    let server = Server::two_shards();
    let mut writer = server.client();
    let mut id = 0;
    for priority in 1..=8 {
        id += 1;
        put(&mut writer, id, "ranked", &format!("row-{priority}"), task("open", priority * 10));
    }
    let mut subscriber = server.client();
    let window = map(vec![
        ("sort", Value::Array(vec![map(vec![("field", s("priority")), ("direction", s("asc"))])])),
        ("limit", Value::from(3)),
    ]);
    let payload = subscribe(&mut subscriber, "top3", "ranked", window);
    assert_eq!(result_keys(&payload), vec!["row-1", "row-2", "row-3"]);
    assert_eq!(get(&payload, "hasMore"), &Value::from(true));

    id += 1;
    put(&mut writer, id, "ranked", "row-best", task("open", 0));
    let mut got = [next_update(&mut subscriber), next_update(&mut subscriber)];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("ENTER", "row-best"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("LEAVE", "row-3"));

    // Removing a row in the window: it leaves and row-3 (seen before, now outside) re-enters.
    id += 1;
    remove(&mut writer, id, "ranked", "row-1");
    let mut got = [next_update(&mut subscriber), next_update(&mut subscriber)];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("ENTER", "row-3"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("LEAVE", "row-1"));

    // Two more leave; row-4 was never in the window and must still enter.
    id += 1;
    remove(&mut writer, id, "ranked", "row-best");
    let mut got = [next_update(&mut subscriber), next_update(&mut subscriber)];
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("ENTER", "row-4"));
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("LEAVE", "row-best"));
    let fresh = subscribe(
        &mut subscriber,
        "check",
        "ranked",
        map(vec![
            ("sort", Value::Array(vec![map(vec![("field", s("priority")), ("direction", s("asc"))])])),
            ("limit", Value::from(3)),
        ]),
    );
    assert_eq!(result_keys(&fresh), vec!["row-2", "row-3", "row-4"]);
}

// Goal: QUERY_UNSUB stops updates for that query only; re-subscribing with the same id replaces
// the subscription (one set of updates, not two). Method: fence writes in the same partition.
#[test]
fn unsubscribe_and_resubscribe() {
    let server = Server::two_shards();
    let mut subscriber = server.client();
    let mut writer = server.client();
    subscribe(&mut subscriber, "a", "notes", map(vec![]));
    subscribe(&mut subscriber, "a", "notes", map(vec![])); // replaces "a"
    subscribe(&mut subscriber, "b", "notes", map(vec![]));
    subscriber.send(&msg_payload("QUERY_UNSUB", vec![("queryId", s("b"))]));
    subscriber.expect_silence();
    put(&mut writer, 1, "notes", "n1", Value::from(1));
    let fence = same_partition_key("n1");
    put(&mut writer, 2, "notes", &fence, Value::from(2));
    let first = subscriber.recv_type("QUERY_UPDATE");
    assert_eq!(get(&first, "payload.queryId").as_str(), Some("a"));
    assert_eq!(get(&first, "payload.key").as_str(), Some("n1"));
    let second = subscriber.recv_type("QUERY_UPDATE");
    assert_eq!(get(&second, "payload.queryId").as_str(), Some("a"), "b was unsubscribed, a replaced once");
    assert_eq!(get(&second, "payload.key").as_str(), Some(fence.as_str()));
    subscriber.send(&msg_payload("QUERY_UNSUB", vec![("queryId", s("nope"))]));
    let error = subscriber.recv_type("ERROR");
    assert_eq!(get(&error, "payload.code").as_u64(), Some(404));
}

// Goal: a disconnect removes the connection's subscriptions from every shard.
// Method: 20 connections subscribe and close; /metrics reports no live queries left.
#[test]
fn subscriptions_vanish_on_disconnect() {
    let server = Server::two_shards();
    for index in 0..20 {
        let mut client = server.client();
        subscribe(&mut client, &format!("q{index}"), "gone", map(vec![]));
        drop(client);
    }
    poll_until("no live queries are left", RECV_TIMEOUT, || {
        (server.metric_sum("shardgrid_live_queries") == 0).then_some(())
    });
}

// Goal: `fields` projects QUERY_RESP and QUERY_UPDATE values, never SERVER_EVENTs (DECISIONS
// §3.5). Method: one projected subscription, one write.
#[test]
fn projection_applies_to_query_messages_only() {
    let server = Server::two_shards();
    let mut subscriber = server.client();
    subscriber.send(&msg_payload(
        "QUERY_SUB",
        vec![
            ("queryId", s("p")),
            ("mapName", s("people")),
            ("query", map(vec![])),
            ("fields", Value::Array(vec![s("name")])),
        ],
    ));
    subscriber.recv_type("QUERY_RESP");
    let mut writer = server.client();
    put(&mut writer, 1, "people", "ada", map(vec![("name", s("Ada")), ("secret", s("x"))]));
    let event = subscriber.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.record.value.secret").as_str(), Some("x"));
    let update = subscriber.recv_type("QUERY_UPDATE");
    assert_eq!(get(&update, "payload.value.name").as_str(), Some("Ada"));
    assert_eq!(get(&update, "payload.value.secret"), &Value::Nil);
}

// Goal: bad queries get clear errors and the connection keeps serving; unknown operators and
// uncompilable regexes are false leaves, not errors (DECISIONS §1.9).
#[test]
fn bad_queries_are_answered() {
    let server = Server::two_shards();
    let mut client = server.client();
    put(&mut client, 1, "bad", "k", map(vec![("name", s("x"))]));
    for query_value in [
        map(vec![("limit", Value::from(-1))]),
        map(vec![("limit", s("ten"))]),
        map(vec![(
            "predicate",
            map(vec![("op", s("in")), ("attribute", s("name")), ("value", Value::Array(vec![Value::from(1); 20_000]))]),
        )]),
        Value::from(5),
    ] {
        client.send(&msg_payload(
            "QUERY_SUB",
            vec![("queryId", s("bad")), ("mapName", s("bad")), ("query", query_value)],
        ));
        let error = client.recv_type("ERROR");
        assert_eq!(get(&error, "payload.code").as_u64(), Some(400), "{error}");
    }
    let unknown = map(vec![("predicate", map(vec![("op", s("fuzzy")), ("attribute", s("name")), ("value", s("x"))]))]);
    assert!(result_keys(&query(&mut client, "u", "bad", unknown)).is_empty());
    let broken_regex =
        map(vec![("predicate", map(vec![("op", s("regex")), ("attribute", s("name")), ("value", s("(unclosed"))]))]);
    assert!(result_keys(&query(&mut client, "r", "bad", broken_regex)).is_empty());
    let pathological =
        map(vec![("predicate", map(vec![("op", s("regex")), ("attribute", s("name")), ("value", s("(x+x+)+y"))]))]);
    assert!(result_keys(&query(&mut client, "p", "bad", pathological)).is_empty());
    assert_eq!(result_keys(&query(&mut client, "ok", "bad", map(vec![]))), vec!["k"]);
}
