//! End-to-end: every kind of bad input an authenticated client can send (DECISIONS §5), and
//! clients that vanish mid-conversation or in crowds. Each case checks the reply the decision
//! table prescribes, that nothing was applied, and that the server keeps serving.

mod common;

use std::io::Write;

use common::*;
use rmpv::Value;

/// Asserts the next message is `ERROR {code: 400, message: "malformed message: ..."}`.
fn expect_malformed(client: &mut Client) -> String {
    let (code, message) = client.recv_error();
    assert_eq!(code, 400, "{message}");
    assert!(message.starts_with("malformed message: "), "{message:?}");
    message
}

/// Asserts the connection still works end to end: a write is acknowledged and read back.
fn assert_still_serving(client: &mut Client, map_name: &str) {
    client.send(&op_batch(vec![put_op(900, map_name, "still-alive", Value::from(1), now_ms())]));
    assert_eq!(get(&client.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("900"));
    let payload = query(client, &format!("alive-{map_name}"), map_name, map(vec![]));
    assert!(result_keys(&payload).contains(&"still-alive".to_string()), "{payload}");
}

/// `depth` nested single-element arrays around nil.
fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut bytes = vec![0x91; depth];
    bytes.push(0xc0);
    bytes
}

// Goal: bytes that are not msgpack get ERROR 400 "malformed message: ..." and the connection
// stays open and usable (DECISIONS §5). Method: a reserved byte (0xc1), a truncated map and a
// truncated string, each answered, then a write and a read on the same connection.
#[test]
fn malformed_msgpack_gets_400_and_the_connection_keeps_working() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send_bytes(&[0xc1]);
    expect_malformed(&mut client);
    client.send_bytes(&[0xde, 0x00, 0x05, 0xa4, b't', b'y']);
    expect_malformed(&mut client);
    client.send_bytes(&[0xd9, 0xff, b'a']);
    expect_malformed(&mut client);
    client.expect_silence();
    assert_still_serving(&mut client, "after-garbage");
}

// Goal: a frame holding one valid msgpack value that is not a map (a string, an integer, nil)
// is malformed. Method: one frame of each, each answered with 400.
#[test]
fn non_map_frame_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    for value in [s("PING"), Value::from(42), Value::Nil] {
        client.send(&value);
        let message = expect_malformed(&mut client);
        assert!(message.contains("not a map"), "{value}: {message:?}");
    }
    client.expect_silence();
}

// Goal: an array frame such as ["PING", 5] is not executed; it is a 400 malformed (DECISIONS
// §5 last rows). Method: send it; the ERROR must come and no PONG before the fence's.
#[test]
fn array_frame_is_not_executed() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&Value::Array(vec![s("PING"), Value::from(5)]));
    expect_malformed(&mut client);
    client.expect_silence();
}

// Goal: a map without a `type` (or with a nil or non-string one) is malformed. Method: three
// such frames.
#[test]
fn map_without_type_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&map(vec![("timestamp", Value::from(1))]));
    expect_malformed(&mut client);
    client.send(&map(vec![("type", Value::Nil), ("timestamp", Value::from(1))]));
    expect_malformed(&mut client);
    client.send(&map(vec![("type", Value::from(7)), ("timestamp", Value::from(1))]));
    expect_malformed(&mut client);
    client.expect_silence();
}

// Goal: an OP_BATCH whose `ops` is not an array is malformed, gets no OP_ACK and applies
// nothing. Method: ops as a map and as a string; then read the map.
#[test]
fn op_batch_with_ops_not_an_array_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    let op = put_op(1, "typed", "k1", Value::from(1), now_ms());
    client.send(&msg_payload("OP_BATCH", vec![("ops", map(vec![("0", op)]))]));
    expect_malformed(&mut client);
    client.send(&msg_payload("OP_BATCH", vec![("ops", s("PUT k1"))]));
    expect_malformed(&mut client);
    client.expect_silence();
    assert!(result_keys(&query(&mut client, "q", "typed", map(vec![]))).is_empty());
}

