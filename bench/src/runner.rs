//! Running a scenario: the plan (checked options, connections and their roles), one glommio
//! executor per generator thread (pinned with `--cores`), the connections on each thread, and
//! the merge of every thread's histograms into a `Report`.
//!
//! A run has four phases, the same on every thread: set up every connection (connect, upgrade,
//! authenticate, subscribe), wait until every thread is set up, load (warmup, then the measured
//! window), then drain replies still in flight and close. Each connection is two tasks on its
//! thread: a driver that sends (paced by `pacing::Pacer`) and a reader that handles every frame
//! the server sends. Per-thread state (`Recorder`, each connection's `ConnState`) is `Rc`/
//! `RefCell`, borrowed only between awaits; the only state shared between threads is `Shared`
//! (atomics: start time, abort flag, progress counters).
//!
//! It deliberately leaves out message encoding (`wire`), pacing decisions (`pacing`),
//! histogram arithmetic (`stats`) and printing (`report`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::http::Uri;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use futures_lite::future::FutureExt;
use futures_lite::StreamExt;
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use shardgrid::protocol::MessageType;
use shardgrid_shards::cores::available_cpus;
use shardgrid_shards::{CoreSet, CoreSetError};

use crate::cli::{Scenario, TimingArgs};
use crate::limits::*;
use crate::pacing::{latency_ns, Nanos, NextSend, Pacer, Pacing, Schedule};
use crate::report::{Machine, Report, Row, RowId};
use crate::stats::LatencyHistogram;
use crate::wire::{self, as_str, as_u64, decode_frame, get, BenchValue, PutOp, Timestamp};

const MS: Nanos = 1_000_000;

/// Why a run could not start. A run that starts always ends in a `Report`, whose `failure`
/// says what went wrong during it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("--url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("--cores: {0}")]
    Cores(#[from] CoreSetError),
    #[error("{0}")]
    Option(String),
    #[error("cannot mint a token with --jwt-secret: {0}")]
    Token(String),
    #[error("cannot start the generator thread for CPU {cpu:?}: {message}")]
    Spawn { cpu: Option<usize>, message: String },
    #[error("a generator thread panicked")]
    Panicked,
}

/// What one connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Sends OP_BATCHes (and, in `mixed`, reads).
    Writer,
    /// Holds a QUERY_SUB (fanout) or TOPIC_SUB (pubsub) and measures deliveries.
    Subscriber,
    /// Sends TOPIC_PUB + PING.
    Publisher,
    /// Opens, authenticates and closes (connect-storm).
    Storm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Mixed,
    Fanout,
    Pubsub,
    Storm,
}

/// What the connections send: the scenario's options, read-only for the whole run.
#[derive(Debug)]
struct Workload {
    kind: Kind,
    batch: u32,
    keys: u64,
    padding: String,
    write_concern: Option<&'static str>,
    map: String,
    maps: u32,
    read_ratio: f64,
    topic: String,
    rounds: u32,
}

#[derive(Clone, Debug)]
enum AuthSource {
    None,
    Token(String),
    Secret(String),
}

/// The checked options of one run.
#[derive(Debug)]
pub struct Plan {
    scenario: Scenario,
    workload: Workload,
    address: SocketAddr,
    url: String,
    /// Empty: one unpinned thread.
    cpus: Vec<usize>,
    auth: AuthSource,
    warmup_ns: Nanos,
    duration_ns: Nanos,
    /// `None` in closed loop.
    rate_ops_per_s: Option<f64>,
    window: usize,
    /// Connections per role: (role, count), in the order they are numbered.
    roles: Vec<(Role, usize)>,
}

fn option_error(text: impl Into<String>) -> BenchError {
    BenchError::Option(text.into())
}

impl Plan {
    pub fn new(scenario: &Scenario) -> Result<Plan, BenchError> {
        let target = scenario.target();
        let (address, url) = resolve_url(&target.url)?;
        let cpus = match &target.cores {
            Some(spec) => CoreSet::parse_list(spec, &available_cpus())?.cpus().to_vec(),
            None => Vec::new(),
        };
        let auth = match (&target.token, &target.jwt_secret) {
            (Some(token), _) => AuthSource::Token(token.clone()),
            (None, Some(secret)) => AuthSource::Secret(secret.clone()),
            (None, None) => AuthSource::None,
        };
        let mut workload = Workload {
            kind: Kind::Put,
            batch: 1,
            keys: 1,
            padding: String::new(),
            write_concern: None,
            map: String::new(),
            maps: 1,
            read_ratio: 0.0,
            topic: String::new(),
            rounds: 1,
        };
        let no_load = crate::cli::LoadArgs { inflight: None, rate: None };
        let no_timing = TimingArgs { duration: Duration::ZERO, warmup: Duration::ZERO };
        let (load, timing, roles) = match scenario {
            Scenario::Put(args) | Scenario::Mixed(crate::cli::MixedArgs { put: args, .. }) => {
                let write = &args.write;
                workload.kind = if matches!(scenario, Scenario::Put(_)) { Kind::Put } else { Kind::Mixed };
                workload.batch = write.batch;
                workload.keys = write.keys;
                workload.padding = "x".repeat(write.value_bytes.min(VALUE_BYTES_MAX));
                workload.write_concern = write.write_concern.map(|level| level.as_wire());
                workload.map = write.map.clone();
                workload.maps = write.maps;
                check(write.value_bytes <= VALUE_BYTES_MAX, format!("--value-bytes is at most {VALUE_BYTES_MAX}"))?;
                check(write.maps >= 1, "--maps must be at least 1")?;
                if let Scenario::Mixed(mixed) = scenario {
                    check((0.0..=1.0).contains(&mixed.read_ratio), "--read-ratio must be between 0 and 1")?;
                    workload.read_ratio = mixed.read_ratio;
                }
                (&args.load, &args.timing, vec![(Role::Writer, args.conns)])
            }
            Scenario::Fanout(args) => {
                workload.kind = Kind::Fanout;
                workload.batch = args.batch;
                workload.keys = args.keys;
                check(args.value_bytes <= VALUE_BYTES_MAX, format!("--value-bytes is at most {VALUE_BYTES_MAX}"))?;
                workload.padding = "x".repeat(args.value_bytes);
                workload.map = args.map.clone();
                check(
                    args.subscribers >= 1 && args.writers >= 1,
                    "fanout needs --subscribers and --writers of 1 or more",
                )?;
                (&args.load, &args.timing, vec![(Role::Subscriber, args.subscribers), (Role::Writer, args.writers)])
            }
            Scenario::Pubsub(args) => {
                workload.kind = Kind::Pubsub;
                check(args.value_bytes <= VALUE_BYTES_MAX, format!("--value-bytes is at most {VALUE_BYTES_MAX}"))?;
                workload.padding = "x".repeat(args.value_bytes);
                workload.topic = args.topic.clone();
                check(
                    args.subscribers >= 1 && args.publishers >= 1,
                    "pubsub needs --subscribers and --publishers of 1 or more",
                )?;
                (
                    &args.load,
                    &args.timing,
                    vec![(Role::Subscriber, args.subscribers), (Role::Publisher, args.publishers)],
                )
            }
            Scenario::ConnectStorm(args) => {
                workload.kind = Kind::Storm;
                check((1..=ROUNDS_MAX).contains(&args.rounds), format!("--rounds must be between 1 and {ROUNDS_MAX}"))?;
                workload.rounds = args.rounds;
                (&no_load, &no_timing, vec![(Role::Storm, args.conns)])
            }
        };
        check((1..=BATCH_OPS_MAX).contains(&workload.batch), format!("--batch must be between 1 and {BATCH_OPS_MAX}"))?;
        check(workload.keys >= 1, "--keys must be at least 1")?;
        let conn_count: usize = roles.iter().map(|(_, count)| count).sum();
        check(roles.iter().all(|(_, count)| *count >= 1), "--conns must be at least 1")?;
        check(conn_count <= CONNS_MAX, format!("at most {CONNS_MAX} connections"))?;
        if workload.kind != Kind::Storm {
            check(!timing.duration.is_zero(), "--duration must be more than 0")?;
        }
        if let Some(rate) = load.rate {
            check(rate.is_finite() && rate > 0.0, "--rate must be a positive number of ops/s")?;
        }
        let window = load.inflight.unwrap_or(if load.rate.is_some() { OPEN_LOOP_WINDOW_DEFAULT } else { 1 });
        check((1..=WINDOW_MAX).contains(&window), format!("--inflight must be between 1 and {WINDOW_MAX}"))?;
        Ok(Plan {
            scenario: scenario.clone(),
            workload,
            address,
            url,
            cpus,
            auth,
            warmup_ns: timing.warmup.as_nanos() as Nanos,
            duration_ns: timing.duration.as_nanos() as Nanos,
            rate_ops_per_s: load.rate,
            window,
            roles,
        })
    }

