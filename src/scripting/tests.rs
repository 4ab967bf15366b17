//! Processors and resolvers against a real `ShardData`, without a node: the owner-side logic of
//! `scripting` in one thread.

use std::time::Duration;

use rmpv::Value as Msgpack;

use super::*;
use crate::model::Timestamp;
use crate::shard::Change;

const WALL_MS: u64 = 1_700_000_000_000;

fn limits() -> Limits {
    Limits { cpu: Duration::from_secs(10), memory_bytes: 32 << 20 }
}

fn pack(value: Msgpack) -> ValueBytes {
    ValueBytes::from(convert::encode(&value))
}

fn unpack(bytes: &[u8]) -> Msgpack {
    rmpv::decode::read_value(&mut &bytes[..]).unwrap()
}

fn put(key: &str, value: Msgpack, millis: u64) -> ClientOp {
    let record = LwwRecord { value: Some(pack(value)), timestamp: Timestamp::new(millis, 0, "client"), ttl_ms: None };
    ClientOp {
        id: Some("1".into()),
        map_name: "m".into(),
        key: key.into(),
        kind: OpKind::Put(record),
        write_concern: None,
        timeout: None,
    }
}

fn remove(key: &str, millis: u64) -> ClientOp {
    let record = LwwRecord { value: None, timestamp: Timestamp::new(millis, 0, "client"), ttl_ms: None };
    ClientOp {
        id: Some("2".into()),
        map_name: "m".into(),
        key: key.into(),
        kind: OpKind::Remove { record: Some(record) },
        write_concern: None,
        timeout: None,
    }
}

fn stored(data: &ShardData, key: &str) -> Option<Msgpack> {
    data.lww_map("m")
        .and_then(|records| records.get_live(key, WALL_MS))
        .and_then(|record| record.value.as_deref().map(unpack))
}

fn processor(code: &str, args: Option<Msgpack>) -> ProcessorCall {
    ProcessorCall { name: "test".into(), code: code.into(), args: args.map(pack) }
}

fn register(scripting: &mut Scripting, name: &str, priority: Option<u64>, key_pattern: Option<&str>, code: &str) {
    let map: Arc<str> = Arc::from("m");
    let resolver =
        Resolver { name: name.into(), code: Arc::from(code), priority, key_pattern: key_pattern.map(str::to_string) };
    let list = scripting.resolvers.change(&map, resolvers::ResolverChange::Register(resolver)).unwrap();
    scripting.resolvers.install(map, list);
}

/// Runs a processor and applies its write as the node does; returns the reply.
fn process(scripting: &mut Scripting, data: &mut ShardData, key: &str, call: &ProcessorCall) -> EntryProcessResult {
    match scripting.process(data, "m", key, call, Duration::from_secs(10), WALL_MS) {
        Processed::Done(reply) => reply,
        Processed::Write { op, result } => {
            let (outcome, _) = scripting.batch().apply(data, op.clone(), WALL_MS);
            assert!(!scripting.settle(&op, &outcome), "nothing else wrote in between");
            processed_write(&op, result, outcome)
        }
    }
}

// Goal: a processor's write lands as an LWW record with a server timestamp, and its reply
// carries the result and the new value. Method: increment an absent counter twice.
#[test]
fn processor_writes_through_lww() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    let increment =
        processor("const next = (value ?? 0) + args; return {value: next, result: next};", Some(Msgpack::from(5)));
    for expected in [5, 10] {
        let reply = process(&mut scripting, &mut data, "counter", &increment);
        assert_eq!(
            reply,
            EntryProcessResult {
                success: true,
                result: Some(pack(expected.into())),
                new_value: Some(pack(expected.into())),
                error: None
            }
        );
    }
    let record = data.lww_map("m").unwrap().get("counter").unwrap();
    assert_eq!(record.timestamp.node_id, "server");
    assert_eq!(record.ttl_ms, None);
}

