//! shardgrid::node: one shard at run time. A `Node` owns the shard's data, its connections'
//! outboxes and its interest tables, answers the requests that reach it over the mesh (`Hop`),
//! and offers the connection handlers the cross-shard operations they need (apply a batch on
//! its owners, gather a query snapshot from every shard, announce interest).
//!
//! Lives on its shard, behind an `Rc`; every method runs on that shard's executor. The
//! `RefCell`s are never borrowed across an `.await`. The sync requests and operations are in
//! the `sync` submodule; what the shard records for `/metrics` beyond its counters is in
//! `report`.

mod report;
mod sync;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;
use bytes::Bytes;
use shardgrid_shards::mesh::MeshStats;
use shardgrid_shards::{Mesh, MeshHandler, PartitionId, PartitionTable, ShardId};

use crate::auth::TokenVerifier;
use crate::cli::{AuthMode, Config};
use crate::coord::service::{CoordHop, CoordReply, CoordState};
use crate::hash::partition_of;
use crate::live::index::SubscriptionIndex;
use crate::live::window::LiveQuery;
use crate::live::{evaluate_event, live_value, QueryUpdate, SubChange, SubKey};
use crate::model::ValueBytes;
use crate::net::outbox::{CloseReason, Outbox};
use crate::persist::{DurabilityWatch, ShardStore, Ticket};
use crate::protocol::{
    encode, ChangeType, ClientOp, EntryProcessResult, ResolverInfo, ServerEvent, ServerEventBody, ServerMessage,
};
use crate::query::{project, Page, Query, ResolvedCursor};
use crate::scripting::resolvers::{MapResolvers, ResolverChange};
use crate::scripting::{Processed, ProcessorCall, Scripting};
use crate::search::coordinator::LiveSearch;
use crate::search::subscriptions::{SearchChange, SearchSpec, SearchSubscriptions};
use crate::search::{Hit, TermStats};
use crate::shard::interest::Announce;
use crate::shard::{Change, ChangeEvent, ConnId, ConnRef, Interest, OpOutcome, Row, ShardData};
pub use report::ShardReport;
pub use sync::{SyncHop, SyncReply, NO_CONNECTION};

/// A request that travels between shards (or is handled locally by the same code).
pub enum Hop {
    /// Apply these ops, all owned by the receiving shard, in order. Replies `Applied`, with a
    /// durability ticket when `persist` (the batch asked for `PERSISTED`).
    /// `writer_alone`: on the writer's shard, the writer was the only connection interested in
    /// the batch's maps when it sent them, so that shard needs none of their events (a writer
    /// gets no event for its own write).
    Apply { ops: Vec<ClientOp>, writer: ConnRef, persist: bool, writer_alone: bool },
    /// `owner`'s log is durable up to `durable`; with `failed`, positions up to the first
    /// will not become durable, for the reason given (`persist::watch`). No reply.
    Durable {
        owner: ShardId,
        durable: shardgrid_storage::LogPosition,
        failed: Option<(shardgrid_storage::LogPosition, Arc<str>)>,
    },
    /// Gather the live rows of `map` matching `query` after `cursor`, at most one more than
    /// the query's page size; with `register`, also register that live subscription, in the
    /// same step so no write falls between the two. Replies `Rows`.
    Snapshot { register: Option<SubKey>, map: Arc<str>, query: Arc<Query>, cursor: Arc<ResolvedCursor> },
    /// Forget these live subscriptions. No reply.
    Unsubscribe { subs: Vec<SubKey> },
    /// `shard` has (or no longer has) connections interested in `map`. No reply.
    Interest { map: Arc<str>, shard: ShardId, interested: bool },
    /// Deliver these encoded `SERVER_EVENT` frames to local connections interested in each map,
    /// except the writer, and these live-query and live-search changes to local subscriptions.
    /// No reply.
    Deliver {
        frames: Vec<(Arc<str>, Bytes)>,
        writer: ConnRef,
        changes: Vec<SubChange>,
        search_changes: Vec<SearchSubChange>,
    },
    /// This shard's share of `map`'s search statistics for `terms` (indexing the map on first
    /// use). Replies `SearchStats`.
    SearchStats { map: Arc<str>, terms: Arc<Vec<String>> },
    /// This shard's best hits scored with the global `stats`; with `register`, also register
    /// that live search. Replies `Hits`.
    SearchTop { map: Arc<str>, spec: Arc<SearchSpec>, limit: usize, register: Option<SubKey> },
    /// Forget these live searches. No reply.
    SearchUnsubscribe { subs: Vec<SubKey> },
    /// Run this entry processor on these keys of `map`, all owned by the receiving shard, one
    /// key at a time (`Node::process_local`). Replies `Processed`, one result per key in order.
    Process { map: Arc<str>, keys: Vec<String>, processor: Arc<ProcessorCall>, writer: ConnRef },
    /// On `map`'s home shard: order this change of its conflict resolvers
    /// (`scripting::resolvers`). Replies `Resolvers` with the new list.
    ChangeResolvers { map: Arc<str>, change: ResolverChange },
    /// Keep `resolvers` as `map`'s resolver list unless this shard has a newer one. No reply.
    InstallResolvers { map: Arc<str>, resolvers: MapResolvers },
    /// Report this shard's counters and histograms. Replies `Stats`.
    Stats,
    /// Topics, locks, counters and the journal (`coord::service`).
    Coord(CoordHop),
    /// Merkle and HTTP sync (`node::sync`). Replies `Sync`.
    Sync(SyncHop),
}

pub enum HopReply {
    /// Outcomes in op order, and what to wait for before acknowledging them as persisted.
    Applied(Vec<OpOutcome>, Ticket),
    /// Snapshot rows and the owner's write sequence when it took them.
    Rows {
        rows: Vec<Row>,
        seq: u64,
    },
    SearchStats(TermStats),
    /// Search hits and the owner's write sequence when it scored them.
    Hits {
        hits: Vec<Hit>,
        seq: u64,
    },
    Processed(Vec<EntryProcessResult>),
    /// The map's new resolver list, or why the change was refused.
    Resolvers(Result<MapResolvers, String>),
    /// Boxed: the report is much larger than the other replies.
    Stats(Box<ShardReport>),
    Coord(CoordReply),
    Sync(SyncReply),
}

pub type ShardMesh = Mesh<Hop, HopReply, Node>;

/// One live-search change on its way to the subscriber's shard.
pub struct SearchSubChange {
    pub sub: SubKey,
    pub seq: u64,
    pub owner: ShardId,
    pub change: SearchChange,
}

