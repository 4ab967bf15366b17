//! Start-up of one shard's log: recovery of its own directory, or, after a change of shard
//! count, resharding from every directory of the previous generation. Runs on the shard's
//! thread before anything listens, with blocking file IO (nothing else runs on the shard yet).
//!
//! Segments are mapped read-only (memmap2) one at a time and read in place: the heap grows by
//! the recovered state (`ShardData`) and the record index, never by the size of the segments.
//! Every record goes through the storage crate's validation; a torn tail is cut (and the cut
//! logged), a corrupt record in the middle stops the start with file and offset (or, with
//! `--repair`, is cut there too, logged).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use shardgrid_shards::{PartitionId, PartitionTable, ShardId};
use shardgrid_storage::compaction::SegmentTable;
use shardgrid_storage::format::{SegmentHeader, SEGMENT_BYTES_ALIGN};
use shardgrid_storage::log::{FlushJob, FlushResult};
use shardgrid_storage::{LogConfig, LogRecovery, RecordKind, RecordView, SegmentId, SegmentLog, SegmentOffset};

use super::keys::KeyIndex;
use super::{shard_dir, sync_dir, Sources, StorageError, StoragePlan};
use crate::limits::LOG_FLUSH_BYTES;
use crate::model::{LwwRecord, OrRecord, Timestamp, ValueBytes};
use crate::shard::{Change, ShardData};

/// A shard's log, recovered and ready to append to.
pub struct Recovered {
    pub log: SegmentLog,
    pub keys: KeyIndex,
    pub table: SegmentTable,
    pub dir: PathBuf,
    pub summary: RecoverySummary,
}

/// What recovery did, for the log line an operator reads.
#[derive(Clone, Debug, Default)]
pub struct RecoverySummary {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    /// Records copied in from the previous generation (resharding).
    pub records_taken_over: u64,
    pub elapsed_ms: u64,
}

/// The segment files of a shard directory, ascending. Files that are not segments are left
/// alone (and named in a warning).
pub fn list_segments(dir: &Path) -> Result<BTreeMap<SegmentId, PathBuf>, StorageError> {
    let mut segments = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(segments),
        Err(error) => return Err(StorageError::io("list", dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| StorageError::io("list", dir, error))?;
        let name = entry.file_name();
        match name.to_str().and_then(SegmentId::parse_file_name) {
            Some(segment) => {
                segments.insert(segment, entry.path());
            }
            None => tracing::warn!(file = %entry.path().display(), "not a segment file; ignored"),
        }
    }
    Ok(segments)
}

/// A read-only mapping of a whole segment file.
fn map_segment(path: &Path) -> Result<Option<memmap2::Mmap>, StorageError> {
    let file = File::open(path).map_err(|error| StorageError::io("open", path, error))?;
    let length = file.metadata().map_err(|error| StorageError::io("stat", path, error))?.len();
    if length == 0 {
        return Ok(None);
    }
    // SAFETY: nobody writes the file while it is mapped: this process holds the data
    // directory's lock, and this shard, the only writer of its log, writes nothing before
    // recovery ends; the previous generation is never written again.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|error| StorageError::io("map", path, error))?;
    // Read once front to back; a hint only.
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Some(map))
}

/// Recovers (or reshards into) shard `shard`'s log and replays every record into `data`.
pub fn recover_shard(
    plan: &StoragePlan,
    shard: ShardId,
    partitions: &PartitionTable,
    data: &mut ShardData,
    wall_ms: u64,
) -> Result<Recovered, StorageError> {
    let started = Instant::now();
    let dir = shard_dir(&plan.data_dir, plan.generation, shard.0);
    let config = LogConfig {
        segment_bytes: plan.disk.segment_bytes,
        shard: shard.0,
        shard_count: plan.shard_count,
        generation: plan.generation,
    };
    let mut keys = KeyIndex::default();
    let mut table = SegmentTable::default();
    let mut summary = RecoverySummary::default();
    let log = match plan.sources {
        Sources::SameLayout => {
            recover_own(plan, shard, partitions, &dir, config, data, &mut keys, &mut table, &mut summary, wall_ms)?
        }
        Sources::Reshard { from_generation, from_shard_count } => {
            let mut log = SegmentLog::open(config, SegmentId(1), SegmentOffset(0), true);
            let mut files =
                BlockingFiles { dir: dir.clone(), segment_bytes: config.segment_bytes, files: BTreeMap::new() };
            for old_shard in 0..from_shard_count {
                let old_dir = shard_dir(&plan.data_dir, from_generation, old_shard);
                take_over(
                    plan,
                    shard,
                    partitions,
                    &old_dir,
                    &mut log,
                    &mut files,
                    data,
                    &mut keys,
                    &mut table,
                    &mut summary,
                    wall_ms,
                )?;
            }
            files.flush(&mut log, true)?;
            log
        }
    };
    // Replay left the sync indexes (Merkle leaves, change order) alone; build them once from
    // the recovered state.
    let mut rebuild = data.begin_sync_rebuild();
    while !data.sync_rebuild_step(&mut rebuild, usize::MAX, wall_ms) {}
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Recovered { log, keys, table, dir, summary })
}

