//! The sync side of a shard at run time: the mesh requests that Merkle sync and HTTP sync send
//! to every shard or to owners (`SyncHop`), and the operations the connection's shard builds
//! from them — a map's complete leaves (every shard's leaf sums added up), a leaf's records,
//! OR-map entries, the holders of tags, the changes since a point — plus the chunked rebuild of
//! the sync indexes.
//!
//! Leaves meet on demand: the connection's shard gathers them from every shard for each
//! `SYNC_INIT` and bucket request, rather than owners streaming leaf deltas to a per-map shard
//! on every write (ARCHITECTURE.md, "Merkle sync", says why and what it costs). Every call goes
//! from the connection's shard to owners, which answer from their own data without sending
//! anything further, so the DAG of cross-shard calls holds.

use std::sync::Arc;

use shardgrid_shards::ShardId;

use super::{wall_ms, Hop, HopReply, Node};
use crate::limits::SYNC_REBUILD_KEYS_PER_STEP;
use crate::merkle::{add_leaves, BucketPath, LeafIndex, LeafSum};
use crate::model::{LwwRecord, Timestamp};
use crate::protocol::OrMapEntry;
use crate::query::{Query, ResolvedCursor};
use crate::shard::sync::{merge_deltas, ArrivalPoint, DeltaBudget, MergedDeltas, ShardDeltas, TreeKind};
use crate::shard::{ConnId, Row};

/// Connection ids start at 1 (`Node::open_conn`), so 0 names no connection: the writer of a
/// write that came over HTTP, from whom no one is to be spared an event.
pub const NO_CONNECTION: ConnId = 0;

/// A sync request to one shard. Every variant is answered.
pub enum SyncHop {
    /// This shard's leaf sums of `map` under `path`. Replies `Leaves`.
    Leaves { map: Arc<str>, kind: TreeKind, path: BucketPath },
    /// The LWW records this shard holds in `leaf`. Replies `Records`.
    LwwLeaf { map: Arc<str>, leaf: LeafIndex },
    /// The OR entries of the keys this shard holds in `leaf`. Replies `Entries`.
    OrLeaf { map: Arc<str>, leaf: LeafIndex },
    /// The OR entries of `keys`, all owned by this shard. Replies `Entries`.
    OrEntries { map: Arc<str>, keys: Vec<String> },
    /// Which of `tags` this shard holds as visible OR records. Replies `TagHolders`.
    TagHolders { map: Arc<str>, tags: Arc<Vec<String>> },
    /// The LWW changes that arrived on this shard after `after`. Replies `Changes`.
    Changes { map: Arc<str>, after: ArrivalPoint, budget: DeltaBudget },
}

pub enum SyncReply {
    Leaves(Option<Vec<LeafSum>>),
    Records(Vec<(String, LwwRecord)>),
    Entries(Vec<OrMapEntry>),
    TagHolders(Vec<(String, String)>),
    Changes(ShardDeltas),
}

impl Node {
    /// Answers one sync request from this shard's data. Never sends to the mesh.
    pub(super) fn handle_sync(&self, hop: SyncHop) -> SyncReply {
        match hop {
            SyncHop::Leaves { map, kind, path } => {
                SyncReply::Leaves(self.data.borrow().merkle_leaves(&map, kind, path))
            }
            SyncHop::LwwLeaf { map, leaf } => SyncReply::Records(self.data.borrow().lww_leaf_records(&map, leaf)),
            SyncHop::OrLeaf { map, leaf } => SyncReply::Entries(self.data.borrow().or_leaf_entries(&map, leaf)),
            SyncHop::OrEntries { map, keys } => SyncReply::Entries(self.data.borrow().or_entries(&map, &keys)),
            SyncHop::TagHolders { map, tags } => SyncReply::TagHolders(self.data.borrow().or_tag_holders(&map, &tags)),
            SyncHop::Changes { map, after, budget } => {
                let shard = self.shard.0;
                SyncReply::Changes(self.data.borrow_mut().lww_changes_after(&map, after, shard, budget, wall_ms()))
            }
        }
    }

