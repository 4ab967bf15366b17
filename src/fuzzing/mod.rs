//! shardgrid::fuzzing: the properties behind the fuzz targets of the `fuzz/` crate, kept in the
//! library so the stable test suite (`tests/fuzz_smoke.rs`) runs the same checks over the
//! protocol vectors and their mutations that libFuzzer runs over its corpus. Each target is a
//! `pub fn <target>(data: &[u8])` that panics only when a property fails; bytes that are merely
//! invalid are a normal outcome. The segment record target lives beside the format it checks,
//! in `shardgrid_storage::fuzzing`.
//!
//! Targets:
//! * [`decode_message`]: the client frame decoder, the HTTP sync body decoder and the inbound
//!   `BATCH` splitter never panic; a decoded message written back by the client's encoder
//!   ([`encode_client_message`]) decodes to the same message, and encodes to the same bytes;
//!   a tighter depth bound never accepts more; the write path's one-pass shortcut answers what
//!   the general decoder does; every refusal maps to an `ERROR` reply.
//! * [`http_head`]: the request head reader never panics, never accepts a head larger than
//!   `HTTP_HEAD_BYTES_MAX`, reads the same head whichever way the bytes are split into reads,
//!   and a recognised WebSocket upgrade always carries a valid key.
//! * [`predicate`]: a `QUERY_SUB` query and record values from msgpack; parsing and evaluation
//!   never panic and are deterministic; `where` and `predicate` combine by AND; `not` negates;
//!   a matching record has every pinned attribute the live-query index files the query under;
//!   the row order is antisymmetric; a page holds matching rows after the cursor, in order, and
//!   its `nextCursor` is valid and leads past the page.
//!
//! `seeds` derives starting corpora for every target from the protocol vectors.

mod client_encode;
pub mod seeds;

/// The seeded generator of the simulations and the fuzz smoke test (one for the workspace).
pub use shardgrid_storage::sim::Prng;

use std::cmp::Ordering;
use std::pin::Pin;
use std::task::{Context, Poll};

use rmpv::Value;

use crate::limits::HTTP_HEAD_BYTES_MAX;
use crate::live::index::IndexKey;
use crate::net::http::{self, HttpError, RequestHead};
use crate::protocol::{
    decode_client_message, decode_general, decode_http_sync_request, unpack_batch, ClientMessage, DecodeError,
    DecodeLimits, Direction, BATCH_ITEMS_MAX, NESTING_DEPTH_MAX,
};
use crate::query::{lookup_attribute, CursorStatus, Query};

pub use client_encode::encode_client_message;
pub use shardgrid_storage::fuzzing::segment_record;

/// Checks the frame decoders against `data`, one client frame; see the module doc.
pub fn decode_message(data: &[u8]) {
    check_unpack_batch(data);
    let limits = DecodeLimits::default();
    // The HTTP sync body shares the frame's bounds; only its not panicking is checked here.
    let _ = decode_http_sync_request(data, &limits);
    let decoded = decode_client_message(data, &limits);
    check_write_shortcut(data, &decoded, &limits);
    let tight = DecodeLimits { max_depth: 1 + data.len() % 8 };
    let decoded_tight = decode_client_message(data, &tight);
    check_write_shortcut(data, &decoded_tight, &tight);
    if let Ok(message) = decoded_tight {
        match &decoded {
            Ok(decoded) => assert_same_message(decoded, &message),
            Err(error) => panic!("accepted at depth {} but refused at the default: {error}", tight.max_depth),
        }
    }
    match decoded {
        Ok(message) => {
            assert_eq!(message.message_type().direction(), Direction::ClientToServer, "decoded {message:?}");
            check_round_trip(&message, &limits, true)
        }
        Err(error) => check_error_reply(&error),
    }
}

