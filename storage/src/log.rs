//! The append side of one shard's log and its group-commit bookkeeping. Lives on its shard.
//!
//! Appends encode records into an in-memory buffer holding the active segment's unwritten
//! bytes (from the start of the page the last write ended in, so every write starts
//! page-aligned, as direct IO needs). A record that does not fit rolls the log to a new
//! segment. The driver asks for a [`FlushJob`] (chunks to write, segments to fdatasync, the
//! position it covers), carries it out, and reports back with [`SegmentLog::flush_done`]; only
//! then do `written` and `durable` move. One job is in flight at a time, and everything
//! appended while it runs goes into the next one: that is the group commit.
//!
//! Failures: a failed write or fdatasync poisons the log (the kernel may have dropped the dirty
//! pages, so a retried fsync could "succeed" over lost data): nothing is acknowledged as
//! persisted afterwards and appends are refused until restart. A new segment that cannot be
//! created for lack of space makes the log `Full`: appends are refused, the data already
//! appended stays in memory, and the driver retries; the first flush that succeeds clears it.

use crate::format::{
    framed_bytes, RecordEncoder, RecordKind, SegmentHeader, SEGMENT_BYTES_ALIGN, SEGMENT_HEADER_BYTES,
};
use crate::schema::RecordBody;
use crate::{LogPosition, SegmentId, SegmentOffset};

/// When the group commit fdatasyncs (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Write and fdatasync as soon as anything is appended; one flush at a time, so appends
    /// arriving during a flush share the next one.
    Always,
    /// Write and fdatasync every `interval_ms`, and at once when a `PERSISTED` write waits.
    Batch { interval_ms: u64 },
    /// Write every `interval_ms` (the OS flushes when it likes); never fdatasync, so nothing is
    /// ever acknowledged as `PERSISTED`.
    Never { interval_ms: u64 },
}

impl FsyncPolicy {
    /// Parses `always`, `never` or `batch:<ms>` (`never` writes every `never_interval_ms`).
    pub fn parse(text: &str, never_interval_ms: u64) -> Option<FsyncPolicy> {
        match text {
            "always" => Some(FsyncPolicy::Always),
            "never" => Some(FsyncPolicy::Never { interval_ms: never_interval_ms }),
            _ => {
                let interval_ms = text.strip_prefix("batch:")?.parse::<u64>().ok()?;
                (interval_ms > 0).then_some(FsyncPolicy::Batch { interval_ms })
            }
        }
    }

    /// Whether a flush under this policy ends with an fdatasync.
    pub fn syncs(self) -> bool {
        !matches!(self, FsyncPolicy::Never { .. })
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Batch { interval_ms } => write!(f, "batch:{interval_ms}"),
            FsyncPolicy::Never { .. } => write!(f, "never"),
        }
    }
}

/// What a log is and where it starts.
#[derive(Clone, Copy, Debug)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub shard: u16,
    pub shard_count: u16,
    pub generation: u32,
}

/// Bytes to write at one offset of one segment. `offset` is a multiple of the page size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub segment: SegmentId,
    pub offset: SegmentOffset,
    pub bytes: Vec<u8>,
}

/// One group commit: create these segments (zero-filled, `segment_bytes` long), write these
/// chunks, then fdatasync these segments (none under `never`). Covers everything appended
/// before `end`.
#[derive(Clone, Debug)]
pub struct FlushJob {
    pub create: Vec<SegmentId>,
    pub chunks: Vec<Chunk>,
    pub sync: Vec<SegmentId>,
    pub end: LogPosition,
    /// Sealed chunks this job took; they leave the log only when it succeeds.
    sealed_taken: usize,
}

