//! End-to-end checks of `GET /metrics` against the real binary: every line parses as Prometheus
//! text, histograms are well formed (cumulative buckets, `le="+Inf"` equal to `_count`), and
//! the request, apply, fsync histograms and the labelled counters count what the test sent.

mod common;

use std::collections::BTreeMap;

use common::*;
use rmpv::Value;

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: the declared type of every family and every sample.
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

/// `GET /metrics`, every line parsed: `# HELP name text`, `# TYPE name kind` (declared once,
/// before the family's samples), or a sample of a declared family. Panics on anything else.
fn scrape(server: &Server) -> Scrape {
    let (status, body) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("metrics are UTF-8");
    let sample_line = regex::Regex::new(r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$"#).unwrap();
    let label = regex::Regex::new(r#"^([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"$"#).unwrap();
    let mut scrape = Scrape { types: BTreeMap::new(), samples: Vec::new() };
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, text) = help.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            assert!(name.starts_with("shardgrid_") && !text.is_empty(), "{line:?}");
            continue;
        }
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line:?}");
            assert!(scrape.types.insert(name.to_string(), kind.to_string()).is_none(), "declared twice: {line:?}");
            continue;
        }
        let captures = sample_line.captures(line).unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let name = captures[1].to_string();
        let labels: BTreeMap<String, String> = captures[2]
            .split(',')
            .map(|pair| {
                let pair = label.captures(pair).unwrap_or_else(|| panic!("bad label in {line:?}"));
                (pair[1].to_string(), pair[2].to_string())
            })
            .collect();
        assert!(labels.contains_key("shard"), "every sample has a shard label: {line:?}");
        let value: f64 = captures[3].parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|family| scrape.types.get(*family).is_some_and(|kind| kind == "histogram"))
            })
            .unwrap_or(&name);
        assert!(scrape.types.contains_key(family), "sample before its TYPE: {line:?}");
        scrape.samples.push(Sample { name, labels, value });
    }
    scrape
}

impl Scrape {
    /// Sum over shards of the samples named `name` whose labels include `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                filter.iter().all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
            })
            .map(|sample| sample.value)
            .sum()
    }

    /// Checks every series of every histogram family: buckets ascend in `le` with counts that
    /// never fall, the last is `+Inf` and equals `_count`, and `_sum` is there and not negative.
    /// Returns how many series were checked.
    fn check_histograms(&self) -> usize {
        let mut series_checked = 0;
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for sample in self.samples.iter().filter(|sample| sample.name == format!("{family}_bucket")) {
                let mut labels = sample.labels.clone();
                let le = labels.remove("le").unwrap_or_else(|| panic!("bucket without le: {sample:?}"));
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
                buckets.entry(labels).or_default().push((le, sample.value));
            }
            for (labels, series) in buckets {
                assert!(series.windows(2).all(|pair| pair[0].0 < pair[1].0), "{family} {labels:?}: le ascends");
                assert!(series.windows(2).all(|pair| pair[0].1 <= pair[1].1), "{family} {labels:?}: cumulative");
                let (last_le, inf_count) = *series.last().unwrap();
                assert_eq!(last_le, f64::INFINITY, "{family} {labels:?}: ends with +Inf");
                let count = self.one(&format!("{family}_count"), &labels);
                assert_eq!(inf_count, count, "{family} {labels:?}: +Inf equals _count");
                assert!(self.one(&format!("{family}_sum"), &labels) >= 0.0);
                series_checked += 1;
            }
        }
        series_checked
    }

    /// The value of the one sample named `name` with exactly `labels`.
    fn one(&self, name: &str, labels: &BTreeMap<String, String>) -> f64 {
        let found: Vec<&Sample> =
            self.samples.iter().filter(|sample| sample.name == name && sample.labels == *labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}");
        found[0].value
    }
}

