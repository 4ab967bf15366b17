//! shardgrid::cli: the command line (clap) and its translation into a checked `Config`. Flags
//! and environment variables follow the TopGun server's where they overlap (`--port`/`PORT`,
//! `JWT_SECRET`, `STORAGE_BACKEND=null`, `TOPGUN_NO_AUTH`), so its tooling can start shardgrid.

use std::net::IpAddr;
use std::path::PathBuf;

use std::sync::Arc;

use clap::Parser;
use shardgrid_shards::CoreSet;

use crate::acl::{Acl, Policy};
use crate::limits;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shardgrid",
    version,
    about = "A thread-per-core real-time data grid speaking the TopGun client protocol"
)]
pub struct Args {
    /// CPUs to run shards on, one shard per CPU: a list of numbers and ranges like `0-3,6`.
    /// Default: every CPU this process may use.
    #[arg(long, conflicts_with = "core_mask")]
    pub cores: Option<String>,

    /// CPUs to run shards on as a hexadecimal mask (bit n = CPU n), like `0x4f`.
    #[arg(long)]
    pub core_mask: Option<String>,

    /// TCP port for WebSocket and HTTP. 0 picks a free port; the chosen port is printed on
    /// stdout as `PORT=<n>` once every shard listens.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// This node's id ([a-z0-9]+), used in server timestamps and the partition map.
    /// Default: derived from the host name.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// HS256 secret that client JWTs are signed with.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, conflicts_with = "jwt_secret_file")]
    pub jwt_secret: Option<String>,

    /// A file holding the HS256 secret (surrounding whitespace is ignored), so the secret stays
    /// out of the process list.
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Access-control file (TOML): which JWT roles may read, write, remove, subscribe, publish,
    /// lock or administer which maps, topics, locks and counters. Without it, every
    /// authenticated connection may do everything. Format: README.md, "Access control".
    #[arg(long)]
    pub acl: Option<PathBuf>,

    /// Development mode: accept every connection without a token (an `AUTH` is still answered
    /// with `AUTH_ACK`). Also enabled by TOPGUN_NO_AUTH=1.
    #[arg(long)]
    pub no_auth: bool,

    /// Storage backend: `disk` (default: a durable log per shard under --data-dir) or `memory`
    /// (nothing survives a restart). The environment STORAGE_BACKEND=null also selects memory.
    #[arg(long, value_parser = ["memory", "disk"])]
    pub storage: Option<String>,

    /// Directory for durable storage (used by the disk backend).
    #[arg(long, env = "DATA_DIR", default_value = "./shardgrid-data")]
    pub data_dir: PathBuf,

    /// When the disk backend fdatasyncs: `always` (every group commit), `batch:<ms>` (every
    /// <ms>, and at once when a PERSISTED write waits) or `never` (the OS decides; nothing is
    /// acknowledged as PERSISTED). See tuning.md for the loss window of each.
    #[arg(long, default_value = "batch:2")]
    pub fsync: String,

    /// At start-up, cut a shard's log at a corrupt record in its middle (discarding the records
    /// after it) instead of refusing to start.
    #[arg(long)]
    pub repair: bool,

    /// Size of each preallocated segment file of a shard's log, in bytes (multiple of 4096,
    /// at least 64 KiB). The largest record a segment holds bounds the largest value stored.
    #[arg(long, default_value_t = limits::SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,

    /// How segment files are written: `buffered` or `dma` (O_DIRECT). See tuning.md.
    #[arg(long, value_parser = ["buffered", "dma"], default_value = "buffered")]
    pub storage_io: String,

    /// Rewrite a sealed segment once the bytes worth keeping in it fall below this fraction.
    #[arg(long, default_value_t = limits::COMPACTION_LIVE_FRACTION_DEFAULT)]
    pub compaction_live_fraction: f64,

    /// Milliseconds a tombstone is kept on disk after its timestamp; compaction drops older
    /// ones (a write older than a dropped tombstone is accepted again).
    #[arg(long, default_value_t = limits::TOMBSTONE_GRACE_MS_DEFAULT)]
    pub tombstone_grace_ms: u64,

