//! End-to-end: topics, locks, counters, the event journal and the partition map against the
//! real binary with two shards. Each test places its connections on chosen shards (the kernel
//! spreads connections; `/metrics` says where each landed) and picks names owned by a chosen
//! shard, so every flow crosses shards: connection shard -> owner -> other connections' shards.

mod common;

use common::*;
use rmpv::Value;

/// Connections per shard, from `/metrics` (`shardgrid_connections{shard="n"}`).
fn connections_per_shard(server: &Server) -> Vec<u64> {
    server.metric_per_shard("shardgrid_connections")
}

/// Opens authenticated connections until one sits on each shard in `wanted` (in that order).
/// The connections that landed elsewhere are returned too and must stay open, so the counts
/// the placement relies on do not move under it.
fn clients_on(server: &Server, wanted: &[usize]) -> (Vec<Client>, Vec<Client>) {
    const ATTEMPTS_MAX: usize = 200;
    let mut placed: Vec<Option<Client>> = wanted.iter().map(|_| None).collect();
    let mut spare = Vec::new();
    for _ in 0..ATTEMPTS_MAX {
        if placed.iter().all(Option::is_some) {
            break;
        }
        let before = connections_per_shard(server);
        let client = server.client();
        let after = connections_per_shard(server);
        let shard =
            (0..after.len()).find(|&shard| after[shard] > before[shard]).expect("the new connection is counted");
        match wanted.iter().enumerate().position(|(slot, want)| *want == shard && placed[slot].is_none()) {
            Some(slot) => placed[slot] = Some(client),
            None => spare.push(client),
        }
    }
    let placed = placed.into_iter().map(|client| client.expect("the kernel put a connection on every shard")).collect();
    (placed, spare)
}

fn topic_sub(client: &mut Client, topic: &str) {
    client.send(&msg_payload("TOPIC_SUB", vec![("topic", s(topic))]));
}

fn topic_pub(client: &mut Client, topic: &str, data: Value) {
    client.send(&msg_payload("TOPIC_PUB", vec![("topic", s(topic)), ("data", data)]));
}

/// Waits for a PONG: every message sent before it has been handled (one at a time, in order).
fn fence(client: &mut Client) {
    client.send(&msg("PING", vec![("timestamp", Value::from(1))]));
    client.recv_type("PONG");
}

fn lock_request(client: &mut Client, request_id: &str, name: &str, ttl: Option<u64>) {
    let mut payload = vec![("requestId", s(request_id)), ("name", s(name))];
    if let Some(ttl) = ttl {
        payload.push(("ttl", Value::from(ttl)));
    }
    client.send(&msg_payload("LOCK_REQUEST", payload));
}

fn lock_release(client: &mut Client, request_id: &str, name: &str, token: u64) {
    client.send(&msg_payload(
        "LOCK_RELEASE",
        vec![("requestId", s(request_id)), ("name", s(name)), ("fencingToken", Value::from(token))],
    ));
}

/// Receives the next `LOCK_GRANTED`, checks its request id and name, returns its token.
fn expect_granted(client: &mut Client, request_id: &str, name: &str) -> u64 {
    let granted = client.recv();
    assert_eq!(type_of(&granted), "LOCK_GRANTED", "{granted}");
    assert_eq!(get(&granted, "payload.requestId").as_str(), Some(request_id), "{granted}");
    assert_eq!(get(&granted, "payload.name").as_str(), Some(name), "{granted}");
    get(&granted, "payload.fencingToken").as_u64().unwrap()
}

/// Receives the next `LOCK_RELEASED` and returns its `success`.
fn expect_released(client: &mut Client, request_id: &str) -> bool {
    let released = client.recv();
    assert_eq!(type_of(&released), "LOCK_RELEASED", "{released}");
    assert_eq!(get(&released, "payload.requestId").as_str(), Some(request_id), "{released}");
    get(&released, "payload.success").as_bool().unwrap()
}

