//! End-to-end: hostile and broken clients against the real binary — request heads dribbled a
//! byte at a time, connections that go silent at every stage, thousands of idle connections,
//! reconnect storms, a subscriber that never reads under a write flood, garbage after a valid
//! frame, and floods before AUTH. Each test checks three things: the attack ends the way the
//! limits say (the connection is closed, with the close frame it should get), a well-behaved
//! client is served meanwhile (every round trip inside `ROUND_TRIP_BOUND`, and everything it
//! was acknowledged is read back), and the server's memory stays bounded (its peak resident
//! set, VmHWM from /proc, printed so `--nocapture` shows it).
//!
//! Single bad frames (oversized, deeply nested, not msgpack, trailing bytes inside one binary
//! frame, framing violations) are tests/bad_input.rs; one silent connection per timeout is
//! tests/handshake.rs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use rmpv::Value;

/// A well-behaved client's round trip (PING → PONG, then a one-op write → OP_ACK) must complete
/// within this while an attack runs: far above a normal round trip (milliseconds; a debug build
/// busy with a flood on a loaded two-core machine has taken up to 2 s) and below the 10 s the
/// slowest attacks last, so a server that makes others wait until an attacker is gone fails it.
const ROUND_TRIP_BOUND: Duration = Duration::from_secs(5);

/// `HTTP_HEAD_TIMEOUT_MS` in `src/limits.rs` (not a CLI option).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

const KIB_PER_MIB: u64 = 1024;

/// The server's resident set now and at its peak, in KiB (/proc/<pid>/status).
#[derive(Clone, Copy, Debug)]
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

fn memory(server: &Server) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/<pid>/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find_map(|line| line.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}"));
        line.trim().strip_suffix("kB").unwrap_or_else(|| panic!("{name} {line}")).trim().parse().unwrap()
    };
    Memory { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:") }
}

/// Prints the server's memory for `scenario` and asserts its peak stayed within `growth_mib` of
/// `baseline`'s resident set (measured after start-up, before the attack).
fn assert_memory_bounded(scenario: &str, server: &Server, baseline: Memory, growth_mib: u64) -> Memory {
    let now = memory(server);
    println!(
        "{scenario}: server RSS {} KiB at start, {} KiB now, peak (VmHWM) {} KiB ({:+} KiB over the start)",
        baseline.rss_kib,
        now.rss_kib,
        now.peak_kib,
        now.peak_kib as i64 - baseline.rss_kib as i64
    );
    assert!(
        now.peak_kib <= baseline.rss_kib + growth_mib * KIB_PER_MIB,
        "{scenario}: peak RSS {} KiB is more than {growth_mib} MiB over the {} KiB at start",
        now.peak_kib,
        baseline.rss_kib
    );
    now
}

/// Blocks this test thread for `duration`: clients pacing themselves (a bystander between round
/// trips, an attacker between bytes). Test threads are not shards, so blocking is what we want.
#[allow(clippy::disallowed_methods)]
fn pause(duration: Duration) {
    thread::sleep(duration);
}

/// Raises this process's soft descriptor limit to its hard limit (servers started afterwards
/// inherit it) and returns the new soft limit.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid, initialised struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// Makes dropping `stream` reset the connection (RST) instead of closing it (FIN).
fn reset_on_drop(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a pointer to a live linger struct and its size.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(result, 0, "SO_LINGER");
}

/// Whether the server has closed `stream` (end of file or reset), without blocking. Whatever
/// the server sent before closing is read and dropped.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(error) if error.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// The client half of a WebSocket upgrade of `/ws`, written raw.
fn upgrade_request() -> &'static [u8] {
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
}

/// Reads one HTTP response head from `stream` byte by byte (nothing after it is consumed).
fn read_response_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// An authenticated (JWT) or plain (`--no-auth`) connection to `server`.
fn well_behaved_client(server: &Server, jwt: bool) -> Client {
    if jwt {
        server.client()
    } else {
        no_auth_client(server.port)
    }
}

