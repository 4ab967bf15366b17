//! `POST /sync`, the stateless HTTP sync transport (PROTOCOL.md §9, DECISIONS.md §4.5): one
//! msgpack request, one msgpack reply. `operations` are applied like an `OP_BATCH` and
//! acknowledged in `ack`; each of `syncMaps` gets the changes of its LWW map since the point
//! the request's `lastSyncTimestamp` marks, in server arrival order (`shard::sync`), with the
//! point to continue from as `serverSyncTimestamp`; `queries` get the matching values,
//! key-ascending; `searches` get an `errors` entry 501 (search is not offered over HTTP).
//!
//! Authentication and access control are the WebSocket path's: with a JWT secret configured, a
//! request without a valid `Authorization: Bearer` token gets 401 and nothing is applied; the
//! token's roles go through the access policy (`--acl`) like a connection's — a denied op
//! refuses all `operations` (as an `OP_BATCH` would be), a denied map or query gets an `errors`
//! entry 403 naming it. The body is read whole
//! first (bounded by `HTTP_BODY_BYTES_MAX`: 413 past it), then authenticated, then decoded
//! (400 with a JSON body when it is not a valid request), and only then acted on, so a bad
//! request changes nothing.

use compact_str::CompactString;
use std::sync::Arc;

use glommio::net::TcpStream;

use crate::acl::{Access, Permission, Resource};
use crate::auth::Principal;
use crate::limits::{
    HTTP_BODY_BYTES_MAX, HTTP_SYNC_DELTA_BYTES_MAX, HTTP_SYNC_DELTA_RECORDS_MAX, HTTP_SYNC_MAPS_MAX,
    HTTP_SYNC_QUERIES_MAX, KEY_BYTES_MAX, MAP_NAME_BYTES_MAX, OPS_PER_BATCH_MAX,
};
use crate::model::WriteConcern;
use crate::net::http::{read_body, HttpError, RequestHead};
use crate::node::{wall_ms, Node, NO_CONNECTION};
use crate::protocol::{
    decode_http_sync_request, encode_http_sync_response, ClientOp, DecodeLimits, HttpQuery, HttpQueryResult,
    HttpSyncAck, HttpSyncError, HttpSyncRequest, HttpSyncResponse, MapDelta, OpKind, OpResult, SyncMapRequest,
};
use crate::query::Query;
use crate::shard::sync::{ArrivalPoint, DeltaBudget};
use crate::shard::{ConnRef, OpOutcome};

/// The level every applied write reaches with the memory backend (DECISIONS §4.6).
const ACHIEVED_LEVEL: WriteConcern = WriteConcern::Applied;

/// A whole-request error: status and a JSON body `{"code", "message"}` (PROTOCOL §9).
fn json_error(status: u16, message: &str) -> (u16, &'static str, Vec<u8>) {
    let body = serde_json::json!({ "code": status, "message": message });
    (status, "application/json", body.to_string().into_bytes())
}

/// Answers one `POST /sync` with (status, content type, body).
pub(super) async fn answer(
    node: &Node,
    stream: &mut TcpStream,
    head: &mut RequestHead,
) -> (u16, &'static str, Vec<u8>) {
    let body = match read_body(stream, head).await {
        Ok(body) => body,
        Err(HttpError::BodyTooLarge) => {
            return json_error(413, &format!("request body larger than {HTTP_BODY_BYTES_MAX} bytes"));
        }
        Err(error) => return json_error(400, &error.to_string()),
    };
    // Without a secret every request is anonymous, whatever token it carries (PROTOCOL §9).
    let principal = match node.verifier() {
        None => Principal::anonymous(),
        Some(verifier) => {
            // The client sends the literal text `null` or `undefined` when it has no token.
            let token = head
                .header("authorization")
                .and_then(|value| value.trim().strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|token| !token.is_empty() && *token != "null" && *token != "undefined");
            let Some(token) = token else { return json_error(401, "authentication required") };
            match verifier.verify(token) {
                Ok(principal) => principal,
                Err(_) => return json_error(401, "Authentication failed"),
            }
        }
    };
    let limits = DecodeLimits { max_depth: node.config.max_nesting_depth };
    let request = match decode_http_sync_request(&body, &limits) {
        Ok(request) => request,
        Err(error) => return json_error(400, &format!("invalid MsgPack body: {error}")),
    };
    let response = respond_to(node, &principal, request).await;
    let mut out = Vec::with_capacity(1024);
    encode_http_sync_response(&response, &mut out);
    (200, "application/msgpack", out)
}

/// Checks one access against the policy; a refusal becomes an `errors` entry 403.
fn permit(
    node: &Node,
    principal: &Principal,
    map_name: &str,
    permission: Permission,
    context: Option<&str>,
    errors: &mut Vec<HttpSyncError>,
) -> bool {
    let access = Access { kind: Resource::Map, name: map_name, permission };
    match node.config.policy.check(principal, &access) {
        Ok(()) => true,
        Err(denied) => {
            errors.push(HttpSyncError { code: 403, message: denied.to_string(), context: context.map(str::to_string) });
            false
        }
    }
}