/// Reads and discards messages until the connection ends; returns the close frame if one came.
fn read_until_closed(client: &mut Client) -> Option<(u16, String)> {
    loop {
        match client.socket.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                return Some((u16::from(frame.code), frame.reason.to_string()))
            }
            Ok(tungstenite::Message::Close(None)) => return Some((1005, String::new())),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(error)) if error.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the slow subscriber was not cut off within {RECV_TIMEOUT:?}")
            }
            Err(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Topics

// Goal: a publication reaches every subscriber, on both shards, exactly once, with the JWT
// `sub` as publisherId and a server timestamp; never the publisher (even though it follows the
// topic) and never a connection that does not follow it. Method: the topic is owned by shard 1,
// the publisher and one subscriber sit on shard 0, another subscriber on shard 1.
#[test]
fn publication_reaches_subscribers_on_both_shards_but_not_the_publisher() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 0, 1, 1]);
    let topic = name_owned_by("news", 1);
    let [publisher, near, far, bystander] = clients.as_mut_slice() else { unreachable!() };
    for subscriber in [&mut *publisher, &mut *near, &mut *far] {
        topic_sub(subscriber, &topic);
        fence(subscriber);
    }
    let before = now_ms();
    topic_pub(publisher, &topic, map(vec![("headline", s("hello"))]));
    for subscriber in [&mut *near, &mut *far] {
        let message = subscriber.recv();
        assert_eq!(type_of(&message), "TOPIC_MESSAGE", "{message}");
        assert_eq!(get(&message, "payload.topic").as_str(), Some(topic.as_str()));
        assert_eq!(get(&message, "payload.data.headline").as_str(), Some("hello"));
        assert_eq!(get(&message, "payload.publisherId").as_str(), Some("user-1"));
        let timestamp = get(&message, "payload.timestamp").as_u64().unwrap();
        assert!(timestamp >= before && timestamp <= now_ms(), "server wall-clock ms: {timestamp}");
        subscriber.expect_silence();
    }
    publisher.expect_silence();
    bystander.expect_silence();
}

// Goal: messages of one publisher arrive at each subscriber in publish order (DECISIONS §2.3),
// across two hops. Method: publisher on shard 0, topic owned by shard 1, subscribers on both
// shards; 300 numbered messages sent back to back.
#[test]
fn publish_order_is_kept_per_publisher() {
    const MESSAGES: u64 = 300;
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 0, 1]);
    let topic = name_owned_by("ticks", 1);
    let [publisher, near, far] = clients.as_mut_slice() else { unreachable!() };
    for subscriber in [&mut *near, &mut *far] {
        topic_sub(subscriber, &topic);
        fence(subscriber);
    }
    for number in 0..MESSAGES {
        topic_pub(publisher, &topic, Value::from(number));
    }
    for subscriber in [&mut *near, &mut *far] {
        for number in 0..MESSAGES {
            let message = subscriber.recv();
            assert_eq!(get(&message, "payload.data").as_u64(), Some(number), "{message}");
        }
    }
}

// Goal: TOPIC_UNSUB and disconnecting stop deliveries to that connection only; publishing to a
// topic nobody follows is silently dropped and the server keeps serving. Method: two
// subscribers on different shards, one unsubscribes, the other disconnects.
#[test]
fn unsubscribe_and_disconnect_end_subscriptions() {
    let server = Server::two_shards();
    let (clients, _spare) = clients_on(&server, &[0, 1, 0, 1]);
    let topic = name_owned_by("events", 0);
    let mut clients = clients.into_iter();
    let (mut leaver, mut closer) = (clients.next().unwrap(), clients.next().unwrap());
    let (mut publisher, mut stayer) = (clients.next().unwrap(), clients.next().unwrap());
    for subscriber in [&mut leaver, &mut closer, &mut stayer] {
        topic_sub(subscriber, &topic);
        fence(subscriber);
    }
    leaver.send(&msg_payload("TOPIC_UNSUB", vec![("topic", s(&topic))]));
    fence(&mut leaver);
    let open = server.metric_sum("shardgrid_connections");
    drop(closer);
    server.wait_for_connections(open - 1);
    topic_pub(&mut publisher, &topic, Value::from(1));
    assert_eq!(get(&stayer.recv(), "payload.data").as_u64(), Some(1));
    leaver.expect_silence();
    // Nobody follows this one: no reply, nothing delivered, the connection keeps working.
    topic_pub(&mut publisher, &name_owned_by("void", 1), Value::Nil);
    publisher.expect_silence();
    // Unsubscribing from a topic never followed is not an error either.
    publisher.send(&msg_payload("TOPIC_UNSUB", vec![("topic", s("never-followed"))]));
    publisher.expect_silence();
}

