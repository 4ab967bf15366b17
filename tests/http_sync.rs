//! End-to-end `POST /sync` (PROTOCOL §9, DECISIONS §4.5): authentication like the WebSocket
//! path, `operations` applied and acknowledged, `syncMaps` answered with every change after the
//! request's point in server arrival order (so writers with lagging clocks lose nothing, and
//! bounded replies continue where they stopped), `queries` answered key-ascending, `searches`
//! refused with 501, and bad bodies refused with nothing applied.

mod common;
mod sync_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::*;
use rmpv::Value;
use shardgrid::limits::{HTTP_BODY_BYTES_MAX, HTTP_SYNC_DELTA_RECORDS_MAX};
use shardgrid::model::Timestamp;
use sync_support::*;

fn bearer() -> String {
    format!("Bearer {}", token("user-1", &["USER"]))
}

/// A request body: `clientId`, `clientHlc` and `fields`.
fn body(fields: Vec<(&str, Value)>) -> Vec<u8> {
    let mut entries = vec![
        ("clientId", s("http-client")),
        ("clientHlc", timestamp_value(&Timestamp::new(now_ms(), 0, "http-client"))),
    ];
    entries.extend(fields);
    encode(&map(entries))
}

/// POSTs `body` to /sync with `authorization` (if any); returns (status, body).
fn post(server: &Server, authorization: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
    let mut headers = vec![("Content-Type", "application/x-msgpack")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    server.http("POST", "/sync", &headers, body)
}

/// POSTs a valid request and decodes the 200 reply.
fn sync(server: &Server, fields: Vec<(&str, Value)>) -> Value {
    let (status, reply) = post(server, Some(&bearer()), &body(fields));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    rmpv::decode::read_value(&mut &reply[..]).unwrap()
}

fn sync_map(map_name: &str, after: &Value) -> Value {
    Value::Array(vec![map(vec![("mapName", s(map_name)), ("lastSyncTimestamp", after.clone())])])
}

fn origin() -> Value {
    timestamp_value(&Timestamp::new(0, 0, ""))
}

/// Merges the first delta of a reply into `replica`; returns the delta's point and how many
/// records it carried.
fn apply_delta(reply: &Value, replica: &mut BTreeMap<String, (Value, Timestamp)>) -> (Value, usize) {
    let delta = get(reply, "deltas.0");
    let Value::Array(records) = get(delta, "records") else { panic!("records: {reply}") };
    for entry in records {
        let record = get(entry, "record");
        let value = get(record, "value").clone();
        let expected_type = if value.is_nil() { "REMOVE" } else { "PUT" };
        assert_eq!(get(entry, "eventType").as_str(), Some(expected_type), "{entry}");
        let timestamp = timestamp_of(get(record, "timestamp"));
        let key = get(entry, "key").as_str().unwrap().to_string();
        if replica.get(&key).is_none_or(|(_, current)| *current < timestamp) {
            replica.insert(key, (value, timestamp));
        }
    }
    (get(delta, "serverSyncTimestamp").clone(), records.len())
}

fn write(client: &mut Client, ops: Vec<Value>) {
    for batch in ops.chunks(10_000) {
        client.send(&op_batch(batch.to_vec()));
        client.recv_type("OP_ACK");
    }
}

#[test]
fn stale_http_client_converges_and_lagging_writers_lose_nothing() {
    // Goal: issue 6 over POST /sync — a client that synced once, then went away while others
    // updated, deleted and added keys (one writer's clock lagging far behind the client's last
    // sync) and while it edited offline, gets exactly the server's map back from one request that
    // carries its edits as `operations`. Method: the client's first sync fills its replica and
    // gives it a point; after the changes it sends its edits and the point; its replica is
    // compared with a model and with a full sync from the origin.
    let server = Server::two_shards();
    let mut writer = server.client();
    let base = now_ms() - 600_000;
    let map_name = "notes";
    let keys: Vec<String> = (0..220).map(|index| format!("note-{index}")).collect();
    let mut model = BTreeMap::new();
    let mut ops = Vec::new();
    for (index, key) in keys[..200].iter().enumerate() {
        let timestamp = Timestamp::new(base + index as u64, 0, "writer");
        ops.push(put(index + 1, map_name, key, s("original"), &timestamp));
        model_merge(&mut model, key, s("original"), timestamp);
    }
    write(&mut writer, ops);

    let mut replica = BTreeMap::new();
    let first = sync(&server, vec![("syncMaps", sync_map(map_name, &origin()))]);
    let (point, count) = apply_delta(&first, &mut replica);
    assert_eq!(count, 200);
    assert_eq!(replica, model);
    assert!(get(&first, "ack").is_nil(), "no operations, no ack");
    timestamp_of(get(&first, "serverHlc"));

    // Others change the map; one writer's clock is two hours behind.
    let mut ops = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        let timestamp = Timestamp::new(base + 100_000 + index as u64, 0, "writer");
        match index {
            0..20 | 200.. => {
                ops.push(put(1_000 + index, map_name, key, s("server-edit"), &timestamp));
                model_merge(&mut model, key, s("server-edit"), timestamp);
            }
            20..40 => {
                ops.push(remove(1_000 + index, map_name, key, &timestamp));
                model_merge(&mut model, key, Value::Nil, timestamp);
            }
            _ => {}
        }
    }
    write(&mut writer, ops);
    let mut lagging = server.client();
    let lagging_keys: Vec<String> = (0..20).map(|index| format!("late-{index}")).collect();
    let mut ops = Vec::new();
    for (index, key) in lagging_keys.iter().enumerate() {
        let timestamp = Timestamp::new(base - 7_200_000 + index as u64, 0, "lagging");
        ops.push(put(index + 1, map_name, key, s("from the past"), &timestamp));
        model_merge(&mut model, key, s("from the past"), timestamp);
    }
    write(&mut lagging, ops);

    // The client's offline edits travel as operations with its next sync.
    let mut operations = Vec::new();
    for key in &keys[40..60] {
        let timestamp = Timestamp::new(base + 200_000, operations.len() as u32, "http-client");
        operations.push(put(operations.len() + 1, map_name, key, s("client-edit"), &timestamp));
        replica.insert(key.clone(), (s("client-edit"), timestamp.clone()));
        model_merge(&mut model, key, s("client-edit"), timestamp);
    }
    let second =
        sync(&server, vec![("operations", Value::Array(operations)), ("syncMaps", sync_map(map_name, &point))]);
    assert_eq!(get(&second, "ack.lastId"), &s("20"));
    let (point, count) = apply_delta(&second, &mut replica);
    assert!(count >= 20 + 20 + 20 + 20, "every change since the point came back ({count})");
    assert_eq!(replica, model, "the client holds exactly the server's records");

    // Polling again brings nothing new.
    let third = sync(&server, vec![("syncMaps", sync_map(map_name, &point))]);
    let before = replica.clone();
    apply_delta(&third, &mut replica);
    assert_eq!(replica, before);

    // A client starting from the origin gets the same map, over both shards.
    let mut fresh = BTreeMap::new();
    apply_delta(&sync(&server, vec![("syncMaps", sync_map(map_name, &origin()))]), &mut fresh);
    assert_eq!(fresh, model);
    let partitions: Vec<u16> = fresh.keys().map(|key| shardgrid::hash::partition_of(key)).collect();
    assert!(partitions.iter().any(|partition| *partition < 100) && partitions.iter().any(|partition| *partition > 171));
}