    fn thread_count(&self) -> usize {
        self.cpus.len().max(1)
    }

    fn conns_of(&self, role: Role) -> usize {
        self.roles.iter().filter(|(each, _)| *each == role).map(|(_, count)| count).sum()
    }

    /// Every connection, numbered, with its token, dealt to the threads round-robin.
    fn thread_plans(&self) -> Result<Vec<ThreadPlan>, BenchError> {
        let thread_count = self.thread_count();
        let mut threads: Vec<ThreadPlan> = (0..thread_count)
            .map(|index| ThreadPlan { index, cpu: self.cpus.get(index).copied(), conns: Vec::new() })
            .collect();
        let mut conn_index = 0;
        for &(role, role_count) in &self.roles {
            for role_index in 0..role_count {
                let token = match &self.auth {
                    AuthSource::None => None,
                    AuthSource::Token(token) => Some(token.clone()),
                    AuthSource::Secret(secret) => Some(mint_token(secret, &format!("bench-{conn_index}"))?),
                };
                threads[conn_index % thread_count].conns.push(ConnPlan {
                    conn_index,
                    role,
                    role_index,
                    role_count,
                    token,
                });
                conn_index += 1;
            }
        }
        Ok(threads)
    }
}

fn check(condition: bool, message: impl Into<String>) -> Result<(), BenchError> {
    if condition {
        Ok(())
    } else {
        Err(option_error(message))
    }
}