/// Counters of one shard. Only the owning shard touches them; `/health` and `/metrics` gather
/// one copy per shard over the mesh and add them up.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardStats {
    pub connections: u64,
    pub connections_accepted: u64,
    pub messages_received: u64,
    pub ops_applied: u64,
    pub ops_unchanged: u64,
    pub ops_rejected: u64,
    pub events_delivered: u64,
    pub query_updates_sent: u64,
    pub live_queries: u64,
    pub live_searches: u64,
    pub slow_consumers_closed: u64,
    pub records: u64,
    /// Key and value bytes of the records held (`ShardData::data_bytes`).
    pub data_bytes: u64,
    pub topic_messages_delivered: u64,
    pub lock_grants: u64,
    pub locks_held: u64,
    pub lock_waiters: u64,
    pub journal_events: u64,
    pub journal_events_delivered: u64,
    pub mesh: MeshStatsCopy,
    /// The disk backend's counters (zero with the memory backend).
    pub storage: crate::persist::store::StorageStats,
}

/// `MeshStats` as plain counters that add up across shards.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshStatsCopy {
    pub hops_sent: u64,
    pub hops_received: u64,
    pub queue_full_waits: u64,
    /// Calls to other shards waiting for their reply (a gauge, filled in by `Node::stats`).
    pub calls_pending: u64,
}

impl From<MeshStats> for MeshStatsCopy {
    fn from(stats: MeshStats) -> Self {
        MeshStatsCopy {
            hops_sent: stats.hops_sent,
            hops_received: stats.hops_received,
            queue_full_waits: stats.queue_full_waits,
            calls_pending: 0,
        }
    }
}

impl ShardStats {
    pub fn add(&mut self, other: &ShardStats) {
        self.connections += other.connections;
        self.connections_accepted += other.connections_accepted;
        self.messages_received += other.messages_received;
        self.ops_applied += other.ops_applied;
        self.ops_unchanged += other.ops_unchanged;
        self.ops_rejected += other.ops_rejected;
        self.events_delivered += other.events_delivered;
        self.query_updates_sent += other.query_updates_sent;
        self.live_queries += other.live_queries;
        self.live_searches += other.live_searches;
        self.slow_consumers_closed += other.slow_consumers_closed;
        self.records += other.records;
        self.data_bytes += other.data_bytes;
        self.topic_messages_delivered += other.topic_messages_delivered;
        self.lock_grants += other.lock_grants;
        self.locks_held += other.locks_held;
        self.lock_waiters += other.lock_waiters;
        self.journal_events += other.journal_events;
        self.journal_events_delivered += other.journal_events_delivered;
        self.mesh.hops_sent += other.mesh.hops_sent;
        self.mesh.hops_received += other.mesh.hops_received;
        self.mesh.queue_full_waits += other.mesh.queue_full_waits;
        self.mesh.calls_pending += other.mesh.calls_pending;
        self.storage.add(&other.storage);
    }
}

/// A connection as its shard sees it from outside the connection task.
pub struct ConnEntry {
    pub outbox: Rc<Outbox>,
    /// Wall-clock ms after which the connection is closed, and why.
    pub deadline: Cell<(u64, CloseReason)>,
}

/// See the module doc.
pub struct Node {
    pub shard: ShardId,
    pub config: Arc<Config>,
    pub table: PartitionTable,
    pub started: Instant,
    mesh: Rc<ShardMesh>,
    data: RefCell<ShardData>,
    interest: RefCell<Interest>,
    conns: RefCell<AHashMap<ConnId, ConnEntry>>,
    next_conn: Cell<ConnId>,
    stats: Cell<ShardStats>,
    /// Latency histograms and labelled counters (`node::report`).
    metrics: RefCell<crate::metrics::ShardMetrics>,
    /// Scratch buffer for encoding events; its capacity is kept between writes.
    encode_buffer: RefCell<Vec<u8>>,
    /// `None` in `--no-auth` mode.
    verifier: Option<TokenVerifier>,
    /// Entry processors and conflict resolvers: this shard's script engine and its copy of
    /// every map's resolvers.
    scripting: RefCell<Scripting>,
    /// Owner side of live queries: every subscription on the node, for this shard's writes.
    index: RefCell<SubscriptionIndex>,
    /// Subscriber side: this shard's connections' live queries, by local number.
    live: RefCell<AHashMap<u64, LiveEntry>>,
    next_sub: Cell<u64>,
    /// Counts this shard's applied batches; stamps live-query changes and snapshots.
    write_seq: Cell<u64>,
    /// This node itself, for spawning refills from `&self`.
    me: Weak<Node>,
    /// This shard's log with the disk backend; installed after recovery, before listening.
    store: OnceCell<Rc<ShardStore>>,
    /// What every owner shard has reported durable (for writes waiting on `PERSISTED`).
    durability: DurabilityWatch,
    /// Topics, locks, counters and the journal: this shard's share.
    pub(crate) coord: CoordState,
    /// Owner side of live searches.
    search_subs: RefCell<SearchSubscriptions>,
    /// Subscriber side: this shard's connections' live searches, by local number.
    live_searches: RefCell<AHashMap<u64, LiveSearchEntry>>,
}

/// A connection's live search on the connection's shard.
struct LiveSearchEntry {
    conn: ConnId,
    subscription_id: String,
    live: LiveSearch,
}

/// A connection's live query on the connection's shard.
struct LiveEntry {
    conn: ConnId,
    query_id: String,
    fields: Option<Vec<String>>,
    map: Arc<str>,
    query: Arc<Query>,
    cursor: Arc<ResolvedCursor>,
    live: LiveQuery,
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    pub fn new(shard: ShardId, config: Arc<Config>, mesh: Rc<ShardMesh>) -> Rc<Node> {
        let verifier = match &config.auth {
            AuthMode::Jwt { secret } => Some(TokenVerifier::hs256(secret.as_bytes())),
            AuthMode::NoAuth => None,
        };
        let table = PartitionTable::new(crate::hash::PARTITION_COUNT, config.cores.shard_count());
        let scripting = Scripting::new(config.script_limits, config.max_value_bytes);
        let node = Rc::new_cyclic(|me| Node {
            me: me.clone(),
            store: OnceCell::new(),
            durability: DurabilityWatch::new(config.cores.shard_count()),
            coord: CoordState::new(shard, config.cores.shard_count(), &config.node_id),
            search_subs: RefCell::new(SearchSubscriptions::default()),
            live_searches: RefCell::new(AHashMap::new()),
            index: RefCell::new(SubscriptionIndex::default()),
            live: RefCell::new(AHashMap::new()),
            next_sub: Cell::new(1),
            write_seq: Cell::new(0),
            shard,
            table,
            started: Instant::now(),
            data: RefCell::new(ShardData::new(&config.node_id)),
            config,
            mesh: Rc::clone(&mesh),
            interest: RefCell::new(Interest::default()),
            conns: RefCell::new(AHashMap::new()),
            next_conn: Cell::new(1),
            stats: Cell::new(ShardStats::default()),
            metrics: RefCell::new(crate::metrics::ShardMetrics::default()),
            encode_buffer: RefCell::new(Vec::with_capacity(4096)),
            scripting: RefCell::new(scripting),
            verifier,
        });
        mesh.serve(Rc::clone(&node));
        node
    }

