//! Interest in maps (DECISIONS §3.1): which connections want `SERVER_EVENT`s for a map, and —
//! on every shard, for every map — which shards have such connections, so an owner sends a
//! change only to the shards that will deliver it.
//!
//! Each shard keeps both halves: `local` for its own connections, `shards` for the whole node.
//! A shard announces itself to every shard when its first local connection becomes interested
//! in a map and withdraws when its last one closes; the mesh's per-pair FIFO order keeps those
//! announcements ahead of any request the same connection sends afterwards.

use ahash::{AHashMap, AHashSet};
use std::sync::Arc;

use shardgrid_shards::ShardId;

/// A connection, numbered by its shard (unique on that shard for the life of the process).
pub type ConnId = u64;

/// A connection anywhere on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub shard: ShardId,
    pub conn: ConnId,
}

/// What a change in local interest means for the rest of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// The first local connection became interested: tell every shard.
    Start,
    /// The last local connection left: tell every shard.
    Stop,
    Nothing,
}

/// See the module doc. Lives on every shard.
#[derive(Default)]
pub struct Interest {
    local: AHashMap<Arc<str>, AHashSet<ConnId>>,
    shards: AHashMap<Arc<str>, Vec<ShardId>>,
}

impl Interest {
    /// Marks `conn` interested in `map`.
    pub fn add_local(&mut self, map: &Arc<str>, conn: ConnId) -> Announce {
        let conns = self.local.entry(Arc::clone(map)).or_default();
        let first = conns.is_empty();
        if conns.insert(conn) && first {
            Announce::Start
        } else {
            Announce::Nothing
        }
    }

    /// Removes `conn`'s interest in `map` (on close).
    pub fn remove_local(&mut self, map: &str, conn: ConnId) -> Announce {
        let Some(conns) = self.local.get_mut(map) else { return Announce::Nothing };
        if conns.remove(&conn) && conns.is_empty() {
            self.local.remove(map);
            return Announce::Stop;
        }
        Announce::Nothing
    }

    /// Local connections interested in `map`.
    pub fn local_conns(&self, map: &str) -> impl Iterator<Item = ConnId> + '_ {
        self.local.get(map).into_iter().flat_map(|conns| conns.iter().copied())
    }

    /// Records that `shard` has (or no longer has) connections interested in `map`.
    pub fn set_shard(&mut self, map: &Arc<str>, shard: ShardId, interested: bool) {
        let shards = self.shards.entry(Arc::clone(map)).or_default();
        match (shards.binary_search(&shard), interested) {
            (Err(position), true) => shards.insert(position, shard),
            (Ok(position), false) => {
                shards.remove(position);
            }
            _ => {}
        }
        if shards.is_empty() {
            self.shards.remove(map);
        }
    }

    /// Shards with connections interested in `map`, ascending.
    pub fn shards(&self, map: &str) -> &[ShardId] {
        self.shards.get(map).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn local_map_count(&self) -> usize {
        self.local.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only the first interested connection and the last leaving one are announced.
    #[test]
    fn announces_edges_only() {
        let mut interest = Interest::default();
        let map: Arc<str> = Arc::from("todos");
        assert_eq!(interest.add_local(&map, 1), Announce::Start);
        assert_eq!(interest.add_local(&map, 2), Announce::Nothing);
        assert_eq!(interest.add_local(&map, 2), Announce::Nothing);
        assert_eq!(interest.remove_local("todos", 1), Announce::Nothing);
        assert_eq!(interest.remove_local("todos", 9), Announce::Nothing);
        assert_eq!(interest.remove_local("todos", 2), Announce::Stop);
        assert_eq!(interest.local_conns("todos").count(), 0);
    }

    // The shard list stays sorted and duplicate-free, and empties away.
    #[test]
    fn tracks_shards() {
        let mut interest = Interest::default();
        let map: Arc<str> = Arc::from("m");
        interest.set_shard(&map, ShardId(2), true);
        interest.set_shard(&map, ShardId(0), true);
        interest.set_shard(&map, ShardId(2), true);
        assert_eq!(interest.shards("m"), &[ShardId(0), ShardId(2)]);
        interest.set_shard(&map, ShardId(0), false);
        interest.set_shard(&map, ShardId(2), false);
        assert!(interest.shards("m").is_empty());
    }
}