/// Recovers the shard's own directory (same layout as last run).
#[allow(clippy::too_many_arguments)] // one call site; the parts are recovery's own state
fn recover_own(
    plan: &StoragePlan,
    shard: ShardId,
    partitions: &PartitionTable,
    dir: &Path,
    config: LogConfig,
    data: &mut ShardData,
    keys: &mut KeyIndex,
    table: &mut SegmentTable,
    summary: &mut RecoverySummary,
    wall_ms: u64,
) -> Result<SegmentLog, StorageError> {
    let segments = list_segments(dir)?;
    let mut recovery = LogRecovery::new(plan.disk.repair);
    for (segment, path) in &segments {
        let map = map_segment(path)?;
        let image: &[u8] = map.as_deref().unwrap_or(&[]);
        let mut foreign = None;
        recovery
            .segment(*segment, image, |offset, record| {
                if partitions.owner(PartitionId(record.partition)) != shard {
                    foreign.get_or_insert((offset, record.partition));
                    return;
                }
                replay(record, *segment, data, keys, table, wall_ms);
            })
            .map_err(|corrupt| StorageError::Corrupt {
                shard: shard.to_string(),
                path: segments.get(&corrupt.segment).cloned().unwrap_or_else(|| dir.join(corrupt.segment.file_name())),
                offset: corrupt.offset.0,
                reason: corrupt.reason.to_string(),
                next_valid: format!("{} at offset {}", corrupt.next_valid_segment, corrupt.next_valid_offset),
            })?;
        if let Some((offset, partition)) = foreign {
            return Err(StorageError::ForeignPartition {
                shard: shard.to_string(),
                path: path.clone(),
                offset: offset.0,
                partition,
            });
        }
        summary.segments += 1;
        summary.bytes += image.len() as u64;
    }
    let end = recovery.finish();
    summary.records = end.records;
    if let Some(cut) = &end.cut {
        let path = dir.join(cut.segment.file_name());
        if cut.discarded_valid_records {
            tracing::warn!(%shard, file = %path.display(), offset = cut.offset.0, reason = %cut.reason, "--repair: cut the log at a corrupt record; the records after it are discarded");
        } else {
            tracing::warn!(%shard, file = %path.display(), offset = cut.offset.0, reason = %cut.reason, "cut a torn tail (a write the crash interrupted; never acknowledged as persisted)");
        }
    }
    for segment in &end.discarded {
        let path = dir.join(segment.file_name());
        tracing::warn!(%shard, file = %path.display(), "removing a segment past the cut");
        std::fs::remove_file(&path).map_err(|error| StorageError::io("remove", &path, error))?;
    }
    if !end.discarded.is_empty() {
        sync_dir(dir)?;
    }
    let next_segment = end.highest.map_or(SegmentId(1), SegmentId::next);
    let Some((active, recovered)) = end.active else {
        return Ok(SegmentLog::open(config, next_segment, SegmentOffset(0), true));
    };
    let path = dir.join(active.file_name());
    let file =
        File::options().read(true).write(true).open(&path).map_err(|error| StorageError::io("open", &path, error))?;
    if recovered.dirty_after_end {
        zero_after(&file, &path, recovered.end.0)?;
    }
    let mut header_bytes = [0u8; 64];
    file.read_exact_at(&mut header_bytes, 0).map_err(|error| StorageError::io("read", &path, error))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|error| StorageError::Layout { path: path.clone(), reason: error.to_string() })?;
    let length = file.metadata().map_err(|error| StorageError::io("stat", &path, error))?.len();
    if header.segment_bytes != config.segment_bytes || length != config.segment_bytes {
        // --segment-bytes changed: this segment stays as it is; appends go to a new one.
        return Ok(SegmentLog::open(config, next_segment, SegmentOffset(0), true));
    }
    let mut log = SegmentLog::open(config, active, recovered.end, false);
    let from = log.resume_from().0;
    let mut partial = vec![0u8; (recovered.end.0 - from) as usize];
    file.read_exact_at(&mut partial, from).map_err(|error| StorageError::io("read", &path, error))?;
    log.resume(&partial);
    Ok(log)
}

