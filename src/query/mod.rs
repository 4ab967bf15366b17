//! shardgrid::query: the sans-IO query engine behind `QUERY_SUB` (PROTOCOL.md §4.0, §4.5, §6.8,
//! §6.9; DECISIONS.md §1.6, §1.9, §1.10). It owns parsing the wire `query` map into a `Query`,
//! deciding whether a record value matches it, the row order, and cutting a page (limit, cursor,
//! `hasMore`, `nextCursor`) from rows the caller gathered. Its inputs are values already decoded
//! with rmpv and, for cursors, the current time as an argument; it never reads the clock.
//!
//! It deliberately leaves out where rows come from (shards, tombstones, TTL: the caller passes
//! only live rows), the standing subscription and its `QUERY_UPDATE`s, `groupBy`/aggregations
//! (ignored, like every unknown key of the query map) and the wire encoding of the reply.
//!
//! Submodules: `predicate` (the PredicateNode tree), `like` (wildcard and substring matching),
//! `sort` (sort clause and row order), `cursor` (the cursor format), `value` (lookup, equality,
//! ordering of single values).
//!
//! Use: parse once with `Query::from_value` (an `Err` is the `ERROR 400` text). Each shard keeps
//! the live rows for which `Query::matches` holds and cuts its own page with `Query::select` (or
//! `select_resolved`); the coordinator combines the shard pages with `Query::merge`, using the
//! same `now_ms` or `ResolvedCursor`. Calling `select` once on all matching rows gives the same
//! page.

mod cursor;
mod like;
mod predicate;
mod sort;
mod value;

use std::cmp::Ordering;

use ahash::AHashSet;
use rmpv::Value;

use crate::query::cursor::CursorPosition;
use crate::query::predicate::{ParseBudget, Predicate};
use crate::query::value::{describe, field, lookup, values_equal, whole_number, Fingerprint};

pub use crate::query::sort::{SortDirection, SortField};

/// The most rows one page carries. A larger `limit` is clamped to it rather than refused: the
/// reference server caps every snapshot at this many rows and reports `hasMore`, and with a sort
/// the client can page on with `nextCursor`. A query without a `limit` is capped here too, so no
/// snapshot grows past it (it then gets `hasMore` but no cursor, §6.9).
pub const QUERY_LIMIT_MAX: usize = 10_000;
/// Nesting levels of a predicate tree (the root is level 1). Each level is two msgpack levels
/// (a node map and its `children` array), so the frame decoder's 256 allows at most 128.
pub const PREDICATE_DEPTH_MAX: usize = 32;
/// Nodes in one predicate tree; each row's evaluation visits at most this many.
pub const PREDICATE_NODES_MAX: usize = 1_024;
/// Values in the operand list of `in`, `containsAll` and `containsAny`, scanned once per row.
pub const IN_VALUES_MAX: usize = 10_000;
/// Bytes of a pattern operand: `regex`, `like`, and string operands of `contains*`, whose
/// matching cost grows with the pattern.
pub const PATTERN_BYTES_MAX: usize = 1_024;
/// Compiled program size one `regex` operand may take (the regex crate's `size_limit`).
pub const REGEX_COMPILED_BYTES_MAX: usize = 1024 * 1024;
/// Lazy-DFA cache one `regex` operand may fill (the regex crate's `dfa_size_limit`).
pub const REGEX_DFA_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of an attribute path (predicate `attribute`, `where` field, sort field).
pub const ATTRIBUTE_BYTES_MAX: usize = 1_024;
/// Fields of the `where` shorthand.
pub const WHERE_FIELDS_MAX: usize = 256;
/// Fields of the `sort` clause.
pub const SORT_FIELDS_MAX: usize = 16;
/// Age after which a cursor is `expired` (the reference server's 10 minutes).
pub const CURSOR_TTL_MS: u64 = 10 * 60 * 1_000;
/// Length of a cursor string, both the ones we issue and the ones we accept.
pub const CURSOR_TEXT_BYTES_MAX: usize = 16 * 1_024;

