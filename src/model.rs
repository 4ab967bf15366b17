//! shardgrid::model: the plain data types every layer shares — timestamps, records, write
//! concerns, counter state. No behaviour beyond ordering and small conversions lives here; the
//! merge rules are in `crdt`, the wire form in `protocol`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use compact_str::CompactString;

/// One msgpack-encoded value exactly as a client sent it (any msgpack value: map, array, str,
/// number, bool, nil). Values are stored and re-emitted as these bytes, never re-encoded. A
/// record, the events about it and the event journal share one value: one allocation holding
/// the reference count and the bytes, so sharing allocates nothing more.
pub type ValueBytes = std::sync::Arc<[u8]>;

/// A hybrid logical clock timestamp (PROTOCOL.md §2.4). Ordered by `millis`, then `counter`,
/// then `node_id` compared byte-wise (DECISIONS.md §1.1). Node ids of up to 24 bytes are
/// kept inline, so a timestamp is copied, stored and dropped without touching the heap.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Timestamp {
    pub millis: u64,
    pub counter: u32,
    pub node_id: CompactString,
}

impl Timestamp {
    pub fn new(millis: u64, counter: u32, node_id: impl Into<CompactString>) -> Self {
        Timestamp { millis, counter, node_id: node_id.into() }
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis
            .cmp(&other.millis)
            .then(self.counter.cmp(&other.counter))
            .then_with(|| self.node_id.as_bytes().cmp(other.node_id.as_bytes()))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Timestamp {
    /// The protocol's string form `millis:counter:nodeId`, used as OR tags and in Merkle hashing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.millis, self.counter, self.node_id)
    }
}

/// A last-writer-wins record. `value: None` is a tombstone (PROTOCOL.md §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LwwRecord {
    pub value: Option<ValueBytes>,
    pub timestamp: Timestamp,
    pub ttl_ms: Option<u64>,
}

impl LwwRecord {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Expired records are treated as absent on read (PROTOCOL.md §6.3: strict `<`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        match self.ttl_ms {
            Some(ttl) if ttl > 0 => self.timestamp.millis.saturating_add(ttl) < now_ms,
            _ => false,
        }
    }

    /// Live = neither a tombstone nor expired at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }
}

/// One element of an OR-Map key's value set (PROTOCOL.md §4.0 ORMapRecord).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrRecord {
    pub value: ValueBytes,
    pub timestamp: Timestamp,
    pub tag: String,
    pub ttl_ms: Option<u64>,
}

impl OrRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        match self.ttl_ms {
            Some(ttl) if ttl > 0 => self.timestamp.millis.saturating_add(ttl) < now_ms,
            _ => false,
        }
    }
}

/// Write concern levels, weakest first (PROTOCOL.md §6.10). `Ord` follows strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WriteConcern {
    FireAndForget,
    Memory,
    Applied,
    Replicated,
    Persisted,
}

impl WriteConcern {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteConcern::FireAndForget => "FIRE_AND_FORGET",
            WriteConcern::Memory => "MEMORY",
            WriteConcern::Applied => "APPLIED",
            WriteConcern::Replicated => "REPLICATED",
            WriteConcern::Persisted => "PERSISTED",
        }
    }

    pub fn parse(text: &str) -> Option<WriteConcern> {
        Some(match text {
            "FIRE_AND_FORGET" => WriteConcern::FireAndForget,
            "MEMORY" => WriteConcern::Memory,
            "APPLIED" => WriteConcern::Applied,
            "REPLICATED" => WriteConcern::Replicated,
            "PERSISTED" => WriteConcern::Persisted,
            _ => return None,
        })
    }
}

/// PN-counter state: per node id, total increments (`positive`) and decrements (`negative`)
/// (PROTOCOL.md §6.5). The wire accepts `p`/`n` and `positive`/`negative` (§4.8).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PnCounterState {
    pub positive: BTreeMap<String, f64>,
    pub negative: BTreeMap<String, f64>,
}