/// Checks a `ws://host:port/path` URL and resolves its host once, before the run.
fn resolve_url(url: &str) -> Result<(SocketAddr, String), BenchError> {
    let fail = |reason: &str| BenchError::Url { url: url.to_string(), reason: reason.to_string() };
    let uri: Uri = url.parse().map_err(|_| fail("not a URL; expected ws://host:port/path"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err(fail("wss:// (TLS) is not supported; use ws://")),
        _ => return Err(fail("expected a ws:// URL")),
    }
    let host = uri.host().ok_or_else(|| fail("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|error| fail(&format!("cannot resolve {host}: {error}")))?
        .next()
        .ok_or_else(|| fail("the host resolves to no address"))?;
    Ok((address, url.to_string()))
}

/// An HS256 token for `sub`, valid for a day (PROTOCOL.md §3.1: `sub` and `exp` required).
fn mint_token(secret: &str, sub: &str) -> Result<String, BenchError> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_secs()).unwrap_or(0) + 24 * 3_600;
    let claims = serde_json::json!({ "sub": sub, "roles": [], "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|error| BenchError::Token(error.to_string()))
}

#[derive(Clone, Debug)]
struct ConnPlan {
    conn_index: usize,
    role: Role,
    /// This connection's number among the connections of its role.
    role_index: usize,
    role_count: usize,
    token: Option<String>,
}

#[derive(Debug)]
struct ThreadPlan {
    index: usize,
    cpu: Option<usize>,
    conns: Vec<ConnPlan>,
}

/// Counters the progress line reads; written by every generator thread.
#[derive(Debug, Default)]
struct Progress {
    /// Operations answered (or deliveries, for subscribers' rows), warmup included.
    ops: AtomicU64,
    deliveries: AtomicU64,
    errors: AtomicU64,
    conns_ready: AtomicUsize,
}

/// The state every generator thread shares. Written rarely (start, abort) or with atomics.
#[derive(Debug)]
struct Shared {
    plan: Plan,
    /// The time base: every `Nanos` of the run counts from here, on every thread.
    base: Instant,
    thread_count: usize,
    threads_ready: AtomicUsize,
    start_ns: OnceLock<Nanos>,
    aborted: AtomicBool,
    failure: OnceLock<String>,
    /// Writers and publishers still sending or draining.
    active_senders: AtomicUsize,
    progress: Progress,
}

impl Shared {
    fn now_ns(&self) -> Nanos {
        self.base.elapsed().as_nanos() as Nanos
    }

    fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
        self.aborted.store(true, Ordering::Release);
    }

    fn aborted(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }

    /// Waits until every thread has set up its connections (or the run is abandoned), then
    /// returns the common start time. Polls instead of blocking, so this thread's other tasks
    /// keep running.
    async fn arrive_and_start(&self) -> Nanos {
        self.threads_ready.fetch_add(1, Ordering::AcqRel);
        let deadline_ns = self.now_ns() + SETUP_TIMEOUT_MS * MS;
        while self.threads_ready.load(Ordering::Acquire) < self.thread_count && !self.aborted() {
            if self.now_ns() > deadline_ns {
                self.fail(format!("the generator threads did not finish setting up within {SETUP_TIMEOUT_MS} ms"));
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        *self.start_ns.get_or_init(|| self.now_ns())
    }
}

/// The run's phases, in nanoseconds since the time base.
#[derive(Clone, Copy, Debug)]
struct Times {
    start_ns: Nanos,
    /// Requests due (and deliveries stamped) in `[measure_from_ns, end_ns)` are measured.
    measure_from_ns: Nanos,
    end_ns: Nanos,
    drain_until_ns: Nanos,
    /// Anything still running then is cancelled.
    hard_deadline_ns: Nanos,
}

impl Times {
    fn new(start_ns: Nanos, plan: &Plan) -> Times {
        let measure_from_ns = start_ns + plan.warmup_ns;
        let end_ns = measure_from_ns + plan.duration_ns;
        let drain_until_ns = end_ns + DRAIN_TIMEOUT_MS * MS;
        let hard_deadline_ns = drain_until_ns + (DELIVERY_GRACE_MS + 2 * CLOSE_TIMEOUT_MS) * MS;
        Times { start_ns, measure_from_ns, end_ns, drain_until_ns, hard_deadline_ns }
    }
}

/// One row's numbers on one thread.
#[derive(Clone, Debug, Default)]
struct RowStats {
    histogram: LatencyHistogram,
    /// Failed requests (not operations) by kind.
    errors: BTreeMap<String, u64>,
}

/// What one thread measured. Lives on its thread until it is handed to the merge.
#[derive(Debug)]
struct Recorder {
    shared: Arc<Shared>,
    rows: BTreeMap<RowId, RowStats>,
    /// Frames received, by message type (indexed by `MessageType as usize`).
    seen: Vec<u64>,
    seen_unknown: BTreeMap<String, u64>,
    /// `[from, to)`; nothing is recorded before the start.
    window: Option<(Nanos, Nanos)>,
    /// connect-storm: nanoseconds this thread spent opening connections.
    storm_open_ns: Nanos,
}

/// What a thread hands back.
#[derive(Debug)]
struct ThreadOutcome {
    rows: BTreeMap<RowId, RowStats>,
    seen: Vec<u64>,
    seen_unknown: BTreeMap<String, u64>,
    storm_open_ns: Nanos,
}

impl Recorder {
    fn new(shared: Arc<Shared>) -> Recorder {
        Recorder {
            shared,
            rows: BTreeMap::new(),
            seen: vec![0; MessageType::ALL.len()],
            seen_unknown: BTreeMap::new(),
            window: None,
            storm_open_ns: 0,
        }
    }

    fn in_window(&self, from_ns: Nanos) -> bool {
        self.window.is_some_and(|(window_from, window_to)| from_ns >= window_from && from_ns < window_to)
    }

    /// Records `count` operations measured from `from_ns` (intended send time or stamp) to
    /// `reply_ns`, if `from_ns` is in the measured window.
    fn latency(&mut self, row: RowId, from_ns: Nanos, reply_ns: Nanos, count: u64) {
        if self.in_window(from_ns) {
            self.rows.entry(row).or_default().histogram.record_ns(latency_ns(reply_ns, from_ns), count);
        }
    }

    fn error(&mut self, row: RowId, kind: &str, count: u64) {
        self.shared.progress.errors.fetch_add(count, Ordering::Relaxed);
        let errors = &mut self.rows.entry(row).or_default().errors;
        let kind = if errors.len() >= ERROR_KINDS_MAX && !errors.contains_key(kind) { "other" } else { kind };
        *errors.entry(kind.to_string()).or_default() += count;
    }

    fn seen(&mut self, kind: Option<MessageType>, type_text: &str) {
        match kind {
            Some(kind) => self.seen[kind as usize] += 1,
            None if self.seen_unknown.len() < ERROR_KINDS_MAX => {
                *self.seen_unknown.entry(type_text.to_string()).or_default() += 1
            }
            None => *self.seen_unknown.entry("other".to_string()).or_default() += 1,
        }
    }

    fn into_outcome(self) -> ThreadOutcome {
        ThreadOutcome {
            rows: self.rows,
            seen: self.seen,
            seen_unknown: self.seen_unknown,
            storm_open_ns: self.storm_open_ns,
        }
    }
}

/// Truncates server-supplied text for use in an error kind.
fn clip(text: &str) -> String {
    if text.len() <= ERROR_TEXT_BYTES_MAX {
        return text.to_string();
    }
    let mut end = ERROR_TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) => clip(&format!("{} {}", u16::from(frame.code), frame.reason)),
        None => "no close code".to_string(),
    }
}

/// A one-shot wake-up between a connection's reader and its driver. Lives on the connection's
/// thread. A notification that arrives while nobody waits is kept for the next wait.
#[derive(Default)]
struct Signal {
    fired: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.fired.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|context| {
            if self.fired.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(context.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Waits for a notification or until `deadline_ns`, whichever comes first.
    async fn wait_until(&self, shared: &Shared, deadline_ns: Nanos) {
        let now_ns = shared.now_ns();
        if deadline_ns <= now_ns {
            return;
        }
        self.wait().or(glommio::timer::sleep(Duration::from_nanos(deadline_ns - now_ns))).await;
    }
}

async fn sleep_until(shared: &Shared, deadline_ns: Nanos) {
    let now_ns = shared.now_ns();
    if deadline_ns > now_ns {
        glommio::timer::sleep(Duration::from_nanos(deadline_ns - now_ns)).await;
    }
}

/// Runs `future`, or gives up after `timeout_ms` with `None`.
async fn within<T>(timeout_ms: u64, future: impl Future<Output = T>) -> Option<T> {
    async { Some(future.await) }
        .or(async {
            glommio::timer::sleep(Duration::from_millis(timeout_ms)).await;
            None
        })
        .await
}

type Socket = WebSocketStream<TcpStream>;
type Sender = WebSocketSender<TcpStream>;
type Receiver = WebSocketReceiver<TcpStream>;

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("TCP connect failed: {0}")]
    Tcp(String),
    #[error("WebSocket upgrade failed: {0}")]
    Upgrade(WsError),
    #[error("the server requires authentication (it sent AUTH_REQUIRED): pass --token or --jwt-secret")]
    AuthRequired,
    #[error("authentication refused (AUTH_FAIL: {0})")]
    AuthFail(String),
    #[error("the server closed the connection during setup ({0})")]
    Closed(String),
    #[error("no {0} within {HANDSHAKE_TIMEOUT_MS} ms")]
    Timeout(&'static str),
    #[error("the server answered ERROR {code}: {message}")]
    Refused { code: u64, message: String },
    #[error("socket error: {0}")]
    Socket(WsError),
}

impl ConnectError {
    /// A short, stable name to count errors by.
    fn kind(&self) -> String {
        match self {
            ConnectError::Tcp(message) => clip(&format!("connect: {message}")),
            ConnectError::Upgrade(_) => "websocket upgrade failed".to_string(),
            ConnectError::AuthRequired => "AUTH_REQUIRED (no token)".to_string(),
            ConnectError::AuthFail(_) => "AUTH_FAIL".to_string(),
            ConnectError::Closed(reason) => clip(&format!("closed during setup: {reason}")),
            ConnectError::Timeout(awaited) => format!("no {awaited} (timeout)"),
            ConnectError::Refused { code, .. } => format!("ERROR {code}"),
            ConnectError::Socket(_) => "socket error".to_string(),
        }
    }
}

async fn send_frame(socket: &mut Socket, bytes: &[u8]) -> Result<(), ConnectError> {
    socket.send(Message::binary(bytes.to_vec())).await.map_err(ConnectError::Socket)
}

/// Reads frames until one of type `wanted`. `AUTH_REQUIRED` is an error when we have no token;
/// `AUTH_FAIL`, `ERROR` and a close end the wait with an error.
async fn await_frame(socket: &mut Socket, wanted: MessageType, have_token: bool) -> Result<(), ConnectError> {
    loop {
        let message = match socket.next().await {
            None => return Err(ConnectError::Closed("connection ended".to_string())),
            Some(Err(error)) => return Err(ConnectError::Socket(error)),
            Some(Ok(message)) => message,
        };
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => return Err(ConnectError::Closed(describe_close(frame.as_ref()))),
            _ => continue,
        };
        let Ok(frame) = decode_frame(&bytes) else { continue };
        match frame.kind {
            Some(kind) if kind == wanted => return Ok(()),
            Some(MessageType::AuthRequired) if !have_token => return Err(ConnectError::AuthRequired),
            Some(MessageType::AuthFail) => {
                let reason = get(&frame.body, "error").and_then(as_str).unwrap_or("no reason given");
                return Err(ConnectError::AuthFail(clip(reason)));
            }
            Some(MessageType::Error) => {
                let code = get(&frame.body, "payload.code").and_then(as_u64).unwrap_or(0);
                let message = get(&frame.body, "payload.message").and_then(as_str).unwrap_or("");
                return Err(ConnectError::Refused { code, message: clip(message) });
            }
            _ => continue,
        }
    }
}

/// TCP connect, WebSocket upgrade, then `AUTH` → `AUTH_ACK` with a token, or `PING` → `PONG`
/// without one (a server that needs a token says `AUTH_REQUIRED` first, PROTOCOL.md §3.1).
async fn open_connection(shared: &Shared, token: Option<&str>) -> Result<Socket, ConnectError> {
    let stream = TcpStream::connect(shared.plan.address).await.map_err(|error| ConnectError::Tcp(error.to_string()))?;
    // Latency is the point of the exercise: never wait to coalesce small frames.
    let _ = stream.set_nodelay(true);
    let (mut socket, _) =
        async_tungstenite::client_async(shared.plan.url.as_str(), stream).await.map_err(ConnectError::Upgrade)?;
    let mut out = Vec::new();
    match token {
        Some(token) => {
            wire::encode_auth(&mut out, token);
            send_frame(&mut socket, &out).await?;
            await_frame(&mut socket, MessageType::AuthAck, true).await?;
        }
        None => {
            wire::encode_ping(&mut out, 0);
            send_frame(&mut socket, &out).await?;
            await_frame(&mut socket, MessageType::Pong, false).await?;
        }
    }
    Ok(socket)
}

/// Opens one connection and performs its role's setup: a subscriber's `QUERY_SUB` is answered
/// by `QUERY_RESP`; a `TOPIC_SUB` has no reply, so a `PING` after it fences it (a server
/// handles one connection's messages in order).
async fn set_up(shared: &Shared, conn: &ConnPlan) -> Result<Socket, ConnectError> {
    let open = async {
        let mut socket = open_connection(shared, conn.token.as_deref()).await?;
        let workload = &shared.plan.workload;
        if conn.role == Role::Subscriber {
            let mut out = Vec::new();
            if workload.kind == Kind::Fanout {
                wire::encode_query_sub(&mut out, &format!("sub-{}", conn.conn_index), &workload.map, None);
                send_frame(&mut socket, &out).await?;
                await_frame(&mut socket, MessageType::QueryResp, true).await?;
            } else {
                wire::encode_topic_sub(&mut out, &workload.topic);
                send_frame(&mut socket, &out).await?;
                out.clear();
                wire::encode_ping(&mut out, 1);
                send_frame(&mut socket, &out).await?;
                await_frame(&mut socket, MessageType::Pong, true).await?;
            }
        }
        Ok(socket)
    };
    within(HANDSHAKE_TIMEOUT_MS, open).await.unwrap_or(Err(ConnectError::Timeout("handshake reply")))
}

/// What a request in flight was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestKind {
    Write { ops: u32 },
    Read,
    Publish,
}

impl RequestKind {
    /// Operations the request counts for: a write its ops, a read or a publish one.
    fn ops(self) -> u64 {
        match self {
            RequestKind::Write { ops } => u64::from(ops),
            RequestKind::Read | RequestKind::Publish => 1,
        }
    }
}

/// A connection's mutable state, shared by its driver and its reader (same thread).
#[derive(Debug)]
struct ConnState {
    /// `None` for subscribers.
    pacer: Option<Pacer<RequestKind>>,
    /// Reads answered whose subscription the driver has still to end with QUERY_UNSUB.
    unsubscribes: Vec<u64>,
    /// We sent our close frame: what follows is the end we asked for.
    closing: bool,
    /// The reader has stopped (the socket closed or failed).
    ended: bool,
}

/// One connection's fixed context.
struct Conn {
    plan: ConnPlan,
    shared: Arc<Shared>,
    recorder: Rc<RefCell<Recorder>>,
    times: Times,
    state: RefCell<ConnState>,
    signal: Signal,
    /// The map this connection writes to and reads from.
    map: String,
    node_id: String,
}

impl Conn {
    fn workload(&self) -> &Workload {
        &self.shared.plan.workload
    }

    fn row_of(&self, kind: RequestKind) -> RowId {
        match (self.workload().kind, kind) {
            (Kind::Mixed, RequestKind::Read) => RowId::MixedRead,
            (Kind::Mixed, _) => RowId::MixedWrite,
            (Kind::Fanout, _) => RowId::FanoutWrite,
            (Kind::Pubsub, _) => RowId::PubsubPublish,
            _ => RowId::Put,
        }
    }

    /// The row a connection-level error (a close, a socket error) is charged to.
    fn own_row(&self) -> RowId {
        match (self.workload().kind, self.plan.role) {
            (Kind::Fanout, Role::Subscriber) => RowId::FanoutEvent,
            (Kind::Pubsub, Role::Subscriber) => RowId::PubsubMessage,
            (Kind::Storm, _) => RowId::Connect,
            _ => self.row_of(RequestKind::Write { ops: 1 }),
        }
    }

    fn error(&self, row: RowId, kind: &str) {
        self.recorder.borrow_mut().error(row, kind, 1);
    }

    /// A request was answered: record its latency and wake the driver.
    fn answered(&self, request: crate::pacing::InFlight<RequestKind>, reply_ns: Nanos) {
        let ops = request.kind.ops();
        self.recorder.borrow_mut().latency(self.row_of(request.kind), request.intended_ns, reply_ns, ops);
        self.shared.progress.ops.fetch_add(ops, Ordering::Relaxed);
        self.signal.notify();
    }

    fn delivered(&self, row: RowId, stamp_ns: Option<Nanos>, now_ns: Nanos) {
        match stamp_ns {
            Some(stamp_ns) => {
                self.recorder.borrow_mut().latency(row, stamp_ns, now_ns, 1);
                self.shared.progress.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            None => self.error(row, "delivery without the generator's stamp"),
        }
    }

    /// Handles one frame from the server.
    fn on_frame(&self, bytes: &[u8]) {
        // The clock is read before decoding, so decoding is not charged to the server.
        let now_ns = self.shared.now_ns();
        let frame = match decode_frame(bytes) {
            Ok(frame) => frame,
            Err(_) => {
                self.error(self.own_row(), "undecodable frame");
                return;
            }
        };
        self.recorder.borrow_mut().seen(frame.kind, frame.type_text);
        let subscriber = self.plan.role == Role::Subscriber;
        match frame.kind {
            Some(MessageType::OpAck) => {
                let last_id =
                    get(&frame.body, "payload.lastId").and_then(as_str).and_then(|text| text.parse::<u64>().ok());
                let request = {
                    let mut state = self.state.borrow_mut();
                    let Some(pacer) = state.pacer.as_mut() else { return };
                    match last_id {
                        Some(id) => pacer.on_reply(id),
                        // An ack without a numeric id acknowledges the oldest write.
                        None => pacer.on_reply_oldest(|kind| matches!(kind, RequestKind::Write { .. })),
                    }
                };
                if let Some(request) = request {
                    self.answered(request, now_ns);
                }
                if let Some(rmpv::ValueRef::Array(results)) = get(&frame.body, "payload.results") {
                    for result in results {
                        if get(result, "success") == Some(&rmpv::ValueRef::Boolean(false)) {
                            let reason = get(result, "error").and_then(as_str).unwrap_or("no reason given");
                            self.error(
                                self.row_of(RequestKind::Write { ops: 1 }),
                                &clip(&format!("op failed: {reason}")),
                            );
                        }
                    }
                }
            }
            Some(MessageType::QueryResp) if !subscriber => {
                let query_number = get(&frame.body, "payload.queryId")
                    .and_then(as_str)
                    .and_then(|id| id.strip_prefix('q'))
                    .and_then(|number| number.parse::<u64>().ok());
                let Some(query_number) = query_number else { return };
                let request = {
                    let mut state = self.state.borrow_mut();
                    state.unsubscribes.push(query_number);
                    state.pacer.as_mut().and_then(|pacer| pacer.on_reply(query_number))
                };
                match request {
                    Some(request) => self.answered(request, now_ns),
                    None => self.signal.notify(),
                }
            }
            Some(MessageType::Pong) if self.plan.role == Role::Publisher => {
                // Heartbeat PONGs echo wall-clock milliseconds, which are no request id.
                let Some(id) = get(&frame.body, "timestamp").and_then(as_u64) else { return };
                let request = self.state.borrow_mut().pacer.as_mut().and_then(|pacer| pacer.on_reply(id));
                if let Some(request) = request {
                    self.answered(request, now_ns);
                }
            }
            Some(MessageType::Error) => self.on_error_frame(&frame.body),
            Some(MessageType::OpRejected) => {
                let reason = get(&frame.body, "payload.reason").and_then(as_str).unwrap_or("");
                self.error(self.row_of(RequestKind::Write { ops: 1 }), &clip(&format!("OP_REJECTED: {reason}")));
            }
            Some(MessageType::ServerEvent) if subscriber => {
                let stamp = get(&frame.body, "payload.record.value.t").and_then(as_u64);
                self.delivered(RowId::FanoutEvent, stamp, now_ns);
            }
            Some(MessageType::QueryUpdate) if subscriber => {
                let stamp = get(&frame.body, "payload.value.t").and_then(as_u64);
                self.delivered(RowId::FanoutUpdate, stamp, now_ns);
            }
            Some(MessageType::TopicMessage) if subscriber => {
                let stamp = get(&frame.body, "payload.data.t").and_then(as_u64);
                self.delivered(RowId::PubsubMessage, stamp, now_ns);
            }
            Some(MessageType::AuthFail) | Some(MessageType::AuthRequired) => {
                self.error(self.own_row(), frame.type_text);
                self.shared.fail(format!("the server sent {} during the run", frame.type_text));
            }
            _ => {}
        }
    }

    /// `ERROR` names no request. A connection's messages are handled in order, so it answers
    /// the oldest request in flight, which counts as failed (not as a latency).
    fn on_error_frame(&self, body: &rmpv::ValueRef<'_>) {
        let code = get(body, "payload.code").and_then(as_u64).unwrap_or(0);
        let message = get(body, "payload.message").and_then(as_str).unwrap_or("");
        let failed = self.state.borrow_mut().pacer.as_mut().and_then(|pacer| pacer.on_reply_oldest(|_| true));
        let row = failed.map_or(self.own_row(), |request| self.row_of(request.kind));
        self.error(row, &clip(&format!("ERROR {code}: {message}")));
        if code == 501 {
            let what = if self.workload().kind == Kind::Pubsub { " (does the server implement topics?)" } else { "" };
            self.shared.fail(format!("the server answered ERROR 501 {message:?}{what}"));
        }
        self.signal.notify();
    }

    /// Encodes the next request into `out`; returns its id and kind. Op ids ascend per
    /// connection like the stock client's; a batch's id is its last op's, which `OP_ACK`
    /// names in `lastId`.
    fn encode_request(&self, out: &mut Vec<u8>, sequence: &mut Sequence, intended_ns: Nanos) -> (u64, RequestKind) {
        let workload = self.workload();
        out.clear();
        if self.plan.role == Role::Publisher {
            let id = sequence.next_id();
            let value = BenchValue { key_number: 0, stamp_ns: intended_ns, padding: &workload.padding };
            wire::encode_topic_pub(out, &workload.topic, &value);
            return (id, RequestKind::Publish);
        }
        if workload.kind == Kind::Mixed && sequence.random_unit() < workload.read_ratio {
            let id = sequence.next_id();
            let key_number = sequence.random_below(workload.keys);
            wire::encode_query_sub(out, &format!("q{id}"), &self.map, Some(key_number));
            return (id, RequestKind::Read);
        }
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_millis() as u64).unwrap_or(0);
        let keys: Vec<(u64, String)> = (0..workload.batch)
            .map(|_| {
                let key_number = sequence.random_below(workload.keys);
                let key = if workload.kind == Kind::Fanout {
                    // Each writer has its own keys, so every write is newer than the stored
                    // record and produces an event (an older one would be a no-op).
                    format!("w{}-k{key_number}", self.plan.role_index)
                } else {
                    format!("k{key_number}")
                };
                (key_number, key)
            })
            .collect();
        let ops: Vec<PutOp<'_>> = keys
            .iter()
            .map(|(key_number, key)| PutOp {
                id: sequence.next_id(),
                map_name: &self.map,
                key,
                value: BenchValue { key_number: *key_number, stamp_ns: intended_ns, padding: &workload.padding },
                timestamp: Timestamp { millis, counter: sequence.next_counter(), node_id: &self.node_id },
                write_concern: workload.write_concern,
            })
            .collect();
        wire::encode_op_batch(out, &ops);
        (ops.last().expect("a batch has at least one op").id, RequestKind::Write { ops: workload.batch })
    }
}

/// Per-connection counters and random numbers (splitmix64, seeded by the connection number so
/// runs are repeatable).
struct Sequence {
    next_id: u64,
    counter: u32,
    random_state: u64,
}

impl Sequence {
    fn new(conn_index: usize) -> Sequence {
        Sequence { next_id: 1, counter: 0, random_state: 0x9E37_79B9_7F4A_7C15 ^ conn_index as u64 }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn next_counter(&mut self) -> u32 {
        self.counter = self.counter.wrapping_add(1);
        self.counter
    }

    fn random_u64(&mut self) -> u64 {
        self.random_state = self.random_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.random_state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        self.random_u64() % bound
    }

    fn random_unit(&mut self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn send_bytes(sender: &mut Sender, bytes: &[u8]) -> Result<(), WsError> {
    sender.send(Message::binary(bytes.to_vec())).await
}

/// Sends a heartbeat `PING` when one is due; returns when the next is due.
async fn heartbeat(sender: &mut Sender, out: &mut Vec<u8>, now_ns: Nanos, due_ns: Nanos) -> Result<Nanos, WsError> {
    if now_ns < due_ns {
        return Ok(due_ns);
    }
    out.clear();
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_millis() as u64).unwrap_or(0);
    wire::encode_ping(out, millis);
    send_bytes(sender, out).await?;
    Ok(now_ns + HEARTBEAT_INTERVAL_MS * MS)
}

/// The sending side of a writer or publisher: paced requests until the end of the window,
/// then the drain. Returns when the connection may be closed.
async fn drive_requests(conn: &Conn, sender: &mut Sender) {
    let shared = &conn.shared;
    let mut out = Vec::with_capacity(256);
    let mut unsubscribe = Vec::with_capacity(64);
    let mut ping = Vec::with_capacity(32);
    let mut sequence = Sequence::new(conn.plan.conn_index);
    let mut heartbeat_due_ns = conn.times.start_ns + HEARTBEAT_INTERVAL_MS * MS;
    let send_failed = |error: WsError| {
        if !conn.state.borrow().ended {
            conn.error(conn.own_row(), &clip(&format!("send failed: {error}")));
        }
    };
    let mut draining = false;
    // Requests sent back to back (an open-loop backlog, or a wide window filling up) without
    // a wait in between; every `SENDS_BEFORE_YIELD_MAX` of them the driver yields so the
    // thread's readers, and its other connections, get their turn.
    let mut sends_without_wait: u32 = 0;
    loop {
        if shared.aborted() || conn.state.borrow().ended {
            break;
        }
        let now_ns = shared.now_ns();
        let answered_reads = std::mem::take(&mut conn.state.borrow_mut().unsubscribes);
        for query_number in answered_reads {
            unsubscribe.clear();
            wire::encode_query_unsub(&mut unsubscribe, &format!("q{query_number}"));
            if let Err(error) = send_bytes(sender, &unsubscribe).await {
                return send_failed(error);
            }
        }
        heartbeat_due_ns = match heartbeat(sender, &mut ping, now_ns, heartbeat_due_ns).await {
            Ok(due_ns) => due_ns,
            Err(error) => return send_failed(error),
        };
        if draining {
            let in_flight = conn.state.borrow().pacer.as_ref().map_or(0, |pacer| pacer.in_flight_count());
            if in_flight == 0 || now_ns >= conn.times.drain_until_ns {
                break;
            }
            conn.signal.wait_until(shared, conn.times.drain_until_ns.min(heartbeat_due_ns)).await;
            continue;
        }
        let next = conn.state.borrow().pacer.as_ref().expect("senders have a pacer").poll_send(now_ns);
        match next {
            NextSend::Now { intended_ns } => {
                let (id, kind) = conn.encode_request(&mut out, &mut sequence, intended_ns);
                // Registered before sending: the reply can arrive while the send is pending.
                conn.state.borrow_mut().pacer.as_mut().expect("senders have a pacer").on_sent(
                    id,
                    intended_ns,
                    now_ns,
                    kind,
                );
                if let Err(error) = send_bytes(sender, &out).await {
                    return send_failed(error);
                }
                if shared.plan.rate_ops_per_s.is_some() {
                    conn.recorder.borrow_mut().latency(RowId::SendLag, intended_ns, shared.now_ns(), kind.ops());
                }
                sends_without_wait += 1;
                if sends_without_wait >= SENDS_BEFORE_YIELD_MAX {
                    sends_without_wait = 0;
                    futures_lite::future::yield_now().await;
                }
                if kind == RequestKind::Publish {
                    // Topics have no acknowledgement: the PONG to this PING stands for it.
                    ping.clear();
                    wire::encode_ping(&mut ping, id);
                    if let Err(error) = send_bytes(sender, &ping).await {
                        return send_failed(error);
                    }
                }
            }
            NextSend::At(due_ns) => {
                sends_without_wait = 0;
                conn.signal.wait_until(shared, due_ns.min(heartbeat_due_ns)).await;
            }
            NextSend::WindowFull => {
                sends_without_wait = 0;
                conn.signal.wait_until(shared, heartbeat_due_ns).await;
            }
            NextSend::Finished => draining = true,
        }
    }
}

/// Whatever a writer left unanswered or unsent in the measured window counts as failed.
fn account_unfinished(conn: &Conn) {
    let (unanswered, unsent) = {
        let mut state = conn.state.borrow_mut();
        let Some(pacer) = state.pacer.as_mut() else { return };
        (pacer.take_unanswered(), pacer.unsent_count(conn.times.measure_from_ns))
    };
    let mut recorder = conn.recorder.borrow_mut();
    for request in unanswered {
        if recorder.in_window(request.intended_ns) {
            recorder.error(conn.row_of(request.kind), "unanswered", 1);
        }
    }
    if unsent > 0 {
        recorder.error(conn.own_row(), "not sent: in-flight window full", unsent);
    }
}

/// The sending side of a subscriber: heartbeats until the writers are done (plus a grace
/// period for deliveries on their way), or the drain deadline.
async fn hold_subscription(conn: &Conn, sender: &mut Sender) {
    let shared = &conn.shared;
    let mut ping = Vec::with_capacity(32);
    let mut heartbeat_due_ns = conn.times.start_ns + HEARTBEAT_INTERVAL_MS * MS;
    let mut senders_done_ns: Option<Nanos> = None;
    loop {
        if shared.aborted() || conn.state.borrow().ended {
            return;
        }
        let now_ns = shared.now_ns();
        if now_ns >= conn.times.end_ns {
            if now_ns >= conn.times.drain_until_ns + DELIVERY_GRACE_MS * MS {
                return;
            }
            if shared.active_senders.load(Ordering::Acquire) == 0 {
                let done_ns = *senders_done_ns.get_or_insert(now_ns);
                if now_ns >= done_ns + DELIVERY_GRACE_MS * MS {
                    return;
                }
            }
        }
        heartbeat_due_ns = match heartbeat(sender, &mut ping, now_ns, heartbeat_due_ns).await {
            Ok(due_ns) => due_ns,
            Err(error) => {
                conn.error(conn.own_row(), &clip(&format!("send failed: {error}")));
                return;
            }
        };
        let wake_ns = if now_ns < conn.times.end_ns {
            conn.times.end_ns.min(heartbeat_due_ns)
        } else {
            (now_ns + STOP_POLL_INTERVAL_MS * MS).min(heartbeat_due_ns)
        };
        sleep_until(shared, wake_ns).await;
    }
}

/// Reads every frame of one connection until it closes.
async fn read_frames(conn: Rc<Conn>, mut receiver: Receiver) {
    while let Some(message) = receiver.next().await {
        match message {
            Ok(Message::Binary(bytes)) => conn.on_frame(&bytes),
            Ok(Message::Close(frame)) => {
                if !conn.state.borrow().closing {
                    conn.error(conn.own_row(), &format!("closed by the server: {}", describe_close(frame.as_ref())));
                }
                break;
            }
            Ok(_) => {}
            Err(error) => {
                if !conn.state.borrow().closing {
                    conn.error(conn.own_row(), &clip(&format!("socket error: {error}")));
                }
                break;
            }
        }
    }
    conn.state.borrow_mut().ended = true;
    conn.signal.notify();
}

/// One connection's load phase: driver and reader, then an orderly close.
async fn run_connection(conn: Rc<Conn>, socket: Socket) {
    let (mut sender, receiver) = socket.split();
    let reader = glommio::spawn_local(read_frames(Rc::clone(&conn), receiver));
    match conn.plan.role {
        Role::Subscriber => hold_subscription(&conn, &mut sender).await,
        _ => {
            drive_requests(&conn, &mut sender).await;
            account_unfinished(&conn);
            conn.shared.active_senders.fetch_sub(1, Ordering::AcqRel);
        }
    }
    conn.state.borrow_mut().closing = true;
    if !conn.state.borrow().ended {
        let _ = within(CLOSE_TIMEOUT_MS, sender.close(None)).await;
    }
    // The reader ends when the server echoes our close; a server that does not is left behind.
    let _ = within(CLOSE_TIMEOUT_MS, reader).await;
}

/// The pacing of one sending connection.
fn pacing_of(plan: &Plan, conn: &ConnPlan, start_ns: Nanos) -> Pacing {
    match plan.rate_ops_per_s {
        None => Pacing::Closed { window: plan.window },
        Some(rate) => {
            let workload = &plan.workload;
            let ops_per_request = match (workload.kind, conn.role) {
                (_, Role::Publisher) => 1.0,
                (Kind::Mixed, _) => workload.read_ratio + (1.0 - workload.read_ratio) * f64::from(workload.batch),
                _ => f64::from(workload.batch),
            };
            let schedule = Schedule::for_connection(start_ns, rate, ops_per_request, conn.role_count, conn.role_index);
            Pacing::Open { schedule, window: plan.window }
        }
    }
}

/// One generator thread running put, mixed, fanout or pubsub.
async fn load_thread(thread: ThreadPlan, shared: Arc<Shared>, recorder: Rc<RefCell<Recorder>>) {
    let mut ready: Vec<(ConnPlan, Socket)> = Vec::with_capacity(thread.conns.len());
    for chunk in thread.conns.chunks(SETUP_CONCURRENCY_MAX) {
        if shared.aborted() {
            break;
        }
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|conn| {
                let shared = Arc::clone(&shared);
                glommio::spawn_local(async move {
                    let result = set_up(&shared, &conn).await;
                    (conn, result)
                })
            })
            .collect();
        for task in tasks {
            let (conn, result) = task.await;
            match result {
                Ok(socket) => {
                    if conn.role != Role::Subscriber {
                        shared.active_senders.fetch_add(1, Ordering::AcqRel);
                    }
                    shared.progress.conns_ready.fetch_add(1, Ordering::Relaxed);
                    ready.push((conn, socket));
                }
                Err(error) => {
                    let kind = shared.plan.workload.kind;
                    recorder.borrow_mut().error(setup_row(kind, conn.role), &error.kind(), 1);
                    let hint = match (&error, kind) {
                        (ConnectError::Refused { code: 501, .. }, Kind::Pubsub) => {
                            " (the server does not implement topics)"
                        }
                        _ => "",
                    };
                    shared.fail(format!("connection {} could not be set up: {error}{hint}", conn.conn_index));
                }
            }
        }
    }
    let start_ns = shared.arrive_and_start().await;
    let times = Times::new(start_ns, &shared.plan);
    recorder.borrow_mut().window = Some((times.measure_from_ns, times.end_ns));
    if shared.aborted() {
        for (_, mut socket) in ready {
            let _ = within(CLOSE_TIMEOUT_MS, socket.close(None)).await;
        }
        return;
    }
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(plan, socket)| {
            let pacer = (plan.role != Role::Subscriber)
                .then(|| Pacer::new(pacing_of(&shared.plan, &plan, start_ns), times.end_ns));
            let workload = &shared.plan.workload;
            let map = if workload.maps > 1 {
                format!("{}-{}", workload.map, plan.conn_index % workload.maps as usize)
            } else {
                workload.map.clone()
            };
            let conn = Rc::new(Conn {
                node_id: format!("bench-{}", plan.conn_index),
                plan,
                shared: Arc::clone(&shared),
                recorder: Rc::clone(&recorder),
                times,
                state: RefCell::new(ConnState { pacer, unsubscribes: Vec::new(), closing: false, ended: false }),
                signal: Signal::default(),
                map,
            });
            glommio::spawn_local(run_connection(conn, socket))
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await;
        }
    };
    // Past the hard deadline the remaining tasks are dropped, which cancels them.
    all.or(sleep_until(&shared, times.hard_deadline_ns)).await;
}

fn setup_row(kind: Kind, role: Role) -> RowId {
    match (kind, role) {
        (Kind::Put, _) => RowId::Put,
        (Kind::Mixed, _) => RowId::MixedWrite,
        (Kind::Fanout, Role::Subscriber) => RowId::FanoutEvent,
        (Kind::Fanout, _) => RowId::FanoutWrite,
        (Kind::Pubsub, Role::Subscriber) => RowId::PubsubMessage,
        (Kind::Pubsub, _) => RowId::PubsubPublish,
        (Kind::Storm, _) => RowId::Connect,
    }
}

/// One generator thread of connect-storm: every round opens all of this thread's connections
/// at once (no setup bound: the burst is the point), records each one's connect + upgrade +
/// auth latency, then closes them all.
async fn storm_thread(thread: ThreadPlan, shared: Arc<Shared>, recorder: Rc<RefCell<Recorder>>) {
    let start_ns = shared.arrive_and_start().await;
    recorder.borrow_mut().window = Some((start_ns, Nanos::MAX));
    for _round in 0..shared.plan.workload.rounds {
        if shared.aborted() {
            return;
        }
        let round_start_ns = shared.now_ns();
        let tasks: Vec<_> = thread
            .conns
            .iter()
            .map(|conn| {
                let shared = Arc::clone(&shared);
                let token = conn.token.clone();
                glommio::spawn_local(async move {
                    let begun_ns = shared.now_ns();
                    let opened = within(HANDSHAKE_TIMEOUT_MS, open_connection(&shared, token.as_deref()))
                        .await
                        .unwrap_or(Err(ConnectError::Timeout("AUTH_ACK or PONG")));
                    (begun_ns, shared.now_ns(), opened)
                })
            })
            .collect();
        let mut sockets = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (begun_ns, opened_ns, opened) = task.await;
            match opened {
                Ok(socket) => {
                    recorder.borrow_mut().latency(RowId::Connect, begun_ns, opened_ns, 1);
                    shared.progress.ops.fetch_add(1, Ordering::Relaxed);
                    sockets.push(socket);
                }
                Err(error) => {
                    if matches!(error, ConnectError::AuthRequired) {
                        shared.fail(error.to_string());
                    }
                    recorder.borrow_mut().error(RowId::Connect, &error.kind(), 1);
                }
            }
        }
        recorder.borrow_mut().storm_open_ns += shared.now_ns() - round_start_ns;
        let closes: Vec<_> = sockets
            .into_iter()
            .map(|mut socket| {
                glommio::spawn_local(async move {
                    let _ = within(CLOSE_TIMEOUT_MS, socket.close(None)).await;
                })
            })
            .collect();
        for close in closes {
            close.await;
        }
    }
}

