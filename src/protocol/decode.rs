//! Client-to-server decoding: one WebSocket frame in, one typed [`ClientMessage`] or a
//! [`DecodeError`] out. The frame is first scanned iteratively (complete, no trailing bytes,
//! nesting bounded by [`DecodeLimits::max_depth`]); only then are fields read, straight from
//! the frame's bytes, so record values keep the exact encoding the client sent.
//!
//! It owns the field-level rules of PROTOCOL.md §2 (integers as whole floats, absent vs nil)
//! and the op classification of §4.0 with DECISIONS.md §1.7. It does not judge meaning: names,
//! paths, timestamps in the future and the like are checked by the handlers.

use std::collections::BTreeMap;
use std::fmt;

use compact_str::CompactString;

use super::message_type::{Direction, MessageType};
use super::scan::{scan, Raw, ScanError, Scanned};
use super::types::{JournalEventType, OrMapEntry};
use super::{DecodeLimits, BATCH_ITEMS_MAX};
use crate::model::{LwwRecord, OrRecord, PnCounterState, Timestamp, ValueBytes, WriteConcern};

/// Why a client frame could not be decoded. Each variant maps to the `ERROR` reply of
/// DECISIONS.md §5 through [`DecodeError::error_reply`]; the connection stays open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not one msgpack value (truncated, or a reserved byte).
    #[error("not msgpack: {0}")]
    NotMsgpack(String),
    /// Maps and arrays nest deeper than [`DecodeLimits::max_depth`].
    #[error("nesting too deep")]
    TooDeep,
    /// One complete value, followed by more bytes.
    #[error("trailing bytes after the message")]
    TrailingBytes,
    /// The value is not a map (e.g. `["PING", 5]`).
    #[error("not a map")]
    NotAMap,
    /// The map has no `type`, or a nil one.
    #[error("missing type")]
    MissingType,
    /// `type` names no message of the protocol.
    #[error("unknown message type: {0}")]
    UnknownType(String),
    /// `type` names a message a client never sends (server-to-client or server-to-server).
    #[error("unknown message type: {0}")]
    ServerToClientType(String),
    /// A field is missing or has the wrong type; the text names it, e.g.
    /// `OP_BATCH.payload.ops[2].key: expected string, got integer`.
    #[error("{0}")]
    Malformed(String),
    /// An inbound `BATCH` carries more than [`BATCH_ITEMS_MAX`] messages.
    #[error("batch exceeds maximum inner item count")]
    BatchTooLarge,
}

/// `ERROR.code` for a frame the server could not read.
const ERROR_CODE_BAD_REQUEST: u16 = 400;
/// `ERROR.code` for a `BATCH` over its item cap (PROTOCOL.md §1.2).
const ERROR_CODE_BATCH_TOO_LARGE: u16 = 413;

impl DecodeError {
    /// The `ERROR {code, message}` the client gets for this failure (DECISIONS.md §5).
    pub fn error_reply(&self) -> (u16, String) {
        match self {
            DecodeError::UnknownType(_) | DecodeError::ServerToClientType(_) => {
                (ERROR_CODE_BAD_REQUEST, self.to_string())
            }
            DecodeError::BatchTooLarge => (ERROR_CODE_BATCH_TOO_LARGE, self.to_string()),
            DecodeError::NotMsgpack(_)
            | DecodeError::TooDeep
            | DecodeError::TrailingBytes
            | DecodeError::NotAMap
            | DecodeError::MissingType
            | DecodeError::Malformed(_) => (ERROR_CODE_BAD_REQUEST, format!("malformed message: {self}")),
        }
    }
}

/// One client-to-server message (PROTOCOL.md §4), one variant per type. Strings are owned;
/// record values are the exact msgpack bytes received; free-form bodies that other modules
/// interpret (queries, hybrid and vector search) stay `rmpv::Value`s.
///
/// Optional fields are `None` when absent or nil: the client never sends nil for them
/// (PROTOCOL.md §2.3), and treating both alike is the lenient reading. The three fields where
/// nil means something (`record`, `orRecord`, `orTag`) are resolved into [`OpKind`].
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    Auth {
        token: String,
        device_token: Option<String>,
        protocol_version: Option<u64>,
    },
    DeviceHello {
        device_token: Option<String>,
    },
    Ping {
        /// The client's `Date.now()`, echoed in `PONG`.
        timestamp: u64,
    },
    ClientOp(ClientOp),
    OpBatch {
        ops: Vec<ClientOp>,
        /// The batch's default write concern.
        write_concern: Option<WriteConcern>,
        timeout: Option<u64>,
    },
    SyncInit {
        map_name: String,
        /// Informational: millis of the client's last sync, 0 if never.
        last_sync_timestamp: Option<u64>,
    },
    MerkleReqBucket {
        map_name: String,
        /// Hex-character path, `""` for the root; not validated here.
        path: String,
    },
    OrMapSyncInit {
        map_name: String,
        root_hash: u32,
        /// The client's root children: single hex character -> hash.
        bucket_hashes: BTreeMap<String, u32>,
        last_sync_timestamp: Option<u64>,
        claimed_epoch: Option<u64>,
    },
    OrMapMerkleReqBucket {
        map_name: String,
        path: String,
    },
    OrMapDiffRequest {
        map_name: String,
        keys: Vec<String>,
    },
    OrMapPushDiff {
        map_name: String,
        entries: Vec<OrMapEntry>,
    },
    ClientApplyAck {
        cursor: u64,
    },
    QuerySub {
        query_id: String,
        map_name: String,
        /// The `Query` map, parsed later by the query module.
        query: rmpv::Value,
        /// Projection.
        fields: Option<Vec<String>>,
    },
    QueryUnsub {
        query_id: String,
    },
    QuerySyncInit {
        query_id: String,
        root_hash: u32,
    },
    SqlQuery {
        sql: String,
        query_id: String,
    },
    TopicSub {
        topic: String,
    },
    TopicUnsub {
        topic: String,
    },
    TopicPub {
        topic: String,
        /// Any value; an absent `data` (JavaScript `undefined`) arrives as nil.
        data: ValueBytes,
    },
    LockRequest {
        request_id: String,
        name: String,
        /// Lease in ms; `None` = held until released or disconnect.
        ttl: Option<u64>,
    },
    LockRelease {
        request_id: Option<String>,
        name: String,
        fencing_token: u64,
    },
    CounterRequest {
        name: String,
    },
    CounterSync {
        name: String,
        /// From either key spelling (`p`/`n` or `positive`/`negative`, DECISIONS.md §1.5).
        state: PnCounterState,
    },
    Search {
        request_id: String,
        map_name: String,
        query: String,
        options: SearchOptions,
    },
    SearchSub {
        subscription_id: String,
        map_name: String,
        query: String,
        options: SearchOptions,
    },
    SearchUnsub {
        subscription_id: String,
    },
    HybridSearch {
        request_id: String,
        map_name: String,
        /// The whole payload map (`queryText`, `methods`, `k`, `queryVector`, ...).
        payload: rmpv::Value,
    },
    HybridSearchSub {
        subscription_id: String,
        map_name: String,
        payload: rmpv::Value,
    },
    HybridSearchUnsub {
        subscription_id: String,
    },
    VectorSearch {
        id: String,
        map_name: String,
        payload: rmpv::Value,
    },
    /// Not in the schema (PROTOCOL.md §4.9); kept raw, answered 501.
    HybridQuerySubscribe {
        /// The payload map, or nil when absent.
        payload: rmpv::Value,
    },
    HybridQueryUnsubscribe {
        payload: rmpv::Value,
    },
    EntryProcess {
        request_id: String,
        map_name: String,
        key: String,
        processor: EntryProcessor,
    },
    EntryProcessBatch {
        request_id: String,
        map_name: String,
        keys: Vec<String>,
        processor: EntryProcessor,
    },
    RegisterResolver {
        request_id: String,
        map_name: String,
        resolver: ResolverDef,
    },
    UnregisterResolver {
        request_id: String,
        map_name: String,
        resolver_name: String,
    },
    ListResolvers {
        request_id: String,
        map_name: Option<String>,
    },
    JournalSubscribe {
        /// Also the subscription id.
        request_id: String,
        from_sequence: Option<u64>,
        map_name: Option<String>,
        types: Option<Vec<JournalEventType>>,
    },
    JournalUnsubscribe {
        subscription_id: String,
    },
    JournalRead {
        request_id: String,
        /// Sent as a decimal string; a plain integer is accepted too.
        from_sequence: u64,
        limit: Option<u64>,
        map_name: Option<String>,
    },
    PartitionMapRequest {
        current_version: Option<u64>,
    },
    /// The inbound envelope (PROTOCOL.md §4.13): `data` holds big-endian-length-prefixed
    /// messages, split by [`unpack_batch`].
    Batch {
        data: Vec<u8>,
    },
}

