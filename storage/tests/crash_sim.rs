//! Crash simulation of the log: random appends and group commits against the simulated disk,
//! a crash at a random point, recovery from what survived.
//!
//! Checked against a naive model (the list of records appended, with the durable position
//! when each flush completed): every record before the durable position comes back, exactly
//! and in order; what comes back is always a prefix of what was appended; and a crash never
//! makes recovery refuse over damage inside the durable part. A failure prints the seed;
//! rerun that seed to replay it.

use shardgrid_storage::format::{RecordKind, SEGMENT_BYTES_MIN};
use shardgrid_storage::log::FlushResult;
use shardgrid_storage::sim::{CrashMode, Prng, SimDisk};
use shardgrid_storage::{
    LogConfig, LogPosition, LogRecovery, RecordBody, SegmentId, SegmentLog, SegmentOffset, StoredTimestamp,
};

const SEEDS: u64 = 100;

fn config() -> LogConfig {
    LogConfig { segment_bytes: SEGMENT_BYTES_MIN, shard: 0, shard_count: 1, generation: 1 }
}

/// Appends `steps` random records with random flushes; returns the disk, the keys in append
/// order with each record's end position, and the durable position.
fn run(prng: &mut Prng, steps: u64) -> (SimDisk, Vec<(String, LogPosition)>, LogPosition) {
    let mut log = SegmentLog::open(config(), SegmentId(1), SegmentOffset(0), true);
    let mut disk = SimDisk::new(config().segment_bytes);
    let mut appended = Vec::new();
    let mut in_flight = None;
    for step in 0..steps {
        match prng.below(10) {
            0..=6 => {
                let key = format!("key-{step}");
                let value = vec![(step % 251) as u8; prng.below(3_000) as usize];
                let body = RecordBody {
                    partition: (step % 271) as u16,
                    map: "m",
                    key: &key,
                    timestamp: StoredTimestamp { millis: step, counter: 0, node_id: "n" },
                    ttl_ms: None,
                    tag: "",
                    value: &value,
                };
                log.append(RecordKind::LwwPut, &body).unwrap();
                appended.push((key, log.end_position()));
            }
            7 | 8 => {
                if in_flight.is_none() {
                    in_flight = log.take_flush(prng.below(4) != 0);
                }
            }
            _ => {
                if let Some(job) = in_flight.take() {
                    // The job's writes land in the page cache when it is carried out.
                    let result = disk.run(&job);
                    assert_eq!(result, FlushResult::Done);
                    log.flush_done(job, result);
                }
            }
        }
    }
    // A job still in flight at the crash may have been carried out in part: its writes are in
    // the page cache (unsynced); its fdatasync never completed.
    if let Some(job) = in_flight {
        let mut partial = job.clone();
        partial.sync.clear();
        let _ = disk.run(&partial);
    }
    (disk, appended, log.durable())
}

fn recover(
    images: &std::collections::BTreeMap<SegmentId, Vec<u8>>,
) -> Result<Vec<String>, shardgrid_storage::CorruptLog> {
    let mut recovery = LogRecovery::new(false);
    let mut keys = Vec::new();
    for (segment, image) in images {
        recovery.segment(*segment, image, |_, record| keys.push(record.body.key().to_string()))?;
    }
    recovery.finish();
    Ok(keys)
}

fn check(mode: CrashMode) {
    for seed in 0..SEEDS {
        let mut prng = Prng::from_seed(seed);
        let steps = 50 + prng.below(400);
        let (disk, appended, durable) = run(&mut prng, steps);
        let images = disk.crash(mode, &mut prng);
        let acked = appended.iter().take_while(|(_, end)| *end <= durable).count();
        match recover(&images) {
            Ok(keys) => {
                assert!(
                    keys.len() >= acked,
                    "seed={seed} {mode:?}: {} of {acked} durable records came back",
                    keys.len()
                );
                let expected: Vec<&String> = appended.iter().map(|(key, _)| key).take(keys.len()).collect();
                assert_eq!(
                    keys.iter().collect::<Vec<_>>(),
                    expected,
                    "seed={seed} {mode:?}: not a prefix of the appends"
                );
            }
            Err(corrupt) => {
                // Only a disk that reorders unsynced writes can leave a hole before valid
                // records; the hole is never inside the durable part.
                assert_eq!(mode, CrashMode::ReorderedSectors, "seed={seed}: {corrupt}");
                let at = LogPosition { segment: corrupt.segment, offset: corrupt.offset };
                assert!(
                    at >= durable || durable == LogPosition::default(),
                    "seed={seed}: corruption at {at} inside the durable part (durable {durable})"
                );
            }
        }
    }
}

// Goal: with only synced bytes surviving, exactly the durable records (and maybe more) return.
#[test]
fn crash_keeps_every_durable_record() {
    check(CrashMode::DurableOnly);
}

// Goal: a torn tail (unsynced writes surviving in order, the last one in part) is cut cleanly.
#[test]
fn crash_with_torn_tail_recovers_a_prefix() {
    check(CrashMode::InOrderPrefix);
}

// Goal: a disk that reorders unsynced sectors never costs a durable record; a hole followed by
// valid records beyond the durable part is reported, never skipped silently.
#[test]
fn crash_with_reordered_sectors_never_loses_durable_records() {
    check(CrashMode::ReorderedSectors);
}
