//! The golden vectors of PROTOCOL.md §12 against the protocol codec.
//!
//! Every client-to-server vector is decoded and its typed fields are checked against the JSON
//! `message` of `index.json`. For every server-to-client vector the equivalent `ServerMessage`
//! is built, encoded, and compared structurally (numbers equal across integer and float
//! widths, map key order ignored) with both the `.msgpack` and the `.compact.msgpack` file.
//! Every file of the vectors directory must be accounted for, so a new vector cannot be
//! skipped silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rmpv::Value;
use serde_json::Value as Json;

use shardgrid::model::{LwwRecord, OrRecord, PnCounterState, Timestamp, ValueBytes, WriteConcern};
use shardgrid::protocol::{
    decode_client_message, encode, ChangeType, ClientMessage, ClientOp, CursorStatus, DecodeLimits, NodeStatus, OpKind,
    OpResult, OrMapEntry, PartitionInfo, PartitionMap, PartitionNode, QueryResp, SearchHit, ServerEvent,
    ServerEventBody, ServerMessage,
};

/// Vector counts as of this test's writing; a change means a vector to look at.
const CLIENT_VECTORS: usize = 30;
const SERVER_VECTORS: usize = 24;
/// Files in the directory that are not message vectors: the index itself, and the hash
/// examples that the Merkle and partition tests read.
const NON_MESSAGE_FILES: [&str; 2] = ["index.json", "hashes.json"];

fn vectors_dir() -> PathBuf {
    // `shared/` sits beside the repository; a scratch crate elsewhere finds it at its home.
    let beside_repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/protocol/vectors"));
    if beside_repo.is_dir() {
        return beside_repo;
    }
    PathBuf::from("/work/shared/protocol/vectors")
}

fn read(file: &str) -> Vec<u8> {
    let path = vectors_dir().join(file);
    std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

fn index() -> Json {
    serde_json::from_slice(&read("index.json")).expect("index.json is JSON")
}

fn decode_value(bytes: &[u8]) -> Value {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).expect("a vector is msgpack");
    assert!(rest.is_empty(), "a vector is exactly one value");
    value
}

/// The JSON value as msgpack. Integers stay integers; order of object keys is not kept, which
/// the structural comparison ignores.
fn json_to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(flag) => Value::from(*flag),
        Json::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                Value::from(unsigned)
            } else if let Some(signed) = number.as_i64() {
                Value::from(signed)
            } else {
                Value::F64(number.as_f64().expect("a JSON number is finite"))
            }
        }
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        Json::Object(fields) => {
            Value::Map(fields.iter().map(|(key, value)| (Value::from(key.as_str()), json_to_value(value))).collect())
        }
    }
}

fn json_bytes(json: &Json) -> ValueBytes {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &json_to_value(json)).unwrap();
    ValueBytes::from(bytes)
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(integer) => integer.as_f64(),
        Value::F32(float) => Some(f64::from(*float)),
        Value::F64(float) => Some(*float),
        _ => None,
    }
}

/// Structural equality: numbers compare by value across integer and float encodings, maps
/// ignore key order, everything else must match exactly.
fn equivalent(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Integer(left), Value::Integer(right)) => left == right,
        (Value::Map(left), Value::Map(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| {
                    right
                        .iter()
                        .any(|(other_key, other_value)| equivalent(key, other_key) && equivalent(value, other_value))
                })
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(l, r)| equivalent(l, r))
        }
        _ => match (number(left), number(right)) {
            (Some(left), Some(right)) => left == right,
            _ => left == right,
        },
    }
}

fn assert_equivalent(actual: &Value, expected: &Value, context: &str) {
    assert!(equivalent(actual, expected), "{context}:\n  actual:   {actual}\n  expected: {expected}");
}

/// Asserts that msgpack `bytes` hold the value the JSON describes.
fn assert_bytes_match_json(bytes: &[u8], json: &Json, context: &str) {
    assert_equivalent(&decode_value(bytes), &json_to_value(json), context);
}

fn text<'a>(json: &'a Json, pointer: &str) -> &'a str {
    json.pointer(pointer).and_then(Json::as_str).unwrap_or_else(|| panic!("{pointer} in {json}"))
}

