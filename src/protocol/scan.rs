//! Reading msgpack without trusting it: an iterative scan that finds where one value ends and
//! where each map and array in it ends (bounding nesting depth, so no input can exhaust the
//! stack), and [`Raw`], a view of one already-scanned value with typed accessors that never
//! allocate. Knows nothing about message schemas; `decode` builds on it.

use rmp::Marker;

/// Why a byte string is not one well-formed msgpack value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The value needs more bytes than there are; `offset` is where the cut item starts.
    Truncated { offset: usize },
    /// The byte 0xc1, which msgpack never uses, appeared at `offset`.
    ReservedMarker { offset: usize },
    /// Maps and arrays nest deeper than allowed.
    TooDeep,
    /// The bytes are 4 GiB or more, beyond any frame the server accepts.
    TooLarge,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Truncated { offset } => write!(f, "truncated value at byte {offset}"),
            ScanError::ReservedMarker { offset } => {
                write!(f, "reserved byte 0xc1 at byte {offset}")
            }
            ScanError::TooDeep => write!(f, "nesting too deep"),
            ScanError::TooLarge => write!(f, "4 GiB or more"),
        }
    }
}

/// The extent of one map or array of a scanned frame. Containers are numbered in the order
/// their headers appear (pre-order), which is also the order a reader meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Container {
    /// Offset just past the container's last byte.
    end: u32,
    /// Number of the first container after this one's subtree.
    after: u32,
}

/// A byte string that starts with one complete msgpack value of bounded depth, with the
/// extent of every container in it, so that readers step over a nested map in O(1) instead
/// of walking it again at every level. The extents cost 8 bytes per map or array, at most
/// eight times the frame's size.
pub(crate) struct Scanned<'a> {
    bytes: &'a [u8],
    len: usize,
    containers: Vec<Container>,
}

impl Scanned<'_> {
    /// Length in bytes of the value; bytes after it are not part of it.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value itself.
    pub(crate) fn root(&self) -> Raw<'_> {
        Raw { bytes: self.bytes, containers: &self.containers, start: 0, end: self.len, container: 0 }
    }
}

/// Scans the msgpack value at the start of `bytes` (bytes after it are not looked at),
/// checking that it is complete and that no map or array sits inside more than
/// `depth_max - 1` others. Iterative: besides the container list it keeps one counter per
/// open container, at most `depth_max` of them, and it never recurses.
pub(crate) fn scan(bytes: &[u8], depth_max: usize) -> Result<Scanned<'_>, ScanError> {
    // Offsets and container numbers are kept as u32 to halve the extents' memory.
    if u32::try_from(bytes.len()).is_err() {
        return Err(ScanError::TooLarge);
    }
    let offset_of = |rest: &[u8]| (bytes.len() - rest.len()) as u32;
    let mut rest = bytes;
    // Room for a container per 32 bytes up front (protocol frames have about one per 40), so
    // the list rarely grows while scanning; capped, so a large flat frame costs nothing extra.
    let mut containers: Vec<Container> = Vec::with_capacity((bytes.len() / 32 + 4).min(CONTAINERS_PREALLOCATED_MAX));
    // For each open container, innermost last: its children still to read and its number.
    // The length is the current depth. A map of n entries has 2n children.
    let mut open: Vec<(u64, usize)> = Vec::new();
    loop {
        let offset = bytes.len() - rest.len();
        if let Some(children) = read_item_head(&mut rest, offset)? {
            if open.len() >= depth_max {
                return Err(ScanError::TooDeep);
            }
            let number = containers.len();
            // Each container has a header byte, so there are fewer of them than bytes.
            let after = (number + 1) as u32;
            containers.push(Container { end: offset_of(rest), after });
            if children > 0 {
                open.push((children, number));
                continue;
            }
        }
        // One item is complete; it may complete its container, and that one its own.
        loop {
            let Some((children_left, number)) = open.last_mut() else {
                let len = bytes.len() - rest.len();
                return Ok(Scanned { bytes, len, containers });
            };
            *children_left -= 1;
            if *children_left > 0 {
                break;
            }
            let closed = *number;
            containers[closed] = Container { end: offset_of(rest), after: containers.len() as u32 };
            open.pop();
        }
    }
}

