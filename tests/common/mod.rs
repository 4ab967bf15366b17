//! Shared end-to-end test support: start the real `shardgrid` binary on `--port 0`, read
//! `PORT=<n>` from its stdout, and talk WebSocket + msgpack to it like a client would.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rmpv::Value;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// The HS256 secret test servers run with.
pub const SECRET: &str = "e2e-test-secret";
/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for a server process to exit (after SIGTERM, or a refused start).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    /// The rest of the server's stdout after the `PORT=<n>` line. Kept open so a stray write
    /// to stdout never fails in the server, and so a test can read what followed the line.
    stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts the server with `args` added to `--port 0 --host 127.0.0.1`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// Starts the server with `args` (after `--port 0 --host 127.0.0.1`) and `env` set on top
    /// of an environment cleared of the variables the server reads.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child =
            server_command(args, env).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start shardgrid");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read PORT line");
        let port = line
            .strip_suffix('\n')
            .and_then(|line| line.strip_prefix("PORT="))
            .unwrap_or_else(|| panic!("first stdout line must be PORT=<n>, got {line:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("first stdout line must be PORT=<n>, got {line:?}"));
        Server { child, port, stdout }
    }

    /// One shard, no authentication: for tests about the transport rather than the handshake.
    pub fn no_auth(extra: &[&str]) -> Server {
        let mut args = vec!["--cores", "0", "--no-auth"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) without waiting for anything.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; the child is not reaped until `wait_exit` or
        // drop, so the pid cannot have been reused.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "kill({}, {signal})", self.child.id());
    }

    /// Waits up to `EXIT_TIMEOUT` for the process to exit and returns its status; panics (and
    /// the drop kills the process) if it does not. Polls `try_wait`: std has no wait with a
    /// deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        poll_until("the server exits", EXIT_TIMEOUT, || child.try_wait().expect("try_wait"))
    }

    /// Everything the server wrote to stdout after the `PORT=<n>` line. Call after the process
    /// has exited (it reads to end of file).
    pub fn stdout_after_port_line(&mut self) -> String {
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read stdout");
        rest
    }

    /// Two shards, JWT auth.
    pub fn two_shards() -> Server {
        Server::start(&["--cores", "0-1", "--jwt-secret", SECRET])
    }

    pub fn client(&self) -> Client {
        let mut client = Client::connect(self.port, "/ws");
        client.authenticate();
        client
    }

    /// A raw TCP connection to the server's port.
    pub fn tcp(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }

    /// `GET /health`, parsed.
    pub fn health(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/health", &[], b"");
        assert_eq!(status, 200, "GET /health: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("GET /health returns JSON")
    }

    /// Waits until `GET /health` reports `connections` open WebSocket connections.
    pub fn wait_for_connections(&self, connections: u64) {
        poll_until(&format!("/health reports {connections} connections"), RECV_TIMEOUT, || {
            (self.health()["connections"].as_u64() == Some(connections)).then_some(())
        });
    }

    /// One `/metrics` sample's value on each shard, in shard order (`name{shard="n"} value`).
    pub fn metric_per_shard(&self, name: &str) -> Vec<u64> {
        let (status, body) = self.http("GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        let prefix = format!("{name}{{shard=\"");
        text.lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .map(|rest| rest.split_once("} ").unwrap().1.trim().parse().unwrap())
            .collect()
    }

    /// One `/metrics` sample summed over the shards.
    pub fn metric_sum(&self, name: &str) -> u64 {
        self.metric_per_shard(name).iter().sum()
    }

    /// One HTTP/1.1 request; returns (status, body).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = self.tcp();
        stream.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let head_end = response.windows(4).position(|window| window == b"\r\n\r\n").expect("complete head");
        let head = String::from_utf8_lossy(&response[..head_end]).to_string();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, response[head_end + 4..].to_vec())
    }
}

