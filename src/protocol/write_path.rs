//! The write path's decoder: `OP_BATCH` and `CLIENT_OP` frames read in one pass over their
//! bytes, without the pre-scan and the field lists of the general decoder (`decode`), which
//! cost more than the rest of a put's handling together.
//!
//! It is a shortcut, never a second opinion: it returns exactly the message the general
//! decoder would, and answers `None` (the general decoder then decides, errors included)
//! whenever it is not sure: another message type, a field of the wrong type, an OR op,
//! nesting deeper than [`STEP_DEPTH_MAX`] or than the limits allow, truncation, trailing
//! bytes. So every refusal and its error text stay the general decoder's. The fuzz property
//! `decode_message` checks the two agree on every input it sees.

use compact_str::CompactString;

use super::decode::{ClientMessage, ClientOp, OpKind};
use super::scan::{read_item_head, u64_of};
use super::DecodeLimits;
use crate::model::{LwwRecord, Timestamp, ValueBytes, WriteConcern};

/// Nesting this decoder steps through itself, recursively; anything deeper is left to the
/// general decoder's iterative scan. Write frames nest 6 deep before their values.
const STEP_DEPTH_MAX: usize = 32;

/// Ops a batch's list reserves up front, whatever its header claims.
const OPS_PREALLOCATED_MAX: usize = 1_024;

/// `OP_BATCH` or `CLIENT_OP` decoded in one pass, or `None` when the general decoder must
/// decide (see the module doc).
pub(super) fn decode_write(frame: &[u8], limits: &DecodeLimits) -> Option<ClientMessage> {
    let mut reader = Reader { bytes: frame, position: 0, depth_max: limits.max_depth.min(STEP_DEPTH_MAX) };
    let (mut message_type, mut message) = (None, None);
    reader.fields(1, |name, reader| {
        match name {
            // The stock client writes `type` first; a frame that does not is left alone, as
            // is a second `type`.
            b"type" if message_type.is_none() => match reader.string()? {
                kind @ ("OP_BATCH" | "CLIENT_OP") => message_type = Some(kind),
                _ => return None,
            },
            b"type" => return None,
            b"payload" => {
                message = Some(match message_type? {
                    "OP_BATCH" => op_batch(reader, 2)?,
                    _ => ClientMessage::ClientOp(client_op(reader, 2)?),
                })
            }
            _ => reader.skip(2)?,
        }
        Some(())
    })?;
    if reader.position != frame.len() {
        return None;
    }
    message
}

