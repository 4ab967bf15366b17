//! The property behind the `segment_record` fuzz target (the `fuzz/` crate at the repository
//! root), kept here so the stable test suite runs the same checks over seeds and mutations.
//! [`segment_record`] panics only when a property of the record decoder fails.
//!
//! An input is read in one of two modes (its first byte, bit 0):
//!
//! * **record** (bit 0 clear): the bytes after the mode describe one record (kind, partition,
//!   timestamp, TTL, then map, key, node id, tag and value, each a length byte and that many
//!   bytes) and one damage to it (what, where, which bits). The record is encoded after a
//!   segment header and must decode to exactly what was encoded, and recovery must keep it; the
//!   damaged copy must never decode as a record, and recovery must not keep anything of it.
//!   The damages are the ones the format promises to catch: any single bit flip in the bytes
//!   the length and CRC cover, any error within 32 consecutive bits of the CRC-covered bytes,
//!   any change to the stored CRC, and a truncation inside the record.
//! * **image** (bit 0 set): the remaining bytes are a segment image (after a valid segment
//!   header when bit 1 is set). Whatever the decoder accepts at any aligned offset must be a
//!   well-formed record (CRC recomputed, fields readable, re-encodable to the same fields),
//!   and recovery must visit only such records, in order, and end inside the image.
//!
//! Images are copied into an aligned buffer first, as segments are mapped page-aligned.

use rkyv::util::AlignedVec;

use crate::format::{
    decode_record, framed_bytes, RecordAt, RecordEncoder, RecordKind, RecordView, SegmentHeader, RECORD_ALIGN_BYTES,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::recovery::LogRecovery;
use crate::schema::{RecordBody, StoredTimestamp};
use crate::{SegmentId, SegmentOffset};

/// The segment every fuzzed image claims to be.
const SEGMENT: SegmentId = SegmentId(1);

/// The input mode bit for an arbitrary segment image (clear: one described record).
const MODE_IMAGE: u8 = 1;
/// With `MODE_IMAGE`: put a valid segment header in front of the bytes.
const MODE_WITH_HEADER: u8 = 2;

/// How the damaged copy of a described record is damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// One bit of the length, CRC, header fields or body flipped.
    BitFlip,
    /// A nonzero 32-bit pattern XORed into four consecutive CRC-covered bytes.
    Burst,
    /// A nonzero 32-bit pattern XORed into the stored CRC.
    CrcField,
    /// The image ends inside the record.
    Truncation,
}

impl Damage {
    const ALL: [Damage; 4] = [Damage::BitFlip, Damage::Burst, Damage::CrcField, Damage::Truncation];

    fn from_byte(byte: u8) -> Damage {
        Damage::ALL[usize::from(byte) % Damage::ALL.len()]
    }

    fn to_byte(self) -> u8 {
        self as u8
    }
}

/// Checks the record decoder and recovery against `data`; see the module doc.
pub fn segment_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & MODE_IMAGE == 0 {
        described_record(rest);
    } else {
        arbitrary_image(rest, mode & MODE_WITH_HEADER != 0);
    }
}

/// The input of mode "record" describing `body` of `kind` and one damage (`position` and
/// `pattern` pick where and which bits). Seeds are made with it.
pub fn record_input(kind: RecordKind, body: &RecordBody<'_>, damage: Damage, position: u32, pattern: u32) -> Vec<u8> {
    let mut input = vec![0, kind as u8 - 1];
    input.extend_from_slice(&body.partition.to_le_bytes());
    input.extend_from_slice(&body.timestamp.millis.to_le_bytes());
    input.extend_from_slice(&body.timestamp.counter.to_le_bytes());
    input.push(u8::from(body.ttl_ms.is_some()));
    input.extend_from_slice(&body.ttl_ms.unwrap_or(0).to_le_bytes());
    for field in [body.map.as_bytes(), body.key.as_bytes(), body.timestamp.node_id.as_bytes(), body.tag.as_bytes()] {
        push_short(&mut input, field);
    }
    push_short(&mut input, body.value);
    input.push(damage.to_byte());
    input.extend_from_slice(&position.to_le_bytes());
    input.extend_from_slice(&pattern.to_le_bytes());
    input
}