/// The server command with `--port 0 --host 127.0.0.1`, `args`, and `env` set on top of an
/// environment cleared of the variables the server reads.
fn server_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shardgrid"));
    command.args(["--port", "0", "--host", "127.0.0.1"]).args(args);
    // Disk is the default backend; a test that names no data directory runs in memory, so
    // tests never share (or leave behind) a ./shardgrid-data.
    let storage_chosen = args.iter().any(|arg| *arg == "--storage" || *arg == "--data-dir")
        || env.iter().any(|(name, _)| *name == "STORAGE_BACKEND");
    if !storage_chosen {
        command.args(["--storage", "memory"]);
    }
    for name in ["JWT_SECRET", "STORAGE_BACKEND", "TOPGUN_NO_AUTH", "PORT", "HOST", "NODE_ID", "DATA_DIR"] {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs the server binary with `args` and `env` (as `Server::start_with_env` would) and
/// waits up to `EXIT_TIMEOUT` for it to exit by itself: for start-ups the server must refuse.
/// Panics, killing it, if it is still running by then.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = server_command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shardgrid");
    let exited = poll_until_or_none(EXIT_TIMEOUT, || child.try_wait().expect("try_wait"));
    if exited.is_none() {
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        panic!("shardgrid {args:?} kept running; stdout {:?}", String::from_utf8_lossy(&output.stdout));
    }
    // The process has exited, so its pipes end; a refusal writes a line or two.
    child.wait_with_output().unwrap()
}

