//! shardgrid::query::value: how the query engine reads values — attribute lookup by dot path,
//! equality and ordering as PROTOCOL.md §6.8 defines them, the total order that sorting and
//! paging rank values by (§6.9), the whole-number rule for integer fields (§2.1), reading a field
//! of a wire map, and a stable fingerprint hash of a value. It knows nothing about predicates,
//! cursors or pages; those build on these functions.

use std::cmp::Ordering;

use rmpv::Value;

/// Finds the attribute `path` in `value`: first as a literal top-level key (so a field whose name
/// contains a dot stays reachable), then as a dot path walked through nested maps (the reference
/// server's lookup). A non-map anywhere on the way means the attribute is missing.
pub(crate) fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    let Value::Map(entries) = value else { return None };
    if let Some(found) = map_get(entries, path) {
        return Some(found);
    }
    if !path.contains('.') {
        return None;
    }
    let mut current = value;
    for segment in path.split('.') {
        let Value::Map(entries) = current else { return None };
        current = map_get(entries, segment)?;
    }
    Some(current)
}

/// The value under the string key `name`. A map that repeats a key answers with the last copy,
/// as the client's decoder (which assigns keys in order into a JS object) would see it.
fn map_get<'v>(entries: &'v [(Value, Value)], name: &str) -> Option<&'v Value> {
    entries
        .iter()
        .rev()
        .find(|(key, _)| matches!(key, Value::String(text) if text.as_bytes() == name.as_bytes()))
        .map(|(_, value)| value)
}

/// Reads the field `name` of a wire map; absent and nil read alike, as the client never sends nil
/// for an optional field it did not set (§2.3).
pub(crate) fn field<'v>(entries: &'v [(Value, Value)], name: &str) -> Option<&'v Value> {
    entries
        .iter()
        .rev()
        .find(|(key, _)| key.as_str() == Some(name))
        .map(|(_, value)| value)
        .filter(|value| !value.is_nil())
}

/// A msgpack number widened so that every integer encoding (i64 and u64 alike) fits.
#[derive(Clone, Copy, Debug)]
enum Number {
    Int(i128),
    Float(f64),
}

fn as_number(value: &Value) -> Option<Number> {
    match value {
        Value::Integer(integer) => {
            integer.as_i64().map(i128::from).or_else(|| integer.as_u64().map(i128::from)).map(Number::Int)
        }
        Value::F32(float) => Some(Number::Float(f64::from(*float))),
        Value::F64(float) => Some(Number::Float(*float)),
        _ => None,
    }
}

/// Numeric order across encodings, exact even where an integer has no exact f64 (above 2^53).
/// `None` when a NaN is involved: NaN is neither equal to nor ordered against anything.
fn compare_numbers(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
        (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
        (Number::Int(a), Number::Float(b)) => compare_int_float(a, b),
        (Number::Float(a), Number::Int(b)) => compare_int_float(b, a).map(Ordering::reverse),
    }
}

fn compare_int_float(int: i128, float: f64) -> Option<Ordering> {
    // 2^127 is exact in f64; beyond it (and at the infinities) only the sign matters, because no
    // msgpack integer comes close.
    const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_127 {
        return Some(Ordering::Less);
    }
    if float < -TWO_POW_127 {
        return Some(Ordering::Greater);
    }
    let whole = float.trunc();
    // `whole` is integral and inside the i128 range, so the cast is exact.
    match int.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(float - whole)),
        unequal => Some(unequal),
    }
}

/// Equality of `eq`, `neq`, `in` and `where` (§6.8): numbers numerically across int/float
/// encodings, strings by exact bytes, nil equals nil, arrays element-wise and maps regardless of
/// key order (stored values need not keep it, §2.5). Maps cost O(n²) in their entry count.
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    if let (Some(a), Some(b)) = (as_number(a), as_number(b)) {
        return compare_numbers(a, b) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Boolean(a), Value::Boolean(b)) => a == b,
        (Value::String(a), Value::String(b)) => a.as_bytes() == b.as_bytes(),
        (Value::Binary(a), Value::Binary(b)) => a == b,
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| values_equal(a, b)),
        (Value::Map(a), Value::Map(b)) => {
            a.len() == b.len()
                && a.iter().all(|(key_a, value_a)| {
                    b.iter().any(|(key_b, value_b)| values_equal(key_a, key_b) && values_equal(value_a, value_b))
                })
        }
        (Value::Ext(type_a, a), Value::Ext(type_b, b)) => type_a == type_b && a == b,
        _ => false,
    }
}

