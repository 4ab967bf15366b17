//! Recovery: reading a shard's log back, one segment image (`&[u8]`, normally a read-only
//! mapping) at a time, in segment order. Every record is validated (`format::decode_record`)
//! and handed to the caller in place; the caller replays it.
//!
//! The verdict on damage: bytes that are not a valid record, with no valid record anywhere
//! after them in the shard's log, are a **torn tail** (a write the crash interrupted; it was
//! never acknowledged as persisted, because an acknowledgement waits for the fdatasync that
//! covers it): recovery cuts the log there and reports the cut. Invalid bytes *followed* by a
//! valid record are **corruption in the middle**: recovery stops with the segment and offset,
//! unless the operator asked to repair, which cuts the log there too and discards what follows
//! (reported, never silent).
//!
//! Pure: no files, no clock. The caller maps the files and carries out the cut.

use crate::format::{
    decode_record, HeaderError, Invalid, RecordAt, RecordView, SegmentHeader, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::{SegmentId, SegmentOffset};

/// Where the log was cut and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub segment: SegmentId,
    pub offset: SegmentOffset,
    pub reason: Damage,
    /// Whether valid records followed the cut (corruption in the middle, cut by `--repair`).
    pub discarded_valid_records: bool,
}

/// What was wrong at a cut.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("{0}")]
    Record(#[from] Invalid),
    #[error("segment header: {0}")]
    Header(#[from] HeaderError),
    #[error("segment header names segment {found}, the file name segment {expected}")]
    WrongSegment { expected: SegmentId, found: SegmentId },
    #[error("non-zero bytes after the end marker")]
    BytesAfterEnd,
}

/// Recovery refused to go on: corruption in the middle of the log (and no repair asked for).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt record in segment {segment} at offset {offset}: {reason}; valid records follow at segment {next_valid_segment} offset {next_valid_offset}")]
pub struct CorruptLog {
    pub segment: SegmentId,
    pub offset: SegmentOffset,
    pub reason: Damage,
    pub next_valid_segment: SegmentId,
    pub next_valid_offset: SegmentOffset,
}

/// What recovering one segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRecovered {
    pub records: u64,
    /// End of the valid records (where the next append would go).
    pub end: SegmentOffset,
    /// Non-zero bytes lie past `end` (they must be zeroed before appending there).
    pub dirty_after_end: bool,
}

/// Reads a shard's log in segment order. See the module doc.
pub struct LogRecovery {
    repair: bool,
    /// A torn tail seen so far: valid only if no later segment holds a valid record.
    pending_cut: Option<Cut>,
    /// Set once a cut is final (repair); later segments are discarded unread.
    cut_final: Option<Cut>,
    last: Option<(SegmentId, SegmentRecovered)>,
    discarded: Vec<SegmentId>,
    records: u64,
    highest: Option<SegmentId>,
}

/// How recovery ended, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryEnd {
    /// The segment appends continue in, and where: the last segment kept.
    pub active: Option<(SegmentId, SegmentRecovered)>,
    /// The cut, if the log was cut (a torn tail, or corruption with repair).
    pub cut: Option<Cut>,
    /// Segments after the cut: they hold no record to keep and are removed.
    pub discarded: Vec<SegmentId>,
    pub records: u64,
    /// The highest segment id seen (kept or discarded): new segments take higher ids.
    pub highest: Option<SegmentId>,
}

impl LogRecovery {
    pub fn new(repair: bool) -> LogRecovery {
        LogRecovery {
            repair,
            pending_cut: None,
            cut_final: None,
            last: None,
            discarded: Vec::new(),
            records: 0,
            highest: None,
        }
    }