/// Polls `check` until it returns `Some` or `timeout` passes. For conditions a test can only
/// observe from outside (process exit, a server counter): it waits for a state, never for an
/// amount of time, and asserts nothing about how long the state took to arrive.
pub fn poll_until_or_none<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The test thread is not a shard: blocking it between polls is what we want here.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `poll_until_or_none`, panicking with `what` when the condition never holds.
pub fn poll_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_until_or_none(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting until {what}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket client speaking msgpack.
pub struct Client {
    pub socket: WebSocket<TcpStream>,
}

impl Client {
    pub fn connect(port: u16, path: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://127.0.0.1:{port}{path}");
        let (socket, _) = tungstenite::client(url, stream).expect("websocket handshake");
        socket.get_ref().set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
        Client { socket }
    }

    /// Reads AUTH_REQUIRED, sends a valid token, expects AUTH_ACK.
    pub fn authenticate(&mut self) {
        let first = self.recv();
        assert_eq!(type_of(&first), "AUTH_REQUIRED");
        self.send(&msg("AUTH", vec![("token", s(&token("user-1", &["USER"])))]));
        let ack = self.recv();
        assert_eq!(type_of(&ack), "AUTH_ACK", "{ack}");
    }

    pub fn send(&mut self, message: &Value) {
        self.send_bytes(&encode(message));
    }

    /// Sends `bytes` as one binary frame, whatever they contain.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.socket.send(Message::Binary(bytes.to_vec().into())).unwrap();
    }

    /// Sends `text` as one text frame.
    pub fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).unwrap();
    }

    /// A second handle on the TCP connection, for writing raw bytes past the WebSocket layer
    /// (see `client_frame`) while `recv`/`expect_close` keep reading through it.
    pub fn raw_stream(&self) -> TcpStream {
        self.socket.get_ref().try_clone().unwrap()
    }

    /// Asserts the server has closed the TCP connection: reading it raw ends (end of file, or a
    /// reset when the server closed with bytes of ours unread) without any further bytes.
    pub fn expect_socket_closed(&self) {
        let mut rest = Vec::new();
        match self.raw_stream().read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "bytes after the close frame: {rest:?}"),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(error) => panic!("the server did not close the socket: {error}"),
        }
    }

    /// The next message, which must be `ERROR`; returns its (code, message).
    pub fn recv_error(&mut self) -> (u64, String) {
        let error = self.recv();
        assert_eq!(type_of(&error), "ERROR", "expected ERROR, got {error}");
        let code = get(&error, "payload.code").as_u64().unwrap_or_else(|| panic!("ERROR without a code: {error}"));
        let message =
            get(&error, "payload.message").as_str().unwrap_or_else(|| panic!("ERROR without a message: {error}"));
        (code, message.to_string())
    }

    /// The next binary message, decoded. Panics on timeout or close.
    pub fn recv(&mut self) -> Value {
        loop {
            match self.socket.read().expect("a message before the timeout") {
                Message::Binary(bytes) => return rmpv::decode::read_value(&mut &bytes[..]).unwrap(),
                Message::Close(frame) => panic!("unexpected close: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message of type `wanted`, skipping `SERVER_EVENT`s and `PONG`s before it.
    pub fn recv_type(&mut self, wanted: &str) -> Value {
        loop {
            let message = self.recv();
            let kind = type_of(&message);
            if kind == wanted {
                return message;
            }
            assert!(matches!(kind.as_str(), "SERVER_EVENT" | "PONG"), "expected {wanted}, got {message}");
        }
    }

    /// Asserts that nothing arrives within `wait` (a PING round trip fences it: the server
    /// handles a connection's messages in order, so anything sent before the PONG arrives first).
    pub fn expect_silence(&mut self) {
        self.send(&msg("PING", vec![("timestamp", Value::from(7))]));
        let next = self.recv();
        assert_eq!(type_of(&next), "PONG", "expected nothing before PONG, got {next}");
    }

    /// Waits for the server's close frame and returns (code, reason).
    pub fn expect_close(&mut self) -> (u16, String) {
        let deadline = Instant::now() + RECV_TIMEOUT;
        while Instant::now() < deadline {
            match self.socket.read() {
                Ok(Message::Close(Some(frame))) => return (u16::from(frame.code), frame.reason.to_string()),
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(error) => panic!("socket ended without a close frame: {error}"),
            }
        }
        panic!("no close frame within {RECV_TIMEOUT:?}");
    }
}

/// An HS256 JWT for `sub` with `roles`, valid far into the future.
pub fn token(sub: &str, roles: &[&str]) -> String {
    let claims = serde_json::json!({"sub": sub, "roles": roles, "exp": 4_102_444_800u64});
    signed_token(&claims, SECRET)
}

/// An HS256 JWT carrying exactly `claims`, signed with `secret`.
pub fn signed_token(claims: &serde_json::Value, secret: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// One complete client-to-server WebSocket frame (FIN set, masked with a zero key, so the
/// payload bytes go out unchanged), for writing through `Client::raw_stream`. Opcodes: 0x1
/// text, 0x2 binary, 0x8 close.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_part(true, opcode, payload)
}

/// One client-to-server frame of a possibly fragmented message: the first fragment carries the
/// message's opcode, the others opcode 0x0 (continuation); only the last has `fin` set.
pub fn client_frame_part(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    const FIN_BIT: u8 = 0x80;
    const MASK_BIT: u8 = 0x80;
    let mut frame = vec![if fin { FIN_BIT | opcode } else { opcode }];
    match payload.len() {
        length @ 0..=125 => frame.push(MASK_BIT | length as u8),
        length @ 126..=0xFFFF => {
            frame.push(MASK_BIT | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(MASK_BIT | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

pub fn s(text: &str) -> Value {
    Value::from(text)
}

/// A map from string keys.
pub fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(key, value)| (Value::from(key), value)).collect())
}

/// `{type, payload}`.
pub fn msg_payload(kind: &str, payload: Vec<(&str, Value)>) -> Value {
    map(vec![("type", s(kind)), ("payload", map(payload))])
}

/// `{type, ...flat fields}`.
pub fn msg(kind: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut entries = vec![("type", s(kind))];
    entries.extend(fields);
    map(entries)
}

pub fn get<'a>(value: &'a Value, path: &str) -> &'a Value {
    let mut current = value;
    for part in path.split('.') {
        current = match current {
            Value::Map(entries) => entries
                .iter()
                .find(|(key, _)| key.as_str() == Some(part))
                .map(|(_, value)| value)
                .unwrap_or(&Value::Nil),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|index| items.get(index)).unwrap_or(&Value::Nil),
            _ => &Value::Nil,
        };
    }
    current
}

pub fn type_of(message: &Value) -> String {
    get(message, "type").as_str().unwrap_or("").to_string()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

pub fn timestamp(millis: u64, counter: u32, node: &str) -> Value {
    map(vec![("millis", Value::from(millis as f64)), ("counter", Value::from(counter)), ("nodeId", s(node))])
}

/// One REMOVE op with a tombstone record stamped `millis` by `client-a`.
pub fn remove_op(id: u64, map_name: &str, key: &str, millis: u64) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("REMOVE")),
        ("key", s(key)),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp(millis, 0, "client-a"))])),
    ])
}

