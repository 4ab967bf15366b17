//! Starting and stopping the shards: one glommio `LocalExecutor` pinned to each CPU of the core
//! set, each running the domain's per-shard future, plus the shutdown signal (SIGINT/SIGTERM).
//!
//! The shutdown flag is the only state shared between shards; it is written once by the signal
//! thread and read by each shard's watcher task.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::{CoreSet, ShardId};

/// How often a shard looks at the shutdown flag. Shutdown is rare; a short poll keeps the
/// signal path free of cross-thread wake-up machinery.
pub const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub cores: CoreSet,
    /// Bytes of registered io_uring buffer memory per shard. Locked memory: the sum over shards
    /// must fit in `ulimit -l` (see tuning.md).
    pub io_memory_bytes: usize,
    /// Entries of each io_uring ring.
    pub ring_depth: usize,
    /// How long an idle executor keeps polling before it sleeps in the kernel: a request that
    /// arrives meanwhile skips the wake-up. `None`: sleep at once.
    pub spin_before_park: Option<Duration>,
    /// How long one task queue may run before the executor looks at the others (glommio's
    /// preemption timer).
    pub preempt_timer: Duration,
}

/// What a shard knows about itself when it starts.
#[derive(Clone, Debug)]
pub struct ShardContext {
    pub shard: ShardId,
    pub shard_count: usize,
    pub cpu: usize,
    pub shutdown: Shutdown,
}

/// A shutdown request, set once (by a signal or by the server itself) and seen by every shard.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Completes once shutdown has been requested. Call from a shard's executor.
    pub async fn wait(&self) {
        while !self.is_requested() {
            glommio::timer::sleep(SHUTDOWN_POLL_INTERVAL).await;
        }
    }

    /// Blocks SIGINT and SIGTERM in this thread (and so in every thread spawned after this
    /// call) and starts a thread that turns either signal into a shutdown request.
    pub fn request_on_signals(&self) -> std::io::Result<()> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        let mut signals: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `signals` is a valid sigset_t owned by this frame.
        unsafe {
            libc::sigemptyset(&mut signals);
            libc::sigaddset(&mut signals, libc::SIGINT);
            libc::sigaddset(&mut signals, libc::SIGTERM);
        }
        // SAFETY: valid set pointer; a null old-set pointer is allowed.
        let result = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
        if result != 0 {
            return Err(std::io::Error::from_raw_os_error(result));
        }
        let shutdown = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || loop {
            let mut received: libc::c_int = 0;
            // SAFETY: `signals` is a valid set and `received` a valid out pointer.
            if unsafe { libc::sigwait(&signals, &mut received) } == 0 {
                tracing::info!(signal = received, "shutdown requested");
                shutdown.request();
                return;
            }
        })?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the executor for {shard} on CPU {cpu}: {source}")]
    Spawn { shard: ShardId, cpu: usize, source: glommio::GlommioError<()> },
    #[error("{shard} panicked")]
    Panicked { shard: ShardId },
}

/// Runs one pinned executor per CPU of `config.cores`, each running `make(context, state)` with
/// its own element of `per_shard`. Returns when every shard's future has finished.
pub fn run_shards<S, F, Fut>(
    config: &RuntimeConfig,
    shutdown: &Shutdown,
    per_shard: Vec<S>,
    make: F,
) -> Result<(), RuntimeError>
where
    S: Send + 'static,
    F: Fn(ShardContext, S) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    assert_eq!(per_shard.len(), config.cores.shard_count(), "one state per shard");
    let shard_count = config.cores.shard_count();
    let mut handles = Vec::with_capacity(shard_count);
    for (index, state) in per_shard.into_iter().enumerate() {
        let shard = ShardId(index as u16);
        let cpu = config.cores.cpu_of(shard);
        let context = ShardContext { shard, shard_count, cpu, shutdown: shutdown.clone() };
        let make = make.clone();
        let builder = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{index}"))
            .io_memory(config.io_memory_bytes)
            .ring_depth(config.ring_depth)
            .preempt_timer(config.preempt_timer);
        let builder = match config.spin_before_park {
            Some(spin) => builder.spin_before_park(spin),
            None => builder,
        };
        let handle = builder.spawn(move || make(context, state)).map_err(|error| RuntimeError::Spawn {
            shard,
            cpu,
            source: map_spawn_error(error),
        })?;
        handles.push((shard, handle));
    }
    let mut outcome = Ok(());
    for (shard, handle) in handles {
        if handle.join().is_err() && outcome.is_ok() {
            outcome = Err(RuntimeError::Panicked { shard });
        }
    }
    outcome
}

fn map_spawn_error<T>(error: glommio::GlommioError<T>) -> glommio::GlommioError<()> {
    match error {
        glommio::GlommioError::IoError(io) => glommio::GlommioError::IoError(io),
        other => glommio::GlommioError::IoError(std::io::Error::other(other.to_string())),
    }
}