    /// This node as an `Rc`, for tasks spawned from `&self` (`None` once it is being dropped).
    pub(crate) fn upgrade(&self) -> Option<Rc<Node>> {
        self.me.upgrade()
    }

    /// Installs the shard's recovered data and its log (disk backend, at start-up).
    pub fn install_storage(&self, data: ShardData, store: Rc<ShardStore>) {
        *self.data.borrow_mut() = data;
        assert!(self.store.set(store).is_ok(), "storage is installed once");
    }

    /// This shard's log, with the disk backend.
    pub fn store(&self) -> Option<&Rc<ShardStore>> {
        self.store.get()
    }

    /// The shard's data, for the storage tasks (compaction reads what is current).
    pub(crate) fn data_cell(&self) -> &RefCell<ShardData> {
        &self.data
    }

    pub fn durability(&self) -> &DurabilityWatch {
        &self.durability
    }

    /// Whether an acknowledged `PERSISTED` write is really on disk here: the disk backend
    /// with a policy that fdatasyncs.
    pub fn persists(&self) -> bool {
        self.store.get().is_some_and(|store| store.policy().syncs())
    }

    /// The token verifier, or `None` in `--no-auth` mode.
    pub fn verifier(&self) -> Option<&TokenVerifier> {
        self.verifier.as_ref()
    }

    pub fn mesh(&self) -> &ShardMesh {
        &self.mesh
    }

    pub fn shard_count(&self) -> usize {
        self.table.shard_count()
    }

    pub fn bump(&self, update: impl FnOnce(&mut ShardStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    pub fn owner_of(&self, key: &str) -> ShardId {
        self.table.owner(PartitionId(partition_of(key)))
    }

    /// Registers a new connection and returns its id.
    pub fn open_conn(&self, outbox: Rc<Outbox>, deadline_ms: u64) -> ConnId {
        let conn = self.next_conn.get();
        self.next_conn.set(conn + 1);
        let entry = ConnEntry { outbox, deadline: Cell::new((deadline_ms, CloseReason::AuthenticationTimeout)) };
        self.conns.borrow_mut().insert(conn, entry);
        self.bump(|stats| {
            stats.connections += 1;
            stats.connections_accepted += 1;
        });
        conn
    }

    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Sets when `conn` is closed for inactivity (or for not authenticating), and why.
    pub fn set_deadline(&self, conn: ConnId, deadline_ms: u64, reason: CloseReason) {
        if let Some(entry) = self.conns.borrow().get(&conn) {
            entry.deadline.set((deadline_ms, reason));
        }
    }

    /// Asks every connection past its deadline to close. Called by the shard's sweeper.
    pub fn sweep_deadlines(&self, now_ms: u64) {
        for entry in self.conns.borrow().values() {
            let (deadline_ms, reason) = entry.deadline.get();
            if now_ms >= deadline_ms {
                entry.outbox.request_close(reason);
            }
        }
    }

    /// Asks every connection to close with `reason` (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        for entry in self.conns.borrow().values() {
            entry.outbox.request_close(reason);
        }
    }

    /// Forgets a closed connection and withdraws its interest everywhere.
    pub async fn close_conn(&self, conn: ConnId, interested_maps: Vec<Arc<str>>) {
        if self.conns.borrow_mut().remove(&conn).is_some() {
            self.bump(|stats| stats.connections -= 1);
        }
        for map in interested_maps {
            let announce = self.interest.borrow_mut().remove_local(&map, conn);
            if announce == Announce::Stop {
                self.announce_interest(map, false).await;
            }
        }
    }

    /// Makes `conn` interested in `map`; the first local connection announces it to every
    /// shard before the caller's next request can reach them.
    pub async fn add_interest(&self, map: &Arc<str>, conn: ConnId) {
        let announce = self.interest.borrow_mut().add_local(map, conn);
        if announce == Announce::Start {
            self.announce_interest(Arc::clone(map), true).await;
        }
    }

    /// Whether `conn` is the only local connection interested in `map`.
    pub fn sole_interest(&self, map: &str, conn: ConnId) -> bool {
        let interest = self.interest.borrow();
        let mut conns = interest.local_conns(map);
        conns.next() == Some(conn) && conns.next().is_none()
    }

    /// Tells every shard, this one included, in shard order, one `make()` each.
    async fn tell_every_shard(&self, make: impl Fn() -> Hop) {
        for target in 0..self.shard_count() {
            self.mesh.tell(ShardId(target as u16), make()).await;
        }
    }

    async fn announce_interest(&self, map: Arc<str>, interested: bool) {
        self.tell_every_shard(|| Hop::Interest { map: Arc::clone(&map), shard: self.shard, interested }).await;
    }

