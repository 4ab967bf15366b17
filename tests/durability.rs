//! End-to-end durability of the disk backend: the real binary killed with SIGKILL under load,
//! torn tails and corruption planted in segment files, restarts with another shard count,
//! compaction and tombstone collection while serving, a disk that refuses to grow.
//!
//! What survived is checked two ways: the segment files are read with the storage crate (the
//! same validation recovery uses) for exact values and timestamps, and the restarted server is
//! queried for the values.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use rmpv::Value;
use shardgrid_storage::sim::Prng;
use shardgrid_storage::{Layout, LogRecovery, RecordKind};

/// One key's state on disk: timestamp (millis, counter, node) and value (None: tombstone).
type DiskRecord = ((u64, u32, String), Option<Vec<u8>>);
/// (map, key) -> the key's record on disk.
type DiskState = HashMap<(String, String), DiskRecord>;
/// (map, key, millis, counter) -> how many records with that timestamp are on disk.
type DiskCopies = HashMap<(String, String, u64, u32), u32>;

/// Reads the current generation of a data directory as recovery would, merging LWW records by
/// timestamp. Returns (map, key) -> record, and how many records of each (map, key, timestamp)
/// are on disk (to find duplicates).
fn read_disk(data_dir: &Path) -> (DiskState, DiskCopies) {
    let layout = Layout::decode(&std::fs::read_to_string(data_dir.join("LAYOUT")).unwrap()).unwrap();
    let mut state: DiskState = HashMap::new();
    let mut copies = HashMap::new();
    for shard in 0..layout.shard_count {
        let dir = shardgrid::persist::shard_dir(data_dir, layout.generation, shard);
        let mut recovery = LogRecovery::new(false);
        for (segment, path) in shardgrid::persist::recover::list_segments(&dir).unwrap() {
            // A running server's compaction may remove a segment after it is listed; its
            // records were made durable in a newer one first.
            let Ok(image) = std::fs::read(&path) else { continue };
            recovery
                .segment(segment, &image, |_, record| {
                    let body = record.body;
                    let stamp =
                        (body.timestamp.millis(), body.timestamp.counter(), body.timestamp.node_id().to_string());
                    let value = match record.kind {
                        RecordKind::LwwPut => Some(body.value().to_vec()),
                        RecordKind::LwwTombstone => None,
                        _ => return,
                    };
                    *copies.entry((body.map().to_string(), body.key().to_string(), stamp.0, stamp.1)).or_insert(0) += 1;
                    let slot = state
                        .entry((body.map().to_string(), body.key().to_string()))
                        .or_insert_with(|| (stamp.clone(), value.clone()));
                    if stamp > slot.0 {
                        *slot = (stamp, value);
                    }
                })
                .unwrap_or_else(|corrupt| panic!("{}: {corrupt}", dir.display()));
        }
    }
    (state, copies)
}

fn msgpack(value: &Value) -> Vec<u8> {
    encode(value)
}

/// A put of `value` at `millis` by `node`, optionally asking for a write concern per op.
fn put(id: u64, map_name: &str, key: &str, value: Value, millis: u64, node: &str) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("PUT")),
        ("key", s(key)),
        ("record", map(vec![("value", value), ("timestamp", timestamp(millis, 0, node))])),
    ])
}

fn remove(id: u64, map_name: &str, key: &str, millis: u64, node: &str) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("REMOVE")),
        ("key", s(key)),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(millis, 0, node))])),
    ])
}

fn batch_with_concern(ops: Vec<Value>, concern: &str) -> Value {
    msg_payload("OP_BATCH", vec![("ops", Value::Array(ops)), ("writeConcern", s(concern))])
}

/// Sends a batch and returns its OP_ACK payload.
fn write(client: &mut Client, ops: Vec<Value>, concern: &str) -> Value {
    client.send(&batch_with_concern(ops, concern));
    get(&client.recv_type("OP_ACK"), "payload").clone()
}

/// Every row of `map_name` as key -> value, via QUERY_SUB.
fn read_map(client: &mut Client, map_name: &str) -> HashMap<String, Value> {
    let payload = query(client, &format!("read-{map_name}"), map_name, map(vec![("limit", Value::from(100_000))]));
    match get(&payload, "results") {
        Value::Array(rows) => {
            rows.iter().map(|row| (get(row, "key").as_str().unwrap().to_string(), get(row, "value").clone())).collect()
        }
        other => panic!("results must be an array, got {other}"),
    }
}

