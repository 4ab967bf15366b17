//! Shared end-to-end test support: start the real `shardgrid` binary on `--port 0`, read
//! `PORT=<n>` from its stdout, and talk WebSocket + msgpack to it like a client would.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmpv::Value;
use tungstenite::protocol::WebSocket;
use tungstenite::Message;

/// The HS256 secret test servers run with.
pub const SECRET: &str = "e2e-test-secret";
/// How long a test waits for an expected frame before failing.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts the server with `args` added to `--port 0 --host 127.0.0.1`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shardgrid"));
        command.args(["--port", "0", "--host", "127.0.0.1"]).args(args);
        command.env_remove("JWT_SECRET").env_remove("STORAGE_BACKEND").env_remove("TOPGUN_NO_AUTH").env_remove("PORT");
        for (key, value) in env {
            command.env(key, value);
        }
        command.env("RUST_LOG", "warn");
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start shardgrid");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read PORT line");
        let port = line
            .trim()
            .strip_prefix("PORT=")
            .unwrap_or_else(|| panic!("first stdout line must be PORT=<n>, got {line:?}"))
            .parse()
            .unwrap();
        Server { child, port }
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
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
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

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.socket.send(Message::Binary(bytes.to_vec().into())).unwrap();
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
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
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
            Value::Map(entries) => entries.iter().find(|(key, _)| key.as_str() == Some(part)).map(|(_, value)| value).unwrap_or(&Value::Nil),
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