impl ClientMessage {
    pub fn message_type(&self) -> MessageType {
        match self {
            ClientMessage::Auth { .. } => MessageType::Auth,
            ClientMessage::DeviceHello { .. } => MessageType::DeviceHello,
            ClientMessage::Ping { .. } => MessageType::Ping,
            ClientMessage::ClientOp(_) => MessageType::ClientOp,
            ClientMessage::OpBatch { .. } => MessageType::OpBatch,
            ClientMessage::SyncInit { .. } => MessageType::SyncInit,
            ClientMessage::MerkleReqBucket { .. } => MessageType::MerkleReqBucket,
            ClientMessage::OrMapSyncInit { .. } => MessageType::OrMapSyncInit,
            ClientMessage::OrMapMerkleReqBucket { .. } => MessageType::OrMapMerkleReqBucket,
            ClientMessage::OrMapDiffRequest { .. } => MessageType::OrMapDiffRequest,
            ClientMessage::OrMapPushDiff { .. } => MessageType::OrMapPushDiff,
            ClientMessage::ClientApplyAck { .. } => MessageType::ClientApplyAck,
            ClientMessage::QuerySub { .. } => MessageType::QuerySub,
            ClientMessage::QueryUnsub { .. } => MessageType::QueryUnsub,
            ClientMessage::QuerySyncInit { .. } => MessageType::QuerySyncInit,
            ClientMessage::SqlQuery { .. } => MessageType::SqlQuery,
            ClientMessage::TopicSub { .. } => MessageType::TopicSub,
            ClientMessage::TopicUnsub { .. } => MessageType::TopicUnsub,
            ClientMessage::TopicPub { .. } => MessageType::TopicPub,
            ClientMessage::LockRequest { .. } => MessageType::LockRequest,
            ClientMessage::LockRelease { .. } => MessageType::LockRelease,
            ClientMessage::CounterRequest { .. } => MessageType::CounterRequest,
            ClientMessage::CounterSync { .. } => MessageType::CounterSync,
            ClientMessage::Search { .. } => MessageType::Search,
            ClientMessage::SearchSub { .. } => MessageType::SearchSub,
            ClientMessage::SearchUnsub { .. } => MessageType::SearchUnsub,
            ClientMessage::HybridSearch { .. } => MessageType::HybridSearch,
            ClientMessage::HybridSearchSub { .. } => MessageType::HybridSearchSub,
            ClientMessage::HybridSearchUnsub { .. } => MessageType::HybridSearchUnsub,
            ClientMessage::VectorSearch { .. } => MessageType::VectorSearch,
            ClientMessage::HybridQuerySubscribe { .. } => MessageType::HybridQuerySubscribe,
            ClientMessage::HybridQueryUnsubscribe { .. } => MessageType::HybridQueryUnsubscribe,
            ClientMessage::EntryProcess { .. } => MessageType::EntryProcess,
            ClientMessage::EntryProcessBatch { .. } => MessageType::EntryProcessBatch,
            ClientMessage::RegisterResolver { .. } => MessageType::RegisterResolver,
            ClientMessage::UnregisterResolver { .. } => MessageType::UnregisterResolver,
            ClientMessage::ListResolvers { .. } => MessageType::ListResolvers,
            ClientMessage::JournalSubscribe { .. } => MessageType::JournalSubscribe,
            ClientMessage::JournalUnsubscribe { .. } => MessageType::JournalUnsubscribe,
            ClientMessage::JournalRead { .. } => MessageType::JournalRead,
            ClientMessage::PartitionMapRequest { .. } => MessageType::PartitionMapRequest,
            ClientMessage::Batch { .. } => MessageType::Batch,
        }
    }
}

/// One write (PROTOCOL.md §4.0 `ClientOp`: the payload of `CLIENT_OP`, an element of
/// `OP_BATCH.payload.ops`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOp {
    /// The client's op-log sequence number as a decimal string; `OP_ACK.lastId` echoes the
    /// last one of a batch.
    pub id: Option<CompactString>,
    pub map_name: CompactString,
    pub key: CompactString,
    pub kind: OpKind,
    pub write_concern: Option<WriteConcern>,
    pub timeout: Option<u64>,
}

/// What an op asks for, classified as PROTOCOL.md §4.0 recommends with DECISIONS.md §1.7:
/// (1) `opType` REMOVE, or `record` present and nil: LWW remove; (2) else `orRecord` not nil:
/// OR add; (3) else `orTag` not nil: OR remove; (4) else `record` not nil: LWW put, or a
/// remove when its value is nil; (5) no record at all: nothing to apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// An LWW write; the record's value is `Some`.
    Put(LwwRecord),
    /// An LWW remove. `record` is the tombstone (`value: None`, no TTL) carrying the op's
    /// record timestamp, or else the op's own top-level `timestamp`; `None` when the op has
    /// neither, meaning a tombstone at the owning shard's HLC now (DECISIONS.md §1.7).
    Remove {
        record: Option<LwwRecord>,
    },
    OrAdd(OrRecord),
    /// Removes exactly this tag (DECISIONS.md §1.3).
    OrRemove {
        tag: String,
    },
    /// Nothing to apply; still acknowledged.
    Noop,
}

/// `SearchOptions` of `SEARCH` / `SEARCH_SUB` (PROTOCOL.md §4.9). Absent fields are `None`
/// (defaults: limit 10, minScore 0) or an empty boost map.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SearchOptions {
    pub limit: Option<u64>,
    pub min_score: Option<f64>,
    /// Field name -> score multiplier.
    pub boost: BTreeMap<String, f64>,
}

/// The `processor` of `ENTRY_PROCESS(_BATCH)` (PROTOCOL.md §4.10). Length bounds are the
/// handler's to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryProcessor {
    pub name: String,
    pub code: String,
    /// Present (nil included) or absent, since the code can tell `null` from `undefined`.
    pub args: Option<ValueBytes>,
}

/// The `resolver` of `REGISTER_RESOLVER` (PROTOCOL.md §4.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverDef {
    pub name: String,
    pub code: String,
    pub priority: Option<u64>,
    pub key_pattern: Option<String>,
}

/// Decodes one client frame. The frame must be exactly one msgpack map, nested at most
/// `limits.max_depth` deep, whose `type` is a client-to-server type with the fields §4 gives it.
/// Writes (`OP_BATCH`, `CLIENT_OP`) take a one-pass shortcut (`write_path`), which leaves
/// whatever it is unsure of, errors included, to the general decoder.
pub fn decode_client_message(frame: &[u8], limits: &DecodeLimits) -> Result<ClientMessage, DecodeError> {
    match super::write_path::decode_write(frame, limits) {
        Some(message) => Ok(message),
        None => decode_general(frame, limits),
    }
}

/// [`decode_client_message`] without the write path's shortcut: the reference the shortcut
/// must agree with.
pub(crate) fn decode_general(frame: &[u8], limits: &DecodeLimits) -> Result<ClientMessage, DecodeError> {
    let scanned = scan_map(frame, limits)?;
    let top = Fields::of(scanned.root(), Path::root("message"))?;
    let type_raw = top.non_nil("type").ok_or(DecodeError::MissingType)?;
    let Some(type_text) = type_raw.as_str() else {
        return Err(DecodeError::Malformed(format!("type: expected string, got {}", type_raw.kind_name())));
    };
    let Some(message_type) = MessageType::parse(type_text) else {
        return Err(DecodeError::UnknownType(type_text.to_owned()));
    };
    if message_type.direction() != Direction::ClientToServer {
        return Err(DecodeError::ServerToClientType(type_text.to_owned()));
    }
    let top = Fields { path: Path::root(message_type.as_str()), ..top };
    decode_body(message_type, &top, limits)
}

/// Checks that `frame` is exactly one msgpack map nested at most `limits.max_depth` deep.
pub(super) fn scan_map<'a>(frame: &'a [u8], limits: &DecodeLimits) -> Result<Scanned<'a>, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::NotMsgpack("empty frame".to_owned()));
    }
    let scanned = scan(frame, limits.max_depth).map_err(|error| match error {
        ScanError::TooDeep => DecodeError::TooDeep,
        other => DecodeError::NotMsgpack(other.to_string()),
    })?;
    if scanned.len() != frame.len() {
        return Err(DecodeError::TrailingBytes);
    }
    if scanned.root().map_entries().is_none() {
        return Err(DecodeError::NotAMap);
    }
    Ok(scanned)
}

/// Splits the `data` of an inbound `BATCH` (PROTOCOL.md §4.13: repeated big-endian u32 length,
/// then that many bytes of one message) into its messages, which are not decoded here.
pub fn unpack_batch(data: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
    const LENGTH_PREFIX_BYTES: usize = 4;
    let mut items = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if items.len() == BATCH_ITEMS_MAX {
            return Err(DecodeError::BatchTooLarge);
        }
        let offset = data.len() - rest.len();
        let Some((prefix, tail)) = rest.split_first_chunk::<LENGTH_PREFIX_BYTES>() else {
            return Err(DecodeError::Malformed(format!("BATCH.data: truncated length prefix at byte {offset}")));
        };
        let item_len = u32::from_be_bytes(*prefix) as usize;
        if tail.len() < item_len {
            return Err(DecodeError::Malformed(format!(
                "BATCH.data: item {} at byte {offset} declares {item_len} bytes, {} remain",
                items.len(),
                tail.len()
            )));
        }
        let (item, tail) = tail.split_at(item_len);
        items.push(item);
        rest = tail;
    }
    Ok(items)
}

