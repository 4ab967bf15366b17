//! What one connection holds in the coordination services (topics it follows, counters it is
//! subscribed to, journal subscriptions, the shards where it may hold or await locks), kept on
//! the connection's shard so that `Session::close` can withdraw exactly that and nothing more.

use std::net::SocketAddr;
use std::sync::Arc;

use ahash::AHashSet;
use shardgrid_shards::ShardId;

use super::Session;

/// See the module doc. Lives in the `Session`, on the connection's shard.
#[derive(Default)]
pub(super) struct CoordSession {
    pub(super) topics: AHashSet<Arc<str>>,
    pub(super) counters: AHashSet<Arc<str>>,
    /// Journal subscription ids.
    pub(super) journal: AHashSet<String>,
    /// Owner shards this connection sent a `LOCK_REQUEST` to; only there can it hold a lock
    /// or have a request waiting.
    pub(super) lock_owners: Vec<ShardId>,
    /// The address the client connected to, for `PARTITION_MAP` endpoints.
    pub(super) local_addr: Option<SocketAddr>,
}

impl Session {
    /// Records the address the client connected to (the socket's local address).
    pub fn set_local_addr(&mut self, address: SocketAddr) {
        self.coord.local_addr = Some(address);
    }

    /// Withdraws everything this connection holds in the coordination services.
    pub(super) async fn close_coordination(&mut self) {
        let coord = std::mem::take(&mut self.coord);
        let conn = self.conn_ref();
        self.node
            .close_coordination(
                conn,
                coord.topics.into_iter().collect(),
                coord.counters.into_iter().collect(),
                coord.journal.into_iter().collect(),
                coord.lock_owners,
            )
            .await;
    }
}
