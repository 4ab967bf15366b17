//! The running log of one shard: appends from the write path, the group-commit flusher task,
//! and the compaction task. Lives on the partition's owner shard, behind an `Rc` in its `Node`.
//!
//! Commit path: `Node::apply_local` applies a batch to `ShardData` and appends one record per
//! state change (`append_change`; no await, no IO). A batch that asked for `PERSISTED` takes a
//! `Ticket` for the log's end position; the requesting shard waits on its `DurabilityWatch`
//! until this shard's flusher reports an fdatasync covering that position (`Hop::Durable`).
//! So a `PERSISTED` acknowledgement always follows an fdatasync covering its records on every
//! shard involved, and `APPLIED`/`MEMORY` acknowledgements never wait for the disk.
//!
//! The flusher writes what was appended and fdatasyncs per `--fsync`: at once (`always`), on
//! its timer or as soon as a `PERSISTED` write waits (`batch:<ms>`), or writes on a short timer
//! without syncing (`never`). One flush at a time: appends made during a flush join the next.
//!
//! Compaction rewrites the emptiest sealed segment below the live threshold a bounded number
//! of bytes per tick: records still current in `ShardData` are appended again (verbatim), the
//! rest dropped, expired tombstones dropped once no older record of their key is on disk. The
//! victim is deleted only after an fdatasync covers the copies.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use futures_lite::FutureExt;
use glommio::io::{BufferedFile, DmaFile, OpenOptions};
use shardgrid_shards::ShardId;
use shardgrid_storage::compaction::{CompactionPolicy, SegmentTable};
use shardgrid_storage::format::{decode_record, RecordAt, SegmentHeader, SEGMENT_BYTES_ALIGN, SEGMENT_HEADER_BYTES};
use shardgrid_storage::log::{FlushJob, FlushResult};
use shardgrid_storage::{
    FsyncPolicy, LogFailure, LogPosition, RecordBody, RecordKind, SegmentId, SegmentLog, SegmentOffset, StoredTimestamp,
};

use super::keys::KeyIndex;
use super::recover::Recovered;
use super::watch::{Notify, Ticket};
use super::{DiskConfig, StorageIo};
use crate::limits::{
    COMPACTION_BYTES_PER_TICK, COMPACTION_TICK_MS, LOG_BUFFER_BYTES_MAX, LOG_FLUSH_BYTES, STORAGE_RETRY_MS,
};
use crate::metrics::Histogram;
use crate::node::{wall_ms, Hop, Node};
use crate::shard::{Change, ChangeEvent};

/// Counters of one shard's log. Only the owning shard touches them.
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub flushes: u64,
    pub fsyncs: u64,
    pub flush_failures: u64,
    pub segments_compacted: u64,
    pub records_copied: u64,
    pub records_dropped: u64,
    pub tombstones_dropped: u64,
}

impl StorageStats {
    pub fn add(&mut self, other: &StorageStats) {
        self.records_appended += other.records_appended;
        self.bytes_appended += other.bytes_appended;
        self.flushes += other.flushes;
        self.fsyncs += other.fsyncs;
        self.flush_failures += other.flush_failures;
        self.segments_compacted += other.segments_compacted;
        self.records_copied += other.records_copied;
        self.records_dropped += other.records_dropped;
        self.tombstones_dropped += other.tombstones_dropped;
    }
}

/// An open segment file.
enum SegmentFile {
    Dma(DmaFile),
    Buffered(BufferedFile),
}

/// Compaction's place in its current victim.
struct Victim {
    segment: SegmentId,
    map: memmap2::Mmap,
    cursor: SegmentOffset,
    /// Keys whose entry pointed into the victim when one of their records was dropped.
    maybe_stale: Vec<super::keys::KeyHash>,
}

