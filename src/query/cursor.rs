//! shardgrid::query::cursor: the paging cursor's format. A cursor is opaque to the client
//! (PROTOCOL.md §6.9); ours is base64url without padding of a msgpack array
//! `[CURSOR_FORMAT_VERSION, fingerprint, issued_ms, last_key, [sort stand-ins…]]`, where the
//! stand-ins rank like the last row's sort values (`value::sort_stand_in`) and the fingerprint
//! hashes the query's `where`, `predicate` and `sort`. This module encodes and checks cursors;
//! which rows follow a position, and what a page is, belong to the parent module.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rmpv::Value;

use crate::query::sort::SortField;
use crate::query::value::{is_sort_stand_in, lookup, sort_stand_in};
use crate::query::{CursorStatus, CURSOR_TEXT_BYTES_MAX, CURSOR_TTL_MS};

/// Bumped when the layout changes; a cursor of another version is `invalid`.
const CURSOR_FORMAT_VERSION: u64 = 1;

/// Nesting a well-formed cursor needs (outer array, stand-in array, a string's bytes), with room
/// to spare; deeper input is garbage and is refused before it costs anything.
const CURSOR_DECODE_DEPTH_MAX: usize = 8;

/// Where the previous page ended: rows strictly after this position, in the query's order, form
/// the next page.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CursorPosition {
    /// One stand-in per sort field of the query.
    pub(crate) sort_values: Vec<Value>,
    pub(crate) key: String,
}

/// Encodes the cursor that continues after `row`, the last row of a page. `None` when the cursor
/// would be longer than `CURSOR_TEXT_BYTES_MAX` (a very long string sort value), because we could
/// not accept it back.
pub(crate) fn encode(fingerprint: u64, issued_ms: u64, sort: &[SortField], row: (&str, &Value)) -> Option<String> {
    const VEC_WRITE: &str = "writing to a Vec cannot fail";
    let (key, value) = row;
    let mut bytes = Vec::new();
    rmp::encode::write_array_len(&mut bytes, 5).expect(VEC_WRITE);
    for number in [CURSOR_FORMAT_VERSION, fingerprint, issued_ms] {
        rmp::encode::write_uint(&mut bytes, number).expect(VEC_WRITE);
    }
    rmp::encode::write_str(&mut bytes, key).expect(VEC_WRITE);
    rmp::encode::write_array_len(&mut bytes, u32::try_from(sort.len()).expect("a few sort fields")).expect(VEC_WRITE);
    for sort_field in sort {
        match sort_stand_in(lookup(value, &sort_field.field)) {
            // A stored string need not be UTF-8, and rmpv would write such a one as binary, which
            // is no stand-in: the cursor would come back invalid. Keep it a string, byte for byte.
            Value::String(text) => {
                let text = text.as_bytes();
                rmp::encode::write_str_len(&mut bytes, u32::try_from(text.len()).expect("a msgpack string"))
                    .expect(VEC_WRITE);
                bytes.extend_from_slice(text);
            }
            stand_in => rmpv::encode::write_value(&mut bytes, &stand_in).expect(VEC_WRITE),
        }
    }
    let text = URL_SAFE_NO_PAD.encode(&bytes);
    (text.len() <= CURSOR_TEXT_BYTES_MAX).then_some(text)
}

