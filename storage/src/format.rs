//! The on-disk format, version 1: segment header, record framing, encoding and the one
//! validating decoder every byte read from disk goes through (length, then CRC32C, then the
//! rkyv archive check). The byte layout is drawn in `storage/FORMAT.md`; this module is its
//! only implementation.

use rkyv::rancor;
use rkyv::ser::allocator::Arena;

use crate::schema::{RecordBody, StoredBody, SCHEMA_VERSION};
use crate::{SegmentId, SegmentOffset};

/// Version of the segment layout (header and framing), in every segment header.
pub const FORMAT_VERSION: u32 = 1;
/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SGSEGMNT";
/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: u64 = 64;
/// Bytes of a record header: length, CRC32C, kind, schema version, partition, reserved.
pub const RECORD_HEADER_BYTES: u64 = 16;
/// Records start at multiples of this many bytes (so archived bodies are aligned in a mapping).
pub const RECORD_ALIGN_BYTES: u64 = 8;
/// Smallest segment size accepted (`--segment-bytes`).
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment size accepted: offsets in records and stats fit in `u32`.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
/// Segment sizes are multiples of this (the DMA alignment and the page size).
pub const SEGMENT_BYTES_ALIGN: u64 = 4096;

const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(RECORD_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(SEGMENT_BYTES_MIN % SEGMENT_BYTES_ALIGN == 0);

/// What a record holds. The numbers are part of the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// An LWW map's record for a key: `value`, `timestamp`, `ttl_ms`.
    LwwPut = 1,
    /// An LWW map's tombstone for a key: `timestamp`.
    LwwTombstone = 2,
    /// An OR map's add: `tag`, `value`, `timestamp`, `ttl_ms`.
    OrAdd = 3,
    /// An OR map's remove of `tag` under `key`; `timestamp` is when the shard applied it.
    OrRemove = 4,
    /// A counter's whole state in `value` (opaque bytes), keyed by `key`.
    CounterState = 5,
    /// Lock or topic metadata in `value` (opaque bytes), keyed by `map` and `key`.
    Metadata = 6,
}

impl RecordKind {
    pub fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::LwwPut,
            2 => RecordKind::LwwTombstone,
            3 => RecordKind::OrAdd,
            4 => RecordKind::OrRemove,
            5 => RecordKind::CounterState,
            6 => RecordKind::Metadata,
            _ => return None,
        })
    }
}

/// Rounds `bytes` up to the record alignment.
pub fn align_record(bytes: u64) -> u64 {
    bytes.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

/// Bytes a record with a body of `body_bytes` takes in a segment, header and padding included.
pub fn framed_bytes(body_bytes: u64) -> u64 {
    align_record(RECORD_HEADER_BYTES + body_bytes)
}

/// The identity a segment file carries in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment: SegmentId,
    pub segment_bytes: u64,
    /// The shard (index in its layout) whose log this segment belongs to.
    pub shard: u16,
    pub shard_count: u16,
    /// The layout generation the segment was written under.
    pub generation: u32,
}

impl SegmentHeader {
    /// The 64 header bytes (FORMAT.md, "Segment header").
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.segment.0.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        bytes[32..34].copy_from_slice(&self.shard.to_le_bytes());
        bytes[34..36].copy_from_slice(&self.shard_count.to_le_bytes());
        bytes[36..40].copy_from_slice(&self.generation.to_le_bytes());
        let crc = segment_header_crc(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Reads and checks a segment header (magic, version, CRC).
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(HeaderError::Short);
        }
        let bytes = &bytes[..SEGMENT_HEADER_BYTES as usize];
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::Magic);
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(HeaderError::Version(version));
        }
        let crc_expected = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let crc_actual = segment_header_crc(bytes);
        if crc_expected != crc_actual {
            return Err(HeaderError::Crc { crc_expected, crc_actual });
        }
        Ok(SegmentHeader {
            segment: SegmentId(u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"))),
            segment_bytes: u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")),
            shard: u16::from_le_bytes(bytes[32..34].try_into().expect("2 bytes")),
            shard_count: u16::from_le_bytes(bytes[34..36].try_into().expect("2 bytes")),
            generation: u32::from_le_bytes(bytes[36..40].try_into().expect("4 bytes")),
        })
    }
}

