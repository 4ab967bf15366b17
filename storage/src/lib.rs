//! shardgrid-storage: the per-shard durable segment log, without IO.
//!
//! Each shard owns a log: a directory of fixed-size, zero-preallocated segment files holding
//! framed records (header with length, CRC32C and kind; an rkyv-archived body). This crate
//! owns the format (`format`, `schema`, drawn byte by byte in `storage/FORMAT.md`), the
//! append side with its group-commit bookkeeping (`log`: appends go into a buffer; flush jobs
//! say what to write and which segments to fdatasync; positions say what is durable), the
//! recovery verdict over segment images (`recovery`), compaction planning (`compaction`) and a
//! simulated disk that keeps the written image apart from the durable one (`sim`), so tests
//! can crash at any write.
//!
//! It deliberately leaves out files, io_uring, timers and tasks (the `shardgrid` crate's
//! `persist` module drives this with glommio), and what records mean: it knows no CRDT merge
//! rule; the caller decides which records are live. It never spawns a task or reads the clock:
//! time is an argument.

pub mod compaction;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
pub mod recovery;
pub mod schema;
pub mod sim;

pub use format::{Layout, RecordEncoder, RecordKind, RecordView, SegmentHeader};
pub use log::{AppendError, Chunk, FlushJob, FsyncPolicy, LogConfig, LogFailure, SegmentLog};
pub use recovery::{CorruptLog, Cut, LogRecovery, RecoveryEnd};
pub use schema::{RecordBody, StoredBody, StoredTimestamp};

/// The number of one segment file of one shard's log; segments are numbered upwards from 1
/// and never reused. The file is `<16 hex digits>.seg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SegmentId(pub u64);

impl SegmentId {
    pub fn next(self) -> SegmentId {
        SegmentId(self.0 + 1)
    }

    /// The segment's file name.
    pub fn file_name(self) -> String {
        format!("{:016x}.seg", self.0)
    }

    /// The segment id of a file name made by `file_name`.
    pub fn parse_file_name(name: &str) -> Option<SegmentId> {
        let hex = name.strip_suffix(".seg")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(SegmentId)
    }
}

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file_name())
    }
}

/// A byte offset from the start of one segment file (not from the start of the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SegmentOffset(pub u64);

impl std::fmt::Display for SegmentOffset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A point in one shard's log: segment, then offset. Positions only grow as the log is
/// appended to, so "everything before P is durable" is one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub segment: SegmentId,
    pub offset: SegmentOffset,
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.segment, self.offset)
    }
}
