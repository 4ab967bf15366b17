//! The bodies of HTTP sync (`POST /sync`, PROTOCOL.md §9, DECISIONS.md §4.5): the typed
//! request decoded from msgpack, and the response encoded to msgpack. Same field rules as the
//! WebSocket messages (its `operations` are `ClientOp`s, classified the same way). It leaves
//! out HTTP itself: status codes, headers, the JSON error bodies and authentication.

use super::decode::{
    client_op, list, rmpv_value, scan_map, search_options, string, timestamp, uint, ClientOp, DecodeError, Fields,
    Path, SearchOptions,
};
use super::encode::{present, Writer};
use super::scan::Raw;
use super::types::OpResult;
use super::DecodeLimits;
use crate::model::{LwwRecord, Timestamp, ValueBytes};
use compact_str::CompactString;

/// A `POST /sync` request body. An empty body is an empty request (every field empty);
/// otherwise `clientId` and `clientHlc` are required.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HttpSyncRequest {
    pub client_id: Option<String>,
    pub client_hlc: Option<Timestamp>,
    /// Applied like an `OP_BATCH`.
    pub operations: Vec<ClientOp>,
    pub sync_maps: Vec<SyncMapRequest>,
    pub queries: Vec<HttpQuery>,
    pub searches: Vec<HttpSearch>,
}

/// One map the client wants changes for (`syncMaps[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMapRequest {
    pub map_name: String,
    /// The `serverSyncTimestamp` of an earlier reply, echoed; opaque to the client.
    pub last_sync_timestamp: Timestamp,
}

/// One one-shot query (`queries[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpQuery {
    pub query_id: String,
    pub map_name: String,
    /// A `where`-style equality map; nil (or absent) selects every record.
    pub filter: rmpv::Value,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub cursor: Option<String>,
}

/// One one-shot full-text search (`searches[]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSearch {
    pub search_id: String,
    pub map_name: String,
    pub query: String,
    pub options: SearchOptions,
}

/// A `POST /sync` response body. Empty lists and `None` are left out of the encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSyncResponse {
    pub server_hlc: Timestamp,
    pub ack: Option<HttpSyncAck>,
    pub deltas: Vec<MapDelta>,
    pub query_results: Vec<HttpQueryResult>,
    pub search_results: Vec<HttpSearchResult>,
    pub errors: Vec<HttpSyncError>,
}

/// Acknowledges the request's `operations`, read by the client as an `OP_ACK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSyncAck {
    /// Id of the last op, or `"unknown"`.
    pub last_id: CompactString,
    /// Left out when empty.
    pub results: Vec<OpResult>,
}

/// The changes of one requested map (`deltas[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDelta {
    pub map_name: String,
    /// `(key, record)`; a tombstone is sent with `eventType: REMOVE`, anything else `PUT`.
    pub records: Vec<(String, LwwRecord)>,
    pub server_sync_timestamp: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpQueryResult {
    pub query_id: String,
    /// Record values only, key-ascending.
    pub results: Vec<ValueBytes>,
    pub has_more: Option<bool>,
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSearchResult {
    pub search_id: String,
    pub results: Vec<ValueBytes>,
    pub total_count: Option<u64>,
}

/// A per-item failure (`errors[]`), e.g. `403 "access denied"` with the query id as context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSyncError {
    pub code: u16,
    pub message: String,
    pub context: Option<String>,
}

/// Decodes a `POST /sync` body under the same bounds as a WebSocket frame.
pub fn decode_http_sync_request(body: &[u8], limits: &DecodeLimits) -> Result<HttpSyncRequest, DecodeError> {
    if body.is_empty() {
        return Ok(HttpSyncRequest::default());
    }
    let scanned = scan_map(body, limits)?;
    let fields = Fields::of(scanned.root(), Path::root("sync"))?;
    let query = |raw: Raw<'_>, path: &Path<'_>| {
        let query = Fields::of(raw, *path)?;
        Ok(HttpQuery {
            query_id: query.req("queryId", string)?,
            map_name: query.req("mapName", string)?,
            filter: query.opt("filter", |raw, path| rmpv_value(raw, path, limits))?.unwrap_or(rmpv::Value::Nil),
            limit: query.opt("limit", uint)?,
            offset: query.opt("offset", uint)?,
            cursor: query.opt("cursor", string)?,
        })
    };
    Ok(HttpSyncRequest {
        client_id: Some(fields.req("clientId", string)?),
        client_hlc: Some(fields.req("clientHlc", timestamp)?),
        operations: optional_list(&fields, "operations", client_op)?,
        sync_maps: optional_list(&fields, "syncMaps", sync_map)?,
        queries: optional_list(&fields, "queries", query)?,
        searches: optional_list(&fields, "searches", search)?,
    })
}

