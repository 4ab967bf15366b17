//! shardgrid::hash: the protocol's hash functions, bit for bit as the stock client computes them —
//! FNV-1a over UTF-16 code units, partition of a key, the Merkle mixer and combiner, the Merkle
//! path of a key, and the item hashes of LWW and OR-Map entries (PROTOCOL.md §6.6, §6.7).
//!
//! Everything here is a pure function of its arguments. The Merkle trees themselves (which keys
//! sit in which bucket, when a bucket is rehashed) live with the maps that own them, not here.
//! The OR-Map item hash has to reproduce JavaScript's `String(value)` and
//! `JSON.stringify(value, sortedTopLevelKeys)` over a msgpack value; the corner cases that this
//! module cannot or does not reproduce exactly are listed on [`or_entry_hash`].

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use rmpv::ValueRef;

use crate::model::{OrRecord, Timestamp};

/// Number of partitions of the key space (PROTOCOL.md §6.7). Fixed by the protocol: the client
/// computes partitions itself, so this is not a tuning knob.
pub const PARTITION_COUNT: u16 = 271;

const FNV_OFFSET_BASIS: u32 = 0x811C_9DC5;
const FNV_PRIME: u32 = 0x0100_0193;

/// Integers up to this magnitude are exact as a JavaScript number, so they print as plain
/// decimal digits; larger ones print as the nearest `f64` would (`Number.MAX_SAFE_INTEGER + 1`).
const JS_EXACT_INTEGER_MAX: u64 = 1 << 53;

/// Streaming FNV-1a over UTF-16 code units (PROTOCOL.md §6.7). It implements `fmt::Write`, so a
/// `write!` into it hashes the formatted text without building a `String`.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a {
    state: u32,
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a { state: FNV_OFFSET_BASIS }
    }
}

impl Fnv1a {
    pub fn new() -> Self {
        Fnv1a::default()
    }

    /// Feeds the UTF-16 code units of `text`, as JavaScript's `charCodeAt` would see them.
    pub fn write_text(&mut self, text: &str) {
        if text.is_ascii() {
            // Keys, numbers and node ids are mostly ASCII, whose bytes are their code units.
            self.write_units(text.bytes().map(u32::from));
        } else {
            self.write_units(text.encode_utf16().map(u32::from));
        }
    }

    fn write_units(&mut self, units: impl Iterator<Item = u32>) {
        self.state = units.fold(self.state, |state, unit| (state ^ unit).wrapping_mul(FNV_PRIME));
    }

    pub fn finish(&self) -> u32 {
        self.state
    }
}

impl fmt::Write for Fnv1a {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.write_text(text);
        Ok(())
    }
}

/// FNV-1a of `text` over its UTF-16 code units (a surrogate pair contributes two units).
pub fn fnv1a_utf16(text: &str) -> u32 {
    let mut hasher = Fnv1a::new();
    hasher.write_text(text);
    hasher.finish()
}

/// The 32-bit avalanche finalizer applied to every hash before it is summed (PROTOCOL.md §6.6).
pub fn mix(hash: u32) -> u32 {
    let mut hash = hash;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85EB_CA6B);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xC2B2_AE35);
    hash ^= hash >> 16;
    hash
}

/// Order-independent combination of child hashes: the wrapping sum of their mixes. The empty
/// combination is 0, which is also the root hash of an empty tree.
pub fn combine<I: IntoIterator<Item = u32>>(hashes: I) -> u32 {
    hashes.into_iter().fold(0u32, |sum, hash| sum.wrapping_add(mix(hash)))
}

/// The partition (0..271) a key belongs to.
pub fn partition_of(key: &str) -> u16 {
    let partition = fnv1a_utf16(key) % u32::from(PARTITION_COUNT);
    // The remainder is below PARTITION_COUNT, which is a u16.
    partition as u16
}

/// The key's Merkle path: the first three hex digits (each 0..16) of the zero-padded lowercase
/// hex of `fnv1a(key)`, for tree levels 0, 1 and 2. The leaf holding the key is this path.
pub fn merkle_path(key: &str) -> [u8; 3] {
    merkle_path_of_hash(fnv1a_utf16(key))
}

/// [`merkle_path`] from the key's `fnv1a_utf16`, for callers that have it already.
pub fn merkle_path_of_hash(key_hash: u32) -> [u8; 3] {
    [(key_hash >> 28) as u8, ((key_hash >> 24) & 0xF) as u8, ((key_hash >> 20) & 0xF) as u8]
}

/// The LWW Merkle item hash: `fnv1a("<key>:<millis>:<counter>:<nodeId>")`. The value is not
/// hashed, so tombstones and expired records count like live ones.
pub fn lww_item_hash(key: &str, timestamp: &Timestamp) -> u32 {
    let mut hasher = Fnv1a::new();
    hasher.write_text(key);
    lww_item_hash_after_key(hasher, timestamp)
}

