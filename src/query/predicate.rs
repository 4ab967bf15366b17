//! shardgrid::query::predicate: the PredicateNode tree of PROTOCOL.md §4.0, parsed once from the
//! wire into a form that evaluates without allocating (regexes compiled, `like` patterns split,
//! list sizes checked), and its evaluation against one record value (§6.8, DECISIONS.md §1.6,
//! §1.9). It leaves out `where`, sorting and paging, which the parent module owns, and the
//! client's full-text operators, which are unknown here and so false.

use regex::{Regex, RegexBuilder};
use rmpv::Value;

use crate::query::like::LikePattern;
use crate::query::value::{compare_ordered, field, lookup, values_equal};
use crate::query::{
    QueryError, ATTRIBUTE_BYTES_MAX, IN_VALUES_MAX, PATTERN_BYTES_MAX, PREDICATE_DEPTH_MAX, PREDICATE_NODES_MAX,
    REGEX_COMPILED_BYTES_MAX, REGEX_DFA_BYTES_MAX,
};

/// One parsed node of a predicate tree. Its depth and node count are bounded at parse time
/// (`PREDICATE_DEPTH_MAX`, `PREDICATE_NODES_MAX`), so evaluating it recurses a bounded amount.
#[derive(Clone, Debug)]
pub(crate) enum Predicate {
    /// All children hold; true with no children.
    And(Vec<Predicate>),
    /// Some child holds; false with no children.
    Or(Vec<Predicate>),
    /// The first child does not hold; true with no children (§4.0: `not` uses the first child).
    /// Later children are parsed, and count toward the bounds, but never evaluated.
    Not(Vec<Predicate>),
    /// A test of one attribute, a dot path (see `value::lookup`).
    Leaf { attribute: String, test: LeafTest },
    /// An operator shardgrid does not know, such as the client's full-text `match`: false for
    /// this leaf, never an error (DECISIONS.md §1.9).
    Unknown,
}

impl Predicate {
    /// Appends the `eq` leaves that must all hold for this predicate to hold: the predicate
    /// itself, or the direct children of a top-level `and` (recursively through nested `and`s).
    pub(crate) fn top_level_equalities<'a>(&'a self, terms: &mut Vec<(&'a str, &'a Value)>) {
        match self {
            Predicate::And(children) => children.iter().for_each(|child| child.top_level_equalities(terms)),
            Predicate::Leaf { attribute, test: LeafTest::Eq(value) } => terms.push((attribute.as_str(), value)),
            _ => {}
        }
    }
}

