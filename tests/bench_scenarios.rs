//! End-to-end: every scenario of the load generator (`shardgrid-bench`, driven as a library
//! through the same entry point as its binary) runs for well under a second against the real
//! server binary, and its report holds measurements, no unexpected errors, and the run's
//! context. The generator's own logic (histograms, coordinated-omission correction, encoders)
//! is unit-tested in the bench crate; these tests show it speaks to a real server.

mod common;

use clap::Parser;
use common::*;
use shardgrid_bench::{run, Cli, Report};

/// Runs the generator with `args` (after the program name) against `server`.
fn bench(server: &Server, args: &[&str]) -> Report {
    let url = format!("ws://127.0.0.1:{}/ws", server.port);
    let mut argv = vec!["shardgrid-bench"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--url", &url, "--quiet"]);
    let cli = Cli::try_parse_from(&argv).expect("valid bench options");
    run(&cli.scenario, argv.join(" ")).expect("the run starts")
}

/// Short timing for every load scenario: the point is that each part works, not the numbers.
const SHORT: &[&str] = &["--duration", "0.5", "--warmup", "0.2"];

fn with_short<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(SHORT);
    all
}

fn row<'a>(report: &'a Report, name: &str) -> &'a shardgrid_bench::Row {
    report.rows.iter().find(|row| row.name == name).unwrap_or_else(|| panic!("no row {name:?} in {}", report.table()))
}

/// A good run: no failure, no errors, measurements in every listed row.
fn assert_clean(report: &Report, measured_rows: &[&str]) {
    assert_eq!(report.failure, None, "{}", report.table());
    assert_eq!(report.error_total(), 0, "{}", report.table());
    for name in measured_rows {
        let measured = row(report, name);
        assert!(measured.latency.count > 0, "row {name} measured nothing:\n{}", report.table());
        assert!(measured.latency.p50_us > 0.0 && measured.latency.p50_us <= measured.latency.max_us);
    }
}

// Goal: closed-loop put against a no-auth server (no AUTH sent) acknowledges batches, and the
// JSON report carries the command line, the machine's core count and the parameters.
// Method: 4 connections, batches of 5, two in flight each, pinned to the first usable CPU.
#[test]
fn put_closed_loop_without_auth() {
    let server = Server::start(&["--cores", "0", "--no-auth"]);
    let first_cpu = shardgrid_shards::cores::available_cpus()[0].to_string();
    let args = with_short(&["put", "--conns", "4", "--batch", "5", "--inflight", "2", "--cores", &first_cpu]);
    let report = bench(&server, &args);
    assert_clean(&report, &["put"]);
    assert_eq!(row(&report, "put").conns, 4);
    assert!(report.rows.iter().all(|row| row.name != "send lag"), "closed loop has no schedule to lag");
    assert!(report.messages_seen["OP_ACK"] > 0);
    // Every writer of the map is interested in it, so the others' writes arrive as events.
    assert!(report.messages_seen["SERVER_EVENT"] > 0);

    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json["command_line"].as_str().unwrap().contains("put --conns 4"));
    assert!(json["machine"]["cpus_online"].as_u64().unwrap() >= 1);
    assert_eq!(json["mode"], "closed");
    assert_eq!(json["parameters"]["batch"], 5);
    assert_eq!(json["parameters"]["inflight"], 2);
    assert_eq!(json["bench_cores"][0].as_u64().unwrap().to_string(), first_cpu);
    for field in ["p50_us", "p90_us", "p99_us", "p99.9_us", "max_us", "ops_per_s"] {
        assert!(json["rows"][0][field].is_number(), "{field} in {json}");
    }
}