fn opt_text(json: &Json, pointer: &str) -> Option<String> {
    json.pointer(pointer).and_then(Json::as_str).map(str::to_owned)
}

fn uint(json: &Json, pointer: &str) -> u64 {
    json.pointer(pointer).and_then(Json::as_u64).unwrap_or_else(|| panic!("{pointer} in {json}"))
}

fn opt_uint(json: &Json, pointer: &str) -> Option<u64> {
    json.pointer(pointer).and_then(Json::as_u64)
}

fn items<'a>(json: &'a Json, pointer: &str) -> &'a Vec<Json> {
    json.pointer(pointer).and_then(Json::as_array).unwrap_or_else(|| panic!("{pointer} in {json}"))
}

fn texts(json: &Json, pointer: &str) -> Vec<String> {
    items(json, pointer).iter().map(|item| item.as_str().expect("a string").to_owned()).collect()
}

fn timestamp(json: &Json) -> Timestamp {
    Timestamp::new(uint(json, "/millis"), u32::try_from(uint(json, "/counter")).unwrap(), text(json, "/nodeId"))
}

fn lww_record(json: &Json) -> LwwRecord {
    let value = &json["value"];
    LwwRecord {
        value: (!value.is_null()).then(|| json_bytes(value)),
        timestamp: timestamp(&json["timestamp"]),
        ttl_ms: opt_uint(json, "/ttlMs"),
    }
}

fn or_record(json: &Json) -> OrRecord {
    OrRecord {
        value: json_bytes(&json["value"]),
        timestamp: timestamp(&json["timestamp"]),
        tag: text(json, "/tag").to_owned(),
        ttl_ms: opt_uint(json, "/ttlMs"),
    }
}

fn or_map_entry(json: &Json) -> OrMapEntry {
    OrMapEntry {
        key: text(json, "/key").to_owned(),
        records: items(json, "/records").iter().map(or_record).collect(),
        tombstones: texts(json, "/tombstones"),
    }
}

fn write_concern(json: &Json, pointer: &str) -> Option<WriteConcern> {
    opt_text(json, pointer).map(|text| WriteConcern::parse(&text).expect("a write concern"))
}

fn totals(json: Option<&Json>) -> BTreeMap<String, f64> {
    let Some(json) = json else {
        return BTreeMap::new();
    };
    json.as_object()
        .expect("per-node totals")
        .iter()
        .map(|(node, total)| (node.clone(), total.as_f64().unwrap()))
        .collect()
}

/// The counter state a JSON `state` describes, in whichever spelling it uses.
fn counter_state(json: &Json) -> PnCounterState {
    let side = |short: &str, long: &str| totals(json.get(short).or_else(|| json.get(long)));
    PnCounterState { positive: side("p", "positive"), negative: side("n", "negative") }
}

/// Asserts that a raw rmpv body equals its JSON description.
fn assert_raw(actual: &Value, json: &Json, context: &str) {
    assert_equivalent(actual, &json_to_value(json), context);
}

/// Asserts that value bytes decode to the JSON value.
fn assert_value_bytes(actual: &[u8], json: &Json, context: &str) {
    assert_bytes_match_json(actual, json, context);
}

fn check_op(op: &ClientOp, json: &Json, context: &str) {
    assert_eq!(op.id.as_deref(), opt_text(json, "/id").as_deref(), "{context}: id");
    assert_eq!(op.map_name, text(json, "/mapName"), "{context}: mapName");
    assert_eq!(op.key, text(json, "/key"), "{context}: key");
    assert_eq!(op.write_concern, write_concern(json, "/writeConcern"), "{context}: writeConcern");
    assert_eq!(op.timeout, opt_uint(json, "/timeout"), "{context}: timeout");
    let expected = match text(json, "/opType") {
        "PUT" => OpKind::Put(lww_record(&json["record"])),
        "REMOVE" => {
            let record = lww_record(&json["record"]);
            assert!(record.value.is_none(), "{context}: the vector's remove carries a tombstone");
            OpKind::Remove { record: Some(LwwRecord { ttl_ms: None, ..record }) }
        }
        "OR_ADD" => OpKind::OrAdd(or_record(&json["orRecord"])),
        "OR_REMOVE" => OpKind::OrRemove { tag: text(json, "/orTag").to_owned() },
        other => panic!("{context}: opType {other}"),
    };
    // Value bytes are compared structurally: the client's map16 is kept as sent, the
    // expectation is re-encoded from JSON.
    match (&op.kind, &expected) {
        (OpKind::Put(actual), OpKind::Put(expected)) => {
            assert_value_bytes(actual.value.as_deref().unwrap(), &json["record"]["value"], context);
            assert_eq!(actual.timestamp, expected.timestamp, "{context}: timestamp");
            assert_eq!(actual.ttl_ms, expected.ttl_ms, "{context}: ttlMs");
        }
        (OpKind::OrAdd(actual), OpKind::OrAdd(expected)) => {
            assert_value_bytes(&actual.value, &json["orRecord"]["value"], context);
            assert_eq!(
                (&actual.timestamp, &actual.tag, actual.ttl_ms),
                (&expected.timestamp, &expected.tag, expected.ttl_ms),
                "{context}"
            );
        }
        (actual, expected) => assert_eq!(actual, expected, "{context}: kind"),
    }
}

