//! shardgrid::shard: what one shard does, without IO. `data` holds the records a shard owns and
//! applies ops to them; `interest` tracks which connections and shards want which maps' events;
//! `sync` keeps the Merkle leaf sums and the arrival-ordered change index that sync reads.
//! The glommio tasks that drive these live in `node`.

pub mod data;
pub mod interest;
pub mod sync;

pub use data::{Change, ChangeEvent, MergeRejection, MergedWrite, OpOutcome, Row, ShardData};
pub use interest::{ConnId, ConnRef, Interest};

#[cfg(test)]
mod simulation;
