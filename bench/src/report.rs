//! The results of one run: rows of latency summaries (one per kind of measured event), error
//! counts by kind, the message types seen, and the run's context (command line, cores, scenario
//! parameters), printed as a table and serialised as JSON. It leaves out how the numbers were
//! gathered (see `runner`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::LatencySummary;

/// What one table row measures. The order here is the order of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowId {
    /// `put`: OP_BATCH sent (or due, in open loop) to OP_ACK.
    Put,
    /// `mixed`: write batches, as `Put`.
    MixedWrite,
    /// `mixed`: QUERY_SUB sent (or due) to QUERY_RESP.
    MixedRead,
    /// `fanout`: the writers' OP_BATCH to OP_ACK.
    FanoutWrite,
    /// `fanout`: a write's send (or due) time to its SERVER_EVENT at a subscriber.
    FanoutEvent,
    /// `fanout`: a write's send (or due) time to its QUERY_UPDATE at a subscriber.
    FanoutUpdate,
    /// `pubsub`: TOPIC_PUB + PING sent (or due) to PONG at the publisher.
    PubsubPublish,
    /// `pubsub`: a publish's send (or due) time to its TOPIC_MESSAGE at a subscriber.
    PubsubMessage,
    /// `connect-storm`: TCP connect, WebSocket upgrade and AUTH_ACK (or PONG without auth).
    Connect,
    /// Open loop: a request's intended send time to the moment the generator finished sending
    /// it. Large values mean the generator itself fell behind its schedule, so the latency
    /// rows measure the generator as much as the server.
    SendLag,
}

impl RowId {
    pub fn name(self) -> &'static str {
        match self {
            RowId::Put => "put",
            RowId::MixedWrite => "mixed write",
            RowId::MixedRead => "mixed read",
            RowId::FanoutWrite => "fanout write",
            RowId::FanoutEvent => "fanout SERVER_EVENT",
            RowId::FanoutUpdate => "fanout QUERY_UPDATE",
            RowId::PubsubPublish => "pubsub publish",
            RowId::PubsubMessage => "pubsub TOPIC_MESSAGE",
            RowId::Connect => "connect-storm",
            RowId::SendLag => "send lag",
        }
    }
}

/// One table row.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: &'static str,
    /// Connections that produce this row's events (subscribers for deliveries).
    pub conns: usize,
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Errors attributed to this row, by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Row {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may run on (its affinity mask).
    pub cpus_available: usize,
    /// CPUs online in the machine.
    pub cpus_online: usize,
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The command line, with the values of `--token` and `--jwt-secret` redacted.
    pub command_line: String,
    pub machine: Machine,
    pub scenario: &'static str,
    /// The generator's threads: the CPUs they were pinned to, or empty for one unpinned thread.
    pub bench_cores: Vec<usize>,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Every option of the scenario, as parsed (secrets left out).
    pub parameters: serde_json::Value,
    /// The measured window in seconds (throughput is per second of it).
    pub measured_s: f64,
    pub rows: Vec<Row>,
    /// All errors by kind, summed over rows.
    pub errors: BTreeMap<String, u64>,
    /// How many server frames of each `type` arrived, over the whole run.
    pub messages_seen: BTreeMap<String, u64>,
    /// Fan-out scenarios: deliveries that measured writes or publishes should have caused
    /// (operations acknowledged in the window times subscribers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_expected: Option<u64>,
    /// Why the run stopped early or could not measure anything; `None` for a good run.
    pub failure: Option<String>,
}

impl Report {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The table printed on stdout: one line per row, latencies in microseconds.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let name_width = self.rows.iter().map(|row| row.name.len()).max().unwrap_or(8).max(8);
        writeln!(
            out,
            "{:<name_width$} {:>6} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "scenario", "conns", "ops/s", "p50", "p90", "p99", "p99.9", "max (µs)", "errors"
        )
        .unwrap();
        for row in &self.rows {
            let latency = &row.latency;
            writeln!(
                out,
                "{:<name_width$} {:>6} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8}",
                row.name,
                row.conns,
                latency.ops_per_s,
                latency.p50_us,
                latency.p90_us,
                latency.p99_us,
                latency.p99_9_us,
                latency.max_us,
                row.error_count()
            )
            .unwrap();
        }
        for (kind, count) in &self.errors {
            writeln!(out, "error: {kind}: {count}").unwrap();
        }
        if let Some(expected) = self.deliveries_expected {
            let seen: Vec<String> = ["SERVER_EVENT", "QUERY_UPDATE", "TOPIC_MESSAGE"]
                .iter()
                .filter_map(|kind| self.messages_seen.get(*kind).map(|count| format!("{kind} {count}")))
                .collect();
            let seen = if seen.is_empty() { "none".to_string() } else { seen.join(", ") };
            writeln!(out, "deliveries expected in the window: {expected}; seen over the whole run: {seen}").unwrap();
        }
        if let Some(failure) = &self.failure {
            writeln!(out, "FAILED: {failure}").unwrap();
        }
        out
    }
}

/// The command line as one string, quoting arguments with spaces or quotes and redacting the
/// values of secret options.
pub fn command_line(args: &[String]) -> String {
    let mut parts = Vec::with_capacity(args.len());
    let mut redact_next = false;
    for arg in args {
        if redact_next {
            parts.push("<redacted>".to_string());
            redact_next = false;
            continue;
        }
        let secret_flag =
            ["--token", "--jwt-secret"].iter().find(|flag| arg == *flag || arg.starts_with(&format!("{flag}=")));
        match secret_flag {
            Some(flag) if arg == *flag => {
                parts.push(arg.clone());
                redact_next = true;
            }
            Some(flag) => parts.push(format!("{flag}=<redacted>")),
            None if arg.is_empty() || arg.contains([' ', '"', '\'', '\t']) => {
                parts.push(format!("'{}'", arg.replace('\'', "'\\''")))
            }
            None => parts.push(arg.clone()),
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn command_line_quotes_and_redacts() {
        let line = command_line(&strings(&["bench", "put", "--jwt-secret", "s3cret", "--token=abc", "--map", "a b"]));
        assert_eq!(line, "bench put --jwt-secret <redacted> --token=<redacted> --map 'a b'");
    }

    // Goal: the table has the columns and one line per row, and errors are listed.
    #[test]
    fn table_has_the_columns() {
        let report = Report {
            command_line: "bench put".into(),
            machine: Machine { cpus_available: 2, cpus_online: 2 },
            scenario: "put",
            bench_cores: vec![],
            mode: "closed",
            parameters: serde_json::json!({}),
            measured_s: 1.0,
            rows: vec![Row {
                name: "put",
                conns: 3,
                latency: LatencySummary { count: 10, ops_per_s: 10.0, p50_us: 1.5, ..LatencySummary::default() },
                errors: BTreeMap::from([("ERROR 429".to_string(), 2)]),
            }],
            errors: BTreeMap::from([("ERROR 429".to_string(), 2)]),
            messages_seen: BTreeMap::new(),
            deliveries_expected: None,
            failure: None,
        };
        let table = report.table();
        let header = table.lines().next().unwrap();
        for column in ["scenario", "conns", "ops/s", "p50", "p90", "p99", "p99.9", "max (µs)", "errors"] {
            assert!(header.contains(column), "{header}");
        }
        assert!(table.lines().nth(1).unwrap().starts_with("put "));
        assert!(table.contains("error: ERROR 429: 2"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["rows"][0]["p50_us"], 1.5);
        assert_eq!(json["rows"][0]["p99.9_us"], 0.0);
        assert_eq!(json["machine"]["cpus_online"], 2);
    }
}