/// CRC32C over the header with its CRC field (bytes 12..16) left out.
fn segment_header_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&bytes[0..12]);
    crc32c::crc32c_append(crc, &bytes[16..SEGMENT_HEADER_BYTES as usize])
}

/// Why a segment header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file shorter than the segment header")]
    Short,
    #[error("not a shardgrid segment (bad magic)")]
    Magic,
    #[error("segment format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    Version(u32),
    #[error("segment header CRC mismatch: expected {crc_expected:#010x}, computed {crc_actual:#010x}")]
    Crc { crc_expected: u32, crc_actual: u32 },
}

/// Encodes records. Keeps its scratch buffers between records so the steady state allocates
/// nothing. Lives on one shard.
pub struct RecordEncoder {
    body: Vec<u8>,
    arena: Arena,
}

impl Default for RecordEncoder {
    fn default() -> Self {
        RecordEncoder { body: Vec::with_capacity(1024), arena: Arena::new() }
    }
}

impl RecordEncoder {
    /// Appends one framed record (header, body, zero padding) to `out`. `out.len()` must be a
    /// multiple of the record alignment: records are laid out back to back from there.
    /// Returns the framed length.
    pub fn encode(&mut self, kind: RecordKind, body: &RecordBody<'_>, out: &mut Vec<u8>) -> u64 {
        assert!((out.len() as u64) % RECORD_ALIGN_BYTES == 0, "records start aligned");
        self.body.clear();
        let written =
            rkyv::api::low::to_bytes_in_with_alloc::<_, _, rancor::Error>(body, &mut self.body, self.arena.acquire());
        // Serializing borrowed strings into a Vec cannot fail.
        written.expect("serializing a record body into memory");
        let body_bytes = self.body.len() as u64;
        assert!(body_bytes > 0, "an archived body is never empty");
        assert!(body_bytes <= u32::MAX as u64);
        let start = out.len();
        out.extend_from_slice(&(body_bytes as u32).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]); // the CRC, filled in below
        out.push(kind as u8);
        out.push(SCHEMA_VERSION);
        out.extend_from_slice(&body.partition.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&self.body);
        let crc = crc32c::crc32c(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        let framed = framed_bytes(body_bytes);
        out.resize(start + framed as usize, 0);
        framed
    }
}

/// One validated record read in place.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    pub kind: RecordKind,
    pub partition: u16,
    pub body: &'a StoredBody,
    /// The whole framed record (header, body, padding): copied verbatim when a record moves
    /// (compaction, resharding); its CRC does not depend on where it lies.
    pub framed: &'a [u8],
}

impl std::fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordView")
            .field("kind", &self.kind)
            .field("partition", &self.partition)
            .field("map", &self.body.map())
            .field("key", &self.body.key())
            .finish()
    }
}

/// What lies at one offset of a segment.
#[derive(Debug)]
pub enum RecordAt<'a> {
    /// A valid record; the next one starts at `next`.
    Record { record: RecordView<'a>, next: SegmentOffset },
    /// A zero length field: the end of the written data (segments are zero-filled).
    End,
    /// Bytes that are not a valid record.
    Invalid(Invalid),
}

/// Why the bytes at an offset are not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("record length {length} runs past the segment end")]
    Length { length: u64 },
    #[error("record CRC mismatch: expected {crc_expected:#010x}, computed {crc_actual:#010x}")]
    Crc { crc_expected: u32, crc_actual: u32 },
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("record schema version {0} is not supported (this build reads version {SCHEMA_VERSION})")]
    Schema(u8),
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("record body fails the archive check: {0}")]
    Archive(String),
    #[error("header partition {header} differs from body partition {body}")]
    Partition { header: u16, body: u16 },
}