/// See the module doc.
pub struct ShardStore {
    pub shard: ShardId,
    dir: PathBuf,
    disk: DiskConfig,
    log: RefCell<SegmentLog>,
    keys: RefCell<KeyIndex>,
    table: RefCell<SegmentTable>,
    files: RefCell<AHashMap<SegmentId, Rc<SegmentFile>>>,
    /// Wakes the flusher: it has work again, something urgent came up, or the close.
    wake: Notify,
    /// The flusher sleeps because there was nothing to write (appends must wake it).
    flusher_idle: Cell<bool>,
    /// A write or compaction waits on the next flush: do not wait for the timer.
    urgent: Cell<bool>,
    /// Compaction needs an fdatasync even under `--fsync never`.
    force_sync: Cell<bool>,
    /// Per shard, the highest position a write from there waits to see durable.
    wants: RefCell<Vec<Option<LogPosition>>>,
    /// Writers waiting for the unwritten buffer to shrink.
    room: RefCell<Vec<std::task::Waker>>,
    closing: Cell<bool>,
    closed: Notify,
    victim: RefCell<Option<Victim>>,
    stats: Cell<StorageStats>,
    /// Latency of each fdatasync of a segment file.
    fsync_seconds: RefCell<Histogram>,
}

/// An error's errno, through glommio's wrapping.
fn errno_of(error: glommio::GlommioError<()>) -> (Option<i32>, String) {
    let text = error.to_string();
    let errno = match &error {
        glommio::GlommioError::IoError(source) | glommio::GlommioError::EnhancedIoError { source, .. } => {
            source.raw_os_error()
        }
        _ => None,
    };
    (errno, text)
}

fn is_no_space(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG))
}

impl ShardStore {
    pub fn new(shard: ShardId, shard_count: usize, disk: DiskConfig, recovered: Recovered) -> ShardStore {
        ShardStore {
            shard,
            dir: recovered.dir,
            disk,
            log: RefCell::new(recovered.log),
            keys: RefCell::new(recovered.keys),
            table: RefCell::new(recovered.table),
            files: RefCell::new(AHashMap::new()),
            wake: Notify::default(),
            flusher_idle: Cell::new(false),
            urgent: Cell::new(false),
            force_sync: Cell::new(false),
            wants: RefCell::new(vec![None; shard_count]),
            room: RefCell::new(Vec::new()),
            closing: Cell::new(false),
            closed: Notify::default(),
            victim: RefCell::new(None),
            stats: Cell::new(StorageStats::default()),
            fsync_seconds: RefCell::new(Histogram::EMPTY),
        }
    }