/// Marks the run failed if its thread unwinds, so the other threads stop waiting for it.
struct ThreadGuard {
    shared: Arc<Shared>,
    _done: mpsc::Sender<()>,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.fail("a generator thread panicked".to_string());
        }
    }
}

fn progress_line(shared: &Shared, elapsed: Duration, ops_delta: u64, deliveries_delta: u64, interval_s: f64) -> String {
    let phase = match shared.start_ns.get() {
        None => {
            let total: usize = shared.plan.roles.iter().map(|(_, count)| count).sum();
            format!("setting up {}/{total} connections", shared.progress.conns_ready.load(Ordering::Relaxed))
        }
        Some(&start_ns) => {
            let times = Times::new(start_ns, &shared.plan);
            let now_ns = shared.now_ns();
            let phase = if shared.plan.workload.kind == Kind::Storm {
                "storming"
            } else if now_ns < times.measure_from_ns {
                "warmup"
            } else if now_ns < times.end_ns {
                "measuring"
            } else {
                "draining"
            };
            let mut line = format!("{phase:<9} {:>10.0} ops/s", ops_delta as f64 / interval_s);
            if deliveries_delta > 0 {
                line.push_str(&format!(" {:>10.0} deliveries/s", deliveries_delta as f64 / interval_s));
            }
            line
        }
    };
    format!("[{:>5.1}s] {phase}  errors {}", elapsed.as_secs_f64(), shared.progress.errors.load(Ordering::Relaxed))
}