/// An optional array field; absent or nil reads as empty.
fn optional_list<'a, T>(
    fields: &Fields<'a, '_>,
    name: &str,
    convert: impl Fn(Raw<'a>, &Path<'_>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    fields.opt(name, |raw, path| list(raw, path, convert)).map(Option::unwrap_or_default)
}

fn sync_map(raw: Raw<'_>, path: &Path<'_>) -> Result<SyncMapRequest, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(SyncMapRequest {
        map_name: fields.req("mapName", string)?,
        last_sync_timestamp: fields.req("lastSyncTimestamp", timestamp)?,
    })
}

fn search(raw: Raw<'_>, path: &Path<'_>) -> Result<HttpSearch, DecodeError> {
    let fields = Fields::of(raw, *path)?;
    Ok(HttpSearch {
        search_id: fields.req("searchId", string)?,
        map_name: fields.req("mapName", string)?,
        query: fields.req("query", string)?,
        options: fields.opt("options", search_options)?.unwrap_or_default(),
    })
}

/// Appends a `POST /sync` response body (one msgpack map, no `type`).
pub fn encode_http_sync_response(response: &HttpSyncResponse, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    let listed = |len: usize| usize::from(len > 0);
    w.map(
        1 + present(&response.ack)
            + listed(response.deltas.len())
            + listed(response.query_results.len())
            + listed(response.search_results.len())
            + listed(response.errors.len()),
    );
    w.str("serverHlc");
    w.timestamp(&response.server_hlc);
    if let Some(ack) = &response.ack {
        w.str("ack");
        w.map(1 + listed(ack.results.len()));
        w.key_str("lastId", &ack.last_id);
        if !ack.results.is_empty() {
            w.str("results");
            w.array(ack.results.len());
            for result in &ack.results {
                w.op_result(result);
            }
        }
    }
    if !response.deltas.is_empty() {
        w.str("deltas");
        w.array(response.deltas.len());
        for delta in &response.deltas {
            w.map(3);
            w.key_str("mapName", &delta.map_name);
            w.str("records");
            w.array(delta.records.len());
            for (key, record) in &delta.records {
                w.map(3);
                w.key_str("key", key);
                w.str("record");
                w.lww_record(record);
                w.key_str("eventType", if record.is_tombstone() { "REMOVE" } else { "PUT" });
            }
            w.str("serverSyncTimestamp");
            w.timestamp(&delta.server_sync_timestamp);
        }
    }
    if !response.query_results.is_empty() {
        w.str("queryResults");
        w.array(response.query_results.len());
        for result in &response.query_results {
            w.map(2 + present(&result.has_more) + present(&result.next_cursor));
            w.key_str("queryId", &result.query_id);
            w.str("results");
            w.values(&result.results);
            if let Some(has_more) = result.has_more {
                w.str("hasMore");
                w.bool(has_more);
            }
            w.opt_str("nextCursor", result.next_cursor.as_deref());
        }
    }
    if !response.search_results.is_empty() {
        w.str("searchResults");
        w.array(response.search_results.len());
        for result in &response.search_results {
            w.map(2 + present(&result.total_count));
            w.key_str("searchId", &result.search_id);
            w.str("results");
            w.values(&result.results);
            w.opt_uint("totalCount", result.total_count);
        }
    }
    if !response.errors.is_empty() {
        w.str("errors");
        w.array(response.errors.len());
        for error in &response.errors {
            w.map(2 + present(&error.context));
            w.key_uint("code", u64::from(error.code));
            w.key_str("message", &error.message);
            w.opt_str("context", error.context.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::OpKind;
    use rmpv::Value;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(key, value)| (Value::from(key), value)).collect())
    }

    fn bytes(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    fn ts(millis: u64) -> Value {
        map(vec![("millis", Value::F64(millis as f64)), ("counter", 0.into()), ("nodeId", "c".into())])
    }

    /// Goal: a full request decodes into its typed parts, an empty body is an empty request,
    /// and a body without `clientId` names the missing field.
    #[test]
    fn decodes_requests() {
        let limits = DecodeLimits::default();
        assert_eq!(decode_http_sync_request(&[], &limits), Ok(HttpSyncRequest::default()));
        let body = map(vec![
            ("clientId", "client-1".into()),
            ("clientHlc", ts(10)),
            (
                "operations",
                Value::Array(vec![map(vec![
                    ("id", "4".into()),
                    ("mapName", "m".into()),
                    ("key", "k".into()),
                    ("opType", "REMOVE".into()),
                    ("timestamp", ts(11)),
                ])]),
            ),
            ("syncMaps", Value::Array(vec![map(vec![("mapName", "m".into()), ("lastSyncTimestamp", ts(5))])])),
            (
                "queries",
                Value::Array(vec![map(vec![
                    ("queryId", "q".into()),
                    ("mapName", "m".into()),
                    ("filter", map(vec![("done", false.into())])),
                    ("limit", 5.into()),
                ])]),
            ),
            (
                "searches",
                Value::Array(vec![map(vec![("searchId", "s".into()), ("mapName", "m".into()), ("query", "x".into())])]),
            ),
        ]);
        let request = decode_http_sync_request(&bytes(&body), &limits).unwrap();
        assert_eq!(request.client_id.as_deref(), Some("client-1"));
        assert_eq!(request.client_hlc, Some(Timestamp::new(10, 0, "c")));
        assert_eq!(request.operations.len(), 1);
        assert_eq!(request.operations[0].id.as_deref(), Some("4"));
        let OpKind::Remove { record: Some(tombstone) } = &request.operations[0].kind else {
            panic!("expected a remove with the op's timestamp");
        };
        assert_eq!(tombstone.timestamp, Timestamp::new(11, 0, "c"));
        assert_eq!(
            request.sync_maps,
            vec![SyncMapRequest { map_name: "m".into(), last_sync_timestamp: Timestamp::new(5, 0, "c") }]
        );
        assert_eq!(request.queries[0].filter, map(vec![("done", false.into())]));
        assert_eq!(request.queries[0].limit, Some(5));
        assert_eq!(request.queries[0].offset, None);
        assert_eq!(request.searches[0].query, "x");

        let no_id = bytes(&map(vec![("clientHlc", ts(1))]));
        assert_eq!(
            decode_http_sync_request(&no_id, &limits),
            Err(DecodeError::Malformed("sync.clientId: missing".into()))
        );
        assert_eq!(decode_http_sync_request(&bytes(&Value::Array(vec![])), &limits), Err(DecodeError::NotAMap));
    }

    /// Goal: the response has `serverHlc` and only the non-empty parts; delta records carry
    /// `eventType` from the record (tombstone = REMOVE).
    #[test]
    fn encodes_responses() {
        let value = crate::model::ValueBytes::from(bytes(&Value::from("v")));
        let response = HttpSyncResponse {
            server_hlc: Timestamp::new(20, 1, "node"),
            ack: Some(HttpSyncAck { last_id: "4".into(), results: vec![] }),
            deltas: vec![MapDelta {
                map_name: "m".into(),
                records: vec![
                    (
                        "a".into(),
                        LwwRecord { value: Some(value.clone()), timestamp: Timestamp::new(1, 0, "c"), ttl_ms: None },
                    ),
                    ("b".into(), LwwRecord { value: None, timestamp: Timestamp::new(2, 0, "c"), ttl_ms: None }),
                ],
                server_sync_timestamp: Timestamp::new(20, 1, "node"),
            }],
            query_results: vec![HttpQueryResult {
                query_id: "q".into(),
                results: vec![value],
                has_more: Some(false),
                next_cursor: None,
            }],
            search_results: vec![],
            errors: vec![HttpSyncError { code: 403, message: "access denied".into(), context: Some("q".into()) }],
        };
        let mut out = Vec::new();
        encode_http_sync_response(&response, &mut out);
        let decoded = rmpv::decode::read_value(&mut &out[..]).unwrap();
        let keys: Vec<_> = decoded.as_map().unwrap().iter().map(|(key, _)| key.as_str().unwrap()).collect();
        assert_eq!(keys, ["serverHlc", "ack", "deltas", "queryResults", "errors"]);
        assert_eq!(decoded["ack"], map(vec![("lastId", "4".into())]));
        assert_eq!(decoded["deltas"][0]["records"][0]["eventType"], Value::from("PUT"));
        assert_eq!(decoded["deltas"][0]["records"][1]["eventType"], Value::from("REMOVE"));
        assert_eq!(decoded["deltas"][0]["records"][1]["record"]["value"], Value::Nil);
        assert_eq!(decoded["queryResults"][0]["results"], Value::Array(vec!["v".into()]));
        assert_eq!(decoded["errors"][0]["context"], Value::from("q"));

        out.clear();
        let minimal = HttpSyncResponse { ack: None, deltas: vec![], query_results: vec![], errors: vec![], ..response };
        encode_http_sync_response(&minimal, &mut out);
        let decoded = rmpv::decode::read_value(&mut &out[..]).unwrap();
        assert_eq!(decoded.as_map().unwrap().len(), 1);
    }
}