/// One LWW put op as the client's op log holds it.
pub fn put_op(id: u64, map_name: &str, key: &str, value: Value, millis: u64) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("PUT")),
        ("key", s(key)),
        ("record", map(vec![("value", value), ("timestamp", timestamp(millis, 0, "client-a"))])),
    ])
}

pub fn op_batch(ops: Vec<Value>) -> Value {
    msg_payload("OP_BATCH", vec![("ops", Value::Array(ops))])
}

/// Sends QUERY_SUB and returns the QUERY_RESP payload.
pub fn query(client: &mut Client, query_id: &str, map_name: &str, query: Value) -> Value {
    client.send(&msg_payload("QUERY_SUB", vec![("queryId", s(query_id)), ("mapName", s(map_name)), ("query", query)]));
    let response = client.recv_type("QUERY_RESP");
    get(&response, "payload").clone()
}

/// Keys of a QUERY_RESP payload's results, in order.
pub fn result_keys(payload: &Value) -> Vec<String> {
    match get(payload, "results") {
        Value::Array(rows) => rows.iter().map(|row| get(row, "key").as_str().unwrap().to_string()).collect(),
        other => panic!("results must be an array, got {other}"),
    }
}

/// An inbound `BATCH` envelope (PROTOCOL §4.13, client-to-server layout): `data` is each
/// message's msgpack bytes behind a big-endian u32 length, with no count prefix.
pub fn batch_envelope(messages: &[Value]) -> Value {
    let mut data = Vec::new();
    for message in messages {
        let bytes = encode(message);
        data.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        data.extend_from_slice(&bytes);
    }
    msg("BATCH", vec![("count", Value::from(messages.len())), ("data", Value::Binary(data))])
}

/// A fresh directory under the system temp directory, removed (with its contents) on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("shardgrid-test-{name}-{}-{unique}-{}", std::process::id(), now_ms()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// A fresh directory under cargo's per-target scratch directory: on the build's file
    /// system, which (unlike a tmpfs /tmp) supports O_DIRECT.
    pub fn in_target(name: &str) -> TempDir {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "shardgrid-test-{name}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Server {
    /// Starts the server on the disk backend in `data_dir`, with `args` after
    /// `--no-auth --data-dir <dir>`.
    pub fn on_disk(data_dir: &TempDir, args: &[&str]) -> Server {
        let mut all = vec!["--no-auth", "--data-dir", data_dir.arg()];
        all.extend_from_slice(args);
        Server::start(&all)
    }

    /// Kills the process with SIGKILL (no flush, no drain) and reaps it.
    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A connection to a `--no-auth` server (AUTH_REQUIRED is not sent there).
pub fn no_auth_client(port: u16) -> Client {
    Client::connect(port, "/ws")
}

/// A name with `prefix` whose partition belongs to `shard` of a two-shard server.
pub fn name_owned_by(prefix: &str, shard: u16) -> String {
    let table = shardgrid_shards::PartitionTable::new(shardgrid::hash::PARTITION_COUNT, 2);
    (0..)
        .map(|index| format!("{prefix}-{index}"))
        .find(|name| {
            table.owner(shardgrid_shards::PartitionId(shardgrid::hash::partition_of(name)))
                == shardgrid_shards::ShardId(shard)
        })
        .unwrap()
}