    /// Largest WebSocket message accepted, in bytes (at least 2 MiB); larger ones close the
    /// connection with 1009 "message too big".
    #[arg(long, default_value_t = limits::FRAME_BYTES_MAX_DEFAULT)]
    pub max_frame_bytes: usize,

    /// Deepest msgpack nesting accepted in a message.
    #[arg(long, default_value_t = limits::NESTING_DEPTH_MAX)]
    pub max_nesting_depth: usize,

    /// Milliseconds a connection has to authenticate before it is closed.
    #[arg(long, default_value_t = limits::AUTH_TIMEOUT_MS_DEFAULT)]
    pub auth_timeout_ms: u64,

    /// Milliseconds without a PING after which a connection is closed.
    #[arg(long, default_value_t = limits::IDLE_TIMEOUT_MS_DEFAULT)]
    pub idle_timeout_ms: u64,

    /// Bytes queued toward one connection before it is closed as a slow consumer.
    #[arg(long, default_value_t = limits::OUTBOUND_QUEUE_BYTES_DEFAULT)]
    pub outbound_queue_bytes: usize,

    /// Connections one shard accepts at once; further ones are refused.
    #[arg(long, default_value_t = limits::CONNECTIONS_PER_SHARD_DEFAULT)]
    pub max_connections_per_shard: usize,

    /// Connections the whole server accepts at once, split evenly over the shards (each shard
    /// takes at most this divided by the shard count, rounded up, and at most
    /// --max-connections-per-shard).
    #[arg(long)]
    pub max_connections: Option<usize>,

    /// Ops one OP_BATCH may carry; a larger batch gets ERROR 413 and nothing is applied.
    #[arg(long, default_value_t = limits::OPS_PER_BATCH_MAX)]
    pub max_ops_per_batch: usize,

    /// Bytes of one record value; a larger value's op is rejected with OP_REJECTED 413.
    #[arg(long, default_value_t = limits::VALUE_BYTES_MAX_DEFAULT)]
    pub max_value_bytes: usize,

    /// Live queries and searches one connection may hold.
    #[arg(long, default_value_t = limits::SUBSCRIPTIONS_PER_CONNECTION_MAX)]
    pub max_subscriptions_per_connection: usize,

    /// Sustained ops per second one connection may send (an OP_BATCH costs its op count, any
    /// other message 1); bursts up to twice this. Over it: ERROR 429 and the message is dropped.
    #[arg(long, default_value_t = limits::RATE_OPS_PER_SECOND_DEFAULT)]
    pub rate_limit_ops: u64,

    /// KiB of registered io_uring buffer memory per shard. This is locked memory: the total over
    /// all shards must fit in `ulimit -l` (see tuning.md).
    #[arg(long, default_value_t = limits::IO_MEMORY_BYTES_DEFAULT / 1024)]
    pub io_memory_kib: usize,

    /// Microseconds an idle shard keeps polling before it sleeps in the kernel; a request that
    /// arrives meanwhile is picked up without a wake-up (lower latency at low load, at the cost
    /// of that much CPU after each burst). 0: sleep at once. See tuning.md.
    #[arg(long, default_value_t = limits::SPIN_BEFORE_PARK_US_DEFAULT)]
    pub spin_before_park_us: u64,

    /// Milliseconds one of a shard's task queues may run before the others get their turn.
    #[arg(long, default_value_t = limits::PREEMPT_TIMER_MS_DEFAULT)]
    pub preempt_timer_ms: u64,

    /// Milliseconds one entry-processor or conflict-resolver call may run before it is stopped
    /// (the script fails with a CPU-limit error; the shard keeps serving).
    #[arg(long, default_value_t = limits::PROCESSOR_CPU_MS_DEFAULT)]
    pub processor_cpu_ms: u64,

    /// MiB of memory one entry-processor or conflict-resolver call may use (at least 4).
    #[arg(long, default_value_t = limits::PROCESSOR_MEMORY_MIB_DEFAULT)]
    pub processor_memory_mib: usize,
}

/// How a client proves who it is.
#[derive(Clone, Debug)]
pub enum AuthMode {
    Jwt { secret: String },
    NoAuth,
}

#[derive(Clone, Debug)]
pub enum StorageMode {
    Memory,
    Disk(crate::persist::DiskConfig),
}

