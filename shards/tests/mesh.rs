//! The mesh between real pinned executors: calls in both directions at once through tiny
//! queues complete (no deadlock, back-pressure only), replies match their calls, tells from
//! one shard arrive in the order sent, and request handlers that notify each other's shards
//! through full queues both make progress.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use shardgrid_shards::{run_shards, CoreSet, MeshBuilder, MeshHandler, RuntimeConfig, ShardId, Shutdown};

enum Request {
    Double(u64),
    Record(u64),
    /// Handled by notifying the sender's shard of `Record(0..n)` before replying, as an owner
    /// tells subscribers' shards about a write.
    Fanout(u64),
    Recorded,
    /// The sender has finished calling; no reply.
    Done,
}

/// Doubles numbers, records told numbers, and reports what it recorded.
struct Handler {
    recorded: RefCell<Vec<u64>>,
    peer_done: Cell<bool>,
}

/// The handler of `Fanout`, which needs the mesh it is installed on.
struct FanoutHandler {
    mesh: RefCell<Option<Rc<FanoutMesh>>>,
    received: Cell<u64>,
    peer_done: Cell<bool>,
}

type FanoutMesh = shardgrid_shards::Mesh<Request, Vec<u64>, FanoutHandler>;

impl MeshHandler<Request, Vec<u64>> for FanoutHandler {
    async fn handle(&self, from: ShardId, request: Request) -> Option<Vec<u64>> {
        match request {
            Request::Fanout(count) => {
                let mesh = Rc::clone(self.mesh.borrow().as_ref().expect("installed"));
                for number in 0..count {
                    mesh.notify(from, Request::Record(number)).await;
                }
                Some(vec![count])
            }
            Request::Record(_) => {
                self.received.set(self.received.get() + 1);
                None
            }
            Request::Done => {
                self.peer_done.set(true);
                None
            }
            _ => None,
        }
    }
}

impl MeshHandler<Request, Vec<u64>> for Handler {
    async fn handle(&self, _from: ShardId, request: Request) -> Option<Vec<u64>> {
        match request {
            Request::Fanout(_) => None,
            Request::Double(number) => Some(vec![number * 2]),
            Request::Record(number) => {
                self.recorded.borrow_mut().push(number);
                None
            }
            Request::Recorded => Some(self.recorded.borrow().clone()),
            Request::Done => {
                self.peer_done.set(true);
                None
            }
        }
    }
}

const CALLS: u64 = 2_000;

// Goal: both shards calling each other concurrently through 2-deep queues never deadlock,
// every reply belongs to its call, and 2,000 tells arrive in order.
// Method: two executors (both on the first available CPU if only one exists), 64 concurrent
// callers per shard.
#[test]
fn calls_both_ways_through_tiny_queues() {
    let Some(config) = two_shards() else { return };
    let shard_count = 2;
    let ends = MeshBuilder::new::<Request, Vec<u64>>(shard_count, 2);
    run_shards(&config, &Shutdown::new(), ends, |context, ends| async move {
        let mesh = ends.join::<Handler>().await;
        let handler = Rc::new(Handler { recorded: RefCell::new(Vec::new()), peer_done: Cell::new(false) });
        mesh.serve(Rc::clone(&handler));
        let peer = ShardId(1 - context.shard.0);
        let callers = spawn_callers(&mesh, peer, 64, CALLS, Request::Double, |number| vec![number * 2]);
        for number in 0..CALLS {
            mesh.tell(peer, Request::Record(number)).await;
        }
        for caller in callers {
            caller.await;
        }
        // The Recorded call travels behind every tell on the same FIFO queue.
        let recorded = mesh.call(peer, Request::Recorded).await;
        assert_eq!(recorded, (0..CALLS).collect::<Vec<_>>(), "tells arrive in order");
        assert!(mesh.stats().queue_full_waits > 0, "2-deep queues made senders wait");
        // Keep serving until the peer has finished its own calls to us.
        mesh.tell(peer, Request::Done).await;
        while !handler.peer_done.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .unwrap();
}

/// Spawns `callers` tasks that between them make calls `0..calls` to `peer`, call `i` sending
/// `request(i)` and checking that the reply is `reply(i)`.
fn spawn_callers<H: MeshHandler<Request, Vec<u64>>>(
    mesh: &Rc<shardgrid_shards::Mesh<Request, Vec<u64>, H>>,
    peer: ShardId,
    callers: u64,
    calls: u64,
    request: fn(u64) -> Request,
    reply: fn(u64) -> Vec<u64>,
) -> Vec<glommio::Task<()>> {
    (0..callers)
        .map(|caller| {
            let mesh = Rc::clone(mesh);
            glommio::spawn_local(async move {
                for number in (caller..calls).step_by(callers as usize) {
                    assert_eq!(mesh.call(peer, request(number)).await, reply(number));
                }
            })
        })
        .collect()
}

/// Two shards on the first two available CPUs (both on one CPU if only one exists); `None` when
/// the process may use only one CPU.
fn two_shards() -> Option<RuntimeConfig> {
    let available = shardgrid_shards::cores::available_cpus();
    let cpus =
        if available.len() >= 2 { format!("{},{}", available[0], available[1]) } else { available[0].to_string() };
    let cores = CoreSet::parse_list(&cpus, &available).unwrap();
    if cores.shard_count() < 2 {
        eprintln!("skipped: the mesh test needs two CPUs and this process may use only one");
        return None;
    }
    Some(RuntimeConfig {
        cores,
        io_memory_bytes: 256 * 1024,
        ring_depth: 64,
        spin_before_park: None,
        preempt_timer: std::time::Duration::from_millis(100),
    })
}

const FANOUT_CALLS: u64 = 200;
const FANOUT_EVENTS: u64 = 50;

// Goal: request handlers that reach the other shard while that shard's handlers do the same
// never wait on each other, however full the queues (a regression test: handlers used to
// `tell`, on the queue whose consumer was the blocked handler itself, so two shards fanning
// out to each other with both 2-deep queues full stopped for good).
// Method: 16 concurrent callers per shard each call `Fanout` on the other shard 200 / 16 times;
// every call's handler notifies the caller's shard 50 times through 2-deep queues before
// replying. Every call must be answered and every event received.
#[test]
fn handlers_notifying_each_other_through_full_queues_both_progress() {
    let Some(config) = two_shards() else { return };
    let ends = MeshBuilder::new::<Request, Vec<u64>>(2, 2);
    run_shards(&config, &Shutdown::new(), ends, |context, ends| async move {
        let mesh: Rc<FanoutMesh> = ends.join::<FanoutHandler>().await;
        let handler = Rc::new(FanoutHandler {
            mesh: RefCell::new(Some(Rc::clone(&mesh))),
            received: Cell::new(0),
            peer_done: Cell::new(false),
        });
        mesh.serve(Rc::clone(&handler));
        let peer = ShardId(1 - context.shard.0);
        let fanout = |_| Request::Fanout(FANOUT_EVENTS);
        let callers = spawn_callers(&mesh, peer, 16, FANOUT_CALLS, fanout, |_| vec![FANOUT_EVENTS]);
        for caller in callers {
            caller.await;
        }
        // Events sent before a call's reply may still be queued behind it; wait for them all.
        while handler.received.get() < FANOUT_CALLS * FANOUT_EVENTS {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(mesh.stats().queue_full_waits > 0, "2-deep queues made senders wait");
        // Keep serving until the peer has had every reply and event from us too.
        mesh.tell(peer, Request::Done).await;
        while !handler.peer_done.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        *handler.mesh.borrow_mut() = None;
    })
    .unwrap();
}
