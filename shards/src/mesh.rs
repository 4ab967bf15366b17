//! The mesh: bounded single-producer queues between every ordered pair of shards, carrying typed
//! requests and events one way and replies the other.
//!
//! Each ordered pair of shards has three glommio shared channels (lock-free rings woken through
//! an eventfd): one for requests (`call` and `tell`), one for events (`notify`), one for
//! replies. A full queue makes the sender wait (back-pressure); nothing is dropped and nothing
//! grows without bound. Waiting never closes a cycle, because the consumers of two of the three
//! queues never wait on anything:
//! - a reply consumer only completes the call it answers, so a shard busy handling requests
//!   always makes progress on the replies it is waiting for;
//! - an event's handler must finish without waiting (it must not send, nor await anything), and
//!   the event consumer checks that it does. A request handler may `notify` other shards (an
//!   owner telling subscribers' shards about a write) and wait for room on their event queues:
//!   that waits only on consumers that never wait, so two shards doing it to each other, with
//!   every queue full, still both make progress.
//!
//! A request handler must never `call` or `tell` a shard and wait for it: cross-shard requests
//! form a DAG (connections' tasks call and tell owners; owners only notify). Requests from one
//! shard to another are handled in the order they were sent (FIFO per pair), one at a time;
//! events likewise among themselves; an event and a request sent one after the other may be
//! handled in either order.

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::ShardId;

/// Handles the requests that reach one shard, from its own connections or from peers.
pub trait MeshHandler<Req, Rep>: 'static {
    /// Handles one request sent by `from`. A `call` gets the returned reply (a handler must
    /// return `Some` for every request that can arrive by `call`); a `tell` discards it.
    fn handle(&self, from: ShardId, request: Req) -> impl Future<Output = Option<Rep>>;
}

enum Envelope<Req> {
    Call { call_id: u64, request: Req },
    Tell(Req),
}

/// Which of a pair's outgoing queues a request goes on.
#[derive(Clone, Copy)]
enum Lane {
    Requests,
    Events,
}

/// Builds the queues of the whole mesh on the main thread and hands each shard its ends.
pub struct MeshBuilder;

/// One shard's unconnected ends of the mesh: moved to its executor, then `join`ed there.
pub struct MeshEnds<Req: Send, Rep: Send> {
    me: ShardId,
    shard_count: usize,
    /// Indexed by peer shard; `None` at our own index.
    request_senders: Vec<Option<SharedSender<Envelope<Req>>>>,
    request_receivers: Vec<Option<SharedReceiver<Envelope<Req>>>>,
    event_senders: Vec<Option<SharedSender<Envelope<Req>>>>,
    event_receivers: Vec<Option<SharedReceiver<Envelope<Req>>>>,
    reply_senders: Vec<Option<SharedSender<(u64, Rep)>>>,
    reply_receivers: Vec<Option<SharedReceiver<(u64, Rep)>>>,
}

/// Counters of one shard's mesh traffic. Only the owning shard touches them.
#[derive(Clone, Copy, Debug, Default)]
pub struct MeshStats {
    pub hops_sent: u64,
    pub hops_received: u64,
    pub replies_received: u64,
    /// Sends that found the peer's queue full and had to wait.
    pub queue_full_waits: u64,
}

/// A shard's receiving ends, indexed by peer (`None` at its own index).
struct Receivers<Req: Send, Rep: Send> {
    requests: Vec<Option<ConnectedReceiver<Envelope<Req>>>>,
    events: Vec<Option<ConnectedReceiver<Envelope<Req>>>>,
    replies: Vec<Option<ConnectedReceiver<(u64, Rep)>>>,
}

/// One shard's end of the mesh. Lives on its shard, behind an `Rc`.
pub struct Mesh<Req: Send + 'static, Rep: Send + 'static, H> {
    me: ShardId,
    shard_count: usize,
    /// Indexed by peer shard; `None` at our own index.
    requests: Vec<Option<ConnectedSender<Envelope<Req>>>>,
    events: Vec<Option<ConnectedSender<Envelope<Req>>>>,
    replies: Vec<Option<ConnectedSender<(u64, Rep)>>>,
    receivers: RefCell<Option<Receivers<Req, Rep>>>,
    handler: OnceCell<Rc<H>>,
    pending: RefCell<PendingCalls<Rep>>,
    stats: Cell<MeshStats>,
}