fn decode_body(
    message_type: MessageType,
    message: &Fields<'_, '_>,
    limits: &DecodeLimits,
) -> Result<ClientMessage, DecodeError> {
    let raw_value = |raw: Raw<'_>, path: &Path<'_>| rmpv_value(raw, path, limits);
    Ok(match message_type {
        MessageType::Auth => ClientMessage::Auth {
            token: message.req("token", string)?,
            device_token: message.opt("deviceToken", string)?,
            protocol_version: message.opt("protocolVersion", uint)?,
        },
        MessageType::DeviceHello => ClientMessage::DeviceHello { device_token: message.opt("deviceToken", string)? },
        MessageType::Ping => ClientMessage::Ping { timestamp: message.req("timestamp", uint)? },
        MessageType::ClientOp => {
            ClientMessage::ClientOp(client_op(message.req_raw("payload")?, &message.path("payload"))?)
        }
        MessageType::OpBatch => {
            let payload = message.map("payload")?;
            ClientMessage::OpBatch {
                ops: payload.req("ops", |raw, path| list(raw, path, client_op))?,
                write_concern: payload.opt("writeConcern", write_concern)?,
                timeout: payload.opt("timeout", uint)?,
            }
        }
        MessageType::SyncInit => ClientMessage::SyncInit {
            map_name: message.req("mapName", string)?,
            last_sync_timestamp: message.opt("lastSyncTimestamp", uint)?,
        },
        MessageType::MerkleReqBucket => {
            let payload = message.map("payload")?;
            ClientMessage::MerkleReqBucket {
                map_name: payload.req("mapName", string)?,
                path: payload.req("path", string)?,
            }
        }
        MessageType::OrMapSyncInit => ClientMessage::OrMapSyncInit {
            map_name: message.req("mapName", string)?,
            root_hash: message.req("rootHash", uint32)?,
            bucket_hashes: message.req("bucketHashes", |raw, path| string_map(raw, path, uint32))?,
            last_sync_timestamp: message.opt("lastSyncTimestamp", uint)?,
            claimed_epoch: message.opt("claimedEpoch", uint)?,
        },
        MessageType::OrMapMerkleReqBucket => {
            let payload = message.map("payload")?;
            ClientMessage::OrMapMerkleReqBucket {
                map_name: payload.req("mapName", string)?,
                path: payload.req("path", string)?,
            }
        }
        MessageType::OrMapDiffRequest => {
            let payload = message.map("payload")?;
            ClientMessage::OrMapDiffRequest {
                map_name: payload.req("mapName", string)?,
                keys: payload.req("keys", |raw, path| list(raw, path, string))?,
            }
        }
        MessageType::OrMapPushDiff => {
            let payload = message.map("payload")?;
            ClientMessage::OrMapPushDiff {
                map_name: payload.req("mapName", string)?,
                entries: payload.req("entries", |raw, path| list(raw, path, or_map_entry))?,
            }
        }
        MessageType::ClientApplyAck => ClientMessage::ClientApplyAck { cursor: message.req("cursor", uint)? },
        MessageType::QuerySub => {
            let payload = message.map("payload")?;
            ClientMessage::QuerySub {
                query_id: payload.req("queryId", string)?,
                map_name: payload.req("mapName", string)?,
                query: payload.req("query", |raw, path| {
                    expect_map(raw, path)?;
                    raw_value(raw, path)
                })?,
                fields: payload.opt("fields", |raw, path| list(raw, path, string))?,
            }
        }
        MessageType::QueryUnsub => {
            let payload = message.map("payload")?;
            ClientMessage::QueryUnsub { query_id: payload.req("queryId", string)? }
        }
        MessageType::QuerySyncInit => {
            let payload = message.map("payload")?;
            ClientMessage::QuerySyncInit {
                query_id: payload.req("queryId", string)?,
                root_hash: payload.req("rootHash", uint32)?,
            }
        }
        MessageType::SqlQuery => {
            let payload = message.map("payload")?;
            ClientMessage::SqlQuery { sql: payload.req("sql", string)?, query_id: payload.req("queryId", string)? }
        }
        MessageType::TopicSub => {
            let payload = message.map("payload")?;
            ClientMessage::TopicSub { topic: payload.req("topic", string)? }
        }
        MessageType::TopicUnsub => {
            let payload = message.map("payload")?;
            ClientMessage::TopicUnsub { topic: payload.req("topic", string)? }
        }
        MessageType::TopicPub => {
            let payload = message.map("payload")?;
            let data = match payload.present("data") {
                Some(raw) => value_bytes(raw),
                None => ValueBytes::from(NIL_BYTES),
            };
            ClientMessage::TopicPub { topic: payload.req("topic", string)?, data }
        }
        MessageType::LockRequest => {
            let payload = message.map("payload")?;
            ClientMessage::LockRequest {
                request_id: payload.req("requestId", string)?,
                name: payload.req("name", string)?,
                ttl: payload.opt("ttl", uint)?,
            }
        }
        MessageType::LockRelease => {
            let payload = message.map("payload")?;
            ClientMessage::LockRelease {
                request_id: payload.opt("requestId", string)?,
                name: payload.req("name", string)?,
                fencing_token: payload.req("fencingToken", uint)?,
            }
        }
        MessageType::CounterRequest => {
            let payload = message.map("payload")?;
            ClientMessage::CounterRequest { name: payload.req("name", string)? }
        }
        MessageType::CounterSync => {
            let payload = message.map("payload")?;
            ClientMessage::CounterSync {
                name: payload.req("name", string)?,
                state: payload.req("state", counter_state)?,
            }
        }
        MessageType::Search => {
            let payload = message.map("payload")?;
            ClientMessage::Search {
                request_id: payload.req("requestId", string)?,
                map_name: payload.req("mapName", string)?,
                query: payload.req("query", string)?,
                options: payload.opt("options", search_options)?.unwrap_or_default(),
            }
        }
        MessageType::SearchSub => {
            let payload = message.map("payload")?;
            ClientMessage::SearchSub {
                subscription_id: payload.req("subscriptionId", string)?,
                map_name: payload.req("mapName", string)?,
                query: payload.req("query", string)?,
                options: payload.opt("options", search_options)?.unwrap_or_default(),
            }
        }
        MessageType::SearchUnsub => {
            let payload = message.map("payload")?;
            ClientMessage::SearchUnsub { subscription_id: payload.req("subscriptionId", string)? }
        }
        MessageType::HybridSearch => {
            let payload = message.map("payload")?;
            ClientMessage::HybridSearch {
                request_id: payload.req("requestId", string)?,
                map_name: payload.req("mapName", string)?,
                payload: raw_value(message.req_raw("payload")?, &message.path("payload"))?,
            }
        }
        MessageType::HybridSearchSub => {
            let payload = message.map("payload")?;
            ClientMessage::HybridSearchSub {
                subscription_id: payload.req("subscriptionId", string)?,
                map_name: payload.req("mapName", string)?,
                payload: raw_value(message.req_raw("payload")?, &message.path("payload"))?,
            }
        }
        MessageType::HybridSearchUnsub => {
            let payload = message.map("payload")?;
            ClientMessage::HybridSearchUnsub { subscription_id: payload.req("subscriptionId", string)? }
        }
        MessageType::VectorSearch => {
            let payload = message.map("payload")?;
            ClientMessage::VectorSearch {
                id: payload.req("id", string)?,
                map_name: payload.req("mapName", string)?,
                payload: raw_value(message.req_raw("payload")?, &message.path("payload"))?,
            }
        }
        MessageType::HybridQuerySubscribe => ClientMessage::HybridQuerySubscribe {
            payload: message.opt("payload", raw_value)?.unwrap_or(rmpv::Value::Nil),
        },
        MessageType::HybridQueryUnsubscribe => ClientMessage::HybridQueryUnsubscribe {
            payload: message.opt("payload", raw_value)?.unwrap_or(rmpv::Value::Nil),
        },
        MessageType::EntryProcess => ClientMessage::EntryProcess {
            request_id: message.req("requestId", string)?,
            map_name: message.req("mapName", string)?,
            key: message.req("key", string)?,
            processor: message.req("processor", entry_processor)?,
        },
        MessageType::EntryProcessBatch => ClientMessage::EntryProcessBatch {
            request_id: message.req("requestId", string)?,
            map_name: message.req("mapName", string)?,
            keys: message.req("keys", |raw, path| list(raw, path, string))?,
            processor: message.req("processor", entry_processor)?,
        },
        MessageType::RegisterResolver => ClientMessage::RegisterResolver {
            request_id: message.req("requestId", string)?,
            map_name: message.req("mapName", string)?,
            resolver: message.req("resolver", resolver_def)?,
        },
        MessageType::UnregisterResolver => ClientMessage::UnregisterResolver {
            request_id: message.req("requestId", string)?,
            map_name: message.req("mapName", string)?,
            resolver_name: message.req("resolverName", string)?,
        },
        MessageType::ListResolvers => ClientMessage::ListResolvers {
            request_id: message.req("requestId", string)?,
            map_name: message.opt("mapName", string)?,
        },
        MessageType::JournalSubscribe => ClientMessage::JournalSubscribe {
            request_id: message.req("requestId", string)?,
            from_sequence: message.opt("fromSequence", sequence)?,
            map_name: message.opt("mapName", string)?,
            types: message.opt("types", |raw, path| list(raw, path, journal_event_type))?,
        },
        MessageType::JournalUnsubscribe => {
            ClientMessage::JournalUnsubscribe { subscription_id: message.req("subscriptionId", string)? }
        }
        MessageType::JournalRead => ClientMessage::JournalRead {
            request_id: message.req("requestId", string)?,
            from_sequence: message.req("fromSequence", sequence)?,
            limit: message.opt("limit", uint)?,
            map_name: message.opt("mapName", string)?,
        },
        MessageType::PartitionMapRequest => {
            let current_version = match message.non_nil("payload") {
                None => None,
                Some(raw) => Fields::of(raw, message.path("payload"))?.opt("currentVersion", uint)?,
            };
            ClientMessage::PartitionMapRequest { current_version }
        }
        MessageType::Batch => ClientMessage::Batch {
            data: message.req("data", |raw, path| match raw.as_bin() {
                Some(data) => Ok(data.to_vec()),
                None => Err(path.expected("binary", raw)),
            })?,
        },
        other => unreachable!("{} is not a client-to-server type", other.as_str()),
    })
}

/// Where a field sits in the message, for error texts like `OP_BATCH.payload.ops[2].key`.
/// A chain of borrowed segments, so building it on the success path costs nothing.
#[derive(Clone, Copy)]
pub(super) struct Path<'p> {
    parent: Option<&'p Path<'p>>,
    segment: Segment<'p>,
}

#[derive(Clone, Copy)]
enum Segment<'p> {
    Name(&'p str),
    Index(usize),
}

