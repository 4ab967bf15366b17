//! Server-to-client encoding: every message of PROTOCOL.md §4 the server sends, as a typed
//! [`ServerMessage`], appended to a caller-owned buffer as one msgpack map.
//!
//! Conventions (§2.2, §2.3, DECISIONS.md): `type` first; integers in their smallest width;
//! optional fields omitted when absent (above all `ttlMs`, which as nil would change the
//! client's OR-map hashes); record values spliced in as the bytes they were received as,
//! never decoded and re-encoded. It leaves out framing and when to send what.

use bytes::Bytes;
use compact_str::CompactString;

use super::message_type::MessageType;
use super::types::{ChangeType, CursorStatus, JournalEvent, NodeStatus, OpResult, OrMapEntry};
use crate::model::{LwwRecord, OrRecord, PnCounterState, Timestamp, ValueBytes, WriteConcern};

/// One server-to-client message (PROTOCOL.md §4). Record values and other user data are
/// msgpack bytes ([`ValueBytes`]) copied into the output unchanged.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// Sent first on every connection in JWT mode.
    AuthRequired,
    AuthAck {
        protocol_version: Option<u64>,
        user_id: Option<String>,
        device_id: Option<String>,
        /// Only when newly minted or rotated.
        device_token: Option<String>,
    },
    AuthFail {
        error: Option<String>,
        code: Option<u16>,
    },
    DeviceAck {
        device_id: Option<String>,
        device_token: Option<String>,
    },
    Pong {
        /// The `PING.timestamp` echoed.
        timestamp: u64,
        server_time: u64,
    },
    Error {
        code: u16,
        message: String,
        details: Option<ValueBytes>,
    },
    OpAck {
        /// Id of the last op of the acknowledged batch, or `"unknown"`.
        last_id: CompactString,
        achieved_level: Option<WriteConcern>,
        /// Omitted from the wire when empty.
        results: Vec<OpResult>,
    },
    OpRejected {
        op_id: CompactString,
        reason: String,
        code: Option<u16>,
    },
    ServerEvent(ServerEvent),
    ServerBatchEvent {
        events: Vec<ServerEvent>,
    },
    MergeRejected {
        map_name: String,
        key: String,
        attempted_value: ValueBytes,
        reason: String,
        timestamp: Timestamp,
    },
    SyncRespRoot {
        map_name: String,
        root_hash: u32,
        /// The server's HLC now.
        timestamp: Timestamp,
    },
    SyncRespBuckets {
        map_name: String,
        path: String,
        /// `(child index 0..16, child hash)`; each index is sent as one lowercase hex char.
        buckets: Vec<(u8, u32)>,
    },
    SyncRespLeaf {
        map_name: String,
        path: String,
        /// `(key, record)`, tombstones included.
        records: Vec<(String, LwwRecord)>,
    },
    SyncResetRequired {
        map_name: String,
        reason: String,
    },
    GcPrune {
        older_than: Timestamp,
    },
    OrMapSyncRespRoot {
        map_name: String,
        root_hash: u32,
        timestamp: Timestamp,
        covering_epoch: Option<u64>,
        /// Sent only when true.
        full_resync: bool,
    },
    OrMapSyncRespBuckets {
        map_name: String,
        path: String,
        buckets: Vec<(u8, u32)>,
    },
    OrMapSyncRespLeaf {
        map_name: String,
        path: String,
        entries: Vec<OrMapEntry>,
        covering_epoch: Option<u64>,
    },
    OrMapDiffResponse {
        map_name: String,
        entries: Vec<OrMapEntry>,
        covering_epoch: Option<u64>,
    },
    QueryResp(QueryResp),
    QueryUpdate {
        query_id: String,
        key: String,
        /// `None` (sent as nil) for `LEAVE`.
        value: Option<ValueBytes>,
        change_type: ChangeType,
    },
    SqlQueryResp {
        query_id: String,
        columns: Vec<String>,
        rows: Vec<Vec<ValueBytes>>,
        error: Option<String>,
        /// `FEATURE_DISABLED` when SQL is not supported.
        code: Option<String>,
    },
    TopicMessage {
        topic: String,
        data: ValueBytes,
        publisher_id: Option<String>,
        /// Server wall-clock ms at fan-out.
        timestamp: u64,
    },
    LockGranted {
        request_id: String,
        name: String,
        fencing_token: u64,
    },
    LockReleased {
        request_id: String,
        name: String,
        success: bool,
    },
    /// The state is sent under both key spellings (DECISIONS.md §1.5).
    CounterResponse {
        name: String,
        state: PnCounterState,
    },
    CounterUpdate {
        name: String,
        state: PnCounterState,
    },
    SearchResp {
        /// For a `SEARCH_SUB` snapshot, the subscription id.
        request_id: String,
        results: Vec<SearchHit>,
        total_count: u64,
        error: Option<String>,
    },
    SearchUpdate {
        subscription_id: String,
        hit: SearchHit,
        change_type: ChangeType,
    },
    HybridSearchResp {
        request_id: String,
        results: Vec<HybridSearchHit>,
        search_time_ms: u64,
        error: Option<String>,
    },
    HybridSearchUpdate {
        subscription_id: String,
        hit: HybridSearchHit,
        change_type: ChangeType,
    },
    VectorSearchResp {
        id: String,
        results: Vec<VectorSearchHit>,
        total_candidates: u64,
        search_time_ms: u64,
        error: Option<String>,
    },
    EntryProcessResponse {
        request_id: String,
        result: EntryProcessResult,
    },
    EntryProcessBatchResponse {
        request_id: String,
        /// `(key, result)`, sent as a map keyed by record key.
        results: Vec<(String, EntryProcessResult)>,
    },
    RegisterResolverResponse {
        request_id: String,
        success: bool,
        error: Option<String>,
    },
    UnregisterResolverResponse {
        request_id: String,
        success: bool,
        error: Option<String>,
    },
    ListResolversResponse {
        request_id: String,
        resolvers: Vec<ResolverInfo>,
    },
    JournalEvent(JournalEvent),
    JournalReadResponse {
        request_id: String,
        events: Vec<JournalEvent>,
        has_more: bool,
    },
    PartitionMap(PartitionMap),
    /// The client-bound envelope (PROTOCOL.md §4.13: a little-endian u32 count, then each
    /// message behind a little-endian u32 length). Encodable for completeness; shardgrid sends
    /// every message in its own frame instead (PROTOCOL.md §11).
    Batch {
        /// Each one complete encoded message.
        messages: Vec<Bytes>,
    },
}

/// A live change pushed to interested connections (`SERVER_EVENT` payload, PROTOCOL.md §4.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerEvent {
    pub map_name: String,
    pub key: String,
    pub body: ServerEventBody,
}

/// What changed. The `eventType` on the wire follows from it, so a REMOVE event always carries
/// its tombstone record (DECISIONS.md §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEventBody {
    /// `PUT` when the record has a value, `REMOVE` (with the tombstone) when it has none.
    Lww(LwwRecord),
    /// `OR_ADD`, with `orTag` set to the record's tag as the reference server does.
    OrAdd(OrRecord),
    OrRemove {
        tag: String,
    },
}

