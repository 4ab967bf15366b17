//! shardgrid::endpoints: the plain HTTP endpoints on the WebSocket port — health checks,
//! Prometheus metrics gathered from every shard over the mesh, and `POST /sync`, the HTTP sync
//! transport (its own submodule, `sync`).

mod sync;

use std::fmt::Write as _;

use glommio::net::TcpStream;

use crate::net::http::{respond, RequestHead};
use crate::node::{Node, ShardStats};

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

/// Prometheus text exposition of every shard's counters, labelled by shard.
pub fn render_metrics(per_shard: &[ShardStats]) -> String {
    let mut out = String::new();
    let families: [MetricFamily; 27] = [
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
        ("shardgrid_errors_sent_total", "counter", "ERROR replies sent.", |s| s.errors_sent),
        ("shardgrid_records", "gauge", "LWW records (tombstones included) held.", |s| s.records),
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
        ("shardgrid_queue_full_waits_total", "counter", "Sends that waited on a full mesh queue.", |s| {
            s.mesh.queue_full_waits
        }),
        ("shardgrid_storage_bytes_appended_total", "counter", "Bytes of records appended to the log.", |s| {
            s.storage.bytes_appended
        }),
        ("shardgrid_storage_fsyncs_total", "counter", "fdatasync calls on segment files.", |s| s.storage.fsyncs),
        ("shardgrid_storage_fsync_latency_us_sum", "counter", "Microseconds spent in fdatasync.", |s| {
            s.storage.fsync_latency_us_sum
        }),
        ("shardgrid_storage_fsync_latency_us_max", "gauge", "Longest fdatasync, in microseconds.", |s| {
            s.storage.fsync_latency_us_max
        }),
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
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (shard, stats) in per_shard.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(stats));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every sample line is `name{shard="n"} value` under a HELP and TYPE header.
    #[test]
    fn metrics_are_prometheus_text() {
        let stats = ShardStats { connections: 3, ..ShardStats::default() };
        let text = render_metrics(&[stats, ShardStats::default()]);
        assert!(text.contains("# TYPE shardgrid_connections gauge"));
        assert!(text.contains("shardgrid_connections{shard=\"0\"} 3"));
        assert!(text.contains("shardgrid_connections{shard=\"1\"} 0"));
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("shardgrid_") && name.ends_with("\"}"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}
