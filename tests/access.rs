//! End-to-end: access control by JWT role from an ACL file, reserved map names, and the
//! per-connection limits (rate, batch size, value size, subscriptions), each with the reply
//! DECISIONS §5 prescribes and nothing applied half-way.

mod common;

use common::*;
use rmpv::Value;

const ACL: &str = r#"
[[rule]]
roles = ["USER"]
maps = ["todos*"]
allow = ["read", "write", "subscribe"]

[[rule]]
roles = ["ADMIN"]
maps = ["*"]
allow = ["read", "write", "remove", "subscribe", "admin"]
"#;

/// A unique temporary file with `contents`; removed when the returned guard drops.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("shardgrid-{}-{}-{name}", std::process::id(), now_ms()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn client_with_roles(server: &Server, roles: &[&str]) -> Client {
    let mut client = Client::connect(server.port, "/ws");
    assert_eq!(type_of(&client.recv()), "AUTH_REQUIRED");
    client.send(&msg("AUTH", vec![("token", s(&token("someone", roles)))]));
    assert_eq!(type_of(&client.recv()), "AUTH_ACK");
    client
}

fn error_of(client: &mut Client) -> (u64, String) {
    let error = client.recv_type("ERROR");
    (get(&error, "payload.code").as_u64().unwrap(), get(&error, "payload.message").as_str().unwrap().to_string())
}

// Goal: roles grant exactly what the file says: a USER writes and reads todos*, is refused
// other maps and removes; a batch with one denied op gets one ERROR 403 and applies nothing;
// an ADMIN may do everything. Method: a 2-shard server with --acl.
#[test]
fn roles_get_what_the_acl_grants() {
    let acl = TempFile::new("acl.toml", ACL);
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--acl", acl.path()]);
    let mut user = client_with_roles(&server, &["USER"]);
    let now = now_ms();
    user.send(&op_batch(vec![put_op(1, "todos", "a", Value::from(1), now)]));
    assert_eq!(get(&user.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("1"));
    assert_eq!(result_keys(&query(&mut user, "q", "todos", map(vec![]))), vec!["a"]);

    user.send(&op_batch(vec![
        put_op(2, "todos", "b", Value::from(2), now),
        put_op(3, "secret", "x", Value::from(3), now),
    ]));
    let (code, message) = error_of(&mut user);
    assert_eq!(code, 403);
    assert!(message.contains("secret"), "{message}");
    user.send(&msg_payload("QUERY_SUB", vec![("queryId", s("s")), ("mapName", s("secret")), ("query", map(vec![]))]));
    assert_eq!(error_of(&mut user).0, 403);
    let remove = map(vec![("id", s("4")), ("mapName", s("todos")), ("opType", s("REMOVE")), ("key", s("a"))]);
    user.send(&op_batch(vec![remove]));
    assert_eq!(error_of(&mut user).0, 403, "USER may not remove");

    let mut admin = client_with_roles(&server, &["ADMIN"]);
    assert_eq!(
        result_keys(&query(&mut admin, "all", "todos", map(vec![]))),
        vec!["a"],
        "the denied batch applied nothing"
    );
    assert!(result_keys(&query(&mut admin, "sec", "secret", map(vec![]))).is_empty());
    let mut nobody = client_with_roles(&server, &[]);
    nobody.send(&msg_payload("QUERY_SUB", vec![("queryId", s("n")), ("mapName", s("todos")), ("query", map(vec![]))]));
    assert_eq!(error_of(&mut nobody).0, 403);
}

// Goal: reserved map names are refused even without an ACL file (PROTOCOL §7).
#[test]
fn reserved_maps_are_refused() {
    let server = Server::two_shards();
    let mut client = server.client();
    client.send(&op_batch(vec![put_op(1, "__topgun_meta", "k", Value::from(1), now_ms())]));
    assert_eq!(error_of(&mut client).0, 403);
    client.send(&msg_payload(
        "QUERY_SUB",
        vec![("queryId", s("q")), ("mapName", s("_topgun_x")), ("query", map(vec![]))],
    ));
    assert_eq!(error_of(&mut client).0, 403);
    assert!(result_keys(&query(&mut client, "ok", "topgun", map(vec![]))).is_empty());
}

// Goal: a connection over its rate gets ERROR 429 and its message is dropped, and it recovers.
// Method: --rate-limit-ops 100 (burst 200): a 150-op batch passes, a second one is refused.
#[test]
fn rate_limit_answers_429() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--rate-limit-ops", "100"]);
    let mut client = server.client();
    let now = now_ms();
    let batch = |first: u64| {
        op_batch((first..first + 150).map(|id| put_op(id, "rate", &format!("k{id}"), Value::from(id), now)).collect())
    };
    client.send(&batch(1));
    client.recv_type("OP_ACK");
    client.send(&batch(1_000));
    let (code, message) = error_of(&mut client);
    assert_eq!((code, message.as_str()), (429, "rate limit exceeded, slow down"));
    assert_eq!(
        result_keys(&query(&mut client, "q", "rate", map(vec![]))).len(),
        150,
        "the refused batch applied nothing"
    );
}

// Goal: the batch, value and subscription limits answer as documented: a batch over
// --max-ops-per-batch gets ERROR 413 and applies nothing; a value over --max-value-bytes gets
// OP_REJECTED 413 while the rest of its batch applies; subscriptions past the limit get 429.
#[test]
fn batch_value_and_subscription_limits() {
    let server = Server::start(&[
        "--cores",
        "0-1",
        "--jwt-secret",
        SECRET,
        "--max-ops-per-batch",
        "5",
        "--max-value-bytes",
        "100",
        "--max-subscriptions-per-connection",
        "2",
    ]);
    let mut client = server.client();
    let now = now_ms();
    client.send(&op_batch((1..=6).map(|id| put_op(id, "lim", &format!("k{id}"), Value::from(id), now)).collect()));
    assert_eq!(error_of(&mut client).0, 413);
    client.send(&op_batch(vec![
        put_op(7, "lim", "small", Value::from(1), now),
        put_op(8, "lim", "big", s(&"x".repeat(200)), now),
    ]));
    let rejected = client.recv_type("OP_REJECTED");
    assert_eq!(get(&rejected, "payload.opId").as_str(), Some("8"));
    assert_eq!(get(&rejected, "payload.code").as_u64(), Some(413));
    assert_eq!(get(&client.recv_type("OP_ACK"), "payload.lastId").as_str(), Some("8"));
    assert_eq!(result_keys(&query(&mut client, "one", "lim", map(vec![]))), vec!["small"]);
    query(&mut client, "two", "lim", map(vec![]));
    client
        .send(&msg_payload("QUERY_SUB", vec![("queryId", s("three")), ("mapName", s("lim")), ("query", map(vec![]))]));
    assert_eq!(error_of(&mut client).0, 429);
    query(&mut client, "two", "lim", map(vec![])); // re-using an id is a replacement, not a new one
}

// Goal: the secret can come from a file (--jwt-secret-file); an empty file is refused at start.
#[test]
fn secret_from_a_file() {
    let secret = TempFile::new("secret", &format!("  {SECRET}\n"));
    let server = Server::start(&["--cores", "0", "--jwt-secret-file", secret.path()]);
    let mut client = server.client();
    client.expect_silence();
    let empty = TempFile::new("empty", "\n");
    let output = run_to_exit(&["--cores", "0", "--jwt-secret-file", empty.path()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty"));
}