/// A cursor over a frame. Every value is read once, either parsed or stepped over, so the
/// whole frame is checked complete and within the depth bound on the way.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    depth_max: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.position..]
    }

    fn advance_to(&mut self, rest: &'a [u8]) {
        self.position = self.bytes.len() - rest.len();
    }

    /// The `len` bytes at the cursor, stepped over.
    #[inline(always)]
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let start = self.position;
        let bytes = self.bytes.get(start..start.checked_add(len)?)?;
        self.position = start + len;
        Some(bytes)
    }

    /// Steps over one value at nesting level `depth` (the message map is 1) and returns its
    /// bytes. The markers of a write frame's leaves are stepped inline; containers and the
    /// rarer formats go through [`Reader::value_other`].
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Option<&'a [u8]> {
        let first = *self.bytes.get(self.position)?;
        let len = match first {
            // Positive and negative fixints, nil, false, true: the marker is the value.
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 1,
            0xa0..=0xbf => 1 + usize::from(first & 0x1f),
            0xd9 => 2 + usize::from(*self.bytes.get(self.position + 1)?),
            0xcc | 0xd0 => 2,
            0xcd | 0xd1 => 3,
            0xca | 0xce | 0xd2 => 5,
            0xcb | 0xcf | 0xd3 => 9,
            _ => return self.value_other(depth),
        };
        self.take(len)
    }

    #[inline(never)]
    fn value_other(&mut self, depth: usize) -> Option<&'a [u8]> {
        let start = self.position;
        let children = match self.fixmap() {
            Some(entries) => Some(2 * u64::from(entries)),
            None => {
                let mut rest = self.rest();
                let children = read_item_head(&mut rest, start).ok()?;
                self.advance_to(rest);
                children
            }
        };
        if let Some(children) = children {
            if depth > self.depth_max {
                return None;
            }
            for _ in 0..children {
                self.value(depth + 1)?;
            }
        }
        Some(&self.bytes[start..self.position])
    }

    fn skip(&mut self, depth: usize) -> Option<()> {
        self.value(depth).map(drop)
    }

    /// Consumes a fixmap marker if one is next: its entry count.
    #[inline(always)]
    fn fixmap(&mut self) -> Option<u32> {
        let first = *self.bytes.get(self.position)?;
        if !(0x80..=0x8f).contains(&first) {
            return None;
        }
        self.position += 1;
        Some(u32::from(first & 0x0f))
    }

    /// Consumes a nil if one is next.
    fn nil(&mut self) -> bool {
        let is_nil = self.rest().first() == Some(&0xc0);
        if is_nil {
            self.position += 1;
        }
        is_nil
    }

    fn string(&mut self) -> Option<&'a str> {
        text(self.string_bytes()?)
    }

    /// The bytes of the string that is next, not checked to be UTF-8.
    #[inline(always)]
    fn string_bytes(&mut self) -> Option<&'a [u8]> {
        let first = *self.bytes.get(self.position)?;
        match first {
            0xa0..=0xbf => {
                self.position += 1;
                self.take(usize::from(first & 0x1f))
            }
            0xd9 => {
                let len = *self.bytes.get(self.position + 1)?;
                self.position += 2;
                self.take(usize::from(len))
            }
            _ => {
                let mut rest = self.rest();
                let len = rmp::decode::read_str_len(&mut rest).ok()? as usize;
                self.advance_to(rest);
                self.take(len)
            }
        }
    }

    /// A non-negative integer: any msgpack integer, or a float holding a whole number, as
    /// [`u64_of`] reads it (positive fixints and the client's float64 millis inline).
    fn uint(&mut self, depth: usize) -> Option<u64> {
        let value = self.value(depth)?;
        match value {
            [fixint @ 0x00..=0x7f] => Some(u64::from(*fixint)),
            _ => u64_of(value),
        }
    }

    /// `f` on the next value unless it is nil: `Some(None)` for nil.
    fn optional<T>(&mut self, f: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<Option<T>> {
        if self.nil() {
            return Some(None);
        }
        f(self).map(Some)
    }

    /// Reads the map at nesting level `depth`, handing `visit` the name of each string-keyed
    /// entry with the reader at its value, which `visit` must consume. Entries with other
    /// keys cannot name a field and are stepped over, as the general decoder ignores them.
    #[inline(always)]
    fn fields(&mut self, depth: usize, mut visit: impl FnMut(&[u8], &mut Reader<'a>) -> Option<()>) -> Option<()> {
        if depth > self.depth_max {
            return None;
        }
        let entries = match self.fixmap() {
            Some(entries) => entries,
            None => {
                let mut rest = self.rest();
                let entries = rmp::decode::read_map_len(&mut rest).ok()?;
                self.advance_to(rest);
                entries
            }
        };
        for _ in 0..entries {
            let is_string = matches!(self.rest().first(), Some(0xa0..=0xbf | 0xd9..=0xdb));
            if is_string {
                let name = self.string_bytes()?;
                visit(name, self)?;
            } else {
                self.skip(depth + 1)?;
                self.skip(depth + 1)?;
            }
        }
        Some(())
    }
}

/// `bytes` as text. ASCII, which every name, id and key the stock client writes is in
/// practice, is checked inline; anything else by `from_utf8`.
#[inline(always)]
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

fn write_concern(reader: &mut Reader<'_>) -> Option<WriteConcern> {
    WriteConcern::parse(reader.string()?)
}

/// `OP_BATCH.payload`, a map at nesting level `depth`.
fn op_batch(reader: &mut Reader<'_>, depth: usize) -> Option<ClientMessage> {
    let (mut ops, mut concern, mut timeout) = (None, None, None);
    reader.fields(depth, |name, reader| {
        match name {
            b"ops" => ops = Some(op_list(reader, depth + 1)?),
            b"writeConcern" => concern = reader.optional(write_concern)?,
            b"timeout" => timeout = reader.optional(|reader| reader.uint(depth + 1))?,
            _ => reader.skip(depth + 1)?,
        }
        Some(())
    })?;
    Some(ClientMessage::OpBatch { ops: ops?, write_concern: concern, timeout })
}

fn op_list(reader: &mut Reader<'_>, depth: usize) -> Option<Vec<ClientOp>> {
    if depth > reader.depth_max {
        return None;
    }
    let mut rest = reader.rest();
    let len = rmp::decode::read_array_len(&mut rest).ok()?;
    reader.advance_to(rest);
    let mut ops = Vec::with_capacity((len as usize).min(OPS_PREALLOCATED_MAX));
    for _ in 0..len {
        ops.push(client_op(reader, depth + 1)?);
    }
    Some(ops)
}

/// One op, a map at nesting level `depth`, classified as `decode::client_op` does
/// (PROTOCOL.md §4.0, DECISIONS.md §1.7); OR ops are left to the general decoder.
fn client_op(reader: &mut Reader<'_>, depth: usize) -> Option<ClientOp> {
    let field = depth + 1;
    let (mut id, mut map_name, mut key, mut op_type, mut record) = (None, None, None, None, None);
    let (mut op_timestamp, mut concern, mut timeout) = (None, None, None);
    reader.fields(depth, |name, reader| {
        match name {
            b"id" => id = reader.optional(|reader| reader.string())?,
            b"mapName" => map_name = Some(reader.string()?),
            b"key" => key = Some(reader.string()?),
            b"opType" => op_type = reader.optional(|reader| reader.string())?,
            // Present and nil differs from absent here (`.nullable().optional()`).
            b"record" => record = Some(reader.optional(|reader| lww_record(reader, field))?),
            b"orRecord" | b"orTag" => {
                if !reader.nil() {
                    return None;
                }
            }
            // Read only by a remove without a record, as the general decoder does.
            b"timestamp" => op_timestamp = Some(reader.value(field)?),
            b"writeConcern" => concern = reader.optional(write_concern)?,
            b"timeout" => timeout = reader.optional(|reader| reader.uint(field))?,
            _ => reader.skip(field)?,
        }
        Some(())
    })?;
    let depth_max = reader.depth_max;
    let op_timestamp = || op_timestamp_of(op_timestamp, field, depth_max);
    let tombstone = |timestamp| LwwRecord { value: None, timestamp, ttl_ms: None };
    let kind = match record {
        Some(Some(record)) if op_type != Some("REMOVE") && record.value.is_some() => OpKind::Put(record),
        Some(Some(record)) => OpKind::Remove { record: Some(tombstone(record.timestamp)) },
        Some(None) => OpKind::Remove { record: op_timestamp()?.map(tombstone) },
        None if op_type == Some("REMOVE") => OpKind::Remove { record: op_timestamp()?.map(tombstone) },
        None => OpKind::Noop,
    };
    Some(ClientOp {
        id: id.map(CompactString::from),
        map_name: map_name?.into(),
        key: key?.into(),
        kind,
        write_concern: concern,
        timeout,
    })
}

/// The op's own `timestamp` (nil or absent: `None`), for a remove without a record.
fn op_timestamp_of(value: Option<&[u8]>, depth: usize, depth_max: usize) -> Option<Option<Timestamp>> {
    let Some(bytes) = value else { return Some(None) };
    // The bytes were stepped over whole at `depth`; read them again as a timestamp.
    let mut reader = Reader { bytes, position: 0, depth_max };
    reader.optional(|reader| timestamp(reader, depth))
}

/// An `LWWRecord`, a map at nesting level `depth`.
fn lww_record(reader: &mut Reader<'_>, depth: usize) -> Option<LwwRecord> {
    let (mut value, mut stamp, mut ttl_ms) = (None, None, None);
    reader.fields(depth, |name, reader| {
        match name {
            b"value" => value = Some(reader.value(depth + 1)?),
            b"timestamp" => stamp = Some(timestamp(reader, depth + 1)?),
            b"ttlMs" => ttl_ms = reader.optional(|reader| reader.uint(depth + 1))?,
            _ => reader.skip(depth + 1)?,
        }
        Some(())
    })?;
    let value = value?;
    Some(LwwRecord { value: (value != [0xc0]).then(|| ValueBytes::from(value)), timestamp: stamp?, ttl_ms })
}

/// A `Timestamp`, a map at nesting level `depth`.
fn timestamp(reader: &mut Reader<'_>, depth: usize) -> Option<Timestamp> {
    let (mut millis, mut counter, mut node_id) = (None, None, None);
    reader.fields(depth, |name, reader| {
        match name {
            b"millis" => millis = Some(reader.uint(depth + 1)?),
            b"counter" => counter = Some(u32::try_from(reader.uint(depth + 1)?).ok()?),
            b"nodeId" => node_id = Some(reader.string()?),
            _ => reader.skip(depth + 1)?,
        }
        Some(())
    })?;
    Some(Timestamp { millis: millis?, counter: counter?, node_id: node_id?.into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode::decode_general;
    use crate::protocol::test_msgpack as encode;

    fn map(entries: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
        rmpv::Value::Map(entries.into_iter().map(|(name, value)| (name.into(), value)).collect())
    }

    fn put_op(key: &str) -> rmpv::Value {
        let stamp = map(vec![("millis", 1_700_000_000_000u64.into()), ("counter", 3.into()), ("nodeId", "n1".into())]);
        let value = map(vec![("name", "x".into()), ("tags", rmpv::Value::Array(vec![1.into(), 2.into()]))]);
        map(vec![
            ("id", "17".into()),
            ("mapName", "users".into()),
            ("key", key.into()),
            ("record", map(vec![("value", value), ("timestamp", stamp)])),
        ])
    }

    /// An op on `key` of map `m` with `more` fields after `mapName` and `key`.
    fn op_on(key: &str, more: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
        let mut fields = vec![("mapName", "m".into()), ("key", key.into())];
        fields.extend(more);
        map(fields)
    }

    fn client_op_frame(payload: rmpv::Value) -> rmpv::Value {
        map(vec![("type", "CLIENT_OP".into()), ("payload", payload)])
    }

    fn batch(ops: Vec<rmpv::Value>) -> rmpv::Value {
        map(vec![("type", "OP_BATCH".into()), ("payload", map(vec![("ops", rmpv::Value::Array(ops))]))])
    }

    /// Goal: the shortcut takes the common write frames and returns what the general decoder
    /// returns. Method: batches and single ops in several shapes (op field order, unknown fields,
    /// removes, whole floats, TTLs, duplicate keys), decoded both ways.
    #[test]
    fn takes_common_writes_and_agrees() {
        let limits = DecodeLimits::default();
        let stamp = map(vec![("millis", 5_000_000_000.0f64.into()), ("counter", 0.into()), ("nodeId", "n".into())]);
        let frames = vec![
            batch(vec![put_op("a"), put_op("b")]),
            batch(vec![]),
            map(vec![
                ("type", "OP_BATCH".into()),
                ("extra", rmpv::Value::Array(vec![rmpv::Value::Nil])),
                (
                    "payload",
                    map(vec![
                        ("ops", rmpv::Value::Array(vec![put_op("a")])),
                        ("writeConcern", "PERSISTED".into()),
                        ("timeout", 1500.into()),
                    ]),
                ),
            ]),
            client_op_frame(put_op("k")),
            client_op_frame(op_on("k", vec![("opType", "REMOVE".into()), ("timestamp", stamp.clone())])),
            client_op_frame(op_on("k", vec![("record", rmpv::Value::Nil)])),
            client_op_frame(op_on("k", vec![])),
            client_op_frame(op_on(
                "k",
                vec![
                    ("key", "k2".into()),
                    (
                        "record",
                        map(vec![("value", rmpv::Value::Nil), ("timestamp", stamp.clone()), ("ttlMs", 10.into())]),
                    ),
                ],
            )),
            client_op_frame(op_on(
                "k",
                vec![("record", map(vec![("value", 7.into()), ("timestamp", stamp), ("ttlMs", 60_000.into())]))],
            )),
        ];
        for frame in frames {
            let bytes = encode(&frame);
            let fast = decode_write(&bytes, &limits).unwrap_or_else(|| panic!("not taken: {frame}"));
            assert_eq!(decode_general(&bytes, &limits), Ok(fast), "{frame}");
        }
    }

    /// Goal: anything the shortcut is unsure of goes to the general decoder, which then gives
    /// the error. Method: malformed and unusual write frames, each answered `None` here.
    #[test]
    fn leaves_the_rest_to_the_general_decoder() {
        let limits = DecodeLimits::default();
        let mut truncated = encode(&batch(vec![put_op("a")]));
        truncated.pop();
        let mut trailing = encode(&batch(vec![put_op("a")]));
        trailing.push(0xc0);
        let or_remove = client_op_frame(op_on("k", vec![("orTag", "t".into())]));
        let missing_key = map(vec![
            ("type", "OP_BATCH".into()),
            ("payload", map(vec![("ops", rmpv::Value::Array(vec![map(vec![("mapName", "m".into())])]))])),
        ]);
        let wrong_type = map(vec![
            ("type", "OP_BATCH".into()),
            ("payload", map(vec![("ops", rmpv::Value::Array(vec![put_op("a")])), ("timeout", (-1).into())])),
        ]);
        let mut deep = rmpv::Value::Nil;
        for _ in 0..40 {
            deep = rmpv::Value::Array(vec![deep]);
        }
        let deep_value = batch(vec![map(vec![
            ("mapName", "m".into()),
            ("key", "k".into()),
            ("record", map(vec![("value", deep), ("timestamp", map(vec![]))])),
        ])]);
        let ping = map(vec![("type", "PING".into()), ("timestamp", 1.into())]);
        let type_last = map(vec![
            ("payload", map(vec![("ops", rmpv::Value::Array(vec![put_op("a")]))])),
            ("type", "OP_BATCH".into()),
        ]);
        let cases = [
            truncated,
            trailing,
            encode(&or_remove),
            encode(&missing_key),
            encode(&wrong_type),
            encode(&deep_value),
            encode(&ping),
            encode(&type_last),
            vec![],
            vec![0x91, 0xc0],
        ];
        for bytes in cases {
            assert_eq!(decode_write(&bytes, &limits), None, "{bytes:x?}");
        }
        let tight = DecodeLimits { max_depth: 4 };
        assert_eq!(decode_write(&encode(&batch(vec![put_op("a")])), &tight), None, "record at depth 5");
        assert!(decode_general(&encode(&batch(vec![put_op("a")])), &tight).is_err());
    }
}
