//! Latency of topics and lock hand-over across shards, printed (never asserted: timing depends
//! on the machine). Each round is also a correctness check: every message arrives, every
//! hand-over grants the next token.
//!
//! For figures worth quoting, run in release with more rounds:
//!
//! ```sh
//! COORD_LATENCY_ROUNDS=5000 cargo test --release --test coord_latency -- --nocapture
//! ```
//!
//! Method: closed loop, one message or hand-over in flight; the test's clients sit in one
//! process, so sender and receiver read the same clock. Connections are placed on chosen
//! shards and names on chosen owner shards, so the figures name the hops they include.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rmpv::Value;

/// Rounds per measurement when `COORD_LATENCY_ROUNDS` is not set: enough to exercise the
/// paths in an ordinary (debug) test run.
const ROUNDS_DEFAULT: usize = 200;

fn rounds() -> usize {
    std::env::var("COORD_LATENCY_ROUNDS").ok().and_then(|text| text.parse().ok()).unwrap_or(ROUNDS_DEFAULT)
}

fn connections_per_shard(server: &Server) -> Vec<u64> {
    server.metric_per_shard("shardgrid_connections")
}

/// An authenticated connection on `shard`; connections that land elsewhere go to `spare`.
fn client_on(server: &Server, shard: usize, spare: &mut Vec<Client>) -> Client {
    for _ in 0..200 {
        let before = connections_per_shard(server);
        let client = server.client();
        let after = connections_per_shard(server);
        if after[shard] > before[shard] {
            return client;
        }
        spare.push(client);
    }
    panic!("no connection landed on shard {shard}");
}

fn fence(client: &mut Client) {
    client.send(&msg("PING", vec![("timestamp", Value::from(1))]));
    client.recv_type("PONG");
}

/// Prints p50/p90/p99/max of `samples` in microseconds.
fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile).round() as usize].as_secs_f64() * 1e6;
    println!(
        "{what:<62} n={:<6} p50={:>8.1}us p90={:>8.1}us p99={:>8.1}us max={:>8.1}us",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

/// Publishes `rounds` messages one at a time; returns per subscriber the time from sending
/// `TOPIC_PUB` to receiving its `TOPIC_MESSAGE`.
fn topic_round_trip(
    publisher: &mut Client,
    subscribers: &mut [&mut Client],
    topic: &str,
    rounds: usize,
) -> Vec<Vec<Duration>> {
    for subscriber in subscribers.iter_mut() {
        subscriber.send(&msg_payload("TOPIC_SUB", vec![("topic", s(topic))]));
        fence(subscriber);
    }
    let mut samples: Vec<Vec<Duration>> = subscribers.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        let sent = Instant::now();
        publisher.send(&msg_payload("TOPIC_PUB", vec![("topic", s(topic)), ("data", Value::from(round))]));
        for (index, subscriber) in subscribers.iter_mut().enumerate() {
            let message = subscriber.recv();
            samples[index].push(sent.elapsed());
            assert_eq!(get(&message, "payload.data").as_u64(), Some(round as u64), "{message}");
        }
    }
    samples
}

// Goal: print topic publish-to-delivery latency for the hop patterns a two-shard node has.
// Method: publisher on shard 0; the topic owned by shard 0 (delivery hops once, to shard 1)
// or by shard 1 (publish hops to the owner, delivery hops back to shard 0 or stays on 1).
#[test]
fn topic_publish_to_delivery_latency() {
    let server = Server::two_shards();
    let rounds = rounds();
    let mut spare = Vec::new();
    let mut publisher = client_on(&server, 0, &mut spare);
    let mut near = client_on(&server, 0, &mut spare);
    let mut far = client_on(&server, 1, &mut spare);
    let local_topic = name_owned_by("lat-local", 0);
    let remote_topic = name_owned_by("lat-remote", 1);

    let samples = topic_round_trip(&mut publisher, &mut [&mut near], &local_topic, rounds);
    report("topic: pub shard0 -> owner shard0 -> sub shard0 (no hop)", samples.into_iter().next().unwrap());
    let samples = topic_round_trip(&mut publisher, &mut [&mut far], &local_topic, rounds);
    report("topic: pub shard0 -> owner shard0 -> sub shard1 (1 hop)", samples.into_iter().next().unwrap());
    let samples = topic_round_trip(&mut publisher, &mut [&mut far], &remote_topic, rounds);
    report("topic: pub shard0 -> owner shard1 -> sub shard1 (1 hop)", samples.into_iter().next().unwrap());
    let mut near2 = client_on(&server, 0, &mut spare);
    let samples = topic_round_trip(&mut publisher, &mut [&mut near2], &remote_topic, rounds);
    report("topic: pub shard0 -> owner shard1 -> sub shard0 (2 hops)", samples.into_iter().next().unwrap());
}