// Relationships the design relies on, checked by the compiler.
const _: () = assert!(PREDICATE_DEPTH_MAX * 2 <= 256, "a deeper tree cannot arrive in a frame");
const _: () = assert!(PREDICATE_DEPTH_MAX <= PREDICATE_NODES_MAX);
const _: () = assert!(QUERY_LIMIT_MAX < usize::MAX, "page_size + 1 must not overflow");

/// A query refused at parse time. Its `Display` is the message for `ERROR {code: 400, message}`
/// and names the offending field (DECISIONS.md §5).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("malformed message: {field} must be {expected}, got {got}")]
    WrongType { field: String, expected: &'static str, got: String },
    #[error("malformed message: {field} is required")]
    Missing { field: String },
    #[error("malformed message: query.limit must be a whole number of at least 0, got {got}")]
    BadLimit { got: String },
    #[error("malformed message: {field} has {count} {what}; at most {max} are allowed")]
    TooMany { field: String, what: &'static str, count: usize, max: usize },
    #[error("malformed message: {field} is {bytes} bytes long; at most {bytes_max} are allowed")]
    TooLong { field: String, bytes: usize, bytes_max: usize },
    #[error("malformed message: query.predicate nests deeper than {depth_max} levels")]
    PredicateTooDeep { depth_max: usize },
    #[error("malformed message: query.predicate has more than {nodes_max} nodes")]
    PredicateTooLarge { nodes_max: usize },
}

impl QueryError {
    pub(crate) fn wrong_type(field: &str, expected: &'static str, got: &Value) -> Self {
        QueryError::WrongType { field: field.to_owned(), expected, got: describe(got) }
    }
}

/// What became of the input cursor (`QUERY_RESP.cursorStatus`, §6.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CursorStatus {
    /// No cursor was given.
    None,
    /// The cursor was applied: the page starts after it.
    Valid,
    /// One of ours, but older than `CURSOR_TTL_MS`; the first page is returned.
    Expired,
    /// Not decodable, or issued for a different query; the first page is returned
    /// (DECISIONS.md §1.10).
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

/// The input cursor of a query as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InputCursor {
    Text(String),
    /// Not a string, or longer than `CURSOR_TEXT_BYTES_MAX`: certainly not one of ours.
    Unreadable,
}

/// The input cursor checked once against the query and the clock. A subscription resolves it
/// when it answers `QUERY_SUB` and keeps it, so the snapshot and later live updates agree on the
/// cursor even after it would have expired (§6.9: updates for rows not after the cursor are
/// suppressed). It lives with the subscription, on the connection's shard.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedCursor {
    status: CursorStatus,
    /// Present exactly when `status` is `Valid`.
    position: Option<CursorPosition>,
}

impl ResolvedCursor {
    pub fn status(&self) -> CursorStatus {
        self.status
    }
}

/// One page of a query's answer, ready for `QUERY_RESP`.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// Rows in query order, unique by key, at most the query's page size.
    pub rows: Vec<(String, Value)>,
    /// More matching rows follow this page (`hasMore`).
    pub has_more: bool,
    /// `nextCursor`: present only with `has_more`, a `limit` and a sort (§6.9).
    pub next_cursor: Option<String>,
    /// `cursorStatus` of the input cursor.
    pub cursor_status: CursorStatus,
}

/// A parsed `query` map of `QUERY_SUB`. Immutable once parsed and cheap to evaluate: regexes are
/// compiled and patterns split here, once. It is parsed on the connection's shard; shards that
/// evaluate it against their records get a clone.
#[derive(Clone, Debug)]
pub struct Query {
    /// The `where` shorthand: each attribute must equal its value (§6.8, DECISIONS.md §1.9).
    where_fields: Vec<(String, Value)>,
    predicate: Option<Predicate>,
    sort: Vec<SortField>,
    /// The client's `limit`, clamped to `QUERY_LIMIT_MAX`.
    limit: Option<usize>,
    cursor: Option<InputCursor>,
    /// Hash of `where`, `predicate` and `sort`, which a cursor must carry to be valid here.
    fingerprint: u64,
}