// Goal: a processor that keeps, re-stores or deletes-what-is-absent writes nothing, and a
// delete writes a tombstone. Method: each case on a stored entry, looking at the op produced.
#[test]
fn processor_writes_only_changes() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    data.apply(put("k", Msgpack::from(1), WALL_MS - 10), WALL_MS);
    for code in ["return {result: value};", "return {value};"] {
        let Processed::Done(reply) =
            scripting.process(&mut data, "m", "k", &processor(code, None), Duration::from_secs(1), WALL_MS)
        else {
            panic!("{code}: nothing to write")
        };
        assert!(reply.success);
        assert_eq!(reply.new_value, Some(pack(1.into())), "{code}");
    }
    let Processed::Done(reply) = scripting.process(
        &mut data,
        "m",
        "absent",
        &processor("return {value: undefined};", None),
        Duration::from_secs(1),
        WALL_MS,
    ) else {
        panic!("deleting an absent key writes nothing")
    };
    assert_eq!(reply, EntryProcessResult { success: true, result: None, new_value: None, error: None });
    let reply = process(&mut scripting, &mut data, "k", &processor("return {value: undefined, result: 'gone'};", None));
    assert_eq!(
        reply,
        EntryProcessResult { success: true, result: Some(pack("gone".into())), new_value: None, error: None }
    );
    assert!(data.lww_map("m").unwrap().get("k").unwrap().is_tombstone());
}

// Goal: a failing processor leaves the entry untouched and says why. Method: throw, return
// garbage, and loop forever under a short limit, on a stored entry.
#[test]
fn failing_processor_writes_nothing() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    data.apply(put("k", Msgpack::from(1), WALL_MS - 10), WALL_MS);
    let cases = [
        ("value = 2; throw new Error('half way');", Duration::from_secs(1), "processor \"test\" threw Error: half way"),
        (
            "return 7;",
            Duration::from_secs(1),
            "processor \"test\" processor must return an object such as {value, result}, got number",
        ),
        ("for (;;) {}", Duration::from_millis(50), "processor \"test\" exceeded the CPU time limit of 50 ms"),
    ];
    for (code, cpu, reason) in cases {
        let Processed::Done(reply) = scripting.process(&mut data, "m", "k", &processor(code, None), cpu, WALL_MS)
        else {
            panic!("{code}")
        };
        assert_eq!(reply, failed(reason.into()), "{code}");
        assert_eq!(stored(&data, "k"), Some(Msgpack::from(1)));
    }
}

// Goal: resolvers are consulted only for conflicting writes. Method: a resolver that rejects
// everything; a first write, a write after a delete and an older write pass it by, a newer
// write over a live value is rejected with what MERGE_REJECTED needs.
#[test]
fn resolvers_see_only_conflicts() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    register(&mut scripting, "no", None, None, "return {action: 'reject', reason: 'frozen'};");
    assert_eq!(
        scripting.batch().apply(&mut data, put("k", Msgpack::from(1), WALL_MS - 100), WALL_MS).0,
        OpOutcome::Applied
    );
    assert_eq!(
        scripting.batch().apply(&mut data, put("k", Msgpack::from(0), WALL_MS - 200), WALL_MS).0,
        OpOutcome::Unchanged
    );
    let (outcome, event) = scripting.batch().apply(&mut data, put("k", Msgpack::from(2), WALL_MS - 50), WALL_MS);
    let expected = MergeRejection {
        map_name: "m".into(),
        key: "k".into(),
        attempted_value: pack(2.into()),
        reason: "frozen".into(),
        timestamp: Timestamp::new(WALL_MS - 50, 0, "client"),
    };
    assert_eq!(outcome, OpOutcome::MergeRejected(Box::new(expected)));
    assert_eq!(event, None);
    assert_eq!(stored(&data, "k"), Some(Msgpack::from(1)));
    // A remove of a live value conflicts too; after a delete nothing is live to protect.
    let (outcome, _) = scripting.batch().apply(&mut data, remove("k", WALL_MS - 40), WALL_MS);
    assert!(
        matches!(&outcome, OpOutcome::MergeRejected(rejection) if &rejection.attempted_value[..] == NIL_BYTES),
        "{outcome:?}"
    );
    data.apply(remove("k", WALL_MS - 30), WALL_MS);
    assert_eq!(
        scripting.batch().apply(&mut data, put("k", Msgpack::from(3), WALL_MS - 20), WALL_MS).0,
        OpOutcome::Applied
    );
}