/// `QUERY_RESP` payload (PROTOCOL.md §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResp {
    pub query_id: String,
    /// `(key, value)` rows, already sorted, limited and projected.
    pub results: Vec<(String, ValueBytes)>,
    pub next_cursor: Option<String>,
    pub has_more: Option<bool>,
    pub cursor_status: Option<CursorStatus>,
    pub merkle_root_hash: Option<u32>,
    pub error: Option<String>,
    pub code: Option<String>,
}

/// One full-text result (`SEARCH_RESP.results[]`, and the body of `SEARCH_UPDATE`).
#[derive(Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub key: String,
    /// The record value (DECISIONS.md §3.4); `None`, sent as nil, for a `LEAVE`.
    pub value: Option<ValueBytes>,
    pub score: f64,
    pub matched_terms: Vec<String>,
}

/// One hybrid-search result (`HYBRID_SEARCH_RESP.results[]`, body of `HYBRID_SEARCH_UPDATE`).
#[derive(Clone, Debug, PartialEq)]
pub struct HybridSearchHit {
    pub key: String,
    /// The fused (RRF) score.
    pub score: f64,
    /// Each method's own score, e.g. `("fullText", 2.1)`.
    pub method_scores: Vec<(String, f64)>,
    /// Omitted when `None`.
    pub value: Option<ValueBytes>,
}

/// One vector-search result (`VECTOR_SEARCH_RESP.results[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSearchHit {
    pub key: String,
    pub score: f64,
    pub value: Option<ValueBytes>,
    /// Sent as binary, little-endian f32s.
    pub vector: Option<Vec<f32>>,
}

/// The outcome of running an entry processor on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryProcessResult {
    pub success: bool,
    pub result: Option<ValueBytes>,
    pub new_value: Option<ValueBytes>,
    pub error: Option<String>,
}

/// One registered conflict resolver (`LIST_RESOLVERS_RESPONSE.resolvers[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverInfo {
    pub map_name: String,
    pub name: String,
    pub priority: Option<u64>,
    pub key_pattern: Option<String>,
}

/// `PARTITION_MAP` payload (PROTOCOL.md §4.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionMap {
    pub version: u64,
    pub partition_count: u32,
    pub nodes: Vec<PartitionNode>,
    pub partitions: Vec<PartitionInfo>,
    /// Wall-clock ms.
    pub generated_at: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionNode {
    pub node_id: String,
    /// `endpoints.websocket`.
    pub websocket: String,
    /// `endpoints.http`, omitted when `None`.
    pub http: Option<String>,
    pub status: NodeStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition_id: u32,
    pub owner_node_id: String,
    pub backup_node_ids: Vec<String>,
}

impl ServerMessage {
    pub fn message_type(&self) -> MessageType {
        match self {
            ServerMessage::AuthRequired => MessageType::AuthRequired,
            ServerMessage::AuthAck { .. } => MessageType::AuthAck,
            ServerMessage::AuthFail { .. } => MessageType::AuthFail,
            ServerMessage::DeviceAck { .. } => MessageType::DeviceAck,
            ServerMessage::Pong { .. } => MessageType::Pong,
            ServerMessage::Error { .. } => MessageType::Error,
            ServerMessage::OpAck { .. } => MessageType::OpAck,
            ServerMessage::OpRejected { .. } => MessageType::OpRejected,
            ServerMessage::ServerEvent(_) => MessageType::ServerEvent,
            ServerMessage::ServerBatchEvent { .. } => MessageType::ServerBatchEvent,
            ServerMessage::MergeRejected { .. } => MessageType::MergeRejected,
            ServerMessage::SyncRespRoot { .. } => MessageType::SyncRespRoot,
            ServerMessage::SyncRespBuckets { .. } => MessageType::SyncRespBuckets,
            ServerMessage::SyncRespLeaf { .. } => MessageType::SyncRespLeaf,
            ServerMessage::SyncResetRequired { .. } => MessageType::SyncResetRequired,
            ServerMessage::GcPrune { .. } => MessageType::GcPrune,
            ServerMessage::OrMapSyncRespRoot { .. } => MessageType::OrMapSyncRespRoot,
            ServerMessage::OrMapSyncRespBuckets { .. } => MessageType::OrMapSyncRespBuckets,
            ServerMessage::OrMapSyncRespLeaf { .. } => MessageType::OrMapSyncRespLeaf,
            ServerMessage::OrMapDiffResponse { .. } => MessageType::OrMapDiffResponse,
            ServerMessage::QueryResp(_) => MessageType::QueryResp,
            ServerMessage::QueryUpdate { .. } => MessageType::QueryUpdate,
            ServerMessage::SqlQueryResp { .. } => MessageType::SqlQueryResp,
            ServerMessage::TopicMessage { .. } => MessageType::TopicMessage,
            ServerMessage::LockGranted { .. } => MessageType::LockGranted,
            ServerMessage::LockReleased { .. } => MessageType::LockReleased,
            ServerMessage::CounterResponse { .. } => MessageType::CounterResponse,
            ServerMessage::CounterUpdate { .. } => MessageType::CounterUpdate,
            ServerMessage::SearchResp { .. } => MessageType::SearchResp,
            ServerMessage::SearchUpdate { .. } => MessageType::SearchUpdate,
            ServerMessage::HybridSearchResp { .. } => MessageType::HybridSearchResp,
            ServerMessage::HybridSearchUpdate { .. } => MessageType::HybridSearchUpdate,
            ServerMessage::VectorSearchResp { .. } => MessageType::VectorSearchResp,
            ServerMessage::EntryProcessResponse { .. } => MessageType::EntryProcessResponse,
            ServerMessage::EntryProcessBatchResponse { .. } => MessageType::EntryProcessBatchResponse,
            ServerMessage::RegisterResolverResponse { .. } => MessageType::RegisterResolverResponse,
            ServerMessage::UnregisterResolverResponse { .. } => MessageType::UnregisterResolverResponse,
            ServerMessage::ListResolversResponse { .. } => MessageType::ListResolversResponse,
            ServerMessage::JournalEvent(_) => MessageType::JournalEvent,
            ServerMessage::JournalReadResponse { .. } => MessageType::JournalReadResponse,
            ServerMessage::PartitionMap(_) => MessageType::PartitionMap,
            ServerMessage::Batch { .. } => MessageType::Batch,
        }
    }
}