// Goal: invalid topic names get ERROR 400 (DECISIONS §5) for every topic message, nothing is
// half-applied, and the connection keeps serving. Method: empty, too long, bad characters.
#[test]
fn invalid_topic_names_get_error_400() {
    let server = Server::two_shards();
    let mut client = server.client();
    let too_long = "t".repeat(257);
    for name in ["", too_long.as_str(), "has space", "star*", "ünïcode"] {
        topic_sub(&mut client, name);
        assert_eq!(client.recv_error().0, 400, "TOPIC_SUB {name:?}");
        topic_pub(&mut client, name, Value::from(1));
        assert_eq!(client.recv_error().0, 400, "TOPIC_PUB {name:?}");
        client.send(&msg_payload("TOPIC_UNSUB", vec![("topic", s(name))]));
        assert_eq!(client.recv_error().0, 400, "TOPIC_UNSUB {name:?}");
    }
    // A topic field of the wrong type is malformed.
    client.send(&msg_payload("TOPIC_SUB", vec![("topic", Value::from(5))]));
    assert_eq!(client.recv_error().0, 400);
    client.expect_silence();
}

// Goal: a subscriber that stops reading is cut off as a slow consumer (close 1008) instead of
// being buffered without bound, while the publisher and other subscribers carry on. Method: a
// small outbound queue, a subscriber that does not read while 64 KiB messages are published.
#[test]
fn slow_subscriber_is_cut_off() {
    const MESSAGES: usize = 400;
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--outbound-queue-bytes", "262144"]);
    let (mut clients, _spare) = clients_on(&server, &[0, 1, 1]);
    let topic = name_owned_by("firehose", 0);
    let [publisher, slow, reader] = clients.as_mut_slice() else { unreachable!() };
    for subscriber in [&mut *slow, &mut *reader] {
        topic_sub(subscriber, &topic);
        fence(subscriber);
    }
    let payload = Value::Binary(vec![7; 64 * 1024]);
    for _ in 0..MESSAGES {
        topic_pub(publisher, &topic, payload.clone());
        // The reader keeps up; the slow subscriber reads nothing until the end.
        assert_eq!(type_of(&reader.recv()), "TOPIC_MESSAGE");
    }
    fence(publisher);
    // What was queued before the cut arrives, then the connection ends: with a close frame
    // 1008 when the socket had room for it, else just the end of the stream.
    if let Some((code, reason)) = read_until_closed(slow) {
        assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    }
    assert!(server.metric_sum("shardgrid_slow_consumers_closed_total") >= 1);
    topic_pub(publisher, &topic, Value::from(1));
    assert_eq!(get(&reader.recv(), "payload.data").as_u64(), Some(1));
}

// ---------------------------------------------------------------------------------------------
// Locks

// Goal: a busy lock queues requests FIFO without answering them, and each release by the
// holder hands it to the next waiter with a larger token. Method: lock owned by shard 1; holder
// on shard 0, waiters on shard 1 and shard 0.
#[test]
fn release_hands_the_lock_to_waiters_in_fifo_order() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1, 0]);
    let name = name_owned_by("lock", 1);
    let [first, second, third] = clients.as_mut_slice() else { unreachable!() };
    lock_request(first, "a", &name, Some(60_000));
    assert_eq!(expect_granted(first, "a", &name), 1);
    lock_request(second, "b", &name, Some(60_000));
    second.expect_silence();
    lock_request(third, "c", &name, None);
    third.expect_silence();
    // The holder asking again gets its own token back at once.
    lock_request(first, "a2", &name, Some(60_000));
    assert_eq!(expect_granted(first, "a2", &name), 1);

    lock_release(first, "r1", &name, 1);
    assert!(expect_released(first, "r1"));
    assert_eq!(expect_granted(second, "b", &name), 2);
    third.expect_silence();
    lock_release(second, "r2", &name, 2);
    assert!(expect_released(second, "r2"));
    assert_eq!(expect_granted(third, "c", &name), 3);
    first.expect_silence();
}