/// Zeroes every non-zero byte after `end` (what a torn write or a repair left), so the bytes
/// appended there later are never followed by stale ones; synced before anything else.
fn zero_after(file: &File, path: &Path, end: u64) -> Result<(), StorageError> {
    let length = file.metadata().map_err(|error| StorageError::io("stat", path, error))?.len();
    let zeros = vec![0u8; SEGMENT_BYTES_ALIGN as usize * 64];
    let mut offset = end;
    while offset < length {
        let piece = zeros.len().min((length - offset) as usize);
        file.write_all_at(&zeros[..piece], offset)
            .map_err(|error| StorageError::io("zero the cut tail of", path, error))?;
        offset += piece as u64;
    }
    file.sync_data().map_err(|error| StorageError::io("sync", path, error))
}

/// Copies the records of the partitions `shard` now owns from one old shard directory into
/// the new log, replaying them as they go.
#[allow(clippy::too_many_arguments)] // one call site; the parts are recovery's own state
fn take_over(
    plan: &StoragePlan,
    shard: ShardId,
    partitions: &PartitionTable,
    old_dir: &Path,
    log: &mut SegmentLog,
    files: &mut BlockingFiles,
    data: &mut ShardData,
    keys: &mut KeyIndex,
    table: &mut SegmentTable,
    summary: &mut RecoverySummary,
    wall_ms: u64,
) -> Result<(), StorageError> {
    let segments = list_segments(old_dir)?;
    let mut recovery = LogRecovery::new(plan.disk.repair);
    for (segment, path) in &segments {
        let map = map_segment(path)?;
        let image: &[u8] = map.as_deref().unwrap_or(&[]);
        let mut failure = None;
        recovery
            .segment(*segment, image, |_, record| {
                if failure.is_some() || partitions.owner(PartitionId(record.partition)) != shard {
                    return;
                }
                match log.append_framed(record.framed) {
                    Ok((new_segment, _, _)) => {
                        replay(record, new_segment, data, keys, table, wall_ms);
                        summary.records_taken_over += 1;
                    }
                    Err(error) => {
                        failure = Some(StorageError::Layout {
                            path: path.clone(),
                            reason: format!("cannot take over a record: {error}"),
                        })
                    }
                }
                if log.unwritten_bytes() >= LOG_FLUSH_BYTES {
                    if let Err(error) = files.flush(log, false) {
                        failure = Some(error);
                    }
                }
            })
            .map_err(|corrupt| StorageError::Corrupt {
                shard: format!("{shard} (resharding)"),
                path: segments
                    .get(&corrupt.segment)
                    .cloned()
                    .unwrap_or_else(|| old_dir.join(corrupt.segment.file_name())),
                offset: corrupt.offset.0,
                reason: corrupt.reason.to_string(),
                next_valid: format!("{} at offset {}", corrupt.next_valid_segment, corrupt.next_valid_offset),
            })?;
        if let Some(error) = failure {
            return Err(error);
        }
        summary.segments += 1;
        summary.bytes += image.len() as u64;
    }
    let end = recovery.finish();
    summary.records += end.records;
    if let Some(cut) = end.cut {
        tracing::warn!(%shard, file = %old_dir.join(cut.segment.file_name()).display(), offset = cut.offset.0, reason = %cut.reason, "resharding: the old log ends here (torn tail or --repair cut)");
    }
    Ok(())
}

