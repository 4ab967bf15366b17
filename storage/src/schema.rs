//! The rkyv-archived record body, schema version 1. Every archived type of the storage format
//! lives in this module and changes only with a bump of [`SCHEMA_VERSION`] (FORMAT.md).
//!
//! Bodies are written from borrowed data (`RecordBody<'a>`: nothing is copied into owned
//! strings to write a record) and read in place as `ArchivedRecordBody` straight out of a
//! mapped segment, after the boundary checks of `format::decode_record`.

use rkyv::with::InlineAsBox;
use rkyv::{Archive, Serialize};

/// The schema version written in every record header; a reader refuses any other.
pub const SCHEMA_VERSION: u8 = 1;

/// A hybrid logical clock timestamp as stored: `millis`, `counter`, `node_id`.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq)]
pub struct StoredTimestamp<'a> {
    pub millis: u64,
    pub counter: u32,
    #[rkyv(with = InlineAsBox)]
    pub node_id: &'a str,
}

/// The body of one record. What the fields mean for each record kind is in FORMAT.md; this
/// crate does not interpret them (it knows no merge rules).
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq)]
pub struct RecordBody<'a> {
    /// The partition of `key`; the same number as in the record header.
    pub partition: u16,
    #[rkyv(with = InlineAsBox)]
    pub map: &'a str,
    #[rkyv(with = InlineAsBox)]
    pub key: &'a str,
    pub timestamp: StoredTimestamp<'a>,
    /// Time to live in milliseconds from `timestamp.millis`; `None` for no expiry.
    pub ttl_ms: Option<u64>,
    /// The OR-Map tag of an OR add or remove; empty for other kinds.
    #[rkyv(with = InlineAsBox)]
    pub tag: &'a str,
    /// The value bytes exactly as the client sent them (msgpack), or opaque state bytes for
    /// counter and metadata records; empty for tombstones and OR removes.
    #[rkyv(with = InlineAsBox)]
    pub value: &'a [u8],
}

impl ArchivedStoredTimestamp<'_> {
    pub fn millis(&self) -> u64 {
        self.millis.to_native()
    }

    pub fn counter(&self) -> u32 {
        self.counter.to_native()
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

impl ArchivedRecordBody<'_> {
    pub fn partition(&self) -> u16 {
        self.partition.to_native()
    }

    pub fn map(&self) -> &str {
        &self.map
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn ttl_ms(&self) -> Option<u64> {
        self.ttl_ms.as_ref().map(|ttl| ttl.to_native())
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

/// A record body read in place. The archived type carries the writer's lifetime only as a
/// marker; it borrows nothing.
pub type StoredBody = ArchivedRecordBody<'static>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    // Goal: the archived body's root layout is exactly the one FORMAT.md draws; a change here
    // is a format change (bump SCHEMA_VERSION, keep reading the old one).
    #[test]
    fn archived_layout_is_the_documented_one() {
        assert_eq!((size_of::<StoredBody>(), align_of::<StoredBody>()), (80, 8));
        assert_eq!(offset_of!(StoredBody, partition), 0);
        assert_eq!(offset_of!(StoredBody, map), 4);
        assert_eq!(offset_of!(StoredBody, key), 12);
        assert_eq!(offset_of!(StoredBody, timestamp), 24);
        assert_eq!(offset_of!(StoredBody, ttl_ms), 48);
        assert_eq!(offset_of!(StoredBody, tag), 64);
        assert_eq!(offset_of!(StoredBody, value), 72);
        type Stamp = ArchivedStoredTimestamp<'static>;
        assert_eq!(
            (size_of::<Stamp>(), offset_of!(Stamp, millis), offset_of!(Stamp, counter), offset_of!(Stamp, node_id)),
            (24, 0, 8, 12)
        );
    }
}
