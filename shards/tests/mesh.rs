//! The mesh between real pinned executors: calls in both directions at once through tiny
//! queues complete (no deadlock, back-pressure only), replies match their calls, and tells from
//! one shard arrive in the order sent.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use shardgrid_shards::{run_shards, CoreSet, MeshBuilder, MeshHandler, RuntimeConfig, ShardId, Shutdown};

enum Request {
    Double(u64),
    Record(u64),
    Recorded,
    /// The sender has finished calling; no reply.
    Done,
}

/// Doubles numbers, records told numbers, and reports what it recorded.
struct Handler {
    recorded: RefCell<Vec<u64>>,
    peer_done: Cell<bool>,
}

impl MeshHandler<Request, Vec<u64>> for Handler {
    async fn handle(&self, _from: ShardId, request: Request) -> Option<Vec<u64>> {
        match request {
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
    let available = shardgrid_shards::cores::available_cpus();
    let cpus =
        if available.len() >= 2 { format!("{},{}", available[0], available[1]) } else { available[0].to_string() };
    let cores = CoreSet::parse_list(&cpus, &available).unwrap();
    let shard_count = 2;
    if cores.shard_count() < 2 {
        eprintln!("skipped: the mesh test needs two CPUs and this process may use only one");
        return;
    }
    let config = RuntimeConfig {
        cores,
        io_memory_bytes: 256 * 1024,
        ring_depth: 64,
        spin_before_park: None,
        preempt_timer: std::time::Duration::from_millis(100),
    };
    let ends = MeshBuilder::new::<Request, Vec<u64>>(shard_count, 2);
    run_shards(&config, &Shutdown::new(), ends, |context, ends| async move {
        let mesh = ends.join::<Handler>().await;
        let handler = Rc::new(Handler { recorded: RefCell::new(Vec::new()), peer_done: Cell::new(false) });
        mesh.serve(Rc::clone(&handler));
        let peer = ShardId(1 - context.shard.0);
        let mut callers = Vec::new();
        for caller in 0..64u64 {
            let mesh = Rc::clone(&mesh);
            callers.push(glommio::spawn_local(async move {
                for number in (caller..CALLS).step_by(64) {
                    assert_eq!(mesh.call(peer, Request::Double(number)).await, vec![number * 2]);
                }
            }));
        }
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
