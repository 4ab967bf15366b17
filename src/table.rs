//! shardgrid::table: the hash map of the tables that grow with the data — the records of a
//! map, the sync indexes' keys, the disk backend's key index.
//!
//! `griddle::HashMap` resizes incrementally: when it outgrows its table it allocates the
//! larger one and moves a few entries with each later insert, instead of moving every entry
//! inside the one insert that crossed the bound (hashbrown, and so `AHashMap`, does the
//! latter). An all-at-once resize of a table holding a million keys stops its shard for tens
//! of milliseconds, and every request queued behind that insert waits as long; many maps
//! growing together (one per connection, say) stop it again and again. Lookups during a
//! resize probe both tables; iteration sees every entry once.

/// A hash map that never moves all its entries at once (see the module doc).
pub type GrowingMap<K, V> = griddle::HashMap<K, V, ahash::RandomState>;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    // Goal: while a resize is under way (entries in both the old and the new table), lookups,
    // iteration, removal and `retain` see every entry exactly once. Method: grow a map; right
    // after each insert that grew its capacity (the old table then still holds all but a few
    // entries), compare it with a BTreeMap model, retain and remove, and compare again.
    #[test]
    fn a_map_mid_resize_behaves_like_a_map() {
        let mut map: GrowingMap<String, u64> = GrowingMap::default();
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        let mut capacity = map.capacity();
        let mut checks_mid_resize = 0;
        for key in 0..20_000u64 {
            map.insert(format!("k{key}"), key);
            model.insert(format!("k{key}"), key);
            if map.capacity() > capacity && map.len() > 64 {
                let seen: BTreeMap<String, u64> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(seen, model, "iteration after {key} inserts");
                assert!(model.iter().all(|(k, v)| map.get(k) == Some(v)), "lookups after {key} inserts");
                map.retain(|_, value| *value % 3 != 0);
                model.retain(|_, value| *value % 3 != 0);
                let victim = format!("k{}", key - 1);
                assert_eq!(map.remove(&victim), model.remove(&victim));
                assert_eq!(map.len(), model.len());
                let seen: BTreeMap<String, u64> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
                assert_eq!(seen, model, "iteration after retain at {key} inserts");
                checks_mid_resize += 1;
            }
            capacity = map.capacity();
        }
        let seen: BTreeMap<String, u64> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(seen, model);
        assert!(checks_mid_resize >= 5, "{checks_mid_resize} resizes checked");
    }
}
