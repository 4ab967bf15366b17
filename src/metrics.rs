//! shardgrid::metrics: the latency histograms and labelled counters behind `/metrics` that do
//! not fit `ShardStats` (plain `u64`s that add up): request latency per client message type,
//! the owner's apply time per routed batch, fdatasync latency, write ops by kind and `ERROR`
//! replies by code.
//!
//! Each shard owns its own copy (`Node`, `ShardStore`) and is the only one to touch it, so
//! recording is a few plain additions into fixed arrays: no lock, no atomic, no allocation.
//! `/metrics` gathers one copy per shard over the mesh and renders each under its shard label;
//! shards are never merged. Timing (`Instant::now()`) is the caller's business.

use std::time::Duration;

use crate::protocol::{MessageType, OpKind};

/// Upper bounds of the histogram buckets, in nanoseconds: 10 µs to 10 s, roughly log-spaced
/// (1, 2.5, 5 per decade). Samples above the last bound land in the `+Inf` bucket only.
pub const BUCKET_BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The same bounds in seconds, as the `le` labels show them.
pub const BUCKET_LABELS: [&str; 19] = [
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// One bucket per bound plus the overflow bucket.
const BUCKET_COUNT: usize = BUCKET_BOUNDS_NS.len() + 1;

const _: () = assert!(BUCKET_BOUNDS_NS.len() == BUCKET_LABELS.len());

/// A latency histogram with fixed buckets. Counts per bucket are kept apart (not cumulative);
/// `cumulative` adds them up for the exposition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket: `buckets[i]` holds those in `(BUCKET_BOUNDS_NS[i-1], BUCKET_BOUNDS_NS[i]]`,
    /// the last one those above every bound.
    buckets: [u64; BUCKET_COUNT],
    sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::EMPTY
    }
}

impl Histogram {
    pub const EMPTY: Histogram = Histogram { buckets: [0; BUCKET_COUNT], sum_ns: 0 };

    pub fn record(&mut self, elapsed: Duration) {
        self.record_ns(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_ns(&mut self, elapsed_ns: u64) {
        // The first bound at or above the sample: Prometheus buckets are `le` (less or equal).
        let bucket = BUCKET_BOUNDS_NS.partition_point(|&bound| bound < elapsed_ns);
        self.buckets[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(elapsed_ns);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of the samples, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Samples at or below each bound, in bound order; the `+Inf` bucket is `count()`.
    pub fn cumulative(&self) -> [u64; BUCKET_BOUNDS_NS.len()] {
        let mut running = 0;
        std::array::from_fn(|bucket| {
            running += self.buckets[bucket];
            running
        })
    }
}

/// Number of message types, so request histograms can be indexed by `MessageType as usize`.
pub const MESSAGE_TYPE_COUNT: usize = MessageType::ALL.len();

/// The `kind` label of `shardgrid_ops_total`, indexed by `op_kind_index`.
pub const OP_KIND_NAMES: [&str; 5] = ["put", "remove", "or_add", "or_remove", "noop"];

pub fn op_kind_index(kind: &OpKind) -> usize {
    match kind {
        OpKind::Put(_) => 0,
        OpKind::Remove { .. } => 1,
        OpKind::OrAdd(_) => 2,
        OpKind::OrRemove { .. } => 3,
        OpKind::Noop => 4,
    }
}

/// Distinct `ERROR` codes counted one by one; further codes count as `other`. The server
/// sends about a dozen.
const ERROR_CODES_MAX: usize = 24;

/// `ERROR` replies by code: a small table filled in order of first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCounts {
    /// `(code, count)`; slots past the last used one have count 0.
    slots: [(u16, u64); ERROR_CODES_MAX],
    /// Codes that found the table full.
    other: u64,
}

impl Default for ErrorCounts {
    fn default() -> Self {
        ErrorCounts { slots: [(0, 0); ERROR_CODES_MAX], other: 0 }
    }
}

impl ErrorCounts {
    pub fn count(&mut self, code: u16) {
        for slot in &mut self.slots {
            if slot.1 == 0 {
                *slot = (code, 1);
                return;
            }
            if slot.0 == code {
                slot.1 += 1;
                return;
            }
        }
        self.other += 1;
    }

    /// `(code, count)` of every code seen, by code, then `other` (`None` when never used).
    pub fn by_code(&self) -> (Vec<(u16, u64)>, Option<u64>) {
        let mut seen: Vec<(u16, u64)> = self.slots.iter().copied().filter(|&(_, count)| count > 0).collect();
        seen.sort_unstable();
        (seen, (self.other > 0).then_some(self.other))
    }
}

/// One shard's histograms and labelled counters. Lives on its shard (`Node`); the fdatasync
/// histogram is kept by the shard's log and copied in when `/metrics` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMetrics {
    /// Per client message type (`MessageType as usize`): from the frame's arrival until its
    /// handler returned.
    pub requests: [Histogram; MESSAGE_TYPE_COUNT],
    /// Owner side: applying one routed batch to the shard's data (merge, resolvers, log append).
    pub apply: Histogram,
    /// Each fdatasync of the shard's log (disk backend).
    pub fsync: Histogram,
    /// Write ops that reached this owner, by `op_kind_index`.
    pub ops_by_kind: [u64; OP_KIND_NAMES.len()],
    /// `ERROR` replies this shard's connections were sent.
    pub errors: ErrorCounts,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            requests: [Histogram::EMPTY; MESSAGE_TYPE_COUNT],
            apply: Histogram::EMPTY,
            fsync: Histogram::EMPTY,
            ops_by_kind: [0; OP_KIND_NAMES.len()],
            errors: ErrorCounts::default(),
        }
    }
}