    /// Reads segment `segment` (segments must come in ascending order) and calls `visit` for
    /// each valid record in order. Stops with `CorruptLog` on corruption in the middle.
    pub fn segment<'a>(
        &mut self,
        segment: SegmentId,
        image: &'a [u8],
        mut visit: impl FnMut(SegmentOffset, RecordView<'a>),
    ) -> Result<(), CorruptLog> {
        if let Some(highest) = self.highest {
            assert!(segment > highest, "segments are recovered in ascending order");
        }
        self.highest = Some(segment);
        if self.cut_final.is_some() {
            self.discarded.push(segment);
            return Ok(());
        }
        let header_ok = match SegmentHeader::decode(image) {
            Ok(header) if header.segment == segment => Ok(()),
            Ok(header) => Err(Damage::WrongSegment { expected: segment, found: header.segment }),
            Err(error) => Err(Damage::Header(error)),
        };
        let first = SegmentOffset(SEGMENT_HEADER_BYTES);
        // The valid prefix: where it ends, and what stopped it (None: a clean end).
        let (end, stop) = match &header_ok {
            Ok(()) => walk(image, first),
            Err(damage) => (SegmentOffset(0), Some(damage.clone())),
        };
        if let Some(pending) = self.pending_cut.take() {
            // An earlier segment ended in bytes that were not records. That was its torn tail
            // only if nothing valid follows anywhere, this segment included.
            let valid_here = if end > first { Some(first) } else { find_valid_record(image, first) };
            let Some(valid_at) = valid_here else {
                self.pending_cut = Some(pending);
                self.discarded.push(segment);
                return Ok(());
            };
            if !self.repair {
                return Err(CorruptLog {
                    segment: pending.segment,
                    offset: pending.offset,
                    reason: pending.reason,
                    next_valid_segment: segment,
                    next_valid_offset: valid_at,
                });
            }
            self.cut_final = Some(Cut { discarded_valid_records: true, ..pending });
            self.discarded.push(segment);
            return Ok(());
        }
        let mut records = 0;
        let mut at = first;
        while at < end {
            let RecordAt::Record { record, next } = decode_record(image, at) else {
                unreachable!("walked just before")
            };
            visit(at, record);
            records += 1;
            at = next;
        }
        self.records += records;
        if let Some(damage) = &stop {
            let search_from = if header_ok.is_ok() { SegmentOffset(end.0 + RECORD_ALIGN_BYTES) } else { first };
            match find_valid_record(image, search_from) {
                Some(valid_at) if !self.repair => {
                    return Err(CorruptLog {
                        segment,
                        offset: end,
                        reason: damage.clone(),
                        next_valid_segment: segment,
                        next_valid_offset: valid_at,
                    });
                }
                Some(_) => {
                    self.cut_final =
                        Some(Cut { segment, offset: end, reason: damage.clone(), discarded_valid_records: true })
                }
                None => {
                    self.pending_cut =
                        Some(Cut { segment, offset: end, reason: damage.clone(), discarded_valid_records: false })
                }
            }
        }
        self.last = Some((segment, SegmentRecovered { records, end, dirty_after_end: stop.is_some() }));
        Ok(())
    }

    pub fn finish(self) -> RecoveryEnd {
        let cut = self.cut_final.or(self.pending_cut);
        let mut discarded = self.discarded;
        let mut active = self.last;
        if let Some((segment, recovered)) = &active {
            if recovered.end.0 < SEGMENT_HEADER_BYTES {
                // Its header is damaged: nothing in it survives; a fresh segment replaces it.
                discarded.insert(0, *segment);
                active = None;
            }
        }
        discarded.sort();
        discarded.dedup();
        RecoveryEnd { active, cut, discarded, records: self.records, highest: self.highest }
    }
}

/// Walks the valid records from `from`; returns where they end and why (None: a clean end
/// marker with only zero bytes after it).
fn walk(image: &[u8], from: SegmentOffset) -> (SegmentOffset, Option<Damage>) {
    let mut offset = from;
    loop {
        match decode_record(image, offset) {
            RecordAt::Record { next, .. } => offset = next,
            RecordAt::End => {
                let rest = image.get(offset.0 as usize..).unwrap_or(&[]);
                if rest.iter().all(|byte| *byte == 0) {
                    return (offset, None);
                }
                return (offset, Some(Damage::BytesAfterEnd));
            }
            RecordAt::Invalid(invalid) => return (offset, Some(Damage::Record(invalid))),
        }
    }
}