/// [`lww_item_hash`] from a hasher that has been fed the key (and nothing else): FNV-1a
/// streams, so the key's own hash (its partition and Merkle path) and its item hash share
/// that work.
pub fn lww_item_hash_after_key(mut key_hasher: Fnv1a, timestamp: &Timestamp) -> u32 {
    write_timestamp(&mut key_hasher, timestamp);
    key_hasher.finish()
}

/// Writes `:<millis>:<counter>:<nodeId>`, the timestamp's string form behind a separator.
fn write_timestamp(hasher: &mut Fnv1a, timestamp: &Timestamp) {
    hasher.write_text(":");
    write_js_u64(hasher, timestamp.millis);
    hasher.write_text(":");
    write_js_u64(hasher, u64::from(timestamp.counter));
    hasher.write_text(":");
    hasher.write_text(&timestamp.node_id);
}

/// The OR-Map Merkle item hash of one key (PROTOCOL.md §6.6, the client's `hashORMapEntry`):
/// `fnv1a(parts.join("|"))` with `parts[0] = "key:<key>"` followed, for each record in ascending
/// tag order, by `"<tag>:<valueString>:<millis>:<counter>:<nodeId>"` and `":ttl=<ttlMs>"` when
/// the record has a TTL.
///
/// `records` must be the key's non-tombstoned records; the caller filters, because the
/// tombstone set belongs to the map. The text is hashed as it is produced; only the sort of the
/// records and the key lists of JSON objects allocate.
///
/// `valueString` follows the client: `String(v)` for nil, booleans, numbers and strings,
/// otherwise `JSON.stringify(v, Object.keys(v).sort())`. Known differences from the client:
/// * a `bin` value is treated as a `Uint8Array` (an object with keys `"0"`, `"1"`, …); the
///   client never sends `bin` (PROTOCOL.md §2.1);
/// * an `ext` value (msgpackr's `Date`, records, …) is written as `null`;
/// * a map key that is not a string, number, boolean or nil makes msgpackr throw; such entries
///   are skipped;
/// * invalid UTF-8 in a string is replaced by U+FFFD, which matches the client's `TextDecoder`
///   (strings over 64 bytes) but not its hand-written decoder for shorter strings;
/// * a record the client holds with `ttlMs: null` hashes with `":ttl=null"` on the client; the
///   model has no such state, so a record without TTL never gets a `ttl` part.
pub fn or_entry_hash<'a, I>(key: &str, records: I) -> u32
where
    I: IntoIterator<Item = &'a OrRecord>,
{
    let mut sorted: Vec<&OrRecord> = records.into_iter().collect();
    sorted.sort_by(|left, right| cmp_utf16(&left.tag, &right.tag));
    let mut hasher = Fnv1a::new();
    hasher.write_text("key:");
    hasher.write_text(key);
    for record in sorted {
        hasher.write_text("|");
        hasher.write_text(&record.tag);
        hasher.write_text(":");
        write_value_string(&mut hasher, &record.value);
        write_timestamp(&mut hasher, &record.timestamp);
        if let Some(ttl_ms) = record.ttl_ms {
            hasher.write_text(":ttl=");
            write_js_u64(&mut hasher, ttl_ms);
        }
    }
    hasher.finish()
}

/// The `valueString` of one OR-Map value as the client computes it (see [`or_entry_hash`]).
/// Hashing never builds this string; it is here for tests and diagnostics.
pub fn or_value_string(value: &[u8]) -> String {
    let mut text = String::new();
    write_value_string(&mut text, value);
    text
}

/// Compares two strings by UTF-16 code units, which is JavaScript's default `sort()` order. It
/// differs from Rust's byte order only between U+E000..U+FFFF and supplementary characters.
pub fn cmp_utf16(left: &str, right: &str) -> Ordering {
    left.encode_utf16().cmp(right.encode_utf16())
}

fn write_value_string<W: fmt::Write>(out: &mut W, value: &[u8]) {
    let mut reader = value;
    let decoded = rmpv::decode::read_value_ref(&mut reader);
    let written = match decoded {
        Ok(value) => write_js_string_of(out, &value),
        Err(_) => {
            // Values are decoded and checked at the protocol boundary before they are stored,
            // so undecodable bytes here are our bug. Hashing them as `null` keeps the tree
            // deterministic instead of taking the shard down over one record.
            debug_assert!(false, "stored OR-Map value is not msgpack");
            out.write_str("null")
        }
    };
    // Writing into a `String` or a hasher cannot fail.
    written.expect("in-memory fmt::Write failed");
}