/// Runs a scenario to the end and reports on it. `command_line` goes into the report as is.
pub fn run(scenario: &Scenario, command_line: String) -> Result<Report, BenchError> {
    let plan = Plan::new(scenario)?;
    let threads = plan.thread_plans()?;
    let quiet = scenario.target().quiet;
    let shared = Arc::new(Shared {
        thread_count: threads.len(),
        plan,
        base: Instant::now(),
        threads_ready: AtomicUsize::new(0),
        start_ns: OnceLock::new(),
        aborted: AtomicBool::new(false),
        failure: OnceLock::new(),
        active_senders: AtomicUsize::new(0),
        progress: Progress::default(),
    });
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let mut handles = Vec::with_capacity(threads.len());
    let mut spawn_error = None;
    for thread in threads {
        let cpu = thread.cpu;
        let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
        let guard = ThreadGuard { shared: Arc::clone(&shared), _done: done_sender.clone() };
        let spawned = LocalExecutorBuilder::new(placement)
            .name(&format!("bench-{}", thread.index))
            .io_memory(IO_MEMORY_BYTES)
            .ring_depth(RING_DEPTH)
            .spawn(move || async move {
                let shared = Arc::clone(&guard.shared);
                let recorder = Rc::new(RefCell::new(Recorder::new(Arc::clone(&shared))));
                if shared.plan.workload.kind == Kind::Storm {
                    storm_thread(thread, shared, Rc::clone(&recorder)).await;
                } else {
                    load_thread(thread, shared, Rc::clone(&recorder)).await;
                }
                let outcome = match Rc::try_unwrap(recorder) {
                    Ok(recorder) => recorder.into_inner(),
                    // Connection tasks cancelled at the hard deadline (a generator that could
                    // not keep up) are dropped only when the executor next gets to them; what
                    // they measured is already recorded, so take it from under them.
                    Err(recorder) => recorder.replace(Recorder::new(Arc::clone(&guard.shared))),
                };
                drop(guard);
                outcome.into_outcome()
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shared.fail(format!("cannot start a generator thread: {error}"));
                spawn_error = Some(BenchError::Spawn { cpu, message: error.to_string() });
                break;
            }
        }
    }
    drop(done_sender);

    // The progress line: once a second until every thread is done.
    let begun = Instant::now();
    let mut last_tick = begun;
    let (mut last_ops, mut last_deliveries) = (0, 0);
    loop {
        match done_receiver.recv_timeout(Duration::from_millis(PROGRESS_INTERVAL_MS)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                let ops = shared.progress.ops.load(Ordering::Relaxed);
                let deliveries = shared.progress.deliveries.load(Ordering::Relaxed);
                let interval_s = last_tick.elapsed().as_secs_f64().max(1e-3);
                if !quiet {
                    eprintln!(
                        "{}",
                        progress_line(
                            &shared,
                            begun.elapsed(),
                            ops - last_ops,
                            deliveries - last_deliveries,
                            interval_s
                        )
                    );
                }
                (last_ops, last_deliveries, last_tick) = (ops, deliveries, Instant::now());
            }
        }
    }
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut panicked = false;
    for handle in handles {
        match handle.join() {
            Ok(outcome) => outcomes.push(outcome),
            Err(_) => panicked = true,
        }
    }
    if let Some(error) = spawn_error {
        return Err(error);
    }
    if panicked {
        return Err(BenchError::Panicked);
    }
    Ok(build_report(&shared, outcomes, command_line))
}

