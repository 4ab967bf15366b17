//! End-to-end: entry processors (`ENTRY_PROCESS`, `ENTRY_PROCESS_BATCH`) and conflict resolvers
//! (`REGISTER_RESOLVER`, `UNREGISTER_RESOLVER`, `LIST_RESOLVERS`, `MERGE_REJECTED`) against the
//! real binary with two shards. Every test uses keys owned by each of the two shards, so each
//! request is handled both on the connection's own shard and across the mesh.

mod common;

use common::*;
use rmpv::Value;
use shardgrid::hash::{partition_of, PARTITION_COUNT};
use shardgrid_shards::{PartitionId, PartitionTable};

/// The JWT server with two shards and the given extra options.
fn two_shards_with(extra: &[&str]) -> Server {
    let mut args = vec!["--cores", "0-1", "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// One key owned by shard 0 and one owned by shard 1, both starting with `prefix`.
fn key_on_each_shard(prefix: &str) -> [String; 2] {
    let table = PartitionTable::new(PARTITION_COUNT, 2);
    let mut found: [Option<String>; 2] = [None, None];
    for index in 0.. {
        let key = format!("{prefix}{index}");
        let slot = &mut found[table.owner(PartitionId(partition_of(&key))).index()];
        if slot.is_none() {
            *slot = Some(key);
        }
        if let [Some(first), Some(second)] = &found {
            return [first.clone(), second.clone()];
        }
    }
    unreachable!("the loop returns once both shards have a key")
}

fn processor(name: &str, code: &str, args: Option<Value>) -> Value {
    let mut fields = vec![("name", s(name)), ("code", s(code))];
    if let Some(args) = args {
        fields.push(("args", args));
    }
    map(fields)
}

/// Sends `ENTRY_PROCESS` and returns the `ENTRY_PROCESS_RESPONSE`.
fn process(client: &mut Client, request_id: &str, map_name: &str, key: &str, processor: Value) -> Value {
    let request = msg(
        "ENTRY_PROCESS",
        vec![("requestId", s(request_id)), ("mapName", s(map_name)), ("key", s(key)), ("processor", processor)],
    );
    client.send(&request);
    let response = client.recv_type("ENTRY_PROCESS_RESPONSE");
    assert_eq!(get(&response, "requestId").as_str(), Some(request_id), "{response}");
    response
}

/// Sends `REGISTER_RESOLVER` and returns the response.
fn register(client: &mut Client, request_id: &str, map_name: &str, resolver: Vec<(&str, Value)>) -> Value {
    client.send(&msg(
        "REGISTER_RESOLVER",
        vec![("requestId", s(request_id)), ("mapName", s(map_name)), ("resolver", map(resolver))],
    ));
    let response = client.recv_type("REGISTER_RESOLVER_RESPONSE");
    assert_eq!(get(&response, "requestId").as_str(), Some(request_id), "{response}");
    response
}

/// The live values of `map_name`, read with a fresh query, as (key, value) in key order.
fn read_map(client: &mut Client, map_name: &str) -> Vec<(String, Value)> {
    let query_id = format!("read-{map_name}");
    let payload = query(client, &query_id, map_name, map(vec![]));
    // Only a snapshot is wanted: its live updates would get in the way of later reads.
    client.send(&msg_payload("QUERY_UNSUB", vec![("queryId", s(&query_id))]));
    let Value::Array(rows) = get(&payload, "results") else { panic!("results must be an array: {payload}") };
    let mut rows: Vec<(String, Value)> =
        rows.iter().map(|row| (get(row, "key").as_str().unwrap().to_string(), get(row, "value").clone())).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn value_of(client: &mut Client, map_name: &str, key: &str) -> Option<Value> {
    read_map(client, map_name).into_iter().find(|(found, _)| found == key).map(|(_, value)| value)
}

/// A query that matches nothing: it makes a connection interested in a map (so it gets the
/// map's SERVER_EVENTs) without live-query updates in between.
fn events_only() -> Value {
    map(vec![("where", map(vec![("never-set", Value::from(true))]))])
}

/// The next message of type `wanted`, skipping live-query updates and what `recv_type` skips.
fn recv_skipping_updates(client: &mut Client, wanted: &str) -> Value {
    loop {
        let message = client.recv();
        let kind = type_of(&message);
        if kind == wanted {
            return message;
        }
        assert!(matches!(kind.as_str(), "QUERY_UPDATE" | "SERVER_EVENT" | "PONG"), "expected {wanted}, got {message}");
    }
}

const INCREMENT: &str = "const next = (value ?? 0) + args; return {value: next, result: next};";

// Goal: ENTRY_PROCESS runs the processor on the key's owner and writes through the normal
// CRDT path: the reply carries result and newValue, the value is stored, and other interested
// connections get the SERVER_EVENT and QUERY_UPDATE; the processing connection becomes
// interested in the map (a later write by someone else reaches it). Method: increment a
// counter on each shard twice while another client watches the map.
#[test]
fn entry_process_writes_through_the_crdt_path_on_both_shards() {
    let server = Server::two_shards();
    let mut watcher = server.client();
    let mut worker = server.client();
    query(&mut watcher, "watch", "counters", map(vec![]));
    for key in key_on_each_shard("counter-") {
        for expected in [5, 10] {
            let response = process(
                &mut worker,
                &format!("{key}-{expected}"),
                "counters",
                &key,
                processor("inc", INCREMENT, Some(Value::from(5))),
            );
            assert_eq!(get(&response, "success"), &Value::from(true), "{response}");
            assert_eq!(get(&response, "result"), &Value::from(expected));
            assert_eq!(get(&response, "newValue"), &Value::from(expected));
            assert_eq!(get(&response, "error"), &Value::Nil);
            let event = watcher.recv_type("SERVER_EVENT");
            assert_eq!(get(&event, "payload.eventType").as_str(), Some("PUT"));
            assert_eq!(get(&event, "payload.key").as_str(), Some(key.as_str()));
            assert_eq!(get(&event, "payload.record.value"), &Value::from(expected));
            assert!(get(&event, "payload.record.timestamp.millis").as_f64().is_some(), "a server timestamp: {event}");
            let update = watcher.recv_type("QUERY_UPDATE");
            assert_eq!(get(&update, "payload.value"), &Value::from(expected));
        }
        assert_eq!(value_of(&mut watcher, "counters", &key), Some(Value::from(10)));
    }
    worker.expect_silence(); // the processing connection gets no event for its own writes
                             // ENTRY_PROCESS made the worker interested in the map (DECISIONS §3.1).
    let [key, _] = key_on_each_shard("counter-");
    watcher.send(&op_batch(vec![put_op(1, "counters", &key, Value::from(99), now_ms() + 1_000)]));
    recv_skipping_updates(&mut watcher, "OP_ACK");
    let event = worker.recv_type("SERVER_EVENT");
    assert_eq!(get(&event, "payload.record.value"), &Value::from(99));
}

// Goal: the processor sees `value` undefined for an absent key, can read without writing, and
// deletes with `{value: undefined}` (others see a REMOVE with its tombstone). Method: put-if-
// absent, a read-only processor and a delete, on each shard.
#[test]
fn entry_process_reads_creates_and_deletes() {
    let server = Server::two_shards();
    let mut watcher = server.client();
    let mut worker = server.client();
    query(&mut watcher, "watch", "profiles", events_only());
    let put_if_absent = "if (value !== undefined) return {value, result: false}; return {value: args, result: true};";
    for key in key_on_each_shard("profile-") {
        let profile =
            map(vec![("name", s("Ada")), ("tags", Value::Array(vec![s("x"), s("y")])), ("score", Value::F64(2.5))]);
        let response = process(
            &mut worker,
            "create",
            "profiles",
            &key,
            processor("put-if-absent", put_if_absent, Some(profile.clone())),
        );
        assert_eq!(get(&response, "result"), &Value::from(true), "{response}");
        assert_eq!(get(&response, "newValue"), &profile);
        watcher.recv_type("SERVER_EVENT");
        let response = process(
            &mut worker,
            "again",
            "profiles",
            &key,
            processor("put-if-absent", put_if_absent, Some(map(vec![]))),
        );
        assert_eq!(get(&response, "result"), &Value::from(false), "{response}");
        assert_eq!(get(&response, "newValue"), &profile, "unchanged, so nothing was written");
        let read = process(
            &mut worker,
            "read",
            "profiles",
            &key,
            processor("get", "return {result: value.tags.length};", None),
        );
        assert_eq!(get(&read, "result"), &Value::from(2));
        let delete = process(
            &mut worker,
            "delete",
            "profiles",
            &key,
            processor("delete", "return {value: undefined, result: value.name};", None),
        );
        assert_eq!(get(&delete, "success"), &Value::from(true), "{delete}");
        assert_eq!(get(&delete, "result"), &s("Ada"));
        assert_eq!(get(&delete, "newValue"), &Value::Nil, "no newValue after a delete: {delete}");
        let event = watcher.recv_type("SERVER_EVENT");
        assert_eq!(get(&event, "payload.eventType").as_str(), Some("REMOVE"));
        assert_eq!(get(&event, "payload.record.value"), &Value::Nil);
        let absent = process(
            &mut worker,
            "absent",
            "profiles",
            &key,
            processor("check", "return {result: value === undefined};", None),
        );
        assert_eq!(get(&absent, "result"), &Value::from(true));
    }
    watcher.expect_silence(); // the read-only and unchanged runs wrote nothing
    assert!(read_map(&mut watcher, "profiles").is_empty());
}

// Goal: ENTRY_PROCESS_BATCH answers one result per key, keyed by key, each key processed on its
// own owner; a key listed twice runs once. Method: a batch over keys of both shards, one of
// them absent, one repeated, with a processor that fails for one key.
#[test]
fn entry_process_batch_covers_both_shards() {
    let server = Server::two_shards();
    let mut client = server.client();
    let [first, second] = key_on_each_shard("stock-");
    let now = now_ms();
    client.send(&op_batch(vec![
        put_op(1, "stock", &first, Value::from(3), now),
        put_op(2, "stock", &second, Value::from(1), now),
    ]));
    client.recv_type("OP_ACK");
    let take_two = "if (value === undefined) throw new Error('no such item'); \
                    if (value < args) return {result: 'short'}; return {value: value - args, result: 'taken'};";
    let keys = Value::Array(vec![s(&first), s(&second), s("missing"), s(&first)]);
    let request = vec![
        ("requestId", s("b1")),
        ("mapName", s("stock")),
        ("keys", keys),
        ("processor", processor("take", take_two, Some(Value::from(2)))),
    ];
    client.send(&msg("ENTRY_PROCESS_BATCH", request));
    let response = client.recv_type("ENTRY_PROCESS_BATCH_RESPONSE");
    assert_eq!(get(&response, "requestId").as_str(), Some("b1"));
    let Value::Map(results) = get(&response, "results") else { panic!("results must be a map: {response}") };
    assert_eq!(results.len(), 3, "one result per distinct key: {response}");
    assert_eq!(get(&response, &format!("results.{first}.success")), &Value::from(true));
    assert_eq!(get(&response, &format!("results.{first}.result")), &s("taken"));
    assert_eq!(get(&response, &format!("results.{first}.newValue")), &Value::from(1));
    assert_eq!(get(&response, &format!("results.{second}.result")), &s("short"));
    assert_eq!(get(&response, &format!("results.{second}.newValue")), &Value::from(1));
    assert_eq!(get(&response, "results.missing.success"), &Value::from(false));
    assert_eq!(get(&response, "results.missing.error").as_str(), Some("processor \"take\" threw Error: no such item"));
    let mut expected = vec![(first, Value::from(1)), (second, Value::from(1))];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(read_map(&mut client, "stock"), expected);
}

// Goal: a processor that throws, does not compile, returns garbage, loops forever or allocates
// without bound gets `success: false` with the reason; nothing is half-applied (a value it
// mutated before failing is not stored) and the shard keeps serving. Method: each bad
// processor on a stored key of each shard (runaway with a 200 ms limit, bomb with 8 MiB), then a
// good processor on the same key.
#[test]
fn bad_processors_fail_cleanly_and_the_shard_keeps_serving() {
    let server = two_shards_with(&["--processor-cpu-ms", "200", "--processor-memory-mib", "8"]);
    let mut client = server.client();
    let keys = key_on_each_shard("doc-");
    let now = now_ms();
    let ops = keys
        .iter()
        .enumerate()
        .map(|(index, key)| put_op(index as u64 + 1, "docs", key, map(vec![("n", Value::from(1))]), now))
        .collect();
    client.send(&op_batch(ops));
    client.recv_type("OP_ACK");
    let cases = [
        ("throws", "value.n = 2; throw new Error('half way');", "processor \"throws\" threw Error: half way"),
        ("syntax", "return {value: ;", "processor \"syntax\" compile error: SyntaxError"),
        (
            "number",
            "return 42;",
            "processor \"number\" processor must return an object such as {value, result}, got number",
        ),
        ("function", "return {value: () => 1};", "processor \"function\" value holds a function and cannot be stored"),
        (
            "cycle",
            "const a = {}; a.a = a; return {value: a};",
            "processor \"cycle\" value nests deeper than 256 levels (or refers to itself)",
        ),
        ("runaway", "value.n = 3; for (;;) {}", "processor \"runaway\" exceeded the CPU time limit of 200 ms"),
        ("bomb", "let s = 'x'; for (;;) s += s;", "processor \"bomb\" exceeded the memory limit of 8 MiB"),
    ];
    for key in &keys {
        for (name, code, reason) in cases {
            let response = process(&mut client, name, "docs", key, processor(name, code, None));
            assert_eq!(get(&response, "success"), &Value::from(false), "{name}: {response}");
            let error = get(&response, "error").as_str().unwrap_or_else(|| panic!("{name}: no error: {response}"));
            assert!(error.starts_with(reason), "{name}: {error:?} should start with {reason:?}");
            assert_eq!(get(&response, "newValue"), &Value::Nil);
        }
        assert_eq!(
            value_of(&mut client, "docs", key),
            Some(map(vec![("n", Value::from(1))])),
            "nothing half-applied on {key}"
        );
        let response =
            process(&mut client, "good", "docs", key, processor("good", "value.n += 1; return {value};", None));
        assert_eq!(get(&response, "newValue"), &map(vec![("n", Value::from(2))]), "the shard still serves: {response}");
    }
}

// Goal: the protocol's size rules are enforced with `success: false`, never silence. Method:
// an empty name, code over 10 000 characters, a batch over the key limit.
#[test]
fn invalid_processor_definitions_are_refused() {
    let server = Server::two_shards();
    let mut client = server.client();
    let response = process(&mut client, "r1", "m", "k", processor("", "return {};", None));
    assert_eq!(get(&response, "success"), &Value::from(false));
    assert_eq!(get(&response, "error").as_str(), Some("processor name must be 1 to 100 characters, got 0"));
    let response = process(&mut client, "r2", "m", "k", processor("big", &"x".repeat(10_001), None));
    assert_eq!(get(&response, "error").as_str(), Some("processor code must be 1 to 10000 characters, got 10001"));
    let keys = Value::Array((0..1_001).map(|index| s(&format!("k{index}"))).collect());
    client.send(&msg(
        "ENTRY_PROCESS_BATCH",
        vec![
            ("requestId", s("b")),
            ("mapName", s("m")),
            ("keys", keys),
            ("processor", processor("p", "return {};", None)),
        ],
    ));
    let response = client.recv_type("ENTRY_PROCESS_BATCH_RESPONSE");
    assert_eq!(get(&response, "results.k7.error").as_str(), Some("batch exceeds maximum key count (1000)"));
}

// Goal: a resolver decides a conflict: a conflicting write it rejects is not applied, the
// writer gets MERGE_REJECTED {mapName, key, attemptedValue, reason, timestamp} and its op is
// still acknowledged; writes it accepts apply; first writes are not conflicts. Method: register
// a non-negative-stock resolver from one client, write from another on keys of both shards.
#[test]
fn resolver_rejects_a_conflicting_write_with_merge_rejected() {
    let server = Server::two_shards();
    let mut admin = server.client();
    let mut writer = server.client();
    let code =
        "return context.remoteValue < 0 ? {action: 'reject', reason: 'stock cannot go negative'} : {action: 'accept'};";
    let response = register(
        &mut admin,
        "reg",
        "inventory",
        vec![("name", s("non-negative")), ("code", s(code)), ("priority", Value::from(90))],
    );
    assert_eq!(get(&response, "success"), &Value::from(true), "{response}");
    assert_eq!(get(&response, "error"), &Value::Nil);
    let now = now_ms();
    for (index, key) in key_on_each_shard("apples-").iter().enumerate() {
        let id = 10 * index as u64;
        writer.send(&op_batch(vec![put_op(id + 1, "inventory", key, Value::from(-1), now)]));
        assert_eq!(get(&writer.recv_type("OP_ACK"), "payload.lastId").as_str(), Some((id + 1).to_string().as_str()));
        assert_eq!(value_of(&mut writer, "inventory", key), Some(Value::from(-1)), "a first write is no conflict");
        writer.send(&op_batch(vec![put_op(id + 2, "inventory", key, Value::from(5), now + 1)]));
        writer.recv_type("OP_ACK");
        let mut conflicting = put_op(id + 3, "inventory", key, Value::from(-2), now + 2);
        if let Value::Map(fields) = &mut conflicting {
            fields.push((s("writeConcern"), s("APPLIED")));
        }
        writer.send(&op_batch(vec![conflicting]));
        let rejected = writer.recv();
        assert_eq!(type_of(&rejected), "MERGE_REJECTED", "{rejected}");
        assert_eq!(get(&rejected, "mapName").as_str(), Some("inventory"));
        assert_eq!(get(&rejected, "key").as_str(), Some(key.as_str()));
        assert_eq!(get(&rejected, "attemptedValue"), &Value::from(-2));
        assert_eq!(get(&rejected, "reason").as_str(), Some("stock cannot go negative"));
        assert_eq!(get(&rejected, "timestamp.millis").as_f64(), Some((now + 2) as f64));
        assert_eq!(get(&rejected, "timestamp.nodeId").as_str(), Some("client-a"));
        let ack = writer.recv();
        assert_eq!(type_of(&ack), "OP_ACK", "the rejected op is still acknowledged: {ack}");
        assert_eq!(get(&ack, "payload.lastId").as_str(), Some((id + 3).to_string().as_str()));
        assert_eq!(get(&ack, "payload.results.0.success"), &Value::from(false));
        assert_eq!(
            get(&ack, "payload.results.0.error").as_str(),
            Some("rejected by a conflict resolver: stock cannot go negative")
        );
        assert_eq!(value_of(&mut writer, "inventory", key), Some(Value::from(5)), "the rejected write changed nothing");
    }
    let response = process(
        &mut writer,
        "p",
        "inventory",
        &key_on_each_shard("apples-")[1],
        processor("sell", "return {value: value - 10};", None),
    );
    assert_eq!(
        get(&response, "error").as_str(),
        Some("rejected by a conflict resolver: stock cannot go negative"),
        "resolvers bind processors too"
    );
}

// Goal: a merging resolver stores its value everywhere, the writer included (it is sent the
// stored record, newer than its own), and a resolver that fails is skipped (the write is
// accepted). Method: a max-wins resolver and a throwing one, each on its own map, on keys of
// both shards, with a second client watching.
#[test]
fn resolver_merge_reaches_the_writer_and_failures_accept() {
    let server = two_shards_with(&["--processor-cpu-ms", "200"]);
    let mut admin = server.client();
    let mut writer = server.client();
    let mut watcher = server.client();
    let max_wins = "return {action: 'merge', value: Math.max(context.localValue, context.remoteValue)};";
    assert_eq!(
        get(&register(&mut admin, "r1", "scores", vec![("name", s("max")), ("code", s(max_wins))]), "success"),
        &Value::from(true)
    );
    let spin = "for (;;) {}";
    assert_eq!(
        get(&register(&mut admin, "r2", "notes", vec![("name", s("spin")), ("code", s(spin))]), "success"),
        &Value::from(true)
    );
    let broken = "throw new Error('bug');";
    let response = register(
        &mut admin,
        "r3",
        "notes",
        vec![("name", s("broken")), ("code", s(broken)), ("priority", Value::from(100))],
    );
    assert_eq!(get(&response, "success"), &Value::from(true));
    query(&mut watcher, "w", "scores", events_only());
    let now = now_ms();
    for (index, key) in key_on_each_shard("player-").iter().enumerate() {
        let id = 10 * index as u64;
        writer.send(&op_batch(vec![put_op(id + 1, "scores", key, Value::from(90), now)]));
        writer.recv_type("OP_ACK");
        watcher.recv_type("SERVER_EVENT");
        writer.send(&op_batch(vec![put_op(id + 2, "scores", key, Value::from(70), now + 1)]));
        let event = writer.recv();
        assert_eq!(type_of(&event), "SERVER_EVENT", "the writer learns the merged record: {event}");
        assert_eq!(get(&event, "payload.record.value"), &Value::from(90));
        let merged_millis = get(&event, "payload.record.timestamp.millis").as_f64().unwrap();
        let merged_counter = get(&event, "payload.record.timestamp.counter").as_u64().unwrap();
        assert!(
            (merged_millis, merged_counter) > ((now + 1) as f64, 0),
            "newer than the write, so the writer's copy takes it"
        );
        assert_eq!(type_of(&writer.recv()), "OP_ACK");
        let seen = watcher.recv_type("SERVER_EVENT");
        assert_eq!(get(&seen, "payload.record.value"), &Value::from(90));
        assert_eq!(value_of(&mut watcher, "scores", key), Some(Value::from(90)));

        // A throwing resolver and a runaway one (stopped by its limit) decide nothing: accepted.
        writer.send(&op_batch(vec![put_op(id + 3, "notes", key, s("first"), now)]));
        writer.recv_type("OP_ACK");
        writer.send(&op_batch(vec![put_op(id + 4, "notes", key, s("second"), now + 1)]));
        assert_eq!(type_of(&writer.recv()), "OP_ACK");
        assert_eq!(value_of(&mut writer, "notes", key), Some(s("second")));
    }
}

// Goal: registration is validated (sizes, priority, compiling code), LIST_RESOLVERS reports what
// is registered (per map and overall, every shard agreeing), and UNREGISTER removes it; every
// request is answered with its requestId. Method: register good and bad resolvers, list from
// several connections, unregister, and check the conflict is no longer resolved.
#[test]
fn resolver_registration_listing_and_unregistration() {
    let server = Server::two_shards();
    let mut admin = server.client();
    let syntax = register(&mut admin, "bad1", "m1", vec![("name", s("broken")), ("code", s("return {"))]);
    assert_eq!(get(&syntax, "success"), &Value::from(false));
    assert!(
        get(&syntax, "error").as_str().unwrap().starts_with("resolver \"broken\" compile error: SyntaxError"),
        "{syntax}"
    );
    let priority = register(
        &mut admin,
        "bad2",
        "m1",
        vec![("name", s("p")), ("code", s("return {action: 'accept'};")), ("priority", Value::from(101))],
    );
    assert_eq!(get(&priority, "error").as_str(), Some("resolver priority must be 0 to 100, got 101"));
    let empty = register(&mut admin, "bad3", "m1", vec![("name", s("e")), ("code", s(""))]);
    assert_eq!(get(&empty, "error").as_str(), Some("resolver code must be 1 to 50000 characters, got 0"));

    let reject = "return {action: 'reject', reason: 'frozen'};";
    for (request_id, map_name, name, priority, pattern) in [
        ("a", "m1", "low", Some(10), None),
        ("b", "m1", "frozen-drafts", None, Some("draft:*")),
        ("c", "m2", "other", Some(70), None),
    ] {
        let mut resolver = vec![("name", s(name)), ("code", s(reject))];
        if let Some(priority) = priority {
            resolver.push(("priority", Value::from(priority)));
        }
        if let Some(pattern) = pattern {
            resolver.push(("keyPattern", s(pattern)));
        }
        assert_eq!(get(&register(&mut admin, request_id, map_name, resolver), "success"), &Value::from(true));
    }
    for _ in 0..4 {
        // Connections land on either shard; each shard has every map's list.
        let mut reader = server.client();
        reader.send(&msg("LIST_RESOLVERS", vec![("requestId", s("l1")), ("mapName", s("m1"))]));
        let listed = reader.recv_type("LIST_RESOLVERS_RESPONSE");
        assert_eq!(get(&listed, "requestId").as_str(), Some("l1"));
        assert_eq!(get(&listed, "resolvers.0.name").as_str(), Some("frozen-drafts"), "priority 50 before 10: {listed}");
        assert_eq!(get(&listed, "resolvers.0.keyPattern").as_str(), Some("draft:*"));
        assert_eq!(get(&listed, "resolvers.0.priority"), &Value::Nil, "as registered");
        assert_eq!(get(&listed, "resolvers.1.name").as_str(), Some("low"));
        assert_eq!(get(&listed, "resolvers.1.priority"), &Value::from(10));
        assert_eq!(get(&listed, "resolvers.1.mapName").as_str(), Some("m1"));
        assert_eq!(get(&listed, "resolvers.2"), &Value::Nil);
        reader.send(&msg("LIST_RESOLVERS", vec![("requestId", s("l2"))]));
        let all = reader.recv_type("LIST_RESOLVERS_RESPONSE");
        assert_eq!(get(&all, "resolvers.2.mapName").as_str(), Some("m2"), "{all}");
    }
    let unregister = |client: &mut Client, request_id: &str, name: &str| {
        client.send(&msg(
            "UNREGISTER_RESOLVER",
            vec![("requestId", s(request_id)), ("mapName", s("m1")), ("resolverName", s(name))],
        ));
        let response = client.recv_type("UNREGISTER_RESOLVER_RESPONSE");
        assert_eq!(get(&response, "requestId").as_str(), Some(request_id));
        response
    };
    assert_eq!(get(&unregister(&mut admin, "u1", "low"), "success"), &Value::from(true));
    let missing = unregister(&mut admin, "u2", "low");
    assert_eq!(get(&missing, "success"), &Value::from(false));
    assert_eq!(get(&missing, "error").as_str(), Some("no resolver named \"low\" on map \"m1\""));

    // Only the draft pattern is left on m1: a conflict on another key applies, one on a draft
    // key does not; after unregistering it, both apply.
    let mut writer = server.client();
    let now = now_ms();
    for key in key_on_each_shard("draft:") {
        writer.send(&op_batch(vec![
            put_op(1, "m1", &key, Value::from(1), now),
            put_op(2, "m1", &key, Value::from(2), now + 1),
        ]));
        assert_eq!(type_of(&writer.recv()), "MERGE_REJECTED");
        writer.recv_type("OP_ACK");
    }
    for key in key_on_each_shard("final:") {
        writer.send(&op_batch(vec![
            put_op(1, "m1", &key, Value::from(1), now),
            put_op(2, "m1", &key, Value::from(2), now + 1),
        ]));
        assert_eq!(type_of(&writer.recv()), "OP_ACK");
    }
    assert_eq!(get(&unregister(&mut writer, "u3", "frozen-drafts"), "success"), &Value::from(true));
    for key in key_on_each_shard("draft:") {
        writer.send(&op_batch(vec![put_op(3, "m1", &key, Value::from(3), now + 2)]));
        assert_eq!(type_of(&writer.recv()), "OP_ACK", "no resolver left on m1");
        assert_eq!(value_of(&mut writer, "m1", &key), Some(Value::from(3)));
    }
    writer.send(&msg("LIST_RESOLVERS", vec![("requestId", s("l3")), ("mapName", s("m1"))]));
    assert_eq!(get(&writer.recv_type("LIST_RESOLVERS_RESPONSE"), "resolvers"), &Value::Array(vec![]));
}