impl MeshBuilder {
    /// Creates every queue: three per ordered pair of shards, `queue_depth` messages each.
    #[allow(clippy::new_ret_no_self)] // a builder of per-shard ends, not of itself
    pub fn new<Req: Send + 'static, Rep: Send + 'static>(
        shard_count: usize,
        queue_depth: usize,
    ) -> Vec<MeshEnds<Req, Rep>> {
        assert!(shard_count > 0);
        assert!(queue_depth > 0);
        let mut ends: Vec<MeshEnds<Req, Rep>> = (0..shard_count)
            .map(|me| MeshEnds {
                me: ShardId(me as u16),
                shard_count,
                request_senders: (0..shard_count).map(|_| None).collect(),
                request_receivers: (0..shard_count).map(|_| None).collect(),
                event_senders: (0..shard_count).map(|_| None).collect(),
                event_receivers: (0..shard_count).map(|_| None).collect(),
                reply_senders: (0..shard_count).map(|_| None).collect(),
                reply_receivers: (0..shard_count).map(|_| None).collect(),
            })
            .collect();
        for from in 0..shard_count {
            for to in (0..shard_count).filter(|&to| to != from) {
                let (sender, receiver) = shared_channel::new_bounded(queue_depth);
                ends[from].request_senders[to] = Some(sender);
                ends[to].request_receivers[from] = Some(receiver);
                let (sender, receiver) = shared_channel::new_bounded(queue_depth);
                ends[from].event_senders[to] = Some(sender);
                ends[to].event_receivers[from] = Some(receiver);
                let (sender, receiver) = shared_channel::new_bounded(queue_depth);
                ends[from].reply_senders[to] = Some(sender);
                ends[to].reply_receivers[from] = Some(receiver);
            }
        }
        ends
    }
}

/// Starts connecting every end at once: connecting waits for the peer to connect its side, so
/// connecting one group after another could wait in a cycle between two shards.
fn start_connecting<T, C, F>(ends: Vec<Option<T>>, connect: F) -> Vec<Option<glommio::task::JoinHandle<C>>>
where
    T: 'static,
    C: 'static,
    F: Fn(T) -> std::pin::Pin<Box<dyn Future<Output = C>>>,
{
    ends.into_iter().map(|end| end.map(|end| glommio::spawn_local(connect(end)).detach())).collect()
}

async fn finish_connecting<C>(tasks: Vec<Option<glommio::task::JoinHandle<C>>>) -> Vec<Option<C>> {
    let mut connected = Vec::with_capacity(tasks.len());
    for task in tasks {
        connected.push(match task {
            Some(task) => Some(task.await.expect("mesh connect task completes")),
            None => None,
        });
    }
    connected
}

impl<Req: Send + 'static, Rep: Send + 'static> MeshEnds<Req, Rep> {
    pub fn shard(&self) -> ShardId {
        self.me
    }

    /// Connects this shard's ends from its own executor. Completes once every peer has
    /// connected the other side of each queue.
    pub async fn join<H: MeshHandler<Req, Rep>>(self) -> Rc<Mesh<Req, Rep, H>> {
        let requests = start_connecting(self.request_senders, |end| Box::pin(end.connect()));
        let events = start_connecting(self.event_senders, |end| Box::pin(end.connect()));
        let replies = start_connecting(self.reply_senders, |end| Box::pin(end.connect()));
        let request_receivers = start_connecting(self.request_receivers, |end| Box::pin(end.connect()));
        let event_receivers = start_connecting(self.event_receivers, |end| Box::pin(end.connect()));
        let reply_receivers = start_connecting(self.reply_receivers, |end| Box::pin(end.connect()));
        let requests = finish_connecting(requests).await;
        let events = finish_connecting(events).await;
        let replies = finish_connecting(replies).await;
        let receivers = Receivers {
            requests: finish_connecting(request_receivers).await,
            events: finish_connecting(event_receivers).await,
            replies: finish_connecting(reply_receivers).await,
        };
        Rc::new(Mesh {
            me: self.me,
            shard_count: self.shard_count,
            requests,
            events,
            replies,
            receivers: RefCell::new(Some(receivers)),
            handler: OnceCell::new(),
            pending: RefCell::new(PendingCalls::default()),
            stats: Cell::new(MeshStats::default()),
        })
    }
}

