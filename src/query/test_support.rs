//! shardgrid::query::test_support: builders for wire values and a seeded PRNG, shared by the
//! query engine's unit tests. Test-only.

use rmpv::Value;

use crate::query::Query;

/// A wire map with string keys, in the given order.
pub(crate) fn map(entries: &[(&str, Value)]) -> Value {
    Value::Map(entries.iter().map(|(key, value)| (Value::from(*key), value.clone())).collect())
}

pub(crate) fn array(items: &[Value]) -> Value {
    Value::Array(items.to_vec())
}

/// A leaf PredicateNode `{op, attribute, value}`.
pub(crate) fn leaf(op: &str, attribute: &str, value: Value) -> Value {
    map(&[("op", Value::from(op)), ("attribute", Value::from(attribute)), ("value", value)])
}

/// A logical PredicateNode `{op, children}`.
pub(crate) fn branch(op: &str, children: Vec<Value>) -> Value {
    map(&[("op", Value::from(op)), ("children", Value::Array(children))])
}

/// Parses `{predicate: node}`, which must succeed.
pub(crate) fn predicate_query(node: Value) -> Query {
    Query::from_value(&map(&[("predicate", node)])).expect("test predicate parses")
}

/// xorshift64*: tiny, seeded, and the same on every platform, so a failing seed replays.
pub(crate) struct Prng(u64);

impl Prng {
    pub(crate) fn from_seed(seed: u64) -> Self {
        // A zero state would stay zero; any fixed odd offset avoids it.
        Prng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..bound` for tests; `bound` must be positive.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }

    pub(crate) fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for index in (1..items.len()).rev() {
            let other = self.below(index as u64 + 1) as usize;
            items.swap(index, other);
        }
    }
}