    fn bump(&self, update: impl FnOnce(&mut StorageStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    pub fn stats(&self) -> StorageStats {
        self.stats.get()
    }

    pub fn fsync_histogram(&self) -> Histogram {
        *self.fsync_seconds.borrow()
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.disk.fsync
    }

    /// Whether writes are accepted now; the reason they are not.
    pub fn writable(&self) -> Result<(), Arc<str>> {
        self.log.borrow().writable().map_err(|failure| Arc::from(failure.to_string()))
    }

    /// Framed bytes of the largest record a segment holds.
    pub fn framed_bytes_max(&self) -> u64 {
        self.log.borrow().framed_bytes_max()
    }

    /// Waits while the unwritten buffer is over its bound (a disk slower than the writes).
    pub async fn wait_for_room(&self) {
        std::future::poll_fn(|context| {
            if self.log.borrow().unwritten_bytes() <= LOG_BUFFER_BYTES_MAX || self.log.borrow().failure().is_some() {
                return std::task::Poll::Ready(());
            }
            self.room.borrow_mut().push(context.waker().clone());
            self.urgent.set(true);
            self.wake.notify();
            std::task::Poll::Pending
        })
        .await
    }

    /// Appends the record of one state change. `partition` is the key's. Infallible for a
    /// writable log and a record within `framed_bytes_max` (the caller checked both).
    pub fn append_change(&self, event: &ChangeEvent, partition: u16, wall_ms: u64) {
        let (kind, timestamp, ttl_ms, tag, value): (RecordKind, StoredTimestamp<'_>, Option<u64>, &str, &[u8]) =
            match &event.change {
                Change::Put(record) => (
                    RecordKind::LwwPut,
                    stored(&record.timestamp),
                    record.ttl_ms,
                    "",
                    record.value.as_deref().unwrap_or(&[]),
                ),
                Change::Remove(record) => (RecordKind::LwwTombstone, stored(&record.timestamp), None, "", &[]),
                Change::OrAdd(record) => (
                    RecordKind::OrAdd,
                    stored(&record.timestamp),
                    record.ttl_ms,
                    record.tag.as_str(),
                    &record.value[..],
                ),
                // An OR remove carries no timestamp of its own; it is stamped with the wall clock.
                Change::OrRemove { tag } => (
                    RecordKind::OrRemove,
                    StoredTimestamp { millis: wall_ms, counter: 0, node_id: "" },
                    None,
                    tag.as_str(),
                    &[],
                ),
            };
        let body = RecordBody { partition, map: &event.map, key: &event.key, timestamp, ttl_ms, tag, value };
        let (segment, _, framed) = self
            .log
            .borrow_mut()
            .append(kind, &body)
            .expect("the caller checked the log is writable and the record fits");
        {
            let mut keys = self.keys.borrow_mut();
            let mut table = self.table.borrow_mut();
            let hash = keys.hash(kind, &event.map, &event.key, tag);
            match kind {
                RecordKind::OrRemove => {
                    let added = keys.hash(RecordKind::OrAdd, &event.map, &event.key, tag);
                    keys.kill(&mut table, added);
                    keys.record_kept(&mut table, segment, framed);
                }
                RecordKind::LwwTombstone => {
                    keys.record(&mut table, hash, segment, framed, Some(body.timestamp.millis), true)
                }
                _ => keys.record(&mut table, hash, segment, framed, None, true),
            }
        }
        self.bump(|stats| {
            stats.records_appended += 1;
            stats.bytes_appended += framed;
        });
        let urgent = self.disk.fsync == FsyncPolicy::Always || self.log.borrow().unwritten_bytes() >= LOG_FLUSH_BYTES;
        if urgent {
            self.urgent.set(true);
        }
        // A busy flusher finds this append on its next round; only a sleeping one, or a
        // flush that should not wait for the timer, needs the wake-up (one per append is a
        // task switch per op at full load).
        if urgent || self.flusher_idle.get() {
            self.wake.notify();
        }
    }

    /// What a write from shard `requester` that asked for `PERSISTED` waits for, covering
    /// everything appended so far.
    pub fn ticket(&self, requester: ShardId) -> Ticket {
        if !self.disk.fsync.syncs() {
            return Ticket::Ready;
        }
        let log = self.log.borrow();
        if let Some(failure) = log.failure() {
            return Ticket::Failed(Arc::from(failure.to_string()));
        }
        let end = log.end_position();
        if end <= log.durable() {
            return Ticket::Ready;
        }
        drop(log);
        let mut wants = self.wants.borrow_mut();
        let want = &mut wants[requester.index()];
        *want = Some(want.map_or(end, |current| current.max(end)));
        self.urgent.set(true);
        self.wake.notify();
        Ticket::Wait(end)
    }

    /// Asks the flusher to make everything appended so far durable (also under `never`), and
    /// returns the position to wait for on this shard's own watch.
    fn request_sync(&self) -> LogPosition {
        let end = self.log.borrow().end_position();
        let mut wants = self.wants.borrow_mut();
        let want = &mut wants[self.shard.index()];
        *want = Some(want.map_or(end, |current| current.max(end)));
        self.force_sync.set(true);
        self.urgent.set(true);
        self.wake.notify();
        end
    }

    /// Stops the tasks after a final flush and fdatasync; returns once done.
    pub async fn close(&self) {
        self.closing.set(true);
        self.wake.notify();
        self.closed.wait().await;
    }

    async fn open_file(&self, segment: SegmentId, create: bool) -> Result<Rc<SegmentFile>, (Option<i32>, String)> {
        if let Some(file) = self.files.borrow().get(&segment) {
            return Ok(Rc::clone(file));
        }
        let path = self.dir.join(segment.file_name());
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create);
        let file = match self.disk.io {
            StorageIo::Dma => {
                let file = options.dma_open(&path).await.map_err(errno_of)?;
                if create {
                    file.pre_allocate(self.disk.segment_bytes, false).await.map_err(errno_of)?;
                }
                SegmentFile::Dma(file)
            }
            StorageIo::Buffered => {
                let file = options.buffered_open(&path).await.map_err(errno_of)?;
                if create {
                    file.pre_allocate(self.disk.segment_bytes, false).await.map_err(errno_of)?;
                }
                SegmentFile::Buffered(file)
            }
        };
        if create {
            let directory = glommio::io::Directory::open(&self.dir).await.map_err(errno_of)?;
            directory.sync().await.map_err(errno_of)?;
        }
        let file = Rc::new(file);
        self.files.borrow_mut().insert(segment, Rc::clone(&file));
        Ok(file)
    }

    /// Carries out one flush job with io_uring.
    async fn run_job(&self, job: &FlushJob) -> FlushResult {
        for segment in &job.create {
            if let Err((errno, text)) = self.open_file(*segment, true).await {
                let reason = format!("cannot create segment {}: {text}", self.dir.join(segment.file_name()).display());
                return if is_no_space(errno) { FlushResult::NoSpace(reason) } else { FlushResult::Failed(reason) };
            }
        }
        for chunk in &job.chunks {
            let file = match self.open_file(chunk.segment, false).await {
                Ok(file) => file,
                Err((_, text)) => return FlushResult::Failed(format!("cannot open segment {}: {text}", chunk.segment)),
            };
            let length = chunk.bytes.len();
            let written = match &*file {
                SegmentFile::Dma(file) => {
                    let aligned = (length as u64).div_ceil(SEGMENT_BYTES_ALIGN) * SEGMENT_BYTES_ALIGN;
                    let mut buffer = file.alloc_dma_buffer(aligned as usize);
                    buffer.as_bytes_mut()[..length].copy_from_slice(&chunk.bytes);
                    buffer.as_bytes_mut()[length..].fill(0);
                    file.write_at(buffer, chunk.offset.0).await.map(|written| written.min(length))
                }
                SegmentFile::Buffered(file) => file.write_at(chunk.bytes.clone(), chunk.offset.0).await,
            };
            match written {
                Ok(written) if written == length => {}
                Ok(written) => {
                    return FlushResult::Failed(format!(
                        "short write to segment {}: {written} of {length} bytes",
                        chunk.segment
                    ))
                }
                Err(error) => {
                    return FlushResult::Failed(format!("write to segment {} failed: {error}", chunk.segment))
                }
            }
        }
        for segment in &job.sync {
            let file = match self.open_file(*segment, false).await {
                Ok(file) => file,
                Err((_, text)) => return FlushResult::Failed(format!("cannot open segment {segment}: {text}")),
            };
            let started = Instant::now();
            let synced = match &*file {
                SegmentFile::Dma(file) => file.fdatasync().await,
                SegmentFile::Buffered(file) => file.fdatasync().await,
            };
            self.fsync_seconds.borrow_mut().record(started.elapsed());
            self.bump(|stats| stats.fsyncs += 1);
            if let Err(error) = synced {
                return FlushResult::Failed(format!("fdatasync of segment {segment} failed: {error}"));
            }
        }
        FlushResult::Done
    }

    /// One group commit, then the durability notices it allows.
    async fn flush_once(&self, node: &Node) {
        let sync = self.disk.fsync.syncs() || self.force_sync.get();
        let Some(job) = self.log.borrow_mut().take_flush(sync) else { return };
        self.urgent.set(false);
        if sync {
            self.force_sync.set(false);
        }
        let result = self.run_job(&job).await;
        if result != FlushResult::Done {
            tracing::error!(shard = %self.shard, ?result, "storage flush failed; writes are refused until it recovers");
            self.bump(|stats| stats.flush_failures += 1);
        }
        self.bump(|stats| stats.flushes += 1);
        self.log.borrow_mut().flush_done(job, result);
        for waker in std::mem::take(&mut *self.room.borrow_mut()) {
            waker.wake();
        }
        let notices = self.take_notices();
        for (target, hop) in notices {
            node.mesh().tell(target, hop).await;
        }
    }

    /// The `Hop::Durable` notices owed: to each shard whose wait is now satisfied, or will not
    /// be because the log failed.
    fn take_notices(&self) -> Vec<(ShardId, Hop)> {
        let log = self.log.borrow();
        let durable = log.durable();
        let failed = log.failure().map(|failure| (log.end_position(), Arc::<str>::from(failure.to_string())));
        let mut notices = Vec::new();
        for (index, want) in self.wants.borrow_mut().iter_mut().enumerate() {
            let Some(position) = *want else { continue };
            if position <= durable || failed.is_some() {
                *want = None;
                notices
                    .push((ShardId(index as u16), Hop::Durable { owner: self.shard, durable, failed: failed.clone() }));
            }
        }
        notices
    }

    /// The flusher task: runs for the life of the shard, ends after the final flush on close.
    pub async fn run_flusher(node: Rc<Node>, store: Rc<ShardStore>) {
        loop {
            if store.closing.get() {
                // Final flush: everything appended is written and synced before exit.
                store.force_sync.set(true);
                while store.log.borrow().has_work(true) && store.log.borrow().failure().is_none() {
                    store.force_sync.set(true);
                    store.flush_once(&node).await;
                }
                store.closed.notify();
                return;
            }
            let failure = store.log.borrow().failure().cloned();
            match failure {
                // Nothing will be written again: wait for the end without spinning.
                Some(LogFailure::Failed(_)) => {
                    store.wake.wait().await;
                    continue;
                }
                Some(LogFailure::Full(_)) => {
                    glommio::timer::sleep(Duration::from_millis(STORAGE_RETRY_MS)).or(store.closed_requested()).await;
                }
                None => {}
            }
            let sync = store.disk.fsync.syncs() || store.force_sync.get();
            if !store.log.borrow().has_work(sync) {
                store.flusher_idle.set(true);
                store.wake.wait().await;
                store.flusher_idle.set(false);
                continue;
            }
            let interval_ms = match store.disk.fsync {
                FsyncPolicy::Always => None,
                FsyncPolicy::Batch { interval_ms } | FsyncPolicy::Never { interval_ms } => Some(interval_ms),
            };
            if let Some(interval_ms) = interval_ms.filter(|_| !store.urgent.get()) {
                // Appends made meanwhile ride along; a waiting PERSISTED write cuts the wait short.
                glommio::timer::sleep(Duration::from_millis(interval_ms)).or(store.until_urgent()).await;
            }
            store.flush_once(&node).await;
        }
    }

    /// Completes when something urgent (or the close) is asked for.
    async fn until_urgent(&self) {
        while !self.urgent.get() && !self.closing.get() {
            self.wake.wait().await;
        }
    }

    async fn closed_requested(&self) {
        while !self.closing.get() {
            self.wake.wait().await;
        }
    }

    /// The compaction task: one bounded step per tick, for the life of the shard.
    pub async fn run_compaction(node: Rc<Node>, store: Rc<ShardStore>) {
        let policy = CompactionPolicy {
            live_fraction_min: store.disk.compaction_live_fraction,
            tombstone_grace_ms: store.disk.tombstone_grace_ms,
        };
        loop {
            glommio::timer::sleep(Duration::from_millis(COMPACTION_TICK_MS)).await;
            if store.closing.get() {
                return;
            }
            let Some(finished) = store.compaction_step(&node, policy, wall_ms()) else { continue };
            // The copies must be durable before the victim goes.
            let position = store.request_sync();
            match node.durability().wait(store.shard, position).await {
                Ok(()) => store.remove_victim(finished),
                Err(reason) => {
                    tracing::error!(shard = %store.shard, segment = %finished, %reason, "compaction stopped: its copies could not be made durable; the segment stays");
                    return;
                }
            }
        }
    }

    /// Deletes a compacted segment whose records are durable elsewhere.
    fn remove_victim(&self, segment: SegmentId) {
        self.files.borrow_mut().remove(&segment);
        self.table.borrow_mut().remove(segment);
        let path = self.dir.join(segment.file_name());
        if let Err(error) = std::fs::remove_file(&path) {
            // Harmless for correctness: its records are superseded or copied; it is read again
            // at the next start and compacted again.
            tracing::warn!(shard = %self.shard, file = %path.display(), %error, "cannot remove a compacted segment");
        }
        self.bump(|stats| stats.segments_compacted += 1);
    }

    /// One compaction step: up to `COMPACTION_BYTES_PER_TICK` of the current victim (picking
    /// one if there is none). Returns the victim once all its records are handled.
    fn compaction_step(&self, node: &Node, policy: CompactionPolicy, now_ms: u64) -> Option<SegmentId> {
        if self.log.borrow().writable().is_err() {
            return None;
        }
        let mut victim_slot = self.victim.borrow_mut();
        if victim_slot.is_none() {
            // Only segments wholly handed to the OS: a sealed segment whose tail is still in
            // the log's buffer (or whose file is not created yet) is not what its file shows.
            let written_before = self.log.borrow().written().segment;
            let segment = self.table.borrow().pick_victim(written_before, self.disk.segment_bytes, now_ms, policy)?;
            let path = self.dir.join(segment.file_name());
            let mapped = std::fs::File::open(&path).and_then(|file| {
                // SAFETY: a sealed segment is never written again (appends go to the active
                // one, which is newer), and only this task deletes it, after unmapping.
                unsafe { memmap2::Mmap::map(&file) }
            });
            let map = match mapped {
                Ok(map) => map,
                Err(error) => {
                    tracing::error!(shard = %self.shard, file = %path.display(), %error, "cannot map a segment to compact; leaving it");
                    self.table.borrow_mut().remove(segment);
                    return None;
                }
            };
            if SegmentHeader::decode(&map).map(|header| header.segment) != Ok(segment) {
                tracing::error!(shard = %self.shard, file = %path.display(), "segment header unreadable at compaction; leaving it");
                self.table.borrow_mut().remove(segment);
                return None;
            }
            *victim_slot =
                Some(Victim { segment, map, cursor: SegmentOffset(SEGMENT_HEADER_BYTES), maybe_stale: Vec::new() });
        }
        let victim = victim_slot.as_mut().expect("set above");
        let data_cell = node.data_cell();
        let data = data_cell.borrow();
        let mut log = self.log.borrow_mut();
        let mut keys = self.keys.borrow_mut();
        let mut table = self.table.borrow_mut();
        let (mut copied, mut dropped, mut tombstones) = (0, 0, 0);
        let mut budget = COMPACTION_BYTES_PER_TICK;
        let finished = loop {
            let (record, next) = match decode_record(&victim.map, victim.cursor) {
                RecordAt::Record { record, next } => (record, next),
                RecordAt::End => break true,
                RecordAt::Invalid(reason) => {
                    tracing::error!(shard = %self.shard, segment = %victim.segment, offset = victim.cursor.0, %reason, "damaged record found by compaction; leaving the segment in place");
                    table.remove(victim.segment);
                    *victim_slot = None;
                    return None;
                }
            };
            let framed = record.framed.len() as u64;
            if framed > budget && budget < COMPACTION_BYTES_PER_TICK {
                break false;
            }
            budget = budget.saturating_sub(framed);
            let body = record.body;
            let stamp = (body.timestamp.millis(), body.timestamp.counter(), body.timestamp.node_id());
            let hash = keys.hash(record.kind, body.map(), body.key(), body.tag());
            let keep = match record.kind {
                RecordKind::LwwPut => data.lww_is_current(body.map(), body.key(), stamp, false),
                RecordKind::LwwTombstone => data.lww_is_current(body.map(), body.key(), stamp, true),
                RecordKind::OrAdd => data.or_is_current(body.map(), body.key(), body.tag(), stamp),
                RecordKind::OrRemove | RecordKind::CounterState | RecordKind::Metadata => true,
            };
            let expired_tombstone =
                record.kind == RecordKind::LwwTombstone && stamp.0.saturating_add(policy.tombstone_grace_ms) < now_ms;
            if !keep {
                if keys.dropped(hash, victim.segment) {
                    victim.maybe_stale.push(hash);
                }
                dropped += 1;
            } else if expired_tombstone && keys.drop_last_tombstone(hash, victim.segment) {
                tombstones += 1;
            } else {
                let (segment, _, framed) = match log.append_framed(record.framed) {
                    Ok(placed) => placed,
                    // The log refuses writes: stop here and resume at this record later.
                    Err(_) => break false,
                };
                match record.kind {
                    RecordKind::LwwPut | RecordKind::OrAdd => {
                        keys.moved(&mut table, hash, victim.segment, segment, framed, None)
                    }
                    RecordKind::LwwTombstone => {
                        keys.moved(&mut table, hash, victim.segment, segment, framed, Some(stamp.0))
                    }
                    _ => keys.record_kept(&mut table, segment, framed),
                }
                copied += 1;
            }
            victim.cursor = next;
            if budget == 0 {
                break false;
            }
        };
        drop((data, log, keys, table));
        self.bump(|stats| {
            stats.records_copied += copied;
            stats.records_dropped += dropped;
            stats.tombstones_dropped += tombstones;
        });
        if copied > 0 && self.flusher_idle.get() {
            self.wake.notify();
        }
        if !finished {
            return None;
        }
        let mut keys = self.keys.borrow_mut();
        for hash in victim.maybe_stale.drain(..) {
            keys.forget_if_in(hash, victim.segment);
        }
        let segment = victim.segment;
        *victim_slot = None;
        Some(segment)
    }
}

fn stored(timestamp: &crate::model::Timestamp) -> StoredTimestamp<'_> {
    StoredTimestamp { millis: timestamp.millis, counter: timestamp.counter, node_id: &timestamp.node_id }
}