// Goal: when the holder disconnects, the lock passes to the next waiter; when a waiter
// disconnects, its request is dropped and never granted. Method: holder on shard 1, waiters on
// shard 0 (the first disconnects before the holder does).
#[test]
fn disconnects_hand_over_and_drop_waiting_requests() {
    let server = Server::two_shards();
    let (clients, _spare) = clients_on(&server, &[1, 0, 0]);
    let name = name_owned_by("job", 0);
    let mut clients = clients.into_iter();
    let (mut holder, mut quitter, mut waiter) =
        (clients.next().unwrap(), clients.next().unwrap(), clients.next().unwrap());
    lock_request(&mut holder, "h", &name, None);
    assert_eq!(expect_granted(&mut holder, "h", &name), 1);
    lock_request(&mut quitter, "q", &name, Some(10_000));
    fence(&mut quitter);
    lock_request(&mut waiter, "w", &name, Some(10_000));
    fence(&mut waiter);
    assert_eq!(server.metric_sum("shardgrid_lock_waiters"), 2);
    drop(quitter);
    poll_until("the quitter's request is withdrawn", RECV_TIMEOUT, || {
        (server.metric_sum("shardgrid_lock_waiters") == 1).then_some(())
    });
    drop(holder);
    assert_eq!(expect_granted(&mut waiter, "w", &name), 2);
    lock_release(&mut waiter, "r", &name, 2);
    assert!(expect_released(&mut waiter, "r"));
}

// Goal: a lease that expires hands the lock to the waiter without any message from the holder,
// and fences the old holder: its token no longer releases. Method: holder with ttl 300 ms on
// shard 0, waiter on shard 1; the waiter just waits for its grant.
#[test]
fn expired_lease_hands_over_and_fences_the_old_token() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1]);
    let name = name_owned_by("lease", 1);
    let [holder, waiter] = clients.as_mut_slice() else { unreachable!() };
    lock_request(holder, "h", &name, Some(300));
    assert_eq!(expect_granted(holder, "h", &name), 1);
    lock_request(waiter, "w", &name, Some(10_000));
    assert_eq!(expect_granted(waiter, "w", &name), 2);
    lock_release(holder, "stale", &name, 1);
    assert!(!expect_released(holder, "stale"));
    lock_release(waiter, "fresh", &name, 2);
    assert!(expect_released(waiter, "fresh"));
}

// Goal: a waiting request is dropped silently once its time is up (DECISIONS §4.1: ttl + 5000
// - 250 ms after it arrived), so a later release grants nothing to a client that gave up.
// Method: holder without lease; waiter with ttl 1 ms (gives up after 4751 ms); wait for the
// waiters gauge to reach 0, then release: the waiter hears nothing, a newcomer gets token 2.
#[test]
fn waiting_request_is_dropped_when_its_time_is_up() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1, 1]);
    let name = name_owned_by("patience", 0);
    let [holder, waiter, newcomer] = clients.as_mut_slice() else { unreachable!() };
    lock_request(holder, "h", &name, None);
    assert_eq!(expect_granted(holder, "h", &name), 1);
    lock_request(waiter, "w", &name, Some(1));
    fence(waiter);
    assert_eq!(server.metric_sum("shardgrid_lock_waiters"), 1);
    poll_until("the waiting request gives up", RECV_TIMEOUT, || {
        (server.metric_sum("shardgrid_lock_waiters") == 0).then_some(())
    });
    lock_release(holder, "r", &name, 1);
    assert!(expect_released(holder, "r"));
    waiter.expect_silence();
    lock_request(newcomer, "n", &name, Some(1_000));
    assert_eq!(expect_granted(newcomer, "n", &name), 2);
}