/// Installs one recovered record into `data` and accounts for it in the index.
pub fn replay(
    record: RecordView<'_>,
    segment: SegmentId,
    data: &mut ShardData,
    keys: &mut KeyIndex,
    table: &mut SegmentTable,
    wall_ms: u64,
) {
    let body = record.body;
    let framed = record.framed.len() as u64;
    let timestamp = Timestamp::new(body.timestamp.millis(), body.timestamp.counter(), body.timestamp.node_id());
    let hash = keys.hash(record.kind, body.map(), body.key(), body.tag());
    match record.kind {
        RecordKind::LwwPut => {
            let value = Some(ValueBytes::from(body.value()));
            let current = data.install(
                body.map(),
                body.key(),
                Change::Put(LwwRecord { value, timestamp, ttl_ms: body.ttl_ms() }),
                wall_ms,
            );
            keys.record(table, hash, segment, framed, None, current);
        }
        RecordKind::LwwTombstone => {
            let millis = timestamp.millis;
            let current = data.install(
                body.map(),
                body.key(),
                Change::Remove(LwwRecord { value: None, timestamp, ttl_ms: None }),
                wall_ms,
            );
            keys.record(table, hash, segment, framed, Some(millis), current);
        }
        RecordKind::OrAdd => {
            let value = ValueBytes::from(body.value());
            let record = OrRecord { value, timestamp, tag: body.tag().to_string(), ttl_ms: body.ttl_ms() };
            let current = data.install(body.map(), body.key(), Change::OrAdd(record), wall_ms);
            keys.record(table, hash, segment, framed, None, current);
        }
        RecordKind::OrRemove => {
            data.install(body.map(), body.key(), Change::OrRemove { tag: body.tag().to_string() }, wall_ms);
            let added = keys.hash(RecordKind::OrAdd, body.map(), body.key(), body.tag());
            keys.kill(table, added);
            keys.record_kept(table, segment, framed);
        }
        // Not written by this version: kept on disk as they are, for the version that reads them.
        RecordKind::CounterState | RecordKind::Metadata => keys.record_kept(table, segment, framed),
    }
}

/// Flush jobs carried out with blocking file IO, for start-up (resharding writes the new log
/// before anything else runs on the shard).
struct BlockingFiles {
    dir: PathBuf,
    segment_bytes: u64,
    files: BTreeMap<SegmentId, File>,
}

impl BlockingFiles {
    /// Writes everything the log holds; with `sync`, makes it durable.
    fn flush(&mut self, log: &mut SegmentLog, sync: bool) -> Result<(), StorageError> {
        while let Some(job) = log.take_flush(sync) {
            let result = self.run(&job);
            let failure = match &result {
                FlushResult::Done => None,
                FlushResult::NoSpace(reason) | FlushResult::Failed(reason) => Some(reason.clone()),
            };
            log.flush_done(job, result);
            if let Some(reason) = failure {
                return Err(StorageError::Layout {
                    path: self.dir.clone(),
                    reason: format!("writing the resharded log failed: {reason}"),
                });
            }
            if !log.has_work(sync) {
                break;
            }
        }
        Ok(())
    }

    fn run(&mut self, job: &FlushJob) -> FlushResult {
        for segment in &job.create {
            let path = self.dir.join(segment.file_name());
            let file = match File::options().read(true).write(true).create(true).truncate(false).open(&path) {
                Ok(file) => file,
                Err(error) => return FlushResult::Failed(format!("create {}: {error}", path.display())),
            };
            // SAFETY: fallocate on a descriptor owned by `file`; no memory is passed.
            let result = unsafe {
                libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, self.segment_bytes as libc::off_t)
            };
            if result != 0 {
                return FlushResult::NoSpace(format!(
                    "preallocate {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            if let Err(error) = sync_dir(&self.dir) {
                return FlushResult::Failed(error.to_string());
            }
            self.files.insert(*segment, file);
        }
        for chunk in &job.chunks {
            let Some(file) = self.files.get(&chunk.segment) else {
                return FlushResult::Failed(format!("segment {} has no file", chunk.segment));
            };
            if let Err(error) = file.write_all_at(&chunk.bytes, chunk.offset.0) {
                return FlushResult::Failed(format!("write {}: {error}", chunk.segment));
            }
        }
        for segment in &job.sync {
            let Some(file) = self.files.get(segment) else {
                return FlushResult::Failed(format!("segment {segment} has no file"));
            };
            if let Err(error) = file.sync_data() {
                return FlushResult::Failed(format!("fdatasync {segment}: {error}"));
            }
        }
        FlushResult::Done
    }
}
