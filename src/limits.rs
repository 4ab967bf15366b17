//! shardgrid::limits: every bound in the server, so the whole budget can be reviewed at once.
//! Bounds a user may want to change are CLI options whose defaults live here.

/// Default for `--max-frame-bytes`: the largest WebSocket message accepted.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 16 * 1024 * 1024;
/// Frames up to this size are always accepted (DECISIONS §5); `--max-frame-bytes` may not go lower.
pub const FRAME_BYTES_FLOOR: usize = 2 * 1024 * 1024;
/// msgpack nesting deeper than this is malformed (DECISIONS §5, PROTOCOL §1.1).
pub const NESTING_DEPTH_MAX: usize = 256;
/// Inner messages of one inbound `BATCH` envelope (PROTOCOL §1.2).
pub const BATCH_ITEMS_MAX: usize = 8_192;
/// Ops of one `OP_BATCH`.
pub const OPS_PER_BATCH_MAX: usize = 10_000;

/// Bytes of the HTTP request head (request line and headers).
pub const HTTP_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Headers of one HTTP request.
pub const HTTP_HEADERS_MAX: usize = 64;
/// Milliseconds a client has to send a complete HTTP request head (slowloris bound).
pub const HTTP_HEAD_TIMEOUT_MS: u64 = 10_000;
/// Bytes of an HTTP request body (`POST /sync`).
pub const HTTP_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Default for `--auth-timeout-ms`: time from connect to a successful `AUTH` (PROTOCOL §1.2).
pub const AUTH_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default for `--idle-timeout-ms`: time without a `PING` before the server closes (PROTOCOL §1.2).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How often each shard sweeps its connections for auth and idle timeouts.
pub const TIMEOUT_SWEEP_INTERVAL_MS: u64 = 250;
/// Default for `--outbound-queue-bytes`: bytes queued toward one connection before it is closed
/// as a slow consumer.
pub const OUTBOUND_QUEUE_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Frames queued toward one connection before it is closed as a slow consumer.
pub const OUTBOUND_QUEUE_FRAMES_MAX: usize = 65_536;
/// Default for `--max-connections-per-shard`.
pub const CONNECTIONS_PER_SHARD_DEFAULT: usize = 50_000;
/// Time the server gives connections to drain on shutdown before it exits anyway.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;

/// Messages queued toward one peer shard before the sender waits.
pub const PEER_QUEUE_DEPTH: usize = 1_024;
/// Default registered io_uring buffer memory per shard (`--io-memory-kib`); locked memory.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 512 * 1024;
/// Default io_uring ring entries per shard.
pub const RING_DEPTH_DEFAULT: usize = 128;

/// A client timestamp more than this far ahead of the shard's clock is rejected (DECISIONS §1.8).
pub const CLOCK_DRIFT_MS_MAX: u64 = 60_000;

/// Query snapshot rows gathered per query (PROTOCOL §6.9 reference cap).
pub const QUERY_SNAPSHOT_ROWS_MAX: usize = 10_000;
/// Default for `--max-value-bytes`: one record value, encoded.
pub const VALUE_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Default for `--rate-limit-ops`: sustained ops per second per connection (PROTOCOL §1.2).
pub const RATE_OPS_PER_SECOND_DEFAULT: u64 = 20_000;
/// A connection may burst this many seconds' worth of its rate.
pub const RATE_BURST_SECONDS: u64 = 2;
/// Default for `--max-subscriptions-per-connection`: live queries and searches per connection.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 1_024;
/// Length of a map name, in bytes.
pub const MAP_NAME_BYTES_MAX: usize = 1_024;
/// Length of a record key, in bytes.
pub const KEY_BYTES_MAX: usize = 4_096;

const _: () = assert!(FRAME_BYTES_FLOOR <= FRAME_BYTES_MAX_DEFAULT);
const _: () = assert!(PEER_QUEUE_DEPTH.is_power_of_two());
const _: () = assert!(TIMEOUT_SWEEP_INTERVAL_MS < AUTH_TIMEOUT_MS_DEFAULT);