/// Order of `gt`, `gte`, `lt`, `lte` and `between` (§6.8): two numbers numerically, two strings
/// by bytes (which is code-point order for UTF-8); any other pair is unordered (`None`), which
/// makes those operators false.
pub(crate) fn compare_ordered(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (as_number(a), as_number(b)) {
        return compare_numbers(a, b);
    }
    match (a, b) {
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

/// Where a sort value ranks before values of the other classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortClass {
    Number,
    String,
    /// Booleans, arrays, maps, binaries: §6.9 orders none of them, so they all tie.
    Unordered,
    /// Missing or nil: the greatest value (§6.9).
    Missing,
}

fn sort_class(value: Option<&Value>) -> SortClass {
    match value {
        None | Some(Value::Nil) => SortClass::Missing,
        Some(Value::Integer(_) | Value::F32(_) | Value::F64(_)) => SortClass::Number,
        Some(Value::String(_)) => SortClass::String,
        Some(_) => SortClass::Unordered,
    }
}

/// The ascending order of one sort field's values (§6.9): numbers numerically, strings by bytes,
/// missing and nil greatest. §6.9 lets "incomparable types tie", but a tie between a number and a
/// string while numbers order among themselves is not transitive, and neither sorting nor a
/// cursor position survives that. So the classes rank instead — numbers, then strings, then the
/// unordered values (which all tie), then missing — a total order that agrees with §6.9 wherever
/// §6.9 orders two values. A NaN ranks after every other number and ties with other NaNs.
pub(crate) fn compare_for_sort(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (class_a, class_b) = (sort_class(a), sort_class(b));
    if class_a != class_b {
        return class_a.cmp(&class_b);
    }
    match (a, b) {
        (Some(Value::String(a)), Some(Value::String(b))) => a.as_bytes().cmp(b.as_bytes()),
        (Some(a), Some(b)) if class_a == SortClass::Number => match (as_number(a), as_number(b)) {
            (Some(number_a), Some(number_b)) => {
                compare_numbers(number_a, number_b).unwrap_or_else(|| is_nan(a).cmp(&is_nan(b)))
            }
            _ => Ordering::Equal,
        },
        _ => Ordering::Equal,
    }
}

fn is_nan(value: &Value) -> bool {
    matches!(as_number(value), Some(Number::Float(float)) if float.is_nan())
}

/// The stand-in a cursor stores for a sort value: the same rank under `compare_for_sort` in the
/// fewest bytes. Numbers and strings are kept; every unordered value ties with every other, so
/// `false` stands for them all; missing becomes nil.
pub(crate) fn sort_stand_in(value: Option<&Value>) -> Value {
    match sort_class(value) {
        SortClass::Missing => Value::Nil,
        SortClass::Unordered => Value::Boolean(false),
        SortClass::Number | SortClass::String => value.cloned().unwrap_or(Value::Nil),
    }
}

/// Whether `value` could have come from `sort_stand_in`.
pub(crate) fn is_sort_stand_in(value: &Value) -> bool {
    matches!(
        value,
        Value::Nil | Value::Boolean(false) | Value::Integer(_) | Value::F32(_) | Value::F64(_) | Value::String(_)
    )
}

/// The whole number in an integer field (§2.1): any msgpack integer, or a float holding a whole
/// number. Floats beyond the i128 range saturate, which callers clamp anyway. `None` for
/// fractions, NaN, infinities and non-numbers.
pub(crate) fn whole_number(value: &Value) -> Option<i128> {
    match as_number(value)? {
        Number::Int(int) => Some(int),
        Number::Float(float) if float.is_finite() && float.fract() == 0.0 => Some(float as i128),
        Number::Float(_) => None,
    }
}

/// A short rendering of a wire value for error messages: scalars as written, containers by
/// kind, long strings cut, so a hostile value cannot blow up an ERROR frame.
pub(crate) fn describe(value: &Value) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    match value {
        Value::Nil => "nil".to_owned(),
        Value::Boolean(flag) => flag.to_string(),
        Value::Integer(integer) => integer.to_string(),
        Value::F32(float) => float.to_string(),
        Value::F64(float) => float.to_string(),
        Value::String(text) => match text.as_str() {
            Some(text) if text.chars().count() <= SHOWN_CHARS_MAX => format!("{text:?}"),
            Some(text) => {
                let shown: String = text.chars().take(SHOWN_CHARS_MAX).collect();
                format!("{shown:?}…")
            }
            None => "a string that is not UTF-8".to_owned(),
        },
        Value::Binary(_) => "binary data".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Map(_) => "a map".to_owned(),
        Value::Ext(..) => "an extension value".to_owned(),
    }
}

/// FNV-1a, 64 bits: a fixed, dependency-free hash whose output never changes between builds or
/// restarts, so a cursor issued before a restart still matches its query afterwards. It is not
/// a MAC: a client can forge a cursor for its own query, which only misleads its own paging.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fingerprint(u64);

