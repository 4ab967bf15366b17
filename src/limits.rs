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

/// Bytes one read from a WebSocket connection asks for. tungstenite zeroes this much of its
/// read buffer before every read, so its 128 KiB default cost more than the rest of a small
/// frame's handling; a frame larger than this takes several reads.
pub const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

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
/// Default for `--spin-before-park-us`: an idle shard sleeps at once.
pub const SPIN_BEFORE_PARK_US_DEFAULT: u64 = 0;
/// Default for `--preempt-timer-ms` (glommio's own default).
pub const PREEMPT_TIMER_MS_DEFAULT: u64 = 100;
/// Default io_uring ring entries per shard.
pub const RING_DEPTH_DEFAULT: usize = 128;

/// A client timestamp more than this far ahead of the shard's clock is rejected (DECISIONS §1.8).
pub const CLOCK_DRIFT_MS_MAX: u64 = 60_000;

/// Keys one step of a sync-index rebuild walks before the shard yields to other work.
pub const SYNC_REBUILD_KEYS_PER_STEP: usize = 4_096;
/// Record bytes one `SYNC_RESP_LEAF` / `ORMAP_SYNC_RESP_LEAF` / `ORMAP_DIFF_RESPONSE` carries;
/// a bigger answer is split into several messages, which the client merges one by one.
pub const SYNC_REPLY_BYTES_MAX: usize = 1024 * 1024;
/// Keys one `ORMAP_DIFF_REQUEST` may ask for.
pub const SYNC_DIFF_KEYS_MAX: usize = 10_000;
/// `syncMaps` answered per `POST /sync`; further maps get an `errors` entry.
pub const HTTP_SYNC_MAPS_MAX: usize = 64;
/// `queries` answered per `POST /sync`; further queries get an `errors` entry.
pub const HTTP_SYNC_QUERIES_MAX: usize = 64;
/// Delta records one `POST /sync` reply carries over all its maps; the client continues from
/// the reply's `serverSyncTimestamp` with its next request.
pub const HTTP_SYNC_DELTA_RECORDS_MAX: usize = 10_000;
/// Delta record bytes (keys and values) one `POST /sync` reply carries over all its maps.
pub const HTTP_SYNC_DELTA_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Query snapshot rows gathered per query (PROTOCOL §6.9 reference cap).
pub const QUERY_SNAPSHOT_ROWS_MAX: usize = 10_000;
/// Default for `--max-value-bytes`: one record value, encoded. As large as the default frame,
/// so every value a default-sized frame can carry (2 MiB frames are always accepted) is stored.
pub const VALUE_BYTES_MAX_DEFAULT: usize = FRAME_BYTES_MAX_DEFAULT;
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

/// Length of a topic or lock name, in characters of `[A-Za-z0-9_\-.:/]` (PROTOCOL §6.11, §6.12).
pub const COORD_NAME_CHARS_MAX: usize = 256;
/// Length of a counter name, in bytes (the protocol sets no rule; this bounds the table's keys).
pub const COUNTER_NAME_BYTES_MAX: usize = 1_024;
/// Topics one connection may follow at once.
pub const TOPICS_PER_CONNECTION_MAX: usize = 1_024;
/// Counters one connection may be subscribed to (subscriptions last until it closes).
pub const COUNTERS_PER_CONNECTION_MAX: usize = 1_024;
/// Journal subscriptions one connection may hold at once.
pub const JOURNAL_SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 64;

/// Lock names one shard keeps (held, waited on, or idle and remembered for its fencing token).
/// Past it, idle names are forgotten; their tokens stay covered by the table's token floor.
pub const LOCK_NAMES_PER_SHARD_MAX: usize = 65_536;
/// Requests waiting for one lock; a request past it gets `ERROR 429`.
pub const LOCK_WAITERS_PER_LOCK_MAX: usize = 1_024;
/// Locks one connection may hold or wait for on one owner shard at once.
pub const LOCKS_PER_CONNECTION_MAX: usize = 1_024;
/// A waiting `LOCK_REQUEST` gives up `ttl` plus this long after it arrives (DECISIONS §4.1: the
/// client's own timer is `max(ttl + 5000, 5000)` ms).
pub const LOCK_WAIT_GRACE_MS: u64 = 5_000;
/// ...and the server drops it this much earlier, so it never grants a lock to a client whose
/// `lock()` has already returned false (DECISIONS §4.1).
pub const LOCK_WAIT_EARLY_DROP_MS: u64 = 250;
/// How long the coordination timer of an idle shard sleeps before it looks again; a new lease
/// or waiting request that is due sooner wakes it at once.
pub const COORD_TIMER_IDLE_MS: u64 = 1_000;

/// Journal events one shard keeps (PROTOCOL §4.11: the reference keeps 10 000).
pub const JOURNAL_EVENTS_PER_SHARD_MAX: usize = 10_000;
/// Bytes of journal events (values included) one shard keeps; the oldest go first.
pub const JOURNAL_BYTES_PER_SHARD_MAX: usize = 64 * 1024 * 1024;
/// `JOURNAL_READ.limit` when the client sends none (PROTOCOL §4.11).
pub const JOURNAL_READ_LIMIT_DEFAULT: usize = 100;
/// The most events one `JOURNAL_READ_RESPONSE` carries, whatever `limit` asks.
pub const JOURNAL_READ_LIMIT_MAX: usize = 1_000;