/// The input of mode "image" for `image`, with a valid segment header put in front of it when
/// `with_header`.
pub fn image_input(image: &[u8], with_header: bool) -> Vec<u8> {
    let mut input = vec![MODE_IMAGE | if with_header { MODE_WITH_HEADER } else { 0 }];
    input.extend_from_slice(image);
    input
}

/// The segment header fuzzed images get.
pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    SegmentHeader { segment: SEGMENT, segment_bytes: 64 * 1024, shard: 0, shard_count: 1, generation: 1 }.encode()
}

/// Field bytes for `record_input`: a length byte, then at most 255 bytes.
fn push_short(input: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(usize::from(u8::MAX))];
    input.push(bytes.len() as u8);
    input.extend_from_slice(bytes);
}

/// Reads an input; past its end every byte reads as zero, so every input means something.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0u8; N];
        let taken = self.take(N);
        bytes[..taken.len()].copy_from_slice(taken);
        bytes
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn short(&mut self) -> &'a [u8] {
        let len = self.u8();
        self.take(usize::from(len))
    }

    fn text(&mut self) -> String {
        String::from_utf8_lossy(self.short()).into_owned()
    }
}

/// An image in an aligned buffer, as a mapped segment is.
fn aligned(parts: &[&[u8]]) -> AlignedVec<16> {
    let mut image = AlignedVec::<16>::new();
    for part in parts {
        image.extend_from_slice(part);
    }
    image
}