/// Checks a decoded client message against the vector's JSON `message`.
fn check_client(file: &str, decoded: &ClientMessage, message: &Json) {
    let context = file;
    assert_eq!(decoded.message_type().as_str(), text(message, "/type"), "{context}: type");
    let payload = &message["payload"];
    match decoded {
        ClientMessage::Auth { token, device_token, protocol_version } => {
            assert_eq!(token, text(message, "/token"));
            assert_eq!(device_token, &opt_text(message, "/deviceToken"));
            assert_eq!(protocol_version, &None);
        }
        ClientMessage::DeviceHello { device_token } => {
            assert_eq!(device_token, &opt_text(message, "/deviceToken"));
        }
        ClientMessage::ClientOp(op) => check_op(op, payload, context),
        ClientMessage::OpBatch { ops, write_concern: batch_concern, timeout } => {
            let json_ops = items(payload, "/ops");
            assert_eq!(ops.len(), json_ops.len(), "{context}: op count");
            for (index, (op, json)) in ops.iter().zip(json_ops).enumerate() {
                check_op(op, json, &format!("{context} ops[{index}]"));
            }
            assert_eq!(batch_concern, &write_concern(payload, "/writeConcern"));
            assert_eq!(timeout, &opt_uint(payload, "/timeout"));
        }
        ClientMessage::QuerySub { query_id, map_name, query, fields } => {
            assert_eq!(query_id, text(payload, "/queryId"));
            assert_eq!(map_name, text(payload, "/mapName"));
            assert_raw(query, &payload["query"], context);
            let expected_fields = payload.get("fields").map(|_| texts(payload, "/fields"));
            assert_eq!(fields, &expected_fields);
        }
        ClientMessage::QueryUnsub { query_id } => assert_eq!(query_id, text(payload, "/queryId")),
        ClientMessage::TopicSub { topic } => assert_eq!(topic, text(payload, "/topic")),
        ClientMessage::TopicPub { topic, data } => {
            assert_eq!(topic, text(payload, "/topic"));
            assert_value_bytes(data, &payload["data"], context);
        }
        ClientMessage::LockRequest { request_id, name, ttl } => {
            assert_eq!(request_id, text(payload, "/requestId"));
            assert_eq!(name, text(payload, "/name"));
            assert_eq!(ttl, &opt_uint(payload, "/ttl"));
        }
        ClientMessage::LockRelease { request_id, name, fencing_token } => {
            assert_eq!(request_id, &opt_text(payload, "/requestId"));
            assert_eq!(name, text(payload, "/name"));
            assert_eq!(*fencing_token, uint(payload, "/fencingToken"));
        }
        ClientMessage::CounterRequest { name } => assert_eq!(name, text(payload, "/name")),
        ClientMessage::CounterSync { name, state } => {
            assert_eq!(name, text(payload, "/name"));
            assert_eq!(state, &counter_state(&payload["state"]));
            assert!(!state.positive.is_empty() && !state.negative.is_empty(), "{context}");
        }
        ClientMessage::SyncInit { map_name, last_sync_timestamp } => {
            assert_eq!(map_name, text(message, "/mapName"));
            assert_eq!(last_sync_timestamp, &opt_uint(message, "/lastSyncTimestamp"));
        }
        ClientMessage::MerkleReqBucket { map_name, path } | ClientMessage::OrMapMerkleReqBucket { map_name, path } => {
            assert_eq!(map_name, text(payload, "/mapName"));
            assert_eq!(path, text(payload, "/path"));
        }
        ClientMessage::OrMapSyncInit { map_name, root_hash, bucket_hashes, last_sync_timestamp, claimed_epoch } => {
            assert_eq!(map_name, text(message, "/mapName"));
            assert_eq!(u64::from(*root_hash), uint(message, "/rootHash"));
            let expected: BTreeMap<String, u32> = message["bucketHashes"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(child, hash)| (child.clone(), u32::try_from(hash.as_u64().unwrap()).unwrap()))
                .collect();
            assert_eq!(bucket_hashes, &expected);
            assert_eq!(last_sync_timestamp, &opt_uint(message, "/lastSyncTimestamp"));
            assert_eq!(claimed_epoch, &opt_uint(message, "/claimedEpoch"));
        }
        ClientMessage::OrMapPushDiff { map_name, entries } => {
            assert_eq!(map_name, text(payload, "/mapName"));
            let expected = items(payload, "/entries");
            assert_eq!(entries.len(), expected.len());
            for (entry, json) in entries.iter().zip(expected) {
                let wanted = or_map_entry(json);
                assert_eq!((&entry.key, &entry.tombstones), (&wanted.key, &wanted.tombstones));
                assert_eq!(entry.records.len(), wanted.records.len());
                for ((record, wanted), json) in entry.records.iter().zip(&wanted.records).zip(items(json, "/records")) {
                    assert_value_bytes(&record.value, &json["value"], context);
                    assert_eq!(
                        (&record.timestamp, &record.tag, record.ttl_ms),
                        (&wanted.timestamp, &wanted.tag, wanted.ttl_ms)
                    );
                }
            }
        }
        ClientMessage::ClientApplyAck { cursor } => assert_eq!(*cursor, uint(message, "/cursor")),
        ClientMessage::Ping { timestamp } => assert_eq!(*timestamp, uint(message, "/timestamp")),
        ClientMessage::Search { request_id, map_name, query, options } => {
            assert_eq!(request_id, text(payload, "/requestId"));
            assert_eq!(map_name, text(payload, "/mapName"));
            assert_eq!(query, text(payload, "/query"));
            assert_eq!(options.limit, opt_uint(payload, "/options/limit"));
            assert_eq!(options.min_score, payload.pointer("/options/minScore").and_then(Json::as_f64));
            assert_eq!(options.boost, totals(payload.pointer("/options/boost")));
        }
        ClientMessage::SearchSub { subscription_id, map_name, query, options } => {
            assert_eq!(subscription_id, text(payload, "/subscriptionId"));
            assert_eq!(map_name, text(payload, "/mapName"));
            assert_eq!(query, text(payload, "/query"));
            assert_eq!(options.limit, opt_uint(payload, "/options/limit"));
            assert_eq!(options.min_score, payload.pointer("/options/minScore").and_then(Json::as_f64));
        }
        ClientMessage::PartitionMapRequest { current_version } => {
            assert_eq!(current_version, &opt_uint(payload, "/currentVersion"));
        }
        ClientMessage::JournalRead { request_id, from_sequence, limit, map_name } => {
            assert_eq!(request_id, text(message, "/requestId"));
            assert_eq!(from_sequence.to_string(), text(message, "/fromSequence"));
            assert_eq!(limit, &opt_uint(message, "/limit"));
            assert_eq!(map_name, &opt_text(message, "/mapName"));
        }
        ClientMessage::EntryProcess { request_id, map_name, key, processor } => {
            assert_eq!(request_id, text(message, "/requestId"));
            assert_eq!(map_name, text(message, "/mapName"));
            assert_eq!(key, text(message, "/key"));
            assert_eq!(processor.name, text(message, "/processor/name"));
            assert_eq!(processor.code, text(message, "/processor/code"));
            assert_value_bytes(processor.args.as_deref().unwrap(), &message["processor"]["args"], context);
        }
        other => panic!("{context}: no check for {other:?}; add one"),
    }
}

