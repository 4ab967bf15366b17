//! shardgrid::persist: the disk backend at run time. It drives the storage crate's pure log
//! (`shardgrid_storage`) with files: the data directory and its layout (this module), recovery
//! and resharding at start-up (`recover`), the running per-shard store with its group commit
//! and compaction tasks (`store`), the record index that estimates what is live (`keys`), and
//! the durability notices shards send each other (`watch`).
//!
//! Data directory: `LOCK` (flock held for the life of the process), `LAYOUT` (generation and
//! shard count, replaced atomically) and `gen-<G>/shard-<i>/<segment>.seg`, one directory per
//! shard of the current generation. Another generation's directory is either an unfinished
//! reshard (newer) or one whose removal was interrupted (older): both are removed at start.
//!
//! It leaves out the format and the recovery verdict (storage crate) and what an op means
//! (`shard::data`): records are written from the `ChangeEvent`s `ShardData::apply` returns and
//! installed back with `ShardData::install`.

pub mod keys;
pub mod recover;
pub mod store;
pub mod watch;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use shardgrid_storage::format::LayoutError;
use shardgrid_storage::{FsyncPolicy, Layout};

pub use store::ShardStore;
pub use watch::{DurabilityWatch, Ticket};

/// How segment files are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageIo {
    /// O_DIRECT through io_uring from aligned buffers; the page cache is bypassed.
    Dma,
    /// Ordinary buffered writes through io_uring.
    Buffered,
}

/// The disk backend's options (`--fsync`, `--repair`, `--segment-bytes`, ...).
#[derive(Clone, Debug)]
pub struct DiskConfig {
    pub fsync: FsyncPolicy,
    pub repair: bool,
    pub segment_bytes: u64,
    pub io: StorageIo,
    pub compaction_live_fraction: f64,
    pub tombstone_grace_ms: u64,
}

/// Errors of the disk backend. Each names the file an operator would look at.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("data directory {path} is in use by another shardgrid process (flock on its LOCK file)")]
    Locked { path: PathBuf },
    #[error("{path}: {reason}; refusing to start rather than guess the layout")]
    Layout { path: PathBuf, reason: String },
    #[error("{shard}: corrupt record in {path} at offset {offset}: {reason}; valid records follow ({next_valid}). Nothing was changed. Start with --repair to cut the log at offset {offset} (the records after it are discarded)")]
    Corrupt { shard: String, path: PathBuf, offset: u64, reason: String, next_valid: String },
    #[error("{path} at offset {offset}: a record of partition {partition}, which {shard} does not own, is in its log")]
    ForeignPartition { shard: String, path: PathBuf, offset: u64, partition: u16 },
}

impl StorageError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
        StorageError::Io { op, path: path.to_path_buf(), source }
    }
}

/// Where the shards read from at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sources {
    /// The same shard count as the recorded layout: each shard recovers its own directory.
    SameLayout,
    /// A different shard count: every new shard reads every directory of generation `from`
    /// and takes the records of the partitions it now owns into the new generation.
    Reshard { from_generation: u32, from_shard_count: u16 },
}

/// What the shards do at start-up, decided once on the main thread. Holds the data
/// directory's lock for the life of the process.
#[derive(Debug)]
pub struct StoragePlan {
    pub data_dir: PathBuf,
    pub disk: DiskConfig,
    /// The generation the shards write.
    pub generation: u32,
    pub shard_count: u16,
    pub sources: Sources,
    _lock: File,
}

pub fn generation_dir(data_dir: &Path, generation: u32) -> PathBuf {
    data_dir.join(format!("gen-{generation:08}"))
}

pub fn shard_dir(data_dir: &Path, generation: u32, shard: u16) -> PathBuf {
    generation_dir(data_dir, generation).join(format!("shard-{shard:04}"))
}

fn layout_path(data_dir: &Path) -> PathBuf {
    data_dir.join("LAYOUT")
}

/// Makes a directory entry change durable.
pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|file| file.sync_all()).map_err(|error| StorageError::io("sync directory", dir, error))
}

/// Replaces `LAYOUT` atomically: a temporary file, synced, renamed over it, directory synced.
fn write_layout(data_dir: &Path, layout: Layout) -> Result<(), StorageError> {
    let temporary = data_dir.join("LAYOUT.tmp");
    let mut file = File::create(&temporary).map_err(|error| StorageError::io("create", &temporary, error))?;
    file.write_all(layout.encode().as_bytes()).map_err(|error| StorageError::io("write", &temporary, error))?;
    file.sync_all().map_err(|error| StorageError::io("sync", &temporary, error))?;
    let path = layout_path(data_dir);
    std::fs::rename(&temporary, &path).map_err(|error| StorageError::io("rename into place", &path, error))?;
    sync_dir(data_dir)
}