/// Why a log refuses appends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogFailure {
    /// A write or fdatasync failed: refused until restart.
    #[error("storage failed: {0}; writes are refused until restart")]
    Failed(String),
    /// A new segment could not be created for lack of space: refused until a retry succeeds.
    #[error("storage full: {0}")]
    Full(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Unavailable(#[from] LogFailure),
    #[error("record of {framed_bytes} bytes does not fit in a segment of {segment_bytes} bytes")]
    TooLarge { framed_bytes: u64, segment_bytes: u64 },
}

/// How a flush job ended, as the driver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushResult {
    Done,
    /// Creating a segment failed for lack of space; nothing of the job counts.
    NoSpace(String),
    /// A write or fdatasync failed.
    Failed(String),
}

/// See the module doc.
pub struct SegmentLog {
    config: LogConfig,
    encoder: RecordEncoder,
    active: SegmentId,
    /// Offset in the active segment of `buffer[0]`; a multiple of the page size.
    buffer_base: u64,
    /// The active segment's bytes from `buffer_base` to `end`.
    buffer: Vec<u8>,
    /// Append position in the active segment.
    end: u64,
    /// Rolled segments' bytes not yet written, oldest first.
    sealed: Vec<Chunk>,
    /// Segments appended to that have no file yet.
    to_create: Vec<SegmentId>,
    /// Segments written since their last fdatasync.
    unsynced: Vec<SegmentId>,
    written: LogPosition,
    durable: LogPosition,
    in_flight: bool,
    failure: Option<LogFailure>,
}

impl SegmentLog {
    /// A log continuing in segment `active` at `end` (after recovery), or starting it fresh
    /// when `fresh` (the segment has no file yet; its header is the first thing written).
    pub fn open(config: LogConfig, active: SegmentId, end: SegmentOffset, fresh: bool) -> SegmentLog {
        assert!(config.segment_bytes % SEGMENT_BYTES_ALIGN == 0);
        assert!(config.segment_bytes >= crate::format::SEGMENT_BYTES_MIN);
        assert!(end.0 <= config.segment_bytes);
        assert!(end.0 >= SEGMENT_HEADER_BYTES || fresh);
        let mut log = SegmentLog {
            config,
            encoder: RecordEncoder::default(),
            active,
            buffer_base: 0,
            buffer: Vec::new(),
            end: 0,
            sealed: Vec::new(),
            to_create: Vec::new(),
            unsynced: Vec::new(),
            written: LogPosition::default(),
            durable: LogPosition::default(),
            in_flight: false,
            failure: None,
        };
        if fresh {
            log.start_segment(active);
        } else {
            // The recovered bytes are on disk and durable; keep the partial page in memory so
            // the next write can start page-aligned. The caller hands them in with `resume`.
            log.buffer_base = end.0 / SEGMENT_BYTES_ALIGN * SEGMENT_BYTES_ALIGN;
            log.end = end.0;
            log.written = LogPosition { segment: active, offset: end };
            log.durable = log.written;
        }
        log
    }

    /// Hands in the recovered bytes of the active segment's last partial page
    /// (`[buffer_base, end)`), so rewriting that page keeps them.
    pub fn resume(&mut self, partial_page: &[u8]) {
        assert_eq!(
            partial_page.len() as u64,
            self.end - self.buffer_base,
            "the partial page from its start to the end"
        );
        assert!(self.buffer.is_empty());
        self.buffer.extend_from_slice(partial_page);
    }

    /// The start of the partial page `resume` wants, for a log opened on recovered data.
    pub fn resume_from(&self) -> SegmentOffset {
        SegmentOffset(self.buffer_base)
    }

    fn start_segment(&mut self, segment: SegmentId) {
        let header = SegmentHeader {
            segment,
            segment_bytes: self.config.segment_bytes,
            shard: self.config.shard,
            shard_count: self.config.shard_count,
            generation: self.config.generation,
        };
        self.active = segment;
        self.buffer_base = 0;
        self.buffer.clear();
        self.buffer.extend_from_slice(&header.encode());
        self.end = SEGMENT_HEADER_BYTES;
        self.to_create.push(segment);
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Where the next record goes; everything appended lies before it.
    pub fn end_position(&self) -> LogPosition {
        LogPosition { segment: self.active, offset: SegmentOffset(self.end) }
    }

    pub fn active_segment(&self) -> SegmentId {
        self.active
    }

    /// Everything before this has been handed to the OS.
    pub fn written(&self) -> LogPosition {
        self.written
    }

    /// Everything before this is covered by a completed fdatasync.
    pub fn durable(&self) -> LogPosition {
        self.durable
    }

    pub fn failure(&self) -> Option<&LogFailure> {
        self.failure.as_ref()
    }

    /// Whether appends are accepted now.
    pub fn writable(&self) -> Result<(), LogFailure> {
        match &self.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(()),
        }
    }