/// What a leaf checks about its attribute's value. Operands that cannot work (a `like` whose
/// operand is not a string, a `between` that is not a pair, an invalid regex) parse to `None` and make the leaf
/// false, as §6.8 says; they are not errors.
#[derive(Clone, Debug)]
pub(crate) enum LeafTest {
    Eq(Value),
    Neq(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    Between(Option<(Value, Value)>),
    In(Value),
    Like(Option<LikePattern>),
    Regex(Option<Regex>),
    IsNull,
    IsNotNull,
    Contains(Operand),
    ContainsAll(Vec<Operand>),
    ContainsAny(Vec<Operand>),
    StartsWith(Option<Vec<u8>>),
    EndsWith(Option<Vec<u8>>),
}

/// A `contains*` operand: the value, for membership in an array attribute, and, when it is a
/// string, its substring pattern, for a string attribute.
#[derive(Clone, Debug)]
pub(crate) struct Operand {
    value: Value,
    substring: Option<LikePattern>,
}

/// What the parse has left to spend: the node count is shared across the whole tree.
pub(crate) struct ParseBudget {
    nodes_left: usize,
}

impl ParseBudget {
    pub(crate) fn new() -> Self {
        ParseBudget { nodes_left: PREDICATE_NODES_MAX }
    }
}

/// Parses the PredicateNode `node`, found at `location` (such as `query.predicate.children[1]`),
/// at nesting `depth` (the root is 1).
pub(crate) fn parse(
    node: &Value,
    location: &str,
    depth: usize,
    budget: &mut ParseBudget,
) -> Result<Predicate, QueryError> {
    if depth > PREDICATE_DEPTH_MAX {
        return Err(QueryError::PredicateTooDeep { depth_max: PREDICATE_DEPTH_MAX });
    }
    if budget.nodes_left == 0 {
        return Err(QueryError::PredicateTooLarge { nodes_max: PREDICATE_NODES_MAX });
    }
    budget.nodes_left -= 1;
    let Value::Map(entries) = node else {
        return Err(QueryError::wrong_type(location, "a predicate map", node));
    };
    let op = match field(entries, "op") {
        None => return Err(QueryError::Missing { field: format!("{location}.op") }),
        Some(Value::String(op)) => op.as_str().unwrap_or(""),
        Some(other) => return Err(QueryError::wrong_type(&format!("{location}.op"), "a string", other)),
    };
    match op {
        "and" | "or" | "not" => {
            let children = parse_children(entries, location, depth, budget)?;
            Ok(match op {
                "and" => Predicate::And(children),
                "or" => Predicate::Or(children),
                _ => Predicate::Not(children),
            })
        }
        _ => {
            let Some(kind) = LeafKind::from_op(op) else { return Ok(Predicate::Unknown) };
            let attribute = parse_attribute(entries, location)?;
            let operand = field(entries, "value").unwrap_or(&Value::Nil);
            let test = parse_leaf_test(kind, operand, location)?;
            Ok(Predicate::Leaf { attribute, test })
        }
    }
}

fn parse_children(
    entries: &[(Value, Value)],
    location: &str,
    depth: usize,
    budget: &mut ParseBudget,
) -> Result<Vec<Predicate>, QueryError> {
    match field(entries, "children") {
        None => Ok(Vec::new()),
        Some(Value::Array(nodes)) => nodes
            .iter()
            .enumerate()
            .map(|(index, child)| parse(child, &format!("{location}.children[{index}]"), depth + 1, budget))
            .collect(),
        Some(other) => Err(QueryError::wrong_type(&format!("{location}.children"), "an array", other)),
    }
}

fn parse_attribute(entries: &[(Value, Value)], location: &str) -> Result<String, QueryError> {
    let field_name = || format!("{location}.attribute");
    match field(entries, "attribute") {
        None => Err(QueryError::Missing { field: field_name() }),
        Some(Value::String(text)) => {
            let Some(attribute) = text.as_str() else {
                return Err(QueryError::wrong_type(&field_name(), "a UTF-8 string", &Value::String(text.clone())));
            };
            if attribute.len() > ATTRIBUTE_BYTES_MAX {
                return Err(QueryError::TooLong {
                    field: field_name(),
                    bytes: attribute.len(),
                    bytes_max: ATTRIBUTE_BYTES_MAX,
                });
            }
            Ok(attribute.to_owned())
        }
        Some(other) => Err(QueryError::wrong_type(&field_name(), "a string", other)),
    }
}

/// The leaf operators shardgrid knows (§6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeafKind {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
    In,
    Like,
    Regex,
    IsNull,
    IsNotNull,
    Contains,
    ContainsAll,
    ContainsAny,
    StartsWith,
    EndsWith,
}

impl LeafKind {
    fn from_op(op: &str) -> Option<Self> {
        Some(match op {
            "eq" => LeafKind::Eq,
            "neq" => LeafKind::Neq,
            "gt" => LeafKind::Gt,
            "gte" => LeafKind::Gte,
            "lt" => LeafKind::Lt,
            "lte" => LeafKind::Lte,
            "between" => LeafKind::Between,
            "in" => LeafKind::In,
            "like" => LeafKind::Like,
            "regex" => LeafKind::Regex,
            "isNull" => LeafKind::IsNull,
            "isNotNull" => LeafKind::IsNotNull,
            "contains" => LeafKind::Contains,
            "containsAll" => LeafKind::ContainsAll,
            "containsAny" => LeafKind::ContainsAny,
            "startsWith" => LeafKind::StartsWith,
            "endsWith" => LeafKind::EndsWith,
            _ => return None,
        })
    }
}