/// Decodes the record at `offset` of a segment image: length bounds, then CRC32C, then the
/// header fields, then the rkyv archive check. Nothing read from disk is trusted before this.
pub fn decode_record(segment: &[u8], offset: SegmentOffset) -> RecordAt<'_> {
    let start = offset.0 as usize;
    assert!(offset.0 % RECORD_ALIGN_BYTES == 0, "records start aligned");
    let end = segment.len();
    if start + RECORD_HEADER_BYTES as usize > end {
        // Not even a header fits: the segment is full.
        return RecordAt::End;
    }
    let header = &segment[start..start + RECORD_HEADER_BYTES as usize];
    let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    if length == 0 {
        return RecordAt::End;
    }
    let framed = framed_bytes(length);
    if start as u64 + framed > end as u64 {
        return RecordAt::Invalid(Invalid::Length { length });
    }
    let crc_expected = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let covered = &segment[start + 8..start + RECORD_HEADER_BYTES as usize + length as usize];
    let crc_actual = crc32c::crc32c(covered);
    if crc_expected != crc_actual {
        return RecordAt::Invalid(Invalid::Crc { crc_expected, crc_actual });
    }
    let Some(kind) = RecordKind::from_byte(header[8]) else { return RecordAt::Invalid(Invalid::Kind(header[8])) };
    if header[9] != SCHEMA_VERSION {
        return RecordAt::Invalid(Invalid::Schema(header[9]));
    }
    if header[12..16] != [0u8; 4] {
        return RecordAt::Invalid(Invalid::Reserved);
    }
    let partition = u16::from_le_bytes(header[10..12].try_into().expect("2 bytes"));
    let body_bytes =
        &segment[start + RECORD_HEADER_BYTES as usize..start + RECORD_HEADER_BYTES as usize + length as usize];
    let body = match rkyv::api::low::access::<StoredBody, rancor::Error>(body_bytes) {
        Ok(body) => body,
        Err(error) => return RecordAt::Invalid(Invalid::Archive(error.to_string())),
    };
    if body.partition() != partition {
        return RecordAt::Invalid(Invalid::Partition { header: partition, body: body.partition() });
    }
    let record = RecordView { kind, partition, body, framed: &segment[start..start + framed as usize] };
    RecordAt::Record { record, next: SegmentOffset(start as u64 + framed) }
}

/// The recorded layout of a data directory: which generation of shard directories is current
/// and how many shards wrote it. Stored as the text file `LAYOUT` (FORMAT.md, "Layout").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub generation: u32,
    pub shard_count: u16,
}

/// The first line of a `LAYOUT` file.
const LAYOUT_FIRST_LINE: &str = "shardgrid-layout 1";

impl Layout {
    pub fn encode(&self) -> String {
        let body = format!("{LAYOUT_FIRST_LINE}\ngeneration {}\nshards {}\n", self.generation, self.shard_count);
        let crc = crc32c::crc32c(body.as_bytes());
        format!("{body}crc32c {crc:08x}\n")
    }

    pub fn decode(text: &str) -> Result<Layout, LayoutError> {
        let (body, crc_line) = match text.trim_end_matches('\n').rsplit_once('\n') {
            Some((body, crc_line)) => (format!("{body}\n"), crc_line),
            None => return Err(LayoutError::Malformed),
        };
        let crc_expected = crc_line
            .strip_prefix("crc32c ")
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or(LayoutError::Malformed)?;
        if crc32c::crc32c(body.as_bytes()) != crc_expected {
            return Err(LayoutError::Crc);
        }
        let mut lines = body.lines();
        if lines.next() != Some(LAYOUT_FIRST_LINE) {
            return Err(LayoutError::Version);
        }
        let mut field = |name: &str| {
            lines.next().and_then(|line| line.strip_prefix(name)).and_then(|value| value.trim().parse::<u64>().ok())
        };
        let generation = field("generation ").ok_or(LayoutError::Malformed)?;
        let shard_count = field("shards ").ok_or(LayoutError::Malformed)?;
        if generation == 0 || generation > u32::MAX as u64 || shard_count == 0 || shard_count > u16::MAX as u64 {
            return Err(LayoutError::Malformed);
        }
        Ok(Layout { generation: generation as u32, shard_count: shard_count as u16 })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("malformed")]
    Malformed,
    #[error("CRC mismatch")]
    Crc,
    #[error("unknown layout version (expected the first line {LAYOUT_FIRST_LINE:?})")]
    Version,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::StoredTimestamp;