fn lock_request(client: &mut Client, request_id: &str, name: &str, ttl: Option<u64>) {
    let mut payload = vec![("requestId", s(request_id)), ("name", s(name))];
    if let Some(ttl) = ttl {
        payload.push(("ttl", Value::from(ttl)));
    }
    client.send(&msg_payload("LOCK_REQUEST", payload));
}

fn expect_token(client: &mut Client) -> u64 {
    let granted = client.recv();
    assert_eq!(type_of(&granted), "LOCK_GRANTED", "{granted}");
    get(&granted, "payload.fencingToken").as_u64().unwrap()
}

// Goal: print lock hand-over latency: from the holder sending LOCK_RELEASE to the waiter
// receiving LOCK_GRANTED; from the holder's socket closing to the grant; and how late an
// expiring lease is handed over. Method: holder and waiter on different shards, the lock owned
// by shard 1; roles alternate each round, the waiter's request fenced in before the release.
#[test]
fn lock_hand_over_latency() {
    let server = Server::two_shards();
    let rounds = rounds();
    let mut spare = Vec::new();
    let name = name_owned_by("lat-lock", 1);
    let mut clients = [client_on(&server, 0, &mut spare), client_on(&server, 1, &mut spare)];
    lock_request(&mut clients[0], "first", &name, None);
    let mut token = expect_token(&mut clients[0]);
    let mut holder = 0;
    let mut on_release = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let waiter = 1 - holder;
        lock_request(&mut clients[waiter], &format!("w{round}"), &name, None);
        fence(&mut clients[waiter]);
        let release = msg_payload(
            "LOCK_RELEASE",
            vec![("requestId", s("r")), ("name", s(&name)), ("fencingToken", Value::from(token))],
        );
        let sent = Instant::now();
        clients[holder].send(&release);
        let next = expect_token(&mut clients[waiter]);
        on_release.push(sent.elapsed());
        assert_eq!(next, token + 1);
        clients[holder].recv_type("LOCK_RELEASED");
        token = next;
        holder = waiter;
    }
    report("lock hand-over on release (holder shard0/1 <-> waiter, owner shard1)", on_release);

    let disconnect_rounds = (rounds / 10).max(5);
    let mut on_disconnect = Vec::with_capacity(disconnect_rounds);
    let mut waiter = client_on(&server, 0, &mut spare);
    let mut released = clients[holder].socket.get_ref().try_clone().unwrap();
    lock_request(&mut waiter, "d", &name, None);
    fence(&mut waiter);
    for round in 0..disconnect_rounds {
        let sent = Instant::now();
        released.shutdown(std::net::Shutdown::Both).unwrap();
        let next = expect_token(&mut waiter);
        on_disconnect.push(sent.elapsed());
        assert_eq!(next, token + 1);
        token = next;
        // The new holder stays; a fresh waiter queues behind it for the next round.
        let mut next_waiter = client_on(&server, round % 2, &mut spare);
        lock_request(&mut next_waiter, "d", &name, None);
        fence(&mut next_waiter);
        released = waiter.socket.get_ref().try_clone().unwrap();
        spare.push(waiter);
        waiter = next_waiter;
    }
    report("lock hand-over on holder disconnect (TCP close to grant)", on_disconnect);

    let expiry_rounds = (rounds / 10).max(5);
    let mut lateness = Vec::with_capacity(expiry_rounds);
    const LEASE_MS: u64 = 20;
    let expiring = name_owned_by("lat-lease", 1);
    let mut holder = client_on(&server, 0, &mut spare);
    let mut waiter = client_on(&server, 1, &mut spare);
    for round in 0..expiry_rounds {
        lock_request(&mut holder, &format!("h{round}"), &expiring, Some(LEASE_MS));
        let first = expect_token(&mut holder);
        // The server granted before this instant, so the lateness below errs on the low side
        // by at most one delivery.
        let granted_at = Instant::now();
        lock_request(&mut waiter, &format!("w{round}"), &expiring, None);
        let second = expect_token(&mut waiter);
        lateness.push(granted_at.elapsed().saturating_sub(Duration::from_millis(LEASE_MS)));
        assert_eq!(second, first + 1);
        let release = msg_payload(
            "LOCK_RELEASE",
            vec![("requestId", s("x")), ("name", s(&expiring)), ("fencingToken", Value::from(second))],
        );
        waiter.send(&release);
        waiter.recv_type("LOCK_RELEASED");
    }
    report("lease expiry: grant to waiter minus the 20 ms lease (lateness)", lateness);
}