/// Containers reserved up front by one scan.
const CONTAINERS_PREALLOCATED_MAX: usize = 4_096;

/// Length in bytes of the value at the start of `bytes`; see [`scan`].
pub(crate) fn value_len(bytes: &[u8], depth_max: usize) -> Result<usize, ScanError> {
    scan(bytes, depth_max).map(|scanned| scanned.len())
}

/// Consumes one item's marker, length and, for scalars, strings, binaries and extensions,
/// its payload. Returns the number of children of a map or array, whose children follow.
#[inline]
pub(super) fn read_item_head(rest: &mut &[u8], offset: usize) -> Result<Option<u64>, ScanError> {
    let truncated = ScanError::Truncated { offset };
    let Some(&first) = rest.first() else {
        return Err(truncated);
    };
    let marker = Marker::from_u8(first);
    let payload_len: usize = match marker {
        // The fixed formats carry their length in the marker: most items of a protocol frame.
        Marker::FixMap(len) => {
            *rest = &rest[1..];
            return Ok(Some(2 * u64::from(len)));
        }
        Marker::FixArray(len) => {
            *rest = &rest[1..];
            return Ok(Some(u64::from(len)));
        }
        Marker::FixStr(len) => {
            *rest = &rest[1..];
            usize::from(len)
        }
        Marker::Reserved => return Err(ScanError::ReservedMarker { offset }),
        Marker::Array16 | Marker::Array32 => {
            let len = rmp::decode::read_array_len(rest).map_err(|_| truncated)?;
            return Ok(Some(u64::from(len)));
        }
        Marker::Map16 | Marker::Map32 => {
            let len = rmp::decode::read_map_len(rest).map_err(|_| truncated)?;
            return Ok(Some(2 * u64::from(len)));
        }
        Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            rmp::decode::read_str_len(rest).map_err(|_| truncated)? as usize
        }
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
            rmp::decode::read_bin_len(rest).map_err(|_| truncated)? as usize
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => rmp::decode::read_ext_meta(rest).map_err(|_| truncated)?.size as usize,
        scalar => {
            *rest = &rest[1..];
            match scalar {
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                // FixPos, FixNeg, Null, True, False: the marker is the whole value.
                _ => 0,
            }
        }
    };
    if rest.len() < payload_len {
        return Err(truncated);
    }
    *rest = &rest[payload_len..];
    Ok(None)
}

/// The float that `value` (one complete msgpack value) encodes, if it is a float.
fn float_of(value: &[u8]) -> Option<f64> {
    let mut rest = value;
    match Marker::from_u8(*value.first()?) {
        Marker::F32 => rmp::decode::read_f32(&mut rest).ok().map(f64::from),
        Marker::F64 => rmp::decode::read_f64(&mut rest).ok(),
        _ => None,
    }
}

/// The non-negative integer that `value` (one complete msgpack value) encodes: any msgpack
/// integer, or a float holding a whole number (PROTOCOL.md §2.1: the client sends integers of
/// 2^32 and above as float64).
pub(super) fn u64_of(value: &[u8]) -> Option<u64> {
    if let Some(float) = float_of(value) {
        let whole = (0.0..FLOAT_U64_LIMIT).contains(&float) && float.fract() == 0.0;
        return whole.then_some(float as u64);
    }
    rmp::decode::read_int::<u64, _>(&mut &value[..]).ok()
}

/// Exactly one complete msgpack value inside a [`Scanned`] frame. Accessors return `None`
/// when the value has another type, so callers can say what they expected.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Raw<'a> {
    /// The whole scanned frame; the offsets below index into it.
    bytes: &'a [u8],
    containers: &'a [Container],
    start: usize,
    end: usize,
    /// Number of the first container at or after `start`: this value's own, if it is one.
    container: usize,
}