/// JavaScript `String(v)` for primitives, `JSON.stringify(v, sortedKeys)` for objects.
fn write_js_string_of<W: fmt::Write>(out: &mut W, value: &ValueRef<'_>) -> fmt::Result {
    match value {
        ValueRef::Nil => out.write_str("null"),
        ValueRef::Boolean(flag) => out.write_str(if *flag { "true" } else { "false" }),
        ValueRef::Integer(integer) => write_js_number(out, integer.as_f64().unwrap_or(f64::NAN)),
        ValueRef::F32(number) => write_js_number(out, f64::from(*number)),
        ValueRef::F64(number) => write_js_number(out, *number),
        ValueRef::String(text) => out.write_str(&String::from_utf8_lossy(text.as_bytes())),
        // An ext value is not an object msgpackr hands back as plain data; see or_entry_hash.
        ValueRef::Ext(..) => out.write_str("null"),
        ValueRef::Binary(bytes) => {
            let whitelist = index_keys(bytes.len());
            write_json(out, value, &whitelist)
        }
        ValueRef::Array(items) => {
            let whitelist = index_keys(items.len());
            write_json(out, value, &whitelist)
        }
        ValueRef::Map(entries) => {
            let mut whitelist: Vec<String> = entries.iter().filter_map(|(key, _)| js_property_key(key)).collect();
            whitelist.sort_by(|left, right| cmp_utf16(left, right));
            whitelist.dedup();
            write_json(out, value, &whitelist)
        }
    }
}

/// `Object.keys` of an array or typed array, sorted as strings ("0", "1", "10", "2", …).
fn index_keys(len: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..len).map(|index| index.to_string()).collect();
    keys.sort_by(|left, right| cmp_utf16(left, right));
    keys
}

/// The property name msgpackr gives a map key (its `asSafeString`, plus the `__proto__` rename),
/// or `None` where msgpackr would throw.
fn js_property_key(key: &ValueRef<'_>) -> Option<String> {
    let mut name = String::new();
    match key {
        ValueRef::String(text) => name.push_str(&String::from_utf8_lossy(text.as_bytes())),
        ValueRef::Nil | ValueRef::Boolean(_) | ValueRef::Integer(_) | ValueRef::F32(_) | ValueRef::F64(_) => {
            write_js_string_of(&mut name, key).ok()?
        }
        ValueRef::Binary(_) | ValueRef::Array(_) | ValueRef::Map(_) | ValueRef::Ext(..) => return None,
    }
    if name == "__proto__" {
        name.truncate("__proto_".len());
    }
    Some(name)
}

/// `JSON.stringify` with a property whitelist: every object, at any depth, shows only the
/// whitelisted keys it has, in whitelist order; arrays show every element.
fn write_json<W: fmt::Write>(out: &mut W, value: &ValueRef<'_>, whitelist: &[String]) -> fmt::Result {
    match value {
        ValueRef::Nil | ValueRef::Ext(..) => out.write_str("null"),
        ValueRef::Boolean(flag) => out.write_str(if *flag { "true" } else { "false" }),
        ValueRef::Integer(integer) => write_json_number(out, integer.as_f64().unwrap_or(f64::NAN)),
        ValueRef::F32(number) => write_json_number(out, f64::from(*number)),
        ValueRef::F64(number) => write_json_number(out, *number),
        ValueRef::String(text) => write_json_string(out, &String::from_utf8_lossy(text.as_bytes())),
        ValueRef::Array(items) => {
            out.write_char('[')?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.write_char(',')?;
                }
                write_json(out, item, whitelist)?;
            }
            out.write_char(']')
        }
        ValueRef::Binary(bytes) => {
            // A Uint8Array is an object whose keys are its indices.
            let names = index_keys(bytes.len());
            write_json_object(
                out,
                whitelist,
                names.iter().map(|name| {
                    let index: usize = name.parse().expect("index_keys writes decimal indices");
                    (name.as_str(), JsonField::Byte(bytes[index]))
                }),
            )
        }
        ValueRef::Map(entries) => {
            // The object's own properties by name, the last duplicate winning as in
            // `object[key] = value`.
            let mut properties: Vec<(String, usize)> = entries
                .iter()
                .enumerate()
                .filter_map(|(index, (key, _))| js_property_key(key).map(|name| (name, index)))
                .collect();
            properties.sort_by(|left, right| cmp_utf16(&left.0, &right.0).then(right.1.cmp(&left.1)));
            properties.dedup_by(|later, earlier| later.0 == earlier.0);
            write_json_object(
                out,
                whitelist,
                properties.iter().map(|(name, index)| (name.as_str(), JsonField::Value(&entries[*index].1))),
            )
        }
    }
}

/// One property value of an object being written as JSON.
enum JsonField<'a, 'v> {
    Value(&'a ValueRef<'v>),
    Byte(u8),
}

/// Writes an object's properties that are on the whitelist, in whitelist order. `properties`
/// come sorted by [`cmp_utf16`] like the whitelist, so filtering them keeps whitelist order,
/// and each costs one binary search: a wide whitelist does not make every small nested object
/// expensive.
fn write_json_object<'a, 'v: 'a, W: fmt::Write>(
    out: &mut W,
    whitelist: &[String],
    properties: impl Iterator<Item = (&'a str, JsonField<'a, 'v>)>,
) -> fmt::Result {
    let mut first = true;
    out.write_char('{')?;
    for (name, field) in properties {
        if whitelist.binary_search_by(|listed| cmp_utf16(listed, name)).is_err() {
            continue;
        }
        if !first {
            out.write_char(',')?;
        }
        first = false;
        write_json_string(out, name)?;
        out.write_char(':')?;
        match field {
            JsonField::Value(value) => write_json(out, value, whitelist)?,
            JsonField::Byte(byte) => write!(out, "{byte}")?,
        }
    }
    out.write_char('}')
}

