//! A simulated disk for tests: it carries out flush jobs like the real driver, but keeps each
//! segment's *written* image (what the OS has) apart from its *durable* image (what an
//! fdatasync covered), so a test can crash at any point and recover from what really survived.
//!
//! A crash keeps the durable image plus, depending on [`CrashMode`], some of the writes that
//! were never synced: none, an in-order prefix of them (the last one possibly torn), or an
//! arbitrary subset of their 512-byte sectors (a disk that reorders writes). Faults can be
//! injected: the next segment creation fails for lack of space, or the next fdatasync fails.

use std::collections::BTreeMap;

use crate::log::{FlushJob, FlushResult};
use crate::SegmentId;

/// A tiny deterministic PRNG (xorshift64*), so simulated crashes — and the server crate's
/// seeded simulations and fuzz smoke test — replay from a seed. Not for real randomness.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    pub fn from_seed(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (`bound > 0`).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    /// An index into a slice of `len` elements (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.index(last + 1);
            items.swap(last, other);
        }
    }
}

/// What survives a crash besides the durable image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives.
    DurableOnly,
    /// Unsynced writes survive in the order they were made, up to a random point; the write at
    /// that point survives only in part.
    InOrderPrefix,
    /// Any subset of the unsynced writes' 512-byte sectors survives.
    ReorderedSectors,
}

/// Bytes per sector for `CrashMode::ReorderedSectors`.
const SECTOR_BYTES: usize = 512;

#[derive(Clone, Debug)]
struct SimFile {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Whether the file itself (its directory entry) is durable.
    created_durable: bool,
}

/// One write not yet covered by an fdatasync, in the order made.
#[derive(Clone, Debug)]
struct UnsyncedWrite {
    segment: SegmentId,
    offset: usize,
    bytes: Vec<u8>,
}

/// See the module doc.
#[derive(Clone, Debug)]
pub struct SimDisk {
    segment_bytes: usize,
    files: BTreeMap<SegmentId, SimFile>,
    unsynced: Vec<UnsyncedWrite>,
    fail_next_create: Option<String>,
    fail_next_sync: Option<String>,
    pub syncs: u64,
}

impl SimDisk {
    pub fn new(segment_bytes: u64) -> SimDisk {
        SimDisk {
            segment_bytes: segment_bytes as usize,
            files: BTreeMap::new(),
            unsynced: Vec::new(),
            fail_next_create: None,
            fail_next_sync: None,
            syncs: 0,
        }
    }

    /// The next segment creation fails with `reason` (no space).
    pub fn fail_next_create(&mut self, reason: &str) {
        self.fail_next_create = Some(reason.to_string());
    }

    /// The next fdatasync fails with `reason`.
    pub fn fail_next_sync(&mut self, reason: &str) {
        self.fail_next_sync = Some(reason.to_string());
    }

    /// Carries out a flush job as the real driver does: create, write, fdatasync.
    pub fn run(&mut self, job: &FlushJob) -> FlushResult {
        for segment in &job.create {
            if let Some(reason) = self.fail_next_create.take() {
                return FlushResult::NoSpace(reason);
            }
            self.files.entry(*segment).or_insert_with(|| SimFile {
                written: vec![0; self.segment_bytes],
                durable: vec![0; self.segment_bytes],
                created_durable: false,
            });
        }
        for chunk in &job.chunks {
            let file = self.files.get_mut(&chunk.segment).expect("a chunk's segment was created");
            let offset = chunk.offset.0 as usize;
            file.written[offset..offset + chunk.bytes.len()].copy_from_slice(&chunk.bytes);
            self.unsynced.push(UnsyncedWrite { segment: chunk.segment, offset, bytes: chunk.bytes.clone() });
        }
        for segment in &job.sync {
            if let Some(reason) = self.fail_next_sync.take() {
                return FlushResult::Failed(reason);
            }
            let file = self.files.get_mut(segment).expect("a synced segment exists");
            file.durable.clone_from(&file.written);
            file.created_durable = true;
            self.unsynced.retain(|write| write.segment != *segment);
            self.syncs += 1;
        }
        FlushResult::Done
    }

    /// The segment images after a crash now, in segment order.
    pub fn crash(&self, mode: CrashMode, prng: &mut Prng) -> BTreeMap<SegmentId, Vec<u8>> {
        let mut images: BTreeMap<SegmentId, Vec<u8>> = BTreeMap::new();
        for (segment, file) in &self.files {
            // A file whose creation was never synced may or may not exist after the crash.
            if file.created_durable || (mode != CrashMode::DurableOnly && prng.below(2) == 0) {
                images.insert(*segment, file.durable.clone());
            }
        }
        match mode {
            CrashMode::DurableOnly => {}
            CrashMode::InOrderPrefix => {
                let survivors = prng.below(self.unsynced.len() as u64 + 1) as usize;
                for (index, write) in self.unsynced.iter().enumerate().take(survivors) {
                    let Some(image) = images.get_mut(&write.segment) else { continue };
                    let length = if index + 1 == survivors {
                        prng.below(write.bytes.len() as u64 + 1) as usize
                    } else {
                        write.bytes.len()
                    };
                    image[write.offset..write.offset + length].copy_from_slice(&write.bytes[..length]);
                }
            }
            CrashMode::ReorderedSectors => {
                for write in &self.unsynced {
                    let Some(image) = images.get_mut(&write.segment) else { continue };
                    for (sector, bytes) in write.bytes.chunks(SECTOR_BYTES).enumerate() {
                        if prng.below(2) == 0 {
                            let at = write.offset + sector * SECTOR_BYTES;
                            image[at..at + bytes.len()].copy_from_slice(bytes);
                        }
                    }
                }
            }
        }
        images
    }
}