/// What the writers of the crash test sent and had acknowledged.
#[derive(Default)]
struct Ledger {
    /// (map, key, millis) -> value bytes, for every write sent.
    sent: HashMap<(String, String, u64), Vec<u8>>,
    /// (map, key) -> highest acknowledged millis.
    acked: HashMap<(String, String), u64>,
}

/// One writer: PERSISTED batches of 5 puts over its own 40 keys with increasing timestamps,
/// until the server goes away. Counts acknowledged batches in `acks`; returns its ledger.
/// Its timestamps start above `after`, the last one it used before the crash: like a client's
/// clock, they never repeat, also when a fast writer has run ahead of the wall clock.
fn writer_loop(port: u16, writer: u32, cycle: u32, after: u64, acks: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> Ledger {
    let mut ledger = Ledger::default();
    let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return ledger };
    let Ok((mut socket, _)) = tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream) else { return ledger };
    socket.get_ref().set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
    let map_name = format!("crash-{writer}");
    let node = format!("writer{writer}");
    let mut prng = Prng::from_seed(u64::from(cycle) * 1_000 + u64::from(writer));
    let mut last_millis = now_ms().max(after);
    let mut id = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut ops = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..5 {
            id += 1;
            last_millis = now_ms().max(last_millis + 1);
            let key = format!("k{}", prng.below(40));
            let value = map(vec![
                ("cycle", Value::from(cycle)),
                ("id", Value::from(id)),
                ("pad", s(&"x".repeat(prng.below(200) as usize))),
            ]);
            ledger.sent.insert((map_name.clone(), key.clone(), last_millis), msgpack(&value));
            batch.push((key.clone(), last_millis));
            ops.push(put(id, &map_name, &key, value, last_millis, &node));
        }
        let frame = encode(&batch_with_concern(ops, "PERSISTED"));
        if socket.send(tungstenite::Message::Binary(frame.into())).is_err() {
            return ledger;
        }
        let ack = loop {
            match socket.read() {
                Ok(tungstenite::Message::Binary(bytes)) => {
                    let message = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
                    if type_of(&message) == "OP_ACK" {
                        break message;
                    }
                }
                Ok(_) => continue,
                Err(_) => return ledger, // killed
            }
        };
        assert_eq!(get(&ack, "payload.achievedLevel").as_str(), Some("PERSISTED"), "{ack}");
        for (key, millis) in batch {
            let slot = ledger.acked.entry((map_name.clone(), key)).or_insert(0);
            *slot = (*slot).max(millis);
        }
        acks.fetch_add(1, Ordering::Relaxed);
    }
    ledger
}

/// Checks the disk against the ledger: every acknowledged write is there with its exact value
/// and timestamp, or superseded by a later write that was sent (acknowledged or not).
fn check_acked_on_disk(data_dir: &Path, ledger: &Ledger, cycle: u32) -> DiskState {
    let (disk, _) = read_disk(data_dir);
    for ((map_name, key), acked_millis) in &ledger.acked {
        let ((millis, counter, node), value) = disk
            .get(&(map_name.clone(), key.clone()))
            .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged {map_name}/{key}@{acked_millis} lost"));
        assert!(
            millis >= acked_millis,
            "cycle {cycle}: {map_name}/{key} went back from acknowledged {acked_millis} to {millis}"
        );
        assert_eq!((*counter, node.as_str()), (0, format!("writer{}", &map_name["crash-".len()..]).as_str()));
        let sent = ledger
            .sent
            .get(&(map_name.clone(), key.clone(), *millis))
            .unwrap_or_else(|| panic!("cycle {cycle}: {map_name}/{key}@{millis} was never sent"));
        assert_eq!(
            value.as_ref(),
            Some(sent),
            "cycle {cycle}: {map_name}/{key}@{millis} has another value than was written"
        );
    }
    disk
}