#[test]
fn bounded_delta_replies_continue_where_they_stopped() {
    // Goal: a map with more changes than one reply carries comes over several requests, each
    // continuing from the previous reply's serverSyncTimestamp, without losing a key. Method:
    // write more keys than HTTP_SYNC_DELTA_RECORDS_MAX, then poll from the origin until a reply
    // is empty.
    let server = Server::two_shards();
    let mut writer = server.client();
    let base = now_ms() - 60_000;
    let total = HTTP_SYNC_DELTA_RECORDS_MAX + 2_000;
    let ops: Vec<Value> = (0..total)
        .map(|index| {
            put(index + 1, "many", &format!("k{index}"), Value::from(index), &Timestamp::new(base, index as u32, "w"))
        })
        .collect();
    write(&mut writer, ops);
    let mut replica = BTreeMap::new();
    let mut point = origin();
    let mut replies = 0;
    loop {
        let reply = sync(&server, vec![("syncMaps", sync_map("many", &point))]);
        let (next, count) = apply_delta(&reply, &mut replica);
        assert!(count <= HTTP_SYNC_DELTA_RECORDS_MAX);
        point = next;
        replies += 1;
        if count == 0 {
            break;
        }
        assert!(replies < 10, "the polls make progress");
    }
    assert!(replies >= 3, "at least two full replies and an empty one");
    assert_eq!(replica.len(), total);
}

