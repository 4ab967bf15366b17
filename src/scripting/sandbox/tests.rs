use std::time::Duration;

use rmpv::Value as Msgpack;

use super::*;

/// Generous limits for calls that should succeed.
fn roomy() -> Limits {
    Limits { cpu: Duration::from_secs(10), memory_bytes: 32 << 20 }
}

/// A short CPU limit, for calls that must be stopped by it.
fn short() -> Limits {
    Limits { cpu: Duration::from_millis(50), memory_bytes: 32 << 20 }
}

fn pack(value: &Msgpack) -> Vec<u8> {
    convert::encode(value)
}

fn unpack(bytes: &[u8]) -> Msgpack {
    rmpv::decode::read_value(&mut &bytes[..]).unwrap()
}

fn map(entries: Vec<(&str, Msgpack)>) -> Msgpack {
    Msgpack::Map(entries.into_iter().map(|(key, value)| (Msgpack::from(key), value)).collect())
}

fn run(
    sandbox: &mut Sandbox,
    code: &str,
    value: Option<&Msgpack>,
    args: Option<&Msgpack>,
) -> Result<ProcessorOutcome, ScriptError> {
    let value = value.map(pack);
    let args = args.map(pack);
    sandbox.run_processor(code, value.as_deref(), "key-1", args.as_deref(), &roomy())
}

/// The result a processor returned, decoded.
fn result_of(outcome: &ProcessorOutcome) -> Msgpack {
    unpack(outcome.result.as_ref().expect("a result"))
}

/// Asserts the sandbox still answers a plain call correctly.
fn assert_usable(sandbox: &mut Sandbox) {
    let outcome = run(sandbox, "return {result: (value || 0) + 1};", Some(&Msgpack::from(41)), None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::from(42));
}

// Goal: a processor that never returns is stopped by the CPU limit, and the shard's engine
// keeps working afterwards. Method: an endless loop under a 50 ms limit, then a normal call.
// (Returning at all is the proof; the test asserts nothing about how long it took.)
#[test]
fn endless_loop_is_stopped_by_the_cpu_limit() {
    let mut sandbox = Sandbox::new();
    let error = sandbox.run_processor("while (true) {}", None, "k", None, &short()).unwrap_err();
    assert_eq!(error, ScriptError::CpuLimit { limit_ms: 50 });
    assert_eq!(error.to_string(), "exceeded the CPU time limit of 50 ms");
    // The interrupt is uncatchable: a try/catch around the loop does not keep it running.
    let error = sandbox
        .run_processor("try { for (;;) {} } catch (e) {} return {result: 1};", None, "k", None, &short())
        .unwrap_err();
    assert_eq!(error, ScriptError::CpuLimit { limit_ms: 50 });
    assert_usable(&mut sandbox);
}

// Goal: the deadline also covers regular-expression matching and the getters run while the
// result is read back. Method: a catastrophic-backtracking regex, and a result whose `value`
// getter never returns.
#[test]
fn cpu_limit_covers_regexps_and_result_getters() {
    let mut sandbox = Sandbox::new();
    let redos = "return {result: /^(a+)+$/.test('a'.repeat(40) + 'b')};";
    assert_eq!(
        sandbox.run_processor(redos, None, "k", None, &short()).unwrap_err(),
        ScriptError::CpuLimit { limit_ms: 50 }
    );
    let getter = "return { get value() { for (;;) {} } };";
    assert_eq!(
        sandbox.run_processor(getter, None, "k", None, &short()).unwrap_err(),
        ScriptError::CpuLimit { limit_ms: 50 }
    );
    assert_usable(&mut sandbox);
}

