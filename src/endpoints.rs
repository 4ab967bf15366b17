//! shardgrid::endpoints: the plain HTTP endpoints on the WebSocket port — health checks,
//! Prometheus metrics gathered from every shard over the mesh, and `POST /sync`, the HTTP sync
//! transport (its own submodule, `sync`).

mod sync;

use std::fmt::Write as _;

use glommio::net::TcpStream;

use crate::metrics::{Histogram, BUCKET_LABELS, OP_KIND_NAMES};
use crate::net::http::{respond, RequestHead};
use crate::node::{Node, ShardReport, ShardStats};

/// Answers one plain HTTP request; the connection closes afterwards.
pub async fn answer(node: &Node, stream: &mut TcpStream, mut head: RequestHead) {
    let route = head.route();
    let (status, content_type, body): (u16, &str, Vec<u8>) = match (head.method.as_str(), route) {
        ("GET", "/health") => {
            let (total, _) = node.node_stats().await;
            let body = serde_json::json!({
                "state": "ready",
                "shards": node.shard_count(),
                "connections": total.connections,
                "in_flight": 0,
                "uptime_secs": node.started.elapsed().as_secs(),
            });
            (200, "application/json", body.to_string().into_bytes())
        }
        ("GET", "/health/live") => (200, "text/plain", Vec::new()),
        ("GET", "/health/ready") | ("GET", "/healthz") => (200, "application/json", br#"{"state":"ready"}"#.to_vec()),
        ("GET", "/metrics") => {
            let (_, per_shard) = node.node_stats().await;
            (200, "text/plain; version=0.0.4", render_metrics(&per_shard).into_bytes())
        }
        ("POST", "/sync") => sync::answer(node, stream, &mut head).await,
        (_, "/health" | "/health/live" | "/health/ready" | "/healthz" | "/metrics" | "/sync") => {
            (405, "text/plain", b"method not allowed".to_vec())
        }
        _ => (404, "text/plain", b"not found".to_vec()),
    };
    let _ = respond(stream, status, content_type, &body).await;
}

/// One metric: name, Prometheus type, help text, and how to read it from a shard's stats.
type MetricFamily = (&'static str, &'static str, &'static str, fn(&ShardStats) -> u64);

/// One histogram with a series per shard: name, help text, and where a shard's report keeps it.
type HistogramFamily = (&'static str, &'static str, fn(&ShardReport) -> &Histogram);

/// Prometheus text exposition of every shard's counters, gauges and histograms, each sample
/// labelled by shard (shards are never merged).
pub fn render_metrics(per_shard: &[ShardReport]) -> String {
    let mut out = String::new();
    let families: [MetricFamily; 28] = [
        ("shardgrid_connections", "gauge", "Open WebSocket connections.", |s| s.connections),
        ("shardgrid_connections_accepted_total", "counter", "WebSocket connections accepted.", |s| {
            s.connections_accepted
        }),
        ("shardgrid_messages_received_total", "counter", "Client messages received.", |s| s.messages_received),
        ("shardgrid_ops_applied_total", "counter", "Write ops that changed state.", |s| s.ops_applied),
        ("shardgrid_ops_unchanged_total", "counter", "Write ops that changed nothing (re-sent or older).", |s| {
            s.ops_unchanged
        }),
        ("shardgrid_ops_rejected_total", "counter", "Write ops refused.", |s| s.ops_rejected),
        ("shardgrid_events_delivered_total", "counter", "SERVER_EVENT frames queued to connections.", |s| {
            s.events_delivered
        }),
        ("shardgrid_query_updates_sent_total", "counter", "QUERY_UPDATE frames queued to connections.", |s| {
            s.query_updates_sent
        }),
        ("shardgrid_live_queries", "gauge", "Live queries of this shard's connections.", |s| s.live_queries),
        ("shardgrid_slow_consumers_closed_total", "counter", "Connections closed as slow consumers.", |s| {
            s.slow_consumers_closed
        }),
        ("shardgrid_live_searches", "gauge", "Live searches of this shard's connections.", |s| s.live_searches),
        ("shardgrid_records", "gauge", "LWW records (tombstones included) held.", |s| s.records),
        ("shardgrid_data_bytes", "gauge", "Key and value bytes of the records held (LWW and OR maps).", |s| {
            s.data_bytes
        }),
        ("shardgrid_topic_messages_delivered_total", "counter", "TOPIC_MESSAGE frames queued to connections.", |s| {
            s.topic_messages_delivered
        }),
        ("shardgrid_lock_grants_total", "counter", "Locks granted (at once or to a waiting request).", |s| {
            s.lock_grants
        }),
        ("shardgrid_locks_held", "gauge", "Locks held on this owner shard.", |s| s.locks_held),
        ("shardgrid_lock_waiters", "gauge", "Lock requests waiting on this owner shard.", |s| s.lock_waiters),
        ("shardgrid_journal_events", "gauge", "Journal events kept by this shard.", |s| s.journal_events),
        ("shardgrid_journal_events_delivered_total", "counter", "JOURNAL_EVENT frames queued to connections.", |s| {
            s.journal_events_delivered
        }),
        ("shardgrid_hops_sent_total", "counter", "Requests sent to other shards.", |s| s.mesh.hops_sent),
        ("shardgrid_hops_received_total", "counter", "Requests received from other shards.", |s| s.mesh.hops_received),
        ("shardgrid_mesh_calls_pending", "gauge", "Calls to other shards waiting for their reply.", |s| {
            s.mesh.calls_pending
        }),
        ("shardgrid_queue_full_waits_total", "counter", "Sends that waited on a full mesh queue.", |s| {
            s.mesh.queue_full_waits
        }),
        ("shardgrid_storage_bytes_appended_total", "counter", "Bytes of records appended to the log.", |s| {
            s.storage.bytes_appended
        }),
        ("shardgrid_storage_fsyncs_total", "counter", "fdatasync calls on segment files.", |s| s.storage.fsyncs),
        (
            "shardgrid_storage_flush_failures_total",
            "counter",
            "Group commits that failed (writes refused meanwhile).",
            |s| s.storage.flush_failures,
        ),
        (
            "shardgrid_storage_segments_compacted_total",
            "counter",
            "Segments rewritten and removed by compaction.",
            |s| s.storage.segments_compacted,
        ),
        (
            "shardgrid_storage_tombstones_dropped_total",
            "counter",
            "Tombstones past the grace period dropped by compaction.",
            |s| s.storage.tombstones_dropped,
        ),
    ];
    for (name, kind, help, value) in families {
        header(&mut out, name, kind, help);
        for (shard, report) in per_shard.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(&report.stats));
        }
    }

    let name = "shardgrid_ops_total";
    header(&mut out, name, "counter", "Write ops that reached their owner shard, by kind.");
    for (shard, report) in per_shard.iter().enumerate() {
        for (kind, count) in OP_KIND_NAMES.iter().zip(report.metrics.ops_by_kind) {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",kind=\"{kind}\"}} {count}");
        }
    }
    let name = "shardgrid_errors_total";
    header(&mut out, name, "counter", "ERROR replies sent, by code.");
    for (shard, report) in per_shard.iter().enumerate() {
        let (by_code, other) = report.metrics.errors.by_code();
        for (code, count) in by_code {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",code=\"{code}\"}} {count}");
        }
        if let Some(count) = other {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\",code=\"other\"}} {count}");
        }
    }

    let name = "shardgrid_request_seconds";
    header(&mut out, name, "histogram", "Client messages from arrival until handled (replies queued), by type.");
    for (shard, report) in per_shard.iter().enumerate() {
        for (message_type, histogram) in report.metrics.requests_seen() {
            let labels = format!("shard=\"{shard}\",type=\"{}\"", message_type.as_str());
            write_histogram(&mut out, name, &labels, histogram);
        }
    }
    let histograms: [HistogramFamily; 2] = [
        ("shardgrid_apply_seconds", "Owner shard applying one routed batch of write ops to its data.", |report| {
            &report.metrics.apply
        }),
        ("shardgrid_storage_fsync_seconds", "fdatasync calls on segment files.", |report| &report.metrics.fsync),
    ];
    for (name, help, histogram) in histograms {
        header(&mut out, name, "histogram", help);
        for (shard, report) in per_shard.iter().enumerate() {
            write_histogram(&mut out, name, &format!("shard=\"{shard}\""), histogram(report));
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One histogram's samples: cumulative `_bucket`s ending with `+Inf` (= `_count`), `_sum` in
/// seconds, `_count`. `labels` go before `le`.
fn write_histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    for (bound, count) in BUCKET_LABELS.iter().zip(histogram.cumulative()) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
    }
    let count = histogram.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum_seconds());
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::metrics::ShardMetrics;
    use crate::protocol::MessageType;

    fn report(stats: ShardStats, metrics: ShardMetrics) -> ShardReport {
        ShardReport { stats, metrics }
    }

    /// Every sample of `text` as `name{labels}` -> value; asserts each line is a HELP or TYPE
    /// comment or a sample.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                assert!(comment.starts_with("HELP shardgrid_") || comment.starts_with("TYPE shardgrid_"), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(series.starts_with("shardgrid_") && series.ends_with("\"}"), "{line}");
            assert!(samples.insert(series.to_string(), value.parse::<f64>().unwrap()).is_none(), "twice: {line}");
        }
        samples
    }

    // Goal: every sample line is `name{shard="n",...} value` under a HELP and TYPE header, and
    // the plain counters appear once per shard. Method: render two shards' stats and parse.
    #[test]
    fn metrics_are_prometheus_text() {
        let stats = ShardStats { connections: 3, ..ShardStats::default() };
        let text = render_metrics(&[report(stats, ShardMetrics::default()), report(stats, ShardMetrics::default())]);
        assert!(text.contains("# TYPE shardgrid_connections gauge"));
        assert!(text.contains("# TYPE shardgrid_apply_seconds histogram"));
        let samples = samples(&text);
        assert_eq!(samples["shardgrid_connections{shard=\"0\"}"], 3.0);
        assert_eq!(samples["shardgrid_connections{shard=\"1\"}"], 3.0);
        assert_eq!(samples["shardgrid_ops_total{shard=\"1\",kind=\"or_add\"}"], 0.0);
        assert!(
            !samples.keys().any(|series| series.starts_with("shardgrid_request_seconds")),
            "no request series before a message type is seen"
        );
        assert!(!samples.keys().any(|series| series.starts_with("shardgrid_errors_total")), "no errors yet");
    }

    // Goal: histograms follow the exposition format: per series, `_bucket`s with growing `le`
    // are cumulative, `le="+Inf"` equals `_count`, `_sum` is the total in seconds; request
    // histograms exist only for the types seen, errors only for the codes seen.
    // Method: record known samples on shard 1 and read the rendered values back.
    #[test]
    fn histograms_are_cumulative_with_inf_equal_to_count() {
        let mut metrics = ShardMetrics::default();
        for micros in [5, 20, 20, 700, 3_000, 20_000_000] {
            metrics.apply.record(Duration::from_micros(micros));
        }
        metrics.record_request(MessageType::OpBatch, Duration::from_micros(40));
        metrics.record_request(MessageType::OpBatch, Duration::from_micros(60));
        metrics.record_request(MessageType::Ping, Duration::from_micros(1));
        metrics.errors.count(429);
        metrics.errors.count(429);
        metrics.ops_by_kind = [4, 1, 0, 0, 0];
        let text = render_metrics(&[
            report(ShardStats::default(), ShardMetrics::default()),
            report(ShardStats::default(), metrics),
        ]);
        let samples = samples(&text);

        let apply = |suffix: &str| samples[&format!("shardgrid_apply_seconds{suffix}")];
        let buckets: Vec<f64> =
            BUCKET_LABELS.iter().map(|le| apply(&format!("_bucket{{shard=\"1\",le=\"{le}\"}}"))).collect();
        assert_eq!(buckets[..4], [1.0, 3.0, 3.0, 3.0], "le 10µs, 25µs, 50µs, 100µs");
        assert_eq!(buckets[4..9], [3.0, 3.0, 4.0, 4.0, 5.0], "le 250µs, 500µs, 1ms, 2.5ms, 5ms");
        assert!(buckets.windows(2).all(|pair| pair[0] <= pair[1]), "cumulative: {buckets:?}");
        assert_eq!(buckets[18], 5.0, "20 s is above the last bound");
        assert_eq!(apply("_bucket{shard=\"1\",le=\"+Inf\"}"), 6.0);
        assert_eq!(apply("_count{shard=\"1\"}"), 6.0);
        assert!((apply("_sum{shard=\"1\"}") - 20.003745).abs() < 1e-9);
        assert_eq!(apply("_count{shard=\"0\"}"), 0.0, "every shard has an apply series");

        let op_batch = |suffix: &str| samples[&format!("shardgrid_request_seconds{suffix}")];
        assert_eq!(op_batch("_bucket{shard=\"1\",type=\"OP_BATCH\",le=\"0.000025\"}"), 0.0);
        assert_eq!(op_batch("_bucket{shard=\"1\",type=\"OP_BATCH\",le=\"0.00005\"}"), 1.0);
        assert_eq!(op_batch("_bucket{shard=\"1\",type=\"OP_BATCH\",le=\"+Inf\"}"), 2.0);
        assert_eq!(op_batch("_count{shard=\"1\",type=\"OP_BATCH\"}"), 2.0);
        assert!((op_batch("_sum{shard=\"1\",type=\"OP_BATCH\"}") - 0.0001).abs() < 1e-12);
        assert_eq!(op_batch("_count{shard=\"1\",type=\"PING\"}"), 1.0);
        let request_types: std::collections::BTreeSet<&str> = samples
            .keys()
            .filter(|series| series.starts_with("shardgrid_request_seconds_count"))
            .map(|series| series.split("type=\"").nth(1).unwrap().trim_end_matches("\"}"))
            .collect();
        assert_eq!(request_types, ["OP_BATCH", "PING"].into(), "only the types seen");

        assert_eq!(samples["shardgrid_errors_total{shard=\"1\",code=\"429\"}"], 2.0);
        assert_eq!(samples["shardgrid_ops_total{shard=\"1\",kind=\"put\"}"], 4.0);
        assert_eq!(samples["shardgrid_ops_total{shard=\"1\",kind=\"remove\"}"], 1.0);
        assert_eq!(samples["shardgrid_storage_fsync_seconds_count{shard=\"1\"}"], 0.0);
    }
}
