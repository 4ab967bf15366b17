//! The subscription index on an owner shard: every live query registered on the node, filed by
//! map and, where the query pins an attribute to a value (`where` or a top-level `eq`), by that
//! attribute and value. A write is evaluated only against the subscriptions filed under the
//! old and new values of indexed attributes plus those that pin nothing, so unrelated
//! subscriptions cost a hash lookup per indexed attribute, not an evaluation each.
//!
//! Lives on every shard (each evaluates the writes to the partitions it owns).

use std::sync::Arc;

use ahash::AHashMap;
use rmpv::Value;

use super::{LiveChange, SubKey};
use crate::model::ValueBytes;
use crate::query::{lookup_attribute, Query, ResolvedCursor};

/// A scalar an attribute is pinned to, hashable, with numbers normalised so `1` and `1.0` meet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IndexKey {
    Nil,
    Bool(bool),
    Number(u64),
    Text(Vec<u8>),
}

impl IndexKey {
    /// The key for a value, or `None` for values that are not indexed (arrays, maps, NaN).
    pub fn of(value: &Value) -> Option<IndexKey> {
        let number = match value {
            Value::Nil => return Some(IndexKey::Nil),
            Value::Boolean(flag) => return Some(IndexKey::Bool(*flag)),
            Value::String(text) => return Some(IndexKey::Text(text.as_bytes().to_vec())),
            Value::Integer(integer) => integer.as_f64()?,
            Value::F32(number) => *number as f64,
            Value::F64(number) => *number,
            _ => return None,
        };
        if number.is_nan() {
            return None;
        }
        // -0 and 0 are equal numbers; give them one key. Distinct integers above 2^53 may share
        // a key: the index only narrows candidates, `Query::matches` decides.
        Some(IndexKey::Number(if number == 0.0 { 0 } else { number.to_bits() }))
    }
}

struct Registered {
    query: Arc<Query>,
    cursor: Arc<ResolvedCursor>,
    /// Where it is filed: an (attribute, key) pair, or `None` in the scan list.
    filed_under: Option<(String, IndexKey)>,
}

#[derive(Default)]
struct MapSubscriptions {
    registered: AHashMap<SubKey, Registered>,
    by_attribute: AHashMap<String, AHashMap<IndexKey, Vec<SubKey>>>,
    /// Subscriptions that pin no attribute: evaluated on every write to the map.
    scan: Vec<SubKey>,
}

/// See the module doc.
#[derive(Default)]
pub struct SubscriptionIndex {
    maps: AHashMap<Arc<str>, MapSubscriptions>,
    map_of: AHashMap<SubKey, Arc<str>>,
}

impl SubscriptionIndex {
    pub fn has_map(&self, map: &str) -> bool {
        self.maps.contains_key(map)
    }

    pub fn len(&self) -> usize {
        self.map_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map_of.is_empty()
    }

    /// Registers (or replaces) `sub` on `map`.
    pub fn register(&mut self, sub: SubKey, map: Arc<str>, query: Arc<Query>, cursor: Arc<ResolvedCursor>) {
        self.unregister(sub);
        let filed_under = query
            .equality_terms()
            .into_iter()
            .find_map(|(attribute, value)| IndexKey::of(value).map(|key| (attribute.to_string(), key)));
        let subscriptions = self.maps.entry(Arc::clone(&map)).or_default();
        match &filed_under {
            Some((attribute, key)) => subscriptions
                .by_attribute
                .entry(attribute.clone())
                .or_default()
                .entry(key.clone())
                .or_default()
                .push(sub),
            None => subscriptions.scan.push(sub),
        }
        subscriptions.registered.insert(sub, Registered { query, cursor, filed_under });
        self.map_of.insert(sub, map);
    }

    pub fn unregister(&mut self, sub: SubKey) {
        let Some(map) = self.map_of.remove(&sub) else { return };
        let subscriptions = self.maps.get_mut(&map).expect("a registered map has its entry");
        let registered = subscriptions.registered.remove(&sub).expect("map_of and registered agree");
        match registered.filed_under {
            Some((attribute, key)) => {
                let by_key = subscriptions.by_attribute.get_mut(&attribute).expect("filed attribute exists");
                let subs = by_key.get_mut(&key).expect("filed key exists");
                subs.retain(|filed| *filed != sub);
                if subs.is_empty() {
                    by_key.remove(&key);
                    if by_key.is_empty() {
                        subscriptions.by_attribute.remove(&attribute);
                    }
                }
            }
            None => subscriptions.scan.retain(|filed| *filed != sub),
        }
        if subscriptions.registered.is_empty() {
            self.maps.remove(&map);
        }
    }