fn cursor_status(text: &str) -> CursorStatus {
    match text {
        "none" => CursorStatus::None,
        "valid" => CursorStatus::Valid,
        "expired" => CursorStatus::Expired,
        "invalid" => CursorStatus::Invalid,
        other => panic!("cursorStatus {other}"),
    }
}

fn change_type(text: &str) -> ChangeType {
    match text {
        "ENTER" => ChangeType::Enter,
        "UPDATE" => ChangeType::Update,
        "LEAVE" => ChangeType::Leave,
        other => panic!("changeType {other}"),
    }
}

fn buckets(json: &Json) -> Vec<(u8, u32)> {
    json.as_object()
        .unwrap()
        .iter()
        .map(|(child, hash)| (u8::from_str_radix(child, 16).unwrap(), u32::try_from(hash.as_u64().unwrap()).unwrap()))
        .collect()
}

/// The `ServerMessage` a server-to-client vector shows, filled from its JSON.
fn server_message(file: &str, message: &Json) -> ServerMessage {
    let payload = &message["payload"];
    match file {
        "31_auth_required.msgpack" => ServerMessage::AuthRequired,
        "32_auth_ack.msgpack" => ServerMessage::AuthAck {
            protocol_version: None,
            user_id: opt_text(message, "/userId"),
            device_id: opt_text(message, "/deviceId"),
            device_token: None,
        },
        "33_auth_fail.msgpack" => ServerMessage::AuthFail { error: opt_text(message, "/error"), code: None },
        "34_device_ack.msgpack" => ServerMessage::DeviceAck {
            device_id: opt_text(message, "/deviceId"),
            device_token: opt_text(message, "/deviceToken"),
        },
        "35_op_ack.msgpack" => {
            ServerMessage::OpAck { last_id: "9".into(), achieved_level: Some(WriteConcern::Applied), results: vec![] }
        }
        "36_op_ack_with_results.msgpack" => ServerMessage::OpAck {
            last_id: text(payload, "/lastId").into(),
            achieved_level: write_concern(payload, "/achievedLevel"),
            results: items(payload, "/results")
                .iter()
                .map(|result| OpResult {
                    op_id: text(result, "/opId").into(),
                    success: result["success"].as_bool().unwrap(),
                    achieved_level: write_concern(result, "/achievedLevel").unwrap(),
                    error: opt_text(result, "/error"),
                })
                .collect(),
        },
        "37_op_rejected.msgpack" => ServerMessage::OpRejected {
            op_id: text(payload, "/opId").into(),
            reason: text(payload, "/reason").into(),
            code: opt_uint(payload, "/code").map(|code| u16::try_from(code).unwrap()),
        },
        "38_query_resp.msgpack" => ServerMessage::QueryResp(QueryResp {
            query_id: text(payload, "/queryId").into(),
            results: items(payload, "/results")
                .iter()
                .map(|row| (text(row, "/key").to_owned(), json_bytes(&row["value"])))
                .collect(),
            next_cursor: opt_text(payload, "/nextCursor"),
            has_more: payload["hasMore"].as_bool(),
            cursor_status: opt_text(payload, "/cursorStatus").map(|text| cursor_status(&text)),
            merkle_root_hash: None,
            error: None,
            code: None,
        }),
        "39_query_update_enter.msgpack" | "40_query_update_leave.msgpack" => ServerMessage::QueryUpdate {
            query_id: text(payload, "/queryId").into(),
            key: text(payload, "/key").into(),
            value: (!payload["value"].is_null()).then(|| json_bytes(&payload["value"])),
            change_type: change_type(text(payload, "/changeType")),
        },
        "41_server_event_put.msgpack" | "42_server_event_remove.msgpack" => {
            let record = lww_record(&payload["record"]);
            let event_type = if record.value.is_some() { "PUT" } else { "REMOVE" };
            assert_eq!(event_type, text(payload, "/eventType"));
            ServerMessage::ServerEvent(ServerEvent {
                map_name: text(payload, "/mapName").into(),
                key: text(payload, "/key").into(),
                body: ServerEventBody::Lww(record),
            })
        }
        "43_sync_resp_root.msgpack" => ServerMessage::SyncRespRoot {
            map_name: text(payload, "/mapName").into(),
            root_hash: u32::try_from(uint(payload, "/rootHash")).unwrap(),
            timestamp: timestamp(&payload["timestamp"]),
        },
        "44_sync_resp_buckets.msgpack" => ServerMessage::SyncRespBuckets {
            map_name: text(payload, "/mapName").into(),
            path: text(payload, "/path").into(),
            buckets: buckets(&payload["buckets"]),
        },
        "45_sync_resp_leaf.msgpack" => ServerMessage::SyncRespLeaf {
            map_name: text(payload, "/mapName").into(),
            path: text(payload, "/path").into(),
            records: items(payload, "/records")
                .iter()
                .map(|row| (text(row, "/key").to_owned(), lww_record(&row["record"])))
                .collect(),
        },
        "46_ormap_sync_resp_leaf.msgpack" => ServerMessage::OrMapSyncRespLeaf {
            map_name: text(payload, "/mapName").into(),
            path: text(payload, "/path").into(),
            entries: items(payload, "/entries").iter().map(or_map_entry).collect(),
            covering_epoch: opt_uint(payload, "/coveringEpoch"),
        },
        "47_lock_granted.msgpack" => ServerMessage::LockGranted {
            request_id: text(payload, "/requestId").into(),
            name: text(payload, "/name").into(),
            fencing_token: uint(payload, "/fencingToken"),
        },
        "48_lock_released.msgpack" => ServerMessage::LockReleased {
            request_id: text(payload, "/requestId").into(),
            name: text(payload, "/name").into(),
            success: payload["success"].as_bool().unwrap(),
        },
        "49_topic_message.msgpack" => ServerMessage::TopicMessage {
            topic: text(payload, "/topic").into(),
            data: json_bytes(&payload["data"]),
            publisher_id: opt_text(payload, "/publisherId"),
            timestamp: uint(payload, "/timestamp"),
        },
        "50_counter_response_compat.msgpack" => ServerMessage::CounterResponse {
            name: text(payload, "/name").into(),
            state: counter_state(&payload["state"]),
        },
        "51_pong.msgpack" => {
            ServerMessage::Pong { timestamp: uint(message, "/timestamp"), server_time: uint(message, "/serverTime") }
        }
        "52_error.msgpack" => ServerMessage::Error {
            code: u16::try_from(uint(payload, "/code")).unwrap(),
            message: text(payload, "/message").into(),
            details: None,
        },
        "53_search_resp.msgpack" => ServerMessage::SearchResp {
            request_id: text(payload, "/requestId").into(),
            results: items(payload, "/results")
                .iter()
                .map(|hit| SearchHit {
                    key: text(hit, "/key").into(),
                    value: Some(json_bytes(&hit["value"])),
                    score: hit["score"].as_f64().unwrap(),
                    matched_terms: texts(hit, "/matchedTerms"),
                })
                .collect(),
            total_count: uint(payload, "/totalCount"),
            error: None,
        },
        "54_partition_map.msgpack" => ServerMessage::PartitionMap(PartitionMap {
            version: uint(payload, "/version"),
            partition_count: u32::try_from(uint(payload, "/partitionCount")).unwrap(),
            nodes: items(payload, "/nodes")
                .iter()
                .map(|node| PartitionNode {
                    node_id: text(node, "/nodeId").into(),
                    websocket: text(node, "/endpoints/websocket").into(),
                    http: opt_text(node, "/endpoints/http"),
                    status: match text(node, "/status") {
                        "ACTIVE" => NodeStatus::Active,
                        other => panic!("status {other}"),
                    },
                })
                .collect(),
            partitions: items(payload, "/partitions")
                .iter()
                .map(|partition| PartitionInfo {
                    partition_id: u32::try_from(uint(partition, "/partitionId")).unwrap(),
                    owner_node_id: text(partition, "/ownerNodeId").into(),
                    backup_node_ids: texts(partition, "/backupNodeIds"),
                })
                .collect(),
            generated_at: uint(payload, "/generatedAt"),
        }),
        other => panic!("no ServerMessage for vector {other}; add one"),
    }
}

