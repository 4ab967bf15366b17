//! shardgrid::scripting: the JavaScript that clients send as entry processors and conflict
//! resolvers (PROTOCOL §4.10, DECISIONS §7.2). `sandbox` runs one call under CPU and memory
//! limits, `convert` carries values between msgpack and JS, `resolvers` keeps the per-map
//! resolver lists. Nothing here touches records, shards or connections.

pub mod convert;
pub mod resolvers;
pub mod sandbox;