/// Cycles of the crash test: `SHARDGRID_CRASH_CYCLES` (default 20).
fn crash_cycles() -> u32 {
    std::env::var("SHARDGRID_CRASH_CYCLES").ok().and_then(|text| text.parse().ok()).unwrap_or(20)
}

// Goal: under load from several connections writing PERSISTED batches, a SIGKILL at a random
// moment never loses an acknowledged write: after each restart every acknowledged write is
// present with its exact value and timestamp (on disk), and served (by the restarted server).
// Method: 4 writer threads on 2 shards with small segments (rolls and compaction happen too);
// kill after a seeded random number of acknowledged batches; read the files, restart, query.
// Longer run: SHARDGRID_CRASH_CYCLES=200 cargo test --test durability sigkill.
#[test]
fn sigkill_under_load_keeps_every_acknowledged_write() {
    let data_dir = TempDir::new("sigkill");
    let mut ledger = Ledger::default();
    let mut prng = Prng::from_seed(7);
    let mut last_disk: Option<DiskState> = None;
    for cycle in 0..crash_cycles() {
        let server = Server::on_disk(&data_dir, &["--cores", "0-1", "--segment-bytes", "262144", "--fsync", "batch:2"]);
        if let Some(disk) = last_disk.take() {
            // The restarted server serves what the disk held when it was killed.
            let mut reader = no_auth_client(server.port);
            for writer in 0..4 {
                let map_name = format!("crash-{writer}");
                let rows = read_map(&mut reader, &map_name);
                for ((disk_map, key), (_, value)) in disk.iter().filter(|((disk_map, _), _)| *disk_map == map_name) {
                    let served = rows.get(key).map(msgpack);
                    assert_eq!(
                        served.as_ref(),
                        value.as_ref(),
                        "cycle {cycle}: {disk_map}/{key} served differs from disk"
                    );
                }
            }
        }
        let acks = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let map_name = format!("crash-{writer}");
                let after = ledger.sent.keys().filter(|(map, ..)| *map == map_name).map(|(.., millis)| *millis).max();
                let (acks, stop, port) = (Arc::clone(&acks), Arc::clone(&stop), server.port);
                std::thread::spawn(move || writer_loop(port, writer, cycle, after.unwrap_or(0), acks, stop))
            })
            .collect();
        let kill_after = 10 + prng.below(150);
        poll_until("enough acknowledged batches", std::time::Duration::from_secs(60), || {
            (acks.load(Ordering::Relaxed) >= kill_after).then_some(())
        });
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            let part = writer.join().expect("writer thread");
            ledger.sent.extend(part.sent);
            for (key, millis) in part.acked {
                let slot = ledger.acked.entry(key).or_insert(0);
                *slot = (*slot).max(millis);
            }
        }
        last_disk = Some(check_acked_on_disk(data_dir.path(), &ledger, cycle));
    }
}

// Goal: with --fsync batch:<ms>, a crash loses at most the writes acknowledged within the
// window: every APPLIED write acknowledged longer than the window (plus the time of one flush)
// before the kill is on disk. Method: one connection writes APPLIED batches under batch:100
// for a while; SIGKILL; compare the acknowledgement times with the disk. The slack for one
// flush is generous (2 s) so a loaded machine cannot fail it; the window itself is the point.
#[test]
fn batch_window_bounds_the_loss_of_applied_writes() {
    const WINDOW_MS: u64 = 100;
    const FLUSH_SLACK_MS: u64 = 2_000;
    let data_dir = TempDir::new("window");
    // The client writes as fast as acks come back, for seconds: the per-connection rate limit
    // is raised so that it measures the flusher, not the limiter.
    let server = Server::on_disk(&data_dir, &["--cores", "0", "--fsync", "batch:100", "--rate-limit-ops", "10000000"]);
    let mut client = no_auth_client(server.port);
    let mut acked: Vec<(String, u64, u64)> = Vec::new(); // (key, millis, acknowledged at)
    let started = now_ms();
    let mut id = 0;
    while now_ms() < started + 2 * FLUSH_SLACK_MS + 500 {
        // Every key is written once, so the wall clock is a fine timestamp; one that ran ahead
        // of it by the op count would be refused as too far in the future on a fast server.
        let millis = now_ms();
        let ops: Vec<Value> = (0..20)
            .map(|_| {
                id += 1;
                put(id, "window", &format!("k{id}"), Value::from(id), millis, "w")
            })
            .collect();
        let ack = write(&mut client, ops, "APPLIED");
        assert_eq!(get(&ack, "achievedLevel").as_str(), Some("APPLIED"));
        let at = now_ms();
        acked.extend((id - 19..=id).map(|n| (format!("k{n}"), millis, at)));
    }
    let killed_at = now_ms();
    server.kill();
    let (disk, _) = read_disk(data_dir.path());
    let mut lost_recent = 0;
    for (key, millis, at) in &acked {
        let present =
            disk.get(&("window".to_string(), key.clone())).is_some_and(|((stored, _, _), _)| stored == millis);
        if !present {
            assert!(
                at + WINDOW_MS + FLUSH_SLACK_MS > killed_at,
                "{key} acknowledged {} ms before the kill was lost",
                killed_at - at
            );
            lost_recent += 1;
        }
    }
    // Nothing to assert about how many recent writes were lost: a flush may have just run.
    let _ = lost_recent;
}