// Goal: on two shards, /metrics counts what a client did: OP_BATCH requests in the request
// histogram (one sample per batch), every routed batch in the apply histogram, ops by kind,
// the PING, an ERROR by its code, and the records held; every histogram is well formed.
// Method: three OP_BATCHes of 8 puts and 1 remove over keys spread across both shards, a
// PING, a text frame (ERROR 400), then one scrape with every line parsed.
#[test]
fn metrics_count_requests_applies_ops_and_errors() {
    let server = Server::two_shards();
    let mut client = server.client();
    let batches = 3;
    let millis = now_ms();
    let mut id = 0;
    for batch in 0..batches {
        let mut ops = Vec::new();
        for key in 0..8 {
            id += 1;
            ops.push(put_op(id, "metrics", &format!("k{batch}-{key}"), Value::from("value"), millis));
        }
        id += 1;
        ops.push(remove_op(id, "metrics", &format!("k{batch}-0"), millis + 1));
        client.send(&op_batch(ops));
        client.recv_type("OP_ACK");
    }
    client.send(&msg("PING", vec![("timestamp", Value::from(millis))]));
    client.recv_type("PONG");
    client.send_text("not msgpack");
    assert_eq!(client.recv_error().0, 400);

    let scrape = scrape(&server);
    assert_eq!(scrape.check_histograms(), 2 + 2 + 3, "apply and fsync per shard; AUTH, OP_BATCH, PING");

    let op_batch_requests = scrape.sum("shardgrid_request_seconds_count", &[("type", "OP_BATCH")]);
    assert_eq!(op_batch_requests, batches as f64, "one request sample per OP_BATCH");
    assert_eq!(scrape.sum("shardgrid_request_seconds_count", &[("type", "PING")]), 1.0);
    assert_eq!(scrape.sum("shardgrid_request_seconds_count", &[("type", "AUTH")]), 1.0);
    assert!(scrape.sum("shardgrid_request_seconds_sum", &[("type", "OP_BATCH")]) > 0.0);
    assert_eq!(
        scrape.sum("shardgrid_request_seconds_count", &[("type", "QUERY_SUB")]),
        0.0,
        "no series for a type never sent"
    );
    assert!(!scrape.samples.iter().any(|sample| sample.labels.get("type").is_some_and(|kind| kind == "QUERY_SUB")));

    // Each batch reaches one or both owners; each owner applies its part as one routed batch.
    let applies = scrape.sum("shardgrid_apply_seconds_count", &[]);
    assert!(applies >= batches as f64 && applies <= 2.0 * batches as f64, "{applies} routed batches");
    let both_shards_applied =
        (0..2).all(|shard| scrape.sum("shardgrid_apply_seconds_count", &[("shard", &shard.to_string())]) > 0.0);
    assert!(both_shards_applied, "24 keys land on both shards");

    assert_eq!(scrape.sum("shardgrid_ops_total", &[("kind", "put")]), 8.0 * batches as f64);
    assert_eq!(scrape.sum("shardgrid_ops_total", &[("kind", "remove")]), batches as f64);
    assert_eq!(scrape.sum("shardgrid_ops_total", &[("kind", "or_add")]), 0.0);
    assert_eq!(scrape.sum("shardgrid_ops_applied_total", &[]), 9.0 * batches as f64);
    assert_eq!(scrape.sum("shardgrid_records", &[]), 8.0 * batches as f64, "puts and tombstones are records");
    assert!(scrape.sum("shardgrid_data_bytes", &[]) > 0.0);

    assert_eq!(scrape.sum("shardgrid_errors_total", &[("code", "400")]), 1.0);
    assert_eq!(scrape.sum("shardgrid_errors_total", &[]), 1.0, "no other ERROR was sent");
    for gauge in ["shardgrid_live_searches", "shardgrid_mesh_calls_pending", "shardgrid_hops_received_total"] {
        assert!(scrape.types.contains_key(gauge), "{gauge} is exported");
    }
    assert_eq!(scrape.sum("shardgrid_mesh_calls_pending", &[]), 0.0, "nothing in flight between scrapes");
    assert_eq!(scrape.sum("shardgrid_storage_fsync_seconds_count", &[]), 0.0, "memory backend");
}

// Goal: with the disk backend, every fdatasync is in the fsync histogram: after a PERSISTED
// write it has counted at least one, as many as `shardgrid_storage_fsyncs_total`, and is well
// formed. Method: two shards on a temp data directory, one PERSISTED OP_BATCH, one scrape.
#[test]
fn fsync_histogram_counts_fdatasyncs_after_a_persisted_write() {
    let data_dir = TempDir::new("metrics-fsync");
    let server = Server::on_disk(&data_dir, &["--cores", "0-1"]);
    let mut client = no_auth_client(server.port);
    let ops = (0..6).map(|key| put_op(key + 1, "durable", &format!("k{key}"), Value::from(key), now_ms())).collect();
    client.send(&msg_payload("OP_BATCH", vec![("ops", Value::Array(ops)), ("writeConcern", s("PERSISTED"))]));
    let ack = client.recv_type("OP_ACK");
    assert_eq!(get(&ack, "payload.achievedLevel").as_str(), Some("PERSISTED"), "{ack}");

    let scrape = scrape(&server);
    scrape.check_histograms();
    let fsyncs = scrape.sum("shardgrid_storage_fsync_seconds_count", &[]);
    assert!(fsyncs > 0.0, "a PERSISTED ack follows an fdatasync");
    for shard in ["0", "1"] {
        assert_eq!(
            scrape.sum("shardgrid_storage_fsync_seconds_count", &[("shard", shard)]),
            scrape.sum("shardgrid_storage_fsyncs_total", &[("shard", shard)]),
            "shard {shard}: the histogram counts every fdatasync"
        );
    }
    assert_eq!(scrape.sum("shardgrid_ops_total", &[("kind", "put")]), 6.0);
}