impl Query {
    /// Parses the `query` map of `QUERY_SUB` (`{}` or nil: every record). Unknown keys
    /// (`fields`, `groupBy`, `aggregations`, …) are ignored; a nil field counts as absent.
    pub fn from_value(query: &Value) -> Result<Query, QueryError> {
        let entries: &[(Value, Value)] = match query {
            Value::Map(entries) => entries,
            Value::Nil => &[],
            other => return Err(QueryError::wrong_type("query", "a map", other)),
        };
        let where_fields = match field(entries, "where") {
            None => Vec::new(),
            Some(where_value) => parse_where(where_value)?,
        };
        let predicate_value = field(entries, "predicate");
        let predicate = match predicate_value {
            None => None,
            Some(node) => Some(predicate::parse(node, "query.predicate", 1, &mut ParseBudget::new())?),
        };
        let sort = match field(entries, "sort") {
            None => Vec::new(),
            Some(sort_value) => sort::parse(sort_value)?,
        };
        let limit = match field(entries, "limit") {
            None => None,
            Some(limit_value) => Some(parse_limit(limit_value)?),
        };
        let cursor = field(entries, "cursor").map(|cursor_value| match cursor_value.as_str() {
            Some(text) if text.len() <= CURSOR_TEXT_BYTES_MAX => InputCursor::Text(text.to_owned()),
            // §2.1 lists `cursor` among integer fields, but we only ever issue strings, so any
            // other cursor is one we did not issue: invalid, first page (DECISIONS.md §1.10).
            _ => InputCursor::Unreadable,
        });
        let fingerprint = fingerprint(&where_fields, predicate_value, &sort);
        Ok(Query { where_fields, predicate, sort, limit, cursor, fingerprint })
    }

    /// Whether a record value matches: every `where` field AND the predicate (§6.8).
    pub fn matches(&self, value: &Value) -> bool {
        self.where_fields.iter().all(|(attribute, expected)| where_matches(lookup(value, attribute), expected))
            && self.predicate.as_ref().is_none_or(|predicate| predicate.matches(value))
    }

    /// The §6.9 order of two rows given as (key, value): the sort fields in turn (missing and nil
    /// greatest), then the key ascending by bytes; without a sort, the key alone.
    pub fn compare(&self, a: (&str, &Value), b: (&str, &Value)) -> Ordering {
        sort::compare_rows(&self.sort, a, b)
    }

    /// Attribute/value pairs every matching record must have equal: the `where` fields and the
    /// `eq` leaves at the top of the predicate's AND. The live-query index files a subscription
    /// under one of them, so a write is checked only against subscriptions it could match.
    pub fn equality_terms(&self) -> Vec<(&str, &Value)> {
        let mut terms: Vec<(&str, &Value)> =
            self.where_fields.iter().map(|(attribute, value)| (attribute.as_str(), value)).collect();
        if let Some(predicate) = &self.predicate {
            predicate.top_level_equalities(&mut terms);
        }
        terms
    }

    pub fn has_limit(&self) -> bool {
        self.limit.is_some()
    }

    /// The client's `limit`, clamped to `QUERY_LIMIT_MAX`.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// The most rows a page of this query carries: its limit, or `QUERY_LIMIT_MAX` without one.
    pub fn page_size(&self) -> usize {
        self.limit.unwrap_or(QUERY_LIMIT_MAX)
    }

    pub fn has_sort(&self) -> bool {
        !self.sort.is_empty()
    }

    pub fn sort_fields(&self) -> &[SortField] {
        &self.sort
    }

    /// Whether a cursor was given (whatever its validity).
    pub fn has_cursor(&self) -> bool {
        self.cursor.is_some()
    }

    /// Checks the input cursor against this query at `now_ms` (Unix milliseconds).
    pub fn resolve_cursor(&self, now_ms: u64) -> ResolvedCursor {
        let text = match &self.cursor {
            None => return ResolvedCursor { status: CursorStatus::None, position: None },
            Some(InputCursor::Unreadable) => return ResolvedCursor { status: CursorStatus::Invalid, position: None },
            Some(InputCursor::Text(text)) => text,
        };
        match cursor::decode(text, self.fingerprint, self.sort.len(), now_ms) {
            Ok(position) => ResolvedCursor { status: CursorStatus::Valid, position: Some(position) },
            Err(status) => ResolvedCursor { status, position: None },
        }
    }