fn parse_leaf_test(kind: LeafKind, operand: &Value, location: &str) -> Result<LeafTest, QueryError> {
    let value_field = || format!("{location}.value");
    Ok(match kind {
        LeafKind::Eq => LeafTest::Eq(operand.clone()),
        LeafKind::Neq => LeafTest::Neq(operand.clone()),
        LeafKind::Gt => LeafTest::Gt(operand.clone()),
        LeafKind::Gte => LeafTest::Gte(operand.clone()),
        LeafKind::Lt => LeafTest::Lt(operand.clone()),
        LeafKind::Lte => LeafTest::Lte(operand.clone()),
        LeafKind::Between => LeafTest::Between(match operand {
            Value::Array(bounds) if bounds.len() == 2 => Some((bounds[0].clone(), bounds[1].clone())),
            _ => None,
        }),
        LeafKind::In => {
            check_list_len(operand, &value_field)?;
            LeafTest::In(operand.clone())
        }
        LeafKind::Like => LeafTest::Like(pattern_text(operand, &value_field)?.map(LikePattern::like)),
        LeafKind::Regex => LeafTest::Regex(pattern_text(operand, &value_field)?.and_then(compile_regex)),
        LeafKind::IsNull => LeafTest::IsNull,
        LeafKind::IsNotNull => LeafTest::IsNotNull,
        LeafKind::Contains => LeafTest::Contains(parse_operand(operand, &value_field)?),
        LeafKind::ContainsAll | LeafKind::ContainsAny => {
            check_list_len(operand, &value_field)?;
            let operands = match operand {
                Value::Array(items) => {
                    items.iter().map(|item| parse_operand(item, &value_field)).collect::<Result<_, _>>()?
                }
                scalar => vec![parse_operand(scalar, &value_field)?],
            };
            if kind == LeafKind::ContainsAll {
                LeafTest::ContainsAll(operands)
            } else {
                LeafTest::ContainsAny(operands)
            }
        }
        LeafKind::StartsWith => LeafTest::StartsWith(string_bytes(operand)),
        LeafKind::EndsWith => LeafTest::EndsWith(string_bytes(operand)),
    })
}

/// Bounds the operand lists that are scanned once per row (`in`, `containsAll`, `containsAny`).
fn check_list_len(operand: &Value, value_field: &dyn Fn() -> String) -> Result<(), QueryError> {
    match operand {
        Value::Array(items) if items.len() > IN_VALUES_MAX => {
            Err(QueryError::TooMany { field: value_field(), what: "values", count: items.len(), max: IN_VALUES_MAX })
        }
        _ => Ok(()),
    }
}

/// The text of a string operand that is matched as a pattern, refused past `PATTERN_BYTES_MAX`
/// because matching cost grows with it. `None` for any other operand (the leaf is then false).
fn pattern_text<'v>(operand: &'v Value, value_field: &dyn Fn() -> String) -> Result<Option<&'v str>, QueryError> {
    let Value::String(text) = operand else { return Ok(None) };
    if text.as_bytes().len() > PATTERN_BYTES_MAX {
        return Err(QueryError::TooLong {
            field: value_field(),
            bytes: text.as_bytes().len(),
            bytes_max: PATTERN_BYTES_MAX,
        });
    }
    Ok(text.as_str())
}

/// Compiles a `regex` operand once, for every row the query will see. The regex crate runs in
/// time linear in the text, so `(a+)+$` cannot blow up; the size limits bound the memory one
/// pattern may claim. An invalid pattern (including JavaScript-only syntax such as lookaround)
/// yields `None`, and the leaf is false (§6.8).
fn compile_regex(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern).size_limit(REGEX_COMPILED_BYTES_MAX).dfa_size_limit(REGEX_DFA_BYTES_MAX).build().ok()
}

fn parse_operand(value: &Value, value_field: &dyn Fn() -> String) -> Result<Operand, QueryError> {
    let substring = pattern_text(value, value_field)?.map(LikePattern::substring);
    Ok(Operand { value: value.clone(), substring })
}

