//! The coordination services at run time: the glue between sessions, the mesh and the sans-IO
//! tables of `coord`. `CoordState` is one shard's share (inside its `Node`); `CoordHop` is the
//! part of the mesh protocol that carries topics, locks, counters and the journal.
//!
//! Message flows (the connection's shard is C, the name's owner O, other shards S):
//! - `TOPIC_SUB`: C records the follower locally, then calls O (`TopicSubscribe`) so O counts
//!   a subscription on C before the session handles its next message. `TOPIC_PUB`: C calls O
//!   (`TopicPublish`); O stamps the time, encodes one `TOPIC_MESSAGE` and tells each shard with
//!   subscribers once (`TopicDeliver`); each writes it to its followers except the publisher.
//!   A publisher's messages travel C -> O -> S over FIFO queues and the session waits for each
//!   call, so subscribers see them in publish order (DECISIONS §2.3).
//! - `LOCK_REQUEST` / `LOCK_RELEASE`: C calls O, which runs the `LockTable` and answers; grants
//!   to waiting requests (on release, expiry, disconnect) go from O to the waiter's shard as a
//!   `Push` of the encoded `LOCK_GRANTED`. Expiries and give-ups are driven by the shard's
//!   coordination timer (`coord_timer_*`), which sleeps until the table's next deadline.
//! - `COUNTER_REQUEST` / `COUNTER_SYNC`: C calls O, which answers with the state; on a change O
//!   pushes one encoded `COUNTER_UPDATE` per shard to the other subscribers.
//! - Journal: the owner of each written key appends in `apply_local` and tells the shards with
//!   journal subscribers (`JournalDeliver`); `JOURNAL_READ` is the two-round read of
//!   `coord::journal`.
//! - On close, C withdraws everything the connection had, with tells only (so closing never
//!   waits on a shard that may already be shutting down): followed topics locally and their
//!   counts on the owners, counter subscriptions, journal subscriptions, locks.
//!
//! The call graph stays a DAG: C calls owners; owners only tell; the handlers of tells
//! (`TopicDeliver`, `Push`, `JournalDeliver`, the unsubscribes) never send to the mesh.
//! Locks use monotonic time (ms since the node started), so a wall-clock step neither expires
//! nor prolongs a lease; the times clients see (`TOPIC_MESSAGE.timestamp`) are wall-clock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use shardgrid_shards::ShardId;

use super::counters::CounterTable;
use super::journal::{draft_of, merge_pages, Journal, JournalFilter, JournalPage, JournalSubscriptions};
use super::locks::{Grant, LockRefusal, LockTable, RequestOutcome};
use super::topics::{TopicDirectory, TopicSubscribers};
use crate::limits::COORD_TIMER_IDLE_MS;
use crate::model::{PnCounterState, ValueBytes};
use crate::node::{wall_ms, Hop, HopReply, Node};
use crate::protocol::{encode, JournalEvent, JournalEventType, ServerMessage};
use crate::shard::{ChangeEvent, ConnId, ConnRef};

/// Coordination requests between shards (carried as `Hop::Coord`).
/// Journal events of one applied batch for the shards with journal subscribers.
pub(crate) struct JournalDelivery {
    targets: Vec<ShardId>,
    frames: Vec<(Arc<str>, JournalEventType, Bytes)>,
}