    /// Whether a row lies strictly after the resolved cursor, so it may be shown; every row does
    /// when the cursor is not `Valid`.
    pub fn is_after_cursor(&self, cursor: &ResolvedCursor, key: &str, value: &Value) -> bool {
        cursor.position.as_ref().is_none_or(|position| {
            sort::compare_row_to_position(&self.sort, (key, value), &position.sort_values, &position.key)
                == Ordering::Greater
        })
    }

    /// Cuts the page for `QUERY_RESP` from `rows`: live rows that match this query, gathered from
    /// any number of shards in any order. Resolves the cursor at `now_ms` and stamps `nextCursor`
    /// with it. See `select_resolved`.
    pub fn select(&self, rows: Vec<(String, Value)>, now_ms: u64) -> Page {
        let cursor = self.resolve_cursor(now_ms);
        self.select_resolved(rows, &cursor, now_ms)
    }

    /// Cuts a page from `rows` with a cursor already resolved: the rows strictly after the
    /// cursor, in query order, at most `page_size()` of them; `has_more` when more follow.
    ///
    /// Rows should be unique by key; if a key repeats, only its first row in query order is
    /// kept. The page does not depend on the order of `rows`. Costs O(n) plus O(p log p) for a
    /// page of p rows.
    pub fn select_resolved(&self, rows: Vec<(String, Value)>, cursor: &ResolvedCursor, now_ms: u64) -> Page {
        self.cut_page(rows, cursor, now_ms, false)
    }

    /// Merges pages that shards selected from their own rows with the same cursor into the page
    /// one select over all their rows would give. A shard's rows past its own page cannot reach
    /// the merged page (the shard's page already holds `page_size()` rows that come before
    /// them), but they do mean more rows exist, so any shard's `has_more` carries over.
    pub fn merge(&self, shard_pages: Vec<Page>, cursor: &ResolvedCursor, now_ms: u64) -> Page {
        let more_elsewhere = shard_pages.iter().any(|page| page.has_more);
        let rows: Vec<(String, Value)> = shard_pages.into_iter().flat_map(|page| page.rows).collect();
        self.cut_page(rows, cursor, now_ms, more_elsewhere)
    }

    /// `select_resolved`, where `more_elsewhere` says rows not passed in also follow the page.
    fn cut_page(
        &self,
        mut rows: Vec<(String, Value)>,
        cursor: &ResolvedCursor,
        now_ms: u64,
        more_elsewhere: bool,
    ) -> Page {
        if cursor.position.is_some() {
            rows.retain(|(key, value)| self.is_after_cursor(cursor, key, value));
        }
        let page_size = self.page_size();
        let order = |a: &(String, Value), b: &(String, Value)| self.compare((&a.0, &a.1), (&b.0, &b.1));
        // Only the first page_size + 1 rows are needed: page_size to show, one to know hasMore.
        let window = rows.len().min(page_size + 1);
        if window > 0 && window < rows.len() {
            rows.select_nth_unstable_by(window - 1, order);
        }
        rows[..window].sort_by(order);
        if has_repeated_keys(&rows[..window]) {
            // A repeated key is a caller's bug; order everything so the first copy in query order
            // is the one kept, then drop the rest.
            rows.sort_by(order);
            let mut keys_seen = AHashSet::with_capacity(rows.len());
            rows.retain(|(key, _)| keys_seen.insert(key.clone()));
        }
        let has_more = rows.len() > page_size || more_elsewhere;
        rows.truncate(page_size);
        rows.shrink_to_fit();
        let next_cursor = match rows.last() {
            Some((key, value)) if has_more && self.has_limit() && self.has_sort() => {
                cursor::encode(self.fingerprint, now_ms, &self.sort, (key, value))
            }
            _ => None,
        };
        debug_assert!(rows.windows(2).all(|pair| order(&pair[0], &pair[1]) == Ordering::Less));
        Page { rows, has_more, next_cursor, cursor_status: cursor.status }
    }
}

