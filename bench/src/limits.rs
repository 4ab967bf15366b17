//! Every bound of the load generator, in one place.

/// Registered io_uring buffer memory per generator thread. Locked memory: keep it small so
/// the generator and a server on the same machine fit in `ulimit -l` together.
pub const IO_MEMORY_BYTES: usize = 512 * 1024;
/// io_uring entries per generator thread.
pub const RING_DEPTH: usize = 256;

/// Connections one generator thread sets up at once (so a large `--conns` does not overflow
/// the server's listen backlog before the run starts). `connect-storm` ignores it on purpose.
pub const SETUP_CONCURRENCY_MAX: usize = 64;
/// Time a connection has for TCP connect, WebSocket upgrade, authentication and its
/// scenario's setup (QUERY_SUB or TOPIC_SUB).
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Time every generator thread has to finish setting up before the run is abandoned.
pub const SETUP_TIMEOUT_MS: u64 = 120_000;
/// PING interval per connection, as the stock client (servers close connections that stop
/// pinging, PROTOCOL.md §1.2).
pub const HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// After the measured window, time allowed for replies to requests still in flight; what is
/// still unanswered then counts as an error.
pub const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// Subscribers keep reading this long after the last writer has its replies, for deliveries
/// still on their way.
pub const DELIVERY_GRACE_MS: u64 = 200;
/// How often a subscriber looks at whether the writers are done.
pub const STOP_POLL_INTERVAL_MS: u64 = 20;
/// Time allowed for a WebSocket close (ours sent, the server's echo read).
pub const CLOSE_TIMEOUT_MS: u64 = 1_000;
/// How often the progress line is printed.
pub const PROGRESS_INTERVAL_MS: u64 = 1_000;

/// Requests one connection sends back to back before it yields to the other tasks of its
/// thread (readers included), so a connection with a backlog cannot starve them.
pub const SENDS_BEFORE_YIELD_MAX: u32 = 16;

/// Default in-flight window per connection in open loop (`--rate` without `--inflight`).
pub const OPEN_LOOP_WINDOW_DEFAULT: usize = 1_024;
/// Largest `--inflight`.
pub const WINDOW_MAX: usize = 65_536;
/// Largest `--batch`.
pub const BATCH_OPS_MAX: u32 = 100_000;
/// Largest `--value-bytes`.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Largest number of connections of one run.
pub const CONNS_MAX: usize = 1_000_000;
/// Largest `--rounds` of connect-storm.
pub const ROUNDS_MAX: u32 = 10_000;

/// Distinct error kinds kept per row; further kinds are counted as "other".
pub const ERROR_KINDS_MAX: usize = 64;
/// Bytes of server-supplied text (ERROR messages, close reasons) kept in an error kind.
pub const ERROR_TEXT_BYTES_MAX: usize = 120;

const _: () = assert!(OPEN_LOOP_WINDOW_DEFAULT <= WINDOW_MAX);
const _: () = assert!(STOP_POLL_INTERVAL_MS < DELIVERY_GRACE_MS);