// Goal: open-loop put with minted JWTs and a write concern: every connection authenticates,
// the run is paced at the rate, and per-op results are accepted.
// Method: 6000 ops/s in batches of 2 over 3 connections (one batch per connection every
// millisecond) with APPLIED write concern against a JWT server.
#[test]
fn put_open_loop_with_jwt_and_write_concern() {
    let server = Server::start(&["--cores", "0", "--jwt-secret", SECRET]);
    let args = with_short(&[
        "put",
        "--conns",
        "3",
        "--rate",
        "6000",
        "--batch",
        "2",
        "--write-concern",
        "APPLIED",
        "--jwt-secret",
        SECRET,
    ]);
    let report = bench(&server, &args);
    assert_clean(&report, &["put"]);
    assert_eq!(report.mode, "open");
    // Open loop sends on schedule: 6000 ops/s over 0.5 s is 3000 ops, whatever the latency.
    assert_eq!(row(&report, "put").latency.count, 3000);
    // The generator's own lateness is reported for every op it sent in the window.
    assert_eq!(row(&report, "send lag").latency.count, 3000, "{}", report.table());
}

// Goal: without a token, a JWT server's AUTH_REQUIRED makes the run fail at once with a
// message that says what to pass, rather than measuring silence.
#[test]
fn auth_required_without_token_fails_clearly() {
    let server = Server::start(&["--cores", "0", "--jwt-secret", SECRET]);
    let report = bench(&server, &with_short(&["put", "--conns", "2"]));
    let failure = report.failure.clone().expect("the run fails");
    assert!(failure.contains("--jwt-secret"), "{failure}");
    assert_eq!(report.errors.get("AUTH_REQUIRED (no token)"), Some(&2));
}

// Goal: mixed reads (QUERY_SUB one-shot) and writes are both answered.
#[test]
fn mixed_reads_and_writes() {
    let server = Server::start(&["--cores", "0", "--no-auth"]);
    let report = bench(&server, &with_short(&["mixed", "--conns", "3", "--keys", "50", "--read-ratio", "0.5"]));
    assert_clean(&report, &["mixed write", "mixed read"]);
    assert!(report.messages_seen["QUERY_RESP"] > 0);
}

// Goal: fanout measures write-to-delivery latency at every subscriber and reports which
// delivery message types the server sent.
// Method: 3 subscribers of a live query, 1 writer; deliveries counted against writes.
#[test]
fn fanout_measures_deliveries_at_every_subscriber() {
    let server = Server::start(&["--cores", "0", "--no-auth"]);
    let report = bench(&server, &with_short(&["fanout", "--subscribers", "3", "--writers", "1", "--inflight", "2"]));
    assert_clean(&report, &["fanout write", "fanout SERVER_EVENT"]);
    let writes = row(&report, "fanout write").latency.count;
    assert_eq!(report.deliveries_expected, Some(writes * 3));
    // Every measured write reaches every subscriber as a SERVER_EVENT (the writer drains its
    // acks and subscribers read on for a grace period before the counts are taken).
    assert_eq!(row(&report, "fanout SERVER_EVENT").latency.count, writes * 3, "{}", report.table());
    if report.messages_seen.contains_key("QUERY_UPDATE") {
        assert_eq!(row(&report, "fanout QUERY_UPDATE").latency.count, writes * 3, "{}", report.table());
    }
}

// Goal: pubsub either measures deliveries, or (against a server without topics) fails with the
// ERROR 501 counted and named, instead of hanging.
#[test]
fn pubsub_measures_or_reports_missing_topics() {
    let server = Server::start(&["--cores", "0", "--no-auth"]);
    let report = bench(&server, &with_short(&["pubsub", "--subscribers", "2", "--publishers", "1"]));
    match &report.failure {
        Some(failure) => {
            assert!(failure.contains("501"), "{failure}");
            assert!(failure.contains("topics"), "{failure}");
            assert!(report.errors.keys().any(|kind| kind.starts_with("ERROR 501")), "{}", report.table());
        }
        None => assert_clean(&report, &["pubsub publish", "pubsub TOPIC_MESSAGE"]),
    }
}

// Goal: connect-storm opens every connection with auth, in every round, and closes them.
#[test]
fn connect_storm_opens_and_closes_every_connection() {
    let server = Server::start(&["--cores", "0", "--jwt-secret", SECRET]);
    let report = bench(&server, &["connect-storm", "--conns", "40", "--rounds", "2", "--jwt-secret", SECRET]);
    assert_clean(&report, &["connect-storm"]);
    assert_eq!(row(&report, "connect-storm").latency.count, 80);
    assert!(report.rows[0].latency.ops_per_s > 0.0);
}
