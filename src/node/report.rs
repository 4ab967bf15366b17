//! What a shard records for `/metrics` beyond its counters (`ShardStats`): request latency per
//! client message type, the owner's apply time per routed batch, write ops by kind and `ERROR`
//! replies by code (`metrics::ShardMetrics`), and the gathering of every shard's report for
//! `/health` and `/metrics`. Recording is a few additions into the shard's own arrays; reports
//! are copied only when someone asks.

use std::time::Duration;

use shardgrid_shards::ShardId;

use super::{Hop, HopReply, Node, ShardStats};
use crate::metrics::{op_kind_index, ShardMetrics};
use crate::protocol::{ClientOp, MessageType};

/// One shard's answer to `Hop::Stats`: its counters and its histograms.
#[derive(Clone, Debug)]
pub struct ShardReport {
    pub stats: ShardStats,
    pub metrics: ShardMetrics,
}

impl Node {
    /// A client message of `message_type` took `elapsed` from its frame's arrival until its
    /// handler returned.
    pub fn record_request(&self, message_type: MessageType, elapsed: Duration) {
        self.metrics.borrow_mut().record_request(message_type, elapsed);
    }

    /// An `ERROR` with `code` was queued to one of this shard's connections.
    pub fn count_error(&self, code: u16) {
        self.metrics.borrow_mut().errors.count(code);
    }

    /// These ops reached this shard, their owner.
    pub(super) fn count_ops(&self, ops: &[ClientOp]) {
        let mut metrics = self.metrics.borrow_mut();
        for op in ops {
            metrics.ops_by_kind[op_kind_index(&op.kind)] += 1;
        }
    }

    /// Applying one routed batch to this shard's data took `elapsed`.
    pub(super) fn record_apply(&self, elapsed: Duration) {
        self.metrics.borrow_mut().apply.record(elapsed);
    }

    /// This shard's counters and histograms.
    pub fn report(&self) -> ShardReport {
        let mut metrics = self.metrics.borrow().clone();
        if let Some(store) = self.store.get() {
            metrics.fsync = store.fsync_histogram();
        }
        ShardReport { stats: self.stats(), metrics }
    }

    /// Every shard's report in shard order, and their counters added up. This shard's own
    /// report is taken before the calls to the others leave, so the gathering's own calls never
    /// show as pending.
    pub async fn node_stats(&self) -> (ShardStats, Vec<ShardReport>) {
        let mut own = Some(Box::new(self.report()));
        let calls: Vec<_> = (0..self.shard_count())
            .filter(|&shard| shard != self.shard.index())
            .map(|shard| self.mesh.call(ShardId(shard as u16), Hop::Stats))
            .collect();
        let mut others = futures_util::future::join_all(calls).await.into_iter().map(|reply| {
            let HopReply::Stats(report) = reply else { unreachable!("Stats is answered with Stats") };
            report
        });
        let mut total = ShardStats::default();
        let mut per_shard = Vec::with_capacity(self.shard_count());
        for shard in 0..self.shard_count() {
            let report = if shard == self.shard.index() { own.take() } else { others.next() };
            let report = *report.expect("one report per shard");
            total.add(&report.stats);
            per_shard.push(report);
        }
        (total, per_shard)
    }
}