impl Fingerprint {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Fingerprint(Self::OFFSET_BASIS)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn write_u64(&mut self, number: u64) {
        self.write(&number.to_le_bytes());
    }

    /// Length-prefixed, so that consecutive strings cannot run into each other.
    pub(crate) fn write_str(&mut self, text: &[u8]) {
        self.write_u64(text.len() as u64);
        self.write(text);
    }

    /// Hashes `value` so that values the query engine cannot tell apart hash alike: a whole float
    /// like an integer (`1.0` like `1`) and a map regardless of its key order.
    pub(crate) fn write_value(&mut self, value: &Value) {
        if let Some(int) = whole_number(value) {
            self.write(b"i");
            self.write(&int.to_le_bytes());
            return;
        }
        match value {
            Value::Nil => self.write(b"n"),
            Value::Boolean(flag) => self.write(if *flag { b"t" } else { b"f" }),
            Value::Integer(_) => unreachable!("every integer is a whole number"),
            Value::F32(float) => self.write_float(f64::from(*float)),
            Value::F64(float) => self.write_float(*float),
            Value::String(text) => {
                self.write(b"s");
                self.write_str(text.as_bytes());
            }
            Value::Binary(bytes) => {
                self.write(b"b");
                self.write_str(bytes);
            }
            Value::Array(items) => {
                self.write(b"a");
                self.write_u64(items.len() as u64);
                for item in items {
                    self.write_value(item);
                }
            }
            Value::Map(entries) => {
                // Each entry hashes on its own and the results are added, which is blind to order.
                let mut entries_sum: u64 = 0;
                for (key, entry_value) in entries {
                    let mut entry = Fingerprint::new();
                    entry.write_value(key);
                    entry.write_value(entry_value);
                    entries_sum = entries_sum.wrapping_add(entry.finish());
                }
                self.write(b"m");
                self.write_u64(entries.len() as u64);
                self.write_u64(entries_sum);
            }
            Value::Ext(type_id, bytes) => {
                self.write(b"e");
                self.write(&type_id.to_le_bytes());
                self.write_str(bytes);
            }
        }
    }