/// The segment files of shard `shard` in the current generation, ascending.
fn segments(data_dir: &Path, shard: u16) -> Vec<std::path::PathBuf> {
    let layout = Layout::decode(&std::fs::read_to_string(data_dir.join("LAYOUT")).unwrap()).unwrap();
    let dir = shardgrid::persist::shard_dir(data_dir, layout.generation, shard);
    shardgrid::persist::recover::list_segments(&dir).unwrap().into_values().collect()
}

/// The offsets of the records in a segment file, and where its valid records end.
fn record_offsets(path: &Path) -> (Vec<u64>, u64) {
    let image = std::fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut recovery = LogRecovery::new(false);
    recovery
        .segment(
            shardgrid_storage::SegmentId::parse_file_name(path.file_name().unwrap().to_str().unwrap()).unwrap(),
            &image,
            |offset, _| offsets.push(offset.0),
        )
        .unwrap();
    let end = recovery.finish().active.map(|(_, recovered)| recovered.end.0).unwrap_or(0);
    (offsets, end)
}

/// Writes `count` keys `k0..` of `map_name` with PERSISTED and stops the server with SIGTERM.
fn write_and_stop(data_dir: &TempDir, map_name: &str, count: u64) {
    let server = Server::on_disk(data_dir, &["--cores", "0"]);
    let mut client = no_auth_client(server.port);
    let now = now_ms();
    let ops = (0..count).map(|n| put(n + 1, map_name, &format!("k{n}"), Value::from(n), now, "w")).collect();
    let ack = write(&mut client, ops, "PERSISTED");
    assert_eq!(get(&ack, "achievedLevel").as_str(), Some("PERSISTED"));
    assert!(server.terminate().success());
}

/// Runs the server to its refusal; returns (exit code, stderr).
fn refused_start(data_dir: &TempDir, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["--no-auth", "--data-dir", data_dir.arg()];
    all.extend_from_slice(args);
    let output = run_to_exit(&all, &[]);
    (output.status.code(), String::from_utf8_lossy(&output.stderr).to_string())
}

// Goal: a torn tail (a record half written when the process died) is cut at restart, logged,
// and every record before it is served. Method: write, stop, append half a record's worth of
// garbage after the last record, restart with stderr captured.
#[test]
fn torn_tail_is_cut_and_logged() {
    let data_dir = TempDir::new("torn");
    write_and_stop(&data_dir, "torn", 50);
    let path = segments(data_dir.path(), 0).pop().unwrap();
    let (_, end) = record_offsets(&path);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // A plausible header (length 200, some CRC) and part of a body: a write cut short.
    let mut torn = vec![200u8, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 1, 0, 0, 0, 0, 0, 0];
    torn.extend_from_slice(&[0x55; 40]);
    std::os::unix::fs::FileExt::write_all_at(&file, &torn, end).unwrap();
    drop(file);
    let mut all = vec!["--no-auth", "--data-dir", data_dir.arg(), "--cores", "0"];
    all.push("--storage");
    all.push("disk");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shardgrid"));
    command
        .args(["--port", "0", "--host", "127.0.0.1"])
        .args(&all)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("PORT=").unwrap().parse().unwrap();
    let mut client = no_auth_client(port);
    let rows = read_map(&mut client, "torn");
    assert_eq!(rows.len(), 50, "every record before the torn tail is served");
    drop(client);
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file_name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr.contains("torn tail") && stderr.contains(file_name) && stderr.contains(&end.to_string()),
        "the cut is logged with file and offset: {stderr}"
    );
    // The tail was zeroed: the next start finds a clean log.
    let (offsets, clean_end) = record_offsets(&path);
    assert_eq!((offsets.len(), clean_end), (50, end));
}