/// The checked configuration the server is assembled from.
#[derive(Clone, Debug)]
pub struct Config {
    pub cores: CoreSet,
    pub host: IpAddr,
    pub port: u16,
    pub node_id: String,
    pub auth: AuthMode,
    pub storage: StorageMode,
    pub data_dir: PathBuf,
    pub max_frame_bytes: usize,
    pub max_nesting_depth: usize,
    pub auth_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub outbound_queue_bytes: usize,
    pub max_connections_per_shard: usize,
    pub max_ops_per_batch: usize,
    pub max_value_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    pub rate_limit_ops: u64,
    pub io_memory_bytes: usize,
    pub spin_before_park_us: u64,
    pub preempt_timer_ms: u64,
    /// What one entry-processor or resolver call may use (`--processor-cpu-ms`,
    /// `--processor-memory-mib`).
    pub script_limits: crate::scripting::sandbox::Limits,
    pub policy: Arc<Policy>,
}

/// A configuration the server refuses to start with; the CLI prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cores/--core-mask: {0}")]
    Cores(#[from] shardgrid_shards::CoreSetError),
    #[error("no JWT secret: set --jwt-secret (or JWT_SECRET), or pass --no-auth for development")]
    NoSecret,
    #[error("--fsync must be always, never or batch:<ms> with ms > 0, got {0:?}")]
    BadFsync(String),
    #[error("--segment-bytes must be a multiple of 4096 from {min} to {max}, got {got}")]
    BadSegmentBytes { got: u64, min: u64, max: u64 },
    #[error("--compaction-live-fraction must be between 0 and 1, got {0}")]
    BadLiveFraction(f64),
    #[error(
        "--max-frame-bytes must be at least {} (frames up to 2 MiB are always accepted)",
        limits::FRAME_BYTES_FLOOR
    )]
    FrameLimitTooSmall,
    #[error("--node-id must be non-empty lowercase letters and digits ([a-z0-9]+), got {0:?}")]
    BadNodeId(String),
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--processor-memory-mib must be at least {}", limits::PROCESSOR_MEMORY_MIB_MIN)]
    ProcessorMemoryTooSmall,
    #[error("--cores names {0} shards; at most {1} are supported (one per partition)")]
    TooManyShards(usize, usize),
    #[error("--jwt-secret-file {path}: {source}")]
    SecretFile { path: String, source: std::io::Error },
    #[error("--jwt-secret-file {0} is empty")]
    EmptySecretFile(String),
    #[error("--acl: {0}")]
    Acl(#[from] crate::acl::AclError),
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| matches!(value.trim(), "1" | "true" | "TRUE" | "yes"))
}

/// A node id made of the host name's lowercase letters and digits.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    if id.is_empty() {
        "shardgrid".to_string()
    } else {
        id
    }
}