// Goal: a processor that allocates without bound is stopped by the memory limit, and the
// engine is usable afterwards with its memory released. Method: double a string (and grow an
// array) under an 8 MiB limit, then a normal call and a look at what the runtime holds.
#[test]
fn allocation_bomb_is_stopped_by_the_memory_limit() {
    let mut sandbox = Sandbox::new();
    let limits = Limits { cpu: Duration::from_secs(10), memory_bytes: 8 << 20 };
    for bomb in ["let s = 'x'; for (;;) s += s;", "const a = []; for (;;) a.push(new Array(1000).fill(7));"] {
        let error = sandbox.run_processor(bomb, None, "k", None, &limits).unwrap_err();
        assert_eq!(error, ScriptError::MemoryLimit { limit_mib: 8 }, "{bomb}");
        assert_eq!(error.to_string(), "exceeded the memory limit of 8 MiB");
        assert_usable(&mut sandbox);
    }
    let engine = sandbox.engine.as_ref().expect("the engine survives a failed call");
    let held = engine.runtime.memory_usage().malloc_size as usize;
    assert!(held < SCRIPT_RESET_BYTES, "an idle engine holds {held} bytes");
}

// Goal: a throw is reported with the thrown value as text. Method: throw an Error, a TypeError
// from a bad access, a plain string and a number.
#[test]
fn throw_is_reported_with_its_message() {
    let mut sandbox = Sandbox::new();
    let cases = [
        ("throw new Error('boom');", "threw Error: boom"),
        ("return value.missing.field;", "threw TypeError: cannot read property 'field' of undefined"),
        ("throw 'plain text';", "threw plain text"),
        ("throw 42;", "threw 42"),
        ("function f() { return f(); } return f();", "threw RangeError: Maximum call stack size exceeded"),
    ];
    for (code, reason) in cases {
        let error = run(&mut sandbox, code, Some(&map(vec![])), None).unwrap_err();
        assert_eq!(error.to_string(), reason, "{code}");
    }
    // A huge thrown message is cut, so the reason stays small.
    let error = run(&mut sandbox, "throw new Error('x'.repeat(100000));", None, None).unwrap_err();
    assert!(error.to_string().len() < SCRIPT_ERROR_BYTES_MAX + 16, "{} bytes", error.to_string().len());
    assert_usable(&mut sandbox);
}

// Goal: code that does not compile is a compile error; code that closes the function body it
// is wrapped in gains nothing (it stays in its call's context). Method: a syntax error, then a
// wrapper-escape attempt followed by a call that looks for what it left.
#[test]
fn syntax_error_is_a_compile_error() {
    let mut sandbox = Sandbox::new();
    let error = run(&mut sandbox, "return {value: ;", None, None).unwrap_err();
    assert!(matches!(&error, ScriptError::Compile(text) if text.starts_with("SyntaxError")), "{error:?}");
    assert!(error.to_string().starts_with("compile error: SyntaxError"), "{error}");
    let _ = run(&mut sandbox, "}); globalThis.leaked = 1; (function() {", None, None);
    let outcome = run(&mut sandbox, "return {result: typeof leaked};", None, None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::from("undefined"));
    assert_eq!(sandbox.check_compiles(&["context"], "return {action: 'accept'};", &roomy()), Ok(()));
    assert!(matches!(sandbox.check_compiles(&["context"], "return {", &roomy()), Err(ScriptError::Compile(_))));
}

// Goal: a processor must return an object; anything else is refused with a reason. Method:
// return a number, a string, an array, null, nothing, a function and a promise.
#[test]
fn non_object_return_is_refused() {
    let mut sandbox = Sandbox::new();
    for (code, got) in [
        ("return 5;", "number"),
        ("return 'text';", "string"),
        ("return [1, 2];", "array"),
        ("return null;", "null"),
        ("", "undefined"),
        ("return function() {};", "function"),
        ("return Promise.resolve({value: 1});", "promise"),
    ] {
        let error = run(&mut sandbox, code, None, None).unwrap_err();
        assert_eq!(
            error,
            ScriptError::BadReturn(format!("processor must return an object such as {{value, result}}, got {got}")),
            "{code}"
        );
    }
    assert_usable(&mut sandbox);
}