#[test]
fn queries_answer_values_key_ascending_and_searches_are_refused() {
    // Goal: PROTOCOL §9 — `queries` return record values key-ascending with `offset` and `limit`
    // applied and `hasMore`; a bad filter and every search get an `errors` entry naming them.
    // Method: write a small todo list, ask with a where-filter, an offset and a limit.
    let server = Server::two_shards();
    let mut writer = server.client();
    let now = now_ms();
    let ops: Vec<Value> = (0..10)
        .map(|index| {
            let todo = map(vec![("n", Value::from(index)), ("done", Value::from(index % 2 == 0))]);
            put(index + 1, "todos", &format!("t{index}"), todo, &Timestamp::new(now, index as u32, "w"))
        })
        .collect();
    write(&mut writer, ops);
    let query = map(vec![
        ("queryId", s("open")),
        ("mapName", s("todos")),
        ("filter", map(vec![("done", Value::from(false))])),
        ("offset", Value::from(1)),
        ("limit", Value::from(2)),
    ]);
    let bad = map(vec![("queryId", s("bad")), ("mapName", s("todos")), ("filter", s("done"))]);
    let search = map(vec![("searchId", s("s1")), ("mapName", s("todos")), ("query", s("anything"))]);
    let reply =
        sync(&server, vec![("queries", Value::Array(vec![query, bad])), ("searches", Value::Array(vec![search]))]);
    let result = get(&reply, "queryResults.0");
    assert_eq!(get(result, "queryId"), &s("open"));
    let Value::Array(values) = get(result, "results") else { panic!("{reply}") };
    let numbers: Vec<u64> = values.iter().map(|value| get(value, "n").as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![3, 5], "odd todos t1, t3, t5, t7, t9 key-ascending, offset 1, limit 2");
    assert_eq!(get(result, "hasMore"), &Value::from(true));
    let Value::Array(errors) = get(&reply, "errors") else { panic!("{reply}") };
    let contexts: Vec<(u64, &str)> = errors
        .iter()
        .map(|error| (get(error, "code").as_u64().unwrap(), get(error, "context").as_str().unwrap()))
        .collect();
    assert_eq!(contexts, vec![(400, "bad"), (501, "s1")]);
}

#[test]
fn operations_are_acknowledged_announced_and_refused_when_from_the_future() {
    // Goal: `operations` apply like an OP_BATCH: interested WebSocket connections get the
    // SERVER_EVENTs, an op stamped too far ahead is refused (results say so) while the rest
    // applies, and the ack names the last op. Method: a WebSocket client syncs the map (which
    // makes it interested), then an HTTP request writes two ops.
    let server = Server::two_shards();
    let mut watcher = server.client();
    lww_walk(&mut Wire::new(&mut watcher), "feed", &mut LwwReplica::default());
    let now = now_ms();
    let operations = vec![
        put(1, "feed", "fine", s("ok"), &Timestamp::new(now, 0, "h")),
        put(2, "feed", "future", s("no"), &Timestamp::new(now + 600_000, 0, "h")),
    ];
    let reply = sync(&server, vec![("operations", Value::Array(operations))]);
    assert_eq!(get(&reply, "ack.lastId"), &s("2"));
    assert_eq!(get(&reply, "ack.results.0.opId"), &s("2"));
    assert_eq!(get(&reply, "ack.results.0.success"), &Value::from(false));
    let event = watcher.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.key"), &s("fine"));
    let mut replica = BTreeMap::new();
    apply_delta(&sync(&server, vec![("syncMaps", sync_map("feed", &origin()))]), &mut replica);
    assert_eq!(replica.keys().collect::<Vec<_>>(), vec!["fine"]);
}