/// A decoded message, written by the client's encoder, decodes to itself; a `BATCH`'s inner
/// messages (one level, as the session dispatches them) are checked the same way.
fn check_round_trip(message: &ClientMessage, limits: &DecodeLimits, outermost: bool) {
    let frame = encode_client_message(message);
    let again = decode_client_message(&frame, limits)
        .unwrap_or_else(|error| panic!("{message:?} written back does not decode: {error}"));
    assert_same_message(message, &again);
    assert_eq!(encode_client_message(&again), frame, "writing {message:?} back is stable");
    if let (ClientMessage::Batch { data }, true) = (message, outermost) {
        for item in unpack_batch(data).unwrap_or_default() {
            match decode_client_message(item, limits) {
                Ok(inner) => check_round_trip(&inner, limits, false),
                Err(error) => check_error_reply(&error),
            }
        }
    }
}

/// Equal, or (where floats are NaN, which is never equal to itself) identical when printed.
/// The write path's one-pass shortcut answers exactly what the general decoder does.
fn check_write_shortcut(data: &[u8], decoded: &Result<ClientMessage, DecodeError>, limits: &DecodeLimits) {
    match (decoded, decode_general(data, limits)) {
        (Ok(decoded), Ok(general)) => assert_same_message(&general, decoded),
        (Err(decoded), Err(general)) => assert_eq!(decoded, &general, "the decoders refuse differently"),
        (decoded, general) => panic!("the write shortcut answered {decoded:?}, the general decoder {general:?}"),
    }
}

fn assert_same_message(left: &ClientMessage, right: &ClientMessage) {
    if left != right {
        let (left, right) = (format!("{left:?}"), format!("{right:?}"));
        assert_eq!(left, right, "the message changed on its way back");
    }
}

fn check_error_reply(error: &DecodeError) {
    let (code, text) = error.error_reply();
    assert!(code == 400 || code == 413, "{error:?} answers code {code}");
    assert!(!text.is_empty(), "{error:?} answers an empty message");
}

/// `unpack_batch` splits exactly: the items, length-prefixed again, are the input; it refuses
/// only when the input is not such a sequence or holds too many; cutting off the last byte of
/// a valid input makes it invalid.
fn check_unpack_batch(data: &[u8]) {
    const PREFIX_BYTES: usize = 4;
    match unpack_batch(data) {
        Ok(items) => {
            assert!(items.len() <= BATCH_ITEMS_MAX, "{} items unpacked", items.len());
            let mut packed = Vec::with_capacity(data.len());
            for item in &items {
                packed.extend_from_slice(&(item.len() as u32).to_be_bytes());
                packed.extend_from_slice(item);
            }
            assert_eq!(packed, data, "the items are the input, split");
            if let Some((_, shorter)) = data.split_last() {
                assert!(unpack_batch(shorter).is_err(), "a batch missing its last byte unpacks");
            }
        }
        Err(DecodeError::BatchTooLarge) => {
            assert!(data.len() >= PREFIX_BYTES * (BATCH_ITEMS_MAX + 1), "too many items in {} bytes", data.len());
        }
        Err(DecodeError::Malformed(_)) => {}
        Err(other) => panic!("unpack_batch refused with {other:?}"),
    }
}

/// A stream that hands out `data` at most `chunk` bytes per read, then ends.
struct ChunkedReader<'a> {
    data: &'a [u8],
    chunk: usize,
    delivered: usize,
}

impl futures_lite::AsyncRead for ChunkedReader<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buffer: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let start = self.delivered;
        let len = (self.data.len() - start).min(self.chunk).min(buffer.len());
        buffer[..len].copy_from_slice(&self.data[start..start + len]);
        self.delivered += len;
        Poll::Ready(Ok(len))
    }
}

/// Reads a head from `data` delivered `chunk` bytes at a time; also returns the bytes read.
fn read_head_chunked(data: &[u8], chunk: usize) -> (Result<RequestHead, HttpError>, usize) {
    let mut reader = ChunkedReader { data, chunk, delivered: 0 };
    let result = futures_lite::future::block_on(http::read_head(&mut reader));
    (result, reader.delivered)
}

fn same_head(left: &RequestHead, right: &RequestHead) -> bool {
    (&left.method, &left.path, &left.headers) == (&right.method, &right.path, &right.headers)
}