impl Args {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let available = shardgrid_shards::cores::available_cpus();
        let cores = match (&self.cores, &self.core_mask) {
            (Some(list), _) => CoreSet::parse_list(list, &available)?,
            (None, Some(mask)) => CoreSet::parse_mask(mask, &available)?,
            (None, None) => CoreSet::all_available(),
        };
        let partitions = crate::hash::PARTITION_COUNT as usize;
        if cores.shard_count() > partitions {
            return Err(ConfigError::TooManyShards(cores.shard_count(), partitions));
        }
        let file_secret = match &self.jwt_secret_file {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::SecretFile { path: shown.clone(), source })?;
                let secret = text.trim().to_string();
                if secret.is_empty() {
                    return Err(ConfigError::EmptySecretFile(shown));
                }
                Some(secret)
            }
            None => None,
        };
        let policy = match &self.acl {
            Some(path) => Policy::Rules(Acl::load(path)?),
            None => Policy::AllowAll,
        };
        let auth = match (self.no_auth || env_flag("TOPGUN_NO_AUTH"), self.jwt_secret.or(file_secret)) {
            (_, Some(secret)) if !secret.is_empty() && !self.no_auth => AuthMode::Jwt { secret },
            (true, _) => AuthMode::NoAuth,
            _ => return Err(ConfigError::NoSecret),
        };
        let storage_env_null = std::env::var("STORAGE_BACKEND").is_ok_and(|value| value == "null" || value == "memory");
        let disk = || -> Result<StorageMode, ConfigError> {
            use shardgrid_storage::format::{SEGMENT_BYTES_ALIGN, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
            let fsync = shardgrid_storage::FsyncPolicy::parse(&self.fsync, limits::FSYNC_NEVER_WRITE_INTERVAL_MS)
                .ok_or_else(|| ConfigError::BadFsync(self.fsync.clone()))?;
            let segment_bytes = self.segment_bytes;
            if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes)
                || segment_bytes % SEGMENT_BYTES_ALIGN != 0
            {
                return Err(ConfigError::BadSegmentBytes {
                    got: segment_bytes,
                    min: SEGMENT_BYTES_MIN,
                    max: SEGMENT_BYTES_MAX,
                });
            }
            if !(0.0..=1.0).contains(&self.compaction_live_fraction) {
                return Err(ConfigError::BadLiveFraction(self.compaction_live_fraction));
            }
            let io = if self.storage_io == "dma" {
                crate::persist::StorageIo::Dma
            } else {
                crate::persist::StorageIo::Buffered
            };
            Ok(StorageMode::Disk(crate::persist::DiskConfig {
                fsync,
                repair: self.repair,
                segment_bytes,
                io,
                compaction_live_fraction: self.compaction_live_fraction,
                tombstone_grace_ms: self.tombstone_grace_ms,
            }))
        };
        // The disk options are checked whichever backend runs, so a mistyped --fsync is
        // refused rather than ignored.
        let disk = disk()?;
        let storage = match self.storage.as_deref() {
            Some("disk") => disk,
            Some(_) => StorageMode::Memory,
            None if storage_env_null => StorageMode::Memory,
            None => disk,
        };
        if self.max_frame_bytes < limits::FRAME_BYTES_FLOOR {
            return Err(ConfigError::FrameLimitTooSmall);
        }
        let node_id = self.node_id.unwrap_or_else(default_node_id);
        if node_id.is_empty() || !node_id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(ConfigError::BadNodeId(node_id));
        }
        for (name, value) in [
            ("auth-timeout-ms", self.auth_timeout_ms as usize),
            ("idle-timeout-ms", self.idle_timeout_ms as usize),
            ("outbound-queue-bytes", self.outbound_queue_bytes),
            ("max-connections-per-shard", self.max_connections_per_shard),
            ("max-nesting-depth", self.max_nesting_depth),
            ("max-ops-per-batch", self.max_ops_per_batch),
            ("max-value-bytes", self.max_value_bytes),
            ("max-subscriptions-per-connection", self.max_subscriptions_per_connection),
            ("rate-limit-ops", self.rate_limit_ops as usize),
            ("max-connections", self.max_connections.unwrap_or(1)),
            ("io-memory-kib", self.io_memory_kib),
            ("preempt-timer-ms", self.preempt_timer_ms as usize),
            ("processor-cpu-ms", self.processor_cpu_ms as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.processor_memory_mib < limits::PROCESSOR_MEMORY_MIB_MIN {
            return Err(ConfigError::ProcessorMemoryTooSmall);
        }
        let max_connections_per_shard = match self.max_connections {
            Some(total) => total.div_ceil(cores.shard_count()).min(self.max_connections_per_shard),
            None => self.max_connections_per_shard,
        };
        Ok(Config {
            cores,
            host: self.host,
            port: self.port,
            node_id,
            auth,
            storage,
            data_dir: self.data_dir,
            max_frame_bytes: self.max_frame_bytes,
            max_nesting_depth: self.max_nesting_depth,
            auth_timeout_ms: self.auth_timeout_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            outbound_queue_bytes: self.outbound_queue_bytes,
            max_connections_per_shard,
            max_ops_per_batch: self.max_ops_per_batch,
            max_value_bytes: self.max_value_bytes,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            rate_limit_ops: self.rate_limit_ops,
            policy: Arc::new(policy),
            io_memory_bytes: self.io_memory_kib * 1024,
            spin_before_park_us: self.spin_before_park_us,
            preempt_timer_ms: self.preempt_timer_ms,
            script_limits: crate::scripting::sandbox::Limits {
                cpu: std::time::Duration::from_millis(self.processor_cpu_ms),
                memory_bytes: self.processor_memory_mib << 20,
            },
        })
    }
}