pub enum CoordHop {
    /// Count one more subscription to `topic` on `shard`. Call; replies `Done`.
    TopicSubscribe { topic: Arc<str>, shard: ShardId },
    /// Forget one subscription per listed topic on `shard`. Tell.
    TopicUnsubscribe { topics: Vec<Arc<str>>, shard: ShardId },
    /// Publish to `topic`'s subscribers. Call; replies `Done` once every delivery is queued.
    TopicPublish { topic: Arc<str>, data: ValueBytes, publisher: ConnRef, publisher_id: Option<String> },
    /// Write this `TOPIC_MESSAGE` to the local followers of `topic`, except the publisher. Tell.
    TopicDeliver { topic: Arc<str>, frame: Bytes, publisher: ConnRef },
    /// A validated `LOCK_REQUEST`. Call; replies `Lock`.
    LockRequest { name: Arc<str>, request_id: String, ttl: Option<u64>, conn: ConnRef },
    /// A validated `LOCK_RELEASE`. Call; replies `Released`.
    LockRelease { name: Arc<str>, token: u64, conn: ConnRef },
    /// `conn` closed: release its locks, withdraw its waiting requests. Tell; the grants the
    /// hand-over causes are sent by a task of their own, since handlers of tells never send.
    LocksClosed { conn: ConnRef },
    /// Call; replies `Counter` with the state.
    CounterRequest { name: Arc<str>, conn: ConnRef },
    /// Call; replies `Counter` with the merged state.
    CounterSync { name: Arc<str>, state: PnCounterState, conn: ConnRef },
    /// `conn` closed: end its subscriptions to these counters. Tell.
    CountersClosed { names: Vec<Arc<str>>, conn: ConnRef },
    /// `shard` gained (or lost, negative) journal subscriptions. Call when adding, so the
    /// owners know before the session goes on; tell when removing.
    JournalWatch { shard: ShardId, delta: i64 },
    /// First round of a read. Call; replies `JournalHead`.
    JournalHead,
    /// Second round of a read. Call; replies `JournalPage`.
    JournalRead { from: u64, upto: u64, limit: usize, map: Option<Arc<str>> },
    /// Encoded `JOURNAL_EVENT`s with what subscriptions filter on. Tell.
    JournalDeliver { events: Vec<(Arc<str>, JournalEventType, Bytes)> },
    /// Write `frame` to these local connections. Tell.
    Push { conns: Vec<ConnId>, frame: Bytes },
}

pub enum CoordReply {
    Done,
    Lock(Result<RequestOutcome, LockRefusal>),
    Released(bool),
    Counter(PnCounterState),
    JournalHead(u64),
    JournalPage(JournalPage),
}

/// Wakes the shard's coordination timer when a deadline earlier than the one it sleeps
/// towards appears.
#[derive(Default)]
struct TimerWake {
    sleeping_until: Cell<u64>,
    woken: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// One shard's coordination state. Lives in the shard's `Node`; owner-side tables hold the
/// names that hash to this shard, local-side tables this shard's connections.
pub struct CoordState {
    /// Owner side: subscriptions per shard of the topics this shard owns.
    topic_directory: RefCell<TopicDirectory>,
    /// Local side: this shard's connections following each topic.
    topic_subscribers: RefCell<TopicSubscribers>,
    /// Owner side.
    locks: RefCell<LockTable>,
    /// Owner side.
    counters: RefCell<CounterTable>,
    /// Owner side: events of the keys this shard owns.
    journal: RefCell<Journal>,
    /// Owner side: journal subscriptions per shard (index), so events go only where wanted.
    journal_watchers: RefCell<Vec<i64>>,
    /// Local side.
    journal_subscriptions: RefCell<JournalSubscriptions>,
    /// Scratch buffer for encoding; its capacity is kept between uses.
    encode_buffer: RefCell<Vec<u8>>,
    timer: TimerWake,
}

impl CoordState {
    pub fn new(shard: ShardId, shard_count: usize, node_id: &str) -> CoordState {
        CoordState {
            topic_directory: RefCell::new(TopicDirectory::default()),
            topic_subscribers: RefCell::new(TopicSubscribers::default()),
            locks: RefCell::new(LockTable::default()),
            counters: RefCell::new(CounterTable::default()),
            journal: RefCell::new(Journal::new(shard.index(), shard_count, node_id)),
            journal_watchers: RefCell::new(vec![0; shard_count]),
            journal_subscriptions: RefCell::new(JournalSubscriptions::default()),
            encode_buffer: RefCell::new(Vec::with_capacity(256)),
            timer: TimerWake::default(),
        }
    }

    fn encode(&self, message: &ServerMessage) -> Bytes {
        let mut buffer = self.encode_buffer.borrow_mut();
        buffer.clear();
        encode(message, &mut buffer);
        Bytes::copy_from_slice(&buffer)
    }

    /// Gauges for `ShardStats`: locks held here, lock requests waiting here, journal events
    /// kept here.
    pub fn gauges(&self) -> (u64, u64, u64) {
        let locks = self.locks.borrow();
        (locks.held_count() as u64, locks.waiting_count() as u64, self.journal.borrow().len() as u64)
    }
}

/// Completes when the timer is woken (see `Node::coord_timer_rearmed`).
struct Rearmed<'a> {
    wake: &'a TimerWake,
}

impl Future for Rearmed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.wake.woken.replace(false) {
            return Poll::Ready(());
        }
        self.wake.waker.set(Some(context.waker().clone()));
        Poll::Pending
    }
}