    /// Applies `ops` (all owned by this shard), then sends each state change to the shards with
    /// interested connections. Runs on the owner shard.
    /// With the disk backend each state change is appended to the shard's log in the same step
    /// (no await between applying and appending), and a `persist` batch gets a ticket covering it.
    async fn apply_local(
        &self,
        ops: Vec<ClientOp>,
        writer: ConnRef,
        persist: bool,
        writer_alone: bool,
    ) -> (Vec<OpOutcome>, Ticket) {
        self.count_ops(&ops);
        let store = self.store.get().cloned();
        if let Some(store) = &store {
            store.wait_for_room().await;
            if let Err(reason) = store.writable() {
                // Refused before anything is applied, so nothing changes that is not logged.
                let refused: Vec<OpOutcome> =
                    ops.iter().map(|_| OpOutcome::Rejected { reason: reason.to_string(), code: 503 }).collect();
                self.bump(|stats| stats.ops_rejected += refused.len() as u64);
                return (refused, Ticket::Failed(reason));
            }
        }
        let apply_started = Instant::now();
        let now = wall_ms();
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut events: Vec<ChangeEvent> = Vec::with_capacity(ops.len());
        {
            let mut data = self.data.borrow_mut();
            if ops.len() > 1 {
                data.warm(&ops);
            }
            // Conflicting writes to maps with resolvers consult them (`scripting`) here, in the
            // same step as the merge.
            let mut scripting = self.scripting.borrow_mut();
            let mut resolving = scripting.batch();
            for op in ops {
                debug_assert_eq!(self.owner_of(&op.key), self.shard, "ops are routed to their owner");
                if let Some(store) = &store {
                    if !crate::persist::record_fits(&op, store.framed_bytes_max()) {
                        let reason = format!(
                            "record too large for a storage segment of {} bytes (--segment-bytes)",
                            store.framed_bytes_max()
                        );
                        outcomes.push(OpOutcome::Rejected { reason, code: 413 });
                        continue;
                    }
                }
                let (outcome, event) = resolving.apply(&mut data, op, now);
                if let (Some(store), Some(event)) = (&store, &event) {
                    store.append_change(event, partition_of(&event.key), now);
                }
                outcomes.push(outcome);
                events.extend(event);
            }
        }
        self.record_apply(apply_started.elapsed());
        let ticket = match &store {
            Some(store) if persist => store.ticket(writer.shard),
            _ => Ticket::Ready,
        };
        let (mut applied, mut unchanged, mut rejected) = (0, 0, 0);
        for outcome in &outcomes {
            match outcome {
                OpOutcome::Applied => applied += 1,
                OpOutcome::Unchanged => unchanged += 1,
                OpOutcome::Rejected { .. } | OpOutcome::MergeRejected(_) => rejected += 1,
                OpOutcome::Merged(_) => applied += 1,
            }
        }
        self.bump(|stats| {
            stats.ops_applied += applied;
            stats.ops_unchanged += unchanged;
            stats.ops_rejected += rejected;
        });
        let seq = self.write_seq.get() + 1;
        self.write_seq.set(seq);
        if !events.is_empty() {
            // Still in the step that applied the batch: the deliveries are encoded from the
            // events, then the journal takes the events apart, and only then is anything sent.
            let deliveries = self.fan_out(&events, writer, writer_alone, seq, now);
            let journal = self.journal_append(events, now);
            // Events, not requests: this handler may wait for room on the subscribers'
            // shards' event queues, whose consumers never wait (shards/ mesh).
            for (target, hop) in deliveries {
                self.mesh.notify(target, hop).await;
            }
            self.journal_deliver(journal).await;
        }
        (outcomes, ticket)
    }

    /// Encodes each event once and gathers, per interested shard, one `Deliver` hop with the
    /// frames and live-query changes it needs.
    fn fan_out(
        &self,
        events: &[ChangeEvent],
        writer: ConnRef,
        writer_alone: bool,
        seq: u64,
        now_ms: u64,
    ) -> Vec<(ShardId, Hop)> {
        // Filled in (one list per shard) only once something goes to some shard: a write
        // nobody else watches allocates nothing here.
        let mut per_shard: Vec<Vec<(Arc<str>, Bytes)>> = Vec::new();
        let mut changes_per_shard: Vec<Vec<SubChange>> = Vec::new();
        let mut search_per_shard: Vec<Vec<SearchSubChange>> = Vec::new();
        let shard_count = self.shard_count();
        {
            let index = self.index.borrow();
            let mut live_changes = Vec::new();
            for event in events {
                evaluate_event(&index, event, now_ms, &mut live_changes);
            }
            for (sub, change) in live_changes {
                per_shard_list(&mut changes_per_shard, shard_count, sub.shard).push(SubChange {
                    sub,
                    seq,
                    owner: self.shard,
                    change,
                });
            }
            let searches = self.search_subs.borrow();
            let mut search_changes = Vec::new();
            for event in events.iter().filter(|event| searches.has_map(&event.map)) {
                let (Change::Put(record) | Change::Remove(record)) = &event.change else { continue };
                let before = live_value(event.previous.as_ref(), now_ms);
                let after = live_value(Some(record), now_ms);
                searches.evaluate(
                    &event.map,
                    &event.key,
                    before.as_ref().map(|(value, _)| value),
                    after.as_ref().map(|(value, bytes)| (value, bytes)),
                    &mut search_changes,
                );
            }
            for (sub, change) in search_changes {
                per_shard_list(&mut search_per_shard, shard_count, sub.shard).push(SearchSubChange {
                    sub,
                    seq,
                    owner: self.shard,
                    change,
                });
            }
        }
        {
            let interest = self.interest.borrow();
            let mut buffer = self.encode_buffer.borrow_mut();
            for event in events {
                let mut targets =
                    interest.shards(&event.map).iter().filter(|target| !(writer_alone && **target == writer.shard));
                let Some(first) = targets.next() else { continue };
                buffer.clear();
                encode(&server_event_message(event), &mut buffer);
                let frame = Bytes::copy_from_slice(&buffer);
                for target in std::iter::once(first).chain(targets) {
                    per_shard_list(&mut per_shard, shard_count, *target).push((Arc::clone(&event.map), frame.clone()));
                }
            }
        }
        if per_shard.is_empty() && changes_per_shard.is_empty() && search_per_shard.is_empty() {
            return Vec::new();
        }
        per_shard.resize_with(shard_count, Vec::new);
        changes_per_shard.resize_with(shard_count, Vec::new);
        search_per_shard.resize_with(shard_count, Vec::new);
        let deliveries = per_shard.into_iter().zip(changes_per_shard).zip(search_per_shard);
        deliveries
            .enumerate()
            .filter(|(_, ((frames, changes), search_changes))| {
                !frames.is_empty() || !changes.is_empty() || !search_changes.is_empty()
            })
            .map(|(target, ((frames, changes), search_changes))| {
                (ShardId(target as u16), Hop::Deliver { frames, writer, changes, search_changes })
            })
            .collect()
    }

    /// Queues `frame` to local connection `conn` if it is still open; a full outbox closes it
    /// as a slow consumer (counted by the connection task as it closes). Returns whether the
    /// frame was queued.
    pub(crate) fn push_frame(&self, conn: ConnId, frame: Bytes) -> bool {
        let conns = self.conns.borrow();
        let Some(entry) = conns.get(&conn) else { return false };
        entry.outbox.push(frame)
    }

    /// Pushes frames to the local connections interested in each map, except the writer.
    fn deliver(&self, frames: Vec<(Arc<str>, Bytes)>, writer: ConnRef) {
        let interest = self.interest.borrow();
        let conns = self.conns.borrow();
        let mut delivered = 0;
        for (map, frame) in frames {
            for conn in interest.local_conns(&map) {
                if writer.shard == self.shard && writer.conn == conn {
                    continue;
                }
                if conns.get(&conn).is_some_and(|entry| entry.outbox.push(frame.clone())) {
                    delivered += 1;
                }
            }
        }
        drop((interest, conns));
        self.bump(|stats| stats.events_delivered += delivered);
    }

