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
