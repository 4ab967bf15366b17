//! shardgrid-shards: the thread-per-core runtime. It parses core sets, pins one glommio executor
//! per core (a *shard*), assigns partitions to shards, and connects the shards with a mesh of
//! bounded queues carrying typed requests and replies.
//!
//! It deliberately knows nothing about maps, queries, topics or the wire protocol: the domain
//! crate gives it message types and a handler, and calls `Mesh::call`/`Mesh::tell`.

pub mod cores;
pub mod mesh;
pub mod partition;
pub mod runtime;

pub use cores::{CoreSet, CoreSetError};
pub use mesh::{Mesh, MeshBuilder, MeshHandler};
pub use partition::{PartitionId, PartitionTable};
pub use runtime::{run_shards, RuntimeConfig, RuntimeError, ShardContext, Shutdown};

/// Index of one shard (one pinned executor), `0..shard_count`. Never a CPU number: the CPU a
/// shard runs on is `CoreSet::cpu_of(shard)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}