    /// Bytes appended and not yet written.
    pub fn unwritten_bytes(&self) -> u64 {
        let sealed: u64 = self.sealed.iter().map(|chunk| chunk.bytes.len() as u64).sum();
        let active =
            if self.written.segment == self.active { self.end.saturating_sub(self.written.offset.0) } else { self.end };
        sealed + active
    }

    /// Whether there is anything to write or to sync.
    pub fn has_work(&self, sync: bool) -> bool {
        self.written < self.end_position() || !self.sealed.is_empty() || (sync && self.durable < self.written)
    }

    /// The largest record body this log takes, in framed bytes.
    pub fn framed_bytes_max(&self) -> u64 {
        self.config.segment_bytes - SEGMENT_HEADER_BYTES
    }

    /// Encodes and appends one record. Returns where it starts and its framed length.
    pub fn append(
        &mut self,
        kind: RecordKind,
        body: &RecordBody<'_>,
    ) -> Result<(SegmentId, SegmentOffset, u64), AppendError> {
        self.writable()?;
        let start = self.end;
        let framed = self.encoder.encode(kind, body, &mut self.buffer);
        if start + framed <= self.config.segment_bytes {
            self.end = start + framed;
            return Ok((self.active, SegmentOffset(start), framed));
        }
        // It does not fit: take it back out, roll, and encode it again in the new segment.
        self.buffer.truncate((start - self.buffer_base) as usize);
        if framed > self.framed_bytes_max() {
            return Err(AppendError::TooLarge { framed_bytes: framed, segment_bytes: self.config.segment_bytes });
        }
        self.roll();
        let start = self.end;
        let framed_again = self.encoder.encode(kind, body, &mut self.buffer);
        assert_eq!(framed, framed_again, "encoding is deterministic");
        self.end = start + framed;
        Ok((self.active, SegmentOffset(start), framed))
    }

    /// Appends a record framed elsewhere (a validated `RecordView::framed`, moved by
    /// compaction or resharding): its CRC does not depend on its position.
    pub fn append_framed(&mut self, framed: &[u8]) -> Result<(SegmentId, SegmentOffset, u64), AppendError> {
        self.writable()?;
        let framed_len = framed.len() as u64;
        assert!(framed_len % crate::format::RECORD_ALIGN_BYTES == 0);
        assert_eq!(framed_bytes(u32::from_le_bytes(framed[0..4].try_into().expect("a header")) as u64), framed_len);
        if framed_len > self.framed_bytes_max() {
            return Err(AppendError::TooLarge { framed_bytes: framed_len, segment_bytes: self.config.segment_bytes });
        }
        if self.end + framed_len > self.config.segment_bytes {
            self.roll();
        }
        let start = self.end;
        self.buffer.extend_from_slice(framed);
        self.end = start + framed_len;
        Ok((self.active, SegmentOffset(start), framed_len))
    }

    /// Seals the active segment and starts the next one.
    fn roll(&mut self) {
        let bytes = std::mem::take(&mut self.buffer);
        assert_eq!(bytes.len() as u64, self.end - self.buffer_base);
        self.sealed.push(Chunk { segment: self.active, offset: SegmentOffset(self.buffer_base), bytes });
        self.start_segment(self.active.next());
    }

