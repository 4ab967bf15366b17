//! shardgrid: a thread-per-core, shared-nothing real-time data grid speaking the TopGun client
//! protocol. See ARCHITECTURE.md for the code map.

pub mod acl;
#[cfg(feature = "mimalloc")]
pub mod allocator;
pub mod auth;
pub mod cli;
pub mod coord;
pub mod crdt;
pub mod endpoints;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod hlc;
pub mod limits;
pub mod live;
pub mod merkle;
pub mod metrics;
pub mod model;
pub mod net;
pub mod node;
pub mod persist;
pub mod protocol;
pub mod query;
pub mod scripting;
pub mod search;
pub mod server;
pub mod session;
pub mod shard;
pub mod table;