fn described_record(data: &[u8]) {
    let mut reader = Reader { data };
    let kind = RecordKind::from_byte(1 + reader.u8() % 6).expect("kinds 1 to 6 exist");
    let partition = u16::from_le_bytes(reader.array());
    let millis = u64::from_le_bytes(reader.array());
    let counter = u32::from_le_bytes(reader.array());
    let has_ttl = reader.u8() & 1 == 1;
    let ttl = u64::from_le_bytes(reader.array());
    let (map, key, node_id, tag) = (reader.text(), reader.text(), reader.text(), reader.text());
    let value = reader.short();
    let damage = Damage::from_byte(reader.u8());
    let position = u32::from_le_bytes(reader.array()) as usize;
    let pattern = u32::from_le_bytes(reader.array());

    let body = RecordBody {
        partition,
        map: &map,
        key: &key,
        timestamp: StoredTimestamp { millis, counter, node_id: &node_id },
        ttl_ms: has_ttl.then_some(ttl),
        tag: &tag,
        value,
    };
    let mut encoded = Vec::new();
    let framed = RecordEncoder::default().encode(kind, &body, &mut encoded) as usize;
    assert_eq!(encoded.len(), framed, "the encoder reports the framed length");
    let header = segment_header();
    let start = SegmentOffset(SEGMENT_HEADER_BYTES);
    // Room after the record, zero as in a preallocated segment.
    let padding = [0u8; 64];

    // The intact record decodes to what was encoded, and recovery keeps it.
    let image = aligned(&[&header, &encoded, &padding]);
    let RecordAt::Record { record, next } = decode_record(&image, start) else {
        panic!("a freshly encoded record does not decode: {body:?}")
    };
    assert_same_record(&record, kind, &body);
    assert_eq!(record.framed, &encoded[..], "the framed bytes are the encoded bytes");
    assert_eq!(next.0, start.0 + framed as u64, "the next record follows the padding");
    assert!(matches!(decode_record(&image, next), RecordAt::End), "zeros after the record are the end");
    let mut visited = Vec::new();
    let mut recovery = LogRecovery::new(false);
    recovery
        .segment(SEGMENT, &image, |offset, record| visited.push((offset, record.framed.to_vec())))
        .expect("an intact segment recovers");
    assert_eq!(visited, vec![(start, encoded.clone())], "recovery keeps exactly the record");
    let end = recovery.finish();
    assert_eq!((end.records, end.cut), (1, None), "nothing is cut from an intact segment");

    // The damaged copy is never taken for a record.
    let length = u32::from_le_bytes(encoded[0..4].try_into().expect("4 bytes")) as usize;
    let covered = RECORD_HEADER_BYTES as usize + length;
    let nonzero = if pattern == 0 { 1 } else { pattern };
    let mut damaged = encoded.clone();
    match damage {
        Damage::BitFlip => {
            let bit = position % (covered * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
        }
        Damage::Burst => {
            // Bytes 8.. are what the CRC covers; a body is never empty, so 9 bytes at least.
            let at = 8 + position % (covered - 8 - 3);
            for (byte, flip) in damaged[at..at + 4].iter_mut().zip(nonzero.to_le_bytes()) {
                *byte ^= flip;
            }
        }
        Damage::CrcField => {
            for (byte, flip) in damaged[4..8].iter_mut().zip(nonzero.to_le_bytes()) {
                *byte ^= flip;
            }
        }
        Damage::Truncation => damaged.truncate(position % framed),
    }
    let image = match damage {
        Damage::Truncation => aligned(&[&header, &damaged]),
        _ => aligned(&[&header, &damaged, &padding]),
    };
    if let RecordAt::Record { record, .. } = decode_record(&image, start) {
        panic!("{damage:?} at {position} (pattern {pattern:#x}) went unnoticed: {record:?}");
    }
    let mut recovery = LogRecovery::new(false);
    let outcome = recovery.segment(SEGMENT, &image, |offset, record| {
        assert!(offset != start, "recovery kept the damaged record {record:?}")
    });
    match outcome {
        // Bytes inside the damaged record may themselves hold a valid record: corruption in the
        // middle, reported where the damage is.
        Err(corrupt) => assert_eq!(corrupt.offset, start, "the corruption is reported where it is"),
        Ok(()) => {
            let end = recovery.finish();
            assert_eq!(end.records, 0, "nothing of the damaged record is kept");
            match end.cut {
                Some(cut) => assert_eq!((cut.segment, cut.offset), (SEGMENT, start), "the cut is at the damage"),
                // A truncation that leaves only zero bytes leaves an empty segment.
                None => assert!(image[start.0 as usize..].iter().all(|byte| *byte == 0), "damage left uncut"),
            }
        }
    }
}

fn assert_same_record(record: &RecordView<'_>, kind: RecordKind, body: &RecordBody<'_>) {
    let stored = record.body;
    assert_eq!(record.kind, kind);
    assert_eq!((record.partition, stored.partition()), (body.partition, body.partition));
    assert_eq!((stored.map(), stored.key(), stored.tag()), (body.map, body.key, body.tag));
    assert_eq!(
        (stored.timestamp.millis(), stored.timestamp.counter(), stored.timestamp.node_id()),
        (body.timestamp.millis, body.timestamp.counter, body.timestamp.node_id)
    );
    assert_eq!(stored.ttl_ms(), body.ttl_ms);
    assert_eq!(stored.value(), body.value);
}

fn arbitrary_image(data: &[u8], with_header: bool) {
    let header = segment_header();
    let image = if with_header { aligned(&[&header, data]) } else { aligned(&[data]) };
    let mut offset = 0;
    while offset < image.len() as u64 {
        check_accepted(&image, SegmentOffset(offset));
        offset += RECORD_ALIGN_BYTES;
    }
    for repair in [false, true] {
        let mut recovery = LogRecovery::new(repair);
        let mut last = None;
        let outcome = recovery.segment(SEGMENT, &image, |offset, record| {
            assert!(last < Some(offset), "records are visited in order, once");
            last = Some(offset);
            match decode_record(&image, offset) {
                RecordAt::Record { record: again, .. } => assert_eq!(again.framed, record.framed),
                other => panic!("recovery visited {other:?} at {offset}"),
            }
        });
        if let Err(corrupt) = &outcome {
            assert!(!repair, "repair never stops recovery: {corrupt}");
            assert!(corrupt.next_valid_offset > corrupt.offset, "valid records follow the corruption");
            assert!(matches!(decode_record(&image, corrupt.next_valid_offset), RecordAt::Record { .. }));
        }
        let end = recovery.finish();
        if let Some((_, recovered)) = &end.active {
            assert!(recovered.end.0 <= image.len() as u64, "the valid records end inside the image");
        }
    }
}

/// Whatever `decode_record` accepts at `offset` is a whole, well-formed record.
fn check_accepted(image: &[u8], offset: SegmentOffset) {
    let RecordAt::Record { record, next } = decode_record(image, offset) else { return };
    let start = offset.0 as usize;
    let header = &image[start..start + RECORD_HEADER_BYTES as usize];
    let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let covered = RECORD_HEADER_BYTES as usize + length;
    assert!(length > 0);
    assert_eq!(record.framed.len() as u64, framed_bytes(length as u64));
    assert_eq!(next.0, offset.0 + record.framed.len() as u64);
    assert!(next.0 <= image.len() as u64, "an accepted record lies inside the image");
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    assert_eq!(crc, crc32c::crc32c(&image[start + 8..start + covered]), "an accepted record's CRC matches");
    assert_eq!(Some(record.kind), RecordKind::from_byte(header[8]));
    assert_eq!(header[12..16], [0u8; 4]);
    // Its fields read back, and writing them again gives a record with the same fields.
    let stored = record.body;
    let body = RecordBody {
        partition: stored.partition(),
        map: stored.map(),
        key: stored.key(),
        timestamp: StoredTimestamp {
            millis: stored.timestamp.millis(),
            counter: stored.timestamp.counter(),
            node_id: stored.timestamp.node_id(),
        },
        ttl_ms: stored.ttl_ms(),
        tag: stored.tag(),
        value: stored.value(),
    };
    assert_eq!(body.partition, record.partition);
    let mut encoded = Vec::new();
    RecordEncoder::default().encode(record.kind, &body, &mut encoded);
    let copy = aligned(&[&encoded]);
    let RecordAt::Record { record: again, .. } = decode_record(&copy, SegmentOffset(0)) else {
        panic!("an accepted record's fields do not encode again: {record:?}")
    };
    assert_same_record(&again, record.kind, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body<'a>(key: &'a str, value: &'a [u8]) -> RecordBody<'a> {
        RecordBody {
            partition: 7,
            map: "users",
            key,
            timestamp: StoredTimestamp { millis: 1_700_000_000_000, counter: 3, node_id: "node-a" },
            ttl_ms: Some(1_000),
            tag: "",
            value,
        }
    }

    // Goal: every damage, at many positions, is caught for records of several sizes. Method:
    // run the property over record inputs sweeping position and pattern.
    #[test]
    fn every_damage_is_caught() {
        for (key, value) in [("k", &b"\x01"[..]), ("a-longer-key", &[0x92, 0xa1, b'x', 0xc3][..])] {
            for damage in Damage::ALL {
                for position in 0..200u32 {
                    let pattern = position.wrapping_mul(0x9e37_79b9);
                    segment_record(&record_input(RecordKind::LwwPut, &body(key, value), damage, position, pattern));
                }
            }
        }
    }

    // Goal: an image of several valid records, with and without damage, passes the image checks.
    #[test]
    fn images_of_valid_and_damaged_records() {
        let mut records = Vec::new();
        let mut encoder = RecordEncoder::default();
        for key in ["a", "b", "c"] {
            encoder.encode(RecordKind::OrAdd, &RecordBody { tag: "1:0:n", ..body(key, b"\xa1v") }, &mut records);
        }
        segment_record(&image_input(&records, true));
        segment_record(&image_input(&[&segment_header()[..], &records].concat(), false));
        for byte in (0..records.len()).step_by(5) {
            let mut damaged = records.clone();
            damaged[byte] ^= 0x10;
            segment_record(&image_input(&damaged, true));
        }
    }

    // Goal: inputs too short to describe anything still mean something and pass.
    #[test]
    fn short_inputs() {
        for input in [&[][..], &[0], &[1], &[2], &[3], &[0, 5, 1, 2]] {
            segment_record(input);
        }
    }
}