/// A well-behaved client on its own thread, doing round trips (PING → PONG, one-op write →
/// OP_ACK) on its own map until stopped; the slowest round trip must stay inside
/// `ROUND_TRIP_BOUND` and every acknowledged write must be read back at the end.
struct Bystander {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    thread: JoinHandle<(Client, Duration)>,
    map_name: String,
}

impl Bystander {
    fn start(mut client: Client, map_name: &str) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, rounds, map_name) = (Arc::clone(&stop), Arc::clone(&rounds), map_name.to_string());
            thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let round = rounds.load(Ordering::Relaxed) as u64 + 1;
                    let started = Instant::now();
                    client.send(&msg("PING", vec![("timestamp", Value::from(round))]));
                    client.recv_type("PONG");
                    let key = format!("round-{round}");
                    client.send(&op_batch(vec![put_op(round, &map_name, &key, Value::from(round), now_ms())]));
                    let ack = client.recv_type("OP_ACK");
                    assert_eq!(get(&ack, "payload.lastId").as_str(), Some(round.to_string().as_str()), "{ack}");
                    slowest = slowest.max(started.elapsed());
                    rounds.store(round as usize, Ordering::Relaxed);
                    // The bystander is a client, not a load generator: a few dozen rounds a second.
                    pause(Duration::from_millis(20));
                }
                (client, slowest)
            })
        };
        Bystander { stop, rounds, thread, map_name: map_name.to_string() }
    }

    /// Waits until `more` further round trips have completed.
    fn wait_rounds(&self, more: usize) {
        let target = self.rounds.load(Ordering::Relaxed) + more;
        poll_until(&format!("the bystander completes {more} more round trips"), RECV_TIMEOUT, || {
            (self.rounds.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stops the round trips, checks their latency and reads every acknowledged write back.
    /// Returns the client, still open.
    fn finish(self, scenario: &str) -> Client {
        self.stop.store(true, Ordering::Relaxed);
        let (mut client, slowest) = self.thread.join().expect("the bystander's round trips");
        let rounds = self.rounds.load(Ordering::Relaxed);
        println!("{scenario}: bystander completed {rounds} round trips, slowest {slowest:?}");
        assert!(rounds > 0, "{scenario}: the bystander completed no round trip");
        assert!(slowest <= ROUND_TRIP_BOUND, "{scenario}: a bystander round trip took {slowest:?}");
        let payload = query(&mut client, "bystander-check", &self.map_name, map(vec![]));
        let mut keys = result_keys(&payload);
        keys.sort();
        let mut expected: Vec<String> = (1..=rounds).map(|round| format!("round-{round}")).collect();
        expected.sort();
        assert_eq!(keys, expected, "{scenario}: every acknowledged bystander write is readable");
        client
    }
}

// Goal: request heads that never complete — dribbled one byte at a time, or never started —
// cost the server nothing but their sockets and are cut at the head timeout (10 s,
// HTTP_HEAD_TIMEOUT_MS), while WebSocket clients and plain HTTP requests are served
// throughout. Method: 20 connections dribble an upgrade head one byte every 250 ms (so it is
// never complete within the timeout) and 20 connect and send nothing; a bystander's round trips
// complete, and GET /health answers, while every attacker is still open; every attacker is then
// closed by the server (end of stream; it never got a complete head, so no response);
// the server's peak RSS stays within 32 MiB of its start.
#[test]
fn slowloris_heads_are_cut_at_the_head_timeout_while_others_are_served() {
    const DRIBBLERS: usize = 20;
    const SILENT: usize = 20;
    const DRIBBLE_INTERVAL: Duration = Duration::from_millis(250);
    let server = Server::two_shards();
    let baseline = memory(&server);
    let bystander = Bystander::start(server.client(), "slowloris-bystander");
    let head = upgrade_request();
    // Enough bytes are dribbled before the timeout to matter, never the whole head.
    assert!(head.len() as u128 > HEAD_TIMEOUT.as_millis() / DRIBBLE_INTERVAL.as_millis() + 5);

    let started = Instant::now();
    // (stream, dribbles, bytes sent, when the server closed it)
    let mut attackers: Vec<(TcpStream, bool, usize, Option<Duration>)> = (0..DRIBBLERS + SILENT)
        .map(|index| {
            let stream = server.tcp();
            stream.set_nodelay(true).unwrap();
            (stream, index < DRIBBLERS, 0, None)
        })
        .collect();
    let mut served_during_attack = false;
    let deadline = started + HEAD_TIMEOUT * 3;
    while attackers.iter().any(|attacker| attacker.3.is_none()) {
        assert!(Instant::now() < deadline, "attackers still open after {:?}", deadline - started);
        for (stream, dribbles, sent, closed) in &mut attackers {
            if closed.is_some() {
                continue;
            }
            if closed_by_server(stream) {
                *closed = Some(started.elapsed());
                continue;
            }
            if *dribbles {
                assert!(*sent < head.len(), "a dribbled head was sent whole");
                match stream.write_all(&head[*sent..*sent + 1]) {
                    Ok(()) => *sent += 1,
                    Err(_) => *closed = Some(started.elapsed()),
                }
            }
        }
        if !served_during_attack && started.elapsed() >= Duration::from_secs(1) {
            // One second in, every attacker is open: the bystander must make progress now,
            // not when the attackers are cut.
            bystander.wait_rounds(5);
            assert_eq!(server.health()["connections"].as_u64(), Some(1));
            assert!(
                attackers.iter_mut().all(|attacker| !closed_by_server(&mut attacker.0)),
                "an attacker was closed before the bystander's round trips completed"
            );
            served_during_attack = true;
        }
        pause(DRIBBLE_INTERVAL);
    }
    assert!(served_during_attack);
    let times: Vec<Duration> = attackers.iter().map(|attacker| attacker.3.unwrap()).collect();
    println!(
        "slowloris: {} attackers closed between {:?} and {:?} after they connected",
        times.len(),
        times.iter().min().unwrap(),
        times.iter().max().unwrap()
    );
    let dribbled: usize = attackers.iter().map(|attacker| attacker.2).sum();
    assert!(dribbled >= DRIBBLERS * 10, "the dribblers sent {dribbled} bytes in all");
    bystander.finish("slowloris");
    assert_memory_bounded("slowloris", &server, baseline, 32);
}

// Goal: WebSocket connections that complete the upgrade and then go silent are closed at the
// auth timeout (never authenticated: 1008 "authentication timeout") or the idle timeout
// (authenticated, never PING: 1000 "idle timeout"), all at once without disturbing a client
// that keeps talking, and the connection count comes back to that client alone. Method:
// --auth-timeout-ms 1500 --idle-timeout-ms 2500; 50 silent upgraded connections and 50
// authenticated ones; a bystander PINGs throughout; read every close frame and end of stream.
#[test]
fn silent_websockets_are_closed_at_the_auth_and_idle_timeouts() {
    const EACH: usize = 50;
    let server = Server::start(&[
        "--cores",
        "0-1",
        "--jwt-secret",
        SECRET,
        "--auth-timeout-ms",
        "1500",
        "--idle-timeout-ms",
        "2500",
    ]);
    let baseline = memory(&server);
    let bystander = Bystander::start(server.client(), "silent-bystander");
    let mut never_authenticated: Vec<Client> = (0..EACH).map(|_| Client::connect(server.port, "/ws")).collect();
    let mut never_pinging: Vec<Client> = (0..EACH).map(|_| server.client()).collect();
    for client in &mut never_authenticated {
        assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    }
    for client in &mut never_authenticated {
        assert_eq!(client.expect_close(), (1008, "authentication timeout".to_string()));
        client.expect_socket_closed();
    }
    for client in &mut never_pinging {
        assert_eq!(client.expect_close(), (1000, "idle timeout".to_string()));
        client.expect_socket_closed();
    }
    server.wait_for_connections(1);
    bystander.finish("silent websockets");
    assert_memory_bounded("silent websockets", &server, baseline, 32);
}

// Goal: 5,000 idle WebSocket connections held at once cost a bounded amount of memory each,
// and a client arriving among them is served normally; when they go, the connection count
// comes back down. Method: raise the descriptor limit (the server inherits it), open 5,000
// raw TCP connections and upgrade each by hand (in groups, pipelining the requests), then a
// bystander writes and reads; /health and /metrics count 5,001 connections. The resident set
// each idle connection adds is printed, and must stay under 64 KiB.
#[test]
fn five_thousand_idle_connections_are_held_and_others_are_served() {
    const CONNECTIONS: usize = 5_000;
    const GROUP: usize = 250;
    let fd_limit = raise_fd_limit();
    assert!(fd_limit >= (CONNECTIONS as u64) * 2 + 1_000, "RLIMIT_NOFILE hard limit {fd_limit} is too low");
    let server = Server::start(&["--cores", "0-1", "--no-auth", "--idle-timeout-ms", "600000"]);
    let baseline = memory(&server);
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    while idle.len() < CONNECTIONS {
        let group: Vec<TcpStream> = (0..GROUP)
            .map(|_| {
                let mut stream = server.tcp();
                stream.write_all(upgrade_request()).unwrap();
                stream
            })
            .collect();
        for mut stream in group {
            stream.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
            let head = read_response_head(&mut stream);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            idle.push(stream);
        }
    }
    println!("idle connections: {CONNECTIONS} upgraded in {:?}", started.elapsed());
    server.wait_for_connections(CONNECTIONS as u64);
    let holding = memory(&server);
    let per_connection = (holding.rss_kib.saturating_sub(baseline.rss_kib)) * 1024 / CONNECTIONS as u64;
    println!(
        "idle connections: server RSS {} KiB before, {} KiB holding {CONNECTIONS}: {per_connection} bytes each",
        baseline.rss_kib, holding.rss_kib
    );
    assert!(per_connection <= 64 * 1024, "{per_connection} bytes per idle connection");

    let bystander = Bystander::start(well_behaved_client(&server, false), "idle-bystander");
    bystander.wait_rounds(20);
    assert_eq!(server.metric_sum("shardgrid_connections"), CONNECTIONS as u64 + 1);
    // Every idle connection is still open and was sent nothing.
    for stream in idle.iter_mut().step_by(97) {
        assert!(!closed_by_server(stream), "an idle connection was closed");
    }
    let client = bystander.finish("idle connections");
    drop(idle);
    server.wait_for_connections(1);
    drop(client);
    assert_memory_bounded("idle connections", &server, baseline, CONNECTIONS as u64 * 64 / 1024 + 32);
}

// Goal: thousands of clients that connect, authenticate, write and vanish — closing after
// their ack, resetting after it, or resetting right after sending AUTH and the write without
// reading anything — leak nothing: the connection count returns to the clients still open,
// every acknowledged write is stored (the pipelined, unacknowledged ones may or may not be;
// nothing else is), and memory stays bounded. Method: 4 threads × 750 cycles against two
// shards, a bystander throughout; then one query reads the whole map.
#[test]
fn reconnect_storm_leaks_nothing_and_loses_no_acknowledged_write() {
    const THREADS: usize = 4;
    const CYCLES: usize = 750;
    let server = Server::two_shards();
    let baseline = memory(&server);
    let accepted_before = server.metric_sum("shardgrid_connections_accepted_total");
    let bystander = Bystander::start(server.client(), "storm-bystander");
    let token = token("storm", &["USER"]);
    let started = Instant::now();
    // Each thread returns (acknowledged keys, keys sent by clients that vanished unanswered).
    let storm: Vec<JoinHandle<(Vec<String>, Vec<String>)>> = (0..THREADS)
        .map(|thread_index| {
            let (port, token) = (server.port, token.clone());
            thread::spawn(move || {
                let (mut acknowledged, mut unanswered) = (Vec::new(), Vec::new());
                for cycle in 0..CYCLES {
                    let key = format!("t{thread_index}-c{cycle}");
                    let write = op_batch(vec![put_op(1, "storm", &key, Value::from(cycle), now_ms())]);
                    let mut client = Client::connect(port, "/ws");
                    client.send(&msg("AUTH", vec![("token", s(&token))]));
                    client.send(&write);
                    if cycle % 3 == 2 {
                        // AUTH_REQUIRED is unread, so the close below is a reset.
                        unanswered.push(key);
                    } else {
                        assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
                        assert_eq!(type_of(&client.recv()), "AUTH_ACK");
                        client.recv_type("OP_ACK");
                        if cycle % 3 == 1 {
                            reset_on_drop(client.socket.get_ref());
                        }
                        acknowledged.push(key);
                    }
                    drop(client);
                }
                (acknowledged, unanswered)
            })
        })
        .collect();
    let (mut acknowledged, mut unanswered) = (Vec::new(), Vec::new());
    for thread in storm {
        let (acked, vanished) = thread.join().expect("storm thread");
        acknowledged.extend(acked);
        unanswered.extend(vanished);
    }
    println!(
        "reconnect storm: {} connect/auth/write/vanish cycles in {:?}",
        acknowledged.len() + unanswered.len(),
        started.elapsed()
    );
    let accepted = server.metric_sum("shardgrid_connections_accepted_total") - accepted_before;
    assert!(accepted >= (THREADS * CYCLES) as u64, "{accepted} connections accepted");

    let client = bystander.finish("reconnect storm");
    server.wait_for_connections(1);
    let mut reader = server.client();
    let payload = query(&mut reader, "storm-check", "storm", map(vec![]));
    let stored: std::collections::HashSet<String> = result_keys(&payload).into_iter().collect();
    for key in &acknowledged {
        assert!(stored.contains(key), "acknowledged write {key} is stored");
    }
    let unanswered_stored = unanswered.iter().filter(|key| stored.contains(*key)).count();
    assert_eq!(stored.len(), acknowledged.len() + unanswered_stored, "nothing but the storm's writes is stored");
    println!(
        "reconnect storm: {} acknowledged writes stored, {unanswered_stored} of {} unanswered ones",
        acknowledged.len(),
        unanswered.len()
    );
    drop((client, reader));
    server.wait_for_connections(0);
    assert_eq!(server.metric_sum("shardgrid_connections"), 0);
    assert_eq!(server.metric_sum("shardgrid_live_queries"), 0);
    assert_memory_bounded("reconnect storm", &server, baseline, 48);
}

// Goal: a subscriber that stops reading while writes flood its query is closed as a slow
// consumer once its outbound queue (--outbound-queue-bytes 64 KiB) is full, instead of being
// buffered without bound, while a subscriber that reads keeps up (one QUERY_UPDATE per put,
// none lost) and is not cut; the writer keeps being acknowledged throughout; the stalled
// subscriber, when it reads again, gets what was queued and then the end of the connection —
// a close frame 1008 "slow consumer" when it drains the socket within the server's close
// timeout, else the end of the stream — never a hang; its live query and connection are gone.
// Method: both subscribers send QUERY_SUB, then one reads nothing while a writer sends 1,600
// batches of 25 puts (512-byte values over 200 keys: ~50 MB of SERVER_EVENT + QUERY_UPDATE
// frames for each subscriber, well past the memory bound; one batch's frames fit the queue);
// as soon as /metrics counts the cut, the stalled subscriber reads again. Peak RSS must stay
// within 48 MiB of the start (the journal's 10,000 events per shard are most of what it grows).
#[test]
fn subscriber_that_never_reads_is_cut_off_under_a_write_flood() {
    const BATCHES: u64 = 1_600;
    const OPS: u64 = 25;
    const KEYS: u64 = 200;
    let server = Server::start(&[
        "--cores",
        "0-1",
        "--jwt-secret",
        SECRET,
        "--outbound-queue-bytes",
        "65536",
        "--rate-limit-ops",
        "10000000",
    ]);
    let baseline = memory(&server);
    let mut stalled = server.client();
    query(&mut stalled, "flooded", "flood", map(vec![]));
    stalled.expect_silence();
    let mut reading = server.client();
    query(&mut reading, "flooded", "flood", map(vec![]));
    reading.expect_silence();
    // The reading subscriber must get one QUERY_UPDATE per put, the writer's last ("end") too.
    // The writer keeps at most one batch ahead of it (a batch is ~30 KB of frames to it, under
    // the 64 KiB bound), so a reader the test machine deschedules for a moment is never cut.
    let read = Arc::new(AtomicU64::new(0));
    let reader = {
        let read = Arc::clone(&read);
        thread::spawn(move || {
            let mut updates = 0u64;
            while updates < BATCHES * OPS + 1 {
                if type_of(&reading.recv()) == "QUERY_UPDATE" {
                    updates += 1;
                    read.store(updates, Ordering::Relaxed);
                }
            }
            (reading, updates)
        })
    };
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let writer = {
        let (mut writer, acknowledged, read) = (server.client(), Arc::clone(&acknowledged), Arc::clone(&read));
        thread::spawn(move || {
            let value = s(&"v".repeat(512));
            let mut slowest = Duration::ZERO;
            for batch in 0..BATCHES {
                let deadline = Instant::now() + RECV_TIMEOUT;
                while read.load(Ordering::Relaxed) < batch * OPS {
                    assert!(Instant::now() < deadline, "the reading subscriber stalled before batch {batch}");
                    // A test thread, not a shard: a short sleep between looks is what we want.
                    #[allow(clippy::disallowed_methods)]
                    thread::sleep(Duration::from_micros(200));
                }
                let ops = (0..OPS)
                    .map(|op| {
                        let id = batch * OPS + op + 1;
                        put_op(id, "flood", &format!("k{}", id % KEYS), value.clone(), now_ms())
                    })
                    .collect();
                let sent = Instant::now();
                writer.send(&op_batch(ops));
                let ack = writer.recv_type("OP_ACK");
                slowest = slowest.max(sent.elapsed());
                let last_id = ((batch + 1) * OPS).to_string();
                assert_eq!(get(&ack, "payload.lastId").as_str(), Some(last_id.as_str()), "{ack}");
                acknowledged.store(batch as usize + 1, Ordering::Relaxed);
            }
            writer.send(&op_batch(vec![put_op(BATCHES * OPS + 1, "flood", "end", s("end"), now_ms())]));
            writer.recv_type("OP_ACK");
            (writer, slowest)
        })
    };
    poll_until("the stalled subscriber is cut off as a slow consumer", RECV_TIMEOUT * 6, || {
        (server.metric_sum("shardgrid_slow_consumers_closed_total") > 0).then_some(())
    });
    let cut_after = acknowledged.load(Ordering::Relaxed);

    // The stalled subscriber reads again: what was queued, then the end — within the read timeout.
    let mut frames = 0;
    let ending = loop {
        match stalled.socket.read() {
            Ok(tungstenite::Message::Close(frame)) => {
                break format!("{:?}", frame.map(|frame| (u16::from(frame.code), frame.reason.to_string())))
            }
            Ok(_) => frames += 1,
            Err(tungstenite::Error::Io(error))
                if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                panic!("the stalled subscriber's connection neither closed nor ended within {RECV_TIMEOUT:?}")
            }
            Err(error) => break format!("end of stream ({error})"),
        }
    };
    println!("slow consumer: cut off after {cut_after} batches; it read {frames} frames, then {ending}");
    assert!(ending == r#"Some((1008, "slow consumer"))"# || ending.starts_with("end of stream"), "{ending}");
    assert!((cut_after as u64) < BATCHES, "the cut came only after the flood");

    let (mut writer, slowest) = writer.join().expect("the writer's batches");
    let (reading, updates) = reader.join().expect("the reading subscriber");
    println!(
        "slow consumer: {} puts acknowledged in {:?}, slowest batch ack {slowest:?}; the reading subscriber got {updates} QUERY_UPDATEs",
        BATCHES * OPS,
        started.elapsed()
    );
    assert!(slowest <= ROUND_TRIP_BOUND, "a batch took {slowest:?} to be acknowledged");
    assert_eq!(server.metric_sum("shardgrid_slow_consumers_closed_total"), 1, "only the stalled one is cut");
    server.wait_for_connections(2);
    assert_eq!(server.metric_sum("shardgrid_live_queries"), 1);
    drop(reading);
    writer.expect_silence();
    assert_memory_bounded("slow consumer", &server, baseline, 48);
}

// Goal: valid frames followed by bytes that are not a WebSocket frame are processed before the
// connection fails: each write is acknowledged and stored, then the connection closes with
// 1002 "protocol error"; other connections and what they wrote are untouched. Also, inside one
// binary frame, a valid OP_BATCH followed by a trailing byte is malformed as a whole (ERROR
// 400, nothing applied — tests/bad_input.rs shows the same for a PING) and the connection
// stays open. Method: three write frames and the HTTP upgrade request sent again, in one raw
// TCP write.
#[test]
fn garbage_after_valid_frames_fails_the_connection_after_processing_them() {
    let server = Server::two_shards();
    let mut other = server.client();
    other.send(&op_batch(vec![put_op(1, "garbage", "other", s("kept"), now_ms())]));
    other.recv_type("OP_ACK");

    let mut victim = server.client();
    let mut bytes = Vec::new();
    for id in 1..=3u64 {
        let write = op_batch(vec![put_op(id, "garbage", &format!("valid-{id}"), Value::from(id), now_ms())]);
        bytes.extend(client_frame(0x2, &encode(&write)));
    }
    // The upgrade request again, as if the client did not know it was upgraded. As a frame
    // header it fails at once: 'G' sets a reserved bit with a reserved opcode, 'E' declares an
    // unmasked 69-byte payload, which the rest of the text completes.
    bytes.extend_from_slice(upgrade_request());
    victim.raw_stream().write_all(&bytes).unwrap();
    for id in 1..=3u64 {
        let ack = victim.recv_type("OP_ACK");
        assert_eq!(get(&ack, "payload.lastId").as_str(), Some(id.to_string().as_str()), "{ack}");
    }
    assert_eq!(victim.expect_close(), (1002, "protocol error".to_string()));
    victim.expect_socket_closed();

    let mut frame = encode(&op_batch(vec![put_op(2, "garbage", "trailing", s("never"), now_ms())]));
    frame.push(0x00);
    other.send_bytes(&frame);
    // `other` wrote to the map, so the victim's writes reached it as SERVER_EVENTs first.
    let error = other.recv_type("ERROR");
    assert_eq!(get(&error, "payload.code").as_u64(), Some(400), "{error}");
    assert!(get(&error, "payload.message").as_str().unwrap().starts_with("malformed message"), "{error}");
    let payload = query(&mut other, "garbage-check", "garbage", map(vec![]));
    let mut keys = result_keys(&payload);
    keys.sort();
    assert_eq!(keys, ["other", "valid-1", "valid-2", "valid-3"]);
    other.expect_silence();
    let mut fresh = server.client();
    fresh.expect_silence();
}

// Goal: before AUTH a client can flood the server with anything — writes, queries, topic
// publications, BATCH envelopes, 4 MiB frames, garbage — and get nothing back but handshake
// replies: nothing is applied or published, its connection is closed at the auth timeout
// (1008 "authentication timeout"), the server's memory stays bounded (frames are handled one
// at a time and dropped) and others are served throughout. Method: --auth-timeout-ms 8000; the
// flood (~66 MiB: 16 frames of 4 MiB and ~4,500 small ones) is written raw from a thread, a
// PING last (its PONG is the only reply and proves the flood was consumed); a second client
// subscribed to the flood's topic hears nothing; an authenticated client reads the map empty.
#[test]
fn flood_before_auth_gets_only_handshake_replies_and_applies_nothing() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--auth-timeout-ms", "8000"]);
    let baseline = memory(&server);
    let bystander = Bystander::start(server.client(), "preauth-bystander");
    let mut listener = server.client();
    listener.send(&msg_payload("TOPIC_SUB", vec![("topic", s("preauth-topic"))]));
    listener.expect_silence();

    let mut flooder = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&flooder.recv()), "AUTH_REQUIRED");
    let now = now_ms();
    let mut flood = Vec::new();
    let mut frames = 0;
    let mut push = |flood: &mut Vec<u8>, frame: Vec<u8>| {
        flood.extend(frame);
        frames += 1;
    };
    for index in 0..2_000u64 {
        let ops =
            (0..10).map(|op| put_op(index * 10 + op + 1, "preauth", &format!("k{index}-{op}"), s("x"), now)).collect();
        push(&mut flood, client_frame(0x2, &encode(&op_batch(ops))));
        if index % 4 == 0 {
            let query = msg_payload(
                "QUERY_SUB",
                vec![("queryId", s(&format!("q{index}"))), ("mapName", s("preauth")), ("query", map(vec![]))],
            );
            push(&mut flood, client_frame(0x2, &encode(&query)));
            let publish = msg_payload("TOPIC_PUB", vec![("topic", s("preauth-topic")), ("data", Value::from(index))]);
            push(&mut flood, client_frame(0x2, &encode(&publish)));
            let envelope = batch_envelope(&[op_batch(vec![put_op(1, "preauth", "enveloped", s("x"), now)])]);
            push(&mut flood, client_frame(0x2, &encode(&envelope)));
            push(&mut flood, client_frame(0x2, &[0xC1, 0x00, 0xFF]));
            push(&mut flood, client_frame(0x1, b"{\"type\":\"PING\"}"));
        }
    }
    let big = op_batch(vec![put_op(1, "preauth", "big", Value::Binary(vec![7; 4 * 1024 * 1024]), now)]);
    for _ in 0..16 {
        push(&mut flood, client_frame(0x2, &encode(&big)));
    }
    push(&mut flood, client_frame(0x2, &encode(&msg("PING", vec![("timestamp", Value::from(99))]))));
    let flood_bytes = flood.len();
    let mut raw = flooder.raw_stream();
    let flood_started = Instant::now();
    let writer = thread::spawn(move || raw.write_all(&flood));
    // The server reads the whole flood before the auth timeout (a debug build takes 1–3 s for
    // it): its only reply is the PONG for the last frame.
    let pong = flooder.recv();
    assert_eq!(type_of(&pong), "PONG", "{pong}");
    assert_eq!(get(&pong, "timestamp").as_u64(), Some(99));
    writer.join().unwrap().expect("the flood was written whole");
    println!(
        "pre-auth flood: {frames} frames, {flood_bytes} bytes in {:?}, answered only by the fence's PONG",
        flood_started.elapsed()
    );
    assert_eq!(flooder.expect_close(), (1008, "authentication timeout".to_string()));
    flooder.expect_socket_closed();

    listener.expect_silence();
    let payload = query(&mut listener, "preauth-check", "preauth", map(vec![]));
    assert_eq!(result_keys(&payload), Vec::<String>::new(), "nothing of the flood was applied");
    bystander.finish("pre-auth flood");
    assert_memory_bounded("pre-auth flood", &server, baseline, 48);
}