// Goal: one op with a wrongly typed field (key an integer) makes the whole OP_BATCH malformed:
// 400 naming the field, no OP_ACK, and not even the valid ops beside it are applied. Method: a
// batch of a good op and a bad one; read the map from another connection.
#[test]
fn op_batch_with_an_integer_key_gets_400_and_applies_nothing() {
    let server = Server::two_shards();
    let mut client = server.client();
    let now = now_ms();
    let good = put_op(1, "typed", "good", Value::from(1), now);
    let bad = map(vec![
        ("id", s("2")),
        ("mapName", s("typed")),
        ("opType", s("PUT")),
        ("key", Value::from(12345)),
        ("record", map(vec![("value", Value::from(2)), ("timestamp", timestamp(now, 0, "client-a"))])),
    ]);
    client.send(&op_batch(vec![good, bad]));
    let message = expect_malformed(&mut client);
    assert!(message.contains("key"), "the error names the field: {message:?}");
    client.expect_silence();
    let mut reader = server.client();
    assert!(result_keys(&query(&mut reader, "q", "typed", map(vec![]))).is_empty(), "nothing of the batch applied");
}

// Goal: a text frame is not a protocol message (binary only, PROTOCOL §1.1): 400 malformed,
// connection stays open. Method: a text frame holding JSON that would be a valid PING.
#[test]
fn text_frame_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send_text(r#"{"type":"PING","timestamp":1}"#);
    expect_malformed(&mut client);
    client.expect_silence();
}

// Goal: a frame that breaks WebSocket framing gets a close frame 1002 "protocol error", never a
// silent drop (DECISIONS §5: "a close is always a real WebSocket close frame"; RFC 6455
// §7.4.1). Regression: the server used to drop such connections without a close frame.
// Method: an unmasked binary frame on one connection, a frame with the reserved opcode 0x3 on
// another, each written raw; then a fresh client is served.
#[test]
fn websocket_protocol_violation_closes_1002() {
    let server = Server::two_shards();
    let mut unmasked = server.client();
    unmasked.raw_stream().write_all(&[0x82, 0x01, 0x80]).unwrap();
    assert_eq!(unmasked.expect_close(), (1002, "protocol error".to_string()));
    unmasked.expect_socket_closed();
    let mut reserved_opcode = server.client();
    reserved_opcode.raw_stream().write_all(&client_frame(0x3, b"x")).unwrap();
    assert_eq!(reserved_opcode.expect_close(), (1002, "protocol error".to_string()));
    reserved_opcode.expect_socket_closed();
    let mut fresh = server.client();
    assert_still_serving(&mut fresh, "after-protocol-errors");
}

// Goal: a text frame that is not UTF-8 fails the connection with close 1007 (RFC 6455 §8.1
// makes this a MUST; a valid text frame is the 400 case above), never a silent drop.
// Regression: the server used to drop the connection without a close frame. Method: a text
// frame of the bytes ff fe written raw.
#[test]
fn text_frame_that_is_not_utf8_closes_1007() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.raw_stream().write_all(&client_frame(0x1, &[0xff, 0xfe])).unwrap();
    assert_eq!(client.expect_close(), (1007, "invalid utf-8".to_string()));
    client.expect_socket_closed();
}

// Goal: a message over --max-frame-bytes closes that connection with 1009 "message too big",
// and the server keeps serving its other clients (DECISIONS §5). Method: with the limit at
// 2 MiB, write a ~3 MiB binary frame raw from another thread (the server stops reading at the
// header, so a blocking write from this thread could stall), read the close frame, then use a
// connection opened before and one opened after.
#[test]
fn frame_over_the_limit_closes_1009_and_others_keep_working() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--max-frame-bytes", "2097152"]);
    let mut bystander = server.client();
    let mut big_sender = server.client();
    let mut raw = big_sender.raw_stream();
    let payload = vec![0x90u8; 3 * 1024 * 1024];
    let writer = std::thread::spawn(move || {
        // The server may close before taking every byte; an error here is expected.
        let _ = raw.write_all(&client_frame(0x2, &payload));
    });
    assert_eq!(big_sender.expect_close(), (1009, "message too big".to_string()));
    big_sender.expect_socket_closed();
    writer.join().unwrap();

    bystander.expect_silence();
    assert_still_serving(&mut bystander, "after-big-frame");
    let mut fresh = server.client();
    assert_still_serving(&mut fresh, "after-big-frame-fresh");
}

