//! shardgrid::protocol: the typed codec of the TopGun wire protocol (PROTOCOL.md §4, with the
//! choices of DECISIONS.md). It owns the list of message types, the decoding of every
//! client-to-server frame into a [`ClientMessage`] (after an iterative pre-scan that bounds
//! nesting), the inbound `BATCH` envelope, the encoding of every server-to-client
//! [`ServerMessage`], the mapping of a decode failure to the `ERROR` reply the client gets,
//! and the msgpack bodies of HTTP sync (§9).
//!
//! It deliberately leaves out everything that needs state or a clock: authentication, what a
//! message means (merging, queries, subscriptions), HTTP status codes and JSON error bodies,
//! and WebSocket framing and frame-size limits. Query bodies, hybrid/vector search bodies and
//! other free-form parts stay raw `rmpv::Value`s for the modules that interpret them; record
//! values stay the exact msgpack bytes the client sent, and are re-emitted as those bytes.

mod decode;
mod encode;
mod http_sync;
mod message_type;
mod scan;
mod types;
mod write_path;

pub(crate) use decode::decode_general;
pub use decode::{
    decode_client_message, unpack_batch, ClientMessage, ClientOp, DecodeError, EntryProcessor, OpKind, ResolverDef,
    SearchOptions,
};
pub use encode::{
    encode, encode_op_ack, write_lww_record, write_or_record, write_timestamp, EntryProcessResult, HybridSearchHit,
    PartitionInfo, PartitionMap, PartitionNode, QueryResp, ResolverInfo, SearchHit, ServerEvent, ServerEventBody,
    ServerMessage, VectorSearchHit,
};
pub use http_sync::{
    decode_http_sync_request, encode_http_sync_response, HttpQuery, HttpQueryResult, HttpSearch, HttpSearchResult,
    HttpSyncAck, HttpSyncError, HttpSyncRequest, HttpSyncResponse, MapDelta, SyncMapRequest,
};
pub use message_type::{Direction, MessageType};
pub use types::{ChangeType, CursorStatus, JournalEvent, JournalEventType, NodeStatus, OpResult, OrMapEntry};

/// Deepest msgpack nesting (maps and arrays, the outer message map counting as 1) accepted in
/// a client frame (DECISIONS.md §5, PROTOCOL.md §1.1). Deeper frames are refused before any
/// recursive decoding runs, so a hostile frame cannot exhaust the stack.
pub const NESTING_DEPTH_MAX: usize = 256;

/// Inner messages one inbound `BATCH` envelope may carry (PROTOCOL.md §1.2); a larger batch is
/// refused whole with `ERROR 413`.
pub const BATCH_ITEMS_MAX: usize = 8_192;

/// Bounds applied while decoding one client frame. Frame size is bounded earlier, by the
/// WebSocket layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// See [`NESTING_DEPTH_MAX`], the default. Free-form bodies (queries, search bodies) are
    /// decoded recursively up to this depth after the scan, so keep it in the hundreds.
    pub max_depth: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_depth: NESTING_DEPTH_MAX }
    }
}

/// The msgpack encoding of `value`, for the codec's unit tests.
#[cfg(test)]
pub(crate) fn test_msgpack(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing to a Vec cannot fail");
    bytes
}