/// Appends `message` to `out` as one msgpack map.
pub fn encode(message: &ServerMessage, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    let message_type = message.message_type().as_str();
    match message {
        ServerMessage::AuthRequired => w.flat(message_type, 0),
        ServerMessage::AuthAck { protocol_version, user_id, device_id, device_token } => {
            w.flat(
                message_type,
                present(protocol_version) + present(user_id) + present(device_id) + present(device_token),
            );
            w.opt_uint("protocolVersion", *protocol_version);
            w.opt_str("userId", user_id.as_deref());
            w.opt_str("deviceId", device_id.as_deref());
            w.opt_str("deviceToken", device_token.as_deref());
        }
        ServerMessage::AuthFail { error, code } => {
            w.flat(message_type, present(error) + present(code));
            w.opt_str("error", error.as_deref());
            w.opt_uint("code", code.map(u64::from));
        }
        ServerMessage::DeviceAck { device_id, device_token } => {
            w.flat(message_type, present(device_id) + present(device_token));
            w.opt_str("deviceId", device_id.as_deref());
            w.opt_str("deviceToken", device_token.as_deref());
        }
        ServerMessage::Pong { timestamp, server_time } => {
            w.flat(message_type, 2);
            w.key_uint("timestamp", *timestamp);
            w.key_uint("serverTime", *server_time);
        }
        ServerMessage::Error { code, message, details } => {
            w.payload(message_type, 2 + present(details));
            w.key_uint("code", u64::from(*code));
            w.key_str("message", message);
            if let Some(details) = details {
                w.str("details");
                w.value(details);
            }
        }
        ServerMessage::OpAck { last_id, achieved_level, results } => {
            encode_op_ack(w.0, last_id, *achieved_level, results);
        }
        ServerMessage::OpRejected { op_id, reason, code } => {
            w.payload(message_type, 2 + present(code));
            w.key_str("opId", op_id);
            w.key_str("reason", reason);
            w.opt_uint("code", code.map(u64::from));
        }
        ServerMessage::ServerEvent(event) => {
            w.payload_start(message_type);
            w.server_event(event);
        }
        ServerMessage::ServerBatchEvent { events } => {
            w.payload(message_type, 1);
            w.str("events");
            w.array(events.len());
            for event in events {
                w.server_event(event);
            }
        }
        ServerMessage::MergeRejected { map_name, key, attempted_value, reason, timestamp } => {
            w.flat(message_type, 5);
            w.key_str("mapName", map_name);
            w.key_str("key", key);
            w.str("attemptedValue");
            w.value(attempted_value);
            w.key_str("reason", reason);
            w.str("timestamp");
            w.timestamp(timestamp);
        }
        ServerMessage::SyncRespRoot { map_name, root_hash, timestamp } => {
            w.payload(message_type, 3);
            w.key_str("mapName", map_name);
            w.key_uint("rootHash", u64::from(*root_hash));
            w.str("timestamp");
            w.timestamp(timestamp);
        }
        ServerMessage::SyncRespBuckets { map_name, path, buckets }
        | ServerMessage::OrMapSyncRespBuckets { map_name, path, buckets } => {
            w.payload(message_type, 3);
            w.key_str("mapName", map_name);
            w.key_str("path", path);
            w.str("buckets");
            w.buckets(buckets);
        }
        ServerMessage::SyncRespLeaf { map_name, path, records } => {
            w.payload(message_type, 3);
            w.key_str("mapName", map_name);
            w.key_str("path", path);
            w.str("records");
            w.array(records.len());
            for (key, record) in records {
                w.map(2);
                w.key_str("key", key);
                w.str("record");
                w.lww_record(record);
            }
        }
        ServerMessage::SyncResetRequired { map_name, reason } => {
            w.payload(message_type, 2);
            w.key_str("mapName", map_name);
            w.key_str("reason", reason);
        }
        ServerMessage::GcPrune { older_than } => {
            w.payload(message_type, 1);
            w.str("olderThan");
            w.timestamp(older_than);
        }
        ServerMessage::OrMapSyncRespRoot { map_name, root_hash, timestamp, covering_epoch, full_resync } => {
            w.payload(message_type, 3 + present(covering_epoch) + usize::from(*full_resync));
            w.key_str("mapName", map_name);
            w.key_uint("rootHash", u64::from(*root_hash));
            w.str("timestamp");
            w.timestamp(timestamp);
            w.opt_uint("coveringEpoch", *covering_epoch);
            if *full_resync {
                w.str("fullResync");
                w.bool(true);
            }
        }
        ServerMessage::OrMapSyncRespLeaf { map_name, path, entries, covering_epoch } => {
            w.payload(message_type, 3 + present(covering_epoch));
            w.key_str("mapName", map_name);
            w.key_str("path", path);
            w.or_map_entries(entries);
            w.opt_uint("coveringEpoch", *covering_epoch);
        }
        ServerMessage::OrMapDiffResponse { map_name, entries, covering_epoch } => {
            w.payload(message_type, 2 + present(covering_epoch));
            w.key_str("mapName", map_name);
            w.or_map_entries(entries);
            w.opt_uint("coveringEpoch", *covering_epoch);
        }
        ServerMessage::QueryResp(response) => w.query_resp(message_type, response),
        ServerMessage::QueryUpdate { query_id, key, value, change_type } => {
            w.payload(message_type, 4);
            w.key_str("queryId", query_id);
            w.key_str("key", key);
            w.str("value");
            w.opt_value(value.as_ref());
            w.key_str("changeType", change_type.as_str());
        }
        ServerMessage::SqlQueryResp { query_id, columns, rows, error, code } => {
            w.payload(message_type, 3 + present(error) + present(code));
            w.key_str("queryId", query_id);
            w.str("columns");
            w.str_array(columns);
            w.str("rows");
            w.array(rows.len());
            for row in rows {
                w.array(row.len());
                for cell in row {
                    w.value(cell);
                }
            }
            w.opt_str("error", error.as_deref());
            w.opt_str("code", code.as_deref());
        }
        ServerMessage::TopicMessage { topic, data, publisher_id, timestamp } => {
            w.payload(message_type, 3 + present(publisher_id));
            w.key_str("topic", topic);
            w.str("data");
            w.value(data);
            w.opt_str("publisherId", publisher_id.as_deref());
            w.key_uint("timestamp", *timestamp);
        }
        ServerMessage::LockGranted { request_id, name, fencing_token } => {
            w.payload(message_type, 3);
            w.key_str("requestId", request_id);
            w.key_str("name", name);
            w.key_uint("fencingToken", *fencing_token);
        }
        ServerMessage::LockReleased { request_id, name, success } => {
            w.payload(message_type, 3);
            w.key_str("requestId", request_id);
            w.key_str("name", name);
            w.str("success");
            w.bool(*success);
        }
        ServerMessage::CounterResponse { name, state } | ServerMessage::CounterUpdate { name, state } => {
            w.payload(message_type, 2);
            w.key_str("name", name);
            w.str("state");
            w.counter_state(state);
        }
        ServerMessage::SearchResp { request_id, results, total_count, error } => {
            w.payload(message_type, 3 + present(error));
            w.key_str("requestId", request_id);
            w.str("results");
            w.array(results.len());
            for hit in results {
                w.map(4);
                w.search_hit_fields(hit);
            }
            w.key_uint("totalCount", *total_count);
            w.opt_str("error", error.as_deref());
        }
        ServerMessage::SearchUpdate { subscription_id, hit, change_type } => {
            w.payload(message_type, 6);
            w.key_str("subscriptionId", subscription_id);
            w.search_hit_fields(hit);
            w.key_str("changeType", change_type.as_str());
        }
        ServerMessage::HybridSearchResp { request_id, results, search_time_ms, error } => {
            w.payload(message_type, 3 + present(error));
            w.key_str("requestId", request_id);
            w.str("results");
            w.array(results.len());
            for hit in results {
                w.map(3 + present(&hit.value));
                w.hybrid_hit_fields(hit);
            }
            w.key_uint("searchTimeMs", *search_time_ms);
            w.opt_str("error", error.as_deref());
        }
        ServerMessage::HybridSearchUpdate { subscription_id, hit, change_type } => {
            w.payload(message_type, 5 + present(&hit.value));
            w.key_str("subscriptionId", subscription_id);
            w.hybrid_hit_fields(hit);
            w.key_str("changeType", change_type.as_str());
        }
        ServerMessage::VectorSearchResp { id, results, total_candidates, search_time_ms, error } => {
            w.payload(message_type, 4 + present(error));
            w.key_str("id", id);
            w.str("results");
            w.array(results.len());
            for hit in results {
                w.map(2 + present(&hit.value) + present(&hit.vector));
                w.key_str("key", &hit.key);
                w.key_f64("score", hit.score);
                if let Some(value) = &hit.value {
                    w.str("value");
                    w.value(value);
                }
                if let Some(vector) = &hit.vector {
                    w.str("vector");
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    w.bin(&bytes);
                }
            }
            w.key_uint("totalCandidates", *total_candidates);
            w.key_uint("searchTimeMs", *search_time_ms);
            w.opt_str("error", error.as_deref());
        }
        ServerMessage::EntryProcessResponse { request_id, result } => {
            w.flat(message_type, 1 + entry_result_fields(result));
            w.key_str("requestId", request_id);
            w.entry_result_fields(result);
        }
        ServerMessage::EntryProcessBatchResponse { request_id, results } => {
            w.flat(message_type, 2);
            w.key_str("requestId", request_id);
            w.str("results");
            w.map(results.len());
            for (key, result) in results {
                w.str(key);
                w.map(entry_result_fields(result));
                w.entry_result_fields(result);
            }
        }
        ServerMessage::RegisterResolverResponse { request_id, success, error }
        | ServerMessage::UnregisterResolverResponse { request_id, success, error } => {
            w.flat(message_type, 2 + present(error));
            w.key_str("requestId", request_id);
            w.str("success");
            w.bool(*success);
            w.opt_str("error", error.as_deref());
        }
        ServerMessage::ListResolversResponse { request_id, resolvers } => {
            w.flat(message_type, 2);
            w.key_str("requestId", request_id);
            w.str("resolvers");
            w.array(resolvers.len());
            for resolver in resolvers {
                w.map(2 + present(&resolver.priority) + present(&resolver.key_pattern));
                w.key_str("mapName", &resolver.map_name);
                w.key_str("name", &resolver.name);
                w.opt_uint("priority", resolver.priority);
                w.opt_str("keyPattern", resolver.key_pattern.as_deref());
            }
        }
        ServerMessage::JournalEvent(event) => {
            w.flat(message_type, 1);
            w.str("event");
            w.journal_event(event);
        }
        ServerMessage::JournalReadResponse { request_id, events, has_more } => {
            w.flat(message_type, 3);
            w.key_str("requestId", request_id);
            w.str("events");
            w.array(events.len());
            for event in events {
                w.journal_event(event);
            }
            w.str("hasMore");
            w.bool(*has_more);
        }
        ServerMessage::PartitionMap(map) => w.partition_map(message_type, map),
        ServerMessage::Batch { messages } => {
            w.flat(message_type, 2);
            w.key_uint("count", messages.len() as u64);
            let data_len: usize = messages.iter().map(|message| 4 + message.len()).sum();
            let mut data = Vec::with_capacity(4 + data_len);
            data.extend_from_slice(&batch_len(messages.len()).to_le_bytes());
            for message in messages {
                data.extend_from_slice(&batch_len(message.len()).to_le_bytes());
                data.extend_from_slice(message);
            }
            w.str("data");
            w.bin(&data);
        }
    }
}