impl ShardMetrics {
    pub fn record_request(&mut self, message_type: MessageType, elapsed: Duration) {
        self.requests[message_type as usize].record(elapsed);
    }

    /// Request histograms of the types seen, in declaration order.
    pub fn requests_seen(&self) -> impl Iterator<Item = (MessageType, &Histogram)> + '_ {
        MessageType::ALL
            .iter()
            .map(|&message_type| (message_type, &self.requests[message_type as usize]))
            .filter(|(_, histogram)| histogram.count() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a sample lands in the first bucket whose bound is at or above it, the bounds
    // themselves included, and the rest in +Inf. Method: samples on, just over and past bounds.
    #[test]
    fn samples_land_in_le_buckets() {
        let mut histogram = Histogram::default();
        histogram.record_ns(0);
        histogram.record_ns(10_000); // on the first bound
        histogram.record_ns(10_001);
        histogram.record(Duration::from_millis(1));
        histogram.record(Duration::from_secs(11)); // above every bound
        let cumulative = histogram.cumulative();
        assert_eq!(cumulative[0], 2, "0 and 10 µs are <= 10 µs");
        assert_eq!(cumulative[1], 3, "10.001 µs is <= 25 µs");
        assert_eq!(cumulative[6], 4, "1 ms is <= 1 ms");
        assert_eq!(cumulative[18], 4, "11 s is above 10 s");
        assert_eq!(histogram.count(), 5);
        assert!((histogram.sum_seconds() - 11.001_020_001).abs() < 1e-9, "{}", histogram.sum_seconds());
    }

    // Goal: labels and bounds agree, and bounds grow. Method: parse each label.
    #[test]
    fn labels_are_the_bounds_in_seconds() {
        for (bound, label) in BUCKET_BOUNDS_NS.iter().zip(BUCKET_LABELS) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, *bound, "{label}");
        }
        assert!(BUCKET_BOUNDS_NS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    // Goal: request histograms are indexed by declaration order, so `as usize` matches `ALL`.
    #[test]
    fn message_types_index_in_declaration_order() {
        for (index, &message_type) in MessageType::ALL.iter().enumerate() {
            assert_eq!(message_type as usize, index, "{}", message_type.as_str());
        }
    }

    // Goal: codes are counted apart, listed by code, and overflow goes to `other`.
    // Method: more distinct codes than slots.
    #[test]
    fn error_codes_count_apart_and_overflow_to_other() {
        let mut errors = ErrorCounts::default();
        errors.count(429);
        errors.count(400);
        errors.count(429);
        assert_eq!(errors.by_code(), (vec![(400, 1), (429, 2)], None));
        for code in 0..ERROR_CODES_MAX as u16 {
            errors.count(600 + code);
        }
        let (seen, other) = errors.by_code();
        assert_eq!(seen.len(), ERROR_CODES_MAX);
        assert_eq!(other, Some(2), "two codes found the table full");
    }
}