    /// The next group commit, if one is due and none is in flight. `sync`: end it with an
    /// fdatasync (the policy's choice; never under `never`).
    pub fn take_flush(&mut self, sync: bool) -> Option<FlushJob> {
        if self.in_flight || !self.has_work(sync) {
            return None;
        }
        if matches!(self.failure, Some(LogFailure::Failed(_))) {
            return None;
        }
        let mut chunks: Vec<Chunk> = self.sealed.clone();
        let active_written = self.written.segment == self.active && self.written.offset.0 == self.end;
        if !active_written {
            chunks.push(Chunk {
                segment: self.active,
                offset: SegmentOffset(self.buffer_base),
                bytes: self.buffer.clone(),
            });
        }
        let mut sync_segments = Vec::new();
        if sync {
            sync_segments.extend(self.unsynced.iter().copied());
            sync_segments.extend(chunks.iter().map(|chunk| chunk.segment));
            sync_segments.sort();
            sync_segments.dedup();
        }
        self.in_flight = true;
        Some(FlushJob {
            create: self.to_create.clone(),
            chunks,
            sync: sync_segments,
            end: self.end_position(),
            sealed_taken: self.sealed.len(),
        })
    }

    /// Records how the in-flight job ended. Returns whether `durable` moved.
    pub fn flush_done(&mut self, job: FlushJob, result: FlushResult) -> bool {
        assert!(self.in_flight, "a flush job is in flight");
        self.in_flight = false;
        match result {
            FlushResult::Done => {}
            FlushResult::NoSpace(reason) => {
                if !matches!(self.failure, Some(LogFailure::Failed(_))) {
                    self.failure = Some(LogFailure::Full(reason));
                }
                return false;
            }
            FlushResult::Failed(reason) => {
                self.failure = Some(LogFailure::Failed(reason));
                return false;
            }
        }
        if matches!(self.failure, Some(LogFailure::Full(_))) {
            self.failure = None;
        }
        self.to_create.retain(|segment| !job.create.contains(segment));
        self.sealed.drain(..job.sealed_taken);
        assert!(job.end >= self.written, "positions only grow");
        self.written = job.end;
        // Keep the page the write ended in: the next write rewrites it from its start.
        if job.end.segment == self.active {
            let keep_from = job.end.offset.0 / SEGMENT_BYTES_ALIGN * SEGMENT_BYTES_ALIGN;
            assert!(keep_from >= self.buffer_base);
            self.buffer.drain(..(keep_from - self.buffer_base) as usize);
            self.buffer_base = keep_from;
        }
        let moved = if job.sync.is_empty() {
            for chunk in &job.chunks {
                if !self.unsynced.contains(&chunk.segment) {
                    self.unsynced.push(chunk.segment);
                }
            }
            false
        } else {
            self.unsynced.retain(|segment| !job.sync.contains(segment));
            let moved = job.end > self.durable;
            self.durable = self.durable.max(job.end);
            moved
        };
        debug_assert!(self.durable <= self.written);
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::StoredTimestamp;

    fn config() -> LogConfig {
        LogConfig { segment_bytes: crate::format::SEGMENT_BYTES_MIN, shard: 0, shard_count: 1, generation: 1 }
    }

    fn body(key: &str) -> RecordBody<'_> {
        RecordBody {
            partition: 3,
            map: "m",
            key,
            timestamp: StoredTimestamp { millis: 1, counter: 0, node_id: "n" },
            ttl_ms: None,
            tag: "",
            value: &[7; 100],
        }
    }

    // Goal: parse accepts exactly the documented spellings.
    #[test]
    fn fsync_policy_parses() {
        assert_eq!(FsyncPolicy::parse("always", 2), Some(FsyncPolicy::Always));
        assert_eq!(FsyncPolicy::parse("never", 2), Some(FsyncPolicy::Never { interval_ms: 2 }));
        assert_eq!(FsyncPolicy::parse("batch:5", 2), Some(FsyncPolicy::Batch { interval_ms: 5 }));
        assert_eq!(FsyncPolicy::parse("batch:0", 2), None);
        assert_eq!(FsyncPolicy::parse("batch:", 2), None);
        assert_eq!(FsyncPolicy::parse("sometimes", 2), None);
    }

