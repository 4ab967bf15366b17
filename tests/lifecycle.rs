//! End-to-end: the server's life as an operator sees it — the HTTP endpoints beside the
//! WebSocket, the command line it refuses, the environment it reads, what it prints on stdout,
//! and how connections end (SIGTERM, a client's close frame).

mod common;

use common::*;
use rmpv::Value;

/// Asserts a refused start-up: exit code 2, a message on stderr that contains `mention`, and
/// nothing at all on stdout.
fn assert_refused(args: &[&str], env: &[(&str, &str)], mention: &str) {
    let output = run_to_exit(args, env);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?} exits with 2; stderr: {stderr}");
    assert!(
        output.stdout.is_empty(),
        "{args:?} prints nothing on stdout, got {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(stderr.contains(mention), "{args:?}: stderr names the problem ({mention:?}): {stderr}");
}

// Goal: GET /health answers 200 JSON with the shard count and uptime (PROTOCOL §1.3).
// Method: a two-shard server; parse the body.
#[test]
fn health_reports_shards_and_uptime() {
    let server = Server::two_shards();
    let health = server.health();
    assert_eq!(health["shards"], 2, "{health}");
    assert!(health["uptime_secs"].is_u64(), "{health}");
    assert_eq!(health["state"], "ready", "{health}");
    assert_eq!(health["connections"], 0, "{health}");
}

// Goal: GET /metrics is Prometheus text exposition that parses: comments are `# HELP` or
// `# TYPE`, every other line is `name{labels} value` with a numeric value. Method: fetch after
// some traffic and check every line.
#[test]
fn metrics_are_prometheus_text() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&op_batch(vec![put_op(1, "m", "k", Value::from(1), now_ms())]));
    client.recv_type("OP_ACK");
    let (status, body) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("metrics are UTF-8");
    let sample =
        regex::Regex::new(r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.eE+-]+$"#)
            .unwrap();
    let mut samples = 0;
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(comment.starts_with("HELP ") || comment.starts_with("TYPE "), "{line:?}");
            continue;
        }
        assert!(sample.is_match(line), "not a Prometheus sample line: {line:?}");
        let value = line.rsplit_once(' ').unwrap().1;
        value.parse::<f64>().unwrap_or_else(|_| panic!("value of {line:?}"));
        samples += 1;
    }
    assert!(samples > 0, "metrics have samples: {text}");
    assert!(text.lines().any(|line| line.starts_with("shardgrid_ops_applied_total")), "{text}");
}

// Goal: a path no endpoint serves is 404. Method: GET an unknown path.
#[test]
fn unknown_path_is_404() {
    let server = Server::two_shards();
    assert_eq!(server.http("GET", "/no/such/path", &[], b"").0, 404);
}