impl<Req: Send + 'static, Rep: Send + 'static, H: MeshHandler<Req, Rep>> Mesh<Req, Rep, H> {
    pub fn me(&self) -> ShardId {
        self.me
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn stats(&self) -> MeshStats {
        self.stats.get()
    }

    /// Calls this shard has sent to peers and not yet had answered: requests queued or being
    /// handled there, and replies on their way back.
    pub fn calls_pending(&self) -> usize {
        self.pending.borrow().open_count()
    }

    fn bump(&self, update: impl FnOnce(&mut MeshStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    /// Installs the handler and starts this shard's receiver tasks (one per peer and queue).
    /// The tasks run until the peers close their queues.
    pub fn serve(self: &Rc<Self>, handler: Rc<H>) {
        assert!(self.handler.set(handler).is_ok(), "serve is called once");
        let receivers = self.receivers.borrow_mut().take().expect("serve is called once");
        self.serve_envelopes(receivers.events, Lane::Events);
        self.serve_envelopes(receivers.requests, Lane::Requests);
        for stream in receivers.replies.into_iter().flatten() {
            let mesh = Rc::clone(self);
            glommio::spawn_local(async move {
                while let Some((call_id, reply)) = stream.recv().await {
                    mesh.bump(|stats| stats.replies_received += 1);
                    mesh.pending.borrow_mut().complete(call_id, reply);
                }
            })
            .detach();
        }
    }

    /// Starts one receiver task per peer for the requests or the events it sends us.
    fn serve_envelopes(self: &Rc<Self>, streams: Vec<Option<ConnectedReceiver<Envelope<Req>>>>, lane: Lane) {
        for (peer, stream) in streams.into_iter().enumerate() {
            let Some(stream) = stream else { continue };
            let mesh = Rc::clone(self);
            let from = ShardId(peer as u16);
            glommio::spawn_local(async move {
                while let Some(envelope) = stream.recv().await {
                    mesh.bump(|stats| stats.hops_received += 1);
                    let handler = Rc::clone(mesh.handler.get().expect("handler installed"));
                    match (lane, envelope) {
                        (Lane::Events, Envelope::Tell(event)) => {
                            finish_event(from, std::pin::pin!(handler.handle(from, event))).await;
                        }
                        (Lane::Events, Envelope::Call { .. }) => unreachable!("only notify sends events"),
                        (Lane::Requests, Envelope::Call { call_id, request }) => {
                            let reply = handler.handle(from, request).await.expect("a call gets a reply");
                            let replies = mesh.replies[from.index()].as_ref().expect("a queue to every peer");
                            if replies.send((call_id, reply)).await.is_err() {
                                break; // The caller's shard is gone: shutting down.
                            }
                        }
                        (Lane::Requests, Envelope::Tell(request)) => {
                            let _ = handler.handle(from, request).await;
                        }
                    }
                }
            })
            .detach();
        }
    }

    async fn send(&self, target: ShardId, lane: Lane, envelope: Envelope<Req>) {
        let senders = match lane {
            Lane::Requests => &self.requests,
            Lane::Events => &self.events,
        };
        let sender = senders[target.index()].as_ref().expect("a queue to every peer");
        self.bump(|stats| stats.hops_sent += 1);
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(envelope))) => {
                self.bump(|stats| stats.queue_full_waits += 1);
                if sender.send(envelope).await.is_err() {
                    tracing::debug!(%target, "mesh peer closed; request dropped during shutdown");
                }
            }
            Err(_) => tracing::debug!(%target, "mesh peer closed; request dropped during shutdown"),
        }
    }

    /// Sends `request` to `target` and waits for its reply. A call to the own shard runs the
    /// handler directly, without a queue.
    pub async fn call(&self, target: ShardId, request: Req) -> Rep {
        let handler = Rc::clone(self.handler.get().expect("serve() before call()"));
        if target == self.me {
            return self.handle_locally(&handler, request).await.expect("a call gets a reply");
        }
        let call_id = self.pending.borrow_mut().open();
        let reply = PendingReply { mesh_pending: &self.pending, call_id, done: false };
        self.send(target, Lane::Requests, Envelope::Call { call_id, request }).await;
        reply.await
    }

    /// Sends `request` to `target` without waiting for an answer. To the own shard, the handler
    /// runs directly.
    pub async fn tell(&self, target: ShardId, request: Req) {
        if target == self.me {
            let handler = Rc::clone(self.handler.get().expect("serve() before tell()"));
            let _ = self.handle_locally(&handler, request).await;
            return;
        }
        self.send(target, Lane::Requests, Envelope::Tell(request)).await;
    }

    /// Sends `event` to `target` on its event queue, without waiting for an answer: the one
    /// way a request handler may reach other shards (see the module doc). Its handler must
    /// finish without waiting. To the own shard, the handler runs directly.
    pub async fn notify(&self, target: ShardId, event: Req) {
        if target == self.me {
            let handler = Rc::clone(self.handler.get().expect("serve() before notify()"));
            finish_event(self.me, self.handle_locally(&handler, event).as_mut()).await;
            return;
        }
        self.send(target, Lane::Events, Envelope::Tell(event)).await;
    }

