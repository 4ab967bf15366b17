//! Latency histograms and their summaries. Latencies are recorded in nanoseconds into an HDR
//! histogram with three significant digits and summarised in microseconds; each generator
//! thread keeps its own histograms and the runner merges them at the end. It leaves out what a
//! latency is measured from (see `pacing`) and how results are printed (see `report`).

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram tells apart: one hour. Longer latencies are recorded as
/// this value, so a wedged run still shows up in `max`.
pub const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits the histogram keeps (0.1% relative error).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in nanoseconds. Lives on one generator thread until it is merged.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let histogram =
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, SIGNIFICANT_DIGITS).expect("constant bounds are valid");
        LatencyHistogram { histogram }
    }

    /// Records `count` operations that took `latency_ns` each (a batch's ops share its latency).
    pub fn record_ns(&mut self, latency_ns: u64, count: u64) {
        // Zero (a reply in the same nanosecond) is below the lowest trackable value.
        let clamped = latency_ns.clamp(1, LATENCY_NS_MAX);
        self.histogram.record_n(clamped, count).expect("value clamped into the histogram's range");
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.histogram.add(&other.histogram).expect("histograms share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Percentiles in microseconds and the throughput over a measured window of `window_s`.
    pub fn summary(&self, window_s: f64) -> LatencySummary {
        let count = self.histogram.len();
        if count == 0 {
            return LatencySummary::default();
        }
        let micros = |nanos: u64| nanos as f64 / 1_000.0;
        // hdrhistogram reports the highest value equivalent to the bucket a percentile falls
        // in, so a summary never understates a latency.
        let at = |percentile: f64| micros(self.histogram.value_at_quantile(percentile / 100.0));
        LatencySummary {
            count,
            ops_per_s: if window_s > 0.0 { count as f64 / window_s } else { 0.0 },
            mean_us: self.histogram.mean() / 1_000.0,
            p50_us: at(50.0),
            p90_us: at(90.0),
            p99_us: at(99.0),
            p99_9_us: at(99.9),
            max_us: micros(self.histogram.max()),
        }
    }
}

/// What the table and the JSON report say about one histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Operations recorded.
    pub count: u64,
    pub ops_per_s: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    #[serde(rename = "p99.9_us")]
    pub p99_9_us: f64,
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_to(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= expected * 0.002
    }

    // Goal: percentiles of a known distribution come out within the histogram's precision.
    // Method: record 1..=10000 µs once each; the p-th percentile is p% of 10000 µs.
    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut histogram = LatencyHistogram::new();
        for micros in 1..=10_000u64 {
            histogram.record_ns(micros * 1_000, 1);
        }
        let summary = histogram.summary(2.0);
        assert_eq!(summary.count, 10_000);
        assert_eq!(summary.ops_per_s, 5_000.0);
        assert!(close_to(summary.p50_us, 5_000.0), "{summary:?}");
        assert!(close_to(summary.p90_us, 9_000.0), "{summary:?}");
        assert!(close_to(summary.p99_us, 9_900.0), "{summary:?}");
        assert!(close_to(summary.p99_9_us, 9_990.0), "{summary:?}");
        assert!(close_to(summary.max_us, 10_000.0), "{summary:?}");
        assert!(close_to(summary.mean_us, 5_000.5), "{summary:?}");
        assert!(summary.p50_us <= summary.p90_us && summary.p99_us <= summary.p99_9_us);
    }

    // Goal: a batch recorded with a count weighs like that many operations, and merging two
    // threads' histograms is the same as recording everything into one.
    #[test]
    fn counts_and_merges() {
        let mut fast = LatencyHistogram::new();
        fast.record_ns(100_000, 990); // 990 ops at 100 µs
        let mut slow = LatencyHistogram::new();
        slow.record_ns(50_000_000, 10); // 10 ops at 50 ms
        fast.merge(&slow);
        let summary = fast.summary(1.0);
        assert_eq!(summary.count, 1_000);
        assert!(close_to(summary.p99_us, 100.0), "the 990th op is fast: {summary:?}");
        assert!(close_to(summary.p99_9_us, 50_000.0), "the 999th op is slow: {summary:?}");
        assert!(close_to(summary.max_us, 50_000.0));
    }

    // Goal: out-of-range latencies are clamped rather than lost, and an empty histogram
    // summarises to zeros (no division by zero, no panic).
    #[test]
    fn clamps_and_handles_empty() {
        let mut histogram = LatencyHistogram::new();
        assert_eq!(histogram.summary(1.0), LatencySummary::default());
        histogram.record_ns(0, 1);
        histogram.record_ns(u64::MAX, 1);
        let summary = histogram.summary(0.0);
        assert_eq!(summary.count, 2);
        assert_eq!(summary.ops_per_s, 0.0);
        assert!(summary.max_us >= LATENCY_NS_MAX as f64 / 1_000.0 * 0.999);
    }
}