// Goal: POST /sync is the HTTP sync transport (DECISIONS §4.5), JWT-checked like the
// WebSocket: without a token it is refused with 401 (tests/http_sync.rs covers the transport).
// Method: POST an empty msgpack map without an Authorization header.
#[test]
fn post_sync_requires_a_token() {
    let server = Server::two_shards();
    let (status, body) = server.http("POST", "/sync", &[("Content-Type", "application/x-msgpack")], &[0x80]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
}

// Goal: a core list naming one CPU twice is refused (exit 2, stderr, empty stdout).
#[test]
fn cli_refuses_a_duplicate_core() {
    assert_refused(&["--cores", "0,0", "--no-auth"], &[], "--cores");
}

// Goal: a core list naming a CPU this machine does not have is refused.
#[test]
fn cli_refuses_a_missing_core() {
    assert_refused(&["--cores", "999", "--no-auth"], &[], "--cores");
}

// Goal: an empty core mask is refused.
#[test]
fn cli_refuses_an_empty_core_mask() {
    assert_refused(&["--core-mask", "0x0", "--no-auth"], &[], "--core-mask");
}

// Goal: a server with neither a JWT secret nor --no-auth refuses to start rather than run
// open by accident.
#[test]
fn cli_refuses_no_secret_and_no_no_auth() {
    assert_refused(&["--cores", "0"], &[], "--jwt-secret");
}

// Goal: --storage disk (the default backend) starts, in the directory --data-dir names. The
// spec changed from "refused" when the disk backend landed (tests/durability.rs covers it).
#[test]
fn cli_accepts_disk_storage() {
    let data_dir = TempDir::new("lifecycle-disk");
    let server = Server::start(&["--cores", "0", "--no-auth", "--storage", "disk", "--data-dir", data_dir.arg()]);
    assert!(data_dir.path().join("LAYOUT").exists(), "the data directory is initialised");
    assert!(server.terminate().success());
}

// Goal: a --fsync policy that is not always, never or batch:<ms> (ms > 0) is refused.
#[test]
fn cli_refuses_a_bad_fsync_policy() {
    assert_refused(&["--cores", "0", "--no-auth", "--fsync", "sometimes"], &[], "--fsync");
    assert_refused(&["--cores", "0", "--no-auth", "--fsync", "batch:0"], &[], "--fsync");
}

// Goal: a segment size that is not a multiple of 4096 within bounds is refused.
#[test]
fn cli_refuses_a_bad_segment_size() {
    assert_refused(&["--cores", "0", "--no-auth", "--segment-bytes", "1000"], &[], "--segment-bytes");
}

// Goal: --max-frame-bytes below the 2 MiB floor is refused (frames up to 2 MiB are always
// accepted, DECISIONS §5).
#[test]
fn cli_refuses_a_frame_limit_below_2_mib() {
    assert_refused(&["--cores", "0", "--no-auth", "--max-frame-bytes", "1000"], &[], "--max-frame-bytes");
}

// Goal: the JWT_SECRET environment variable works in place of --jwt-secret (TopGun's tooling
// sets it). Method: start with only the variable; a token signed with it authenticates.
#[test]
fn jwt_secret_from_the_environment() {
    let server = Server::start_with_env(&["--cores", "0-1"], &[("JWT_SECRET", SECRET)]);
    let mut client = server.client();
    client.expect_silence();
}

// Goal: STORAGE_BACKEND=null (TopGun's name for in-memory) is accepted. Method: start with it;
// a write is acknowledged and read back.
#[test]
fn storage_backend_null_is_accepted() {
    let server = Server::start_with_env(&["--cores", "0", "--no-auth"], &[("STORAGE_BACKEND", "null")]);
    let mut client = Client::connect(server.port, "/ws");
    client.send(&op_batch(vec![put_op(1, "mem", "k", Value::from(1), now_ms())]));
    client.recv_type("OP_ACK");
    assert_eq!(result_keys(&query(&mut client, "q", "mem", map(vec![]))), vec!["k"]);
}

// Goal: stdout carries exactly one line, `PORT=<n>`, for the whole life of the server: not
// after traffic, errors, refused tokens or shutdown (tools read that line and nothing else).
// Method: start (the harness checks the first line), exercise the server, SIGTERM, and read
// stdout to its end after the exit.
#[test]
fn stdout_is_exactly_the_port_line() {
    let mut server = Server::two_shards();
    let mut client = server.client();
    client.send(&op_batch(vec![put_op(1, "out", "k", Value::from(1), now_ms())]));
    client.recv_type("OP_ACK");
    client.send_bytes(&[0xc1]);
    client.recv_error();
    let mut refused = Client::connect(server.port, "/");
    refused.recv();
    refused.send(&msg("AUTH", vec![("token", s("garbage"))]));
    assert_eq!(refused.expect_close().0, 1008);
    server.health();
    server.http("GET", "/metrics", &[], b"");
    server.http("GET", "/nope", &[], b"");
    drop(client);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit().success());
    assert_eq!(server.stdout_after_port_line(), "", "nothing on stdout after PORT=<n>");
}

// Goal: on SIGTERM a connected client receives close 1001 "going away" and the process exits
// with status 0 (DECISIONS §5). Method: an authenticated client, SIGTERM, read the close frame,
// wait for the exit.
#[test]
fn sigterm_closes_clients_going_away_and_exits_0() {
    let mut server = Server::two_shards();
    let mut client = server.client();
    client.expect_silence();
    server.signal(libc::SIGTERM);
    assert_eq!(client.expect_close(), (1001, "going away".to_string()));
    client.expect_socket_closed();
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status}");
}

// Goal: a client's close frame is echoed by the server with the same code before the socket
// closes (DECISIONS §5, RFC 6455 §5.5.1). Method: send close 4000 "bye", read the server's
// close frame, then read the TCP stream to its end.
#[test]
fn client_close_frame_is_echoed() {
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;

    let server = Server::two_shards();
    let mut client = server.client();
    client.socket.close(Some(CloseFrame { code: CloseCode::from(4000), reason: "bye".into() })).unwrap();
    assert_eq!(client.expect_close(), (4000, "bye".to_string()));
    client.expect_socket_closed();
    server.wait_for_connections(0);
}