/// JSON numbers: as `String(n)`, except that NaN and the infinities become `null`.
fn write_json_number<W: fmt::Write>(out: &mut W, number: f64) -> fmt::Result {
    if number.is_finite() {
        write_js_number(out, number)
    } else {
        out.write_str("null")
    }
}

/// JSON string quoting as `JSON.stringify` does it: only `"`, `\` and control characters are
/// escaped; everything else, U+2028 and U+2029 included, is written as is.
fn write_json_string<W: fmt::Write>(out: &mut W, text: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut plain_start = 0;
    for (offset, character) in text.char_indices() {
        let escape = match character {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            control if u32::from(control) < 0x20 => "",
            _ => continue,
        };
        out.write_str(&text[plain_start..offset])?;
        if escape.is_empty() {
            write!(out, "\\u{:04x}", u32::from(character))?;
        } else {
            out.write_str(escape)?;
        }
        plain_start = offset + character.len_utf8();
    }
    out.write_str(&text[plain_start..])?;
    out.write_char('"')
}

/// Writes an unsigned integer as JavaScript prints the `Number` it becomes.
fn write_js_u64<W: fmt::Write>(out: &mut W, number: u64) {
    let written = if number <= JS_EXACT_INTEGER_MAX {
        out.write_str(itoa::Buffer::new().format(number))
    } else {
        // Rounds to nearest, ties to even, as JavaScript's Number(bigint) does.
        write_js_number(out, number as f64)
    };
    written.expect("in-memory fmt::Write failed");
}

