//! shardgrid::session: one WebSocket connection's protocol state and message handling. A
//! `Session` lives on the connection's shard, inside the connection task; it decodes each
//! frame, enforces the handshake (nothing but AUTH and PING is executed before authentication,
//! and nothing but handshake replies is ever sent before it), and dispatches through the
//! registry to the handler families in the submodules. Messages take effect one at a time in
//! the order they arrived (DECISIONS §2.2).

mod access;
mod cluster;
mod coordination;
mod counters;
mod handshake;
mod journal;
mod locks;
mod processors;
mod queries;
pub mod registry;
mod resolvers;
mod search;
mod sync;
mod topics;
mod writes;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ahash::{AHashMap, AHashSet};

use crate::auth::Principal;
use crate::net::outbox::{CloseReason, Outbox};
use crate::node::{wall_ms, Node};
use crate::protocol::{decode_client_message, encode, unpack_batch, ClientMessage, DecodeLimits, ServerMessage};
use crate::shard::{ConnId, ConnRef};
use registry::Family;

/// Where the handshake stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum AuthState {
    Pending,
    Authenticated(Principal),
}

/// A live query of this connection: its number in the node's live-query table.
struct QuerySubscription {
    local: u64,
}

/// See the module doc.
pub struct Session {
    node: Rc<Node>,
    conn: ConnId,
    outbox: Rc<Outbox>,
    auth: AuthState,
    /// Maps this connection is interested in (DECISIONS §3.1); withdrawn on close.
    interested: AHashSet<Arc<str>>,
    queries: AHashMap<String, QuerySubscription>,
    /// Live searches by subscription id -> the node's local number.
    searches: AHashMap<String, u64>,
    /// Topics, counters, journal subscriptions and lock owners of this connection.
    coord: coordination::CoordSession,
    limits: DecodeLimits,
    /// Scratch buffer for encoding replies; its capacity is kept between messages.
    encode_buffer: Vec<u8>,
    /// Token bucket of the per-connection rate limit: ops available, refilled with time.
    rate_tokens: f64,
    rate_refilled: Instant,
    /// When the frame being handled arrived: the start of its request latency, and the rate
    /// limiter's clock (one clock read per frame serves both).
    frame_arrived: Instant,
}

impl Session {
    /// Registers the connection on its shard and sends what the handshake sends first.
    pub fn open(node: Rc<Node>, outbox: Rc<Outbox>) -> Session {
        let now = wall_ms();
        let jwt_mode = node.verifier().is_some();
        let (deadline_ms, reason) = if jwt_mode {
            (now + node.config.auth_timeout_ms, CloseReason::AuthenticationTimeout)
        } else {
            (now + node.config.idle_timeout_ms, CloseReason::IdleTimeout)
        };
        let conn = node.open_conn(Rc::clone(&outbox), deadline_ms);
        node.set_deadline(conn, deadline_ms, reason);
        let limits = DecodeLimits { max_depth: node.config.max_nesting_depth };
        let rate_burst = (node.config.rate_limit_ops * crate::limits::RATE_BURST_SECONDS) as f64;
        let mut session = Session {
            node,
            conn,
            outbox,
            auth: if jwt_mode { AuthState::Pending } else { AuthState::Authenticated(Principal::anonymous()) },
            interested: AHashSet::new(),
            queries: AHashMap::new(),
            searches: AHashMap::new(),
            coord: coordination::CoordSession::default(),
            limits,
            encode_buffer: Vec::with_capacity(1024),
            rate_tokens: rate_burst,
            rate_refilled: Instant::now(),
            frame_arrived: Instant::now(),
        };
        if jwt_mode {
            // PROTOCOL §3.1: sent immediately, before reading anything.
            session.send(&ServerMessage::AuthRequired);
        }
        session
    }

    fn conn_ref(&self) -> ConnRef {
        ConnRef { shard: self.node.shard, conn: self.conn }
    }

    fn is_authenticated(&self) -> bool {
        matches!(self.auth, AuthState::Authenticated(_))
    }

    /// Encodes and queues one message.
    fn send(&mut self, message: &ServerMessage) {
        self.encode_buffer.clear();
        encode(message, &mut self.encode_buffer);
        self.outbox.push(bytes::Bytes::copy_from_slice(&self.encode_buffer));
    }

    /// Queues `ERROR {code, message}` — only ever to an authenticated connection.
    fn send_error(&mut self, code: u16, message: String) {
        if !self.is_authenticated() {
            return;
        }
        self.node.count_error(code);
        self.send(&ServerMessage::Error { code, message, details: None });
    }

    /// A text frame is not a protocol message (PROTOCOL §1.1: binary frames only).
    pub fn on_text_frame(&mut self) {
        self.send_error(400, "malformed message: text frames are not supported; send msgpack in binary frames".into());
    }

    /// Handles one binary frame, and records how long it took by message type (a frame that
    /// does not decode has no type and is not recorded).
    pub async fn on_frame(&mut self, frame: &[u8]) {
        self.frame_arrived = Instant::now();
        self.node.bump(|stats| stats.messages_received += 1);
        match decode_client_message(frame, &self.limits) {
            Ok(message) => {
                let message_type = message.message_type();
                self.dispatch(message, true).await;
                self.node.record_request(message_type, self.frame_arrived.elapsed());
            }
            Err(error) => {
                let (code, message) = error.error_reply();
                self.send_error(code, message);
            }
        }
    }