// Goal: a corrupt record in the middle of a segment stops the start with a message naming the
// file and offset, changes nothing, and --repair cuts the log there (keeping what precedes).
// Method: write 50 records, flip a byte in the 20th, start without and with --repair.
#[test]
fn corruption_in_the_middle_refuses_start_and_repair_cuts() {
    let data_dir = TempDir::new("corrupt");
    write_and_stop(&data_dir, "mid", 50);
    let path = segments(data_dir.path(), 0).pop().unwrap();
    let (offsets, _) = record_offsets(&path);
    let bad = offsets[20];
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, bad + 24).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x40], bad + 24).unwrap();
    drop(file);
    let before = std::fs::read(&path).unwrap();
    let (code, stderr) = refused_start(&data_dir, &["--cores", "0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(path.to_str().unwrap())
            && stderr.contains(&format!("offset {bad}"))
            && stderr.contains("--repair"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "a refused start changes nothing");

    let server = Server::on_disk(&data_dir, &["--cores", "0", "--repair"]);
    let mut client = no_auth_client(server.port);
    let rows = read_map(&mut client, "mid");
    assert_eq!(rows.len(), 20, "the records before the corrupt one are kept, the rest cut");
}

/// All rows of `map_name` from a fresh client.
fn rows_of(server: &Server, map_name: &str) -> HashMap<String, Value> {
    let mut client = no_auth_client(server.port);
    read_map(&mut client, map_name)
}

// Goal: restarting with 1 -> 2 -> 1 shards moves partitions between shards with no record lost
// or duplicated, removes included; the layout is recorded. Method: write on one shard, restart
// on two (check, write more, remove some), restart on one, check; read the files for duplicates.
#[test]
fn reshard_one_two_one_loses_and_duplicates_nothing() {
    let data_dir = TempDir::new("reshard");
    let now = now_ms();
    let server = Server::on_disk(&data_dir, &["--cores", "0"]);
    let mut client = no_auth_client(server.port);
    let ops = (0..300).map(|n| put(n + 1, "rs", &format!("k{n}"), Value::from(n), now, "w")).collect();
    write(&mut client, ops, "PERSISTED");
    drop(client);
    assert!(server.terminate().success());

    let server = Server::on_disk(&data_dir, &["--cores", "0-1"]);
    let layout = Layout::decode(&std::fs::read_to_string(data_dir.path().join("LAYOUT")).unwrap()).unwrap();
    assert_eq!(layout.shard_count, 2);
    assert_eq!(rows_of(&server, "rs").len(), 300);
    let mut client = no_auth_client(server.port);
    let mut ops: Vec<Value> =
        (300..400).map(|n| put(n + 1, "rs", &format!("k{n}"), Value::from(n), now, "w")).collect();
    ops.extend((0..50).map(|n| remove(1_000 + n, "rs", &format!("k{n}"), now + 1, "w")));
    ops.extend((50..100).map(|n| put(2_000 + n, "rs", &format!("k{n}"), s("updated"), now + 1, "w")));
    write(&mut client, ops, "PERSISTED");
    drop(client);
    assert!(server.terminate().success());

    let server = Server::on_disk(&data_dir, &["--cores", "0"]);
    let rows = rows_of(&server, "rs");
    assert_eq!(rows.len(), 350);
    for n in 0..400 {
        let key = format!("k{n}");
        match n {
            0..50 => assert!(!rows.contains_key(&key), "{key} was removed"),
            50..100 => assert_eq!(rows[&key], s("updated")),
            _ => assert_eq!(rows[&key], Value::from(n)),
        }
    }
    drop(server);
    let layout = Layout::decode(&std::fs::read_to_string(data_dir.path().join("LAYOUT")).unwrap()).unwrap();
    assert_eq!((layout.shard_count, layout.generation), (1, 3));
    let generations: Vec<_> = std::fs::read_dir(data_dir.path())
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().into_string().ok())
        .filter(|name| name.starts_with("gen-"))
        .collect();
    assert_eq!(generations.len(), 1, "old generations are removed: {generations:?}");
    let (_, copies) = read_disk(data_dir.path());
    let duplicated: Vec<_> = copies.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "records on disk twice: {duplicated:?}");
}