/// 2^64 as an f64: a whole float must be below it to fit a `u64`.
const FLOAT_U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

impl<'a> Raw<'a> {
    /// The value's exact encoding.
    pub(crate) fn bytes(self) -> &'a [u8] {
        &self.bytes[self.start..self.end]
    }

    fn marker(self) -> Marker {
        Marker::from_u8(self.bytes[self.start])
    }

    pub(crate) fn is_nil(self) -> bool {
        self.marker() == Marker::Null
    }

    /// A short name of the value's msgpack type, for error messages.
    pub(crate) fn kind_name(self) -> &'static str {
        match self.marker() {
            Marker::Null => "nil",
            Marker::True | Marker::False => "bool",
            Marker::FixPos(_)
            | Marker::FixNeg(_)
            | Marker::U8
            | Marker::U16
            | Marker::U32
            | Marker::U64
            | Marker::I8
            | Marker::I16
            | Marker::I32
            | Marker::I64 => "integer",
            Marker::F32 | Marker::F64 => "float",
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => "string",
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => "binary",
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => "array",
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => "map",
            _ => "extension",
        }
    }

    /// A string that is valid UTF-8.
    /// The bytes of a string, not checked to be UTF-8.
    pub(crate) fn as_str_bytes(self) -> Option<&'a [u8]> {
        let mut rest = self.bytes();
        if let Marker::FixStr(len) = self.marker() {
            return rest.get(1..1 + usize::from(len));
        }
        let len = rmp::decode::read_str_len(&mut rest).ok()? as usize;
        rest.get(..len)
    }

    pub(crate) fn as_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.as_str_bytes()?).ok()
    }

    fn as_float(self) -> Option<f64> {
        float_of(self.bytes())
    }

    /// A non-negative integer: any msgpack integer, or a float holding a whole number
    /// (PROTOCOL.md §2.1: the client sends integers of 2^32 and above as float64).
    pub(crate) fn as_u64(self) -> Option<u64> {
        u64_of(self.bytes())
    }

    /// Any number, integer or float.
    pub(crate) fn as_f64(self) -> Option<f64> {
        if let Some(float) = self.as_float() {
            return Some(float);
        }
        if self.marker() == Marker::U64 {
            return rmp::decode::read_int::<u64, _>(&mut self.bytes()).ok().map(|n| n as f64);
        }
        rmp::decode::read_int::<i64, _>(&mut self.bytes()).ok().map(|n| n as f64)
    }

    pub(crate) fn as_bin(self) -> Option<&'a [u8]> {
        let mut rest = self.bytes();
        let len = rmp::decode::read_bin_len(&mut rest).ok()? as usize;
        rest.get(..len)
    }

    /// The entries of a map, in wire order.
    pub(crate) fn map_entries(self) -> Option<MapEntries<'a>> {
        let mut rest = self.bytes();
        let len = match self.marker() {
            Marker::FixMap(len) => {
                rest = &rest[1..];
                u32::from(len)
            }
            _ => rmp::decode::read_map_len(&mut rest).ok()?,
        };
        Some(MapEntries { children: self.children(rest), remaining: len })
    }

    /// The items of an array, in wire order.
    pub(crate) fn array_items(self) -> Option<ArrayItems<'a>> {
        let mut rest = self.bytes();
        let len = match self.marker() {
            Marker::FixArray(len) => {
                rest = &rest[1..];
                u32::from(len)
            }
            _ => rmp::decode::read_array_len(&mut rest).ok()?,
        };
        Some(ArrayItems { children: self.children(rest), remaining: len })
    }

    /// A reader of this container's children, which start where `after_header` does.
    fn children(self, after_header: &[u8]) -> Children<'a> {
        Children {
            bytes: self.bytes,
            containers: self.containers,
            position: self.end - after_header.len(),
            container: self.container + 1,
        }
    }
}

/// Steps through the children of one container of a scanned frame.
struct Children<'a> {
    bytes: &'a [u8],
    containers: &'a [Container],
    position: usize,
    /// Number of the next container to be met.
    container: usize,
}