const _: () = assert!(LOCK_WAIT_EARLY_DROP_MS < LOCK_WAIT_GRACE_MS);
const _: () = assert!(JOURNAL_READ_LIMIT_DEFAULT <= JOURNAL_READ_LIMIT_MAX);

/// Default for `--processor-cpu-ms`: time one entry-processor or resolver call may run before
/// the engine interrupts it (DECISIONS §7.2: well inside the client's 30 s timeout).
pub const PROCESSOR_CPU_MS_DEFAULT: u64 = 1_000;
/// Default for `--processor-memory-mib`: the script engine's heap during one call.
pub const PROCESSOR_MEMORY_MIB_DEFAULT: usize = 32;
/// The smallest `--processor-memory-mib`: below it the engine cannot even set up a call.
pub const PROCESSOR_MEMORY_MIB_MIN: usize = 4;
/// Native stack the script engine may use (deep JS recursion ends in a RangeError first).
pub const SCRIPT_STACK_BYTES_MAX: usize = 256 * 1024;
/// Bytes of a script's error text sent back or logged (a thrown string can be any size).
pub const SCRIPT_ERROR_BYTES_MAX: usize = 1_024;
/// Bytes the script engine may still hold after a failed call and a garbage collection before
/// it is dropped and rebuilt (an idle engine holds a few hundred KiB).
pub const SCRIPT_RESET_BYTES: usize = 2 * 1024 * 1024;
/// Length of a processor's or resolver's `name`, in UTF-16 units as JS counts (PROTOCOL §4.10).
pub const SCRIPT_NAME_CHARS_MAX: usize = 100;
/// Length of an entry processor's `code` (PROTOCOL §4.10).
pub const PROCESSOR_CODE_CHARS_MAX: usize = 10_000;
/// Length of a conflict resolver's `code` (PROTOCOL §4.10).
pub const RESOLVER_CODE_CHARS_MAX: usize = 50_000;
/// Keys of one `ENTRY_PROCESS_BATCH`.
pub const PROCESS_BATCH_KEYS_MAX: usize = 1_000;
/// The keys of one `ENTRY_PROCESS_BATCH` on one owner shard share this many calls' worth of
/// CPU time, so a slow processor over many keys cannot hold a shard for minutes; keys past the
/// budget fail.
pub const PROCESS_BATCH_BUDGET_CALLS: u32 = 5;
/// Times a processor runs on one key when the entry keeps changing between its read and its
/// write (possible only while storage back-pressure makes the write wait).
pub const PROCESS_ATTEMPTS_MAX: usize = 3;
/// Resolvers registered on one map (the TopGun server's cap).
pub const RESOLVERS_PER_MAP_MAX: usize = 100;
/// Resolvers registered over all maps. Every shard keeps a copy of each.
pub const RESOLVERS_MAX: usize = 1_024;
/// Length of a resolver's `keyPattern`, in bytes.
pub const RESOLVER_KEY_PATTERN_BYTES_MAX: usize = 1_024;

const _: () = assert!(PROCESSOR_MEMORY_MIB_MIN <= PROCESSOR_MEMORY_MIB_DEFAULT);
const _: () = assert!(RESOLVERS_PER_MAP_MAX <= RESOLVERS_MAX);

/// Default for `--segment-bytes`: the size of one preallocated segment file of a shard's log.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Under `--fsync never`, how often appended records are written to the OS.
pub const FSYNC_NEVER_WRITE_INTERVAL_MS: u64 = 2;
/// Unwritten log bytes that make the flusher write at once instead of waiting for its timer.
pub const LOG_FLUSH_BYTES: u64 = 1024 * 1024;
/// Unwritten log bytes past which writers on the shard wait for the flusher (back-pressure on
/// a disk slower than the writes).
pub const LOG_BUFFER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// After a segment could not be created for lack of space, how long the flusher waits before
/// it tries again (writes are refused meanwhile).
pub const STORAGE_RETRY_MS: u64 = 1_000;
/// How often each shard's compaction task runs one step.
pub const COMPACTION_TICK_MS: u64 = 10;
/// Bytes of a victim segment one compaction step reads (the IO bound per tick).
pub const COMPACTION_BYTES_PER_TICK: u64 = 1024 * 1024;
/// Default for `--compaction-live-fraction`: a sealed segment is rewritten once the bytes
/// worth keeping in it fall below this fraction of its size.
pub const COMPACTION_LIVE_FRACTION_DEFAULT: f64 = 0.5;
/// Default for `--tombstone-grace-ms`: tombstones younger than this are kept on disk.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

const _: () = assert!(LOG_FLUSH_BYTES < LOG_BUFFER_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_DEFAULT % 4096 == 0);