// Goal: bad lock input gets the protocol's answer and changes nothing: ttl 0 and bad names get
// ERROR 400 and never a LOCK_* reply; releasing a lock not held, or with a stale token, gets
// LOCK_RELEASED {success: false} (requestId echoed, "" when absent). Method: one connection
// and a second holder, on different shards.
#[test]
fn bad_lock_input_gets_errors_or_failed_releases() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1]);
    let name = name_owned_by("guarded", 1);
    let [client, other] = clients.as_mut_slice() else { unreachable!() };
    lock_request(client, "zero", &name, Some(0));
    assert_eq!(client.recv_error().0, 400);
    lock_request(client, "bad", "no spaces allowed", Some(1_000));
    assert_eq!(client.recv_error().0, 400);
    lock_release(client, "bad-release", "", 1);
    assert_eq!(client.recv_error().0, 400);
    client.expect_silence();
    // The refused ttl-0 request took nothing: the lock is free for the other connection.
    lock_request(other, "o", &name, None);
    assert_eq!(expect_granted(other, "o", &name), 1);
    lock_release(client, "not-mine", &name, 1);
    assert!(!expect_released(client, "not-mine"));
    client.send(&msg_payload("LOCK_RELEASE", vec![("name", s(&name)), ("fencingToken", Value::from(1))]));
    assert!(!expect_released(client, ""));
    lock_release(other, "r1", &name, 1);
    assert!(expect_released(other, "r1"));
    lock_request(other, "o2", &name, None);
    assert_eq!(expect_granted(other, "o2", &name), 2);
    lock_release(other, "stale", &name, 1);
    assert!(!expect_released(other, "stale"));
    // A fencing token of the wrong type is malformed, and nothing is released.
    other.send(&msg_payload("LOCK_RELEASE", vec![("requestId", s("x")), ("name", s(&name)), ("fencingToken", s("2"))]));
    assert_eq!(other.recv_error().0, 400);
    lock_release(other, "r2", &name, 2);
    assert!(expect_released(other, "r2"));
}

// ---------------------------------------------------------------------------------------------
// Counters

/// Checks that `state` carries the same totals under all four keys (DECISIONS §1.5).
fn assert_counter_state(message: &Value, positive: &[(&str, f64)], negative: &[(&str, f64)]) {
    for (keys, want) in [(["p", "positive"], positive), (["n", "negative"], negative)] {
        for key in keys {
            let Value::Map(entries) = get(message, &format!("payload.state.{key}")) else {
                panic!("state.{key} in {message}")
            };
            let mut got: Vec<(String, f64)> = entries
                .iter()
                .map(|(node, total)| (node.as_str().unwrap().to_string(), total.as_f64().unwrap()))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            let want: Vec<(String, f64)> = want.iter().map(|(node, total)| (node.to_string(), *total)).collect();
            assert_eq!(got, want, "state.{key} in {message}");
        }
    }
}

fn counter_sync(client: &mut Client, name: &str, state: Value) {
    client.send(&msg_payload("COUNTER_SYNC", vec![("name", s(name)), ("state", state)]));
}

fn totals(entries: &[(&str, f64)]) -> Value {
    map(entries.iter().map(|(node, total)| (*node, Value::from(*total))).collect())
}

