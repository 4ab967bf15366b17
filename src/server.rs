//! shardgrid::server: assembly and the network loop. Modules are built in a fixed order —
//! config, shards (mesh joined), per-shard node, network last — and nothing listens until every
//! shard is assembled. `PORT=<n>` goes to stdout once every shard listens; it is the only thing
//! the server ever prints there.
//!
//! Per shard: an accept loop on the shared port (SO_REUSEPORT: the kernel spreads connections
//! over shards), one task per connection (HTTP request head, then either a plain endpoint or a
//! WebSocket session for the connection's whole life), and a sweeper closing connections past
//! their auth or idle deadline.

use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;
use futures_lite::future::FutureExt;
use futures_lite::StreamExt;
use futures_util::SinkExt;
use glommio::net::{TcpListener, TcpStream};
use shardgrid_shards::{run_shards, MeshBuilder, RuntimeConfig, ShardContext, ShardId, Shutdown};

use crate::cli::{Config, StorageMode};
use crate::limits::{
    HTTP_HEAD_TIMEOUT_MS, PEER_QUEUE_DEPTH, RING_DEPTH_DEFAULT, SHUTDOWN_DRAIN_MS, TIMEOUT_SWEEP_INTERVAL_MS,
};
use crate::net::http;
use crate::net::outbox::{CloseReason, Outbox};
use crate::node::{wall_ms, Hop, HopReply, Node};
use crate::session::Session;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{shard} cannot listen on {address}: {source}")]
    Bind { shard: ShardId, address: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Runtime(#[from] shardgrid_shards::RuntimeError),
    #[error("cannot install signal handling: {0}")]
    Signals(std::io::Error),
    #[error("the shards stopped before they all listened")]
    StartupAborted,
    #[error("storage: {0}")]
    Storage(#[from] crate::persist::StorageError),
}

/// What a shard tells the main thread during start-up.
enum Startup {
    /// The shard's log is recovered (disk backend); it waits for the layout to be recorded.
    Recovered,
    Listening {
        port: u16,
    },
    Failed(ServerError),
}

/// Starts every shard, prints `PORT=<n>` once all listen, and returns after a shutdown signal
/// once connections have drained.
pub fn run(config: Config) -> Result<(), ServerError> {
    let shutdown = Shutdown::new();
    // Signals are blocked before any other thread exists, so only the signal thread sees them.
    shutdown.request_on_signals().map_err(ServerError::Signals)?;
    let config = Arc::new(config);
    let shard_count = config.cores.shard_count();
    let runtime = RuntimeConfig {
        cores: config.cores.clone(),
        io_memory_bytes: config.io_memory_bytes,
        ring_depth: RING_DEPTH_DEFAULT,
        spin_before_park: (config.spin_before_park_us > 0)
            .then(|| std::time::Duration::from_micros(config.spin_before_park_us)),
        preempt_timer: std::time::Duration::from_millis(config.preempt_timer_ms),
    };
    let mesh_ends = MeshBuilder::new::<Hop, HopReply>(shard_count, PEER_QUEUE_DEPTH);
    let chosen_port = Arc::new(AtomicU16::new(0));
    let (startup_sender, startup_receiver) = mpsc::channel::<Startup>();
    // Storage comes after the shards and before the network: the data directory is locked and
    // its layout read here; each shard recovers its log before it binds the port.
    let plan = match &config.storage {
        StorageMode::Disk(disk) => {
            Some(Arc::new(crate::persist::prepare(&config.data_dir, disk.clone(), shard_count as u16)?))
        }
        StorageMode::Memory => None,
    };
    let layout_recorded = Arc::new(AtomicBool::new(plan.is_none()));

    let runtime_thread = {
        let shutdown = shutdown.clone();
        let config = Arc::clone(&config);
        let plan = plan.clone();
        let layout_recorded = Arc::clone(&layout_recorded);
        std::thread::Builder::new()
            .name("shards".into())
            .spawn(move || {
                run_shards(&runtime, &shutdown.clone(), mesh_ends, move |context: ShardContext, ends| {
                    let config = Arc::clone(&config);
                    let chosen_port = Arc::clone(&chosen_port);
                    let startup = startup_sender.clone();
                    let plan = plan.clone();
                    let layout_recorded = Arc::clone(&layout_recorded);
                    async move {
                        let mesh = ends.join().await;
                        let node = Node::new(context.shard, config, mesh);
                        if let Some(plan) = plan {
                            if !start_storage(&node, &plan, &context, &layout_recorded, &startup).await {
                                return;
                            }
                        }
                        serve_shard(node, context, chosen_port, startup).await;
                    }
                })
            })
            .expect("spawn the shards thread")
    };

    let mut listening = 0;
    let mut recovered = 0;
    let mut port = 0;
    let mut failure = None;
    while listening < shard_count {
        match startup_receiver.recv() {
            Ok(Startup::Recovered) => {
                recovered += 1;
                if recovered == shard_count {
                    if let Some(plan) = &plan {
                        // Every shard holds its records in the new layout: record it.
                        if let Err(error) = crate::persist::commit(plan) {
                            failure = Some(ServerError::Storage(error));
                            break;
                        }
                    }
                    layout_recorded.store(true, Ordering::Release);
                }
            }
            Ok(Startup::Listening { port: shard_port }) => {
                listening += 1;
                port = shard_port;
            }
            Ok(Startup::Failed(error)) => {
                failure = Some(error);
                break;
            }
            Err(_) => {
                failure = Some(ServerError::StartupAborted);
                break;
            }
        }
    }
    if let Some(error) = failure {
        shutdown.request();
        let _ = runtime_thread.join();
        return Err(error);
    }
    tracing::info!(port, shards = shard_count, "listening");
    let mut stdout = std::io::stdout().lock();
    // Tools read this line from stdout and stop reading after it.
    let _ = writeln!(stdout, "PORT={port}");
    let _ = stdout.flush();
    drop(stdout);

    match runtime_thread.join() {
        Ok(result) => result.map_err(ServerError::from),
        Err(_) => Err(ServerError::StartupAborted),
    }
}

/// Recovers this shard's log into its node, waits until every shard has and the layout is
/// recorded, then starts the flusher and compaction tasks. Returns false (after telling the
/// main thread why) when the shard must not go on.
async fn start_storage(
    node: &Rc<Node>,
    plan: &crate::persist::StoragePlan,
    context: &ShardContext,
    layout_recorded: &AtomicBool,
    startup: &mpsc::Sender<Startup>,
) -> bool {
    let mut data = crate::shard::ShardData::new(&node.config.node_id);
    let recovered = match crate::persist::recover::recover_shard(plan, context.shard, &node.table, &mut data, wall_ms())
    {
        Ok(recovered) => recovered,
        Err(error) => {
            let _ = startup.send(Startup::Failed(ServerError::Storage(error)));
            return false;
        }
    };
    let summary = &recovered.summary;
    tracing::info!(
        shard = %context.shard,
        segments = summary.segments,
        records = summary.records,
        bytes = summary.bytes,
        taken_over = summary.records_taken_over,
        elapsed_ms = summary.elapsed_ms,
        "recovered"
    );
    let store =
        Rc::new(crate::persist::ShardStore::new(context.shard, context.shard_count, plan.disk.clone(), recovered));
    node.install_storage(data, Rc::clone(&store));
    let _ = startup.send(Startup::Recovered);
    while !layout_recorded.load(Ordering::Acquire) {
        if context.shutdown.is_requested() {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    glommio::spawn_local(crate::persist::ShardStore::run_flusher(Rc::clone(node), Rc::clone(&store))).detach();
    glommio::spawn_local(crate::persist::ShardStore::run_compaction(Rc::clone(node), store)).detach();
    true
}

/// One shard's life: listen, accept until shutdown, drain.
async fn serve_shard(
    node: Rc<Node>,
    context: ShardContext,
    chosen_port: Arc<AtomicU16>,
    startup: mpsc::Sender<Startup>,
) {
    let config = Arc::clone(&node.config);
    // The first shard binds the configured port (0 picks one); the others join the port it got.
    let port = if context.shard == ShardId(0) {
        config.port
    } else {
        loop {
            let port = chosen_port.load(Ordering::Acquire);
            if port != 0 {
                break port;
            }
            if context.shutdown.is_requested() {
                return;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    };
    let address = SocketAddr::new(config.host, port);
    let listener = match TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(error) => {
            let source = std::io::Error::other(error.to_string());
            let _ = startup.send(Startup::Failed(ServerError::Bind { shard: context.shard, address, source }));
            return;
        }
    };
    let bound_port = listener.local_addr().map(|address| address.port()).unwrap_or(port);
    if context.shard == ShardId(0) {
        chosen_port.store(bound_port, Ordering::Release);
    }
    let _ = startup.send(Startup::Listening { port: bound_port });
    drop(startup);

    let sweeper = {
        let node = Rc::clone(&node);
        glommio::spawn_local(async move {
            // Endless by design: runs for the life of the shard.
            loop {
                glommio::timer::sleep(Duration::from_millis(TIMEOUT_SWEEP_INTERVAL_MS)).await;
                node.sweep_deadlines(wall_ms());
            }
        })
    };
    // Lock leases and waiting lock requests (coord::service): sleeps until the next deadline.
    let coord_timer = {
        let node = Rc::clone(&node);
        glommio::spawn_local(async move {
            // Endless by design: runs for the life of the shard.
            loop {
                let wait = Duration::from_millis(node.coord_timer_wait_ms());
                glommio::timer::sleep(wait).or(node.coord_timer_rearmed()).await;
                node.coord_timer_fire().await;
            }
        })
    };

    // The accept loop runs in its own task, polled only when the listener wakes it, and is
    // cancelled (dropping the listener) on shutdown. Racing `accept` against the shutdown
    // poll instead would poll it every 20 ms, and glommio 0.9 leaks a task reference on every
    // poll of a pending accept: after about 32 767 polls (11 minutes idle) the shard panics.
    let acceptor = glommio::spawn_local(accept_loop(Rc::clone(&node), listener, context.shard));
    context.shutdown.wait().await;
    drop(acceptor);
    node.close_all(CloseReason::GoingAway);
    let drain_started = wall_ms();
    while node.conn_count() > 0 && wall_ms() < drain_started + SHUTDOWN_DRAIN_MS {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    drop(sweeper);
    if let Some(store) = node.store() {
        // Everything appended is written and fdatasynced before the shard stops.
        store.close().await;
    }
    drop(coord_timer);
    tracing::info!(shard = %context.shard, "stopped");
}

/// Accepts connections for the life of the shard (endless by design: cancelled on shutdown).
async fn accept_loop(node: Rc<Node>, listener: TcpListener, shard: ShardId) {
    // Refusals and failures come in floods (a storm past a limit): one warning a second, with
    // how many there were.
    let mut refused = LogLimiter::default();
    let mut failed = LogLimiter::default();
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if node.conn_count() >= node.config.max_connections_per_shard {
                    if let Some(count) = refused.hit() {
                        tracing::warn!(%shard, count, "connection limit reached; refusing connections");
                    }
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let node = Rc::clone(&node);
                glommio::spawn_local(async move { handle_connection(node, stream).await }).detach();
            }
            Err(error) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                if let Some(count) = failed.hit() {
                    tracing::warn!(%shard, %error, count, "accept failed");
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Lets one log line through per second and counts the events in between.
#[derive(Default)]
struct LogLimiter {
    last: Option<Instant>,
    count: u64,
}

impl LogLimiter {
    /// Counts one event; returns the events since the last line when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let due = self.last.is_none_or(|last| last.elapsed() >= Duration::from_secs(1));
        if !due {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// One accepted socket: an HTTP request head, then an endpoint or a WebSocket session.
async fn handle_connection(node: Rc<Node>, mut stream: TcpStream) {
    let head = http::read_head(&mut stream).or(async {
        glommio::timer::sleep(Duration::from_millis(HTTP_HEAD_TIMEOUT_MS)).await;
        Err(http::HttpError::Closed)
    });
    let mut head = match head.await {
        Ok(head) => head,
        Err(http::HttpError::Closed) | Err(http::HttpError::Io(_)) => return,
        Err(error) => {
            let _ = http::respond(&mut stream, 400, "text/plain", error.to_string().as_bytes()).await;
            return;
        }
    };
    let route = head.route().to_string();
    if route == "/" || route == "/ws" {
        if let Some(key) = head.websocket_key().map(str::to_string) {
            if http::accept_websocket(&mut stream, &key).await.is_ok() {
                serve_websocket(node, stream, std::mem::take(&mut head.rest)).await;
            }
            return;
        }
        if route == "/ws" {
            let _ = http::respond(&mut stream, 426, "text/plain", b"WebSocket upgrade required").await;
            return;
        }
    }
    crate::endpoints::answer(&node, &mut stream, head).await;
}

fn websocket_config(node: &Node) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(crate::limits::WS_READ_BUFFER_BYTES)
        .max_message_size(Some(node.config.max_frame_bytes))
        .max_frame_size(Some(node.config.max_frame_bytes))
}

/// Runs one WebSocket connection: reads frames into the session in order, writes whatever the
/// outbox holds between reads, and closes with the reason the session or the shard chose.
async fn serve_websocket(node: Rc<Node>, stream: TcpStream, already_read: Vec<u8>) {
    let local_addr = stream.local_addr();
    let mut socket =
        WebSocketStream::from_partially_read(stream, already_read, Role::Server, Some(websocket_config(&node))).await;
    let outbox = Rc::new(Outbox::new(node.config.outbound_queue_bytes));
    let mut session = Session::open(Rc::clone(&node), Rc::clone(&outbox));
    if let Ok(address) = local_addr {
        session.set_local_addr(address);
    }
    let mut pending = Vec::new();
    let close = loop {
        if !outbox.is_empty() {
            outbox.drain_into(&mut pending);
            let write = async {
                for frame in pending.drain(..) {
                    socket.feed(Message::Binary(frame)).await?;
                }
                socket.flush().await?;
                Ok::<bool, WsError>(true)
            }
            .or(async {
                // A reader that stopped reading must not hold this task forever: a close request
                // (slow consumer, idle, shutdown) abandons the write.
                outbox.closing().await;
                Ok(false)
            });
            match write.await {
                Ok(true) => {}
                // The write stalled and a close was requested (a reader that stopped reading):
                // the frames tungstenite already holds stay queued and the close frame goes
                // after them, so a reader that drains within the close timeout still learns
                // why; one that does not sees the stream end.
                Ok(false) => break outbox.close_reason().unwrap_or(CloseReason::SocketError),
                Err(_) => break CloseReason::SocketError,
            }
        }
        if let Some(reason) = outbox.close_reason() {
            break reason;
        }
        let next = async { Some(socket.next().await) }.or(async {
            outbox.ready().await;
            None
        });
        match next.await {
            None => continue,
            Some(Some(Ok(Message::Binary(frame)))) => session.on_frame(&frame).await,
            Some(Some(Ok(Message::Text(_)))) => session.on_text_frame(),
            Some(Some(Ok(Message::Close(_)))) => {
                // tungstenite queues the echo of the client's close frame; flush sends it.
                let _ = socket.flush().await;
                break CloseReason::ClientClosed;
            }
            Some(Some(Ok(_))) => {} // WebSocket ping/pong: tungstenite answers pings itself.
            Some(Some(Err(WsError::Capacity(_)))) => outbox.request_close(CloseReason::MessageTooBig),
            // A peer that vanished without a close frame: there is no one to send one to.
            Some(Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))) => {
                break CloseReason::SocketError
            }
            // A framing violation still gets a close frame naming it, never a silent drop
            // (DECISIONS §5); tungstenite can still write after a read error.
            Some(Some(Err(WsError::Protocol(_)))) => outbox.request_close(CloseReason::ProtocolError),
            Some(Some(Err(WsError::Utf8(_)))) => outbox.request_close(CloseReason::InvalidUtf8),
            Some(Some(Err(_))) | Some(None) => break CloseReason::SocketError,
        }
    };
    // Counted here, once, whichever push found the outbox full (events, query updates, replies),
    // and before the client can see the connection end.
    if outbox.close_reason() == Some(CloseReason::SlowConsumer) {
        node.bump(|stats| stats.slow_consumers_closed += 1);
    }
    if !matches!(close, CloseReason::ClientClosed | CloseReason::SocketError) {
        let frame = CloseFrame { code: CloseCode::from(close.code()), reason: close.text().into() };
        let closing = async {
            let _ = socket.close(Some(frame)).await;
        }
        .or(async {
            glommio::timer::sleep(Duration::from_millis(1_000)).await;
        });
        closing.await;
    }
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a flood of events logs one line, then nothing until a second has passed, and the
    // next line counts what was held back. Method: hit it, then age its last line by hand.
    #[test]
    fn log_limiter_lets_one_line_a_second_through() {
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.hit(), Some(1));
        for _ in 0..99 {
            assert_eq!(limiter.hit(), None);
        }
        limiter.last = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(limiter.hit(), Some(100));
        assert_eq!(limiter.hit(), None);
    }
}