impl<'a> Children<'a> {
    fn next_value(&mut self) -> Raw<'a> {
        let start = self.position;
        let container = self.container;
        let end = match Marker::from_u8(self.bytes[start]) {
            Marker::FixMap(_)
            | Marker::Map16
            | Marker::Map32
            | Marker::FixArray(_)
            | Marker::Array16
            | Marker::Array32 => {
                let extent = self.containers[container];
                self.container = extent.after as usize;
                extent.end as usize
            }
            // Lengths the marker itself says (the scan checked they fit).
            Marker::FixStr(len) => start + 1 + usize::from(len),
            Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => start + 1,
            _ => {
                let mut rest = &self.bytes[start..];
                // The scan already read this item without error.
                let children = read_item_head(&mut rest, start).expect("item of a scanned frame");
                debug_assert!(children.is_none());
                self.bytes.len() - rest.len()
            }
        };
        self.position = end;
        Raw { bytes: self.bytes, containers: self.containers, start, end, container }
    }
}

/// Iterator over the `(key, value)` pairs of a scanned map.
pub(crate) struct MapEntries<'a> {
    children: Children<'a>,
    remaining: u32,
}

impl MapEntries<'_> {
    pub(crate) fn len(&self) -> usize {
        self.remaining as usize
    }
}

impl<'a> Iterator for MapEntries<'a> {
    type Item = (Raw<'a>, Raw<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let key = self.children.next_value();
        let value = self.children.next_value();
        Some((key, value))
    }
}

/// Iterator over the items of a scanned array.
pub(crate) struct ArrayItems<'a> {
    children: Children<'a>,
    remaining: u32,
}

impl ArrayItems<'_> {
    pub(crate) fn len(&self) -> usize {
        self.remaining as usize
    }
}