impl Node {
    fn coord(&self) -> &CoordState {
        &self.coord
    }

    /// Milliseconds since this node started: the lock table's clock.
    fn coord_now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn coord_call(&self, target: ShardId, hop: CoordHop) -> CoordReply {
        match self.mesh().call(target, Hop::Coord(hop)).await {
            HopReply::Coord(reply) => reply,
            _ => unreachable!("coordination hops are answered with Coord replies"),
        }
    }

    async fn coord_tell(&self, target: ShardId, hop: CoordHop) {
        self.mesh().tell(target, Hop::Coord(hop)).await;
    }

    /// Sends a hop whose handler finishes at once (`Push`, `TopicDeliver`, `JournalDeliver`)
    /// as a mesh event: the way the owner's handlers reach other shards.
    async fn coord_notify(&self, target: ShardId, hop: CoordHop) {
        self.mesh().notify(target, Hop::Coord(hop)).await;
    }

    /// Groups names by owner shard, keeping each owner's names in order.
    fn by_owner(&self, names: impl IntoIterator<Item = Arc<str>>) -> Vec<(ShardId, Vec<Arc<str>>)> {
        let mut groups: Vec<Vec<Arc<str>>> = (0..self.shard_count()).map(|_| Vec::new()).collect();
        for name in names {
            groups[self.owner_of(&name).index()].push(name);
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, names)| !names.is_empty())
            .map(|(shard, names)| (ShardId(shard as u16), names))
            .collect()
    }

    // ---- Session-facing operations (run on the connection's shard) ----

    /// `TOPIC_SUB` of a topic `conn` does not follow yet.
    pub async fn topic_subscribe(&self, topic: Arc<str>, conn: ConnId) {
        self.coord().topic_subscribers.borrow_mut().add(&topic, conn);
        let owner = self.owner_of(&topic);
        self.coord_call(owner, CoordHop::TopicSubscribe { topic, shard: self.shard }).await;
    }

    /// `TOPIC_UNSUB` (or close) of topics `conn` follows.
    pub async fn topic_unsubscribe(&self, topics: Vec<Arc<str>>, conn: ConnId) {
        {
            let mut subscribers = self.coord().topic_subscribers.borrow_mut();
            topics.iter().for_each(|topic| subscribers.remove(topic, conn));
        }
        for (owner, topics) in self.by_owner(topics) {
            self.coord_tell(owner, CoordHop::TopicUnsubscribe { topics, shard: self.shard }).await;
        }
    }

    /// `TOPIC_PUB`: returns once every subscriber shard has the message queued.
    pub async fn topic_publish(
        &self,
        topic: Arc<str>,
        data: ValueBytes,
        publisher: ConnRef,
        publisher_id: Option<String>,
    ) {
        let owner = self.owner_of(&topic);
        self.coord_call(owner, CoordHop::TopicPublish { topic, data, publisher, publisher_id }).await;
    }

    /// A validated `LOCK_REQUEST`.
    pub async fn lock_request(
        &self,
        name: Arc<str>,
        request_id: String,
        ttl: Option<u64>,
        conn: ConnRef,
    ) -> Result<RequestOutcome, LockRefusal> {
        let owner = self.owner_of(&name);
        match self.coord_call(owner, CoordHop::LockRequest { name, request_id, ttl, conn }).await {
            CoordReply::Lock(outcome) => outcome,
            _ => unreachable!("LockRequest is answered with Lock"),
        }
    }

    /// A validated `LOCK_RELEASE`: whether it released.
    pub async fn lock_release(&self, name: Arc<str>, token: u64, conn: ConnRef) -> bool {
        let owner = self.owner_of(&name);
        match self.coord_call(owner, CoordHop::LockRelease { name, token, conn }).await {
            CoordReply::Released(released) => released,
            _ => unreachable!("LockRelease is answered with Released"),
        }
    }

    /// `COUNTER_REQUEST`: subscribes `conn`, returns the state.
    pub async fn counter_request(&self, name: Arc<str>, conn: ConnRef) -> PnCounterState {
        let owner = self.owner_of(&name);
        match self.coord_call(owner, CoordHop::CounterRequest { name, conn }).await {
            CoordReply::Counter(state) => state,
            _ => unreachable!("CounterRequest is answered with Counter"),
        }
    }

    /// `COUNTER_SYNC`: merges, subscribes `conn`, returns the merged state.
    pub async fn counter_sync(&self, name: Arc<str>, state: PnCounterState, conn: ConnRef) -> PnCounterState {
        let owner = self.owner_of(&name);
        match self.coord_call(owner, CoordHop::CounterSync { name, state, conn }).await {
            CoordReply::Counter(state) => state,
            _ => unreachable!("CounterSync is answered with Counter"),
        }
    }

    /// `JOURNAL_SUBSCRIBE`: live events only. A new subscription is counted on every shard
    /// before this returns, so writes applied after the session's next reply reach it.
    pub async fn journal_subscribe(&self, conn: ConnId, id: String, filter: JournalFilter) {
        let replaced = self.coord().journal_subscriptions.borrow_mut().add(conn, id, filter);
        if replaced {
            return;
        }
        let calls: Vec<_> = (0..self.shard_count())
            .map(|target| {
                self.coord_call(ShardId(target as u16), CoordHop::JournalWatch { shard: self.shard, delta: 1 })
            })
            .collect();
        futures_util::future::join_all(calls).await;
    }

    /// `JOURNAL_UNSUBSCRIBE` (or close): whether the subscription existed.
    pub async fn journal_unsubscribe(&self, conn: ConnId, ids: Vec<String>) -> bool {
        let removed = {
            let mut subscriptions = self.coord().journal_subscriptions.borrow_mut();
            ids.iter().filter(|id| subscriptions.remove(conn, id)).count() as i64
        };
        if removed == 0 {
            return false;
        }
        for target in 0..self.shard_count() {
            self.coord_tell(ShardId(target as u16), CoordHop::JournalWatch { shard: self.shard, delta: -removed })
                .await;
        }
        true
    }

    /// `JOURNAL_READ`: the two-round read of `coord::journal`. Returns the page and `hasMore`.
    pub async fn journal_read(&self, from: u64, limit: usize, map: Option<Arc<str>>) -> (Vec<JournalEvent>, bool) {
        let heads: Vec<_> = (0..self.shard_count())
            .map(|target| self.coord_call(ShardId(target as u16), CoordHop::JournalHead))
            .collect();
        let mut upto = 0;
        for reply in futures_util::future::join_all(heads).await {
            let CoordReply::JournalHead(head) = reply else { unreachable!("JournalHead is answered with JournalHead") };
            upto = upto.max(head);
        }
        let reads: Vec<_> = (0..self.shard_count())
            .map(|target| {
                let hop = CoordHop::JournalRead { from, upto, limit, map: map.clone() };
                self.coord_call(ShardId(target as u16), hop)
            })
            .collect();
        let mut pages = Vec::with_capacity(self.shard_count());
        for reply in futures_util::future::join_all(reads).await {
            let CoordReply::JournalPage(page) = reply else { unreachable!("JournalRead is answered with JournalPage") };
            pages.push(page);
        }
        let (events, more) = merge_pages(pages, limit);
        (events.iter().map(|event| JournalEvent::clone(event)).collect(), more)
    }

    /// Withdraws everything a closing connection had in coordination: followed topics,
    /// counter subscriptions, journal subscriptions, and locks on `lock_owners`.
    pub async fn close_coordination(
        &self,
        conn: ConnRef,
        topics: Vec<Arc<str>>,
        counters: Vec<Arc<str>>,
        journal_ids: Vec<String>,
        lock_owners: Vec<ShardId>,
    ) {
        if !topics.is_empty() {
            self.topic_unsubscribe(topics, conn.conn).await;
        }
        for (owner, names) in self.by_owner(counters) {
            self.coord_tell(owner, CoordHop::CountersClosed { names, conn }).await;
        }
        if !journal_ids.is_empty() {
            self.journal_unsubscribe(conn.conn, journal_ids).await;
        }
        for owner in lock_owners {
            self.coord_tell(owner, CoordHop::LocksClosed { conn }).await;
        }
    }

    // ---- Owner side: the journal, fed by applied writes ----

    /// Journals the changes of one applied batch, in the step that applied them, and returns
    /// what the shards with journal subscribers must be sent (`journal_deliver`). Called by
    /// `apply_local` on the owner shard.
    pub(crate) fn journal_append(&self, events: Vec<ChangeEvent>, now_ms: u64) -> JournalDelivery {
        let targets: Vec<ShardId> = {
            let watchers = self.coord().journal_watchers.borrow();
            watchers
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(shard, _)| ShardId(shard as u16))
                .collect()
        };
        let mut frames = Vec::new();
        let mut journal = self.coord().journal.borrow_mut();
        for event in events {
            journal.append(draft_of(event, now_ms, &self.config.node_id));
            if !targets.is_empty() {
                let (map, event) = journal.newest_event().expect("just appended");
                let event_type = event.event_type;
                frames.push((map, event_type, self.coord().encode(&ServerMessage::JournalEvent(event))));
            }
        }
        JournalDelivery { targets, frames }
    }

    /// Sends what `journal_append` gathered to the shards with journal subscribers.
    pub(crate) async fn journal_deliver(&self, delivery: JournalDelivery) {
        if delivery.frames.is_empty() {
            return;
        }
        for target in delivery.targets {
            self.coord_notify(target, CoordHop::JournalDeliver { events: delivery.frames.clone() }).await;
        }
    }

    // ---- The coordination timer (driven by the shard's task in `server`) ----

    /// How long the timer may sleep: until the lock table's next deadline, at most
    /// `COORD_TIMER_IDLE_MS`. Arms the wake-up for earlier deadlines.
    pub fn coord_timer_wait_ms(&self) -> u64 {
        let now = self.coord_now_ms();
        let next = self.coord().locks.borrow().next_deadline();
        let wait = next.map_or(COORD_TIMER_IDLE_MS, |deadline| deadline.saturating_sub(now).min(COORD_TIMER_IDLE_MS));
        self.coord().timer.sleeping_until.set(now + wait);
        self.coord().timer.woken.set(false);
        wait
    }

    /// Completes when a deadline earlier than the timer's is registered.
    pub fn coord_timer_rearmed(&self) -> impl Future<Output = ()> + '_ {
        Rearmed { wake: &self.coord().timer }
    }

    /// Runs what is due: lease expiries and give-ups, and the grants they cause.
    pub async fn coord_timer_fire(&self) {
        let mut grants = Vec::new();
        self.coord().locks.borrow_mut().advance(self.coord_now_ms(), &mut grants);
        self.send_grants(grants).await;
    }

    /// Wakes the timer if the lock table now has a deadline before the one it sleeps towards.
    fn coord_timer_rearm(&self) {
        let Some(next) = self.coord().locks.borrow().next_deadline() else { return };
        let timer = &self.coord().timer;
        if next < timer.sleeping_until.get() && !timer.woken.get() {
            timer.woken.set(true);
            if let Some(waker) = timer.waker.take() {
                waker.wake();
            }
        }
    }

    async fn send_grants(&self, grants: Vec<Grant>) {
        self.bump(|stats| stats.lock_grants += grants.len() as u64);
        for grant in grants {
            let frame = self.coord().encode(&ServerMessage::LockGranted {
                request_id: grant.request_id,
                name: grant.name.to_string(),
                fencing_token: grant.token,
            });
            self.coord_notify(grant.conn.shard, CoordHop::Push { conns: vec![grant.conn.conn], frame }).await;
        }
    }

    // ---- Mesh handler ----

    /// Handles one coordination hop (see `CoordHop` for which are calls).
    pub(crate) async fn handle_coord(&self, hop: CoordHop) -> CoordReply {
        match hop {
            CoordHop::TopicSubscribe { topic, shard } => {
                self.coord().topic_directory.borrow_mut().subscribe(&topic, shard, self.shard_count());
                CoordReply::Done
            }
            CoordHop::TopicUnsubscribe { topics, shard } => {
                let mut directory = self.coord().topic_directory.borrow_mut();
                topics.iter().for_each(|topic| directory.unsubscribe(topic, shard));
                CoordReply::Done
            }
            CoordHop::TopicPublish { topic, data, publisher, publisher_id } => {
                let targets = self.coord().topic_directory.borrow().shards(&topic);
                if targets.is_empty() {
                    return CoordReply::Done; // Nobody follows it: at-most-once means dropped.
                }
                let message =
                    ServerMessage::TopicMessage { topic: topic.to_string(), data, publisher_id, timestamp: wall_ms() };
                let frame = self.coord().encode(&message);
                for target in targets {
                    let hop = CoordHop::TopicDeliver { topic: Arc::clone(&topic), frame: frame.clone(), publisher };
                    self.coord_notify(target, hop).await;
                }
                CoordReply::Done
            }
            CoordHop::TopicDeliver { topic, frame, publisher } => {
                // Pushing touches only outboxes and stats, never the followers, so the borrow
                // can stay open through the loop (which has no await).
                let subscribers = self.coord().topic_subscribers.borrow();
                let mut delivered = 0;
                for &conn in subscribers.conns(&topic) {
                    // PROTOCOL §6.12: a publisher never receives its own message.
                    if publisher == (ConnRef { shard: self.shard, conn }) {
                        continue;
                    }
                    if self.push_frame(conn, frame.clone()) {
                        delivered += 1;
                    }
                }
                drop(subscribers);
                self.bump(|stats| stats.topic_messages_delivered += delivered);
                CoordReply::Done
            }
            CoordHop::LockRequest { name, request_id, ttl, conn } => {
                let mut grants = Vec::new();
                let outcome = self.coord().locks.borrow_mut().request(
                    self.coord_now_ms(),
                    conn,
                    &name,
                    request_id,
                    ttl,
                    &mut grants,
                );
                self.coord_timer_rearm();
                if let Ok(RequestOutcome::Granted { .. }) = outcome {
                    self.bump(|stats| stats.lock_grants += 1);
                }
                self.send_grants(grants).await;
                CoordReply::Lock(outcome)
            }
            CoordHop::LockRelease { name, token, conn } => {
                let mut grants = Vec::new();
                let released =
                    self.coord().locks.borrow_mut().release(self.coord_now_ms(), conn, &name, token, &mut grants);
                self.coord_timer_rearm();
                self.send_grants(grants).await;
                CoordReply::Released(released)
            }
            CoordHop::LocksClosed { conn } => {
                let mut grants = Vec::new();
                self.coord().locks.borrow_mut().close_connection(self.coord_now_ms(), conn, &mut grants);
                self.coord_timer_rearm();
                if let (false, Some(node)) = (grants.is_empty(), self.upgrade()) {
                    // Not awaited here: a tell's handler must not wait on the mesh.
                    glommio::spawn_local(async move { node.send_grants(grants).await }).detach();
                }
                CoordReply::Done
            }
            CoordHop::CounterRequest { name, conn } => {
                CoordReply::Counter(self.coord().counters.borrow_mut().request(&name, conn))
            }
            CoordHop::CounterSync { name, state, conn } => {
                let outcome = self.coord().counters.borrow_mut().sync(&name, &state, conn);
                if !outcome.others.is_empty() {
                    let frame = self
                        .coord()
                        .encode(&ServerMessage::CounterUpdate { name: name.to_string(), state: outcome.state.clone() });
                    // `others` is sorted by shard: one push per shard.
                    for shard_conns in outcome.others.chunk_by(|a, b| a.shard == b.shard) {
                        let conns = shard_conns.iter().map(|subscriber| subscriber.conn).collect();
                        self.coord_notify(shard_conns[0].shard, CoordHop::Push { conns, frame: frame.clone() }).await;
                    }
                }
                CoordReply::Counter(outcome.state)
            }
            CoordHop::CountersClosed { names, conn } => {
                let mut counters = self.coord().counters.borrow_mut();
                names.iter().for_each(|name| counters.unsubscribe(name, conn));
                CoordReply::Done
            }
            CoordHop::JournalWatch { shard, delta } => {
                let mut watchers = self.coord().journal_watchers.borrow_mut();
                watchers[shard.index()] += delta;
                assert!(watchers[shard.index()] >= 0, "journal subscriptions withdrawn twice");
                CoordReply::Done
            }
            CoordHop::JournalHead => CoordReply::JournalHead(self.coord().journal.borrow().head()),
            CoordHop::JournalRead { from, upto, limit, map } => {
                CoordReply::JournalPage(self.coord().journal.borrow_mut().read(from, upto, limit, map.as_deref()))
            }
            CoordHop::JournalDeliver { events } => {
                let subscriptions = self.coord().journal_subscriptions.borrow();
                let mut delivered = 0;
                for (map, event_type, frame) in events {
                    for conn in subscriptions.matching(&map, event_type) {
                        if self.push_frame(conn, frame.clone()) {
                            delivered += 1;
                        }
                    }
                }
                drop(subscriptions);
                self.bump(|stats| stats.journal_events_delivered += delivered);
                CoordReply::Done
            }
            CoordHop::Push { conns, frame } => {
                for conn in conns {
                    self.push_frame(conn, frame.clone());
                }
                CoordReply::Done
            }
        }
    }
}
