//! End-to-end: full-text search across shards — one-shot results that do not depend on the
//! shard count, and live searches with ENTER/UPDATE/LEAVE.

mod common;

use common::*;
use rmpv::Value;

const DOCUMENTS: &[(&str, &str)] = &[
    ("d1", "Fresh milk and bread"),
    ("d2", "milk milk milk"),
    ("d3", "Bread, butter and jam"),
    ("d4", "A quiet day"),
    ("d5", "Chocolate milk shake with extra milk"),
    ("d6", "bread crumbs"),
    ("d7", "Milk"),
    ("d8", "Nothing to see here"),
];

fn load(client: &mut Client, map_name: &str) {
    let now = now_ms();
    let ops = DOCUMENTS
        .iter()
        .enumerate()
        .map(|(index, (key, text))| {
            put_op(index as u64 + 1, map_name, key, map(vec![("text", s(text)), ("n", Value::from(index))]), now)
        })
        .collect();
    client.send(&op_batch(ops));
    client.recv_type("OP_ACK");
}

fn search(client: &mut Client, request_id: &str, map_name: &str, text: &str) -> Value {
    client
        .send(&msg_payload("SEARCH", vec![("requestId", s(request_id)), ("mapName", s(map_name)), ("query", s(text))]));
    let response = client.recv_type("SEARCH_RESP");
    get(&response, "payload").clone()
}

fn hits(payload: &Value) -> Vec<(String, f64)> {
    match get(payload, "results") {
        Value::Array(rows) => rows
            .iter()
            .map(|row| (get(row, "key").as_str().unwrap().to_string(), get(row, "score").as_f64().unwrap()))
            .collect(),
        other => panic!("results must be an array: {other}"),
    }
}

// Goal: results and scores do not depend on the number of shards (DECISIONS §6.2).
// Method: the same documents on a 1-shard and a 2-shard server, the same searches.
#[test]
fn results_do_not_depend_on_the_shard_count() {
    let one = Server::start(&["--cores", "0", "--jwt-secret", SECRET]);
    let two = Server::two_shards();
    let mut results = Vec::new();
    for server in [&one, &two] {
        let mut client = server.client();
        load(&mut client, "docs");
        let milk = search(&mut client, "r1", "docs", "milk");
        let both = search(&mut client, "r2", "docs", "MILK bread");
        results.push((hits(&milk), hits(&both)));
        assert_eq!(get(&milk, "requestId").as_str(), Some("r1"));
        assert_eq!(get(&milk, "totalCount").as_u64(), Some(4));
        assert_eq!(
            get(&milk, "results.0.key").as_str(),
            Some("d2"),
            "three occurrences in a short document rank first"
        );
        assert_eq!(get(&milk, "results.0.value.text").as_str(), Some("milk milk milk"), "results carry the value");
        assert_eq!(get(&milk, "results.0.matchedTerms.0").as_str(), Some("milk"));
    }
    let (one_milk, one_both) = &results[0];
    let (two_milk, two_both) = &results[1];
    for (a, b) in one_milk.iter().zip(two_milk).chain(one_both.iter().zip(two_both)) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    assert_eq!(one_both.len(), 6);
}

// Goal: a live search sends ENTER for a new match, UPDATE for a changed match, LEAVE when a
// document stops matching or is deleted; its snapshot is a SEARCH_RESP with the subscription id.
#[test]
fn live_search_updates() {
    let server = Server::two_shards();
    let mut writer = server.client();
    load(&mut writer, "live");
    let mut subscriber = server.client();
    subscriber.send(&msg_payload(
        "SEARCH_SUB",
        vec![("subscriptionId", s("sub-1")), ("mapName", s("live")), ("query", s("jam"))],
    ));
    let first = subscriber.recv_type("SEARCH_RESP");
    assert_eq!(get(&first, "payload.requestId").as_str(), Some("sub-1"));
    assert_eq!(hits(get(&first, "payload")).into_iter().map(|(key, _)| key).collect::<Vec<_>>(), vec!["d3"]);

    let now = now_ms() + 1_000;
    writer.send(&op_batch(vec![put_op(100, "live", "new", map(vec![("text", s("strawberry jam"))]), now)]));
    writer.recv_type("OP_ACK");
    let update = subscriber.recv_type("SEARCH_UPDATE");
    assert_eq!(get(&update, "payload.changeType").as_str(), Some("ENTER"));
    assert_eq!(get(&update, "payload.key").as_str(), Some("new"));
    assert_eq!(get(&update, "payload.value.text").as_str(), Some("strawberry jam"));
    assert!(get(&update, "payload.score").as_f64().unwrap() > 0.0);

    writer.send(&op_batch(vec![put_op(101, "live", "d3", map(vec![("text", s("jam jam"))]), now + 1)]));
    writer.recv_type("OP_ACK");
    let update = subscriber.recv_type("SEARCH_UPDATE");
    assert_eq!(
        (get(&update, "payload.changeType").as_str(), get(&update, "payload.key").as_str()),
        (Some("UPDATE"), Some("d3"))
    );

    writer.send(&op_batch(vec![put_op(102, "live", "d3", map(vec![("text", s("no longer"))]), now + 2)]));
    writer.recv_type("OP_ACK");
    let update = subscriber.recv_type("SEARCH_UPDATE");
    assert_eq!(
        (get(&update, "payload.changeType").as_str(), get(&update, "payload.key").as_str()),
        (Some("LEAVE"), Some("d3"))
    );
    assert_eq!(get(&update, "payload.value"), &Value::Nil);

    let remove = map(vec![
        ("id", s("103")),
        ("mapName", s("live")),
        ("opType", s("REMOVE")),
        ("key", s("new")),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(now + 3, 0, "client-a"))])),
    ]);
    writer.send(&op_batch(vec![remove]));
    writer.recv_type("OP_ACK");
    let update = subscriber.recv_type("SEARCH_UPDATE");
    assert_eq!(
        (get(&update, "payload.changeType").as_str(), get(&update, "payload.key").as_str()),
        (Some("LEAVE"), Some("new"))
    );

    subscriber.send(&msg_payload("SEARCH_UNSUB", vec![("subscriptionId", s("sub-1"))]));
    subscriber.send(&msg_payload("SEARCH_UNSUB", vec![("subscriptionId", s("sub-1"))]));
    let error = subscriber.recv_type("ERROR");
    assert_eq!(get(&error, "payload.code").as_u64(), Some(404));
}

// Goal: a map nobody wrote, an empty query and an invalid minScore are answered, never hang.
#[test]
fn odd_searches_are_answered() {
    let server = Server::two_shards();
    let mut client = server.client();
    assert!(hits(&search(&mut client, "a", "empty", "anything")).is_empty());
    assert!(hits(&search(&mut client, "b", "empty", "  ,,, ")).is_empty());
    client.send(&msg_payload("SEARCH", vec![("requestId", s("c")), ("mapName", s("")), ("query", s("x"))]));
    let response = client.recv_type("SEARCH_RESP");
    assert!(get(&response, "payload.error").as_str().is_some());
}