/// Goal: every vector is covered and matches the codec. Method: walk index.json; decode the
/// client vectors and check them field by field, encode the server vectors and compare with
/// both encodings; then account for every file in the directory.
#[test]
fn every_vector_matches_the_codec() {
    let index = index();
    let vectors = index["vectors"].as_array().expect("index.vectors");
    let limits = DecodeLimits::default();
    let mut covered = BTreeSet::new();
    let (mut client_vectors, mut server_vectors) = (0, 0);

    for vector in vectors {
        let file = text(vector, "/file");
        let message = &vector["message"];
        let bytes = read(file);
        assert_eq!(bytes.len() as u64, uint(vector, "/bytes"), "{file}: byte length");
        // The index's JSON and the bytes describe the same message.
        assert_bytes_match_json(&bytes, message, &format!("{file} against its JSON"));
        assert!(covered.insert(file.to_owned()), "{file} listed twice");

        match text(vector, "/direction") {
            "client->server" => {
                client_vectors += 1;
                let decoded =
                    decode_client_message(&bytes, &limits).unwrap_or_else(|error| panic!("{file}: {error:?}"));
                check_client(file, &decoded, message);
            }
            "server->client" => {
                server_vectors += 1;
                let built = server_message(file, message);
                assert_eq!(built.message_type().as_str(), text(message, "/type"), "{file}");
                let mut encoded = Vec::new();
                encode(&built, &mut encoded);
                let ours = decode_value(&encoded);
                assert_equivalent(&ours, &decode_value(&bytes), file);
                let compact_file = text(vector, "/compactFile");
                assert_equivalent(&ours, &decode_value(&read(compact_file)), compact_file);
                assert!(covered.insert(compact_file.to_owned()), "{compact_file} listed twice");
            }
            other => panic!("{file}: direction {other}"),
        }
    }
    assert_eq!(client_vectors, CLIENT_VECTORS, "client->server vectors");
    assert_eq!(server_vectors, SERVER_VECTORS, "server->client vectors");

    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        on_disk.insert(entry.unwrap().file_name().into_string().unwrap());
    }
    for file in &on_disk {
        assert!(
            covered.contains(file) || NON_MESSAGE_FILES.contains(&file.as_str()),
            "{file} is in the vectors directory but no test covers it"
        );
    }
    for file in &covered {
        assert!(on_disk.contains(file), "{file} is in index.json but not on disk");
    }
    assert_eq!(covered.len() + NON_MESSAGE_FILES.len(), on_disk.len());
    assert_eq!(covered.len(), CLIENT_VECTORS + 2 * SERVER_VECTORS);
}