    fn body<'a>(key: &'a str, value: &'a [u8]) -> RecordBody<'a> {
        RecordBody {
            partition: 17,
            map: "users",
            key,
            timestamp: StoredTimestamp { millis: 1_700_000_000_123, counter: 4, node_id: "client-a" },
            ttl_ms: Some(5_000),
            tag: "",
            value,
        }
    }

    // Goal: a record decodes to exactly what was encoded, in place, at an aligned offset that
    // is not the buffer start. Method: encode two records back to back and read both.
    #[test]
    fn records_round_trip_in_place() {
        let mut encoder = RecordEncoder::default();
        let mut segment = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        let first = encoder.encode(RecordKind::LwwPut, &body("k1", b"\x81\xa1a\x01"), &mut segment);
        let second = encoder.encode(RecordKind::OrAdd, &RecordBody { tag: "1:0:a", ..body("k2", b"") }, &mut segment);
        segment.resize(segment.len() + 64, 0);
        let RecordAt::Record { record, next } = decode_record(&segment, SegmentOffset(SEGMENT_HEADER_BYTES)) else {
            panic!("first record")
        };
        assert_eq!(next.0, SEGMENT_HEADER_BYTES + first);
        assert_eq!(record.kind, RecordKind::LwwPut);
        assert_eq!(record.partition, 17);
        assert_eq!(record.body.map(), "users");
        assert_eq!(record.body.key(), "k1");
        assert_eq!(record.body.value(), b"\x81\xa1a\x01");
        assert_eq!(record.body.ttl_ms(), Some(5_000));
        assert_eq!(record.body.timestamp.millis(), 1_700_000_000_123);
        assert_eq!(record.body.timestamp.counter(), 4);
        assert_eq!(record.body.timestamp.node_id(), "client-a");
        assert_eq!(record.framed.len() as u64, first);
        let RecordAt::Record { record, next } = decode_record(&segment, next) else { panic!("second record") };
        assert_eq!(record.kind, RecordKind::OrAdd);
        assert_eq!(record.body.tag(), "1:0:a");
        assert_eq!(next.0, SEGMENT_HEADER_BYTES + first + second);
        assert!(matches!(decode_record(&segment, next), RecordAt::End));
    }

    // Goal: every single-bit flip in a record is caught before the body is trusted. Method:
    // flip each bit of the header and body in turn and decode.
    #[test]
    fn every_bit_flip_is_detected() {
        let mut encoder = RecordEncoder::default();
        let mut segment = Vec::new();
        let framed = encoder.encode(RecordKind::LwwPut, &body("key", b"\x01"), &mut segment);
        // Padding bytes are not covered: they are only ever zero and never read.
        let covered = RECORD_HEADER_BYTES as usize + u32::from_le_bytes(segment[0..4].try_into().unwrap()) as usize;
        assert!(covered as u64 <= framed);
        for bit in 0..covered * 8 {
            let mut damaged = segment.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            match decode_record(&damaged, SegmentOffset(0)) {
                RecordAt::Record { .. } => panic!("flip of bit {bit} went unnoticed"),
                RecordAt::End | RecordAt::Invalid(_) => {}
            }
        }
    }

    // Goal: the segment header round-trips and refuses damage. Method: encode, decode, flip.
    #[test]
    fn segment_header_round_trips_and_refuses_damage() {
        let header =
            SegmentHeader { segment: SegmentId(7), segment_bytes: 1 << 20, shard: 1, shard_count: 2, generation: 3 };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let mut damaged = bytes;
        damaged[20] ^= 1;
        assert!(matches!(SegmentHeader::decode(&damaged), Err(HeaderError::Crc { .. })));
        damaged = bytes;
        damaged[0] = b'X';
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::Magic));
    }

    // Goal: the layout file round-trips and refuses edits that break its CRC.
    #[test]
    fn layout_round_trips() {
        let layout = Layout { generation: 4, shard_count: 3 };
        let text = layout.encode();
        assert_eq!(Layout::decode(&text), Ok(layout));
        assert_eq!(Layout::decode(&text.replace("shards 3", "shards 4")), Err(LayoutError::Crc));
        assert_eq!(Layout::decode("garbage"), Err(LayoutError::Malformed));
    }
}
