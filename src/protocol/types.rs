//! Small wire structures used by both directions or by several messages (PROTOCOL.md §4.0,
//! §4.5, §4.11, §4.12): OR-map sync entries, per-op results, and the string enums. Their
//! encoding lives in `encode`, their decoding in `decode`; nothing here has behaviour beyond
//! the text of an enum.

use crate::model::{OrRecord, Timestamp, ValueBytes, WriteConcern};
use compact_str::CompactString;

/// One key of an OR map in sync traffic: its live records and the tombstoned tags
/// (`ORMapEntry`, PROTOCOL.md §4.0). In `ORMAP_PUSH_DIFF` the client puts the whole map's
/// tombstone set into every entry (§4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrMapEntry {
    pub key: String,
    pub records: Vec<OrRecord>,
    pub tombstones: Vec<String>,
}

/// The outcome of one op in `OP_ACK.results` (PROTOCOL.md §4.0 `OpResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    pub op_id: CompactString,
    pub success: bool,
    pub achieved_level: WriteConcern,
    pub error: Option<String>,
}

/// How a live query or search result changed (`QUERY_UPDATE` / `SEARCH_UPDATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeType {
    Enter,
    Update,
    Leave,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Enter => "ENTER",
            ChangeType::Update => "UPDATE",
            ChangeType::Leave => "LEAVE",
        }
    }
}

/// The status of the cursor a `QUERY_SUB` came with (`QUERY_RESP.cursorStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CursorStatus {
    /// No cursor was given.
    None,
    Valid,
    Expired,
    /// Not one shardgrid issued, or issued for another predicate or sort (DECISIONS.md §1.10).
    Invalid,
}

impl CursorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorStatus::None => "none",
            CursorStatus::Valid => "valid",
            CursorStatus::Expired => "expired",
            CursorStatus::Invalid => "invalid",
        }
    }
}

/// The kind of a journal event (PROTOCOL.md §4.11, DECISIONS.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JournalEventType {
    /// The key had no live value before.
    Put,
    /// The key had a live value before.
    Update,
    Delete,
}

impl JournalEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalEventType::Put => "PUT",
            JournalEventType::Update => "UPDATE",
            JournalEventType::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<JournalEventType> {
        Some(match text {
            "PUT" => JournalEventType::Put,
            "UPDATE" => JournalEventType::Update,
            "DELETE" => JournalEventType::Delete,
            _ => return None,
        })
    }
}

/// One applied write as the event journal reports it (PROTOCOL.md §4.11 `JournalEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEvent {
    /// Unique and increasing, sent as a decimal string; how shardgrid numbers events across
    /// shards (not densely) is `coord::journal`'s module doc.
    pub sequence: u64,
    pub event_type: JournalEventType,
    pub map_name: String,
    pub key: String,
    pub value: Option<ValueBytes>,
    pub previous_value: Option<ValueBytes>,
    pub timestamp: Timestamp,
    pub node_id: String,
    /// A msgpack map, when present.
    pub metadata: Option<ValueBytes>,
}

/// A cluster member's state in `PARTITION_MAP.nodes[].status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    Active,
    Joining,
    Leaving,
    Suspected,
    Failed,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "ACTIVE",
            NodeStatus::Joining => "JOINING",
            NodeStatus::Leaving => "LEAVING",
            NodeStatus::Suspected => "SUSPECTED",
            NodeStatus::Failed => "FAILED",
        }
    }
}