// Goal: a merge stores the resolver's value under a server timestamp newer than the write's,
// and its event carries that record. Method: a max-wins resolver, then a merge to null.
#[test]
fn merge_stores_the_resolved_value_with_a_newer_timestamp() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    register(
        &mut scripting,
        "max",
        None,
        None,
        "return {action: 'merge', value: Math.max(context.localValue, context.remoteValue)};",
    );
    data.apply(put("score", Msgpack::from(90), WALL_MS - 100), WALL_MS);
    let (outcome, event) = scripting.batch().apply(&mut data, put("score", Msgpack::from(70), WALL_MS - 50), WALL_MS);
    let OpOutcome::Merged(merged) = outcome else { panic!("expected a merge, got {outcome:?}") };
    assert_eq!(merged.record.value, Some(pack(90.into())));
    assert!(merged.record.timestamp > Timestamp::new(WALL_MS - 50, 0, "client"));
    assert_eq!(merged.record.timestamp.node_id, "server");
    let event = event.expect("a merge is a state change");
    assert_eq!(event.change, Change::Put(merged.record.clone()));
    assert_eq!(stored(&data, "score"), Some(Msgpack::from(90)));
    // The writer's own record (older than the merged one) can no longer replace it.
    assert_eq!(data.apply(put("score", Msgpack::from(70), WALL_MS - 50), WALL_MS).0, OpOutcome::Unchanged);

    register(&mut scripting, "max", None, None, "return {action: 'merge', value: null};");
    let (outcome, _) = scripting.batch().apply(&mut data, put("score", Msgpack::from(1), WALL_MS + 10), WALL_MS);
    assert!(matches!(&outcome, OpOutcome::Merged(merged) if merged.record.is_tombstone()), "{outcome:?}");
    assert_eq!(stored(&data, "score"), None);
}

// Goal: the chain runs by priority, `local` passes on, key patterns filter, and failing
// resolvers are skipped; with no decision the write is accepted. Method: several resolvers
// on one map, writes to keys in and out of a pattern.
#[test]
fn chain_order_patterns_and_failures() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    register(&mut scripting, "broken", Some(100), None, "throw new Error('bug');");
    register(&mut scripting, "pass", Some(90), None, "return {action: 'local'};");
    register(
        &mut scripting,
        "drafts",
        Some(80),
        Some("draft:*"),
        "return {action: 'reject', reason: 'drafts are read-only'};",
    );
    register(&mut scripting, "garbage", Some(70), None, "return {action: 42};");
    data.apply(put("draft:1", Msgpack::from(1), WALL_MS - 100), WALL_MS);
    data.apply(put("final:1", Msgpack::from(1), WALL_MS - 100), WALL_MS);
    let (outcome, _) = scripting.batch().apply(&mut data, put("draft:1", Msgpack::from(2), WALL_MS - 50), WALL_MS);
    assert!(
        matches!(&outcome, OpOutcome::MergeRejected(rejection) if rejection.reason == "drafts are read-only"),
        "{outcome:?}"
    );
    let (outcome, _) = scripting.batch().apply(&mut data, put("final:1", Msgpack::from(2), WALL_MS - 50), WALL_MS);
    assert_eq!(outcome, OpOutcome::Applied);
    assert_eq!(stored(&data, "final:1"), Some(Msgpack::from(2)));
}

// Goal: a runaway resolver cannot hold a shard for a whole batch: the batch's resolver calls
// share one CPU budget, and once it is spent the remaining conflicts are accepted unasked.
// Method: an endless-loop resolver under a 50 ms limit and a batch of ten conflicting writes;
// all apply. (Finishing at all shows the budget held; no timing is asserted.)
#[test]
fn runaway_resolver_is_bounded_per_batch() {
    let mut scripting = Scripting::new(Limits { cpu: Duration::from_millis(50), memory_bytes: 32 << 20 }, 1 << 20);
    let mut data = ShardData::new("server");
    register(&mut scripting, "spin", None, None, "for (;;) {}");
    for index in 0..10 {
        data.apply(put(&format!("k{index}"), Msgpack::from(0), WALL_MS - 100), WALL_MS);
    }
    let mut batch = scripting.batch();
    for index in 0..10 {
        let (outcome, _) = batch.apply(&mut data, put(&format!("k{index}"), Msgpack::from(1), WALL_MS - 50), WALL_MS);
        assert_eq!(outcome, OpOutcome::Applied, "k{index}");
    }
}