// Goal: the returned object's `value` decides the write: absent keeps, undefined or null
// deletes, anything else is stored; `result` is returned when defined. Method: each shape.
#[test]
fn returned_value_decides_the_write() {
    let mut sandbox = Sandbox::new();
    let current = map(vec![("n", Msgpack::from(1))]);
    let keep = run(&mut sandbox, "return {result: 'read'};", Some(&current), None).unwrap();
    assert_eq!(keep.write, ProcessorWrite::Keep);
    assert_eq!(result_of(&keep), Msgpack::from("read"));
    let delete = run(&mut sandbox, "return {value: undefined};", Some(&current), None).unwrap();
    assert_eq!(delete, ProcessorOutcome { write: ProcessorWrite::Delete, result: None });
    let delete_null = run(&mut sandbox, "return {value: null, result: null};", Some(&current), None).unwrap();
    assert_eq!(delete_null.write, ProcessorWrite::Delete);
    assert_eq!(result_of(&delete_null), Msgpack::Nil);
    let put =
        run(&mut sandbox, "value.n += args; return {value, result: value.n};", Some(&current), Some(&Msgpack::from(2)))
            .unwrap();
    assert_eq!(put.write, ProcessorWrite::Put(pack(&map(vec![("n", Msgpack::from(3))])).into()));
    assert_eq!(result_of(&put), Msgpack::from(3));
}

// Goal: an absent entry and absent args are `undefined`, a present nil is `null`, and the key
// is passed. Method: report what the processor sees.
#[test]
fn absent_inputs_are_undefined() {
    let mut sandbox = Sandbox::new();
    let code = "return {result: [value === undefined, args === undefined, args === null, key]};";
    let outcome = run(&mut sandbox, code, None, None).unwrap();
    let expected = Msgpack::Array(vec![true.into(), true.into(), false.into(), "key-1".into()]);
    assert_eq!(result_of(&outcome), expected);
    let outcome = run(&mut sandbox, code, Some(&Msgpack::from(1)), Some(&Msgpack::Nil)).unwrap();
    let expected = Msgpack::Array(vec![false.into(), false.into(), true.into(), "key-1".into()]);
    assert_eq!(result_of(&outcome), expected);
}

// Goal: values round-trip through JS unchanged, in every type of the documented mapping.
// Method: hand a value of each kind to `return {value}` and compare what comes back.
#[test]
fn values_round_trip() {
    let mut sandbox = Sandbox::new();
    let value = map(vec![
        ("nil", Msgpack::Nil),
        ("yes", Msgpack::from(true)),
        ("small", Msgpack::from(-7)),
        ("large", Msgpack::from(1_u64 << 40)),
        ("fraction", Msgpack::F64(2.5)),
        ("negative zero", Msgpack::F64(-0.0)),
        ("text", Msgpack::from("héllo ✓")),
        ("bytes", Msgpack::Binary(vec![0, 1, 255])),
        ("list", Msgpack::Array(vec![Msgpack::from(1), Msgpack::from("two"), Msgpack::Array(vec![])])),
        ("nested", map(vec![("deeper", map(vec![("leaf", Msgpack::from(false))]))])),
    ]);
    let outcome = run(&mut sandbox, "return {value};", Some(&value), None).unwrap();
    let ProcessorWrite::Put(bytes) = outcome.write else { panic!("expected a put, got {:?}", outcome.write) };
    assert_eq!(unpack(&bytes), value);
    // JS whole numbers come back as ints, fractions as floats, and a float that is whole
    // becomes an int (JS has one number type).
    let outcome = run(&mut sandbox, "return {value: [1, 1.5, 2 ** 53, 2 ** 60, 3.0, -1]};", None, None).unwrap();
    let ProcessorWrite::Put(bytes) = outcome.write else { panic!() };
    let expected = Msgpack::Array(vec![
        Msgpack::from(1),
        Msgpack::F64(1.5),
        Msgpack::F64(9_007_199_254_740_992.0),
        Msgpack::F64(1_152_921_504_606_846_976.0),
        Msgpack::from(3),
        Msgpack::from(-1),
    ]);
    assert_eq!(unpack(&bytes), expected);
    // Integers beyond 2^53 lose precision, as in JS.
    let outcome = run(&mut sandbox, "return {result: value};", Some(&Msgpack::from(u64::MAX)), None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::F64(18_446_744_073_709_551_616.0));
    // Undefined properties are left out; undefined array items and holes are nil.
    let outcome = run(&mut sandbox, "return {result: {a: undefined, b: [undefined, , 1]}};", None, None).unwrap();
    assert_eq!(
        result_of(&outcome),
        map(vec![("b", Msgpack::Array(vec![Msgpack::Nil, Msgpack::Nil, Msgpack::from(1)]))])
    );
    // Number map keys become property names.
    let numeric_keys = Msgpack::Map(vec![(Msgpack::from(1), Msgpack::from("one"))]);
    let outcome = run(&mut sandbox, "return {result: value['1']};", Some(&numeric_keys), None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::from("one"));
}

