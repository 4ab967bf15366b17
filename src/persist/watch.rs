//! Waiting for durability. An owner shard's flusher tells the shards that wait on it how far
//! its log is durable (`Hop::Durable`); each shard keeps the latest notice per owner in a
//! `DurabilityWatch` and wakes the writes waiting on it. Lives on every shard.
//!
//! Also `Notify`, the one-waiter wake-up the flusher and compaction tasks sleep on.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use shardgrid_shards::ShardId;
use shardgrid_storage::LogPosition;

/// What an owner answers about the durability of the ops it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ticket {
    /// Nothing to wait for: not asked, already durable, or a backend that never fsyncs.
    Ready,
    /// Durable once the owner's log is durable up to this position.
    Wait(LogPosition),
    /// The owner's log refuses writes; the reason.
    Failed(Arc<str>),
}

/// One owner's latest durability notice.
#[derive(Clone, Debug, Default)]
struct OwnerNotice {
    durable: LogPosition,
    /// Positions up to here that are not durable will not become so in time: the flush
    /// covering them failed, for `failure`.
    failed_until: LogPosition,
    failure: Option<Arc<str>>,
}

/// See the module doc.
pub struct DurabilityWatch {
    owners: RefCell<Vec<OwnerNotice>>,
    waiters: RefCell<Vec<Waker>>,
}

impl DurabilityWatch {
    pub fn new(shard_count: usize) -> DurabilityWatch {
        DurabilityWatch {
            owners: RefCell::new(vec![OwnerNotice::default(); shard_count]),
            waiters: RefCell::new(Vec::new()),
        }
    }

    /// Records a notice from `owner` and wakes every waiter to look again.
    pub fn update(&self, owner: ShardId, durable: LogPosition, failed: Option<(LogPosition, Arc<str>)>) {
        {
            let mut owners = self.owners.borrow_mut();
            let notice = &mut owners[owner.index()];
            notice.durable = notice.durable.max(durable);
            if let Some((until, reason)) = failed {
                notice.failed_until = notice.failed_until.max(until);
                notice.failure = Some(reason);
            }
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Completes when `owner`'s log is durable up to `position`, or fails with the reason it
    /// will not be.
    pub async fn wait(&self, owner: ShardId, position: LogPosition) -> Result<(), Arc<str>> {
        poll_fn(|context| {
            let owners = self.owners.borrow();
            let notice = &owners[owner.index()];
            if notice.durable >= position {
                return Poll::Ready(Ok(()));
            }
            if position <= notice.failed_until {
                let reason = notice.failure.clone().unwrap_or_else(|| Arc::from("storage failed"));
                return Poll::Ready(Err(reason));
            }
            self.waiters.borrow_mut().push(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A wake-up for one sleeping task: `notify` sets it (and wakes the task), `wait` completes
/// once it is set and clears it. Lives on one shard.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|context| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}
