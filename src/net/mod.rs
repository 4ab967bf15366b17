//! shardgrid::net: the per-shard network edge — HTTP request heads, WebSocket upgrades, and the
//! outbox that holds frames for one connection. What a message means is decided in `session`.

pub mod http;
pub mod outbox;