/// The rows each scenario shows, in order.
fn rows_of(kind: Kind) -> &'static [RowId] {
    match kind {
        Kind::Put => &[RowId::Put, RowId::SendLag],
        Kind::Mixed => &[RowId::MixedWrite, RowId::MixedRead, RowId::SendLag],
        Kind::Fanout => &[RowId::FanoutWrite, RowId::FanoutEvent, RowId::FanoutUpdate, RowId::SendLag],
        Kind::Pubsub => &[RowId::PubsubPublish, RowId::PubsubMessage, RowId::SendLag],
        Kind::Storm => &[RowId::Connect],
    }
}

fn build_report(shared: &Shared, outcomes: Vec<ThreadOutcome>, command_line: String) -> Report {
    let plan = &shared.plan;
    let kind = plan.workload.kind;
    let mut rows: BTreeMap<RowId, RowStats> = BTreeMap::new();
    let mut seen = vec![0u64; MessageType::ALL.len()];
    let mut messages_seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut storm_open_ns: Nanos = 0;
    for outcome in outcomes {
        for (row, stats) in outcome.rows {
            let merged = rows.entry(row).or_default();
            merged.histogram.merge(&stats.histogram);
            for (error, count) in stats.errors {
                *merged.errors.entry(error).or_default() += count;
            }
        }
        for (total, count) in seen.iter_mut().zip(&outcome.seen) {
            *total += count;
        }
        for (type_text, count) in outcome.seen_unknown {
            *messages_seen.entry(type_text).or_default() += count;
        }
        storm_open_ns = storm_open_ns.max(outcome.storm_open_ns);
    }
    for (&message_type, &count) in MessageType::ALL.iter().zip(&seen) {
        if count > 0 {
            messages_seen.insert(message_type.as_str().to_string(), count);
        }
    }
    let measured_s = if kind == Kind::Storm { storm_open_ns as f64 / 1e9 } else { plan.duration_ns as f64 / 1e9 };
    let count_of = |row: RowId| rows.get(&row).map_or(0, |stats| stats.histogram.count());
    let conns_of_row = |row: RowId| match row {
        RowId::FanoutEvent | RowId::FanoutUpdate | RowId::PubsubMessage => plan.conns_of(Role::Subscriber),
        RowId::PubsubPublish => plan.conns_of(Role::Publisher),
        RowId::SendLag if kind == Kind::Pubsub => plan.conns_of(Role::Publisher),
        RowId::Connect => plan.conns_of(Role::Storm),
        _ => plan.conns_of(Role::Writer),
    };
    let mut report_rows = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for &row in rows_of(kind) {
        let stats = rows.get(&row).cloned().unwrap_or_default();
        // QUERY_UPDATE is shown once a server sends it, send lag in open loop.
        if matches!(row, RowId::FanoutUpdate | RowId::SendLag)
            && stats.histogram.count() == 0
            && stats.errors.is_empty()
        {
            continue;
        }
        for (error, count) in &stats.errors {
            *errors.entry(error.clone()).or_default() += count;
        }
        report_rows.push(Row {
            name: row.name(),
            conns: conns_of_row(row),
            latency: stats.histogram.summary(measured_s),
            errors: stats.errors,
        });
    }
    let subscribers = plan.conns_of(Role::Subscriber) as u64;
    let deliveries_expected = match kind {
        Kind::Fanout => Some(count_of(RowId::FanoutWrite) * subscribers),
        Kind::Pubsub => Some(count_of(RowId::PubsubPublish) * subscribers),
        _ => None,
    };
    let failure = shared.failure.get().cloned().or_else(|| match kind {
        Kind::Put if count_of(RowId::Put) == 0 => Some("no write was acknowledged in the measured window".to_string()),
        Kind::Mixed if count_of(RowId::MixedWrite) + count_of(RowId::MixedRead) == 0 => {
            Some("no request was answered in the measured window".to_string())
        }
        Kind::Fanout if count_of(RowId::FanoutWrite) == 0 => {
            Some("no write was acknowledged in the measured window".to_string())
        }
        Kind::Fanout if count_of(RowId::FanoutEvent) + count_of(RowId::FanoutUpdate) == 0 => {
            Some("no SERVER_EVENT or QUERY_UPDATE from a measured write reached a subscriber".to_string())
        }
        Kind::Pubsub if count_of(RowId::PubsubMessage) == 0 => {
            Some("no TOPIC_MESSAGE from a measured publish reached a subscriber".to_string())
        }
        Kind::Storm if count_of(RowId::Connect) == 0 => Some("no connection was set up".to_string()),
        _ => None,
    });
    Report {
        command_line,
        machine: Machine { cpus_available: available_cpus().len(), cpus_online: cpus_online() },
        scenario: plan.scenario.name(),
        bench_cores: plan.cpus.clone(),
        mode: if plan.rate_ops_per_s.is_some() { "open" } else { "closed" },
        parameters: serde_json::to_value(&plan.scenario).unwrap_or(serde_json::Value::Null),
        measured_s,
        rows: report_rows,
        errors,
        messages_seen,
        deliveries_expected,
        failure,
    }
}

/// CPUs online in the machine (not only those this process may use).
fn cpus_online() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(count).unwrap_or(0)
}