// Goal: the limit is on the message, not the frame: a message sent as fragments that are each
// small but add up past --max-frame-bytes closes with 1009 too. Method: three 1 MiB fragments
// of one binary message with the limit at 2 MiB, written raw from another thread.
#[test]
fn fragmented_message_over_the_limit_closes_1009() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--max-frame-bytes", "2097152"]);
    let mut client = server.client();
    let mut raw = client.raw_stream();
    let fragment = vec![0x90u8; 1024 * 1024];
    let writer = std::thread::spawn(move || {
        let mut message = client_frame_part(false, 0x2, &fragment);
        message.extend(client_frame_part(false, 0x0, &fragment));
        message.extend(client_frame_part(true, 0x0, &fragment));
        // The server may close before taking every byte; an error here is expected.
        let _ = raw.write_all(&message);
    });
    assert_eq!(client.expect_close(), (1009, "message too big".to_string()));
    client.expect_socket_closed();
    writer.join().unwrap();
    let mut fresh = server.client();
    assert_still_serving(&mut fresh, "after-fragments");
}

// Goal: a message of exactly 2 MiB is accepted whatever --max-frame-bytes says (DECISIONS §5:
// frames up to 2 MiB are always accepted). Method: with the limit at its floor, an OP_BATCH
// padded to exactly 2 097 152 bytes is acknowledged and its value read back whole.
#[test]
fn frame_of_exactly_2_mib_is_accepted() {
    const TWO_MIB: usize = 2 * 1024 * 1024;
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--max-frame-bytes", "2097152"]);
    let mut client = server.client();
    let now = now_ms();
    let batch_of = |padding: usize| op_batch(vec![put_op(1, "big", "k", s(&"p".repeat(padding)), now)]);
    // Every string of this size has the same 5-byte str32 header, so the frame grows byte for byte.
    let padding = 2_000_000 + TWO_MIB - encode(&batch_of(2_000_000)).len();
    let frame = encode(&batch_of(padding));
    assert_eq!(frame.len(), TWO_MIB);
    client.send_bytes(&frame);
    assert_eq!(get(&client.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("1"));
    let payload = query(&mut client, "q", "big", map(vec![]));
    assert_eq!(get(&payload, "results.0.value").as_str().map(str::len), Some(padding));
}

// Goal: nesting far deeper than the 256 limit is refused with 400 without crashing (no stack
// overflow) and applies nothing. Method: a top-level frame of 1000 nested arrays, and an
// OP_BATCH whose record value nests 1000 arrays deep; then read the map.
#[test]
fn thousand_deep_nesting_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send_bytes(&nested_arrays(1000));
    expect_malformed(&mut client);

    let mut value = Value::Nil;
    for _ in 0..1000 {
        value = Value::Array(vec![value]);
    }
    client.send(&op_batch(vec![put_op(1, "deep", "k", value, now_ms())]));
    expect_malformed(&mut client);
    client.expect_silence();
    assert!(result_keys(&query(&mut client, "q", "deep", map(vec![]))).is_empty());
}

// Goal: a frame with bytes after one complete msgpack map is malformed as a whole: the map is
// not executed. Method: a PING followed by a zero byte; the ERROR must come and no PONG before
// the fence's.
#[test]
fn trailing_garbage_after_a_valid_map_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    let mut frame = encode(&msg("PING", vec![("timestamp", Value::from(1))]));
    frame.push(0x00);
    client.send_bytes(&frame);
    expect_malformed(&mut client);
    client.expect_silence();
}

// Goal: an unknown `type` gets ERROR 400 "unknown message type: <type>". Method: send one.
#[test]
fn unknown_type_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&msg_payload("FLUX_CAPACITOR", vec![("x", Value::from(1))]));
    assert_eq!(client.recv_error(), (400, "unknown message type: FLUX_CAPACITOR".to_string()));
    client.expect_silence();
}

// Goal: a server-to-client type sent by a client is treated as unknown (DECISIONS §5).
// Method: a well-formed OP_ACK and a PONG sent by the client.
#[test]
fn server_to_client_type_from_a_client_gets_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&msg_payload("OP_ACK", vec![("lastId", s("1"))]));
    assert_eq!(client.recv_error(), (400, "unknown message type: OP_ACK".to_string()));
    client.send(&msg("PONG", vec![("timestamp", Value::from(1)), ("serverTime", Value::from(2))]));
    assert_eq!(client.recv_error(), (400, "unknown message type: PONG".to_string()));
    client.expect_silence();
}