    /// Applies a connection's ops: split by owner, applied in parallel on every owner, outcomes
    /// returned in the ops' original order.
    pub async fn apply_batch(&self, ops: Vec<ClientOp>, writer: ConnRef) -> Vec<OpOutcome> {
        self.apply_batch_durable(ops, writer, false, false).await.0
    }

    /// `apply_batch`; with `persist`, also waits until every owner involved reports the batch's
    /// records durable (an fdatasync covered them), or fails with the reason one will not.
    pub async fn apply_batch_durable(
        &self,
        ops: Vec<ClientOp>,
        writer: ConnRef,
        persist: bool,
        writer_alone: bool,
    ) -> (Vec<OpOutcome>, Result<(), Arc<str>>) {
        let op_count = ops.len();
        let shard_count = self.shard_count();
        if ops.is_empty() {
            return (Vec::new(), Ok(()));
        }
        // Each op's owner, computed once (no hashing at all on one shard).
        let owners_of_ops: Vec<ShardId> =
            if shard_count == 1 { Vec::new() } else { ops.iter().map(|op| self.owner_of(&op.key)).collect() };
        if owners_of_ops.iter().all(|owner| *owner == owners_of_ops[0]) {
            // One owner (always, on one shard): the batch goes as it is and its outcomes come
            // back in order.
            let owner = owners_of_ops.first().copied().unwrap_or(self.shard);
            let reply = self.mesh.call(owner, Hop::Apply { ops, writer, persist, writer_alone }).await;
            let HopReply::Applied(outcomes, ticket) = reply else { unreachable!("Apply is answered with Applied") };
            assert_eq!(outcomes.len(), op_count, "one outcome per op");
            let durable = if persist { self.wait_durable(owner, ticket).await } else { Ok(()) };
            return (outcomes, durable);
        }
        // Several owners: each gets its ops in their original order, in one list sized up front,
        // and the outcomes are put back in that order from each owner's reply.
        let mut counts = vec![0usize; shard_count];
        for owner in &owners_of_ops {
            counts[owner.index()] += 1;
        }
        let mut parts: Vec<Vec<ClientOp>> = counts.iter().map(|&count| Vec::with_capacity(count)).collect();
        for (op, owner) in ops.into_iter().zip(&owners_of_ops) {
            parts[owner.index()].push(op);
        }
        let part_count = counts.iter().filter(|&&count| count > 0).count();
        let mut owners = Vec::with_capacity(part_count);
        let mut calls = Vec::with_capacity(part_count);
        for (shard, part) in parts.into_iter().enumerate().filter(|(_, part)| !part.is_empty()) {
            owners.push(ShardId(shard as u16));
            calls.push(self.mesh.call(ShardId(shard as u16), Hop::Apply { ops: part, writer, persist, writer_alone }));
        }
        let replies = futures_util::future::join_all(calls).await;
        let mut part_outcomes: Vec<std::vec::IntoIter<OpOutcome>> =
            (0..shard_count).map(|_| Vec::new().into_iter()).collect();
        let mut tickets = Vec::with_capacity(part_count);
        for (owner, reply) in owners.into_iter().zip(replies) {
            let HopReply::Applied(outcomes, ticket) = reply else { unreachable!("Apply is answered with Applied") };
            assert_eq!(outcomes.len(), counts[owner.index()], "one outcome per op");
            part_outcomes[owner.index()] = outcomes.into_iter();
            tickets.push((owner, ticket));
        }
        let outcomes: Vec<OpOutcome> = owners_of_ops
            .iter()
            .map(|owner| part_outcomes[owner.index()].next().expect("one outcome per op"))
            .collect();
        let mut durable = Ok(());
        if persist {
            for (owner, ticket) in tickets {
                if let Err(reason) = self.wait_durable(owner, ticket).await {
                    durable = Err(reason);
                }
            }
        }
        (outcomes, durable)
    }

    /// Waits until `owner` reports the records behind `ticket` durable, or fails with the
    /// reason it will not.
    async fn wait_durable(&self, owner: ShardId, ticket: Ticket) -> Result<(), Arc<str>> {
        match ticket {
            Ticket::Ready => Ok(()),
            Ticket::Failed(reason) => Err(reason),
            Ticket::Wait(position) => self.durability.wait(owner, position).await,
        }
    }

    /// Gathers the best rows of `map` for `query` from every shard, registering the live
    /// subscription `register` on each at the same time. Returns the rows and each shard's
    /// write sequence at its snapshot.
    async fn gather(
        &self,
        register: Option<SubKey>,
        map: &Arc<str>,
        query: &Arc<Query>,
        cursor: &Arc<ResolvedCursor>,
    ) -> (Vec<Row>, Vec<u64>) {
        let calls: Vec<_> = (0..self.shard_count())
            .map(|shard| {
                let hop = Hop::Snapshot {
                    register,
                    map: Arc::clone(map),
                    query: Arc::clone(query),
                    cursor: Arc::clone(cursor),
                };
                self.mesh.call(ShardId(shard as u16), hop)
            })
            .collect();
        let mut rows = Vec::new();
        let mut seqs = Vec::with_capacity(self.shard_count());
        for reply in futures_util::future::join_all(calls).await {
            let HopReply::Rows { rows: part, seq } = reply else { unreachable!("Snapshot is answered with Rows") };
            rows.extend(part);
            seqs.push(seq);
        }
        (rows, seqs)
    }

    /// Registers a live query for `conn` on every shard and returns its first page (for
    /// `QUERY_RESP`) and its local number. The caller sends `QUERY_RESP`, then calls
    /// `start_live` so updates that raced the snapshot follow it.
    pub async fn subscribe_live(
        &self,
        conn: ConnId,
        query_id: String,
        map: Arc<str>,
        query: Arc<Query>,
        fields: Option<Vec<String>>,
        now_ms: u64,
    ) -> (Page, Vec<u64>, u64) {
        let local = self.next_sub.get();
        self.next_sub.set(local + 1);
        let cursor = Arc::new(query.resolve_cursor(now_ms));
        let entry = LiveEntry {
            conn,
            query_id,
            fields,
            map: Arc::clone(&map),
            query: Arc::clone(&query),
            cursor: Arc::clone(&cursor),
            live: LiveQuery::new(Arc::clone(&query), self.shard_count()),
        };
        self.live.borrow_mut().insert(local, entry);
        let sub = SubKey { shard: self.shard, local };
        let (rows, seqs) = self.gather(Some(sub), &map, &query, &cursor).await;
        let page = query.select_resolved(rows, &cursor, now_ms);
        (page, seqs, local)
    }

