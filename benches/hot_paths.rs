//! Per-primitive benchmarks of the hot paths, printed as cost per operation. Run with
//! `cargo bench --bench hot_paths` (full). `cargo test` runs it too (the target has
//! `test = true`), in quick mode — a few iterations, to keep it compiling and running in CI —
//! as does `SHARDGRID_BENCH_QUICK=1 cargo bench --bench hot_paths`. No assertions on timing:
//! the numbers are for comparing builds on one machine.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use rmpv::Value;
use shardgrid::live::index::SubscriptionIndex;
use shardgrid::live::{LiveChange, SubKey};
use shardgrid::model::{LwwRecord, Timestamp, ValueBytes};
use shardgrid::protocol::{decode_client_message, ClientOp, DecodeLimits, OpKind};
use shardgrid::query::Query;
use shardgrid::shard::ShardData;
use shardgrid_shards::ShardId;

/// Quick mode: asked for, or run by `cargo test` (only `cargo bench` passes `--bench`).
fn quick() -> bool {
    std::env::var_os("SHARDGRID_BENCH_QUICK").is_some() || !std::env::args().any(|arg| arg == "--bench")
}

/// Runs `body` `iterations` times (fewer in quick mode) and prints ns per call.
fn measure(name: &str, iterations: u64, mut body: impl FnMut(u64)) {
    let iterations = if quick() { iterations.min(100) } else { iterations };
    for warmup in 0..iterations.min(1_000) {
        body(warmup);
    }
    let started = Instant::now();
    for iteration in 0..iterations {
        body(iteration);
    }
    let elapsed = started.elapsed();
    println!("{name:<58} {:>12.1} ns/op  ({iterations} ops)", elapsed.as_nanos() as f64 / iterations as f64);
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

fn row(user: u64, status: &str) -> Value {
    Value::Map(vec![(Value::from("user"), Value::from(user)), (Value::from("status"), Value::from(status))])
}

/// 10,000 live queries on one map, each pinning `user` to its own value; a write matches the
/// 10 whose user it carries (the "10,000 subscriptions of which 10 match").
fn live_index_benches() {
    let map: Arc<str> = Arc::from("events");
    let mut indexed = SubscriptionIndex::default();
    let mut scanned = SubscriptionIndex::default();
    for local in 0..10_000u64 {
        let user = local / 10; // ten subscriptions per user
        let pinned = Query::from_value(&Value::Map(vec![(
            Value::from("where"),
            Value::Map(vec![(Value::from("user"), Value::from(user))]),
        )]))
        .unwrap();
        let pinned = Arc::new(pinned);
        let cursor = Arc::new(pinned.resolve_cursor(0));
        indexed.register(
            SubKey { shard: ShardId(0), local },
            Arc::clone(&map),
            Arc::clone(&pinned),
            Arc::clone(&cursor),
        );
        // The same filter as a predicate on a non-indexed operator: every write scans them all.
        let scan = Query::from_value(&Value::Map(vec![(
            Value::from("predicate"),
            Value::Map(vec![
                (Value::from("op"), Value::from("gte")),
                (Value::from("attribute"), Value::from("user")),
                (Value::from("value"), Value::from(user)),
            ]),
        )]))
        .unwrap();
        scanned.register(SubKey { shard: ShardId(0), local }, Arc::clone(&map), Arc::new(scan), cursor);
    }
    let after = row(42, "open");
    let bytes = ValueBytes::from(encode(&after));
    let mut changes: Vec<(SubKey, LiveChange)> = Vec::new();
    measure("live index: write vs 10,000 indexed subs (10 match)", 200_000, |_| {
        changes.clear();
        indexed.evaluate("events", "k", None, Some((&after, &bytes)), &mut changes);
        black_box(changes.len());
    });
    assert_eq!(changes.len(), 10);
    measure("live index: write vs 10,000 scanned subs (baseline)", 2_000, |_| {
        changes.clear();
        scanned.evaluate("events", "k", None, Some((&after, &bytes)), &mut changes);
        black_box(changes.len());
    });
}

fn codec_and_apply_benches() {
    let now = 1_700_000_000_000u64;
    // The stock client's op-log entries: the op's own timestamp and `synced` ride along.
    let ops: Vec<Value> = (0..10)
        .map(|index| {
            let timestamp = Value::Map(vec![
                (Value::from("millis"), Value::F64(now as f64)),
                (Value::from("counter"), Value::from(index)),
                (Value::from("nodeId"), Value::from("client-a")),
            ]);
            Value::Map(vec![
                (Value::from("id"), Value::from(index.to_string())),
                (Value::from("mapName"), Value::from("bench")),
                (Value::from("opType"), Value::from("PUT")),
                (Value::from("key"), Value::from(format!("key-{index}"))),
                (
                    Value::from("record"),
                    Value::Map(vec![
                        (Value::from("value"), Value::Map(vec![(Value::from("payload"), Value::from("x".repeat(64)))])),
                        (Value::from("timestamp"), timestamp.clone()),
                    ]),
                ),
                (Value::from("timestamp"), timestamp),
                (Value::from("synced"), Value::Boolean(false)),
            ])
        })
        .collect();
    let frame = encode(&Value::Map(vec![
        (Value::from("type"), Value::from("OP_BATCH")),
        (Value::from("payload"), Value::Map(vec![(Value::from("ops"), Value::Array(ops))])),
    ]));
    let limits = DecodeLimits::default();
    measure("codec: decode OP_BATCH of 10 puts (64-byte values)", 200_000, |_| {
        black_box(decode_client_message(black_box(&frame), &limits).unwrap());
    });
    let mut data = ShardData::new("server");
    let value = ValueBytes::from(encode(&Value::Map(vec![(Value::from("payload"), Value::from("x".repeat(64)))])));
    measure("shard: apply one LWW put (100,000 keys)", 1_000_000, |iteration| {
        let record = LwwRecord {
            value: Some(value.clone()),
            timestamp: Timestamp::new(now, iteration as u32, "c"),
            ttl_ms: None,
        };
        let op = ClientOp {
            id: None,
            map_name: "bench".into(),
            key: compact_str::format_compact!("key-{}", iteration % 100_000),
            kind: OpKind::Put(record),
            write_concern: None,
            timeout: None,
        };
        black_box(data.apply(op, now));
    });
}

/// Inserts `keys` fresh keys through `insert`, one at a time; prints the mean and the slowest
/// single insert. The slowest is what a request queued behind that insert waits.
fn growth(name: &str, keys: u64, mut insert: impl FnMut(u64)) {
    let keys = if quick() { keys.min(10_000) } else { keys };
    let started = Instant::now();
    let mut worst_ns = 0u128;
    let mut over_ms = 0u64;
    for key in 0..keys {
        let before = Instant::now();
        insert(key);
        let took = before.elapsed().as_nanos();
        over_ms += u64::from(took > 1_000_000);
        worst_ns = worst_ns.max(took);
    }
    let mean_ns = started.elapsed().as_nanos() as f64 / keys as f64;
    println!(
        "{name:<58} {mean_ns:>12.1} ns/op  worst {:.3} ms, {over_ms} over 1 ms  ({keys} keys)",
        worst_ns as f64 / 1e6
    );
}

/// Drops `table` and hands the freed memory back before the next measurement, so glibc's
/// deferred consolidation of a million freed blocks is not charged to the next first insert.
fn release<T>(table: T) {
    drop(table);
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only reorganises the allocator's free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tables growing to a million keys: an all-at-once resize (hashbrown's `AHashMap`) against
/// the incremental one the shard's per-key tables use (`shardgrid::table::GrowingMap`).
fn growth_benches() {
    let mut all_at_once: ahash::AHashMap<String, u64> = ahash::AHashMap::new();
    growth("table: AHashMap insert, growing to 1,000,000 keys", 1_000_000, |key| {
        all_at_once.insert(format!("key-{key}"), key);
    });
    release(all_at_once);
    let mut incremental: shardgrid::table::GrowingMap<String, u64> = Default::default();
    growth("table: GrowingMap insert, growing to 1,000,000 keys", 1_000_000, |key| {
        incremental.insert(format!("key-{key}"), key);
    });
    release(incremental);
    let now = 1_700_000_000_000u64;
    let mut data = ShardData::new("server");
    let value = ValueBytes::from(encode(&Value::Map(vec![(Value::from("payload"), Value::from("x".repeat(64)))])));
    growth("shard: apply LWW puts, one map growing to 1,000,000 keys", 1_000_000, |key| {
        let record = LwwRecord { value: Some(value.clone()), timestamp: Timestamp::new(now, 0, "c"), ttl_ms: None };
        let op = ClientOp {
            id: None,
            map_name: "bench".into(),
            key: compact_str::format_compact!("key-{key}"),
            kind: OpKind::Put(record),
            write_concern: None,
            timeout: None,
        };
        black_box(data.apply(op, now));
    });
}

fn main() {
    println!("shardgrid hot-path benchmarks{}", if quick() { " (quick mode)" } else { "" });
    live_index_benches();
    codec_and_apply_benches();
    growth_benches();
}