fn string_bytes(operand: &Value) -> Option<Vec<u8>> {
    match operand {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

impl Predicate {
    /// Whether `value` (a record value) satisfies this node.
    pub(crate) fn matches(&self, value: &Value) -> bool {
        match self {
            Predicate::And(children) => children.iter().all(|child| child.matches(value)),
            Predicate::Or(children) => children.iter().any(|child| child.matches(value)),
            Predicate::Not(children) => !children.first().is_some_and(|child| child.matches(value)),
            Predicate::Leaf { attribute, test } => test.matches(lookup(value, attribute)),
            Predicate::Unknown => false,
        }
    }
}

impl LeafTest {
    /// Applies the test to the attribute's value, `None` when the attribute is missing.
    fn matches(&self, found: Option<&Value>) -> bool {
        // §6.8: a missing or nil attribute fails every leaf except the null checks, `neq`
        // included.
        let present = found.filter(|value| !value.is_nil());
        match self {
            LeafTest::IsNull => present.is_none(),
            LeafTest::IsNotNull => present.is_some(),
            _ => present.is_some_and(|attribute| self.matches_present(attribute)),
        }
    }

    fn matches_present(&self, attribute: &Value) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let ordered = |operand: &Value| compare_ordered(attribute, operand);
        match self {
            LeafTest::Eq(operand) => values_equal(attribute, operand),
            LeafTest::Neq(operand) => !values_equal(attribute, operand),
            LeafTest::Gt(operand) => ordered(operand) == Some(Greater),
            LeafTest::Gte(operand) => matches!(ordered(operand), Some(Greater | Equal)),
            LeafTest::Lt(operand) => ordered(operand) == Some(Less),
            LeafTest::Lte(operand) => matches!(ordered(operand), Some(Less | Equal)),
            LeafTest::Between(bounds) => bounds.as_ref().is_some_and(|(low, high)| {
                matches!(ordered(low), Some(Greater | Equal)) && matches!(ordered(high), Some(Less | Equal))
            }),
            LeafTest::In(operand) => match (operand, attribute) {
                (Value::Array(options), _) => options.iter().any(|option| values_equal(attribute, option)),
                // The reference server's extra: an array attribute holding the scalar operand.
                (scalar, Value::Array(items)) => items.iter().any(|item| values_equal(item, scalar)),
                _ => false,
            },
            LeafTest::Like(pattern) => match (pattern, as_text(attribute)) {
                (Some(pattern), Some(text)) => pattern.matches(text),
                _ => false,
            },
            LeafTest::Regex(regex) => match (regex, as_text(attribute)) {
                (Some(regex), Some(text)) => regex.is_match(text),
                _ => false,
            },
            LeafTest::IsNull | LeafTest::IsNotNull => {
                unreachable!("null checks are answered before")
            }
            LeafTest::Contains(operand) => operand.found_in(attribute),
            LeafTest::ContainsAll(operands) => {
                is_container(attribute) && operands.iter().all(|operand| operand.found_in(attribute))
            }
            LeafTest::ContainsAny(operands) => operands.iter().any(|operand| operand.found_in(attribute)),
            LeafTest::StartsWith(prefix) => match (prefix, attribute) {
                (Some(prefix), Value::String(text)) => text.as_bytes().starts_with(prefix),
                _ => false,
            },
            LeafTest::EndsWith(suffix) => match (suffix, attribute) {
                (Some(suffix), Value::String(text)) => text.as_bytes().ends_with(suffix),
                _ => false,
            },
        }
    }
}

impl Operand {
    /// `contains` semantics (DECISIONS.md §1.6): a case-insensitive substring of a string
    /// attribute, or an element (by equality) of an array attribute. `containsAll` and
    /// `containsAny` apply it per operand: the reference server's array membership, and on
    /// strings the client's local substring test, so both readings of the operator hold.
    fn found_in(&self, attribute: &Value) -> bool {
        match attribute {
            Value::String(text) => match (&self.substring, text.as_str()) {
                (Some(substring), Some(text)) => substring.matches(text),
                _ => false,
            },
            Value::Array(items) => items.iter().any(|item| values_equal(item, &self.value)),
            _ => false,
        }
    }
}

/// Whether `containsAll` can hold at all: with no operands it would otherwise be true of any
/// attribute, numbers included.
fn is_container(attribute: &Value) -> bool {
    matches!(attribute, Value::String(_) | Value::Array(_))
}

fn as_text(value: &Value) -> Option<&str> {
    match value {
        Value::String(text) => text.as_str(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use crate::query::test_support::{array, branch, leaf, map, predicate_query};
    use crate::query::{Query, QueryError, IN_VALUES_MAX, PATTERN_BYTES_MAX, PREDICATE_DEPTH_MAX, PREDICATE_NODES_MAX};

    /// One record with a field of every kind the operators care about.
    fn record() -> Value {
        map(&[
            ("n", Value::from(1)),
            ("f", Value::F64(1.5)),
            ("s", Value::from("1")),
            ("name", Value::from("Alice Smith")),
            ("b", Value::Boolean(true)),
            ("zero", Value::from(0)),
            ("empty", Value::from("")),
            ("nil", Value::Nil),
            ("nan", Value::F64(f64::NAN)),
            ("tags", array(&[Value::from("x"), Value::from("Yak"), Value::from(2)])),
            ("obj", map(&[("a", Value::from(1))])),
            ("address", map(&[("city", Value::from("Oslo")), ("zip", Value::Nil)])),
        ])
    }

    /// Evaluates each (node, expected) against `record()`, naming the failing node.
    fn check(cases: Vec<(Value, bool)>) {
        let record = record();
        for (node, expected) in cases {
            let query = predicate_query(node.clone());
            assert_eq!(query.matches(&record), expected, "{node}");
        }
    }

    fn parse_error(node: Value) -> String {
        Query::from_value(&map(&[("predicate", node)])).unwrap_err().to_string()
    }

    /// Goal: equality compares numbers across encodings, strings by bytes, containers by
    /// structure, and a missing or nil attribute fails both `eq` and `neq` (§6.8).
    /// Method: evaluate chosen leaves against one record.
    #[test]
    fn eq_and_neq() {
        check(vec![
            (leaf("eq", "n", Value::from(1)), true),
            (leaf("eq", "n", Value::F64(1.0)), true),
            (leaf("eq", "f", Value::F64(1.5)), true),
            (leaf("eq", "f", Value::from(1)), false),
            (leaf("eq", "s", Value::from(1)), false),
            (leaf("eq", "n", Value::from("1")), false),
            (leaf("eq", "s", Value::from("1")), true),
            (leaf("eq", "b", Value::Boolean(true)), true),
            (leaf("eq", "tags", array(&[Value::from("x"), Value::from("Yak"), Value::F64(2.0)])), true),
            (leaf("eq", "obj", map(&[("a", Value::F64(1.0))])), true),
            (leaf("eq", "nil", Value::Nil), false),
            (leaf("eq", "missing", Value::Nil), false),
            (leaf("eq", "nan", Value::F64(f64::NAN)), false),
            (leaf("neq", "n", Value::from(2)), true),
            (leaf("neq", "n", Value::F64(1.0)), false),
            (leaf("neq", "s", Value::from(1)), true),
            (leaf("neq", "missing", Value::from(1)), false),
            (leaf("neq", "nil", Value::from(1)), false),
        ]);
    }

    /// Goal: ordering operators compare numbers numerically and strings by bytes, and any other
    /// pairing (string vs number, bool, nil, NaN) is false. Method: chosen leaves.
    #[test]
    fn ordering_operators() {
        check(vec![
            (leaf("gt", "n", Value::from(0)), true),
            (leaf("gt", "n", Value::F64(1.0)), false),
            (leaf("gte", "n", Value::F64(1.0)), true),
            (leaf("lt", "f", Value::from(2)), true),
            (leaf("lte", "f", Value::F64(1.5)), true),
            (leaf("lt", "f", Value::F64(1.5)), false),
            (leaf("gt", "name", Value::from("Alice")), true),
            (leaf("lt", "name", Value::from("Bob")), true),
            (leaf("gt", "s", Value::from(0)), false),
            (leaf("lt", "n", Value::from("2")), false),
            (leaf("gt", "b", Value::Boolean(false)), false),
            (leaf("gte", "missing", Value::from(0)), false),
            (leaf("lte", "nil", Value::from(0)), false),
            (leaf("gt", "nan", Value::from(0)), false),
            (leaf("lt", "nan", Value::from(0)), false),
            (leaf("gt", "n", Value::Nil), false),
        ]);
    }

    /// Goal: `between` is inclusive at both ends and false for any operand that is not a
    /// comparable pair. Method: chosen leaves, including every wrong shape.
    #[test]
    fn between() {
        check(vec![
            (leaf("between", "n", array(&[Value::from(1), Value::from(3)])), true),
            (leaf("between", "n", array(&[Value::from(0), Value::F64(1.0)])), true),
            (leaf("between", "f", array(&[Value::from(1), Value::from(2)])), true),
            (leaf("between", "f", array(&[Value::from(2), Value::from(3)])), false),
            (leaf("between", "name", array(&[Value::from("A"), Value::from("B")])), true),
            (leaf("between", "n", array(&[Value::from(3), Value::from(1)])), false),
            (leaf("between", "n", array(&[Value::from(0), Value::from("z")])), false),
            (leaf("between", "n", Value::from(1)), false),
            (leaf("between", "n", array(&[Value::from(1)])), false),
            (leaf("between", "n", array(&[Value::from(0), Value::from(1), Value::from(2)])), false),
            (leaf("between", "n", map(&[("low", Value::from(0)), ("high", Value::from(2))])), false),
            (leaf("between", "n", Value::Nil), false),
            (leaf("between", "missing", array(&[Value::from(0), Value::from(2)])), false),
        ]);
    }

    /// Goal: `in` finds the attribute among the operand's elements by equality, and an array
    /// attribute holding a scalar operand also matches (reference extra). Method: chosen leaves.
    #[test]
    fn in_operator() {
        check(vec![
            (leaf("in", "n", array(&[Value::from(0), Value::F64(1.0)])), true),
            (leaf("in", "n", array(&[Value::from("1")])), false),
            (leaf("in", "s", array(&[Value::from("1")])), true),
            (leaf("in", "n", array(&[])), false),
            (leaf("in", "tags", Value::from("x")), true),
            (leaf("in", "tags", Value::F64(2.0)), true),
            (leaf("in", "tags", Value::from("z")), false),
            (leaf("in", "tags", array(&[array(&[Value::from("x"), Value::from("Yak"), Value::from(2)])])), true),
            (leaf("in", "n", Value::from(1)), false),
            (leaf("in", "missing", array(&[Value::Nil])), false),
            (leaf("in", "nil", array(&[Value::Nil])), false),
        ]);
    }

    /// Goal: `like` is a whole-string, case-insensitive match with `%` and `_`, false on
    /// non-strings. Method: chosen leaves (the matcher itself is checked against a model in
    /// `like`).
    #[test]
    fn like_operator() {
        check(vec![
            (leaf("like", "name", Value::from("alice%")), true),
            (leaf("like", "name", Value::from("%SMITH")), true),
            (leaf("like", "name", Value::from("A_ice Smith")), true),
            (leaf("like", "name", Value::from("Alice")), false),
            (leaf("like", "name", Value::from("%x%")), false),
            (leaf("like", "n", Value::from("1")), false),
            (leaf("like", "s", Value::from(1)), false),
            (leaf("like", "empty", Value::from("%")), true),
            (leaf("like", "missing", Value::from("%")), false),
        ]);
    }

    /// Goal: `regex` is an unanchored, case-sensitive search; an invalid pattern, a non-string
    /// operand or attribute is false, not an error. Method: chosen leaves.
    #[test]
    fn regex_operator() {
        check(vec![
            (leaf("regex", "name", Value::from("^Al")), true),
            (leaf("regex", "name", Value::from("Smi")), true),
            (leaf("regex", "name", Value::from("smith")), false),
            (leaf("regex", "name", Value::from("(?i)smith")), true),
            (leaf("regex", "name", Value::from("(")), false),
            (leaf("regex", "name", Value::from("(?=Alice)")), false),
            (leaf("regex", "name", Value::from(1)), false),
            (leaf("regex", "n", Value::from("1")), false),
            (leaf("regex", "missing", Value::from(".*")), false),
        ]);
    }

    /// Goal: patterns that are slow for backtracking or naive matchers complete (the test
    /// finishing is the check; we never assert on timing). Method: `(a+)+$` against 100 000
    /// `a`s followed by `!`, a `like` of many `%a`, and a maximal `contains` needle that almost
    /// matches everywhere.
    #[test]
    fn pathological_patterns_complete() {
        let text = format!("{}!", "a".repeat(100_000));
        let record = map(&[("text", Value::from(text.as_str()))]);
        assert!(!predicate_query(leaf("regex", "text", Value::from("(a+)+$"))).matches(&record));
        assert!(predicate_query(leaf("regex", "text", Value::from("(a+)+!$"))).matches(&record));
        let like = "%a%a%a%a%a%a%a%a%a%a%b";
        assert!(!predicate_query(leaf("like", "text", Value::from(like))).matches(&record));
        let contains = "a".repeat(PATTERN_BYTES_MAX - 1) + "b";
        assert!(!predicate_query(leaf("contains", "text", Value::from(contains))).matches(&record));
    }

    /// Goal: `isNull` holds for a missing or nil attribute only, `isNotNull` for the rest, falsy
    /// values included. Method: chosen leaves.
    #[test]
    fn null_checks() {
        check(vec![
            (leaf("isNull", "missing", Value::Nil), true),
            (leaf("isNull", "nil", Value::Nil), true),
            (leaf("isNull", "address.zip", Value::Nil), true),
            (leaf("isNull", "address.nowhere.deeper", Value::Nil), true),
            (leaf("isNull", "zero", Value::Nil), false),
            (leaf("isNull", "empty", Value::Nil), false),
            (leaf("isNull", "b", Value::Nil), false),
            (leaf("isNotNull", "missing", Value::Nil), false),
            (leaf("isNotNull", "nil", Value::Nil), false),
            (leaf("isNotNull", "zero", Value::Nil), true),
            (map(&[("op", Value::from("isNull")), ("attribute", Value::from("nil"))]), true),
        ]);
    }

    /// Goal: `contains` is a case-insensitive substring test on strings and equality membership
    /// on arrays (DECISIONS.md §1.6); `containsAll`/`containsAny` apply it per operand; the
    /// string prefix/suffix tests are case-sensitive. Method: chosen leaves.
    #[test]
    fn contains_family() {
        let list = |items: &[&str]| Value::Array(items.iter().map(|item| Value::from(*item)).collect());
        check(vec![
            (leaf("contains", "name", Value::from("CE SM")), true),
            (leaf("contains", "name", Value::from("")), true),
            (leaf("contains", "name", Value::from("%")), false),
            (leaf("contains", "name", Value::from(1)), false),
            (leaf("contains", "tags", Value::from("x")), true),
            (leaf("contains", "tags", Value::from("yak")), false),
            (leaf("contains", "tags", Value::F64(2.0)), true),
            (leaf("contains", "n", Value::from(1)), false),
            (leaf("contains", "missing", Value::from("a")), false),
            (leaf("containsAll", "tags", list(&["x", "Yak"])), true),
            (leaf("containsAll", "tags", list(&["x", "z"])), false),
            (leaf("containsAll", "tags", Value::from("x")), true),
            (leaf("containsAll", "tags", list(&[])), true),
            (leaf("containsAll", "n", list(&[])), false),
            (leaf("containsAll", "name", list(&["alice", "SMITH"])), true),
            (leaf("containsAll", "name", list(&["alice", "bob"])), false),
            (leaf("containsAny", "tags", list(&["z", "Yak"])), true),
            (leaf("containsAny", "tags", list(&["z"])), false),
            (leaf("containsAny", "tags", list(&[])), false),
            (leaf("containsAny", "tags", Value::from(2)), true),
            (leaf("containsAny", "name", list(&["bob", "smith"])), true),
            (leaf("containsAny", "n", list(&["1"])), false),
            (leaf("startsWith", "name", Value::from("Ali")), true),
            (leaf("startsWith", "name", Value::from("ali")), false),
            (leaf("startsWith", "name", Value::from("")), true),
            (leaf("startsWith", "n", Value::from("1")), false),
            (leaf("startsWith", "s", Value::from(1)), false),
            (leaf("endsWith", "name", Value::from("Smith")), true),
            (leaf("endsWith", "name", Value::from("SMITH")), false),
            (leaf("endsWith", "missing", Value::from("")), false),
        ]);
    }

    /// Goal: `and`/`or`/`not` follow §6.8, including their empty forms, and `not` reads only
    /// its first child. Method: combine true and false leaves.
    #[test]
    fn logical_operators() {
        let yes = || leaf("eq", "n", Value::from(1));
        let no = || leaf("eq", "n", Value::from(2));
        check(vec![
            (branch("and", vec![]), true),
            (branch("or", vec![]), false),
            (branch("not", vec![]), true),
            (map(&[("op", Value::from("and"))]), true),
            (branch("and", vec![yes(), yes()]), true),
            (branch("and", vec![yes(), no()]), false),
            (branch("or", vec![no(), yes()]), true),
            (branch("or", vec![no(), no()]), false),
            (branch("not", vec![no()]), true),
            (branch("not", vec![yes(), no()]), false),
            (branch("not", vec![no(), yes()]), true),
            (branch("and", vec![branch("or", vec![no(), yes()]), branch("not", vec![no()])]), true),
        ]);
    }

    /// Goal: an unknown operator is false for its leaf and never an error (DECISIONS.md §1.9),
    /// whatever else the node carries. Method: the client's full-text ops and a misspelling.
    #[test]
    fn unknown_operators_are_false() {
        let full_text = map(&[
            ("op", Value::from("match")),
            ("attribute", Value::from("name")),
            ("query", Value::from("alice")),
            ("matchOptions", map(&[("minScore", Value::F64(0.5))])),
        ]);
        check(vec![
            (full_text.clone(), false),
            (branch("not", vec![full_text.clone()]), true),
            (branch("or", vec![full_text, leaf("eq", "n", Value::from(1))]), true),
            (leaf("EQ", "n", Value::from(1)), false),
            (map(&[("op", Value::from("matchPhrase")), ("children", Value::from("not an array"))]), false),
        ]);
    }

    /// Goal: attributes are dot paths through nested maps; anything that is not a map on the way
    /// makes the attribute missing. Method: chosen leaves.
    #[test]
    fn dot_paths() {
        check(vec![
            (leaf("eq", "address.city", Value::from("Oslo")), true),
            (leaf("like", "address.city", Value::from("os%")), true),
            (leaf("eq", "address.city.name", Value::from("Oslo")), false),
            (leaf("eq", "address.town", Value::from("Oslo")), false),
            (leaf("eq", "tags.0", Value::from("x")), false),
            (leaf("isNotNull", "obj.a", Value::Nil), true),
        ]);
        let not_a_map = Value::from("Oslo");
        assert!(!predicate_query(leaf("eq", "address.city", Value::from("Oslo"))).matches(&not_a_map));
        assert!(predicate_query(leaf("isNull", "address.city", Value::Nil)).matches(&not_a_map));
    }

    /// Goal: malformed predicates are refused with a message naming the field.
    /// Method: parse one bad node per case and check the message.
    #[test]
    fn malformed_predicates_are_refused() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::from("eq"), "query.predicate must be a predicate map, got \"eq\""),
            (map(&[("attribute", Value::from("n"))]), "query.predicate.op is required"),
            (map(&[("op", Value::from(1))]), "query.predicate.op must be a string, got 1"),
            (map(&[("op", Value::from("and")), ("children", map(&[]))]), "query.predicate.children must be an array"),
            (branch("or", vec![Value::from(5)]), "query.predicate.children[0] must be a predicate map"),
            (map(&[("op", Value::from("eq")), ("value", Value::from(1))]), "query.predicate.attribute is required"),
            (
                map(&[("op", Value::from("eq")), ("attribute", Value::from(3)), ("value", Value::from(1))]),
                "query.predicate.attribute must be a string, got 3",
            ),
            (
                leaf("in", "n", Value::Array(vec![Value::from(1); IN_VALUES_MAX + 1])),
                "query.predicate.value has 10001 values; at most 10000 are allowed",
            ),
            (leaf("containsAny", "n", Value::Array(vec![Value::from(1); IN_VALUES_MAX + 1])), "has 10001 values"),
            (
                branch("and", vec![leaf("regex", "n", Value::from("a".repeat(PATTERN_BYTES_MAX + 1)))]),
                "query.predicate.children[0].value is 1025 bytes long; at most 1024 are allowed",
            ),
            (leaf("like", "n", Value::from("%".repeat(PATTERN_BYTES_MAX + 1))), "is 1025 bytes long"),
            (leaf("eq", &"a".repeat(2_000), Value::Nil), "query.predicate.attribute is 2000 bytes long"),
        ];
        for (node, message) in cases {
            let error = parse_error(node);
            assert!(error.contains(message), "{error:?} should contain {message:?}");
        }
        // An empty attribute is allowed: it names no field, so the leaf is false.
        assert!(!predicate_query(leaf("eq", "", Value::Nil)).matches(&record()));
        // The operand list bound is inclusive.
        let at_bound = leaf("in", "n", Value::Array(vec![Value::from(1); IN_VALUES_MAX]));
        assert!(Query::from_value(&map(&[("predicate", at_bound)])).is_ok());
    }

    /// Goal: nesting is refused one level past `PREDICATE_DEPTH_MAX` and node count one past
    /// `PREDICATE_NODES_MAX`, and both bounds themselves are accepted.
    /// Method: build `not` chains and wide `or`s of exactly those sizes.
    #[test]
    fn tree_size_is_bounded() {
        let chain = |levels: usize| {
            let mut node = leaf("eq", "n", Value::from(1));
            for _ in 1..levels {
                node = branch("not", vec![node]);
            }
            node
        };
        let deepest = predicate_query(chain(PREDICATE_DEPTH_MAX));
        // An odd number of `not`s around a true leaf is false.
        assert_eq!(deepest.matches(&record()), PREDICATE_DEPTH_MAX % 2 == 1);
        assert_eq!(
            Query::from_value(&map(&[("predicate", chain(PREDICATE_DEPTH_MAX + 1))])).unwrap_err(),
            QueryError::PredicateTooDeep { depth_max: PREDICATE_DEPTH_MAX }
        );
        let wide = |nodes: usize| branch("or", vec![leaf("eq", "n", Value::from(1)); nodes - 1]);
        assert!(predicate_query(wide(PREDICATE_NODES_MAX)).matches(&record()));
        assert_eq!(
            Query::from_value(&map(&[("predicate", wide(PREDICATE_NODES_MAX + 1))])).unwrap_err(),
            QueryError::PredicateTooLarge { nodes_max: PREDICATE_NODES_MAX }
        );
    }
}