impl<'a> Iterator for ArrayItems<'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.children.next_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_msgpack as encode;

    /// Goal: the scan measures every msgpack format family exactly, including extensions and
    /// 32-bit lengths. Method: encode a value with one of each and compare lengths.
    #[test]
    fn measures_every_format() {
        let value = rmpv::Value::Map(vec![
            ("nil".into(), rmpv::Value::Nil),
            ("bools".into(), rmpv::Value::Array(vec![true.into(), false.into()])),
            (
                "ints".into(),
                rmpv::Value::Array(vec![
                    0.into(),
                    (-5).into(),
                    200.into(),
                    70_000.into(),
                    5_000_000_000u64.into(),
                    (-200).into(),
                    (-70_000).into(),
                    (-5_000_000_000i64).into(),
                ]),
            ),
            ("floats".into(), rmpv::Value::Array(vec![rmpv::Value::F32(1.5), 2.5.into()])),
            ("long".into(), "x".repeat(70_000).into()),
            ("bin".into(), rmpv::Value::Binary(vec![1, 2, 3])),
            ("ext1".into(), rmpv::Value::Ext(5, vec![9])),
            ("ext3".into(), rmpv::Value::Ext(5, vec![9, 9, 9])),
            ("empty".into(), rmpv::Value::Array(vec![])),
        ]);
        let mut bytes = encode(&value);
        let len = bytes.len();
        bytes.extend_from_slice(b"tail");
        assert_eq!(value_len(&bytes, 8), Ok(len));
    }

    /// Goal: stepping through children with the container extents yields exactly each
    /// child's bytes, at every level, for maps, arrays and empty containers alike.
    #[test]
    fn children_are_exact_spans() {
        let inner = rmpv::Value::Map(vec![
            ("e".into(), rmpv::Value::Array(vec![])),
            ("m".into(), rmpv::Value::Map(vec![(1.into(), rmpv::Value::Array(vec![2.into()]))])),
        ]);
        let value = rmpv::Value::Array(vec![
            inner.clone(),
            "x".into(),
            rmpv::Value::Map(vec![]),
            inner.clone(),
            rmpv::Value::Ext(1, vec![1, 2]),
        ]);
        let mut bytes = encode(&value);
        bytes.push(0xc0);
        let scanned = scan(&bytes, 8).unwrap();
        assert_eq!(scanned.len(), bytes.len() - 1);
        let items: Vec<_> = scanned.root().array_items().unwrap().collect();
        let rmpv::Value::Array(expected) = &value else { unreachable!() };
        assert_eq!(items.len(), expected.len());
        for (item, expected) in items.iter().zip(expected) {
            assert_eq!(item.bytes(), encode(expected));
        }
        // Descend into the second copy of `inner`, after a sibling subtree was stepped over.
        let entries: Vec<_> = items[3].map_entries().unwrap().collect();
        assert_eq!(entries[1].0.as_str(), Some("m"));
        let (key, array) = entries[1].1.map_entries().unwrap().next().unwrap();
        assert_eq!(key.as_u64(), Some(1));
        assert_eq!(array.array_items().unwrap().next().unwrap().as_u64(), Some(2));
    }

    /// Goal: every proper prefix of a value is reported truncated, never misread.
    #[test]
    fn every_prefix_is_truncated() {
        let value = rmpv::Value::Map(vec![
            ("a".into(), rmpv::Value::Array(vec![1.into(), "two".into(), 3.5.into()])),
            ("b".into(), rmpv::Value::Binary(vec![7; 20])),
        ]);
        let bytes = encode(&value);
        for cut in 0..bytes.len() {
            assert!(matches!(value_len(&bytes[..cut], 8), Err(ScanError::Truncated { .. })), "cut at {cut}");
        }
    }

    /// Goal: depth counts containers (an empty one too), and a hostile header claiming four
    /// billion entries costs nothing but a truncation error.
    #[test]
    fn depth_and_huge_headers() {
        assert_eq!(value_len(&[0x91, 0x91, 0x90], 3), Ok(3));
        assert_eq!(value_len(&[0x91, 0x91, 0x90], 2), Err(ScanError::TooDeep));
        assert_eq!(value_len(&[0x05], 0), Ok(1), "a scalar has depth 0");
        let huge_map = [0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0];
        assert!(matches!(value_len(&huge_map, 8), Err(ScanError::Truncated { .. })));
        assert_eq!(value_len(&[0x91, 0xc1], 8), Err(ScanError::ReservedMarker { offset: 1 }));
    }

    /// Goal: numeric accessors apply PROTOCOL.md §2.1: whole floats are integers, fractions
    /// and negatives are not unsigned integers.
    #[test]
    fn numeric_accessors() {
        let raw = |value: rmpv::Value| encode(&value);
        let as_u64 = |bytes: &[u8]| scan(bytes, 8).unwrap().root().as_u64();
        assert_eq!(as_u64(&raw(1_717_171_717_171.0f64.into())), Some(1_717_171_717_171));
        assert_eq!(as_u64(&raw(rmpv::Value::F32(3.0))), Some(3));
        assert_eq!(as_u64(&raw(1.5f64.into())), None);
        assert_eq!(as_u64(&raw((-1.0f64).into())), None);
        assert_eq!(as_u64(&raw(f64::NAN.into())), None);
        assert_eq!(as_u64(&raw(f64::INFINITY.into())), None);
        assert_eq!(as_u64(&raw(1e20f64.into())), None, "beyond u64");
        assert_eq!(as_u64(&raw((-3).into())), None);
        assert_eq!(as_u64(&raw(u64::MAX.into())), Some(u64::MAX));
        assert_eq!(as_u64(&raw("1".into())), None);
        let as_f64 = |bytes: &[u8]| scan(bytes, 8).unwrap().root().as_f64();
        assert_eq!(as_f64(&raw((-3).into())), Some(-3.0));
        assert_eq!(as_f64(&raw(u64::MAX.into())), Some(u64::MAX as f64));
        assert_eq!(as_f64(&raw(2.25f64.into())), Some(2.25));
        assert_eq!(as_f64(&raw(rmpv::Value::Nil)), None);
    }
}