// Goal: a known client type that shardgrid does not implement gets ERROR 501 "not implemented:
// <type>" (DECISIONS §5). Method: HYBRID_QUERY_SUBSCRIBE, which DECISIONS names as such (a type
// that may be implemented later, like TOPIC_PUB, would make this test a moving target).
#[test]
fn known_unimplemented_type_gets_501() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&msg_payload("HYBRID_QUERY_SUBSCRIBE", vec![("subscriptionId", s("h1")), ("mapName", s("m"))]));
    assert_eq!(client.recv_error(), (501, "not implemented: HYBRID_QUERY_SUBSCRIBE".to_string()));
    client.expect_silence();
}

// Goal: SQL_QUERY is answered with SQL_QUERY_RESP {code: FEATURE_DISABLED} for its queryId
// (PROTOCOL §4.5, DECISIONS §5), not with ERROR. Method: send one, read the reply.
#[test]
fn sql_query_is_answered_feature_disabled() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&msg_payload("SQL_QUERY", vec![("sql", s("SELECT * FROM todos")), ("queryId", s("sql-1"))]));
    let response = client.recv();
    assert_eq!(type_of(&response), "SQL_QUERY_RESP", "{response}");
    assert_eq!(get(&response, "payload.queryId").as_str(), Some("sql-1"), "{response}");
    assert_eq!(get(&response, "payload.code").as_str(), Some("FEATURE_DISABLED"), "{response}");
    assert!(matches!(get(&response, "payload.columns"), Value::Array(_)), "{response}");
    assert!(matches!(get(&response, "payload.rows"), Value::Array(_)), "{response}");
    client.expect_silence();
}

// Goal: an inbound BATCH envelope (big-endian u32 length + message, repeated) is unpacked and
// each inner message processed in order as if sent alone (PROTOCOL §4.13). Method: a BATCH of
// PING 1, an OP_BATCH, a QUERY_SUB of the same map, PING 2: the replies come in that order and
// the query sees the write.
#[test]
fn batch_envelope_is_unpacked_in_order() {
    let server = Server::two_shards();
    let mut client = server.client();
    let inner = vec![
        msg("PING", vec![("timestamp", Value::from(1))]),
        op_batch(vec![put_op(1, "enveloped", "k1", s("v1"), now_ms())]),
        msg_payload("QUERY_SUB", vec![("queryId", s("q")), ("mapName", s("enveloped")), ("query", map(vec![]))]),
        msg("PING", vec![("timestamp", Value::from(2))]),
    ];
    client.send(&batch_envelope(&inner));
    let first = client.recv();
    assert_eq!((type_of(&first).as_str(), get(&first, "timestamp").as_u64()), ("PONG", Some(1)), "{first}");
    let ack = client.recv();
    assert_eq!(type_of(&ack), "OP_ACK", "{ack}");
    assert_eq!(get(&ack, "payload.lastId").as_str(), Some("1"));
    let response = client.recv();
    assert_eq!(type_of(&response), "QUERY_RESP", "{response}");
    assert_eq!(result_keys(get(&response, "payload")), vec!["k1"]);
    let last = client.recv();
    assert_eq!((type_of(&last).as_str(), get(&last, "timestamp").as_u64()), ("PONG", Some(2)), "{last}");
    client.expect_silence();
}

// Goal: a BATCH of two PINGs gets two PONGs, each echoing its own timestamp, in order.
// Method: the smallest envelope that shows both unpacking and order.
#[test]
fn batch_envelope_of_two_pings_gets_two_pongs() {
    let server = Server::two_shards();
    let mut client = server.client();
    let pings = [msg("PING", vec![("timestamp", Value::from(11))]), msg("PING", vec![("timestamp", Value::from(22))])];
    client.send(&batch_envelope(&pings));
    for expected in [11, 22] {
        let pong = client.recv();
        assert_eq!(type_of(&pong), "PONG", "{pong}");
        assert_eq!(get(&pong, "timestamp").as_u64(), Some(expected));
    }
    client.expect_silence();
}