// Goal: returned values msgpack cannot hold are refused, and so are stored values a script
// cannot be given. Method: functions, symbols, bigints, a cycle, a value larger than the budget,
// and a stored msgpack extension.
#[test]
fn garbage_values_are_refused() {
    let mut sandbox = Sandbox::new();
    for (code, reason) in [
        ("return {value: function() {}};", "value holds a function and cannot be stored"),
        ("return {value: {s: Symbol('x')}};", "value holds a symbol and cannot be stored"),
        ("return {result: 10n};", "result holds a bigint and cannot be stored"),
        ("const a = {}; a.self = a; return {value: a};", "value nests deeper than 256 levels (or refers to itself)"),
        ("const s = 'x'.repeat(1 << 20); return {value: new Array(64).fill(s)};", "value is too large to store"),
    ] {
        assert_eq!(run(&mut sandbox, code, None, None).unwrap_err(), ScriptError::BadValue(reason.into()), "{code}");
    }
    let ext = Msgpack::Ext(-1, vec![0; 4]);
    let error = run(&mut sandbox, "return {};", Some(&ext), None).unwrap_err();
    assert_eq!(error, ScriptError::BadValue("msgpack extension type -1 cannot be given to a script".into()));
    assert_usable(&mut sandbox);
}

// Goal: scripts see no clock, no randomness and no way to queue work past their call; work
// they queue anyway (promise jobs) never runs, and the engine is rebuilt instead. Method: look
// for the withheld globals, then queue a promise job.
#[test]
fn sandbox_withholds_time_randomness_and_deferred_work() {
    let mut sandbox = Sandbox::new();
    let code = "return {result: [typeof Date, typeof Math.random, typeof performance, typeof queueMicrotask, \
                typeof WeakRef, typeof FinalizationRegistry, typeof Atomics, typeof require, typeof process]};";
    let outcome = run(&mut sandbox, code, None, None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::Array(vec![Msgpack::from("undefined"); 9]));
    let outcome =
        run(&mut sandbox, "Promise.resolve().then(() => { for (;;) {} }); return {result: 1};", None, None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::from(1));
    assert!(sandbox.engine.is_none(), "an engine with queued jobs is dropped");
    assert_usable(&mut sandbox);
    // Each call has a fresh context: globals set by one call are gone in the next.
    run(&mut sandbox, "globalThis.leak = 1; return {};", None, None).unwrap();
    let outcome = run(&mut sandbox, "return {result: typeof leak};", None, None).unwrap();
    assert_eq!(result_of(&outcome), Msgpack::from("undefined"));
}

fn context<'a>(
    local: &'a [u8],
    remote: Option<&'a [u8]>,
    local_ts: &'a Timestamp,
    remote_ts: &'a Timestamp,
) -> ResolverContext<'a> {
    ResolverContext {
        map_name: "stock",
        key: "apples",
        local_value: local,
        remote_value: remote,
        local_timestamp: local_ts,
        remote_timestamp: remote_ts,
    }
}