    /// Sends a request made by `make` to every shard at once and returns the replies in shard order.
    async fn ask_every_shard(&self, make: impl Fn() -> SyncHop) -> Vec<SyncReply> {
        let calls: Vec<_> =
            (0..self.shard_count()).map(|shard| self.mesh.call(ShardId(shard as u16), Hop::Sync(make()))).collect();
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|reply| match reply {
                HopReply::Sync(reply) => reply,
                _ => unreachable!("a sync hop is answered with a sync reply"),
            })
            .collect()
    }

    /// The complete leaves of `map` under `path`, one per leaf in order: every shard's leaf
    /// sums added up.
    pub async fn merkle_leaves(&self, map: &Arc<str>, kind: TreeKind, path: BucketPath) -> Vec<LeafSum> {
        let mut total = vec![LeafSum::default(); path.leaves().len()];
        for reply in self.ask_every_shard(|| SyncHop::Leaves { map: Arc::clone(map), kind, path }).await {
            let SyncReply::Leaves(part) = reply else { unreachable!("Leaves is answered with Leaves") };
            if let Some(part) = part {
                add_leaves(&mut total, &part);
            }
        }
        total
    }

    /// Every record of LWW map `map` in `leaf`, from whichever shards own its keys, by key.
    pub async fn lww_leaf_records(&self, map: &Arc<str>, leaf: LeafIndex) -> Vec<(String, LwwRecord)> {
        let mut records = Vec::new();
        for reply in self.ask_every_shard(|| SyncHop::LwwLeaf { map: Arc::clone(map), leaf }).await {
            let SyncReply::Records(part) = reply else { unreachable!("LwwLeaf is answered with Records") };
            records.extend(part);
        }
        records.sort_unstable_by(|left, right| left.0.cmp(&right.0));
        records
    }

    /// The OR entries of every key of `map` in `leaf`, by key.
    pub async fn or_leaf_entries(&self, map: &Arc<str>, leaf: LeafIndex) -> Vec<OrMapEntry> {
        let mut entries = Vec::new();
        for reply in self.ask_every_shard(|| SyncHop::OrLeaf { map: Arc::clone(map), leaf }).await {
            let SyncReply::Entries(part) = reply else { unreachable!("OrLeaf is answered with Entries") };
            entries.extend(part);
        }
        entries.sort_unstable_by(|left, right| left.key.cmp(&right.key));
        entries
    }

    /// The OR entries of `keys` (in their order), each asked of its owner.
    pub async fn or_entries(&self, map: &Arc<str>, keys: Vec<String>) -> Vec<OrMapEntry> {
        let key_count = keys.len();
        let mut parts: Vec<(Vec<usize>, Vec<String>)> =
            (0..self.shard_count()).map(|_| (Vec::new(), Vec::new())).collect();
        for (position, key) in keys.into_iter().enumerate() {
            let owner = self.owner_of(&key).index();
            parts[owner].0.push(position);
            parts[owner].1.push(key);
        }
        let mut positions = Vec::new();
        let mut calls = Vec::new();
        for (shard, (indexes, part)) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            positions.push(indexes);
            let hop = Hop::Sync(SyncHop::OrEntries { map: Arc::clone(map), keys: part });
            calls.push(self.mesh.call(ShardId(shard as u16), hop));
        }
        let mut entries: Vec<Option<OrMapEntry>> = (0..key_count).map(|_| None).collect();
        for (indexes, reply) in positions.into_iter().zip(futures_util::future::join_all(calls).await) {
            let HopReply::Sync(SyncReply::Entries(part)) = reply else {
                unreachable!("OrEntries is answered with Entries")
            };
            assert_eq!(indexes.len(), part.len(), "one entry per key");
            for (index, entry) in indexes.into_iter().zip(part) {
                entries[index] = Some(entry);
            }
        }
        entries.into_iter().map(|entry| entry.expect("every key was asked of its owner")).collect()
    }

    /// Which keys of OR map `map` hold visible records with any of `tags`, as `(tag, key)`.
    pub async fn or_tag_holders(&self, map: &Arc<str>, tags: Vec<String>) -> Vec<(String, String)> {
        let tags = Arc::new(tags);
        let mut holders = Vec::new();
        for reply in
            self.ask_every_shard(|| SyncHop::TagHolders { map: Arc::clone(map), tags: Arc::clone(&tags) }).await
        {
            let SyncReply::TagHolders(part) = reply else { unreachable!("TagHolders is answered with TagHolders") };
            holders.extend(part);
        }
        holders
    }

    /// The changes of LWW map `map` after `after` from every shard, in arrival order, within
    /// `budget`, with the point the next request continues from (`shard::sync::merge_deltas`).
    pub async fn lww_changes(&self, map: &Arc<str>, after: ArrivalPoint, budget: DeltaBudget) -> MergedDeltas {
        let parts = self
            .ask_every_shard(|| SyncHop::Changes { map: Arc::clone(map), after, budget })
            .await
            .into_iter()
            .map(|reply| match reply {
                SyncReply::Changes(part) => part,
                _ => unreachable!("Changes is answered with Changes"),
            })
            .collect();
        merge_deltas(parts, budget)
    }

    /// The live rows of LWW map `map` for a one-shot `query` (no subscription): every shard's
    /// best rows, for `Query::select_resolved` to cut the page from.
    pub async fn query_rows(&self, map: &Arc<str>, query: &Arc<Query>, cursor: &Arc<ResolvedCursor>) -> Vec<Row> {
        self.gather(None, map, query, cursor).await.0
    }

    /// This shard's HLC `now`: the server timestamp of sync replies.
    pub fn hlc_now(&self) -> Timestamp {
        self.data.borrow_mut().now(wall_ms())
    }

    /// Rebuilds this shard's sync indexes from its records, `SYNC_REBUILD_KEYS_PER_STEP` keys at
    /// a time, yielding to the shard's other tasks between steps (see `shard::sync::SyncRebuild`
    /// for what sync answers meanwhile). For after records were loaded without `apply`.
    pub async fn rebuild_sync_indexes(&self) {
        let mut rebuild = self.data.borrow().begin_sync_rebuild();
        while !self.data.borrow_mut().sync_rebuild_step(&mut rebuild, SYNC_REBUILD_KEYS_PER_STEP, wall_ms()) {
            futures_lite::future::yield_now().await;
        }
    }
}