/// Writes `number` as JavaScript's `String(number)` (ECMA-262 Number::toString, radix 10).
///
/// The digits start as Rust's shortest round-trip digits (`{:e}`): the fewest digits that read
/// back as the same `f64`, the closest such digits to the exact value. When two candidates are
/// exactly as close, JavaScript takes the even one and Rust does not always, so that case is
/// detected and corrected (see `even_tie_significand`). Then the decimal point and exponent are
/// placed by JavaScript's rules.
pub fn write_js_number<W: fmt::Write>(out: &mut W, number: f64) -> fmt::Result {
    if number.is_nan() {
        return out.write_str("NaN");
    }
    if number.is_infinite() {
        return out.write_str(if number > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if number == 0.0 {
        // Both zeros print as "0".
        return out.write_char('0');
    }
    let mut scientific = StackText::new();
    write!(scientific, "{:e}", number.abs())?;
    let (mantissa, exponent) = scientific.as_str().split_once('e').expect("{:e} writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes a decimal exponent");
    let mut significand: u64 = 0;
    let mut digit_count: u32 = 0;
    for digit in mantissa.bytes().filter(u8::is_ascii_digit) {
        significand = significand * 10 + u64::from(digit - b'0');
        digit_count += 1;
    }
    // number.abs() == significand × 10^scale, up to the shortest round-trip rounding.
    let scale = exponent - (digit_count as i32 - 1);
    let significand = even_tie_significand(number.abs(), significand, digit_count, scale);
    let mut digits = StackText::new();
    write!(digits, "{significand}")?;
    let digits = digits.as_str().trim_end_matches('0');
    // In the spec's terms the value is 0.<digits> × 10^point, with `digit_count` digits.
    let digit_count = digits.len() as i32;
    let point = exponent + 1;
    if number < 0.0 {
        out.write_char('-')?;
    }
    if digit_count <= point && point <= 21 {
        out.write_str(digits)?;
        for _ in 0..point - digit_count {
            out.write_char('0')?;
        }
        Ok(())
    } else if 0 < point && point <= 21 {
        let (integer_part, fraction_part) = digits.split_at(point as usize);
        out.write_str(integer_part)?;
        out.write_char('.')?;
        out.write_str(fraction_part)
    } else if -6 < point && point <= 0 {
        out.write_str("0.")?;
        for _ in 0..-point {
            out.write_char('0')?;
        }
        out.write_str(digits)
    } else {
        let (first_digit, other_digits) = digits.split_at(1);
        out.write_str(first_digit)?;
        if !other_digits.is_empty() {
            out.write_char('.')?;
            out.write_str(other_digits)?;
        }
        let sign = if point - 1 < 0 { '-' } else { '+' };
        write!(out, "e{sign}{}", (point - 1).unsigned_abs())
    }
}

/// Digits at which two shortest candidates can tie: below 16 digits, two different decimals are
/// further apart than one `f64` step, so at most one of them reads back as the number.
const TIE_DIGIT_COUNT_MIN: u32 = 16;

/// Applies ECMA-262's "if there are two such possible values of s, choose the one that is
/// even" to Rust's shortest digits `significand` × 10^`scale` of the positive finite `number`:
/// if `number` lies exactly halfway between `significand` and an even neighbour that also reads
/// back as `number`, returns the neighbour.
fn even_tie_significand(number: f64, significand: u64, digit_count: u32, scale: i32) -> u64 {
    if digit_count < TIE_DIGIT_COUNT_MIN || significand % 2 == 0 {
        return significand;
    }
    let lowest = 10u64.pow(digit_count - 1);
    let neighbours = [significand - 1, significand + 1];
    for neighbour in neighbours {
        // A neighbour with another digit count is not a candidate of the same length.
        if neighbour < lowest || neighbour >= lowest * 10 {
            continue;
        }
        // The midpoint (significand + neighbour) / 2 × 10^scale, as an odd multiple of 5.
        let midpoint = 5 * (significand + neighbour);
        if !f64_equals_decimal(number, midpoint, scale - 1) {
            continue;
        }
        let mut text = StackText::new();
        if write!(text, "{neighbour}e{scale}").is_err() {
            continue;
        }
        if text.as_str().parse::<f64>() == Ok(number) {
            return neighbour;
        }
    }
    significand
}

/// Whether the positive finite `number` is exactly `odd_digits` × 10^`exponent`, for an odd
/// `odd_digits`, in exact integer arithmetic.
fn f64_equals_decimal(number: f64, odd_digits: u64, exponent: i32) -> bool {
    debug_assert!(odd_digits % 2 == 1);
    // number = mantissa × 2^binary_exponent with an odd mantissa.
    let bits = number.to_bits();
    let biased_exponent = ((bits >> 52) & 0x7FF) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (mantissa, binary_exponent) =
        if biased_exponent == 0 { (fraction, -1074) } else { (fraction | (1 << 52), biased_exponent - 1075) };
    let trailing_zeros = mantissa.trailing_zeros();
    let odd_mantissa = u128::from(mantissa >> trailing_zeros);
    let binary_exponent = binary_exponent + trailing_zeros as i32;
    // odd_digits × 10^exponent = (odd_digits × 5^exponent) × 2^exponent, both factors odd
    // when exponent ≥ 0; and odd_digits / 5^-exponent × 2^exponent when it is negative.
    if binary_exponent != exponent {
        return false;
    }
    let power_of_five = 5u128.checked_pow(exponent.unsigned_abs());
    let Some(power_of_five) = power_of_five else { return false };
    if exponent >= 0 {
        u128::from(odd_digits).checked_mul(power_of_five) == Some(odd_mantissa)
    } else {
        let odd_digits = u128::from(odd_digits);
        odd_digits % power_of_five == 0 && odd_digits / power_of_five == odd_mantissa
    }
}

/// Bytes in a [`StackText`]: an `f64` in `{:e}` form needs at most 17 digits, a point and
/// `e-324`, so 32 leaves room.
const STACK_TEXT_BYTES: usize = 32;

/// A fixed-size text buffer on the stack, so number formatting does not allocate.
struct StackText {
    bytes: [u8; STACK_TEXT_BYTES],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        StackText { bytes: [0; STACK_TEXT_BYTES], len: 0 }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever appended, so the bytes are valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).expect("StackText holds whole str writes")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        // Too long for the buffer is our bug (the bound above is wrong), reported as fmt::Error.
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value as Json;
    use std::collections::BTreeMap;

    /// Loads `hashes.json`: beside the workspace in the real repo, at the shared path otherwise.
    fn vectors() -> Json {
        let beside_workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/protocol/vectors/hashes.json");
        let shared = "/work/shared/protocol/vectors/hashes.json";
        let text = std::fs::read_to_string(beside_workspace)
            .or_else(|_| std::fs::read_to_string(shared))
            .expect("hashes.json not found beside the workspace or under /work/shared");
        serde_json::from_str(&text).expect("hashes.json is JSON")
    }

    fn as_u32(value: &Json) -> u32 {
        u32::try_from(value.as_u64().expect("vector number")).expect("vector fits u32")
    }

    fn timestamp_of(value: &Json) -> Timestamp {
        Timestamp::new(value["millis"].as_u64().unwrap(), as_u32(&value["counter"]), value["nodeId"].as_str().unwrap())
    }

    /// Encodes a JSON value as msgpack, integers as integers, as the client would send it.
    fn msgpack_of(value: &Json) -> crate::model::ValueBytes {
        fn convert(value: &Json) -> rmpv::Value {
            match value {
                Json::Null => rmpv::Value::Nil,
                Json::Bool(flag) => rmpv::Value::Boolean(*flag),
                Json::Number(number) => match (number.as_u64(), number.as_i64()) {
                    (Some(unsigned), _) => rmpv::Value::from(unsigned),
                    (None, Some(signed)) => rmpv::Value::from(signed),
                    (None, None) => rmpv::Value::F64(number.as_f64().unwrap()),
                },
                Json::String(text) => rmpv::Value::from(text.as_str()),
                Json::Array(items) => rmpv::Value::Array(items.iter().map(convert).collect()),
                Json::Object(entries) => rmpv::Value::Map(
                    entries.iter().map(|(key, item)| (rmpv::Value::from(key.as_str()), convert(item))).collect(),
                ),
            }
        }
        msgpack_bytes(&convert(value))
    }

    fn msgpack_bytes(value: &rmpv::Value) -> crate::model::ValueBytes {
        let mut encoded = Vec::new();
        rmpv::encode::write_value(&mut encoded, value).unwrap();
        crate::model::ValueBytes::from(encoded)
    }

    fn js_number(number: f64) -> String {
        let mut text = String::new();
        write_js_number(&mut text, number).unwrap();
        text
    }

    fn hex_digit(nibble: u8) -> char {
        char::from_digit(u32::from(nibble), 16).unwrap()
    }

    /// A depth-3 client Merkle tree: node hashes by path string ("" is the root).
    fn build_tree(items: &[(String, u32)]) -> BTreeMap<String, u32> {
        let mut leaves: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (key, item_hash) in items {
            let path: String = merkle_path(key).iter().map(|nibble| hex_digit(*nibble)).collect();
            leaves.entry(path).or_default().push(*item_hash);
        }
        let mut nodes: BTreeMap<String, u32> = BTreeMap::new();
        for (path, hashes) in &leaves {
            nodes.insert(path.clone(), combine(hashes.iter().copied()));
        }
        for depth in (0..3).rev() {
            let mut parents: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for (path, hash) in nodes.iter().filter(|(path, _)| path.len() == depth + 1) {
                parents.entry(path[..depth].to_string()).or_default().push(*hash);
            }
            for (path, hashes) in parents {
                nodes.insert(path, combine(hashes));
            }
        }
        nodes
    }

    /// The child buckets of the node at `path`, keyed by their last hex digit.
    fn buckets(tree: &BTreeMap<String, u32>, path: &str) -> BTreeMap<String, u32> {
        tree.iter()
            .filter(|(child, _)| child.len() == path.len() + 1 && child.starts_with(path))
            .map(|(child, hash)| (child[path.len()..].to_string(), *hash))
            .collect()
    }

    fn json_buckets(value: &Json) -> BTreeMap<String, u32> {
        value.as_object().unwrap().iter().map(|(digit, hash)| (digit.clone(), as_u32(hash))).collect()
    }

    #[test]
    fn fnv1a_and_partition_match_every_vector() {
        // Goal: fnv1a, its UTF-16 input, hex path and partition agree with every `fnv1a` vector.
        // Method: recompute each field from `input` and compare.
        let vectors = vectors();
        let cases = vectors["fnv1a"].as_array().unwrap();
        assert_eq!(cases.len(), 11);
        for case in cases {
            let input = case["input"].as_str().unwrap();
            let units: Vec<u64> = input.encode_utf16().map(u64::from).collect();
            let expected_units: Vec<u64> =
                case["utf16Units"].as_array().unwrap().iter().map(|unit| unit.as_u64().unwrap()).collect();
            assert_eq!(units, expected_units, "input {input:?}");
            let hash = fnv1a_utf16(input);
            assert_eq!(hash, as_u32(&case["fnv1a"]), "input {input:?}");
            assert_eq!(format!("{hash:08x}"), case["hex8"].as_str().unwrap(), "input {input:?}");
            assert_eq!(u64::from(partition_of(input)), case["partition"].as_u64().unwrap(), "input {input:?}");
            let path: String = merkle_path(input).iter().map(|nibble| hex_digit(*nibble)).collect();
            assert_eq!(path, case["hex8"].as_str().unwrap()[..3], "input {input:?}");
        }
    }

    #[test]
    fn mix_and_combine_match_every_vector() {
        // Goal: mix and combine agree with the `mix` and `combineHashes` vectors.
        // Method: recompute each; also check combine is order-independent on the same inputs.
        let vectors = vectors();
        for case in vectors["mix"].as_array().unwrap() {
            assert_eq!(mix(as_u32(&case["input"])), as_u32(&case["mix"]), "mix({})", case["input"]);
        }
        for case in vectors["combineHashes"].as_array().unwrap() {
            let inputs: Vec<u32> = case["inputs"].as_array().unwrap().iter().map(as_u32).collect();
            assert_eq!(combine(inputs.iter().copied()), as_u32(&case["result"]), "combine({inputs:?})");
            assert_eq!(combine(inputs.iter().rev().copied()), as_u32(&case["result"]));
        }
    }

    #[test]
    fn lww_merkle_example_matches_vector() {
        // Goal: item hashes, paths, root, root buckets and the level-1 example all match the
        // `lwwMerkle` vector. Method: hash each record incrementally, check it against fnv1a
        // of the documented input string, then build the depth-3 tree and read its nodes.
        let vectors = vectors();
        let example = &vectors["lwwMerkle"];
        assert_eq!(example["depth"].as_u64(), Some(3));
        let mut items = Vec::new();
        for record in example["records"].as_array().unwrap() {
            let key = record["key"].as_str().unwrap();
            let timestamp = timestamp_of(&record["timestamp"]);
            let input = record["itemHashInput"].as_str().unwrap();
            assert_eq!(format!("{key}:{timestamp}"), input);
            let item_hash = lww_item_hash(key, &timestamp);
            assert_eq!(item_hash, fnv1a_utf16(input), "key {key}");
            assert_eq!(item_hash, as_u32(&record["itemHash"]), "key {key}");
            assert_eq!(format!("{:08x}", fnv1a_utf16(key)), record["pathHex8"].as_str().unwrap());
            let leaf: String = merkle_path(key).iter().map(|nibble| hex_digit(*nibble)).collect();
            assert_eq!(leaf, record["leafPath"].as_str().unwrap(), "key {key}");
            items.push((key.to_string(), item_hash));
        }
        let tree = build_tree(&items);
        assert_eq!(tree[""], as_u32(&example["rootHash"]));
        assert_eq!(buckets(&tree, ""), json_buckets(&example["rootBuckets"]));
        let level1 = &example["exampleLevel1"];
        let path = level1["path"].as_str().unwrap();
        assert_eq!(buckets(&tree, path), json_buckets(&level1["buckets"]));
        // The tree of no records has root 0, like the client's.
        assert_eq!(build_tree(&[]).get("").copied().unwrap_or(combine([])), 0);
    }

    #[test]
    fn or_map_entry_hash_matches_vector() {
        // Goal: the OR-Map entry hash and its value strings match `orMapEntryHash`.
        // Method: encode the vector's values as msgpack, hash the records in both orders
        // (the function sorts by tag), and compare with fnv1a of the documented input.
        let vectors = vectors();
        let example = &vectors["orMapEntryHash"];
        let key = example["key"].as_str().unwrap();
        let records: Vec<OrRecord> = example["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| OrRecord {
                value: msgpack_of(&record["value"]),
                timestamp: timestamp_of(&record["timestamp"]),
                tag: record["tag"].as_str().unwrap().to_string(),
                ttl_ms: record.get("ttlMs").map(|ttl| ttl.as_u64().unwrap()),
            })
            .collect();
        assert_eq!(or_value_string(&records[0].value), "red");
        assert_eq!(or_value_string(&records[1].value), r#"{"a":2,"c":1}"#);
        let input = example["input"].as_str().unwrap();
        assert_eq!(fnv1a_utf16(input), as_u32(&example["hash"]));
        assert_eq!(or_entry_hash(key, &records), as_u32(&example["hash"]));
        assert_eq!(or_entry_hash(key, records.iter().rev()), as_u32(&example["hash"]));
    }

    #[test]
    fn or_entry_hash_of_no_records_is_the_key_part_alone() {
        // Goal: a key without records hashes as just "key:<key>". Method: compare with fnv1a.
        assert_eq!(or_entry_hash("post-1", &[]), fnv1a_utf16("key:post-1"));
    }

    #[test]
    fn js_number_formatting_follows_number_to_string() {
        // Goal: String(number) placement of point and exponent, and shortest digits.
        // Method: values whose JavaScript output is known from the spec's examples and V8.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (42.0, "42"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123.456, "123.456"),
            (1_717_171_717_171.0, "1717171717171"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e21, "1.5e+21"),
            (123e20, "1.23e+22"),
            (0.000001, "0.000001"),
            (0.0000012, "0.0000012"),
            (1e-7, "1e-7"),
            (1.25e-7, "1.25e-7"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (9_007_199_254_740_993.0, "9007199254740992"),
            (18_446_744_073_709_551_615.0, "18446744073709552000"),
            // Exact ties between two shortest candidates: JavaScript takes the even digit.
            (f64::from_bits(0x42E9_F544_F468_27E4), "228329716400447.12"),
            (f64::from_bits(0xC282_4223_D20A_8F40), "-2509409763665.9062"),
            (f64::from_bits(0xC2AA_A0FA_4000_DFA0), "-14639347794031.812"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (number, expected) in cases {
            assert_eq!(js_number(*number), *expected, "String({number:e})");
        }
    }

    #[test]
    fn js_u64_prints_unsafe_integers_as_their_f64() {
        // Goal: millis and TTLs above 2^53 print as the Number the client holds.
        // Method: compare the boundary and u64::MAX with V8's output.
        let print = |number: u64| {
            let mut text = String::new();
            write_js_u64(&mut text, number);
            text
        };
        assert_eq!(print(0), "0");
        assert_eq!(print(1 << 53), "9007199254740992");
        assert_eq!(print((1 << 53) + 1), "9007199254740992");
        assert_eq!(print(u64::MAX), "18446744073709552000");
    }

    #[test]
    fn value_string_of_primitives_is_js_string() {
        // Goal: String(v) for nil, booleans, integers, floats and strings (no JSON quoting).
        // Method: encode each as msgpack and compare with what JavaScript prints.
        let cases: Vec<(rmpv::Value, &str)> = vec![
            (rmpv::Value::Nil, "null"),
            (rmpv::Value::Boolean(true), "true"),
            (rmpv::Value::Boolean(false), "false"),
            (rmpv::Value::from(7), "7"),
            (rmpv::Value::from(-33), "-33"),
            (rmpv::Value::from(u64::MAX), "18446744073709552000"),
            (rmpv::Value::F64(2.0), "2"),
            (rmpv::Value::F64(0.5), "0.5"),
            (rmpv::Value::F64(f64::NAN), "NaN"),
            (rmpv::Value::F32(0.1), "0.10000000149011612"),
            (rmpv::Value::from("a \"quoted\" word"), "a \"quoted\" word"),
            (rmpv::Value::from(""), ""),
        ];
        for (value, expected) in cases {
            assert_eq!(or_value_string(&msgpack_bytes(&value)), expected, "{value:?}");
        }
    }

    #[test]
    fn value_string_of_objects_applies_the_key_whitelist() {
        // Goal: JSON.stringify(v, Object.keys(v).sort()) including its whitelist quirk.
        // Method: JSON inputs with the output V8 gives for the same call.
        let cases: &[(&str, &str)] = &[
            (r#"{}"#, r#"{}"#),
            (r#"{"c":1,"a":2}"#, r#"{"a":2,"c":1}"#),
            // Nested objects keep only top-level keys, in the top-level (sorted) order.
            (r#"{"b":{"b":1,"x":2,"a":3},"a":[1,{"a":null,"z":0}]}"#, r#"{"a":[1,{"a":null}],"b":{"a":3,"b":1}}"#),
            (r#"{"s":"line\nbreak \"q\" \\ \u0001 é 😀"}"#, r#"{"s":"line\nbreak \"q\" \\ \u0001 é 😀"}"#),
            (r#"{"n":1.5,"i":-3,"big":10000000000000000000000}"#, r#"{"big":1e+22,"i":-3,"n":1.5}"#),
            (r#"[]"#, r#"[]"#),
            (r#"[3,"x",null,true]"#, r#"[3,"x",null,true]"#),
            // Inside an array the whitelist is the array's indices.
            (r#"[{"0":"kept","a":"dropped"}]"#, r#"[{"0":"kept"}]"#),
            // Sorting is by string, so "10" precedes "2".
            (r#"{"2":"two","10":"ten","b":"bee"}"#, r#"{"10":"ten","2":"two","b":"bee"}"#),
        ];
        for (input, expected) in cases {
            let value: Json = serde_json::from_str(input).unwrap();
            assert_eq!(or_value_string(&msgpack_of(&value)), *expected, "input {input}");
        }
    }

    #[test]
    fn value_string_mirrors_msgpackr_map_keys() {
        // Goal: non-string map keys become property names as msgpackr makes them, duplicates
        // keep the last value, `__proto__` is renamed, and nan/inf become null.
        // Method: build msgpack maps by hand and compare with the JavaScript result.
        let map = rmpv::Value::Map(vec![
            (rmpv::Value::from(2), rmpv::Value::from("int")),
            (rmpv::Value::Boolean(true), rmpv::Value::from("bool")),
            (rmpv::Value::Nil, rmpv::Value::F64(f64::INFINITY)),
            (rmpv::Value::from("dup"), rmpv::Value::from(1)),
            (rmpv::Value::from("dup"), rmpv::Value::from(2)),
            (rmpv::Value::from("__proto__"), rmpv::Value::from(0)),
            (rmpv::Value::Array(vec![]), rmpv::Value::from("skipped")),
        ]);
        assert_eq!(
            or_value_string(&msgpack_bytes(&map)),
            r#"{"2":"int","__proto_":0,"dup":2,"null":null,"true":"bool"}"#
        );
    }

    #[test]
    fn value_string_of_binary_is_a_uint8array_object() {
        // Goal: bin behaves as the Uint8Array msgpackr decodes it to: an object of indices,
        // keys in string order. Method: compare with V8's JSON.stringify of such an array.
        let bytes: Vec<u8> = (0..11).collect();
        let value = rmpv::Value::Binary(bytes);
        assert_eq!(
            or_value_string(&msgpack_bytes(&value)),
            r#"{"0":0,"1":1,"10":10,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9}"#
        );
    }

    #[test]
    fn utf16_order_differs_from_byte_order_above_the_bmp() {
        // Goal: tags sort like JavaScript strings. Method: U+FF61 sorts after U+1F600 in
        // UTF-16 (0xFF61 > 0xD83D) although its UTF-8 bytes sort first.
        assert_eq!(cmp_utf16("\u{FF61}", "\u{1F600}"), Ordering::Greater);
        assert_eq!("\u{FF61}".cmp("\u{1F600}"), Ordering::Less);
        assert_eq!(cmp_utf16("a", "b"), Ordering::Less);
    }

    #[test]
    fn lww_item_hash_streams_the_timestamp_string() {
        // Goal: the incremental hash equals fnv1a of the formatted string, also for non-ASCII
        // keys and large counters. Method: compare with formatting through Display.
        for (key, timestamp) in [
            ("ключ", Timestamp::new(1_700_000_000_000, u32::MAX, "node-1")),
            ("", Timestamp::new(0, 0, "")),
            ("a😀b", Timestamp::new(42, 7, "n")),
        ] {
            assert_eq!(lww_item_hash(key, &timestamp), fnv1a_utf16(&format!("{key}:{timestamp}")));
        }
    }
}