    /// Runs the handler for a request to the own shard. Boxed: a handler may `tell` its own
    /// shard, which makes the future type recursive.
    fn handle_locally<'a>(
        &'a self,
        handler: &'a Rc<H>,
        request: Req,
    ) -> Pin<Box<dyn Future<Output = Option<Rep>> + 'a>> {
        Box::pin(handler.handle(self.me, request))
    }

    /// Closes this shard's sending ends so peers' receiver tasks finish.
    pub fn close(&self) {
        self.requests.iter().flatten().for_each(|sender| sender.close());
        self.events.iter().flatten().for_each(|sender| sender.close());
        self.replies.iter().flatten().for_each(|sender| sender.close());
    }
}

/// Runs an event's handler (`handling`), which must finish at its first poll: an event that waited (on a
/// full queue, or anything else) could close a cycle of waiting shards. Debug builds stop
/// there; release builds log it and let the handler finish.
async fn finish_event<F: Future + ?Sized>(from: ShardId, mut handling: Pin<&mut F>) {
    let first = handling.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    if first.is_pending() {
        debug_assert!(false, "the handler of an event from {from} waited");
        tracing::error!(%from, "the handler of a mesh event waited; events must finish at once");
        handling.await;
    }
}

/// Calls waiting for replies, in a slab so the steady state allocates nothing. A call id is
/// `generation << 32 | slot`; a reply whose generation no longer matches belongs to a call that
/// was abandoned (its future dropped) and is discarded.
struct PendingCalls<Rep> {
    slots: Vec<Slot<Rep>>,
    free: Vec<u32>,
}

struct Slot<Rep> {
    generation: u32,
    state: SlotState<Rep>,
}

enum SlotState<Rep> {
    Free,
    Waiting(Option<Waker>),
    Ready(Rep),
}

impl<Rep> Default for PendingCalls<Rep> {
    fn default() -> Self {
        PendingCalls { slots: Vec::new(), free: Vec::new() }
    }
}

impl<Rep> PendingCalls<Rep> {
    /// Slots in use: calls opened and not yet closed.
    fn open_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn open(&mut self) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot { generation: 0, state: SlotState::Free });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        assert!(matches!(slot.state, SlotState::Free), "free list holds only free slots");
        slot.state = SlotState::Waiting(None);
        ((slot.generation as u64) << 32) | index as u64
    }

    fn slot(&mut self, call_id: u64) -> Option<&mut Slot<Rep>> {
        let (generation, index) = ((call_id >> 32) as u32, call_id as u32);
        self.slots.get_mut(index as usize).filter(|slot| slot.generation == generation)
    }

    fn complete(&mut self, call_id: u64, reply: Rep) {
        let Some(slot) = self.slot(call_id) else { return };
        if let SlotState::Waiting(Some(waker)) = std::mem::replace(&mut slot.state, SlotState::Ready(reply)) {
            waker.wake();
        }
    }

    fn close(&mut self, call_id: u64) {
        let index = call_id as u32;
        if let Some(slot) = self.slot(call_id) {
            slot.state = SlotState::Free;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index);
        }
    }
}

struct PendingReply<'a, Rep> {
    mesh_pending: &'a RefCell<PendingCalls<Rep>>,
    call_id: u64,
    done: bool,
}

impl<Rep> Future for PendingReply<'_, Rep> {
    type Output = Rep;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Rep> {
        let call_id = self.call_id;
        let mut pending = self.mesh_pending.borrow_mut();
        let slot = pending.slot(call_id).expect("an open call keeps its slot");
        match std::mem::replace(&mut slot.state, SlotState::Free) {
            SlotState::Ready(reply) => {
                slot.state = SlotState::Free;
                pending.close(call_id);
                drop(pending);
                self.done = true;
                Poll::Ready(reply)
            }
            SlotState::Waiting(_) => {
                slot.state = SlotState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            SlotState::Free => unreachable!("slot freed while its call was open"),
        }
    }
}

impl<Rep> Drop for PendingReply<'_, Rep> {
    fn drop(&mut self) {
        if !self.done {
            // The caller went away (its connection closed); a late reply is discarded.
            self.mesh_pending.borrow_mut().close(self.call_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slots are reused after completion, and a reply for an abandoned call is discarded.
    #[test]
    fn pending_calls_reuse_slots_and_drop_stale_replies() {
        let mut pending: PendingCalls<u32> = PendingCalls::default();
        let first = pending.open();
        assert_eq!(pending.open_count(), 1);
        pending.close(first);
        assert_eq!(pending.open_count(), 0);
        let second = pending.open();
        assert_eq!(first as u32, second as u32, "the slot is reused");
        assert_ne!(first, second, "with a new generation");
        pending.complete(first, 7); // stale: ignored
        assert!(matches!(pending.slot(second).unwrap().state, SlotState::Waiting(_)));
        pending.complete(second, 9);
        assert!(matches!(pending.slot(second).unwrap().state, SlotState::Ready(9)));
    }
}