impl<'p> Path<'p> {
    pub(super) fn root(name: &'p str) -> Path<'p> {
        Path { parent: None, segment: Segment::Name(name) }
    }

    fn field<'q>(&'q self, name: &'q str) -> Path<'q> {
        Path { parent: Some(self), segment: Segment::Name(name) }
    }

    fn index(&self, index: usize) -> Path<'_> {
        Path { parent: Some(self), segment: Segment::Index(index) }
    }

    fn malformed(&self, what: impl fmt::Display) -> DecodeError {
        DecodeError::Malformed(format!("{self}: {what}"))
    }

    fn expected(&self, wanted: &str, got: Raw<'_>) -> DecodeError {
        self.malformed(format_args!("expected {wanted}, got {}", got.kind_name()))
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Recursion here follows the schema's nesting (a handful of levels), not the input's.
        if let Some(parent) = self.parent {
            write!(f, "{parent}")?;
        }
        match self.segment {
            Segment::Name(name) if self.parent.is_some() => write!(f, ".{name}"),
            Segment::Name(name) => write!(f, "{name}"),
            Segment::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// Fields of one msgpack map kept before any is read, so they may come in any order.
/// Only string keys are kept; others cannot name a field and are ignored like unknown fields.
/// A key that repeats takes its last value, as JavaScript would.
pub(super) struct Fields<'a, 'p> {
    /// Keys as their UTF-8 bytes: they are only compared with field names, so validating
    /// them would be wasted work.
    entries: Vec<(&'a [u8], Raw<'a>)>,
    path: Path<'p>,
}

/// Entries reserved up front for one map; a larger map grows the vector as it is read.
const FIELDS_PREALLOCATED_MAX: usize = 16;

impl<'a, 'p> Fields<'a, 'p> {
    pub(super) fn of(raw: Raw<'a>, path: Path<'p>) -> Result<Fields<'a, 'p>, DecodeError> {
        let Some(map) = raw.map_entries() else {
            return Err(path.expected("map", raw));
        };
        let mut entries = Vec::with_capacity(map.len().min(FIELDS_PREALLOCATED_MAX));
        for (key, value) in map {
            if let Some(name) = key.as_str_bytes() {
                entries.push((name, value));
            }
        }
        Ok(Fields { entries, path })
    }

    fn path<'q>(&'q self, name: &'q str) -> Path<'q> {
        self.path.field(name)
    }

    /// The field, nil included; `None` only when absent.
    pub(super) fn present(&self, name: &str) -> Option<Raw<'a>> {
        self.entries.iter().rev().find(|(key, _)| *key == name.as_bytes()).map(|&(_, value)| value)
    }

    /// The field unless it is absent or nil.
    pub(super) fn non_nil(&self, name: &str) -> Option<Raw<'a>> {
        self.present(name).filter(|value| !value.is_nil())
    }

    fn req_raw(&self, name: &str) -> Result<Raw<'a>, DecodeError> {
        self.present(name).ok_or_else(|| self.path(name).malformed("missing"))
    }

    /// A required field; nil is handed to `convert`, which rejects it with its type.
    pub(super) fn req<T>(
        &self,
        name: &str,
        convert: impl FnOnce(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        required(self.present(name), &self.path, name, convert)
    }

    /// An optional field: `None` when absent or nil.
    pub(super) fn opt<T>(
        &self,
        name: &str,
        convert: impl FnOnce(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        optional(self.present(name), &self.path, name, convert)
    }

    /// A required map field, ready to read.
    fn map(&self, name: &'static str) -> Result<Fields<'a, '_>, DecodeError> {
        Fields::of(self.req_raw(name)?, self.path(name))
    }
}

/// The encoding of nil, for a value that is absent on the wire but must be stored as nil.
const NIL_BYTES: &[u8] = &[0xc0];

fn value_bytes(raw: Raw<'_>) -> ValueBytes {
    ValueBytes::from(raw.bytes())
}

/// A string borrowed from the frame, for fields that are only compared.
fn str_ref<'a>(raw: Raw<'a>, path: &Path<'_>) -> Result<&'a str, DecodeError> {
    raw.as_str().ok_or_else(|| path.expected("string", raw))
}

pub(super) fn string(raw: Raw<'_>, path: &Path<'_>) -> Result<String, DecodeError> {
    raw.as_str().map(str::to_owned).ok_or_else(|| path.expected("string", raw))
}

pub(super) fn uint(raw: Raw<'_>, path: &Path<'_>) -> Result<u64, DecodeError> {
    raw.as_u64().ok_or_else(|| match raw.kind_name() {
        "float" => path.malformed("expected a whole non-negative number, got a fraction or out of range"),
        "integer" => path.malformed("expected a non-negative integer, got a negative one"),
        _ => path.expected("integer", raw),
    })
}

fn uint32(raw: Raw<'_>, path: &Path<'_>) -> Result<u32, DecodeError> {
    let value = uint(raw, path)?;
    u32::try_from(value).map_err(|_| path.malformed(format_args!("{value} exceeds u32")))
}

fn expect_map(raw: Raw<'_>, path: &Path<'_>) -> Result<(), DecodeError> {
    match raw.map_entries() {
        Some(_) => Ok(()),
        None => Err(path.expected("map", raw)),
    }
}

/// Items reserved up front for one decoded array.
const LIST_PREALLOCATED_MAX: usize = 1_024;

/// Every item of an array, converted.
pub(super) fn list<'a, T>(
    raw: Raw<'a>,
    path: &Path<'_>,
    convert: impl Fn(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let Some(items) = raw.array_items() else {
        return Err(path.expected("array", raw));
    };
    // The declared length is bounded by the frame's bytes, but one byte of nil per item
    // would still reserve a full `T` each; reserve a little and let real items grow it.
    let mut converted = Vec::with_capacity(items.len().min(LIST_PREALLOCATED_MAX));
    for (index, item) in items.enumerate() {
        converted.push(convert(item, &path.index(index))?);
    }
    Ok(converted)
}

/// A map with string keys and converted values.
fn string_map<'a, T>(
    raw: Raw<'a>,
    path: &Path<'_>,
    convert: impl Fn(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
) -> Result<BTreeMap<String, T>, DecodeError> {
    let Some(entries) = raw.map_entries() else {
        return Err(path.expected("map", raw));
    };
    let mut converted = BTreeMap::new();
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            return Err(path.malformed(format_args!("expected string keys, got {}", key.kind_name())));
        };
        converted.insert(name.to_owned(), convert(value, &path.field(name))?);
    }
    Ok(converted)
}

/// A free-form body as an `rmpv::Value`. The frame's depth was bounded by the scan, so this
/// recursive decoder runs at most that deep.
pub(super) fn rmpv_value(raw: Raw<'_>, path: &Path<'_>, limits: &DecodeLimits) -> Result<rmpv::Value, DecodeError> {
    // rmpv spends two units of its (u16) depth budget per container and up to three on a
    // leaf; the scan already bounded the real depth, so give it room for that and no more.
    let depth_max = limits.max_depth.saturating_mul(2).saturating_add(3).min(usize::from(u16::MAX));
    rmpv::decode::read_value_with_max_depth(&mut raw.bytes(), depth_max).map_err(|error| match error {
        rmpv::decode::Error::DepthLimitExceeded => DecodeError::TooDeep,
        other => path.malformed(other),
    })
}

fn write_concern(raw: Raw<'_>, path: &Path<'_>) -> Result<WriteConcern, DecodeError> {
    let text = raw.as_str().ok_or_else(|| path.expected("string", raw))?;
    WriteConcern::parse(text).ok_or_else(|| path.malformed(format_args!("unknown write concern {text:?}")))
}

fn journal_event_type(raw: Raw<'_>, path: &Path<'_>) -> Result<JournalEventType, DecodeError> {
    let text = raw.as_str().ok_or_else(|| path.expected("string", raw))?;
    JournalEventType::parse(text).ok_or_else(|| path.malformed(format_args!("unknown journal event type {text:?}")))
}

/// A journal sequence: a decimal string as the client sends it, or an integer.
fn sequence(raw: Raw<'_>, path: &Path<'_>) -> Result<u64, DecodeError> {
    match raw.as_str() {
        Some(text) => {
            text.parse().map_err(|_| path.malformed(format_args!("expected a decimal sequence, got {text:?}")))
        }
        None => uint(raw, path),
    }
}

/// One pass over a map's string-keyed entries, for the decoders every write op goes through:
/// `visit` keeps the values it wants in locals, so nothing is collected or searched (`Fields`
/// does that for the other messages). A repeated key takes its last value, as in `Fields`.
fn visit_fields<'a>(raw: Raw<'a>, path: &Path<'_>, mut visit: impl FnMut(&[u8], Raw<'a>)) -> Result<(), DecodeError> {
    let Some(map) = raw.map_entries() else {
        return Err(path.expected("map", raw));
    };
    for (key, value) in map {
        if let Some(name) = key.as_str_bytes() {
            visit(name, value);
        }
    }
    Ok(())
}

/// A field that must be present (nil is handed to `convert`); `Fields::req` and the visiting
/// decoders both answer through it, so their errors read the same.
fn required<'a, T>(
    value: Option<Raw<'a>>,
    path: &Path<'_>,
    name: &str,
    convert: impl FnOnce(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let field = path.field(name);
    match value {
        Some(raw) => convert(raw, &field),
        None => Err(field.malformed("missing")),
    }
}

/// An optional field: `None` when absent or nil (`Fields::opt` and the visiting decoders).
fn optional<'a, T>(
    value: Option<Raw<'a>>,
    path: &Path<'_>,
    name: &str,
    convert: impl FnOnce(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    match value.filter(|raw| !raw.is_nil()) {
        None => Ok(None),
        Some(raw) => convert(raw, &path.field(name)).map(Some),
    }
}