    // Goal: appends during an in-flight flush wait for the next one, and durable moves only
    // when a syncing flush completes. Method: append, take, append, complete, take again.
    #[test]
    fn group_commit_positions() {
        let mut log = SegmentLog::open(config(), SegmentId(1), SegmentOffset(0), true);
        let (_, first, _) = log.append(RecordKind::LwwPut, &body("a")).unwrap();
        assert_eq!(first.0, SEGMENT_HEADER_BYTES);
        let job = log.take_flush(true).expect("work to do");
        assert_eq!(job.create, vec![SegmentId(1)]);
        assert!(log.take_flush(true).is_none(), "one job in flight");
        log.append(RecordKind::LwwPut, &body("b")).unwrap();
        let end_after_b = log.end_position();
        let job_end = job.end;
        assert!(log.flush_done(job, FlushResult::Done));
        assert_eq!(log.durable(), job_end);
        assert!(log.durable() < end_after_b);
        let job = log.take_flush(true).expect("b is unwritten");
        assert!(job.create.is_empty());
        assert_eq!(job.chunks.len(), 1);
        assert_eq!(job.chunks[0].offset.0, 0, "rewrites the partial page from its start");
        log.flush_done(job, FlushResult::Done);
        assert_eq!(log.durable(), end_after_b);
        assert!(log.take_flush(true).is_none());
    }

    // Goal: a failed fdatasync poisons the log: durable never moves again and appends are
    // refused. A lack of space is retried and clears on success.
    #[test]
    fn failures_refuse_appends() {
        let mut log = SegmentLog::open(config(), SegmentId(1), SegmentOffset(0), true);
        log.append(RecordKind::LwwPut, &body("a")).unwrap();
        let job = log.take_flush(true).unwrap();
        assert!(!log.flush_done(job, FlushResult::NoSpace("ENOSPC".into())));
        assert!(matches!(
            log.append(RecordKind::LwwPut, &body("b")),
            Err(AppendError::Unavailable(LogFailure::Full(_)))
        ));
        let job = log.take_flush(true).expect("the retry");
        assert_eq!(job.create, vec![SegmentId(1)], "creation is retried");
        assert!(log.flush_done(job, FlushResult::Done));
        assert!(log.writable().is_ok());
        log.append(RecordKind::LwwPut, &body("b")).unwrap();
        let job = log.take_flush(true).unwrap();
        let durable_before = log.durable();
        assert!(!log.flush_done(job, FlushResult::Failed("EIO".into())));
        assert_eq!(log.durable(), durable_before);
        assert!(matches!(
            log.append(RecordKind::LwwPut, &body("c")),
            Err(AppendError::Unavailable(LogFailure::Failed(_)))
        ));
        assert!(log.take_flush(true).is_none(), "a poisoned log never claims durability again");
    }

    // Goal: the log rolls to a new segment when a record does not fit, and a record larger
    // than a segment is refused. Method: append until the segment id changes.
    #[test]
    fn rolls_and_refuses_oversized() {
        let mut log = SegmentLog::open(config(), SegmentId(1), SegmentOffset(0), true);
        let mut last = SegmentId(1);
        for index in 0..2_000 {
            let key = format!("key-{index}");
            let (segment, offset, framed) = log.append(RecordKind::LwwPut, &body(&key)).unwrap();
            assert!(offset.0 + framed <= config().segment_bytes);
            last = segment;
        }
        assert!(last > SegmentId(1));
        let job = log.take_flush(true).unwrap();
        assert_eq!(job.create.len() as u64, last.0);
        let huge = vec![0u8; config().segment_bytes as usize];
        let result = log.append(RecordKind::LwwPut, &RecordBody { value: &huge, ..body("h") });
        assert!(matches!(result, Err(AppendError::TooLarge { .. })));
    }
}
