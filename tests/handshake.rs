//! End-to-end: the handshake (PROTOCOL §3, §4.1, DECISIONS §5): what a JWT server says first,
//! how it answers good, repeated and bad tokens, what it does with traffic before
//! authentication, no-auth mode, the auth and idle timeouts, and the upgrade paths.

mod common;

use common::*;
use rmpv::Value;

/// Expects the server to refuse `token`: `AUTH_FAIL {error, code: 401}`, then close 1008
/// "authentication failed".
fn assert_token_refused(token: &str) {
    let server = Server::two_shards();
    let mut client = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    client.send(&msg("AUTH", vec![("token", s(token))]));
    let fail = client.recv();
    assert_eq!(type_of(&fail), "AUTH_FAIL", "{fail}");
    assert!(
        get(&fail, "error").as_str().is_some_and(|error| !error.is_empty()),
        "AUTH_FAIL carries an error text: {fail}"
    );
    assert_eq!(get(&fail, "code").as_u64(), Some(401), "{fail}");
    assert_eq!(client.expect_close(), (1008, "authentication failed".to_string()));
    client.expect_socket_closed();
}

// Goal: a JWT server speaks first with AUTH_REQUIRED, before the client sends anything
// (PROTOCOL §3.1 step 1). Method: connect and read without sending.
#[test]
fn jwt_mode_sends_auth_required_first() {
    let server = Server::two_shards();
    let mut client = Client::connect(server.port, "/ws");
    let first = client.recv();
    assert_eq!(type_of(&first), "AUTH_REQUIRED", "{first}");
}

// Goal: the client sends AUTH on open and again on AUTH_REQUIRED; the server acknowledges
// exactly once, with userId = the token's sub (PROTOCOL §3.1 steps 2, 4). Method: send AUTH
// before reading anything, read AUTH_REQUIRED, send AUTH again, then fence with PING: only
// AUTH_ACK may arrive before the PONG.
#[test]
fn auth_sent_twice_is_acknowledged_once() {
    let server = Server::two_shards();
    let mut client = Client::connect(server.port, "/ws");
    let auth = msg("AUTH", vec![("token", s(&token("alice", &["USER"])))]);
    client.send(&auth);
    assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    client.send(&auth);
    let ack = client.recv();
    assert_eq!(type_of(&ack), "AUTH_ACK", "{ack}");
    assert_eq!(get(&ack, "userId").as_str(), Some("alice"), "{ack}");
    client.expect_silence();
}

// Goal: a token signed with another secret is refused with AUTH_FAIL 401 and close 1008
// (DECISIONS §5). Method: AUTH with such a token, read the replies.
#[test]
fn token_with_wrong_secret_is_refused() {
    let claims = serde_json::json!({"sub": "mallory", "exp": 4_102_444_800u64});
    assert_token_refused(&signed_token(&claims, "not-the-server-secret"));
}

// Goal: an expired token (past the 60 s leeway) is refused like any bad token. Method: a token
// whose exp is an hour ago.
#[test]
fn expired_token_is_refused() {
    let an_hour_ago = now_ms() / 1000 - 3600;
    let claims = serde_json::json!({"sub": "alice", "exp": an_hour_ago});
    assert_token_refused(&signed_token(&claims, SECRET));
}

// Goal: an unsigned token (alg "none") is refused: the server fixes the algorithm, it never
// takes it from the token. Method: a header {"alg":"none"} with valid claims and an empty
// signature.
#[test]
fn unsigned_alg_none_token_is_refused() {
    use base64::Engine as _;
    let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let token =
        format!("{}.{}.", encode(r#"{"alg":"none","typ":"JWT"}"#), encode(r#"{"sub":"alice","exp":4102444800}"#));
    assert_token_refused(&token);
}

// Goal: a token that is not a JWT at all is refused, not crashed on. Method: AUTH with
// garbage text.
#[test]
fn garbage_token_is_refused() {
    assert_token_refused("this is not a token at all");
}

// Goal: before authentication, writes, queries and garbage are ignored: no reply, nothing
// applied (DECISIONS §5, §3.6). Method: send OP_BATCH, QUERY_SUB and bad frames unauthenticated,
// fence with PING (only the PONG may come back), then authenticate the same connection (only
// AUTH_ACK may come back) and read the map from a second, authenticated connection.
#[test]
fn traffic_before_auth_is_ignored_and_applies_nothing() {
    let server = Server::two_shards();
    let mut early = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&early.recv()), "AUTH_REQUIRED");
    early.send(&op_batch(vec![put_op(1, "preauth", "sneaky", s("value"), now_ms())]));
    early.send(&msg_payload(
        "CLIENT_OP",
        vec![
            ("id", s("2")),
            ("mapName", s("preauth")),
            ("key", s("k")),
            ("opType", s("PUT")),
            ("record", map(vec![("value", s("v")), ("timestamp", timestamp(now_ms(), 0, "client-a"))])),
        ],
    ));
    early.send(&msg_payload("QUERY_SUB", vec![("queryId", s("q")), ("mapName", s("preauth")), ("query", map(vec![]))]));
    early.send_bytes(&[0xc1, 0xff, 0x00]);
    early.send_bytes(&encode(&Value::Array(vec![s("PING"), Value::from(5)])));
    early.send(&msg("NO_SUCH_TYPE", vec![]));
    early.send_text("hello");
    early.expect_silence();

    early.send(&msg("AUTH", vec![("token", s(&token("user-1", &["USER"])))]));
    assert_eq!(type_of(&early.recv()), "AUTH_ACK");
    early.expect_silence();

    let mut reader = server.client();
    let payload = query(&mut reader, "check", "preauth", map(vec![]));
    assert!(result_keys(&payload).is_empty(), "nothing sent before auth was applied: {payload}");
}