// Goal: COUNTER_REQUEST subscribes and answers the state; COUNTER_SYNC (either key spelling)
// merges, answers the sender and pushes the merged state to every other subscriber, on both
// shards. Method: counter owned by shard 1; subscribers on shards 0 and 1.
#[test]
fn counters_merge_and_notify_subscribers_across_shards() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1, 0]);
    let name = name_owned_by("likes", 1);
    let [watcher, client_ts, client_ref] = clients.as_mut_slice() else { unreachable!() };
    watcher.send(&msg_payload("COUNTER_REQUEST", vec![("name", s(&name))]));
    let response = watcher.recv();
    assert_eq!(type_of(&response), "COUNTER_RESPONSE", "{response}");
    assert_counter_state(&response, &[], &[]);

    // The stock client's spelling.
    counter_sync(client_ts, &name, map(vec![("positive", totals(&[("b", 3.0)])), ("negative", totals(&[("b", 1.0)]))]));
    for client in [&mut *client_ts, &mut *watcher] {
        let update = client.recv();
        assert_eq!(type_of(&update), "COUNTER_UPDATE", "{update}");
        assert_counter_state(&update, &[("b", 3.0)], &[("b", 1.0)]);
    }
    // The schema's spelling, from a third connection; both earlier ones are now subscribed.
    counter_sync(client_ref, &name, map(vec![("p", totals(&[("c", 2.5)])), ("n", totals(&[]))]));
    for client in [&mut *client_ref, &mut *watcher, &mut *client_ts] {
        let update = client.recv();
        assert_eq!(type_of(&update), "COUNTER_UPDATE", "{update}");
        assert_counter_state(&update, &[("b", 3.0), ("c", 2.5)], &[("b", 1.0)]);
    }
    // A re-sent state changes nothing: the sender is answered, nobody else hears of it.
    counter_sync(client_ref, &name, map(vec![("p", totals(&[("c", 2.0)]))]));
    assert_counter_state(&client_ref.recv(), &[("b", 3.0), ("c", 2.5)], &[("b", 1.0)]);
    watcher.expect_silence();
    client_ts.expect_silence();
}

// Goal: counter states with totals of the wrong type (a string, a negative, a non-map) get
// ERROR 400, merge nothing, and the shard keeps serving. Method: bad syncs, then a request
// shows the counter untouched.
#[test]
fn bad_counter_states_get_error_400_and_merge_nothing() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0]);
    let client = &mut clients[0];
    let name = name_owned_by("votes", 1);
    counter_sync(client, &name, map(vec![("p", totals(&[("a", 1.0)]))]));
    client.recv_type("COUNTER_UPDATE");
    let bad_states = [
        map(vec![("p", map(vec![("a", s("five"))]))]),
        map(vec![("p", totals(&[("a", 9.0)])), ("n", totals(&[("a", -1.0)]))]),
        s("not a state"),
        map(vec![("positive", Value::Array(vec![Value::from(1)]))]),
    ];
    for state in bad_states {
        counter_sync(client, &name, state.clone());
        assert_eq!(client.recv_error().0, 400, "{state}");
    }
    client.send(&msg_payload("COUNTER_REQUEST", vec![("name", s(""))]));
    assert_eq!(client.recv_error().0, 400);
    client.send(&msg_payload("COUNTER_REQUEST", vec![("name", s(&name))]));
    let response = client.recv_type("COUNTER_RESPONSE");
    assert_counter_state(&response, &[("a", 1.0)], &[]);
}

// ---------------------------------------------------------------------------------------------
// Journal

fn journal_read(
    client: &mut Client,
    request_id: &str,
    from: u64,
    limit: u64,
    map_name: Option<&str>,
) -> (Vec<Value>, bool) {
    let mut fields =
        vec![("requestId", s(request_id)), ("fromSequence", s(&from.to_string())), ("limit", Value::from(limit))];
    if let Some(map_name) = map_name {
        fields.push(("mapName", s(map_name)));
    }
    client.send(&msg("JOURNAL_READ", fields));
    let response = client.recv_type("JOURNAL_READ_RESPONSE");
    assert_eq!(get(&response, "requestId").as_str(), Some(request_id));
    let Value::Array(events) = get(&response, "events").clone() else { panic!("events array in {response}") };
    (events, get(&response, "hasMore").as_bool().unwrap())
}

fn sequence_of(event: &Value) -> u64 {
    get(event, "sequence").as_str().unwrap().parse().unwrap()
}