/// Total bytes of the segment files of shard 0.
fn log_bytes(data_dir: &Path) -> u64 {
    segments(data_dir, 0).iter().map(|path| std::fs::metadata(path).map_or(0, |metadata| metadata.len())).sum()
}

// Goal: compaction reclaims superseded records while the server keeps serving writes, and
// what it moves survives a crash. Method: small segments; overwrite 100 keys many times (about
// 40 segments' worth); the log must stay far smaller than what was written; then kill and
// check the last value of every key on disk and served after restart.
#[test]
fn compaction_under_writes_reclaims_space_and_keeps_values() {
    let data_dir = TempDir::new("compaction");
    let server = Server::on_disk(&data_dir, &["--cores", "0", "--segment-bytes", "65536", "--fsync", "batch:2"]);
    let mut client = no_auth_client(server.port);
    let started = now_ms();
    let mut id = 0;
    let mut last: HashMap<String, u64> = HashMap::new();
    for round in 0..250u64 {
        let ops: Vec<Value> = (0..100)
            .map(|n| {
                id += 1;
                last.insert(format!("k{n}"), round);
                put(
                    id,
                    "cmp",
                    &format!("k{n}"),
                    map(vec![("round", Value::from(round)), ("pad", s(&"p".repeat(60)))]),
                    started + id,
                    "w",
                )
            })
            .collect();
        write(&mut client, ops, if round == 249 { "PERSISTED" } else { "APPLIED" });
    }
    // About 25 000 records of ~150 bytes were written: ~57 segments of 64 KiB. Compaction
    // keeps the log near the live data (100 records) plus what it has not reached yet.
    poll_until("compaction shrinks the log below 12 segments", std::time::Duration::from_secs(30), || {
        (log_bytes(data_dir.path()) < 12 * 65_536).then_some(())
    });
    let served = read_map(&mut client, "cmp");
    for (key, round) in &last {
        assert_eq!(get(&served[key], "round").as_u64(), Some(*round), "{key} while compacting");
    }
    server.kill();
    let (disk, _) = read_disk(data_dir.path());
    for (key, round) in &last {
        let (_, value) = &disk[&("cmp".to_string(), key.clone())];
        let value = rmpv::decode::read_value(&mut &value.as_ref().unwrap()[..]).unwrap();
        assert_eq!(get(&value, "round").as_u64(), Some(*round), "{key} on disk after compaction and a crash");
    }
    let server = Server::on_disk(&data_dir, &["--cores", "0", "--segment-bytes", "65536"]);
    assert_eq!(rows_of(&server, "cmp").len(), 100);
}