// Goal: PING before authentication gets PONG with the timestamp echoed and the server's
// clock (DECISIONS §5; the client measures RTT and skew from it). Method: a PING whose
// timestamp is a float64 like msgpackr sends Date.now().
#[test]
fn ping_before_auth_gets_pong() {
    let server = Server::two_shards();
    let mut client = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    let sent = now_ms();
    client.send(&msg("PING", vec![("timestamp", Value::F64(sent as f64))]));
    let pong = client.recv();
    assert_eq!(type_of(&pong), "PONG", "{pong}");
    assert_eq!(get(&pong, "timestamp").as_u64(), Some(sent), "{pong}");
    let server_time = get(&pong, "serverTime").as_u64().unwrap_or_else(|| panic!("serverTime is an integer: {pong}"));
    // Both clocks are this machine's: the server's reading is a plausible Unix time in ms.
    assert!(server_time >= sent - 60_000, "serverTime {server_time} is wall-clock ms (sent {sent})");
}

// Goal: DEVICE_HELLO gets no reply from a JWT server (DECISIONS §5): the client waits for
// AUTH_REQUIRED and a token. Method: DEVICE_HELLO (with and without a device token), PING fence.
#[test]
fn device_hello_gets_no_reply_in_jwt_mode() {
    let server = Server::two_shards();
    let mut client = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    client.send(&msg("DEVICE_HELLO", vec![]));
    client.send(&msg("DEVICE_HELLO", vec![("deviceToken", s("some-device-token"))]));
    client.expect_silence();
}

// Goal: a --no-auth server sends nothing on connect (no AUTH_REQUIRED, PROTOCOL §3.2).
// Method: connect, PING at once; the PONG must be the first message.
#[test]
fn no_auth_mode_sends_nothing_first() {
    let server = Server::no_auth(&[]);
    let mut client = Client::connect(server.port, "/ws");
    client.expect_silence();
}

// Goal: in --no-auth mode AUTH gets AUTH_ACK (a client holding a token would otherwise wait
// forever) and DEVICE_HELLO gets DEVICE_ACK (PROTOCOL §3.2, recommendation). Method: send each,
// read the reply, fence with PING.
#[test]
fn no_auth_mode_answers_auth_and_device_hello() {
    let server = Server::no_auth(&[]);
    let mut client = Client::connect(server.port, "/ws");
    client.send(&msg("AUTH", vec![("token", s(&token("user-1", &["USER"])))]));
    let ack = client.recv();
    assert_eq!(type_of(&ack), "AUTH_ACK", "{ack}");
    client.send(&msg("DEVICE_HELLO", vec![]));
    let device_ack = client.recv();
    assert_eq!(type_of(&device_ack), "DEVICE_ACK", "{device_ack}");
    client.expect_silence();
}

// Goal: in --no-auth mode a connection may write and read at once, without any handshake.
// Method: OP_BATCH straight after connecting, then read the row back from a second connection.
#[test]
fn no_auth_mode_writes_work() {
    let server = Server::no_auth(&[]);
    let mut writer = Client::connect(server.port, "/ws");
    writer.send(&op_batch(vec![put_op(1, "open", "k1", s("hello"), now_ms())]));
    let ack = writer.recv_type("OP_ACK");
    assert_eq!(get(&ack, "payload.lastId").as_str(), Some("1"));
    let mut reader = Client::connect(server.port, "/");
    let payload = query(&mut reader, "q", "open", map(vec![]));
    assert_eq!(result_keys(&payload), vec!["k1"]);
    assert_eq!(get(&payload, "results.0.value").as_str(), Some("hello"));
}

// Goal: a connection that does not authenticate within --auth-timeout-ms is closed with 1008
// "authentication timeout" (DECISIONS §5), and an authenticated one is not. Method: an
// authenticated client connects first, then a silent one; wait for the silent one's close
// frame, then PING on the authenticated one (its auth deadline, earlier than the silent one's,
// has passed by then).
#[test]
fn auth_timeout_closes_unauthenticated_connections() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--auth-timeout-ms", "300"]);
    let mut authenticated = server.client();
    let mut silent = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&silent.recv()), "AUTH_REQUIRED");
    assert_eq!(silent.expect_close(), (1008, "authentication timeout".to_string()));
    silent.expect_socket_closed();
    authenticated.expect_silence();
}

// Goal: an authenticated connection that sends no PING for --idle-timeout-ms is closed with
// 1000 "idle timeout" (PROTOCOL §1.2, DECISIONS §5). Method: authenticate, send nothing more,
// wait for the close frame.
#[test]
fn idle_timeout_closes_connections_without_ping() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--idle-timeout-ms", "500"]);
    let mut client = server.client();
    assert_eq!(client.expect_close(), (1000, "idle timeout".to_string()));
    client.expect_socket_closed();
}

// Goal: the WebSocket upgrade is accepted on both `/` and `/ws` (PROTOCOL §1.1
// recommendation), and both paths lead to the same protocol. Method: connect on each path,
// authenticate, PING.
#[test]
fn upgrade_on_root_and_ws_paths() {
    let server = Server::two_shards();
    for path in ["/", "/ws"] {
        let mut client = Client::connect(server.port, path);
        client.authenticate();
        client.expect_silence();
    }
}