/// Appends an `OP_ACK` (`{type, payload: {lastId, achievedLevel?, results?}}`), the hottest
/// reply, without building a [`ServerMessage`]. `results` is omitted when empty.
pub fn encode_op_ack(out: &mut Vec<u8>, last_id: &str, achieved: Option<WriteConcern>, results: &[OpResult]) {
    let mut w = Writer(out);
    w.payload(MessageType::OpAck.as_str(), 1 + present(&achieved) + usize::from(!results.is_empty()));
    w.key_str("lastId", last_id);
    w.opt_str("achievedLevel", achieved.map(WriteConcern::as_str));
    if !results.is_empty() {
        w.str("results");
        w.array(results.len());
        for result in results {
            w.op_result(result);
        }
    }
}

/// Appends a `Timestamp` map (`{millis, counter, nodeId}`, PROTOCOL.md §2.4).
pub fn write_timestamp(out: &mut Vec<u8>, timestamp: &Timestamp) {
    Writer(out).timestamp(timestamp);
}

/// Appends an `LWWRecord` map: `{value, timestamp}` plus `ttlMs` only when there is a TTL.
/// A tombstone's value is nil.
pub fn write_lww_record(out: &mut Vec<u8>, record: &LwwRecord) {
    Writer(out).lww_record(record);
}

/// Appends an `ORMapRecord` map: `{value, timestamp, tag}` plus `ttlMs` only when there is a TTL.
pub fn write_or_record(out: &mut Vec<u8>, record: &OrRecord) {
    Writer(out).or_record(record);
}

pub(super) fn present<T>(field: &Option<T>) -> usize {
    usize::from(field.is_some())
}

/// Fields an `ENTRY_PROCESS` result contributes to its map.
fn entry_result_fields(result: &EntryProcessResult) -> usize {
    1 + present(&result.result) + present(&result.new_value) + present(&result.error)
}

/// A length in the client-bound `BATCH` layout, which has 32 bits for it.
fn batch_len(len: usize) -> u32 {
    u32::try_from(len).expect("a BATCH item is smaller than 4 GiB")
}

/// Writing into a `Vec<u8>` only fails if allocation fails, which aborts first.
const VEC_WRITE: &str = "writing msgpack into a Vec<u8> cannot fail";

