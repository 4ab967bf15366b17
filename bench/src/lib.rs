//! shardgrid-bench: the load generator. It speaks the TopGun client protocol (PROTOCOL.md), so
//! it can be pointed at shardgrid or at any other server that speaks it; nothing
//! shardgrid-specific goes on the wire. It depends on shardgrid for the codec's message-type
//! table only, and on shardgrid-shards for core-list parsing.
//!
//! Scenarios (`cli::Scenario`): put, mixed, fanout, pubsub, connect-storm. Closed loop
//! (`--inflight` requests per connection) or open loop (`--rate`, latency from the intended send
//! time, see `pacing`). Each generator thread is a glommio executor pinned with `--cores` and
//! runs many connections; latencies go into HDR histograms (`stats`), merged into a `Report`
//! printed as a table and written as JSON (`report`).
//!
//! The binary is a thin wrapper around [`run`], so tests drive the same code.

pub mod cli;
pub mod limits;
pub mod pacing;
pub mod report;
pub mod runner;
pub mod stats;
pub mod wire;

pub use cli::{Cli, Scenario};
pub use report::{command_line, Report, Row};
pub use runner::{run, BenchError};