// Goal: a processor's write is consulted like any other, so a resolver's rule also binds
// processors. Method: a resolver that rejects negative stock; a processor that decrements
// below zero is refused with the resolver's reason and nothing changes.
#[test]
fn resolvers_bind_processor_writes() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    register(
        &mut scripting,
        "non-negative",
        None,
        None,
        "return context.remoteValue < 0 ? {action: 'reject', reason: 'negative'} : {action: 'accept'};",
    );
    data.apply(put("stock", Msgpack::from(1), WALL_MS - 100), WALL_MS);
    let decrement = processor("return {value: value - args, result: value - args};", Some(Msgpack::from(2)));
    let reply = process(&mut scripting, &mut data, "stock", &decrement);
    assert_eq!(reply, failed("rejected by a conflict resolver: negative".into()));
    assert_eq!(stored(&data, "stock"), Some(Msgpack::from(1)));
    let reply = process(&mut scripting, &mut data, "stock", &processor("return {value: value - 1};", None));
    assert!(reply.success, "{reply:?}");
    assert_eq!(stored(&data, "stock"), Some(Msgpack::from(0)));
}

// Goal: the protocol's size rules for names, code, priority and patterns are enforced, in
// JavaScript's units. Method: each bound and one past it.
#[test]
fn definitions_are_validated() {
    let processor = |name: &str, code: &str| EntryProcessor { name: name.into(), code: code.into(), args: None };
    assert_eq!(check_processor(&processor("inc", "return {};")), Ok(()));
    assert_eq!(
        check_processor(&processor("", "return {};")),
        Err("processor name must be 1 to 100 characters, got 0".into())
    );
    assert_eq!(check_processor(&processor(&"n".repeat(100), "x")), Ok(()));
    // One emoji is two UTF-16 units, as the client counts it.
    assert_eq!(
        check_processor(&processor(&"😀".repeat(51), "x")),
        Err("processor name must be 1 to 100 characters, got 102".into())
    );
    assert_eq!(check_processor(&processor("p", "")), Err("processor code must be 1 to 10000 characters, got 0".into()));
    assert!(check_processor(&processor("p", &"x".repeat(10_001))).is_err());
    let resolver = |code: &str, priority: Option<u64>, key_pattern: Option<&str>| ResolverDef {
        name: "r".into(),
        code: code.into(),
        priority,
        key_pattern: key_pattern.map(str::to_string),
    };
    assert!(check_resolver(resolver(&"x".repeat(50_000), Some(100), Some("a*"))).is_ok());
    assert_eq!(
        check_resolver(resolver(&"x".repeat(50_001), None, None)),
        Err("resolver code must be 1 to 50000 characters, got 50001".into())
    );
    assert_eq!(
        check_resolver(resolver("x", Some(101), None)),
        Err("resolver priority must be 0 to 100, got 101".into())
    );
    assert!(check_resolver(resolver("x", None, Some(&"*".repeat(2_000)))).is_err());
    assert_eq!(check_key(&"k".repeat(KEY_BYTES_MAX + 1)), Err(format!("key longer than {KEY_BYTES_MAX} bytes")));
}

// Goal: a processor's write applies only over the entry it read; if another write lands in
// between (which the node allows only while the write path waits on storage), the write is
// refused and the processor runs again. Method: run a processor, apply a client write, then
// the processor's op; then run it again with nothing in between.
#[test]
fn processor_write_over_a_changed_entry_is_refused() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1 << 20), ShardData::new("server"));
    data.apply(put("k", Msgpack::from(1), WALL_MS - 100), WALL_MS);
    let double = processor("return {value: value * 2};", None);
    let Processed::Write { op, .. } = scripting.process(&mut data, "m", "k", &double, Duration::from_secs(1), WALL_MS)
    else {
        panic!()
    };
    data.apply(put("k", Msgpack::from(10), WALL_MS - 50), WALL_MS);
    let (outcome, event) = scripting.batch().apply(&mut data, op.clone(), WALL_MS);
    assert!(scripting.settle(&op, &outcome), "{outcome:?}");
    assert_eq!(event, None);
    assert_eq!(stored(&data, "k"), Some(Msgpack::from(10)));
    let reply = process(&mut scripting, &mut data, "k", &double);
    assert_eq!(reply.new_value, Some(pack(20.into())));
    assert!(scripting.expected.is_empty(), "every expectation is settled");
}

// Goal: no script stores a value larger than a client may. Method: a processor returning a
// value over the value limit.
#[test]
fn processor_values_obey_the_value_limit() {
    let (mut scripting, mut data) = (Scripting::new(limits(), 1_000), ShardData::new("server"));
    let reply = process(&mut scripting, &mut data, "k", &processor("return {value: 'x'.repeat(2000)};", None));
    assert_eq!(
        reply,
        failed("processor \"test\" returned a value of 2003 bytes, over the limit of 1000 (--max-value-bytes)".into())
    );
    assert_eq!(stored(&data, "k"), None);
}