    /// Installs the first page of live query `local` and sends the updates that raced it.
    pub fn start_live(&self, local: u64, page: &Page, seqs: &[u64]) {
        let reaction = {
            let mut live = self.live.borrow_mut();
            let Some(entry) = live.get_mut(&local) else { return };
            entry.live.on_snapshot(page, seqs, true)
        };
        self.send_query_updates(local, reaction.updates);
        if reaction.refill {
            self.spawn_refill(local);
        }
    }

    /// Forgets live queries of this shard's connections, here and on every shard.
    pub async fn unsubscribe_live(&self, locals: Vec<u64>) {
        if locals.is_empty() {
            return;
        }
        let mut subs = Vec::with_capacity(locals.len());
        {
            let mut live = self.live.borrow_mut();
            for local in locals {
                if live.remove(&local).is_some() {
                    subs.push(SubKey { shard: self.shard, local });
                }
            }
        }
        self.tell_every_shard(|| Hop::Unsubscribe { subs: subs.clone() }).await;
    }

    /// Encodes and queues `QUERY_UPDATE`s for live query `local` (projected to its fields).
    fn send_query_updates(&self, local: u64, updates: Vec<QueryUpdate>) {
        if updates.is_empty() {
            return;
        }
        let live = self.live.borrow();
        let Some(entry) = live.get(&local) else { return };
        let conns = self.conns.borrow();
        let Some(conn) = conns.get(&entry.conn) else { return };
        let mut buffer = self.encode_buffer.borrow_mut();
        let mut sent = 0;
        for update in updates {
            let (key, value, change_type) = match update {
                QueryUpdate::Enter { key, value } => (key, Some(value), ChangeType::Enter),
                QueryUpdate::Update { key, value } => (key, Some(value), ChangeType::Update),
                QueryUpdate::Leave { key } => (key, None, ChangeType::Leave),
            };
            let value = match (value, &entry.fields) {
                (Some(bytes), Some(fields)) => {
                    let decoded = rmpv::decode::read_value(&mut &bytes[..]).unwrap_or(rmpv::Value::Nil);
                    let mut projected = Vec::new();
                    rmpv::encode::write_value(&mut projected, &project(&decoded, fields))
                        .expect("writing to a Vec cannot fail");
                    Some(ValueBytes::from(projected))
                }
                (value, _) => value,
            };
            buffer.clear();
            let message = ServerMessage::QueryUpdate { query_id: entry.query_id.clone(), key, value, change_type };
            encode(&message, &mut buffer);
            if conn.outbox.push(Bytes::copy_from_slice(&buffer)) {
                sent += 1;
            }
        }
        drop((buffer, conns, live));
        self.bump(|stats| stats.query_updates_sent += sent);
    }

    /// Applies owner changes to this shard's live queries.
    fn apply_live_changes(&self, changes: Vec<SubChange>) {
        for SubChange { sub, seq, owner, change } in changes {
            let reaction = {
                let mut live = self.live.borrow_mut();
                let Some(entry) = live.get_mut(&sub.local) else { continue }; // unsubscribed meanwhile
                entry.live.on_change(owner, seq, change)
            };
            self.send_query_updates(sub.local, reaction.updates);
            if reaction.refill {
                self.spawn_refill(sub.local);
            }
        }
    }

    /// Re-snapshots live query `local` from every shard (a row left its limited window).
    fn spawn_refill(&self, local: u64) {
        let Some(node) = self.me.upgrade() else { return };
        {
            let mut live = self.live.borrow_mut();
            let Some(entry) = live.get_mut(&local) else { return };
            entry.live.begin_refill();
        }
        glommio::spawn_local(async move {
            loop {
                let Some((map, query, cursor)) = node
                    .live
                    .borrow()
                    .get(&local)
                    .map(|entry| (Arc::clone(&entry.map), Arc::clone(&entry.query), Arc::clone(&entry.cursor)))
                else {
                    return;
                };
                let (rows, seqs) = node.gather(None, &map, &query, &cursor).await;
                let page = query.select_resolved(rows, &cursor, wall_ms());
                let reaction = {
                    let mut live = node.live.borrow_mut();
                    let Some(entry) = live.get_mut(&local) else { return };
                    entry.live.on_snapshot(&page, &seqs, false)
                };
                node.send_query_updates(local, reaction.updates);
                if !reaction.refill {
                    return;
                }
            }
        })
        .detach();
    }

    /// Runs a full-text search over every shard: global statistics first, then each shard's
    /// best hits scored with them, merged by score (ties by key). With `register`, each shard
    /// also registers the live search. Returns the hits and each shard's write sequence.
    async fn search_all(
        &self,
        map: &Arc<str>,
        terms: Vec<String>,
        limit: usize,
        min_score: f64,
        register: Option<SubKey>,
    ) -> (Vec<Hit>, Vec<u64>) {
        let terms = Arc::new(terms);
        let calls: Vec<_> = (0..self.shard_count())
            .map(|shard| {
                self.mesh
                    .call(ShardId(shard as u16), Hop::SearchStats { map: Arc::clone(map), terms: Arc::clone(&terms) })
            })
            .collect();
        let mut stats = TermStats::default();
        for reply in futures_util::future::join_all(calls).await {
            let HopReply::SearchStats(part) = reply else { unreachable!("SearchStats is answered with SearchStats") };
            stats.add(&part);
        }
        let spec = Arc::new(SearchSpec { terms: terms.to_vec(), stats, min_score });
        let calls: Vec<_> = (0..self.shard_count())
            .map(|shard| {
                let hop = Hop::SearchTop { map: Arc::clone(map), spec: Arc::clone(&spec), limit, register };
                self.mesh.call(ShardId(shard as u16), hop)
            })
            .collect();
        let mut hits = Vec::new();
        let mut seqs = Vec::with_capacity(self.shard_count());
        for reply in futures_util::future::join_all(calls).await {
            let HopReply::Hits { hits: part, seq } = reply else { unreachable!("SearchTop is answered with Hits") };
            hits.extend(part);
            seqs.push(seq);
        }
        crate::search::rank(&mut hits);
        hits.truncate(limit);
        (hits, seqs)
    }

    /// A one-shot `SEARCH`.
    pub async fn search(&self, map: Arc<str>, terms: Vec<String>, limit: usize, min_score: f64) -> Vec<Hit> {
        self.search_all(&map, terms, limit, min_score, None).await.0
    }