// Goal: each resolver action maps to its resolution, and the context carries the conflict.
// Method: resolvers returning each action, one echoing the context through a merge.
#[test]
fn resolver_actions_and_context() {
    let mut sandbox = Sandbox::new();
    let local = pack(&Msgpack::from(5));
    let remote = pack(&Msgpack::from(-3));
    let (local_ts, remote_ts) = (Timestamp::new(1_000, 1, "server"), Timestamp::new(2_000, 0, "client-a"));
    let conflict = context(&local, Some(&remote), &local_ts, &remote_ts);
    let limits = roomy();
    assert_eq!(sandbox.run_resolver("return {action: 'accept'};", &conflict, &limits), Ok(Resolution::Accept));
    assert_eq!(sandbox.run_resolver("return {action: 'local'};", &conflict, &limits), Ok(Resolution::Pass));
    let reject =
        "return context.remoteValue < 0 ? {action: 'reject', reason: 'stock cannot go negative'} : {action: 'accept'};";
    assert_eq!(
        sandbox.run_resolver(reject, &conflict, &limits),
        Ok(Resolution::Reject { reason: "stock cannot go negative".into() })
    );
    assert_eq!(
        sandbox.run_resolver("return {action: 'reject'};", &conflict, &limits),
        Ok(Resolution::Reject { reason: "rejected by a conflict resolver".into() })
    );
    let echo =
        "return {action: 'merge', value: [context.mapName, context.key, context.localValue, context.remoteValue, \
                context.localTimestamp, context.remoteTimestamp.nodeId, context.remoteNodeId]};";
    let Ok(Resolution::Merge { value: Some(bytes) }) = sandbox.run_resolver(echo, &conflict, &limits) else {
        panic!("expected a merge")
    };
    let timestamp =
        map(vec![("millis", Msgpack::from(1_000)), ("counter", Msgpack::from(1)), ("nodeId", Msgpack::from("server"))]);
    let expected = Msgpack::Array(vec![
        "stock".into(),
        "apples".into(),
        Msgpack::from(5),
        Msgpack::from(-3),
        timestamp,
        "client-a".into(),
        "client-a".into(),
    ]);
    assert_eq!(unpack(&bytes), expected);
    // A remove is a conflict whose remote value is null; merging to null deletes.
    let removal = context(&local, None, &local_ts, &remote_ts);
    assert_eq!(
        sandbox.run_resolver("return {action: 'merge', value: context.remoteValue};", &removal, &limits),
        Ok(Resolution::Merge { value: None })
    );
}

// Goal: resolver results that are not one of the four actions are refused, and a failing
// resolver reports why. Method: unknown action, missing action, merge without value, a throw,
// an endless loop.
#[test]
fn bad_resolver_results_are_refused() {
    let mut sandbox = Sandbox::new();
    let local = pack(&Msgpack::from(1));
    let (local_ts, remote_ts) = (Timestamp::new(1, 0, "a"), Timestamp::new(2, 0, "b"));
    let conflict = context(&local, Some(&local), &local_ts, &remote_ts);
    let limits = roomy();
    let cases = [
        (
            "return {action: 'overwrite'};",
            "unknown resolver action \"overwrite\" (expected accept, reject, merge or local)",
        ),
        ("return {};", "resolver result has no string `action`"),
        ("return 'accept';", "resolver must return an object such as {action: \"accept\"}, got string"),
        ("return {action: 'merge'};", "resolver action `merge` needs a `value`"),
        ("throw new Error('nope');", "threw Error: nope"),
    ];
    for (code, reason) in cases {
        assert_eq!(sandbox.run_resolver(code, &conflict, &limits).unwrap_err().to_string(), reason, "{code}");
    }
    assert_eq!(sandbox.run_resolver("for (;;) {}", &conflict, &short()), Err(ScriptError::CpuLimit { limit_ms: 50 }));
}