/// The first aligned offset at or after `from` where a valid record starts, if any. Only runs
/// on damage, so it may look at every aligned offset; cheap header checks come first.
pub fn find_valid_record(image: &[u8], from: SegmentOffset) -> Option<SegmentOffset> {
    let mut offset = from.0.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES;
    while offset + RECORD_HEADER_BYTES <= image.len() as u64 {
        let header = &image[offset as usize..offset as usize + RECORD_HEADER_BYTES as usize];
        let plausible = header[0..4] != [0; 4]
            && crate::format::RecordKind::from_byte(header[8]).is_some()
            && header[9] == crate::schema::SCHEMA_VERSION
            && header[12..16] == [0; 4];
        if plausible {
            if let RecordAt::Record { .. } = decode_record(image, SegmentOffset(offset)) {
                return Some(SegmentOffset(offset));
            }
        }
        offset += RECORD_ALIGN_BYTES;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{RecordEncoder, RecordKind, SegmentHeader};
    use crate::schema::{RecordBody, StoredTimestamp};

    const SEGMENT_BYTES: usize = 64 * 1024;

    /// A segment image holding `keys` as LWW puts; returns it and each record's offset.
    fn segment_with(segment: SegmentId, keys: &[&str]) -> (Vec<u8>, Vec<u64>) {
        let header =
            SegmentHeader { segment, segment_bytes: SEGMENT_BYTES as u64, shard: 0, shard_count: 1, generation: 1 };
        let mut image = header.encode().to_vec();
        let mut encoder = RecordEncoder::default();
        let mut offsets = Vec::new();
        for key in keys {
            offsets.push(image.len() as u64);
            let body = RecordBody {
                partition: 1,
                map: "m",
                key,
                timestamp: StoredTimestamp { millis: 1, counter: 0, node_id: "n" },
                ttl_ms: None,
                tag: "",
                value: b"\x01",
            };
            encoder.encode(RecordKind::LwwPut, &body, &mut image);
        }
        image.resize(SEGMENT_BYTES, 0);
        (image, offsets)
    }

    fn keys_of(recovery: &mut LogRecovery, segment: SegmentId, image: &[u8]) -> Result<Vec<String>, CorruptLog> {
        let mut keys = Vec::new();
        recovery.segment(segment, image, |_, record| keys.push(record.body.key().to_string()))?;
        Ok(keys)
    }

    // Goal: a half-written last record is a torn tail: cut at its start, reported, the records
    // before it kept. Method: truncate the last record's bytes halfway (rest zero).
    #[test]
    fn torn_tail_is_cut() {
        let (mut image, offsets) = segment_with(SegmentId(1), &["a", "b", "c"]);
        let torn = offsets[2] as usize;
        for byte in &mut image[torn + 20..torn + 64] {
            *byte = 0;
        }
        let mut recovery = LogRecovery::new(false);
        assert_eq!(keys_of(&mut recovery, SegmentId(1), &image).unwrap(), ["a", "b"]);
        let end = recovery.finish();
        let cut = end.cut.expect("a cut");
        assert_eq!((cut.segment, cut.offset), (SegmentId(1), SegmentOffset(offsets[2])));
        assert!(!cut.discarded_valid_records);
        let (segment, recovered) = end.active.unwrap();
        assert_eq!(
            (segment, recovered.end, recovered.dirty_after_end),
            (SegmentId(1), SegmentOffset(offsets[2]), true)
        );
    }

    // Goal: a damaged record followed by valid ones is corruption in the middle: recovery
    // refuses, naming segment and offset, and never skips it silently. With repair, the log is
    // cut there. Method: flip a byte inside the middle record's body.
    #[test]
    fn corruption_in_the_middle_refuses_or_cuts_with_repair() {
        let (mut image, offsets) = segment_with(SegmentId(1), &["a", "b", "c"]);
        image[offsets[1] as usize + 20] ^= 0xff;
        let error = keys_of(&mut LogRecovery::new(false), SegmentId(1), &image).unwrap_err();
        assert_eq!((error.segment, error.offset), (SegmentId(1), SegmentOffset(offsets[1])));
        assert_eq!((error.next_valid_segment, error.next_valid_offset), (SegmentId(1), SegmentOffset(offsets[2])));
        let mut repair = LogRecovery::new(true);
        assert_eq!(keys_of(&mut repair, SegmentId(1), &image).unwrap(), ["a"]);
        let end = repair.finish();
        assert!(end.cut.unwrap().discarded_valid_records);
    }

    // Goal: a torn tail in one segment with valid records in a later one is corruption (the
    // tail was not the end of the log); a later segment without any valid record is discarded.
    #[test]
    fn torn_tail_before_a_later_segment() {
        let (mut first, offsets) = segment_with(SegmentId(1), &["a", "b"]);
        first[offsets[1] as usize + 4] ^= 1;
        let (second, _) = segment_with(SegmentId(2), &["c"]);
        let mut recovery = LogRecovery::new(false);
        assert_eq!(keys_of(&mut recovery, SegmentId(1), &first).unwrap(), ["a"]);
        let error = keys_of(&mut recovery, SegmentId(2), &second).unwrap_err();
        assert_eq!(
            (error.segment, error.offset, error.next_valid_segment),
            (SegmentId(1), SegmentOffset(offsets[1]), SegmentId(2))
        );

        let empty = vec![0u8; SEGMENT_BYTES];
        let mut recovery = LogRecovery::new(false);
        keys_of(&mut recovery, SegmentId(1), &first).unwrap();
        assert!(keys_of(&mut recovery, SegmentId(2), &empty).unwrap().is_empty());
        let end = recovery.finish();
        assert_eq!(end.discarded, [SegmentId(2)]);
        assert_eq!(end.active.unwrap().0, SegmentId(1));
        assert_eq!(end.highest, Some(SegmentId(2)));
    }

    // Goal: a segment whose header never made it to disk (all zeros) at the end of the log is
    // discarded; appends go to a fresh segment.
    #[test]
    fn headerless_last_segment_is_discarded() {
        let (first, _) = segment_with(SegmentId(1), &["a"]);
        let mut recovery = LogRecovery::new(false);
        keys_of(&mut recovery, SegmentId(1), &first).unwrap();
        keys_of(&mut recovery, SegmentId(2), &vec![0u8; SEGMENT_BYTES]).unwrap();
        let end = recovery.finish();
        assert_eq!(end.discarded, [SegmentId(2)]);
        assert!(end.active.is_none());
        assert_eq!(end.highest, Some(SegmentId(2)));
    }
}