#[test]
fn requests_without_a_valid_token_or_body_are_refused_and_apply_nothing() {
    // Goal: DECISIONS §4.5 and PROTOCOL §9 — 401 without a valid Bearer token (unless
    // --no-auth), 400 with a JSON body for a body that is not a msgpack request, 413 past the
    // body limit; none applies its operations. Method: send each, then look for the write.
    let server = Server::two_shards();
    let write = body(vec![(
        "operations",
        Value::Array(vec![put(1, "guarded", "k", s("v"), &Timestamp::new(now_ms(), 0, "h"))]),
    )]);
    let json = |reply: &[u8]| -> serde_json::Value { serde_json::from_slice(reply).expect("a JSON error body") };
    for authorization in [None, Some("Bearer null"), Some("Bearer undefined"), Some("Bearer ")] {
        let (status, reply) = post(&server, authorization, &write);
        assert_eq!(status, 401, "{authorization:?}");
        assert_eq!(json(&reply), serde_json::json!({"code": 401, "message": "authentication required"}));
    }
    let forged = format!("Bearer {}", signed_token(&serde_json::json!({"sub": "x", "exp": 4_102_444_800u64}), "wrong"));
    let (status, reply) = post(&server, Some(&forged), &write);
    assert_eq!((status, json(&reply)), (401, serde_json::json!({"code": 401, "message": "Authentication failed"})));

    for bad in [&b"\xc1"[..], b"{\"json\": true}", &encode(&Value::from(5)), &encode(&map(vec![("clientId", s("x"))]))]
    {
        let (status, reply) = post(&server, Some(&bearer()), bad);
        assert_eq!(status, 400, "{bad:?}");
        let error = json(&reply);
        assert_eq!(error["code"], 400);
        assert!(error["message"].as_str().unwrap().starts_with("invalid MsgPack body: "), "{error}");
    }

    // Past the limit: refused from the Content-Length alone.
    let mut stream = server.tcp();
    stream.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
    let head = format!(
        "POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        bearer(),
        HTTP_BODY_BYTES_MAX + 1
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"code\":413"), "{response}");

    // An empty body is an empty request.
    let (status, reply) = post(&server, Some(&bearer()), b"");
    assert_eq!(status, 200);
    let reply = rmpv::decode::read_value(&mut &reply[..]).unwrap();
    timestamp_of(get(&reply, "serverHlc"));

    let mut replica = BTreeMap::new();
    let (_, count) = apply_delta(&sync(&server, vec![("syncMaps", sync_map("guarded", &origin()))]), &mut replica);
    assert_eq!(count, 0, "no refused request applied anything");

    // Without authentication configured, no token is needed.
    let open = Server::start(&["--cores", "0-1", "--no-auth"]);
    let (status, _) = post(&open, None, &write);
    assert_eq!(status, 200);
}

#[test]
fn the_access_policy_applies_to_http_sync() {
    // Goal: POST /sync goes through the same access policy as the WebSocket path: with an ACL
    // granting a USER only `todos*`, an operation on another map refuses every operation (403,
    // no ack, nothing applied), and a denied syncMap or query gets an `errors` entry 403 naming
    // it while the allowed ones are answered. Method: a server with --acl; requests mixing
    // allowed and denied maps.
    let path = std::env::temp_dir().join(format!("shardgrid-http-sync-{}-{}.toml", std::process::id(), now_ms()));
    std::fs::write(&path, "[[rule]]\nroles = [\"USER\"]\nmaps = [\"todos*\"]\nallow = [\"read\", \"write\"]\n")
        .unwrap();
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--acl", path.to_str().unwrap()]);
    let now = now_ms();
    let operations = Value::Array(vec![
        put(1, "todos", "a", s("ok"), &Timestamp::new(now, 0, "h")),
        put(2, "secret", "b", s("no"), &Timestamp::new(now, 1, "h")),
    ]);
    let reply = sync(&server, vec![("operations", operations)]);
    assert!(get(&reply, "ack").is_nil(), "{reply}");
    assert_eq!(get(&reply, "errors.0.code").as_u64(), Some(403));
    assert_eq!(get(&reply, "errors.0.context"), &s("2"));

    let query =
        |id: &str, map_name: &str| map(vec![("queryId", s(id)), ("mapName", s(map_name)), ("filter", Value::Nil)]);
    let maps = Value::Array(vec![
        map(vec![("mapName", s("secret")), ("lastSyncTimestamp", origin())]),
        map(vec![("mapName", s("todos")), ("lastSyncTimestamp", origin())]),
    ]);
    let reply = sync(
        &server,
        vec![("syncMaps", maps), ("queries", Value::Array(vec![query("q1", "secret"), query("q2", "todos")]))],
    );
    let Value::Array(errors) = get(&reply, "errors") else { panic!("{reply}") };
    let denied: Vec<(u64, &str)> = errors
        .iter()
        .map(|error| (get(error, "code").as_u64().unwrap(), get(error, "context").as_str().unwrap()))
        .collect();
    assert_eq!(denied, vec![(403, "secret"), (403, "q1")]);
    assert_eq!(get(&reply, "deltas.0.mapName"), &s("todos"));
    assert_eq!(get(&reply, "deltas.0.records"), &Value::Array(Vec::new()), "the refused operations applied nothing");
    assert_eq!(get(&reply, "queryResults.0.queryId"), &s("q2"));
    let _ = std::fs::remove_file(&path);
}