    /// Registers a live search for `conn` on every shard; returns its first results (for
    /// `SEARCH_RESP`), the owners' sequences and its local number. Then call `start_search`.
    pub async fn subscribe_search(
        &self,
        conn: ConnId,
        subscription_id: String,
        map: Arc<str>,
        terms: Vec<String>,
        limit: usize,
        min_score: f64,
    ) -> (Vec<Hit>, Vec<u64>, u64) {
        let local = self.next_sub.get();
        self.next_sub.set(local + 1);
        let entry = LiveSearchEntry { conn, subscription_id, live: LiveSearch::new(self.shard_count()) };
        self.live_searches.borrow_mut().insert(local, entry);
        let sub = SubKey { shard: self.shard, local };
        let (hits, seqs) = self.search_all(&map, terms, limit, min_score, Some(sub)).await;
        (hits, seqs, local)
    }

    /// Installs the first results of live search `local` and sends the updates that raced them.
    pub fn start_search(&self, local: u64, hits: &[Hit], seqs: &[u64]) {
        let updates = {
            let mut searches = self.live_searches.borrow_mut();
            let Some(entry) = searches.get_mut(&local) else { return };
            entry.live.on_snapshot(hits, seqs)
        };
        self.send_search_updates(local, updates);
    }

    /// Forgets live searches of this shard's connections, here and on every shard.
    pub async fn unsubscribe_search(&self, locals: Vec<u64>) {
        let subs: Vec<SubKey> = {
            let mut searches = self.live_searches.borrow_mut();
            locals
                .into_iter()
                .filter(|local| searches.remove(local).is_some())
                .map(|local| SubKey { shard: self.shard, local })
                .collect()
        };
        if subs.is_empty() {
            return;
        }
        self.tell_every_shard(|| Hop::SearchUnsubscribe { subs: subs.clone() }).await;
    }

    fn apply_search_changes(&self, changes: Vec<SearchSubChange>) {
        for SearchSubChange { sub, seq, owner, change } in changes {
            let update = {
                let mut searches = self.live_searches.borrow_mut();
                let Some(entry) = searches.get_mut(&sub.local) else { continue };
                entry.live.on_change(owner, seq, change)
            };
            self.send_search_updates(sub.local, update.into_iter().collect());
        }
    }

    fn send_search_updates(&self, local: u64, updates: Vec<crate::search::coordinator::SearchUpdate>) {
        if updates.is_empty() {
            return;
        }
        let searches = self.live_searches.borrow();
        let Some(entry) = searches.get(&local) else { return };
        let conns = self.conns.borrow();
        let Some(conn) = conns.get(&entry.conn) else { return };
        let mut buffer = self.encode_buffer.borrow_mut();
        for update in updates {
            let leave = update.change_type == ChangeType::Leave;
            let hit = crate::protocol::SearchHit {
                key: update.hit.key,
                value: (!leave).then_some(update.hit.value),
                score: update.hit.score,
                matched_terms: update.hit.matched_terms,
            };
            buffer.clear();
            let message = ServerMessage::SearchUpdate {
                subscription_id: entry.subscription_id.clone(),
                hit,
                change_type: update.change_type,
            };
            encode(&message, &mut buffer);
            conn.outbox.push(Bytes::copy_from_slice(&buffer));
        }
    }

    /// This shard's counters, with the live gauges filled in.
    pub fn stats(&self) -> ShardStats {
        let mut stats = self.stats.get();
        stats.records = self.data.borrow().record_count() as u64;
        stats.data_bytes = self.data.borrow().data_bytes() as u64;
        stats.live_queries = self.live.borrow().len() as u64;
        stats.live_searches = self.live_searches.borrow().len() as u64;
        (stats.locks_held, stats.lock_waiters, stats.journal_events) = self.coord.gauges();
        stats.mesh = self.mesh.stats().into();
        stats.mesh.calls_pending = self.mesh.calls_pending() as u64;
        if let Some(store) = self.store.get() {
            stats.storage = store.stats();
        }
        stats
    }
}

/// Entry processors and conflict resolvers (`scripting`): the node's side of them.
impl Node {
    /// Runs `processor` on each of `keys` (distinct) of LWW map `map`: the keys are split by
    /// owner, owners run in parallel, each key on its own. Returns each key's reply, in `keys`
    /// order.
    pub async fn process_entries(
        &self,
        map: Arc<str>,
        keys: Vec<String>,
        processor: Arc<ProcessorCall>,
        writer: ConnRef,
    ) -> Vec<(String, EntryProcessResult)> {
        let mut parts: Vec<Vec<String>> = vec![Vec::new(); self.shard_count()];
        for key in &keys {
            parts[self.owner_of(key).index()].push(key.clone());
        }
        let calls: Vec<_> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, part)| !part.is_empty())
            .map(|(shard, part)| {
                let hop = Hop::Process {
                    map: Arc::clone(&map),
                    keys: part.clone(),
                    processor: Arc::clone(&processor),
                    writer,
                };
                let reply = self.mesh.call(ShardId(shard as u16), hop);
                async move { (part, reply.await) }
            })
            .collect();
        let mut replies: AHashMap<String, EntryProcessResult> = AHashMap::with_capacity(keys.len());
        for (part, reply) in futures_util::future::join_all(calls).await {
            let HopReply::Processed(results) = reply else { unreachable!("Process is answered with Processed") };
            assert_eq!(part.len(), results.len(), "one result per key");
            replies.extend(part.into_iter().zip(results));
        }
        keys.into_iter()
            .map(|key| {
                let reply = replies.remove(&key).expect("every key has a reply");
                (key, reply)
            })
            .collect()
    }

    /// Runs `processor` on `keys`, all owned here, one after another; the shard serves other
    /// work between keys, and each key is atomic on its own (`process_key`). The keys share
    /// `PROCESS_BATCH_BUDGET_CALLS` calls' worth of CPU time, so a slow processor over many
    /// keys cannot hold the shard for long.
    async fn process_local(
        &self,
        map: &str,
        keys: Vec<String>,
        processor: &ProcessorCall,
        writer: ConnRef,
    ) -> Vec<EntryProcessResult> {
        let mut budget = self.scripting.borrow().limits().cpu * crate::limits::PROCESS_BATCH_BUDGET_CALLS;
        let mut results = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            if index > 0 {
                futures_lite::future::yield_now().await;
            }
            results.push(self.process_key(map, key, processor, writer, &mut budget).await);
        }
        results
    }

    /// Runs `processor` on one key and applies its write through `apply_batch`, the path every
    /// client write takes (events, live queries, storage, resolvers). The read and the run
    /// happen in one step; the write is applied only if the entry is still the one the
    /// processor read (a write that slipped in while the write path waited, e.g. on storage
    /// back-pressure, makes it run again, up to `PROCESS_ATTEMPTS_MAX` times).
    async fn process_key(
        &self,
        map: &str,
        key: &str,
        processor: &ProcessorCall,
        writer: ConnRef,
        budget: &mut std::time::Duration,
    ) -> EntryProcessResult {
        let cpu = self.scripting.borrow().limits().cpu;
        for _ in 0..crate::limits::PROCESS_ATTEMPTS_MAX {
            if budget.is_zero() {
                return crate::scripting::failed(format!(
                    "this request's CPU budget on one shard ({} ms) is spent",
                    cpu.as_millis() * u128::from(crate::limits::PROCESS_BATCH_BUDGET_CALLS)
                ));
            }
            let started = Instant::now();
            let processed = {
                let mut data = self.data.borrow_mut();
                self.scripting.borrow_mut().process(&mut data, map, key, processor, cpu.min(*budget), wall_ms())
            };
            *budget = budget.saturating_sub(started.elapsed());
            let (op, result) = match processed {
                Processed::Done(reply) => return reply,
                Processed::Write { op, result } => (op, result),
            };
            let outcome = self.apply_batch(vec![op.clone()], writer).await.pop().expect("one outcome per op");
            if !self.scripting.borrow_mut().settle(&op, &outcome) {
                return crate::scripting::processed_write(&op, result, outcome);
            }
        }
        crate::scripting::failed("the entry kept changing while the processor ran; try again".into())
    }

    /// Applies `change` to `map`'s conflict resolvers: ordered on the map's home shard, then
    /// installed on every shard from this one, so this connection's later writes (which leave
    /// on the same queues) find it in place. Returns why the change was refused.
    pub async fn change_resolvers(&self, map: Arc<str>, change: ResolverChange) -> Result<(), String> {
        let home = self.owner_of(&map);
        let reply = self.mesh.call(home, Hop::ChangeResolvers { map: Arc::clone(&map), change }).await;
        let HopReply::Resolvers(outcome) = reply else { unreachable!("ChangeResolvers is answered with Resolvers") };
        let resolvers = outcome?;
        self.tell_every_shard(|| Hop::InstallResolvers { map: Arc::clone(&map), resolvers: resolvers.clone() }).await;
        Ok(())
    }

    /// The registered resolvers as this shard knows them (every shard holds every map's).
    pub fn list_resolvers(&self, map: Option<&str>) -> Vec<ResolverInfo> {
        self.scripting.borrow().resolvers.list(map)
    }

    /// Whether resolver code compiles (run in this shard's sandbox, without running the code).
    pub fn check_resolver_code(&self, code: &str) -> Result<(), String> {
        self.scripting.borrow_mut().check_resolver_code(code)
    }
}