    fn write_float(&mut self, float: f64) {
        self.write(b"d");
        let bits = if float.is_nan() { f64::NAN.to_bits() } else { float.to_bits() };
        self.write_u64(bits);
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::test_support::map;

    /// Goal: numbers are equal and ordered by value whatever their encoding, including integers
    /// past 2^53 that f64 cannot hold exactly. Method: compare chosen pairs.
    #[test]
    fn numbers_compare_across_encodings() {
        assert!(values_equal(&Value::from(1), &Value::F64(1.0)));
        assert!(values_equal(&Value::F32(2.5), &Value::F64(2.5)));
        assert!(values_equal(&Value::from(u64::MAX), &Value::from(u64::MAX)));
        assert!(!values_equal(&Value::from(1), &Value::F64(1.5)));
        assert!(!values_equal(&Value::F64(f64::NAN), &Value::F64(f64::NAN)));
        // 2^53 + 1 rounds to 2^53 as f64; the exact comparison still tells them apart.
        let big = (1_i64 << 53) + 1;
        assert_eq!(compare_ordered(&Value::from(big), &Value::F64((1_u64 << 53) as f64)), Some(Ordering::Greater));
        assert_eq!(compare_ordered(&Value::from(-3), &Value::F64(-2.5)), Some(Ordering::Less));
        assert_eq!(compare_ordered(&Value::from(-2), &Value::F64(-2.5)), Some(Ordering::Greater));
        assert_eq!(compare_ordered(&Value::from(i64::MIN), &Value::F64(f64::NEG_INFINITY)), Some(Ordering::Greater));
        assert_eq!(compare_ordered(&Value::from(u64::MAX), &Value::F64(f64::INFINITY)), Some(Ordering::Less));
        assert_eq!(compare_ordered(&Value::from(1), &Value::F64(f64::NAN)), None);
        assert_eq!(compare_ordered(&Value::from(1), &Value::from("1")), None);
        assert_eq!(compare_ordered(&Value::from("b"), &Value::from("ab")), Some(Ordering::Greater));
    }

    /// Goal: structural equality ignores map key order and number encoding inside containers.
    /// Method: compare nested values built in different orders.
    #[test]
    fn containers_compare_structurally() {
        let a = map(&[("x", Value::from(1)), ("y", Value::Array(vec![Value::from("s"), Value::Nil]))]);
        let b = map(&[("y", Value::Array(vec![Value::from("s"), Value::Nil])), ("x", Value::F64(1.0))]);
        assert!(values_equal(&a, &b));
        let c = map(&[("x", Value::from(1))]);
        assert!(!values_equal(&a, &c));
        assert!(!values_equal(&Value::Array(vec![Value::from(1)]), &Value::from(1)));
        assert!(values_equal(&Value::Nil, &Value::Nil));
        assert!(!values_equal(&Value::Nil, &Value::Boolean(false)));
    }

    /// Goal: lookups walk dot paths, prefer a literal dotted key, and fail through non-maps.
    /// Method: look up paths in a nested value.
    #[test]
    fn lookup_walks_dot_paths() {
        let value = map(&[
            ("address", map(&[("city", Value::from("Oslo")), ("zip", Value::Nil)])),
            ("a.b", Value::from(7)),
            ("a", map(&[("b", Value::from(8))])),
            ("list", Value::Array(vec![Value::from(1)])),
        ]);
        assert_eq!(lookup(&value, "address.city"), Some(&Value::from("Oslo")));
        assert_eq!(lookup(&value, "address.zip"), Some(&Value::Nil));
        assert_eq!(lookup(&value, "address.street"), None);
        assert_eq!(lookup(&value, "a.b"), Some(&Value::from(7)));
        assert_eq!(lookup(&value, "list.0"), None);
        assert_eq!(lookup(&value, "address.city.x"), None);
        assert_eq!(lookup(&Value::from(3), "x"), None);
        let repeated = Value::Map(vec![(Value::from("k"), Value::from(1)), (Value::from("k"), Value::from(2))]);
        assert_eq!(lookup(&repeated, "k"), Some(&Value::from(2)));
    }

    /// Goal: the sort order is total — numbers, strings, unordered values, then missing — and a
    /// cursor's stand-in ranks exactly like the value it replaces. Method: sort a mixed list and
    /// compare every pair against its stand-ins.
    #[test]
    fn sort_order_ranks_classes() {
        let values = [
            Some(Value::from("b")),
            None,
            Some(Value::Boolean(true)),
            Some(Value::F64(f64::NAN)),
            Some(Value::from(2)),
            Some(Value::Nil),
            Some(Value::F64(1.5)),
            Some(Value::from("a")),
            Some(Value::Array(vec![])),
        ];
        let mut sorted: Vec<Option<Value>> = values.to_vec();
        sorted.sort_by(|a, b| compare_for_sort(a.as_ref(), b.as_ref()));
        let classes: Vec<SortClass> = sorted.iter().map(|value| sort_class(value.as_ref())).collect();
        assert!(classes.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(sorted[0], Some(Value::F64(1.5)));
        assert_eq!(sorted[1], Some(Value::from(2)));
        assert!(is_nan(sorted[2].as_ref().unwrap()));
        assert_eq!(sorted[3], Some(Value::from("a")));
        for a in &values {
            for b in &values {
                let stand_in = sort_stand_in(b.as_ref());
                assert!(is_sort_stand_in(&stand_in));
                assert_eq!(
                    compare_for_sort(a.as_ref(), b.as_ref()),
                    compare_for_sort(a.as_ref(), Some(&stand_in)),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    /// Goal: integer fields accept every integer encoding and whole floats, nothing else.
    /// Method: feed the shapes §2.1 lists.
    #[test]
    fn whole_numbers_follow_the_wire_rule() {
        assert_eq!(whole_number(&Value::from(5_u8)), Some(5));
        assert_eq!(whole_number(&Value::from(u64::MAX)), Some(i128::from(u64::MAX)));
        assert_eq!(whole_number(&Value::F64(1.7e12)), Some(1_700_000_000_000));
        assert_eq!(whole_number(&Value::F32(3.0)), Some(3));
        assert_eq!(whole_number(&Value::F64(-0.0)), Some(0));
        assert_eq!(whole_number(&Value::F64(2.5)), None);
        assert_eq!(whole_number(&Value::F64(f64::INFINITY)), None);
        assert_eq!(whole_number(&Value::F64(f64::NAN)), None);
        assert_eq!(whole_number(&Value::from("5")), None);
    }

    /// Goal: the fingerprint ignores what the engine ignores (map key order, int vs whole float)
    /// and notices real differences. Method: hash pairs of values.
    #[test]
    fn fingerprint_is_canonical() {
        let hash = |value: &Value| {
            let mut fingerprint = Fingerprint::new();
            fingerprint.write_value(value);
            fingerprint.finish()
        };
        let a = map(&[("op", Value::from("eq")), ("value", Value::from(1))]);
        let b = map(&[("value", Value::F64(1.0)), ("op", Value::from("eq"))]);
        let c = map(&[("op", Value::from("eq")), ("value", Value::from(2))]);
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
        assert_ne!(hash(&Value::from("1")), hash(&Value::from(1)));
        assert_ne!(
            hash(&Value::Array(vec![Value::from("ab"), Value::from("c")])),
            hash(&Value::Array(vec![Value::from("a"), Value::from("bc")]))
        );
    }
}