// Goal: JOURNAL_READ pages through the writes of both shards: every applied write exactly
// once, PUT/UPDATE/DELETE as DECISIONS §7.1 says, per key in write order, sequences
// increasing, `hasMore` until the end; a re-sent op journals nothing; `mapName` filters.
// Method: 20 keys over both shards written, updated, some deleted; read with limit 7.
#[test]
fn journal_read_pages_through_both_shards() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1]);
    let [writer, reader] = clients.as_mut_slice() else { unreachable!() };
    let keys: Vec<String> = (0..20).map(|index| name_owned_by(&format!("key{index}"), (index % 2) as u16)).collect();
    let now = now_ms();
    let puts: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| put_op(index as u64 + 1, "journaled", key, Value::from(index), now))
        .collect();
    writer.send(&op_batch(puts.clone()));
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(puts)); // re-sent: no state change, no journal entry
    writer.recv_type("OP_ACK");
    let updates: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(index, key)| put_op(100 + index as u64, "journaled", key, Value::from(index + 100), now + 1))
        .collect();
    writer.send(&op_batch(updates));
    writer.recv_type("OP_ACK");
    let removes: Vec<Value> = keys
        .iter()
        .take(5)
        .enumerate()
        .map(|(index, key)| remove_op(200 + index as u64, "journaled", key, now + 2))
        .collect();
    writer.send(&op_batch(removes));
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(vec![put_op(300, "other-map", &keys[0], Value::from(1), now)]));
    writer.recv_type("OP_ACK");

    let mut events = Vec::new();
    let mut from = 0;
    loop {
        let (page, has_more) = journal_read(reader, "page", from, 7, Some("journaled"));
        assert!(page.len() <= 7);
        if let Some(last) = page.last() {
            from = sequence_of(last) + 1;
        }
        events.extend(page);
        if !has_more {
            break;
        }
    }
    assert_eq!(events.len(), 20 + 20 + 5, "every applied write once");
    let sequences: Vec<u64> = events.iter().map(sequence_of).collect();
    assert!(sequences.windows(2).all(|pair| pair[0] < pair[1]), "{sequences:?}");
    for (index, key) in keys.iter().enumerate() {
        let of_key: Vec<&Value> = events.iter().filter(|event| get(event, "key").as_str() == Some(key)).collect();
        let types: Vec<&str> = of_key.iter().map(|event| get(event, "type").as_str().unwrap()).collect();
        let want: &[&str] = if index < 5 { &["PUT", "UPDATE", "DELETE"] } else { &["PUT", "UPDATE"] };
        assert_eq!(types, want, "{key}");
        assert_eq!(get(of_key[0], "value").as_u64(), Some(index as u64));
        assert_eq!(get(of_key[1], "previousValue").as_u64(), Some(index as u64));
        assert_eq!(get(of_key[1], "value").as_u64(), Some(index as u64 + 100));
        assert_eq!(get(of_key[0], "mapName").as_str(), Some("journaled"));
        assert!(get(of_key[0], "timestamp.millis").as_f64().is_some());
        assert!(!get(of_key[0], "nodeId").as_str().unwrap().is_empty());
    }
    // Without the filter the other map's write is there too; past the end there is nothing.
    let (all, has_more) = journal_read(reader, "all", 0, 1_000, None);
    assert_eq!((all.len(), has_more), (46, false));
    let (none, has_more) = journal_read(reader, "end", from.max(sequence_of(all.last().unwrap()) + 1), 10, None);
    assert_eq!((none.len(), has_more), (0, false));
}