    /// Runs one decoded message through the handshake gate and the registry. Boxed because an
    /// inbound `BATCH` dispatches its inner messages through here again (one level only).
    fn dispatch(&mut self, message: ClientMessage, allow_envelope: bool) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let message_type = message.message_type();
            let family = registry::family(message_type);
            if !self.is_authenticated() && !matches!(family, Family::Handshake | Family::Liveness) {
                return; // DECISIONS §5: ignored before auth, no reply.
            }
            if let Err((code, text)) = self.admit(&message) {
                return self.send_error(code, text);
            }
            match family {
                Family::Handshake => self.on_handshake(message),
                Family::Liveness => self.on_ping(message),
                Family::Writes => self.on_write(message).await,
                Family::Queries => self.on_query(message).await,
                Family::Search => self.on_search(message).await,
                Family::Processors => self.on_processor(message).await,
                Family::Resolvers => self.on_resolver(message).await,
                Family::Topics => self.on_topic(message).await,
                Family::Locks => self.on_lock(message).await,
                Family::Counters => self.on_counter(message).await,
                Family::Journal => self.on_journal(message).await,
                Family::Cluster => self.on_cluster(message),
                Family::Sync => self.on_sync(message).await,
                Family::Envelope if allow_envelope => self.on_batch_envelope(message).await,
                Family::Envelope => self.send_error(400, "malformed message: BATCH inside BATCH".into()),
                Family::Ignored => {}
                Family::SqlDisabled => self.on_sql(message),
                Family::NotImplemented => {
                    self.send_error(501, format!("not implemented: {}", message_type.as_str()));
                }
            }
        })
    }

    /// PROTOCOL §4.13: the inner messages are processed in order, as if sent one by one.
    async fn on_batch_envelope(&mut self, message: ClientMessage) {
        let ClientMessage::Batch { data, .. } = message else { unreachable!("registry routes BATCH here") };
        let frames = match unpack_batch(&data) {
            Ok(frames) => frames,
            Err(error) => {
                let (code, text) = error.error_reply();
                return self.send_error(code, text);
            }
        };
        for frame in frames {
            match decode_client_message(frame, &self.limits) {
                Ok(inner) => self.dispatch(inner, false).await,
                Err(error) => {
                    let (code, text) = error.error_reply();
                    self.send_error(code, text);
                }
            }
        }
    }

    fn on_sql(&mut self, message: ClientMessage) {
        let ClientMessage::SqlQuery { query_id, .. } = message else { unreachable!("registry routes SQL_QUERY here") };
        self.send(&ServerMessage::SqlQueryResp {
            query_id,
            columns: Vec::new(),
            rows: Vec::new(),
            error: Some("SQL queries are not supported by this server".into()),
            code: Some("FEATURE_DISABLED".into()),
        });
    }

    /// The checks every authenticated message passes before its handler runs: the rate limit
    /// (PROTOCOL §1.2: an OP_BATCH costs its op count) and the access policy (a denied message
    /// hops nowhere and applies nothing). Returns the ERROR to send instead.
    fn admit(&mut self, message: &ClientMessage) -> Result<(), (u16, String)> {
        let AuthState::Authenticated(principal) = &self.auth else { return Ok(()) };
        let cost = match message {
            ClientMessage::OpBatch { ops, .. } => ops.len().max(1) as f64,
            _ => 1.0,
        };
        let rate = self.node.config.rate_limit_ops as f64;
        let burst = rate * crate::limits::RATE_BURST_SECONDS as f64;
        // The frame's arrival; the inner messages of a BATCH envelope share it.
        let now = self.frame_arrived;
        self.rate_tokens = (self.rate_tokens + now.duration_since(self.rate_refilled).as_secs_f64() * rate).min(burst);
        self.rate_refilled = now;
        if cost > self.rate_tokens {
            return Err((429, "rate limit exceeded, slow down".into()));
        }
        self.rate_tokens -= cost;
        let mut needs = Vec::new();
        access::required(message, &mut needs);
        for need in &needs {
            self.node.config.policy.check(principal, need).map_err(|denied| (403, denied.to_string()))?;
        }
        Ok(())
    }

    /// Whether this connection holds as many live queries and searches as it may.
    fn at_subscription_limit(&self) -> bool {
        self.queries.len() + self.searches.len() >= self.node.config.max_subscriptions_per_connection
    }

    /// Makes this connection interested in `map` (DECISIONS §3.1).
    async fn add_interest(&mut self, map: &str) {
        if !self.interested.contains(map) {
            let map: Arc<str> = Arc::from(map);
            self.interested.insert(Arc::clone(&map));
            self.node.add_interest(&map, self.conn).await;
        }
    }

    /// Unregisters the connection and withdraws its interest on every shard.
    pub async fn close(mut self) {
        self.close_coordination().await;
        let locals = self.queries.values().map(|subscription| subscription.local).collect();
        self.node.unsubscribe_live(locals).await;
        self.node.unsubscribe_search(self.searches.values().copied().collect()).await;
        let maps: Vec<Arc<str>> = self.interested.into_iter().collect();
        self.node.close_conn(self.conn, maps).await;
    }
}