pub(super) fn timestamp(raw: Raw<'_>, path: &Path<'_>) -> Result<Timestamp, DecodeError> {
    let (mut millis, mut counter, mut node_id) = (None, None, None);
    visit_fields(raw, path, |name, value| match name {
        b"millis" => millis = Some(value),
        b"counter" => counter = Some(value),
        b"nodeId" => node_id = Some(value),
        _ => {}
    })?;
    Ok(Timestamp {
        millis: required(millis, path, "millis", uint)?,
        counter: required(counter, path, "counter", uint32)?,
        node_id: required(node_id, path, "nodeId", str_ref)?.into(),
    })
}

/// An `LWWRecord` (PROTOCOL.md §4.0). `value` is required; nil makes a tombstone.
fn lww_record(raw: Raw<'_>, path: &Path<'_>) -> Result<LwwRecord, DecodeError> {
    let (mut value, mut stamp, mut ttl_ms) = (None, None, None);
    visit_fields(raw, path, |name, field| match name {
        b"value" => value = Some(field),
        b"timestamp" => stamp = Some(field),
        b"ttlMs" => ttl_ms = Some(field),
        _ => {}
    })?;
    let value = required(value, path, "value", |raw, _| Ok(raw))?;
    Ok(LwwRecord {
        value: (!value.is_nil()).then(|| value_bytes(value)),
        timestamp: required(stamp, path, "timestamp", timestamp)?,
        ttl_ms: optional(ttl_ms, path, "ttlMs", uint)?,
    })
}

/// An `ORMapRecord` (PROTOCOL.md §4.0). Its `value` may be nil: it is one element of a set.
fn or_record(raw: Raw<'_>, path: &Path<'_>) -> Result<OrRecord, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(OrRecord {
        value: value_bytes(fields.req_raw("value")?),
        timestamp: fields.req("timestamp", timestamp)?,
        tag: fields.req("tag", string)?,
        ttl_ms: fields.opt("ttlMs", uint)?,
    })
}

fn or_map_entry(raw: Raw<'_>, path: &Path<'_>) -> Result<OrMapEntry, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(OrMapEntry {
        key: fields.req("key", string)?,
        records: fields.req("records", |raw, path| list(raw, path, or_record))?,
        tombstones: fields.req("tombstones", |raw, path| list(raw, path, string))?,
    })
}

fn tombstone(timestamp: Timestamp) -> LwwRecord {
    LwwRecord { value: None, timestamp, ttl_ms: None }
}

pub(super) fn client_op(raw: Raw<'_>, path: &Path<'_>) -> Result<ClientOp, DecodeError> {
    let (mut id, mut map_name, mut key, mut op_type, mut record) = (None, None, None, None, None);
    let (mut or_record_raw, mut or_tag, mut op_timestamp, mut concern, mut timeout) = (None, None, None, None, None);
    visit_fields(raw, path, |name, value| match name {
        b"id" => id = Some(value),
        b"mapName" => map_name = Some(value),
        b"key" => key = Some(value),
        b"opType" => op_type = Some(value),
        b"record" => record = Some(value),
        b"orRecord" => or_record_raw = Some(value),
        b"orTag" => or_tag = Some(value),
        b"timestamp" => op_timestamp = Some(value),
        b"writeConcern" => concern = Some(value),
        b"timeout" => timeout = Some(value),
        _ => {}
    })?;
    let op_type = optional(op_type, path, "opType", str_ref)?;
    // `record`, `orRecord` and `orTag` are `.nullable().optional()`: absent and nil differ.
    let record_is_nil = record.is_some_and(|record| record.is_nil());
    let kind = if op_type == Some("REMOVE") || record_is_nil {
        let timestamp = match record.filter(|record| !record.is_nil()) {
            Some(record) => Some(lww_record(record, &path.field("record"))?.timestamp),
            // DECISIONS.md §1.7: a remove without a record takes the op's own timestamp.
            None => optional(op_timestamp, path, "timestamp", timestamp)?,
        };
        OpKind::Remove { record: timestamp.map(tombstone) }
    } else if let Some(or_record_raw) = or_record_raw.filter(|raw| !raw.is_nil()) {
        OpKind::OrAdd(or_record(or_record_raw, &path.field("orRecord"))?)
    } else if let Some(tag) = or_tag.filter(|raw| !raw.is_nil()) {
        OpKind::OrRemove { tag: string(tag, &path.field("orTag"))? }
    } else if let Some(record) = record {
        let record = lww_record(record, &path.field("record"))?;
        match record.value {
            Some(_) => OpKind::Put(record),
            // DECISIONS.md §1.7: a PUT whose value is nil is a remove.
            None => OpKind::Remove { record: Some(tombstone(record.timestamp)) },
        }
    } else {
        OpKind::Noop
    };
    Ok(ClientOp {
        id: optional(id, path, "id", str_ref)?.map(CompactString::from),
        map_name: required(map_name, path, "mapName", str_ref)?.into(),
        key: required(key, path, "key", str_ref)?.into(),
        kind,
        write_concern: optional(concern, path, "writeConcern", write_concern)?,
        timeout: optional(timeout, path, "timeout", uint)?,
    })
}

/// Per-node counter totals must be finite and non-negative: merging takes maxima, which a NaN
/// or a negative total would corrupt.
fn counter_total(raw: Raw<'_>, path: &Path<'_>) -> Result<f64, DecodeError> {
    let total = raw.as_f64().ok_or_else(|| path.expected("number", raw))?;
    if !total.is_finite() || total < 0.0 {
        return Err(path.malformed(format_args!("expected a finite non-negative total, got {total}")));
    }
    Ok(total)
}

/// `PNCounterState` in either spelling (DECISIONS.md §1.5). If both spellings come, a node's
/// totals are merged by maximum, the counter's own merge rule, so nothing is lost.
fn counter_state(raw: Raw<'_>, path: &Path<'_>) -> Result<PnCounterState, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    let mut state = PnCounterState::default();
    let spellings = [("p", true), ("positive", true), ("n", false), ("negative", false)];
    for (name, is_positive) in spellings {
        let Some(totals) = fields.opt(name, |raw, path| string_map(raw, path, counter_total))? else {
            continue;
        };
        let side = if is_positive { &mut state.positive } else { &mut state.negative };
        for (node, total) in totals {
            let slot = side.entry(node).or_insert(total);
            *slot = slot.max(total);
        }
    }
    Ok(state)
}

pub(super) fn search_options(raw: Raw<'_>, path: &Path<'_>) -> Result<SearchOptions, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    let number = |raw: Raw<'_>, path: &Path<'_>| raw.as_f64().ok_or_else(|| path.expected("number", raw));
    Ok(SearchOptions {
        limit: fields.opt("limit", uint)?,
        min_score: fields.opt("minScore", number)?,
        boost: fields.opt("boost", |raw, path| string_map(raw, path, number))?.unwrap_or_default(),
    })
}

fn entry_processor(raw: Raw<'_>, path: &Path<'_>) -> Result<EntryProcessor, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(EntryProcessor {
        name: fields.req("name", string)?,
        code: fields.req("code", string)?,
        args: fields.present("args").map(value_bytes),
    })
}