// Goal: a BATCH over 8192 inner items is refused whole with ERROR 413 (PROTOCOL §1.2): none of
// its items runs. Method: 8193 PINGs in one envelope; the ERROR comes, and no PONG before the
// fence's.
#[test]
fn batch_envelope_over_8192_items_gets_413() {
    let server = Server::two_shards();
    let mut client = server.client();
    let pings: Vec<Value> = (0..8193).map(|index| msg("PING", vec![("timestamp", Value::from(index))])).collect();
    client.send(&batch_envelope(&pings));
    assert_eq!(client.recv_error(), (413, "batch exceeds maximum inner item count".to_string()));
    client.expect_silence();
}

// Goal: clients that send an OP_BATCH and vanish (right after the frame, or halfway through
// it) do not crash the server, and every write acknowledged to anyone stays readable.
// Method: client A writes 100 rows and gets the ack; client B sends a 5000-op batch and drops
// its TCP connection without reading; client C writes half of such a frame raw and drops; a
// fresh client D then reads all of A's rows, and a fifth client writes and reads.
#[test]
fn clients_vanishing_after_a_batch_lose_no_acknowledged_write() {
    let server = Server::two_shards();
    let now = now_ms();
    let mut a = server.client();
    let acked: Vec<Value> =
        (0..100).map(|n| put_op(n + 1, "durable", &format!("a-{n}"), Value::from(n), now)).collect();
    a.send(&op_batch(acked));
    assert_eq!(get(&a.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("100"));

    let big_batch = |node: &str| {
        let ops = (0..5000)
            .map(|n| {
                map(vec![
                    ("id", s(&(n + 1).to_string())),
                    ("mapName", s("durable")),
                    ("opType", s("PUT")),
                    ("key", s(&format!("{node}-{n}"))),
                    ("record", map(vec![("value", s(&"x".repeat(64))), ("timestamp", timestamp(now + 1, 0, node))])),
                ])
            })
            .collect();
        op_batch(ops)
    };
    let mut b = server.client();
    b.send(&big_batch("b"));
    drop(b);

    let c = server.client();
    let frame = client_frame(0x2, &encode(&big_batch("c")));
    let mut raw = c.raw_stream();
    raw.write_all(&frame[..frame.len() / 2]).unwrap();
    raw.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);

    let mut d = server.client();
    let payload = query(&mut d, "check", "durable", map(vec![]));
    let keys = result_keys(&payload);
    for n in 0..100 {
        assert!(keys.contains(&format!("a-{n}")), "acknowledged row a-{n} is readable");
    }
    assert!(!keys.iter().any(|key| key.starts_with("c-")), "nothing of the half-sent frame applied");
    // B's batch may still be landing; D's subscription gets those rows as QUERY_UPDATEs, so the
    // last check runs on a connection of its own.
    drop(d);
    let mut e = server.client();
    assert_still_serving(&mut e, "after-vanishing");
    // A is interested in the map, so other clients' rows reach it as SERVER_EVENTs first.
    a.send(&msg("PING", vec![("timestamp", Value::from(3))]));
    a.recv_type("PONG");
}

// Goal: a crowd of connections opened at once and dropped at every stage of the handshake
// leaves the server serving, and GET /health's `connections` comes back to the connections
// still open. Method: 300 TCP connections: 100 stop mid HTTP head, 100 finish the upgrade
// and stop before AUTH, 100 authenticate; drop them all; a fresh client writes and reads, and
// /health is polled (bounded) until it counts only that client.
#[test]
fn hundreds_of_dropped_connections_leave_the_server_serving() {
    let server = Server::two_shards();
    let mut half_heads = Vec::new();
    let mut upgraded = Vec::new();
    let mut authenticated = Vec::new();
    for index in 0..300 {
        match index % 3 {
            0 => {
                let mut stream = server.tcp();
                stream.write_all(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n").unwrap();
                half_heads.push(stream);
            }
            1 => upgraded.push(Client::connect(server.port, "/ws")),
            _ => {
                let mut client = Client::connect(server.port, "/ws");
                client.send(&msg("AUTH", vec![("token", s(&token("crowd", &["USER"])))]));
                authenticated.push(client);
            }
        }
    }
    for client in &mut authenticated {
        assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
        assert_eq!(type_of(&client.recv()), "AUTH_ACK");
    }
    server.wait_for_connections(200);
    drop(half_heads);
    drop(upgraded);
    drop(authenticated);

    let mut fresh = server.client();
    assert_still_serving(&mut fresh, "after-crowd");
    server.wait_for_connections(1);
}