// Goal: tombstones older than the grace period are dropped from disk by compaction, and the
// keys they removed stay removed across a restart (no older value comes back). Method: grace
// 1 ms; write then remove 200 keys, then write filler so their segments are sealed and
// compacted; poll the files until no tombstone is left; restart and query.
#[test]
fn tombstones_past_grace_are_collected_without_resurrection() {
    let data_dir = TempDir::new("tombstones");
    let args = ["--cores", "0", "--segment-bytes", "65536", "--tombstone-grace-ms", "1"];
    let server = Server::on_disk(&data_dir, &args);
    let mut client = no_auth_client(server.port);
    let now = now_ms();
    let ops = (0..200).map(|n| put(n + 1, "gc", &format!("k{n}"), s(&"v".repeat(100)), now, "w")).collect();
    write(&mut client, ops, "PERSISTED");
    let ops = (0..200).map(|n| remove(1_000 + n, "gc", &format!("k{n}"), now + 1, "w")).collect();
    write(&mut client, ops, "PERSISTED");
    let tombstones_on_disk = |dir: &Path| {
        read_disk(dir).0.iter().filter(|((map_name, _), (_, value))| map_name == "gc" && value.is_none()).count()
    };
    assert_eq!(tombstones_on_disk(data_dir.path()), 200);
    let mut id = 10_000;
    poll_until("every tombstone is collected", std::time::Duration::from_secs(60), || {
        // Filler overwriting a few keys seals segments so compaction can reach the old ones.
        let ops = (0..50)
            .map(|n| {
                id += 1;
                put(id, "filler", &format!("f{n}"), s(&"f".repeat(200)), now_ms(), "w")
            })
            .collect();
        write(&mut client, ops, "PERSISTED");
        let (disk, _) = read_disk(data_dir.path());
        let left = disk.iter().filter(|((map_name, _), _)| map_name == "gc").count();
        (left == 0).then_some(())
    });
    server.kill();
    let (disk, _) = read_disk(data_dir.path());
    assert_eq!(
        disk.keys().filter(|(map_name, _)| map_name == "gc").count(),
        0,
        "no record of the removed keys is left on disk"
    );
    let server = Server::on_disk(&data_dir, &args);
    assert!(rows_of(&server, "gc").is_empty(), "removed keys stay removed after their tombstones are gone");
}

// Goal: disk is the default backend and acknowledges PERSISTED only with a syncing policy;
// --fsync never and the memory backend answer APPLIED (never claiming what did not happen).
#[test]
fn persisted_is_acknowledged_only_when_synced() {
    for (args, expected) in [
        (&[][..], "PERSISTED"),
        (&["--fsync", "always"][..], "PERSISTED"),
        (&["--fsync", "never"][..], "APPLIED"),
        (&["--storage", "memory"][..], "APPLIED"),
    ] {
        let data_dir = TempDir::new("levels");
        let mut all = vec!["--cores", "0-1"];
        all.extend_from_slice(args);
        let server = Server::on_disk(&data_dir, &all);
        let mut client = no_auth_client(server.port);
        let ops = (0..20).map(|n| put(n + 1, "levels", &format!("k{n}"), Value::from(n), now_ms(), "w")).collect();
        let ack = write(&mut client, ops, "PERSISTED");
        assert_eq!(get(&ack, "achievedLevel").as_str(), Some(expected), "{args:?}: {ack}");
        assert_eq!(get(&ack, "results.0.achievedLevel").as_str(), Some(expected), "{args:?}: {ack}");
        let ack = write(&mut client, vec![put(99, "levels", "x", Value::from(1), now_ms(), "w")], "APPLIED");
        assert_eq!(
            get(&ack, "achievedLevel").as_str(),
            Some(if expected == "PERSISTED" { "APPLIED" } else { expected }),
            "an APPLIED batch never waits: {ack}"
        );
    }
}