/// `target`'s list in `lists` (one list per shard), creating the lists on first use.
fn per_shard_list<T>(lists: &mut Vec<Vec<T>>, shard_count: usize, target: ShardId) -> &mut Vec<T> {
    if lists.is_empty() {
        lists.resize_with(shard_count, Vec::new);
    }
    &mut lists[target.index()]
}

/// The `SERVER_EVENT` for one change (DECISIONS §3.1: removes carry the tombstone record).
fn server_event_message(event: &ChangeEvent) -> ServerMessage {
    let body = match &event.change {
        Change::Put(record) | Change::Remove(record) => ServerEventBody::Lww(record.clone()),
        Change::OrAdd(record) => ServerEventBody::OrAdd(record.clone()),
        Change::OrRemove { tag } => ServerEventBody::OrRemove { tag: tag.clone() },
    };
    ServerMessage::ServerEvent(ServerEvent { map_name: event.map.to_string(), key: event.key.to_string(), body })
}

impl MeshHandler<Hop, HopReply> for Node {
    async fn handle(&self, _from: ShardId, request: Hop) -> Option<HopReply> {
        match request {
            Hop::Apply { ops, writer, persist, writer_alone } => {
                let (outcomes, ticket) = self.apply_local(ops, writer, persist, writer_alone).await;
                Some(HopReply::Applied(outcomes, ticket))
            }
            Hop::Durable { owner, durable, failed } => {
                self.durability.update(owner, durable, failed);
                None
            }
            Hop::Snapshot { register, map, query, cursor } => {
                if let Some(sub) = register {
                    self.index.borrow_mut().register(sub, Arc::clone(&map), Arc::clone(&query), Arc::clone(&cursor));
                }
                let mut rows = Vec::new();
                self.data.borrow().snapshot(&map, &query, &cursor, wall_ms(), &mut rows);
                Some(HopReply::Rows { rows, seq: self.write_seq.get() })
            }
            Hop::Unsubscribe { subs } => {
                let mut index = self.index.borrow_mut();
                subs.into_iter().for_each(|sub| index.unregister(sub));
                None
            }
            Hop::Interest { map, shard, interested } => {
                self.interest.borrow_mut().set_shard(&map, shard, interested);
                None
            }
            Hop::Deliver { frames, writer, changes, search_changes } => {
                self.deliver(frames, writer);
                self.apply_live_changes(changes);
                self.apply_search_changes(search_changes);
                None
            }
            Hop::SearchStats { map, terms } => {
                Some(HopReply::SearchStats(self.data.borrow_mut().search_stats(&map, &terms, wall_ms())))
            }
            Hop::SearchTop { map, spec, limit, register } => {
                if let Some(sub) = register {
                    self.search_subs.borrow_mut().register(sub, Arc::clone(&map), Arc::clone(&spec));
                }
                let hits = self.data.borrow().search_top(&map, &spec.terms, &spec.stats, limit, spec.min_score);
                Some(HopReply::Hits { hits, seq: self.write_seq.get() })
            }
            Hop::SearchUnsubscribe { subs } => {
                let mut searches = self.search_subs.borrow_mut();
                subs.into_iter().for_each(|sub| searches.unregister(sub));
                None
            }
            Hop::Process { map, keys, processor, writer } => {
                Some(HopReply::Processed(self.process_local(&map, keys, &processor, writer).await))
            }
            Hop::ChangeResolvers { map, change } => {
                Some(HopReply::Resolvers(self.scripting.borrow_mut().resolvers.change(&map, change)))
            }
            Hop::InstallResolvers { map, resolvers } => {
                self.scripting.borrow_mut().resolvers.install(map, resolvers);
                None
            }
            Hop::Stats => Some(HopReply::Stats(Box::new(self.report()))),
            Hop::Coord(hop) => Some(HopReply::Coord(self.handle_coord(hop).await)),
            Hop::Sync(hop) => Some(HopReply::Sync(self.handle_sync(hop))),
        }
    }
}