/// Takes the data directory's lock, reads (or first writes) its layout, clears what an
/// interrupted start left, and creates this generation's shard directories.
pub fn prepare(data_dir: &Path, disk: DiskConfig, shard_count: u16) -> Result<StoragePlan, StorageError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|error| StorageError::io("create the data directory", data_dir, error))?;
    let lock_path = data_dir.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| StorageError::io("open", &lock_path, error))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StorageError::Locked { path: data_dir.to_path_buf() });
    }
    let path = layout_path(data_dir);
    let recorded =
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Layout::decode(&text).map_err(|reason: LayoutError| StorageError::Layout {
                path: path.clone(),
                reason: reason.to_string(),
            })?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(StorageError::io("read", &path, error)),
        };
    let generations = list_generations(data_dir)?;
    let (generation, sources) = match recorded {
        None => {
            if !generations.is_empty() {
                return Err(StorageError::Layout { path, reason: "missing, but segment directories exist".into() });
            }
            write_layout(data_dir, Layout { generation: 1, shard_count })?;
            (1, Sources::SameLayout)
        }
        Some(layout) if layout.shard_count == shard_count => (layout.generation, Sources::SameLayout),
        Some(layout) => {
            let next = layout
                .generation
                .checked_add(1)
                .ok_or_else(|| StorageError::Layout { path: path.clone(), reason: "generation overflow".into() })?;
            (next, Sources::Reshard { from_generation: layout.generation, from_shard_count: layout.shard_count })
        }
    };
    let keep_from = match sources {
        Sources::SameLayout => generation,
        Sources::Reshard { from_generation, .. } => from_generation,
    };
    for stale in generations.into_iter().filter(|found| *found != keep_from) {
        let dir = generation_dir(data_dir, stale);
        tracing::warn!(dir = %dir.display(), "removing a generation an interrupted start left behind");
        std::fs::remove_dir_all(&dir).map_err(|error| StorageError::io("remove", &dir, error))?;
    }
    for shard in 0..shard_count {
        let dir = shard_dir(data_dir, generation, shard);
        std::fs::create_dir_all(&dir).map_err(|error| StorageError::io("create", &dir, error))?;
    }
    sync_dir(&generation_dir(data_dir, generation))?;
    sync_dir(data_dir)?;
    Ok(StoragePlan { data_dir: data_dir.to_path_buf(), disk, generation, shard_count, sources, _lock: lock })
}

/// The generations present in the data directory, ascending.
fn list_generations(data_dir: &Path) -> Result<Vec<u32>, StorageError> {
    let entries = std::fs::read_dir(data_dir).map_err(|error| StorageError::io("list", data_dir, error))?;
    let mut generations = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StorageError::io("list", data_dir, error))?;
        let name = entry.file_name();
        if let Some(generation) =
            name.to_str().and_then(|name| name.strip_prefix("gen-")).and_then(|digits| digits.parse::<u32>().ok())
        {
            generations.push(generation);
        }
    }
    generations.sort();
    Ok(generations)
}

/// Called once every shard has recovered: after a reshard, records the new layout (the switch
/// point: before it, a crash redoes the reshard from the old generation; after it, the new
/// generation is the data) and removes the old generation.
pub fn commit(plan: &StoragePlan) -> Result<(), StorageError> {
    let Sources::Reshard { from_generation, from_shard_count } = plan.sources else { return Ok(()) };
    write_layout(&plan.data_dir, Layout { generation: plan.generation, shard_count: plan.shard_count })?;
    let old = generation_dir(&plan.data_dir, from_generation);
    tracing::info!(
        from_shards = from_shard_count,
        to_shards = plan.shard_count,
        generation = plan.generation,
        "layout recorded after resharding"
    );
    std::fs::remove_dir_all(&old).map_err(|error| StorageError::io("remove", &old, error))?;
    sync_dir(&plan.data_dir)
}

/// Bytes a record needs beyond its strings and value: the record header, the archive's fixed
/// part, alignment. Generous on purpose: it only decides what is refused as too large.
const RECORD_OVERHEAD_BYTES_MAX: u64 = 256;

/// Whether the record `op` would write fits in a segment (`framed_bytes_max`); an op whose
/// record would not is refused before it is applied.
pub fn record_fits(op: &crate::protocol::ClientOp, framed_bytes_max: u64) -> bool {
    use crate::protocol::OpKind;
    let (value, tag, node_id) = match &op.kind {
        OpKind::Put(record) | OpKind::Remove { record: Some(record) } => {
            (record.value.as_ref().map_or(0, |value| value.len()), 0, record.timestamp.node_id.len())
        }
        OpKind::OrAdd(record) => (record.value.len(), record.tag.len(), record.timestamp.node_id.len()),
        OpKind::OrRemove { tag } => (0, tag.len(), 0),
        OpKind::Remove { record: None } | OpKind::Noop => (0, 0, 64),
    };
    let bytes = RECORD_OVERHEAD_BYTES_MAX + (op.map_name.len() + op.key.len() + value + tag + node_id) as u64;
    bytes <= framed_bytes_max
}