/// Checks the request head reader against `data`: the first byte says how many bytes one read
/// returns at most, the rest is what the client sends. See the module doc.
pub fn http_head(data: &[u8]) {
    let Some((&chunk_code, stream)) = data.split_first() else { return };
    // At most 64 reads: the reader parses everything received after each read, so reads of
    // one byte would make a 16 KiB head cost 16,384 parses and slow the search to a crawl.
    let chunk = (1 + usize::from(chunk_code) * usize::from(chunk_code)).max(stream.len().div_ceil(64));
    let (chunked, delivered) = read_head_chunked(stream, chunk);
    match (&chunked, &http::parse_head(stream)) {
        (Ok(left), Ok(Some(right))) => assert!(same_head(left, right), "read in pieces {left:?}, at once {right:?}"),
        (Ok(head), other) => panic!("read in pieces of {chunk}: {head:?}; at once: {other:?}"),
        (Err(error), Ok(Some(head))) => panic!("read in pieces of {chunk}: {error}; at once: {head:?}"),
        (Err(_), _) => {}
    }
    let Ok(head) = chunked else { return };
    let head_len = delivered - head.rest.len();
    assert!(head_len <= HTTP_HEAD_BYTES_MAX, "accepted a head of {head_len} bytes");
    assert_eq!(head.rest, &stream[head_len..delivered], "the bytes after the head are kept as they came");
    assert!(stream[..head_len].ends_with(b"\n"), "a head ends with its blank line");
    match http::parse_head(&stream[..head_len]) {
        Ok(Some(alone)) => assert!(same_head(&head, &alone) && alone.rest.is_empty(), "the head alone reads alike"),
        other => panic!("the head alone does not parse: {other:?}"),
    }
    assert!(head.path.starts_with(head.route()) && !head.route().contains('?'), "route of {:?}", head.path);
    if let Some(key) = head.websocket_key() {
        assert_eq!(head.method, "GET", "an upgrade is a GET");
        assert!(http::is_valid_websocket_key(key), "an upgrade recognised with the key {key:?}");
    }
}

/// How deep the query and the record values may nest: what a frame can carry (rmpv counts
/// two units per container, as in the frame decoder).
const VALUE_DEPTH_MAX: usize = 2 * NESTING_DEPTH_MAX + 3;

fn map_of(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(key, value)| (Value::from(key), value)).collect())
}

fn predicate_node(op: &str, children: Vec<Value>) -> Value {
    map_of(vec![("op", Value::from(op)), ("children", Value::Array(children))])
}

/// `query` (as `Query::from_value` reads a field: the last copy, nil as absent).
fn query_field<'v>(query: &'v Value, name: &str) -> Option<&'v Value> {
    let Value::Map(entries) = query else { return None };
    entries.iter().rev().find(|(key, _)| key.as_str() == Some(name)).map(|(_, value)| value).filter(|v| !v.is_nil())
}

/// Whether a query made only of `predicate` matches `record`; `None` when it does not parse
/// (a bound: nesting or node count).
fn predicate_matches(predicate: Value, record: &Value) -> Option<bool> {
    Query::from_value(&map_of(vec![("predicate", predicate)])).ok().map(|query| query.matches(record))
}