/// Goal: the facts the vector notes call out (PROTOCOL.md §12), checked by name so a change
/// in them is visible: op_batch_three acknowledges "9", counters accept the client's
/// spelling, and `lastSyncTimestamp` arrives as float64.
#[test]
fn vector_notes_hold() {
    let limits = DecodeLimits::default();
    let decode = |file: &str| decode_client_message(&read(file), &limits).unwrap();

    let ClientMessage::OpBatch { ops, .. } = decode("06_op_batch_three.msgpack") else {
        panic!("op_batch_three is an OP_BATCH");
    };
    assert_eq!(ops.last().and_then(|op| op.id.as_deref()), Some("9"));
    let OpKind::Remove { record: Some(tombstone) } = &ops[2].kind else {
        panic!("op 9 is a remove with its record's timestamp");
    };
    assert!(tombstone.value.is_none());
    assert!(matches!(ops[1].kind, OpKind::Put(ref record) if record.ttl_ms == Some(60_000)));

    let sync_bytes = read("19_sync_init.msgpack");
    assert!(sync_bytes.contains(&0xcb), "lastSyncTimestamp is float64 on the wire");
    assert_eq!(
        decode("19_sync_init.msgpack"),
        ClientMessage::SyncInit { map_name: "todos".into(), last_sync_timestamp: Some(1_717_171_717_171) }
    );

    let ts_client = decode("17_counter_sync_as_sent_by_ts_client.msgpack");
    let schema_form = decode("18_counter_sync_schema_form.msgpack");
    assert_eq!(ts_client, schema_form);
    let ClientMessage::CounterSync { state, .. } = ts_client else { panic!("a COUNTER_SYNC") };
    assert_eq!(state.positive.get("client-a"), Some(&3.0));
    assert_eq!(state.negative.get("client-a"), Some(&1.0));
}