/// Checks `text` against the query (its `fingerprint` and number of sort fields) and the clock.
/// Anything we did not issue for this query is `Invalid` (DECISIONS.md §1.10); a cursor of ours
/// older than `CURSOR_TTL_MS` is `Expired`. A cursor stamped in the future (the clock stepped
/// back) counts as fresh.
pub(crate) fn decode(
    text: &str,
    fingerprint: u64,
    sort_len: usize,
    now_ms: u64,
) -> Result<CursorPosition, CursorStatus> {
    if text.len() > CURSOR_TEXT_BYTES_MAX {
        return Err(CursorStatus::Invalid);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorStatus::Invalid)?;
    let mut reader = bytes.as_slice();
    let decoded = rmpv::decode::read_value_with_max_depth(&mut reader, CURSOR_DECODE_DEPTH_MAX)
        .map_err(|_| CursorStatus::Invalid)?;
    if !reader.is_empty() {
        return Err(CursorStatus::Invalid);
    }
    let Value::Array(mut parts) = decoded else { return Err(CursorStatus::Invalid) };
    if parts.len() != 5 {
        return Err(CursorStatus::Invalid);
    }
    let sort_values = match parts.pop() {
        Some(Value::Array(values)) if values.len() == sort_len && values.iter().all(is_sort_stand_in) => values,
        _ => return Err(CursorStatus::Invalid),
    };
    let key = match parts.pop() {
        Some(Value::String(key)) => key.into_str().ok_or(CursorStatus::Invalid)?,
        _ => return Err(CursorStatus::Invalid),
    };
    let issued_ms = parts[2].as_u64().ok_or(CursorStatus::Invalid)?;
    if parts[0].as_u64() != Some(CURSOR_FORMAT_VERSION) || parts[1].as_u64() != Some(fingerprint) {
        return Err(CursorStatus::Invalid);
    }
    if now_ms.saturating_sub(issued_ms) > CURSOR_TTL_MS {
        return Err(CursorStatus::Expired);
    }
    Ok(CursorPosition { sort_values, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::sort::SortDirection;

    fn sort_by(field: &str) -> Vec<SortField> {
        vec![SortField { field: field.into(), direction: SortDirection::Asc }]
    }

    fn row_value(score: Value) -> Value {
        Value::Map(vec![(Value::from("score"), score)])
    }

    /// Goal: a cursor round-trips its position, with unordered values replaced by a stand-in.
    /// Method: encode rows with each kind of sort value and decode them.
    #[test]
    fn cursor_round_trips() {
        let sort = sort_by("score");
        for (score, stand_in) in [
            (Value::from(7), Value::from(7)),
            (Value::F64(2.5), Value::F64(2.5)),
            (Value::from("ü"), Value::from("ü")),
            (Value::Nil, Value::Nil),
            (Value::Map(vec![(Value::from("deep"), Value::from(1))]), Value::Boolean(false)),
        ] {
            let text = encode(42, 1_000, &sort, ("key-1", &row_value(score))).unwrap();
            assert!(text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
            let position = decode(&text, 42, 1, 1_000).unwrap();
            assert_eq!(position, CursorPosition { sort_values: vec![stand_in], key: "key-1".into() });
        }
    }

    /// Goal: anything but a cursor issued for this query decodes as invalid, never panics.
    /// Method: feed garbage, truncations, foreign fingerprints and wrong shapes.
    #[test]
    fn foreign_and_garbage_cursors_are_invalid() {
        let sort = sort_by("score");
        let text = encode(42, 1_000, &sort, ("k", &row_value(Value::from(1)))).unwrap();
        assert_eq!(decode(&text, 43, 1, 1_000), Err(CursorStatus::Invalid));
        assert_eq!(decode(&text, 42, 2, 1_000), Err(CursorStatus::Invalid));
        for cut in 0..text.len() {
            assert!(decode(&text[..cut], 42, 1, 1_000).is_err(), "cut at {cut}");
        }
        let with_padding = format!("{text}==");
        assert_eq!(decode(&with_padding, 42, 1, 1_000), Err(CursorStatus::Invalid));
        let long = "A".repeat(CURSOR_TEXT_BYTES_MAX + 1);
        assert_eq!(decode(&long, 42, 1, 1_000), Err(CursorStatus::Invalid));
        for garbage in ["", "!!!", "eyJzb3J0VmFsdWVzIjpbXX0", "AAAA", "kQ", "3gAA"] {
            assert_eq!(decode(garbage, 42, 1, 1_000), Err(CursorStatus::Invalid), "{garbage:?}");
        }
        let reencode = |value: &Value| {
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, value).unwrap();
            URL_SAFE_NO_PAD.encode(bytes)
        };
        let shaped = |version: u64, key: Value, values: Value| {
            reencode(&Value::Array(vec![Value::from(version), Value::from(42), Value::from(1_000), key, values]))
        };
        let one = Value::Array(vec![Value::from(1)]);
        assert!(decode(&shaped(1, Value::from("k"), one.clone()), 42, 1, 1_000).is_ok());
        assert_eq!(decode(&shaped(2, Value::from("k"), one.clone()), 42, 1, 1_000), Err(CursorStatus::Invalid));
        assert_eq!(decode(&shaped(1, Value::from(5), one.clone()), 42, 1, 1_000), Err(CursorStatus::Invalid));
        let not_stand_in = Value::Array(vec![Value::Array(vec![])]);
        assert_eq!(decode(&shaped(1, Value::from("k"), not_stand_in), 42, 1, 1_000), Err(CursorStatus::Invalid));
        let mut trailing = URL_SAFE_NO_PAD.decode(shaped(1, Value::from("k"), one)).unwrap();
        trailing.push(0);
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode(trailing), 42, 1, 1_000), Err(CursorStatus::Invalid));
    }

    /// Goal: a cursor expires strictly after `CURSOR_TTL_MS`, and a future stamp is fresh.
    /// Method: decode one cursor at chosen times.
    #[test]
    fn cursors_expire_after_the_ttl() {
        let sort = sort_by("score");
        let text = encode(42, 1_000, &sort, ("k", &row_value(Value::from(1)))).unwrap();
        assert!(decode(&text, 42, 1, 1_000 + CURSOR_TTL_MS).is_ok());
        assert_eq!(decode(&text, 42, 1, 1_001 + CURSOR_TTL_MS), Err(CursorStatus::Expired));
        assert!(decode(&text, 42, 1, 0).is_ok());
        // A foreign cursor is invalid even when it is also old.
        assert_eq!(decode(&text, 7, 1, u64::MAX), Err(CursorStatus::Invalid));
    }

    /// Regression (found by the predicate fuzz target's paging property): a string sort value
    /// that is not UTF-8 was written into the cursor as binary, so the next page refused the
    /// cursor as invalid and a client paging by that field started over forever.
    /// Method: encode a row whose sort value is such a string, decode, compare the position.
    #[test]
    fn a_sort_string_that_is_not_utf8_round_trips() {
        let not_utf8 = rmpv::decode::read_value(&mut &[0xa2, 0xff, 0xfe][..]).unwrap();
        assert!(matches!(&not_utf8, Value::String(text) if text.as_str().is_none()));
        let text = encode(42, 1_000, &sort_by("score"), ("k", &row_value(not_utf8.clone()))).unwrap();
        let position = decode(&text, 42, 1, 1_000).unwrap();
        assert_eq!(position, CursorPosition { sort_values: vec![not_utf8], key: "k".into() });
    }

    /// Goal: a sort value too long to carry yields no cursor rather than one we would refuse.
    /// Method: encode a row whose sort value is a string longer than the cursor bound.
    #[test]
    fn oversized_cursor_is_not_issued() {
        let sort = sort_by("score");
        let long = Value::from("x".repeat(CURSOR_TEXT_BYTES_MAX));
        assert_eq!(encode(42, 1_000, &sort, ("k", &row_value(long))), None);
    }
}