async fn respond_to(node: &Node, principal: &Principal, request: HttpSyncRequest) -> HttpSyncResponse {
    let mut errors = Vec::new();
    let ack = if request.operations.is_empty() {
        None
    } else {
        apply_operations(node, principal, request.operations, &mut errors).await
    };
    let deltas = sync_maps(node, principal, request.sync_maps, &mut errors).await;
    let query_results = run_queries(node, principal, request.queries, &mut errors).await;
    for search in request.searches {
        errors.push(HttpSyncError {
            code: 501,
            message: "not implemented: search over HTTP sync".into(),
            context: Some(search.search_id),
        });
    }
    HttpSyncResponse { server_hlc: node.hlc_now(), ack, deltas, query_results, search_results: Vec::new(), errors }
}

/// Applies `operations` like an `OP_BATCH` and returns the `ack`. Ops that ask for a write
/// concern, and refused ops, get a `results` entry (there is no `OP_REJECTED` over HTTP). One
/// op the policy denies refuses them all, with no `ack` (DECISIONS §5, as for an `OP_BATCH`).
async fn apply_operations(
    node: &Node,
    principal: &Principal,
    ops: Vec<ClientOp>,
    errors: &mut Vec<HttpSyncError>,
) -> Option<HttpSyncAck> {
    for op in &ops {
        let permission = match op.kind {
            OpKind::Remove { .. } | OpKind::OrRemove { .. } => Permission::Remove,
            OpKind::Put(_) | OpKind::OrAdd(_) | OpKind::Noop => Permission::Write,
        };
        if !permit(node, principal, &op.map_name, permission, op.id.as_deref(), errors) {
            return None;
        }
    }
    if ops.len() > OPS_PER_BATCH_MAX {
        errors.push(HttpSyncError {
            code: 413,
            message: format!("operations exceed the maximum op count ({OPS_PER_BATCH_MAX}); none applied"),
            context: None,
        });
        return None;
    }
    let last_id = ops.last().and_then(|op| op.id.clone()).unwrap_or_else(|| CompactString::const_new("unknown"));
    let receipts: Vec<(Option<CompactString>, bool)> =
        ops.iter().map(|op| (op.id.clone(), op.write_concern.is_some())).collect();
    let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
    let mut routed = Vec::with_capacity(ops.len());
    let mut routed_positions = Vec::with_capacity(ops.len());
    for (position, op) in ops.into_iter().enumerate() {
        if op.map_name.is_empty() || op.map_name.len() > MAP_NAME_BYTES_MAX {
            let reason = format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes");
            outcomes[position] = Some(OpOutcome::Rejected { reason, code: 400 });
        } else if op.key.len() > KEY_BYTES_MAX {
            let reason = format!("key longer than {KEY_BYTES_MAX} bytes");
            outcomes[position] = Some(OpOutcome::Rejected { reason, code: 400 });
        } else {
            routed_positions.push(position);
            routed.push(op);
        }
    }
    if !routed.is_empty() {
        // No connection wrote this, so every interested connection gets the events.
        let writer = ConnRef { shard: node.shard, conn: NO_CONNECTION };
        for (position, outcome) in routed_positions.into_iter().zip(node.apply_batch(routed, writer).await) {
            outcomes[position] = Some(outcome);
        }
    }
    let mut results = Vec::new();
    for ((op_id, asked_concern), outcome) in receipts.into_iter().zip(outcomes) {
        let op_id = op_id.unwrap_or_else(|| CompactString::const_new("unknown"));
        match outcome.expect("every op has an outcome") {
            OpOutcome::Rejected { reason, .. } => {
                results.push(OpResult { op_id, success: false, achieved_level: ACHIEVED_LEVEL, error: Some(reason) });
            }
            // There is no MERGE_REJECTED over HTTP: the refusal is in the op's result.
            OpOutcome::MergeRejected(rejection) => {
                let error = Some(format!("rejected by a conflict resolver: {}", rejection.reason));
                results.push(OpResult { op_id, success: false, achieved_level: ACHIEVED_LEVEL, error });
            }
            // A merged write's stored record reaches the client with the deltas.
            OpOutcome::Applied | OpOutcome::Unchanged | OpOutcome::Merged(_) if asked_concern => {
                results.push(OpResult { op_id, success: true, achieved_level: ACHIEVED_LEVEL, error: None });
            }
            OpOutcome::Applied | OpOutcome::Unchanged | OpOutcome::Merged(_) => {}
        }
    }
    Some(HttpSyncAck { last_id, results })
}