// Goal: a second server on the same data directory refuses to start instead of sharing it.
#[test]
fn data_directory_is_locked() {
    let data_dir = TempDir::new("lock");
    let _server = Server::on_disk(&data_dir, &["--cores", "0"]);
    let (code, stderr) = refused_start(&data_dir, &["--cores", "0"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("in use by another shardgrid process"), "{stderr}");
}

// Goal: when the disk refuses to grow (here: a file size limit below one segment, so no
// segment can be created), PERSISTED writes are answered success: false with the reason and
// never acknowledged as persisted; later writes are refused with the reason; the server keeps
// answering. Method: RLIMIT_FSIZE on the child; one PERSISTED batch, then another.
#[test]
fn a_disk_that_cannot_grow_refuses_writes_and_never_lies() {
    use std::os::unix::process::CommandExt;
    let data_dir = TempDir::new("full");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_shardgrid"));
    command
        .args([
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--no-auth",
            "--cores",
            "0",
            "--segment-bytes",
            "1048576",
            "--data-dir",
            data_dir.arg(),
        ])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: setrlimit and signal.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 256 * 1024, rlim_max: 256 * 1024 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Writing past the limit must fail with EFBIG, not kill the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let port: u16 =
        line.trim().strip_prefix("PORT=").unwrap_or_else(|| panic!("no PORT line: {line:?}")).parse().unwrap();
    let mut client = no_auth_client(port);
    let ack = write(&mut client, vec![put(1, "full", "a", Value::from(1), now_ms(), "w")], "PERSISTED");
    assert_eq!(get(&ack, "achievedLevel").as_str(), Some("APPLIED"), "{ack}");
    assert_eq!(get(&ack, "results.0.success").as_bool(), Some(false), "{ack}");
    assert!(get(&ack, "results.0.error").as_str().unwrap().contains("storage full"), "{ack}");
    client.send(&batch_with_concern(vec![put(2, "full", "b", Value::from(2), now_ms(), "w")], "PERSISTED"));
    let rejected = client.recv_type("OP_REJECTED");
    assert!(get(&rejected, "payload.reason").as_str().unwrap().contains("storage full"), "{rejected}");
    let ack = client.recv_type("OP_ACK");
    assert_eq!(get(&ack, "payload.results.0.success").as_bool(), Some(false), "{ack}");
    client.expect_silence(); // still serving
    let _ = child.kill();
    let _ = child.wait();
}

/// The Merkle root hash of `map_name` (SYNC_INIT -> SYNC_RESP_ROOT).
fn merkle_root(server: &Server, map_name: &str) -> u64 {
    let mut client = no_auth_client(server.port);
    client.send(&msg("SYNC_INIT", vec![("mapName", s(map_name))]));
    let root = client.recv_type("SYNC_RESP_ROOT");
    get(&root, "payload.rootHash").as_u64().unwrap_or_else(|| panic!("SYNC_RESP_ROOT without a root hash: {root}"))
}

// Goal: after a restart the sync indexes are rebuilt from the recovered records, so an in-sync
// client stays in sync (same Merkle root), tombstones included. Method: write and remove on
// two shards, read the root, restart (SIGKILL: no clean shutdown), read it again.
#[test]
fn merkle_root_survives_a_restart() {
    let data_dir = TempDir::new("merkle");
    let server = Server::on_disk(&data_dir, &["--cores", "0-1"]);
    let mut client = no_auth_client(server.port);
    let now = now_ms();
    let mut ops: Vec<Value> =
        (0..300).map(|n| put(n + 1, "tree", &format!("k{n}"), Value::from(n), now, "w")).collect();
    ops.extend((0..30).map(|n| remove(1_000 + n, "tree", &format!("k{n}"), now + 1, "w")));
    write(&mut client, ops, "PERSISTED");
    let before = merkle_root(&server, "tree");
    assert_ne!(before, 0);
    server.kill();
    let server = Server::on_disk(&data_dir, &["--cores", "0-1"]);
    assert_eq!(merkle_root(&server, "tree"), before);
}

// Goal: the O_DIRECT write path (--storage-io dma) writes the same log: PERSISTED writes made
// with it, across a segment roll, are recovered by a buffered restart and by a DMA restart.
// Method: small segments, DMA writes, SIGKILL, restart buffered, write more, restart with DMA.
#[test]
fn dma_writes_recover() {
    let data_dir = TempDir::in_target("dma");
    let args = ["--cores", "0", "--segment-bytes", "65536", "--storage-io", "dma"];
    let server = Server::on_disk(&data_dir, &args);
    let mut client = no_auth_client(server.port);
    let now = now_ms();
    for round in 0..10u64 {
        let ops = (0..50)
            .map(|n| put(round * 100 + n + 1, "dma", &format!("k{round}-{n}"), s(&"d".repeat(200)), now, "w"))
            .collect();
        let ack = write(&mut client, ops, "PERSISTED");
        assert_eq!(get(&ack, "achievedLevel").as_str(), Some("PERSISTED"), "{ack}");
    }
    server.kill();
    assert!(segments(data_dir.path(), 0).len() > 1, "the writes rolled over segments");
    let server = Server::on_disk(&data_dir, &["--cores", "0", "--segment-bytes", "65536"]);
    assert_eq!(rows_of(&server, "dma").len(), 500);
    let mut client = no_auth_client(server.port);
    write(&mut client, vec![put(9_999, "dma", "after", Value::from(1), now, "w")], "PERSISTED");
    server.kill();
    let server = Server::on_disk(&data_dir, &args);
    assert_eq!(rows_of(&server, "dma").len(), 501);
}