    /// Evaluates one write to `key` of `map` (`before`/`after`: the live values before and
    /// after, decoded; `after_bytes`: the new value as stored) and appends one change per
    /// subscription whose view of the key changed.
    pub fn evaluate(
        &self,
        map: &str,
        key: &str,
        before: Option<&Value>,
        after: Option<(&Value, &ValueBytes)>,
        changes: &mut Vec<(SubKey, LiveChange)>,
    ) {
        let Some(subscriptions) = self.maps.get(map) else { return };
        let mut candidates: Vec<SubKey> = subscriptions.scan.clone();
        for (attribute, by_key) in &subscriptions.by_attribute {
            for value in [before, after.map(|(value, _)| value)].into_iter().flatten() {
                let Some(index_key) = lookup_attribute(value, attribute).and_then(IndexKey::of) else { continue };
                if let Some(subs) = by_key.get(&index_key) {
                    candidates.extend_from_slice(subs);
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for sub in candidates {
            let registered = &subscriptions.registered[&sub];
            let shows = |value: &Value| {
                registered.query.matches(value) && registered.query.is_after_cursor(&registered.cursor, key, value)
            };
            let was = before.is_some_and(shows);
            match after {
                Some((value, bytes)) if shows(value) => {
                    changes.push((sub, LiveChange::Upsert { key: key.to_string(), value: bytes.clone() }))
                }
                _ if was => changes.push((sub, LiveChange::Gone { key: key.to_string() })),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgrid_shards::ShardId;

    fn query(value: Value) -> Arc<Query> {
        Arc::new(Query::from_value(&value).unwrap())
    }

    fn row(status: &str) -> Value {
        Value::Map(vec![(Value::from("status"), Value::from(status))])
    }

    fn sub(local: u64) -> SubKey {
        SubKey { shard: ShardId(0), local }
    }

    // Goal: indexed subscriptions see only writes whose old or new value hits their term, scan
    // subscriptions see every write, and a row leaving a match produces Gone.
    // Method: three subscriptions on one map, writes moving a row between statuses.
    #[test]
    fn evaluates_candidates_only() {
        let mut index = SubscriptionIndex::default();
        let map: Arc<str> = Arc::from("tasks");
        let open = query(Value::Map(vec![(Value::from("where"), row("open"))]));
        let cursor = Arc::new(open.resolve_cursor(0));
        index.register(sub(1), Arc::clone(&map), open, Arc::clone(&cursor));
        index.register(
            sub(2),
            Arc::clone(&map),
            query(Value::Map(vec![(Value::from("where"), row("done"))])),
            Arc::clone(&cursor),
        );
        index.register(sub(3), Arc::clone(&map), query(Value::Map(vec![])), Arc::clone(&cursor));
        let bytes = ValueBytes::from(&b"\x81"[..]);
        let mut changes = Vec::new();
        index.evaluate("tasks", "t1", None, Some((&row("open"), &bytes)), &mut changes);
        let subs: Vec<u64> = changes.iter().map(|(sub, _)| sub.local).collect();
        assert_eq!(subs, vec![1, 3]);
        changes.clear();
        index.evaluate("tasks", "t1", Some(&row("open")), Some((&row("done"), &bytes)), &mut changes);
        assert_eq!(changes.len(), 3);
        assert!(matches!(&changes[0], (key, LiveChange::Gone { .. }) if key.local == 1));
        assert!(matches!(&changes[1], (key, LiveChange::Upsert { .. }) if key.local == 2));
        changes.clear();
        index.evaluate("other", "t1", None, Some((&row("open"), &bytes)), &mut changes);
        assert!(changes.is_empty());
        index.unregister(sub(1));
        index.unregister(sub(2));
        index.unregister(sub(3));
        assert!(index.is_empty() && !index.has_map("tasks"));
    }

    // Numbers index across encodings; arrays and maps are not indexed.
    #[test]
    fn index_keys_normalise_numbers() {
        assert_eq!(IndexKey::of(&Value::from(1)), IndexKey::of(&Value::F64(1.0)));
        assert_eq!(IndexKey::of(&Value::F64(-0.0)), IndexKey::of(&Value::from(0)));
        assert_eq!(IndexKey::of(&Value::Array(vec![])), None);
        assert_eq!(IndexKey::of(&Value::F64(f64::NAN)), None);
    }
}