/// The msgpack writer over the caller's buffer; every container length it writes is the
/// exact number of entries the caller then writes.
pub(super) struct Writer<'o>(pub(super) &'o mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn map(&mut self, len: usize) {
        let len = u32::try_from(len).expect("a map has fewer than 2^32 entries");
        rmp::encode::write_map_len(self.0, len).expect(VEC_WRITE);
    }

    pub(super) fn array(&mut self, len: usize) {
        let len = u32::try_from(len).expect("an array has fewer than 2^32 items");
        rmp::encode::write_array_len(self.0, len).expect(VEC_WRITE);
    }

    pub(super) fn str(&mut self, text: &str) {
        rmp::encode::write_str(self.0, text).expect(VEC_WRITE);
    }

    pub(super) fn uint(&mut self, value: u64) {
        rmp::encode::write_uint(self.0, value).expect(VEC_WRITE);
    }

    fn f64(&mut self, value: f64) {
        rmp::encode::write_f64(self.0, value).expect(VEC_WRITE);
    }

    pub(super) fn bool(&mut self, value: bool) {
        rmp::encode::write_bool(self.0, value).expect(VEC_WRITE);
    }

    fn nil(&mut self) {
        rmp::encode::write_nil(self.0).expect(VEC_WRITE);
    }

    fn bin(&mut self, data: &[u8]) {
        rmp::encode::write_bin(self.0, data).expect(VEC_WRITE);
    }

    /// Splices in one already-encoded value.
    pub(super) fn value(&mut self, value: &[u8]) {
        debug_assert_eq!(
            super::scan::value_len(value, usize::MAX),
            Ok(value.len()),
            "a value is exactly one msgpack value"
        );
        self.0.extend_from_slice(value);
    }

    fn opt_value(&mut self, value: Option<&ValueBytes>) {
        match value {
            Some(value) => self.value(value),
            None => self.nil(),
        }
    }

    pub(super) fn key_str(&mut self, key: &str, value: &str) {
        self.str(key);
        self.str(value);
    }

    pub(super) fn key_uint(&mut self, key: &str, value: u64) {
        self.str(key);
        self.uint(value);
    }

    fn key_f64(&mut self, key: &str, value: f64) {
        self.str(key);
        self.f64(value);
    }

    pub(super) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.key_str(key, value);
        }
    }

    pub(super) fn opt_uint(&mut self, key: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.key_uint(key, value);
        }
    }

    /// An array of already-encoded values.
    pub(super) fn values(&mut self, values: &[ValueBytes]) {
        self.array(values.len());
        for value in values {
            self.value(value);
        }
    }

    pub(super) fn str_array(&mut self, items: &[String]) {
        self.array(items.len());
        for item in items {
            self.str(item);
        }
    }

    /// Starts a flat message: `{type, <fields>...}`.
    fn flat(&mut self, message_type: &str, fields: usize) {
        self.map(1 + fields);
        self.key_str("type", message_type);
    }

    /// Starts a wrapped message up to the payload's key: `{type, payload: ` — the caller
    /// writes the payload map.
    fn payload_start(&mut self, message_type: &str) {
        self.map(2);
        self.key_str("type", message_type);
        self.str("payload");
    }

    /// Starts a wrapped message: `{type, payload: {<fields>...}}`.
    fn payload(&mut self, message_type: &str, fields: usize) {
        self.payload_start(message_type);
        self.map(fields);
    }

    /// `{opId, success, achievedLevel, error?}`.
    pub(super) fn op_result(&mut self, result: &OpResult) {
        self.map(3 + present(&result.error));
        self.key_str("opId", &result.op_id);
        self.str("success");
        self.bool(result.success);
        self.key_str("achievedLevel", result.achieved_level.as_str());
        self.opt_str("error", result.error.as_deref());
    }

    pub(super) fn timestamp(&mut self, timestamp: &Timestamp) {
        self.map(3);
        self.key_uint("millis", timestamp.millis);
        self.key_uint("counter", u64::from(timestamp.counter));
        self.key_str("nodeId", &timestamp.node_id);
    }

    pub(super) fn lww_record(&mut self, record: &LwwRecord) {
        self.map(2 + present(&record.ttl_ms));
        self.str("value");
        self.opt_value(record.value.as_ref());
        self.str("timestamp");
        self.timestamp(&record.timestamp);
        self.opt_uint("ttlMs", record.ttl_ms);
    }

    fn or_record(&mut self, record: &OrRecord) {
        self.map(3 + present(&record.ttl_ms));
        self.str("value");
        self.value(&record.value);
        self.str("timestamp");
        self.timestamp(&record.timestamp);
        self.key_str("tag", &record.tag);
        self.opt_uint("ttlMs", record.ttl_ms);
    }

    fn server_event(&mut self, event: &ServerEvent) {
        match &event.body {
            ServerEventBody::Lww(record) => {
                self.map(4);
                self.key_str("mapName", &event.map_name);
                let event_type = if record.is_tombstone() { "REMOVE" } else { "PUT" };
                self.key_str("eventType", event_type);
                self.key_str("key", &event.key);
                self.str("record");
                self.lww_record(record);
            }
            ServerEventBody::OrAdd(record) => {
                self.map(5);
                self.key_str("mapName", &event.map_name);
                self.key_str("eventType", "OR_ADD");
                self.key_str("key", &event.key);
                self.str("orRecord");
                self.or_record(record);
                self.key_str("orTag", &record.tag);
            }
            ServerEventBody::OrRemove { tag } => {
                self.map(4);
                self.key_str("mapName", &event.map_name);
                self.key_str("eventType", "OR_REMOVE");
                self.key_str("key", &event.key);
                self.key_str("orTag", tag);
            }
        }
    }

    fn buckets(&mut self, buckets: &[(u8, u32)]) {
        const HEX_DIGITS: [&str; 16] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"];
        self.map(buckets.len());
        for &(child, hash) in buckets {
            assert!(usize::from(child) < HEX_DIGITS.len(), "bucket child {child} is not one hex digit");
            self.str(HEX_DIGITS[usize::from(child)]);
            self.uint(u64::from(hash));
        }
    }

    fn or_map_entries(&mut self, entries: &[OrMapEntry]) {
        self.str("entries");
        self.array(entries.len());
        for entry in entries {
            self.map(3);
            self.key_str("key", &entry.key);
            self.str("records");
            self.array(entry.records.len());
            for record in &entry.records {
                self.or_record(record);
            }
            self.str("tombstones");
            self.str_array(&entry.tombstones);
        }
    }

    fn query_resp(&mut self, message_type: &str, response: &QueryResp) {
        let optional = present(&response.next_cursor)
            + present(&response.has_more)
            + present(&response.cursor_status)
            + present(&response.merkle_root_hash)
            + present(&response.error)
            + present(&response.code);
        self.payload(message_type, 2 + optional);
        self.key_str("queryId", &response.query_id);
        self.str("results");
        self.array(response.results.len());
        for (key, value) in &response.results {
            self.map(2);
            self.key_str("key", key);
            self.str("value");
            self.value(value);
        }
        self.opt_str("nextCursor", response.next_cursor.as_deref());
        if let Some(has_more) = response.has_more {
            self.str("hasMore");
            self.bool(has_more);
        }
        self.opt_str("cursorStatus", response.cursor_status.map(CursorStatus::as_str));
        self.opt_uint("merkleRootHash", response.merkle_root_hash.map(u64::from));
        self.opt_str("error", response.error.as_deref());
        self.opt_str("code", response.code.as_deref());
    }

    /// Writes both spellings of the state, `p`/`n` for the schema and `positive`/`negative`
    /// for the stock client (DECISIONS.md §1.5).
    fn counter_state(&mut self, state: &PnCounterState) {
        self.map(4);
        for (key, totals) in [
            ("p", &state.positive),
            ("n", &state.negative),
            ("positive", &state.positive),
            ("negative", &state.negative),
        ] {
            self.str(key);
            self.map(totals.len());
            for (node, total) in totals {
                self.key_f64(node, *total);
            }
        }
    }

    /// The four fields of a search hit: `key, value, score, matchedTerms`.
    fn search_hit_fields(&mut self, hit: &SearchHit) {
        self.key_str("key", &hit.key);
        self.str("value");
        self.opt_value(hit.value.as_ref());
        self.key_f64("score", hit.score);
        self.str("matchedTerms");
        self.str_array(&hit.matched_terms);
    }

    /// `key, score, methodScores` and `value` when present.
    fn hybrid_hit_fields(&mut self, hit: &HybridSearchHit) {
        self.key_str("key", &hit.key);
        self.key_f64("score", hit.score);
        self.str("methodScores");
        self.map(hit.method_scores.len());
        for (method, score) in &hit.method_scores {
            self.key_f64(method, *score);
        }
        if let Some(value) = &hit.value {
            self.str("value");
            self.value(value);
        }
    }

    fn entry_result_fields(&mut self, result: &EntryProcessResult) {
        self.str("success");
        self.bool(result.success);
        if let Some(value) = &result.result {
            self.str("result");
            self.value(value);
        }
        if let Some(value) = &result.new_value {
            self.str("newValue");
            self.value(value);
        }
        self.opt_str("error", result.error.as_deref());
    }

    fn journal_event(&mut self, event: &JournalEvent) {
        let optional = present(&event.value) + present(&event.previous_value) + present(&event.metadata);
        self.map(6 + optional);
        self.key_str("sequence", &event.sequence.to_string());
        self.key_str("type", event.event_type.as_str());
        self.key_str("mapName", &event.map_name);
        self.key_str("key", &event.key);
        if let Some(value) = &event.value {
            self.str("value");
            self.value(value);
        }
        if let Some(value) = &event.previous_value {
            self.str("previousValue");
            self.value(value);
        }
        self.str("timestamp");
        self.timestamp(&event.timestamp);
        self.key_str("nodeId", &event.node_id);
        if let Some(metadata) = &event.metadata {
            self.str("metadata");
            self.value(metadata);
        }
    }

    fn partition_map(&mut self, message_type: &str, map: &PartitionMap) {
        self.payload(message_type, 5);
        self.key_uint("version", map.version);
        self.key_uint("partitionCount", u64::from(map.partition_count));
        self.str("nodes");
        self.array(map.nodes.len());
        for node in &map.nodes {
            self.map(3);
            self.key_str("nodeId", &node.node_id);
            self.str("endpoints");
            self.map(1 + present(&node.http));
            self.key_str("websocket", &node.websocket);
            self.opt_str("http", node.http.as_deref());
            self.key_str("status", node.status.as_str());
        }
        self.str("partitions");
        self.array(map.partitions.len());
        for partition in &map.partitions {
            self.map(3);
            self.key_uint("partitionId", u64::from(partition.partition_id));
            self.key_str("ownerNodeId", &partition.owner_node_id);
            self.str("backupNodeIds");
            self.str_array(&partition.backup_node_ids);
        }
        self.key_uint("generatedAt", map.generated_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::types::JournalEventType;
    use rmpv::Value;

    fn encoded(message: &ServerMessage) -> Vec<u8> {
        let mut out = Vec::new();
        encode(message, &mut out);
        out
    }

    fn decoded(bytes: &[u8]) -> Value {
        let mut rest = bytes;
        let value = rmpv::decode::read_value(&mut rest).unwrap();
        assert!(rest.is_empty(), "exactly one value");
        value
    }

    fn value_bytes(value: &Value) -> ValueBytes {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).unwrap();
        ValueBytes::from(bytes)
    }

    fn keys(map: &Value) -> Vec<&str> {
        map.as_map().unwrap().iter().map(|(key, _)| key.as_str().unwrap()).collect()
    }

    fn ts(millis: u64, counter: u32) -> Timestamp {
        Timestamp::new(millis, counter, "node-1")
    }

    /// Goal: the hot-path OP_ACK has exactly `{type, payload: {lastId, achievedLevel?,
    /// results?}}`, omitting what is absent, and `encode` produces the same bytes.
    #[test]
    fn op_ack_shapes() {
        let mut out = Vec::new();
        encode_op_ack(&mut out, "9", Some(WriteConcern::Applied), &[]);
        let message = decoded(&out);
        assert_eq!(keys(&message), ["type", "payload"]);
        assert_eq!(message["type"], Value::from("OP_ACK"));
        assert_eq!(keys(&message["payload"]), ["lastId", "achievedLevel"]);
        assert_eq!(message["payload"]["lastId"], Value::from("9"));
        assert_eq!(message["payload"]["achievedLevel"], Value::from("APPLIED"));
        let via_enum = encoded(&ServerMessage::OpAck {
            last_id: "9".into(),
            achieved_level: Some(WriteConcern::Applied),
            results: vec![],
        });
        assert_eq!(via_enum, out);

        out.clear();
        encode_op_ack(&mut out, "unknown", None, &[]);
        assert_eq!(keys(&decoded(&out)["payload"]), ["lastId"]);

        out.clear();
        let results = [
            OpResult { op_id: "w1".into(), success: true, achieved_level: WriteConcern::Applied, error: None },
            OpResult {
                op_id: "w2".into(),
                success: false,
                achieved_level: WriteConcern::Memory,
                error: Some("timeout".into()),
            },
        ];
        encode_op_ack(&mut out, "w2", Some(WriteConcern::Memory), &results);
        let payload = &decoded(&out)["payload"];
        assert_eq!(keys(payload), ["lastId", "achievedLevel", "results"]);
        assert_eq!(keys(&payload["results"][0]), ["opId", "success", "achievedLevel"]);
        assert_eq!(keys(&payload["results"][1]), ["opId", "success", "achievedLevel", "error"]);
        assert_eq!(payload["results"][1]["success"], Value::from(false));
    }

    /// Goal: records omit `ttlMs` without a TTL (PROTOCOL.md §2.3: a nil would change the
    /// client's OR-map hashes) and carry it with one; a tombstone's value is nil.
    #[test]
    fn records_omit_absent_ttl() {
        let value = value_bytes(&Value::from("v"));
        let mut out = Vec::new();
        write_lww_record(&mut out, &LwwRecord { value: Some(value.clone()), timestamp: ts(1, 0), ttl_ms: None });
        assert_eq!(keys(&decoded(&out)), ["value", "timestamp"]);
        out.clear();
        write_lww_record(&mut out, &LwwRecord { value: None, timestamp: ts(1, 0), ttl_ms: Some(60_000) });
        let record = decoded(&out);
        assert_eq!(keys(&record), ["value", "timestamp", "ttlMs"]);
        assert_eq!(record["value"], Value::Nil);
        assert_eq!(record["ttlMs"], Value::from(60_000));
        out.clear();
        let or_record = OrRecord { value, timestamp: ts(1, 0), tag: "1:0:node-1".into(), ttl_ms: None };
        write_or_record(&mut out, &or_record);
        assert_eq!(keys(&decoded(&out)), ["value", "timestamp", "tag"]);
        out.clear();
        write_or_record(&mut out, &OrRecord { ttl_ms: Some(5), ..or_record });
        assert_eq!(keys(&decoded(&out)), ["value", "timestamp", "tag", "ttlMs"]);
    }

    /// Goal: integers take their smallest width, millis over 2^32 become uint64, and value
    /// bytes are spliced verbatim (a map16 stays a map16).
    #[test]
    fn widths_and_verbatim_values() {
        let mut out = Vec::new();
        write_timestamp(&mut out, &Timestamp::new(1_717_171_718_000, 3, "n"));
        let mut expected = vec![0x83];
        for (key, tail) in [("millis", vec![0xcf]), ("counter", vec![])] {
            expected.push(0xa0 | key.len() as u8);
            expected.extend_from_slice(key.as_bytes());
            expected.extend(tail);
        }
        let millis_at = expected.len() - "counter".len() - 1;
        expected.splice(millis_at..millis_at, 1_717_171_718_000u64.to_be_bytes());
        expected.push(0x03);
        expected.extend_from_slice(&[0xa6, b'n', b'o', b'd', b'e', b'I', b'd', 0xa1, b'n']);
        assert_eq!(out, expected);

        let map16: &[u8] = &[0xde, 0x00, 0x01, 0xa1, b'a', 0x01];
        let message = ServerMessage::QueryUpdate {
            query_id: "q".into(),
            key: "k".into(),
            value: Some(ValueBytes::from(map16)),
            change_type: ChangeType::Enter,
        };
        let bytes = encoded(&message);
        assert!(bytes.windows(map16.len()).any(|window| window == map16));
    }

    /// Goal: SERVER_EVENT derives its eventType from the body; a REMOVE carries the tombstone
    /// record (DECISIONS.md §3.1); OR events carry orRecord/orTag.
    #[test]
    fn server_events() {
        let event = |body| {
            let message = decoded(&encoded(&ServerMessage::ServerEvent(ServerEvent {
                map_name: "todos".into(),
                key: "k".into(),
                body,
            })));
            message["payload"].clone()
        };
        let put = event(ServerEventBody::Lww(LwwRecord {
            value: Some(value_bytes(&Value::from(1))),
            timestamp: ts(5, 0),
            ttl_ms: None,
        }));
        assert_eq!(put["eventType"], Value::from("PUT"));
        let remove = event(ServerEventBody::Lww(LwwRecord { value: None, timestamp: ts(5, 1), ttl_ms: None }));
        assert_eq!(keys(&remove), ["mapName", "eventType", "key", "record"]);
        assert_eq!(remove["eventType"], Value::from("REMOVE"));
        assert_eq!(keys(&remove["record"]), ["value", "timestamp"]);
        assert_eq!(remove["record"]["value"], Value::Nil);
        assert_eq!(remove["record"]["timestamp"]["counter"], Value::from(1));
        let or_add = event(ServerEventBody::OrAdd(OrRecord {
            value: value_bytes(&Value::from("red")),
            timestamp: ts(5, 2),
            tag: "5:2:node-1".into(),
            ttl_ms: None,
        }));
        assert_eq!(keys(&or_add), ["mapName", "eventType", "key", "orRecord", "orTag"]);
        assert_eq!(or_add["orTag"], Value::from("5:2:node-1"));
        let or_remove = event(ServerEventBody::OrRemove { tag: "5:2:node-1".into() });
        assert_eq!(keys(&or_remove), ["mapName", "eventType", "key", "orTag"]);
        assert_eq!(or_remove["eventType"], Value::from("OR_REMOVE"));
    }

    /// Goal: counter replies carry all four keys with the same contents (DECISIONS.md §1.5).
    #[test]
    fn counter_state_has_both_spellings() {
        let mut state = PnCounterState::default();
        state.positive.insert("a".into(), 3.0);
        state.negative.insert("a".into(), 1.5);
        let message = decoded(&encoded(&ServerMessage::CounterUpdate { name: "c".into(), state }));
        let state = &message["payload"]["state"];
        assert_eq!(keys(state), ["p", "n", "positive", "negative"]);
        assert_eq!(state["p"], state["positive"]);
        assert_eq!(state["n"], state["negative"]);
        assert_eq!(state["n"]["a"], Value::F64(1.5));
    }

    /// Goal: the client-bound BATCH uses little-endian lengths after a count (PROTOCOL.md
    /// §4.13), unlike the inbound form.
    #[test]
    fn client_bound_batch_layout() {
        let inner = encoded(&ServerMessage::AuthRequired);
        let message = decoded(&encoded(&ServerMessage::Batch { messages: vec![Bytes::from(inner.clone())] }));
        assert_eq!(message["count"], Value::from(1));
        let mut expected = vec![1, 0, 0, 0];
        expected.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        expected.extend_from_slice(&inner);
        assert_eq!(message["data"], Value::Binary(expected));
    }

    /// Goal: every variant encodes one well-formed map (each declared length matches what
    /// follows) whose first key is `type` with the variant's type string, and whose keys are
    /// unique at every level. Method: one sample per variant, optional fields filled in.
    #[test]
    fn every_variant_is_well_formed() {
        let value = value_bytes(&Value::Map(vec![("a".into(), 1.into())]));
        let record = LwwRecord { value: Some(value.clone()), timestamp: ts(1, 0), ttl_ms: Some(10) };
        let or_record = OrRecord { value: value.clone(), timestamp: ts(1, 0), tag: "1:0:node-1".into(), ttl_ms: None };
        let entry = OrMapEntry { key: "k".into(), records: vec![or_record.clone()], tombstones: vec!["t".into()] };
        let event = ServerEvent { map_name: "m".into(), key: "k".into(), body: ServerEventBody::Lww(record.clone()) };
        let search_hit =
            SearchHit { key: "k".into(), value: Some(value.clone()), score: 1.5, matched_terms: vec!["a".into()] };
        let hybrid_hit = HybridSearchHit {
            key: "k".into(),
            score: 0.03,
            method_scores: vec![("fullText".into(), 2.0)],
            value: Some(value.clone()),
        };
        let entry_result = EntryProcessResult {
            success: false,
            result: Some(value.clone()),
            new_value: Some(value.clone()),
            error: Some("no".into()),
        };
        let journal_event = JournalEvent {
            sequence: 12,
            event_type: JournalEventType::Update,
            map_name: "m".into(),
            key: "k".into(),
            value: Some(value.clone()),
            previous_value: Some(value.clone()),
            timestamp: ts(1, 0),
            node_id: "node-1".into(),
            metadata: Some(value.clone()),
        };
        let samples = vec![
            ServerMessage::AuthRequired,
            ServerMessage::AuthAck {
                protocol_version: Some(1),
                user_id: Some("u".into()),
                device_id: Some("d".into()),
                device_token: Some("t".into()),
            },
            ServerMessage::AuthFail { error: Some("Authentication failed".into()), code: Some(401) },
            ServerMessage::DeviceAck { device_id: Some("d".into()), device_token: None },
            ServerMessage::Pong { timestamp: 1, server_time: 2 },
            ServerMessage::Error {
                code: 501,
                message: "not implemented: SQL_QUERY".into(),
                details: Some(value.clone()),
            },
            ServerMessage::OpAck { last_id: "1".into(), achieved_level: None, results: vec![] },
            ServerMessage::OpRejected {
                op_id: "1".into(),
                reason: "timestamp too far in the future".into(),
                code: Some(400),
            },
            ServerMessage::ServerEvent(event.clone()),
            ServerMessage::ServerBatchEvent { events: vec![event.clone(), event] },
            ServerMessage::MergeRejected {
                map_name: "m".into(),
                key: "k".into(),
                attempted_value: value.clone(),
                reason: "r".into(),
                timestamp: ts(1, 0),
            },
            ServerMessage::SyncRespRoot { map_name: "m".into(), root_hash: u32::MAX, timestamp: ts(1, 0) },
            ServerMessage::SyncRespBuckets { map_name: "m".into(), path: "".into(), buckets: vec![(0, 1), (15, 2)] },
            ServerMessage::SyncRespLeaf {
                map_name: "m".into(),
                path: "abc".into(),
                records: vec![("k".into(), record)],
            },
            ServerMessage::SyncResetRequired { map_name: "m".into(), reason: "r".into() },
            ServerMessage::GcPrune { older_than: ts(1, 0) },
            ServerMessage::OrMapSyncRespRoot {
                map_name: "m".into(),
                root_hash: 0,
                timestamp: ts(1, 0),
                covering_epoch: Some(3),
                full_resync: true,
            },
            ServerMessage::OrMapSyncRespBuckets { map_name: "m".into(), path: "a".into(), buckets: vec![] },
            ServerMessage::OrMapSyncRespLeaf {
                map_name: "m".into(),
                path: "abc".into(),
                entries: vec![entry.clone()],
                covering_epoch: Some(1),
            },
            ServerMessage::OrMapDiffResponse { map_name: "m".into(), entries: vec![entry], covering_epoch: None },
            ServerMessage::QueryResp(QueryResp {
                query_id: "q".into(),
                results: vec![("k".into(), value.clone())],
                next_cursor: Some("c".into()),
                has_more: Some(true),
                cursor_status: Some(CursorStatus::Invalid),
                merkle_root_hash: Some(7),
                error: Some("e".into()),
                code: Some("QUERY_SNAPSHOT_OVERFLOW".into()),
            }),
            ServerMessage::QueryUpdate {
                query_id: "q".into(),
                key: "k".into(),
                value: None,
                change_type: ChangeType::Leave,
            },
            ServerMessage::SqlQueryResp {
                query_id: "q".into(),
                columns: vec!["a".into()],
                rows: vec![vec![value.clone()]],
                error: Some("SQL is not supported".into()),
                code: Some("FEATURE_DISABLED".into()),
            },
            ServerMessage::TopicMessage { topic: "t".into(), data: value.clone(), publisher_id: None, timestamp: 5 },
            ServerMessage::LockGranted { request_id: "r".into(), name: "l".into(), fencing_token: 1 },
            ServerMessage::LockReleased { request_id: "r".into(), name: "l".into(), success: true },
            ServerMessage::CounterResponse { name: "c".into(), state: PnCounterState::default() },
            ServerMessage::CounterUpdate { name: "c".into(), state: PnCounterState::default() },
            ServerMessage::SearchResp {
                request_id: "s".into(),
                results: vec![search_hit.clone()],
                total_count: 1,
                error: Some("e".into()),
            },
            ServerMessage::SearchUpdate {
                subscription_id: "s".into(),
                hit: search_hit,
                change_type: ChangeType::Update,
            },
            ServerMessage::HybridSearchResp {
                request_id: "h".into(),
                results: vec![hybrid_hit.clone()],
                search_time_ms: 3,
                error: None,
            },
            ServerMessage::HybridSearchUpdate {
                subscription_id: "h".into(),
                hit: HybridSearchHit { value: None, ..hybrid_hit },
                change_type: ChangeType::Enter,
            },
            ServerMessage::VectorSearchResp {
                id: "v".into(),
                results: vec![VectorSearchHit {
                    key: "k".into(),
                    score: 0.9,
                    value: Some(value.clone()),
                    vector: Some(vec![1.0, -2.5]),
                }],
                total_candidates: 10,
                search_time_ms: 1,
                error: None,
            },
            ServerMessage::EntryProcessResponse { request_id: "e".into(), result: entry_result.clone() },
            ServerMessage::EntryProcessBatchResponse {
                request_id: "e".into(),
                results: vec![
                    ("a".into(), entry_result),
                    ("b".into(), EntryProcessResult { success: true, result: None, new_value: None, error: None }),
                ],
            },
            ServerMessage::RegisterResolverResponse {
                request_id: "r".into(),
                success: false,
                error: Some("conflict resolvers are not available".into()),
            },
            ServerMessage::UnregisterResolverResponse { request_id: "r".into(), success: true, error: None },
            ServerMessage::ListResolversResponse {
                request_id: "r".into(),
                resolvers: vec![ResolverInfo {
                    map_name: "m".into(),
                    name: "n".into(),
                    priority: Some(5),
                    key_pattern: Some("user:*".into()),
                }],
            },
            ServerMessage::JournalEvent(journal_event.clone()),
            ServerMessage::JournalReadResponse { request_id: "j".into(), events: vec![journal_event], has_more: false },
            ServerMessage::PartitionMap(PartitionMap {
                version: 1,
                partition_count: 271,
                nodes: vec![PartitionNode {
                    node_id: "n".into(),
                    websocket: "ws://h:1/ws".into(),
                    http: Some("http://h:1".into()),
                    status: NodeStatus::Active,
                }],
                partitions: vec![PartitionInfo { partition_id: 0, owner_node_id: "n".into(), backup_node_ids: vec![] }],
                generated_at: 9,
            }),
            ServerMessage::Batch { messages: vec![] },
        ];
        let mut seen = std::collections::HashSet::new();
        for sample in &samples {
            let message_type = sample.message_type();
            assert!(seen.insert(message_type), "one sample per variant");
            let server_sent = message_type.direction() == crate::protocol::Direction::ServerToClient;
            assert!(server_sent || message_type == crate::protocol::MessageType::Batch, "{message_type:?}");
            let bytes = encoded(sample);
            assert_eq!(super::super::scan::value_len(&bytes, 64), Ok(bytes.len()), "{message_type:?}");
            let message = decoded(&bytes);
            assert_eq!(keys(&message)[0], "type");
            assert_eq!(message["type"], Value::from(message_type.as_str()));
            assert_unique_keys(&message);
        }
        // Every server-to-client type but the unspecified PARTITION_MAP_DELTA, plus BATCH.
        let server_types = crate::protocol::MessageType::ALL
            .iter()
            .filter(|t| t.direction() == crate::protocol::Direction::ServerToClient)
            .count();
        assert_eq!(samples.len(), server_types - 1 + 1);
    }

    fn assert_unique_keys(value: &Value) {
        match value {
            Value::Map(entries) => {
                let mut seen = std::collections::HashSet::new();
                for (key, inner) in entries {
                    assert!(seen.insert(key.to_string()), "duplicate key {key}");
                    assert_unique_keys(inner);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_unique_keys),
            _ => {}
        }
    }
}