// Goal: JOURNAL_SUBSCRIBE gets live events only (none from before it), filtered by map and
// type, from writes owned by either shard; JOURNAL_UNSUBSCRIBE ends them. Method: subscriber
// on shard 1 asking for PUT and DELETE of one map; a writer on shard 0 writes keys of both
// shards, updates one (filtered out) and deletes it.
#[test]
fn journal_subscription_gets_live_filtered_events() {
    let server = Server::two_shards();
    let (mut clients, _spare) = clients_on(&server, &[0, 1]);
    let [writer, subscriber] = clients.as_mut_slice() else { unreachable!() };
    let now = now_ms();
    let (near, far) = (name_owned_by("near", 0), name_owned_by("far", 1));
    writer.send(&op_batch(vec![put_op(1, "feed", "before", Value::from(0), now)]));
    writer.recv_type("OP_ACK");
    let types = Value::Array(vec![s("PUT"), s("DELETE")]);
    subscriber
        .send(&msg("JOURNAL_SUBSCRIBE", vec![("requestId", s("sub-1")), ("mapName", s("feed")), ("types", types)]));
    fence(subscriber);
    writer.send(&op_batch(vec![
        put_op(2, "feed", &near, Value::from(1), now),
        put_op(3, "elsewhere", &near, Value::from(1), now),
    ]));
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(vec![put_op(4, "feed", &far, Value::from(2), now)]));
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(vec![put_op(5, "feed", &far, Value::from(3), now + 1)])); // UPDATE: filtered out
    writer.recv_type("OP_ACK");
    writer.send(&op_batch(vec![remove_op(6, "feed", &far, now + 2)]));
    writer.recv_type("OP_ACK");
    let mut received: Vec<(String, String)> = (0..3)
        .map(|_| {
            let message = subscriber.recv();
            assert_eq!(type_of(&message), "JOURNAL_EVENT", "{message}");
            (
                get(&message, "event.key").as_str().unwrap().to_string(),
                get(&message, "event.type").as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Events of different owners may interleave; per key they are in order.
    let far_events: Vec<&str> = received.iter().filter(|(key, _)| *key == far).map(|(_, kind)| kind.as_str()).collect();
    assert_eq!(far_events, ["PUT", "DELETE"]);
    received.sort();
    assert!(received.contains(&(near.clone(), "PUT".to_string())), "{received:?}");
    subscriber.expect_silence();
    subscriber.send(&msg("JOURNAL_UNSUBSCRIBE", vec![("subscriptionId", s("sub-1"))]));
    fence(subscriber);
    writer.send(&op_batch(vec![put_op(7, "feed", &near, Value::from(9), now + 3)]));
    writer.recv_type("OP_ACK");
    subscriber.expect_silence();
}

// ---------------------------------------------------------------------------------------------
// Partition map and liveness

// Goal: PARTITION_MAP_REQUEST is always answered (DECISIONS §4.2), whatever version the client
// holds: version >= 1, this node ACTIVE with its WebSocket endpoint, owning all 271
// partitions. Method: ask without a payload and with a high currentVersion.
#[test]
fn partition_map_describes_this_node() {
    let server = Server::start(&["--cores", "0-1", "--jwt-secret", SECRET, "--node-id", "gridnode7"]);
    let mut client = server.client();
    for request in [
        msg("PARTITION_MAP_REQUEST", vec![]),
        msg_payload("PARTITION_MAP_REQUEST", vec![("currentVersion", Value::from(99))]),
    ] {
        client.send(&request);
        let reply = client.recv();
        assert_eq!(type_of(&reply), "PARTITION_MAP", "{reply}");
        assert!(get(&reply, "payload.version").as_u64().unwrap() >= 1);
        assert_eq!(get(&reply, "payload.partitionCount").as_u64(), Some(271));
        assert_eq!(get(&reply, "payload.nodes.0.nodeId").as_str(), Some("gridnode7"));
        assert_eq!(get(&reply, "payload.nodes.0.status").as_str(), Some("ACTIVE"));
        let websocket = format!("ws://127.0.0.1:{}/ws", server.port);
        assert_eq!(get(&reply, "payload.nodes.0.endpoints.websocket").as_str(), Some(websocket.as_str()));
        let Value::Array(partitions) = get(&reply, "payload.partitions") else { panic!("partitions in {reply}") };
        assert_eq!(partitions.len(), 271);
        for (index, partition) in partitions.iter().enumerate() {
            assert_eq!(get(partition, "partitionId").as_u64(), Some(index as u64));
            assert_eq!(get(partition, "ownerNodeId").as_str(), Some("gridnode7"));
        }
    }
    // PING keeps working alongside, echoing the client's timestamp.
    client.send(&msg("PING", vec![("timestamp", Value::from(12345))]));
    let pong = client.recv();
    assert_eq!(get(&pong, "timestamp").as_u64(), Some(12345));
    assert!(get(&pong, "serverTime").as_u64().is_some());
}