/// The `deltas`: for each requested map, the records that changed after its point, within one
/// budget for the whole reply. A map the budget no longer reaches gets no records and its own
/// point back, so the client asks again from there.
async fn sync_maps(
    node: &Node,
    principal: &Principal,
    requests: Vec<SyncMapRequest>,
    errors: &mut Vec<HttpSyncError>,
) -> Vec<MapDelta> {
    let mut deltas = Vec::new();
    let mut records_left = HTTP_SYNC_DELTA_RECORDS_MAX;
    let mut bytes_left = HTTP_SYNC_DELTA_BYTES_MAX;
    for (index, request) in requests.into_iter().enumerate() {
        if index >= HTTP_SYNC_MAPS_MAX {
            errors.push(HttpSyncError {
                code: 413,
                message: format!("more than {HTTP_SYNC_MAPS_MAX} syncMaps in one request"),
                context: Some(request.map_name),
            });
            continue;
        }
        if request.map_name.is_empty() || request.map_name.len() > MAP_NAME_BYTES_MAX {
            errors.push(HttpSyncError {
                code: 400,
                message: format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes"),
                context: None,
            });
            continue;
        }
        if !permit(node, principal, &request.map_name, Permission::Read, Some(&request.map_name), errors) {
            continue;
        }
        if records_left == 0 || bytes_left == 0 {
            deltas.push(MapDelta {
                map_name: request.map_name,
                records: Vec::new(),
                server_sync_timestamp: request.last_sync_timestamp,
            });
            continue;
        }
        let map: Arc<str> = Arc::from(request.map_name.as_str());
        let after = ArrivalPoint::from_timestamp(&request.last_sync_timestamp);
        let merged = node.lww_changes(&map, after, DeltaBudget { records: records_left, bytes: bytes_left }).await;
        records_left = records_left.saturating_sub(merged.records.len());
        bytes_left = bytes_left.saturating_sub(merged.bytes);
        deltas.push(MapDelta {
            map_name: request.map_name,
            records: merged.records,
            server_sync_timestamp: merged.cut.to_timestamp(&node.config.node_id),
        });
    }
    deltas
}

/// The `queryResults`: each query's live values, key-ascending, with `offset`, `limit` and
/// `cursor` applied. `filter` is a `where` map (nil: every record).
async fn run_queries(
    node: &Node,
    principal: &Principal,
    queries: Vec<HttpQuery>,
    errors: &mut Vec<HttpSyncError>,
) -> Vec<HttpQueryResult> {
    let mut results = Vec::new();
    for (index, request) in queries.into_iter().enumerate() {
        if index >= HTTP_SYNC_QUERIES_MAX {
            errors.push(HttpSyncError {
                code: 413,
                message: format!("more than {HTTP_SYNC_QUERIES_MAX} queries in one request"),
                context: Some(request.query_id),
            });
            continue;
        }
        let mut fields = Vec::new();
        match &request.filter {
            rmpv::Value::Nil => {}
            filter @ rmpv::Value::Map(_) => fields.push((rmpv::Value::from("where"), filter.clone())),
            _ => {
                errors.push(HttpSyncError {
                    code: 400,
                    message: "filter must be a map of field values, or nil".into(),
                    context: Some(request.query_id),
                });
                continue;
            }
        }
        let offset = request.offset.unwrap_or(0) as usize;
        if let Some(limit) = request.limit {
            fields.push((rmpv::Value::from("limit"), rmpv::Value::from((limit as usize).saturating_add(offset))));
        }
        if let Some(cursor) = &request.cursor {
            fields.push((rmpv::Value::from("cursor"), rmpv::Value::from(cursor.as_str())));
        }
        let query = match Query::from_value(&rmpv::Value::Map(fields)) {
            Ok(query) => Arc::new(query),
            Err(error) => {
                errors.push(HttpSyncError {
                    code: 400,
                    message: format!("invalid query: {error}"),
                    context: Some(request.query_id),
                });
                continue;
            }
        };
        if request.map_name.is_empty() || request.map_name.len() > MAP_NAME_BYTES_MAX {
            errors.push(HttpSyncError {
                code: 400,
                message: format!("map name must be 1 to {MAP_NAME_BYTES_MAX} bytes"),
                context: Some(request.query_id),
            });
            continue;
        }
        if !permit(node, principal, &request.map_name, Permission::Read, Some(&request.query_id), errors) {
            continue;
        }
        let map: Arc<str> = Arc::from(request.map_name.as_str());
        let now = wall_ms();
        let cursor = Arc::new(query.resolve_cursor(now));
        let rows = node.query_rows(&map, &query, &cursor).await;
        let page = query.select_resolved(rows, &cursor, now);
        let values = page
            .rows
            .into_iter()
            .skip(offset)
            .map(|(_, value)| {
                let mut bytes = Vec::new();
                rmpv::encode::write_value(&mut bytes, &value).expect("writing to a Vec cannot fail");
                crate::model::ValueBytes::from(bytes)
            })
            .collect();
        results.push(HttpQueryResult {
            query_id: request.query_id,
            results: values,
            has_more: Some(page.has_more),
            next_cursor: page.next_cursor,
        });
    }
    results
}