/// Checks the query engine against `data`: a `query` map, then a record value, then another
/// record value (each msgpack; missing values read as nil). See the module doc.
pub fn predicate(data: &[u8]) {
    let mut rest = data;
    let Ok(query_value) = rmpv::decode::read_value_with_max_depth(&mut rest, VALUE_DEPTH_MAX) else { return };
    let record = rmpv::decode::read_value_with_max_depth(&mut rest, VALUE_DEPTH_MAX).unwrap_or(Value::Nil);
    let other = rmpv::decode::read_value_with_max_depth(&mut rest, VALUE_DEPTH_MAX).unwrap_or(Value::Nil);
    let Ok(query) = Query::from_value(&query_value) else { return };

    let matched = query.matches(&record);
    assert_eq!(query.matches(&record), matched, "evaluating twice gives two answers");
    let reparsed = Query::from_value(&query_value).expect("a query that parsed once parses again");
    assert_eq!(reparsed.matches(&record), matched, "parsing twice gives two queries");

    // `where` AND `predicate`, each on its own.
    let where_only = match query_field(&query_value, "where") {
        Some(where_value) => map_of(vec![("where", where_value.clone())]),
        None => Value::Map(Vec::new()),
    };
    let where_matches = Query::from_value(&where_only).expect("the query's `where` parses alone").matches(&record);
    if let Some(node) = query_field(&query_value, "predicate") {
        let predicate_alone = predicate_matches(node.clone(), &record).expect("the query's predicate parses alone");
        assert_eq!(matched, where_matches && predicate_alone, "a query is its `where` AND its predicate");
        // Negation, where the deeper trees still fit the bounds.
        let not = predicate_node("not", vec![node.clone()]);
        if let Some(negated) = predicate_matches(not.clone(), &record) {
            assert_eq!(negated, !predicate_alone, "not(p) is the negation of p");
        }
        if let Some(twice) = predicate_matches(predicate_node("not", vec![not.clone()]), &record) {
            assert_eq!(twice, predicate_alone, "not(not(p)) is p");
        }
        if let Some(either) = predicate_matches(predicate_node("or", vec![node.clone(), not.clone()]), &record) {
            assert!(either, "p or not(p) holds");
        }
        if let Some(both) = predicate_matches(predicate_node("and", vec![node.clone(), not]), &record) {
            assert!(!both, "p and not(p) fails");
        }
    } else {
        assert_eq!(matched, where_matches, "without a predicate a query is its `where`");
    }

    // The live-query index files a query under one of these terms and looks the record's
    // attribute up under the same key: a matching record must be found there.
    if matched {
        for (attribute, value) in query.equality_terms() {
            if let Some(key) = IndexKey::of(value) {
                let found = lookup_attribute(&record, attribute).and_then(IndexKey::of);
                assert_eq!(found, Some(key), "a matching record is not where the index looks for `{attribute}`");
            }
        }
    }

    check_paging(&query_value, &query, &record, &other);

    // The row order: a row ties with itself, and swapping two rows reverses their order.
    let row = ("k", &record);
    let other_row = ("k", &other);
    assert_eq!(query.compare(row, row), Ordering::Equal, "a row ties with itself");
    assert_eq!(
        query.compare(row, other_row),
        query.compare(other_row, row).reverse(),
        "the row order is antisymmetric"
    );
}

/// The clock of the paging checks (any fixed time: cursors are issued and read at it).
const NOW_MS: u64 = 1_700_000_000_000;

/// A page of the matching rows among `record` and `other` (keys "a" and "b") holds only
/// matching rows after the query's cursor, in order, at most a page of them; its `nextCursor`
/// is valid for the same query, and the page it leads to starts after the last row shown.
fn check_paging(query_value: &Value, query: &Query, record: &Value, other: &Value) {
    let cursor = query.resolve_cursor(NOW_MS);
    let rows: Vec<(String, Value)> = [("a", record), ("b", other)]
        .into_iter()
        .filter(|(_, value)| query.matches(value))
        .map(|(key, value)| (key.to_owned(), value.clone()))
        .collect();
    let page = query.select_resolved(rows, &cursor, NOW_MS);
    assert!(page.rows.len() <= query.page_size(), "a page larger than the page size");
    for (key, value) in &page.rows {
        assert!(query.is_after_cursor(&cursor, key, value), "row {key} is not after the cursor");
    }
    let in_order = page
        .rows
        .windows(2)
        .all(|pair| query.compare((&pair[0].0, &pair[0].1), (&pair[1].0, &pair[1].1)) == Ordering::Less);
    assert!(in_order, "the page is not in query order");
    let (Some(next), Some((last_key, last_value))) = (&page.next_cursor, page.rows.last()) else { return };
    let Value::Map(mut entries) = query_value.clone() else {
        panic!("a query without a map issued a cursor");
    };
    entries.push((Value::from("cursor"), Value::from(next.as_str())));
    let next_query = Query::from_value(&Value::Map(entries)).expect("the query with its next cursor parses");
    let resolved = next_query.resolve_cursor(NOW_MS);
    assert_eq!(resolved.status(), CursorStatus::Valid, "the query refuses its own next cursor {next}");
    for (key, value) in &page.rows {
        assert!(!next_query.is_after_cursor(&resolved, key, value), "the next page shows row {key} again");
    }
    assert!(!next_query.is_after_cursor(&resolved, last_key, last_value));
}