fn resolver_def(raw: Raw<'_>, path: &Path<'_>) -> Result<ResolverDef, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(ResolverDef {
        name: fields.req("name", string)?,
        code: fields.req("code", string)?,
        priority: fields.opt("priority", uint)?,
        key_pattern: fields.opt("keyPattern", string)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(key, value)| (Value::from(key), value)).collect())
    }

    fn frame(value: &Value) -> Vec<u8> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        bytes
    }

    fn decode(value: Value) -> Result<ClientMessage, DecodeError> {
        decode_client_message(&frame(&value), &DecodeLimits::default())
    }

    /// A timestamp as the client sends it: millis as float64 (PROTOCOL.md §2.1).
    fn ts(millis: u64, counter: u32, node_id: &str) -> Value {
        map(vec![("millis", Value::F64(millis as f64)), ("counter", counter.into()), ("nodeId", node_id.into())])
    }

    fn model_ts(millis: u64, counter: u32, node_id: &str) -> Timestamp {
        Timestamp::new(millis, counter, node_id)
    }

    fn malformed<T: fmt::Debug>(result: Result<T, DecodeError>) -> String {
        match result {
            Err(DecodeError::Malformed(what)) => what,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// Decodes a `CLIENT_OP` whose payload has `mapName: "m"`, `key: "k"` and `extra` fields.
    fn op(extra: Vec<(&str, Value)>) -> Result<ClientOp, DecodeError> {
        let mut payload = vec![("mapName", Value::from("m")), ("key", Value::from("k"))];
        payload.extend(extra);
        match decode(map(vec![("type", "CLIENT_OP".into()), ("payload", map(payload))]))? {
            ClientMessage::ClientOp(op) => Ok(op),
            other => panic!("expected ClientOp, got {other:?}"),
        }
    }

    fn kind(extra: Vec<(&str, Value)>) -> OpKind {
        op(extra).unwrap().kind
    }

    fn bytes_of(value: &Value) -> ValueBytes {
        ValueBytes::from(frame(value))
    }

    fn lww(value: Value, timestamp: Value) -> Value {
        map(vec![("value", value), ("timestamp", timestamp)])
    }

    /// Goal: PROTOCOL.md §2.1 integer tolerance. `millis` as float64, counters as floats and
    /// every integer width decode; a fraction or a negative in an integer field is malformed.
    #[test]
    fn integer_fields_accept_whole_floats_only() {
        let ping = |timestamp: Value| decode(map(vec![("type", "PING".into()), ("timestamp", timestamp)]));
        assert_eq!(ping(Value::F64(1_717_171_717_171.0)), Ok(ClientMessage::Ping { timestamp: 1_717_171_717_171 }));
        assert_eq!(ping(Value::F32(5.0)), Ok(ClientMessage::Ping { timestamp: 5 }));
        assert_eq!(ping(5_000_000_000u64.into()), Ok(ClientMessage::Ping { timestamp: 5_000_000_000 }));
        assert_eq!(ping(7.into()), Ok(ClientMessage::Ping { timestamp: 7 }));
        assert!(malformed(ping(Value::F64(1.5))).starts_with("PING.timestamp: expected a whole"));
        let negative = malformed(ping((-1).into()));
        assert!(negative.starts_with("PING.timestamp: expected a non-negative"));
        assert_eq!(malformed(ping("5".into())), "PING.timestamp: expected integer, got string");

        let put = op(vec![
            ("opType", "PUT".into()),
            (
                "record",
                map(vec![
                    ("value", 1.into()),
                    (
                        "timestamp",
                        map(vec![
                            ("millis", Value::F64(1_717_171_717_171.0)),
                            ("counter", Value::F64(2.0)),
                            ("nodeId", "a".into()),
                        ]),
                    ),
                    ("ttlMs", Value::F64(60_000.0)),
                ]),
            ),
        ])
        .unwrap();
        let OpKind::Put(record) = put.kind else { panic!("expected a put") };
        assert_eq!(record.timestamp, model_ts(1_717_171_717_171, 2, "a"));
        assert_eq!(record.ttl_ms, Some(60_000));

        let fractional_counter = op(vec![(
            "record",
            lww(1.into(), map(vec![("millis", 1.into()), ("counter", Value::F64(0.5)), ("nodeId", "a".into())])),
        )]);
        assert!(malformed(fractional_counter).starts_with("CLIENT_OP.payload.record.timestamp.counter:"));
        let huge_counter = op(vec![(
            "record",
            lww(
                1.into(),
                map(vec![("millis", 1.into()), ("counter", 5_000_000_000u64.into()), ("nodeId", "a".into())]),
            ),
        )]);
        assert_eq!(malformed(huge_counter), "CLIENT_OP.payload.record.timestamp.counter: 5000000000 exceeds u32");
    }

    /// Goal: PROTOCOL.md §2.3. Optional fields read nil as absent; required fields reject nil
    /// naming its type; an absent `TOPIC_PUB.data` (JavaScript `undefined`) is stored as nil.
    #[test]
    fn absent_and_nil() {
        let auth = |device_token: Option<Value>| {
            let mut fields = vec![("type", Value::from("AUTH")), ("token", Value::from("t"))];
            fields.extend(device_token.map(|value| ("deviceToken", value)));
            decode(map(fields))
        };
        let expected = ClientMessage::Auth { token: "t".into(), device_token: None, protocol_version: None };
        assert_eq!(auth(None), Ok(expected.clone()));
        assert_eq!(auth(Some(Value::Nil)), Ok(expected));
        assert!(matches!(
            auth(Some("d".into())),
            Ok(ClientMessage::Auth { device_token: Some(token), .. }) if token == "d"
        ));
        assert_eq!(
            malformed(decode(map(vec![("type", "AUTH".into()), ("token", Value::Nil)]))),
            "AUTH.token: expected string, got nil"
        );
        assert_eq!(malformed(decode(map(vec![("type", "AUTH".into())]))), "AUTH.token: missing");

        let topic_pub = |data: Option<Value>| {
            let mut payload = vec![("topic", Value::from("t"))];
            payload.extend(data.map(|value| ("data", value)));
            match decode(map(vec![("type", "TOPIC_PUB".into()), ("payload", map(payload))])).unwrap() {
                ClientMessage::TopicPub { data, .. } => data,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(&topic_pub(None)[..], &[0xc0]);
        assert_eq!(&topic_pub(Some(Value::Nil))[..], &[0xc0]);
        assert_eq!(topic_pub(Some("hi".into())), bytes_of(&"hi".into()));

        // `record: nil` is a remove, an absent `record` is nothing (`.nullable().optional()`).
        assert_eq!(kind(vec![("record", Value::Nil)]), OpKind::Remove { record: None });
        assert_eq!(kind(vec![]), OpKind::Noop);
        // Nil `orRecord` / `orTag` fall through to the next rule.
        let put =
            kind(vec![("orRecord", Value::Nil), ("orTag", Value::Nil), ("record", lww(3.into(), ts(10, 0, "a")))]);
        assert!(matches!(put, OpKind::Put(_)));
    }

    /// Goal: every branch of the op classification (PROTOCOL.md §4.0 with DECISIONS.md §1.7).
    #[test]
    fn op_classification() {
        let value = map(vec![("title", "x".into())]);
        let tombstone =
            |millis, counter| LwwRecord { value: None, timestamp: model_ts(millis, counter, "a"), ttl_ms: None };

        // (4) A put keeps the value's bytes and the TTL.
        let mut put_record = lww(value.clone(), ts(10, 1, "a"));
        if let Value::Map(entries) = &mut put_record {
            entries.push(("ttlMs".into(), 500.into()));
        }
        assert_eq!(
            kind(vec![("opType", "PUT".into()), ("record", put_record)]),
            OpKind::Put(LwwRecord {
                value: Some(bytes_of(&value)),
                timestamp: model_ts(10, 1, "a"),
                ttl_ms: Some(500),
            })
        );
        // (1) REMOVE with a record: tombstone at the record's timestamp, any TTL dropped.
        let mut remove_record = lww(Value::Nil, ts(11, 0, "a"));
        if let Value::Map(entries) = &mut remove_record {
            entries.push(("ttlMs".into(), 500.into()));
        }
        assert_eq!(
            kind(vec![("opType", "REMOVE".into()), ("record", remove_record), ("timestamp", ts(99, 0, "a"))]),
            OpKind::Remove { record: Some(tombstone(11, 0)) }
        );
        // (1) REMOVE wins even when the record still carries a value.
        assert_eq!(
            kind(vec![("opType", "REMOVE".into()), ("record", lww(1.into(), ts(12, 0, "a")))]),
            OpKind::Remove { record: Some(tombstone(12, 0)) }
        );
        // (1) REMOVE without a record takes the op's own timestamp (DECISIONS.md §1.7)...
        assert_eq!(
            kind(vec![("opType", "REMOVE".into()), ("timestamp", ts(13, 2, "a"))]),
            OpKind::Remove { record: Some(tombstone(13, 2)) }
        );
        // ... or, with none, is a tombstone at the owner's HLC now.
        assert_eq!(kind(vec![("opType", "REMOVE".into())]), OpKind::Remove { record: None });
        // (1) A nil record is a remove whatever the opType, and beats orRecord.
        let or_record_value =
            map(vec![("value", "red".into()), ("timestamp", ts(14, 0, "a")), ("tag", "14:0:a".into())]);
        assert_eq!(
            kind(vec![
                ("opType", "OR_ADD".into()),
                ("record", Value::Nil),
                ("orRecord", or_record_value.clone()),
                ("timestamp", ts(15, 0, "a")),
            ]),
            OpKind::Remove { record: Some(tombstone(15, 0)) }
        );
        // (2) orRecord: OR add, tag kept as sent (DECISIONS.md §1.3), even without opType.
        assert_eq!(
            kind(vec![("orRecord", or_record_value.clone())]),
            OpKind::OrAdd(OrRecord {
                value: bytes_of(&"red".into()),
                timestamp: model_ts(14, 0, "a"),
                tag: "14:0:a".into(),
                ttl_ms: None,
            })
        );
        // (2) before (3) and (4).
        assert!(matches!(
            kind(vec![("orRecord", or_record_value), ("orTag", "t".into()), ("record", lww(1.into(), ts(1, 0, "a"))),]),
            OpKind::OrAdd(_)
        ));
        // (3) orTag: OR remove of exactly that tag.
        assert_eq!(
            kind(vec![("opType", "OR_REMOVE".into()), ("orTag", "14:0:a".into())]),
            OpKind::OrRemove { tag: "14:0:a".into() }
        );
        // (4) A PUT whose value is nil is a remove (DECISIONS.md §1.7).
        assert_eq!(
            kind(vec![("opType", "PUT".into()), ("record", lww(Value::Nil, ts(16, 0, "a")))]),
            OpKind::Remove { record: Some(tombstone(16, 0)) }
        );
        // (5) Nothing to apply.
        assert_eq!(kind(vec![("opType", "PUT".into()), ("timestamp", ts(1, 0, "a"))]), OpKind::Noop);
        // A record without `value` is malformed, not silently a tombstone.
        assert_eq!(
            malformed(op(vec![("record", map(vec![("timestamp", ts(1, 0, "a"))]))])),
            "CLIENT_OP.payload.record.value: missing"
        );
        // Op-level fields.
        let full = op(vec![
            ("id", "7".into()),
            ("writeConcern", "PERSISTED".into()),
            ("timeout", Value::F64(5000.0)),
            ("synced", false.into()),
        ])
        .unwrap();
        assert_eq!(full.id.as_deref(), Some("7"));
        assert_eq!(full.write_concern, Some(WriteConcern::Persisted));
        assert_eq!(full.timeout, Some(5000));
        assert_eq!(
            malformed(op(vec![("writeConcern", "SOMETIMES".into())])),
            "CLIENT_OP.payload.writeConcern: unknown write concern \"SOMETIMES\""
        );
    }

    /// Goal: record values keep the client's exact bytes (model.rs `ValueBytes`): msgpackr
    /// writes every object as map16, which a re-encoder would turn into a fixmap.
    #[test]
    fn values_keep_their_bytes() {
        let value_bytes: &[u8] = &[0xde, 0x00, 0x01, 0xa1, b'n', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0];
        let mut frame_bytes = vec![0x82];
        frame_bytes.extend(frame(&"type".into()));
        frame_bytes.extend(frame(&"CLIENT_OP".into()));
        frame_bytes.extend(frame(&"payload".into()));
        frame_bytes.push(0x84);
        for (key, value) in [("mapName", "m"), ("key", "k"), ("opType", "PUT")] {
            frame_bytes.extend(frame(&key.into()));
            frame_bytes.extend(frame(&value.into()));
        }
        frame_bytes.extend(frame(&"record".into()));
        frame_bytes.push(0x82);
        frame_bytes.extend(frame(&"value".into()));
        frame_bytes.extend_from_slice(value_bytes);
        frame_bytes.extend(frame(&"timestamp".into()));
        frame_bytes.extend(frame(&ts(1, 0, "a")));
        let message = decode_client_message(&frame_bytes, &DecodeLimits::default()).unwrap();
        let ClientMessage::ClientOp(ClientOp { kind: OpKind::Put(record), .. }) = message else {
            panic!("expected a put, got {message:?}");
        };
        assert_eq!(record.value.as_deref(), Some(value_bytes));
    }

    /// Goal: each structural failure has its own error and its DECISIONS.md §5 reply.
    #[test]
    fn structural_errors() {
        let limits = DecodeLimits::default();
        let ping = frame(&map(vec![("type", "PING".into()), ("timestamp", 1.into())]));

        // Not msgpack: empty, a reserved byte, a truncated frame.
        assert!(matches!(decode_client_message(&[], &limits), Err(DecodeError::NotMsgpack(_))));
        assert_eq!(
            decode_client_message(&[0xc1], &limits),
            Err(DecodeError::NotMsgpack("reserved byte 0xc1 at byte 0".into()))
        );
        let truncated = decode_client_message(&ping[..ping.len() - 1], &limits).unwrap_err();
        assert!(matches!(truncated, DecodeError::NotMsgpack(_)));
        assert!(truncated.error_reply().1.starts_with("malformed message: not msgpack: truncated"));

        // Trailing garbage after a complete message.
        let mut trailing = ping.clone();
        trailing.push(0x00);
        assert_eq!(decode_client_message(&trailing, &limits), Err(DecodeError::TrailingBytes));

        // An array frame such as ["PING", 5], and a bare scalar.
        let array = frame(&Value::Array(vec!["PING".into(), 5.into()]));
        assert_eq!(decode_client_message(&array, &limits), Err(DecodeError::NotAMap));
        assert_eq!(DecodeError::NotAMap.error_reply(), (400, "malformed message: not a map".to_owned()));
        assert_eq!(decode(Value::from("PING")), Err(DecodeError::NotAMap));

        // No type, a nil type, a type that is not a string.
        assert_eq!(decode(map(vec![("timestamp", 1.into())])), Err(DecodeError::MissingType));
        assert_eq!(decode(map(vec![("type", Value::Nil)])), Err(DecodeError::MissingType));
        assert_eq!(DecodeError::MissingType.error_reply(), (400, "malformed message: missing type".to_owned()));
        assert_eq!(malformed(decode(map(vec![("type", 5.into())]))), "type: expected string, got integer");

        // Unknown types and types only a server sends.
        let unknown = decode(map(vec![("type", "NOPE".into())])).unwrap_err();
        assert_eq!(unknown, DecodeError::UnknownType("NOPE".into()));
        assert_eq!(unknown.error_reply(), (400, "unknown message type: NOPE".to_owned()));
        let server_type = decode(map(vec![("type", "OP_ACK".into()), ("payload", map(vec![]))])).unwrap_err();
        assert_eq!(server_type, DecodeError::ServerToClientType("OP_ACK".into()));
        assert_eq!(server_type.error_reply(), (400, "unknown message type: OP_ACK".to_owned()));
        assert_eq!(
            decode(map(vec![("type", "CLUSTER_SUB_ACK".into())])),
            Err(DecodeError::ServerToClientType("CLUSTER_SUB_ACK".into()))
        );
    }

    /// Goal: the nesting bound of DECISIONS.md §5. A 1000-deep frame is refused by the
    /// iterative scan (no stack overflow), 256 levels pass and 257 do not.
    #[test]
    fn nesting_depth() {
        let limits = DecodeLimits::default();
        // A PING whose extra field holds `arrays` nested arrays around a nil; the outer map
        // is level 1, so the innermost array is level `arrays + 1`.
        let nested_ping = |arrays: usize| {
            let mut bytes = vec![0x82];
            bytes.extend(frame(&"type".into()));
            bytes.extend(frame(&"PING".into()));
            bytes.extend(frame(&"timestamp".into()));
            bytes.push(0x01);
            bytes[0] = 0x83;
            bytes.extend(frame(&"deep".into()));
            bytes.extend(std::iter::repeat_n(0x91, arrays));
            bytes.push(0xc0);
            bytes
        };
        assert_eq!(decode_client_message(&nested_ping(1000), &limits), Err(DecodeError::TooDeep));
        assert_eq!(decode_client_message(&nested_ping(1_000_000), &limits), Err(DecodeError::TooDeep));
        assert_eq!(decode_client_message(&nested_ping(255), &limits), Ok(ClientMessage::Ping { timestamp: 1 }));
        assert_eq!(decode_client_message(&nested_ping(256), &limits), Err(DecodeError::TooDeep));
        assert_eq!(DecodeError::TooDeep.error_reply(), (400, "malformed message: nesting too deep".to_owned()));
        let tight = DecodeLimits { max_depth: 3 };
        assert_eq!(decode_client_message(&nested_ping(2), &tight), Ok(ClientMessage::Ping { timestamp: 1 }));
        assert_eq!(decode_client_message(&nested_ping(3), &tight), Err(DecodeError::TooDeep));

        // A raw body nested right up to the bound still decodes into an rmpv::Value.
        let mut query = Value::Nil;
        for _ in 0..253 {
            query = Value::Array(vec![query]);
        }
        let deep_query = map(vec![
            ("type", "QUERY_SUB".into()),
            (
                "payload",
                map(vec![("queryId", "q".into()), ("mapName", "m".into()), ("query", map(vec![("where", query)]))]),
            ),
        ]);
        let decoded = decode(deep_query);
        assert!(matches!(decoded, Ok(ClientMessage::QuerySub { .. })), "{decoded:?}");
    }

    /// Goal: wrong field types name the exact field, with array indices, in the reply text.
    #[test]
    fn wrong_field_types_name_the_field() {
        let good_op = |key: Value| {
            map(vec![
                ("id", "1".into()),
                ("mapName", "m".into()),
                ("key", key),
                ("record", lww(1.into(), ts(1, 0, "a"))),
            ])
        };
        let batch = map(vec![
            ("type", "OP_BATCH".into()),
            (
                "payload",
                map(vec![("ops", Value::Array(vec![good_op("a".into()), good_op("b".into()), good_op(7.into())]))]),
            ),
        ]);
        let error = decode(batch).unwrap_err();
        assert_eq!(error, DecodeError::Malformed("OP_BATCH.payload.ops[2].key: expected string, got integer".into()));
        assert_eq!(
            error.error_reply(),
            (400, "malformed message: OP_BATCH.payload.ops[2].key: expected string, got integer".to_owned())
        );
        assert_eq!(
            malformed(decode(map(vec![("type", "OP_BATCH".into()), ("payload", map(vec![("ops", 1.into())]))]))),
            "OP_BATCH.payload.ops: expected array, got integer"
        );
        assert_eq!(
            malformed(decode(map(vec![("type", "OP_BATCH".into()), ("payload", "x".into())]))),
            "OP_BATCH.payload: expected map, got string"
        );
        assert_eq!(
            malformed(decode(map(vec![
                ("type", "QUERY_SUB".into()),
                (
                    "payload",
                    map(vec![("queryId", "q".into()), ("mapName", "m".into()), ("query", Value::Array(vec![])),])
                )
            ]))),
            "QUERY_SUB.payload.query: expected map, got array"
        );
        assert_eq!(
            malformed(decode(map(vec![
                ("type", "ORMAP_SYNC_INIT".into()),
                ("mapName", "m".into()),
                ("rootHash", 1.into()),
                ("bucketHashes", map(vec![("a", "x".into())])),
            ]))),
            "ORMAP_SYNC_INIT.bucketHashes.a: expected integer, got string"
        );
    }

    /// Goal: unknown fields and non-string keys are ignored; a repeated key takes its last
    /// value, as JavaScript's object model would.
    #[test]
    fn unknown_fields_and_repeated_keys() {
        let message = Value::Map(vec![
            ("type".into(), "PING".into()),
            (5.into(), "ignored".into()),
            ("timestamp".into(), 1.into()),
            ("extra".into(), map(vec![("a", 1.into())])),
            ("timestamp".into(), 2.into()),
        ]);
        assert_eq!(decode(message), Ok(ClientMessage::Ping { timestamp: 2 }));
    }

    /// Goal: counter state in both spellings (DECISIONS.md §1.5); both at once merge by
    /// maximum; a negative or non-numeric total is malformed.
    #[test]
    fn counter_state_spellings() {
        let sync = |state: Value| {
            decode(map(vec![
                ("type", "COUNTER_SYNC".into()),
                ("payload", map(vec![("name", "c".into()), ("state", state)])),
            ]))
        };
        let state_of = |result: Result<ClientMessage, DecodeError>| match result.unwrap() {
            ClientMessage::CounterSync { state, .. } => state,
            other => panic!("{other:?}"),
        };
        let short = state_of(sync(map(vec![("p", map(vec![("a", 3.into())])), ("n", map(vec![("a", 1.into())]))])));
        let long = state_of(sync(map(vec![
            ("positive", map(vec![("a", Value::F64(3.0))])),
            ("negative", map(vec![("a", 1.into())])),
        ])));
        assert_eq!(short, long);
        assert_eq!(short.positive.get("a"), Some(&3.0));
        assert_eq!(short.negative.get("a"), Some(&1.0));
        let both = state_of(sync(map(vec![
            ("p", map(vec![("a", 5.into()), ("b", 1.into())])),
            ("positive", map(vec![("a", 3.into()), ("c", 2.5.into())])),
        ])));
        assert_eq!(
            both.positive.into_iter().collect::<Vec<_>>(),
            vec![("a".to_owned(), 5.0), ("b".to_owned(), 1.0), ("c".to_owned(), 2.5)]
        );
        assert!(both.negative.is_empty());
        assert_eq!(state_of(sync(map(vec![]))), PnCounterState::default());
        assert!(malformed(sync(map(vec![("p", map(vec![("a", (-1).into())]))])))
            .starts_with("COUNTER_SYNC.payload.state.p.a: expected a finite non-negative total"));
        assert_eq!(
            malformed(sync(map(vec![("n", map(vec![("a", "1".into())]))]))),
            "COUNTER_SYNC.payload.state.n.a: expected number, got string"
        );
    }

    /// Goal: the inbound BATCH envelope (PROTOCOL.md §4.13): big-endian lengths, every item
    /// returned in order, truncation refused, and the 8192-item cap with its 413 reply.
    #[test]
    fn batch_unpacking() {
        let ping = frame(&map(vec![("type", "PING".into()), ("timestamp", 1.into())]));
        let sub = frame(&map(vec![("type", "TOPIC_SUB".into()), ("payload", map(vec![("topic", "t".into())]))]));
        let mut data = Vec::new();
        for item in [&ping, &sub] {
            data.extend_from_slice(&(item.len() as u32).to_be_bytes());
            data.extend_from_slice(item);
        }
        let envelope =
            frame(&map(vec![("type", "BATCH".into()), ("count", 2.into()), ("data", Value::Binary(data.clone()))]));
        let ClientMessage::Batch { data: unpacked_data } =
            decode_client_message(&envelope, &DecodeLimits::default()).unwrap()
        else {
            panic!("expected a batch");
        };
        assert_eq!(unpacked_data, data);
        let items = unpack_batch(&unpacked_data).unwrap();
        assert_eq!(items, vec![&ping[..], &sub[..]]);
        assert_eq!(decode_client_message(items[0], &DecodeLimits::default()), Ok(ClientMessage::Ping { timestamp: 1 }));
        assert_eq!(unpack_batch(&[]), Ok(vec![]));
        assert_eq!(unpack_batch(&[0, 0, 0, 0]), Ok(vec![&[][..]]));
        assert!(malformed(unpack_batch(&data[..2])).contains("truncated length prefix"));
        assert!(malformed(unpack_batch(&data[..data.len() - 1])).contains("item 1"));
        assert_eq!(
            malformed(decode(map(vec![("type", "BATCH".into()), ("data", "x".into())]))),
            "BATCH.data: expected binary, got string"
        );

        let empty_items = |count: usize| vec![0u8; count * 4];
        assert_eq!(unpack_batch(&empty_items(BATCH_ITEMS_MAX)).map(|items| items.len()), Ok(BATCH_ITEMS_MAX));
        let error = unpack_batch(&empty_items(BATCH_ITEMS_MAX + 1)).unwrap_err();
        assert_eq!(error, DecodeError::BatchTooLarge);
        assert_eq!(error.error_reply(), (413, "batch exceeds maximum inner item count".to_owned()));
    }

    /// Goal: the messages without a golden vector decode their §4 fields.
    #[test]
    fn messages_without_vectors() {
        let payload = |message_type: &str, fields: Vec<(&str, Value)>| {
            decode(map(vec![("type", message_type.into()), ("payload", map(fields))])).unwrap()
        };
        let flat = |message_type: &str, mut fields: Vec<(&str, Value)>| {
            fields.insert(0, ("type", message_type.into()));
            decode(map(fields)).unwrap()
        };
        assert_eq!(
            payload("ORMAP_DIFF_REQUEST", vec![("mapName", "m".into()), ("keys", Value::Array(vec!["a".into()]))]),
            ClientMessage::OrMapDiffRequest { map_name: "m".into(), keys: vec!["a".into()] }
        );
        assert_eq!(
            payload("QUERY_SYNC_INIT", vec![("queryId", "q".into()), ("rootHash", Value::F64(4e9))]),
            ClientMessage::QuerySyncInit { query_id: "q".into(), root_hash: 4_000_000_000 }
        );
        assert_eq!(
            payload("SQL_QUERY", vec![("sql", "select 1".into()), ("queryId", "q".into())]),
            ClientMessage::SqlQuery { sql: "select 1".into(), query_id: "q".into() }
        );
        assert_eq!(
            payload("TOPIC_UNSUB", vec![("topic", "t".into())]),
            ClientMessage::TopicUnsub { topic: "t".into() }
        );
        assert_eq!(
            payload("LOCK_RELEASE", vec![("name", "l".into()), ("fencingToken", 3.into())]),
            ClientMessage::LockRelease { request_id: None, name: "l".into(), fencing_token: 3 }
        );
        assert_eq!(
            payload("SEARCH_UNSUB", vec![("subscriptionId", "s".into())]),
            ClientMessage::SearchUnsub { subscription_id: "s".into() }
        );
        let hybrid =
            vec![("requestId", "h".into()), ("mapName", "m".into()), ("queryText", "q".into()), ("k", 5.into())];
        let ClientMessage::HybridSearch { request_id, map_name, payload: body } = payload("HYBRID_SEARCH", hybrid)
        else {
            panic!("expected HYBRID_SEARCH");
        };
        assert_eq!((request_id.as_str(), map_name.as_str()), ("h", "m"));
        assert_eq!(body["k"], Value::from(5));
        assert!(matches!(
            payload("HYBRID_SEARCH_SUB", vec![("subscriptionId", "s".into()), ("mapName", "m".into())]),
            ClientMessage::HybridSearchSub { .. }
        ));
        assert!(matches!(
            payload("HYBRID_SEARCH_UNSUB", vec![("subscriptionId", "s".into())]),
            ClientMessage::HybridSearchUnsub { .. }
        ));
        assert!(matches!(
            payload("VECTOR_SEARCH", vec![("id", "v".into()), ("mapName", "m".into()), ("k", 3.into())]),
            ClientMessage::VectorSearch { .. }
        ));
        assert!(matches!(
            payload("HYBRID_QUERY_SUBSCRIBE", vec![("subscriptionId", "s".into())]),
            ClientMessage::HybridQuerySubscribe { payload: Value::Map(_) }
        ));
        assert_eq!(
            flat("HYBRID_QUERY_UNSUBSCRIBE", vec![]),
            ClientMessage::HybridQueryUnsubscribe { payload: Value::Nil }
        );
        let processor = map(vec![("name", "p".into()), ("code", "return 1".into())]);
        assert_eq!(
            flat(
                "ENTRY_PROCESS_BATCH",
                vec![
                    ("requestId", "r".into()),
                    ("mapName", "m".into()),
                    ("keys", Value::Array(vec!["a".into(), "b".into()])),
                    ("processor", processor),
                ]
            ),
            ClientMessage::EntryProcessBatch {
                request_id: "r".into(),
                map_name: "m".into(),
                keys: vec!["a".into(), "b".into()],
                processor: EntryProcessor { name: "p".into(), code: "return 1".into(), args: None },
            }
        );
        assert_eq!(
            flat(
                "REGISTER_RESOLVER",
                vec![
                    ("requestId", "r".into()),
                    ("mapName", "m".into()),
                    ("resolver", map(vec![("name", "n".into()), ("code", "c".into()), ("priority", 5.into())])),
                ]
            ),
            ClientMessage::RegisterResolver {
                request_id: "r".into(),
                map_name: "m".into(),
                resolver: ResolverDef { name: "n".into(), code: "c".into(), priority: Some(5), key_pattern: None },
            }
        );
        assert_eq!(
            flat(
                "UNREGISTER_RESOLVER",
                vec![("requestId", "r".into()), ("mapName", "m".into()), ("resolverName", "n".into())]
            ),
            ClientMessage::UnregisterResolver {
                request_id: "r".into(),
                map_name: "m".into(),
                resolver_name: "n".into()
            }
        );
        assert_eq!(
            flat("LIST_RESOLVERS", vec![("requestId", "r".into())]),
            ClientMessage::ListResolvers { request_id: "r".into(), map_name: None }
        );
        assert_eq!(
            flat(
                "JOURNAL_SUBSCRIBE",
                vec![
                    ("requestId", "j".into()),
                    ("fromSequence", "12".into()),
                    ("types", Value::Array(vec!["PUT".into(), "DELETE".into()])),
                ]
            ),
            ClientMessage::JournalSubscribe {
                request_id: "j".into(),
                from_sequence: Some(12),
                map_name: None,
                types: Some(vec![JournalEventType::Put, JournalEventType::Delete]),
            }
        );
        assert!(malformed(decode(map(vec![
            ("type", "JOURNAL_SUBSCRIBE".into()),
            ("requestId", "j".into()),
            ("types", Value::Array(vec!["MOVE".into()])),
        ])))
        .starts_with("JOURNAL_SUBSCRIBE.types[0]: unknown journal event type"));
        assert_eq!(
            malformed(decode(map(vec![
                ("type", "JOURNAL_READ".into()),
                ("requestId", "j".into()),
                ("fromSequence", "x".into())
            ]))),
            "JOURNAL_READ.fromSequence: expected a decimal sequence, got \"x\""
        );
        assert_eq!(
            flat("JOURNAL_UNSUBSCRIBE", vec![("subscriptionId", "j".into())]),
            ClientMessage::JournalUnsubscribe { subscription_id: "j".into() }
        );
        assert_eq!(flat("PARTITION_MAP_REQUEST", vec![]), ClientMessage::PartitionMapRequest { current_version: None });
        assert_eq!(
            flat("DEVICE_HELLO", vec![("deviceToken", "d".into())]),
            ClientMessage::DeviceHello { device_token: Some("d".into()) }
        );
    }
}