/// A `where` field: an explicit nil matches only an explicit nil, never a missing attribute
/// (DECISIONS.md §1.9, the client's `===`); any other value matches by §6.8 equality.
fn where_matches(found: Option<&Value>, expected: &Value) -> bool {
    match found {
        None => false,
        Some(found) if expected.is_nil() => found.is_nil(),
        Some(found) => values_equal(found, expected),
    }
}

fn parse_where(where_value: &Value) -> Result<Vec<(String, Value)>, QueryError> {
    let Value::Map(entries) = where_value else {
        return Err(QueryError::wrong_type("query.where", "a map", where_value));
    };
    if entries.len() > WHERE_FIELDS_MAX {
        return Err(QueryError::TooMany {
            field: "query.where".to_owned(),
            what: "fields",
            count: entries.len(),
            max: WHERE_FIELDS_MAX,
        });
    }
    entries
        .iter()
        .map(|(name, expected)| {
            let Some(attribute) = name.as_str() else {
                return Err(QueryError::wrong_type("query.where", "a map with string keys", where_value));
            };
            if attribute.len() > ATTRIBUTE_BYTES_MAX {
                return Err(QueryError::TooLong {
                    field: "a query.where key".to_owned(),
                    bytes: attribute.len(),
                    bytes_max: ATTRIBUTE_BYTES_MAX,
                });
            }
            Ok((attribute.to_owned(), expected.clone()))
        })
        .collect()
}

/// `limit`: any msgpack integer or whole float (§2.1), not negative; above `QUERY_LIMIT_MAX` it
/// is clamped (see there).
fn parse_limit(limit_value: &Value) -> Result<usize, QueryError> {
    let Some(limit) = whole_number(limit_value) else {
        return Err(QueryError::BadLimit { got: describe(limit_value) });
    };
    if limit < 0 {
        return Err(QueryError::BadLimit { got: describe(limit_value) });
    }
    Ok(usize::try_from(limit).map_or(QUERY_LIMIT_MAX, |limit| limit.min(QUERY_LIMIT_MAX)))
}

/// Hashes what decides the row set and its order, so a cursor is valid only for the query that
/// issued it. `limit` is left out: a client may change its page size between pages.
fn fingerprint(where_fields: &[(String, Value)], predicate: Option<&Value>, sort: &[SortField]) -> u64 {
    let mut fingerprint = Fingerprint::new();
    fingerprint.write(b"shardgrid.query");
    // `where` is a set of conditions: hash each on its own and add, so key order does not count.
    let mut where_sum: u64 = 0;
    for (attribute, expected) in where_fields {
        let mut condition = Fingerprint::new();
        condition.write_str(attribute.as_bytes());
        condition.write_value(expected);
        where_sum = where_sum.wrapping_add(condition.finish());
    }
    fingerprint.write(b"where");
    fingerprint.write_u64(where_fields.len() as u64);
    fingerprint.write_u64(where_sum);
    fingerprint.write(b"predicate");
    fingerprint.write_value(predicate.unwrap_or(&Value::Nil));
    fingerprint.write(b"sort");
    fingerprint.write_u64(sort.len() as u64);
    for sort_field in sort {
        fingerprint.write_str(sort_field.field.as_bytes());
        fingerprint.write(sort_field.direction.as_str().as_bytes());
    }
    fingerprint.finish()
}

/// Keeps only the named top-level fields of a map value (the `fields` projection of
/// `QUERY_SUB`); any other value is returned unchanged.
/// The value at a dot path of a record value (a literal top-level key first), as queries see it.
pub fn lookup_attribute<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    value::lookup(value, path)
}

pub fn project(value: &Value, fields: &[String]) -> Value {
    match value {
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .filter(|(key, _)| key.as_str().is_some_and(|name| fields.iter().any(|field| field == name)))
                .cloned()
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether two rows share a key.
fn has_repeated_keys(rows: &[(String, Value)]) -> bool {
    let mut keys_seen: AHashSet<&str> = AHashSet::with_capacity(rows.len());
    !rows.iter().all(|(key, _)| keys_seen.insert(key))
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
