//! Topic subscriptions (PROTOCOL §4.6, §6.12), in two halves.
//!
//! `TopicDirectory` lives on the topic's owner shard: per topic, how many subscriptions each
//! shard holds, so a publication goes once to each shard with subscribers and to no other.
//! `TopicSubscribers` lives on every shard: per topic, the local connections that follow it,
//! so a shard that receives a publication writes it to each of them (except the publisher).
//!
//! Every `TOPIC_SUB` is counted on the owner by a call that completes before the session takes
//! its next message, so a publication sent after a subscriber's next reply reaches it. An
//! unsubscribe (or a close) is a tell: the local half stops delivering at once, and the
//! owner's count follows in the mesh's FIFO order, after that shard's earlier subscribes.
//! Nothing here is persisted or ordered across publishers; ordering per publisher comes from
//! the FIFO mesh (DECISIONS §2.3).

use std::sync::Arc;

use ahash::AHashMap;
use shardgrid_shards::ShardId;

use crate::shard::ConnId;

/// See the module doc. Lives on the topic's owner shard.
#[derive(Default)]
pub struct TopicDirectory {
    /// Per topic, per shard index: subscriptions held there. A topic with no subscription left
    /// is removed, so the table holds only followed topics.
    topics: AHashMap<Arc<str>, Vec<u32>>,
}

impl TopicDirectory {
    pub fn subscribe(&mut self, topic: &Arc<str>, shard: ShardId, shard_count: usize) {
        let counts = self.topics.entry(Arc::clone(topic)).or_insert_with(|| vec![0; shard_count]);
        counts[shard.index()] += 1;
    }

    /// Forgets one subscription held on `shard`. An unsubscribe without a matching subscribe
    /// is our bug (the session only withdraws what it subscribed), so it asserts in debug.
    pub fn unsubscribe(&mut self, topic: &str, shard: ShardId) {
        let Some(counts) = self.topics.get_mut(topic) else {
            debug_assert!(false, "unsubscribe from unknown topic {topic:?}");
            return;
        };
        debug_assert!(counts[shard.index()] > 0, "unsubscribe without subscribe on {shard}");
        counts[shard.index()] = counts[shard.index()].saturating_sub(1);
        if counts.iter().all(|count| *count == 0) {
            self.topics.remove(topic);
        }
    }

    /// The shards holding subscriptions to `topic`, ascending.
    pub fn shards(&self, topic: &str) -> Vec<ShardId> {
        match self.topics.get(topic) {
            Some(counts) => counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(shard, _)| ShardId(shard as u16))
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }
}

/// See the module doc. Lives on every shard, for its own connections.
#[derive(Default)]
pub struct TopicSubscribers {
    topics: AHashMap<Arc<str>, Vec<ConnId>>,
}

impl TopicSubscribers {
    /// Adds `conn` to `topic`'s followers (the session never adds a connection twice).
    pub fn add(&mut self, topic: &Arc<str>, conn: ConnId) {
        let conns = self.topics.entry(Arc::clone(topic)).or_default();
        debug_assert!(!conns.contains(&conn), "connection {conn} subscribed twice to {topic:?}");
        conns.push(conn);
    }

    pub fn remove(&mut self, topic: &str, conn: ConnId) {
        let Some(conns) = self.topics.get_mut(topic) else { return };
        conns.retain(|other| *other != conn);
        if conns.is_empty() {
            self.topics.remove(topic);
        }
    }

    /// The local connections following `topic`.
    pub fn conns(&self, topic: &str) -> &[ConnId] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the directory names exactly the shards that still hold a subscription.
    // Method: subscribe twice on one shard and once on another, then withdraw one by one.
    #[test]
    fn directory_counts_subscriptions_per_shard() {
        let mut directory = TopicDirectory::default();
        let topic: Arc<str> = Arc::from("news");
        directory.subscribe(&topic, ShardId(1), 3);
        directory.subscribe(&topic, ShardId(1), 3);
        directory.subscribe(&topic, ShardId(2), 3);
        assert_eq!(directory.shards("news"), vec![ShardId(1), ShardId(2)]);
        directory.unsubscribe("news", ShardId(1));
        assert_eq!(directory.shards("news"), vec![ShardId(1), ShardId(2)]);
        directory.unsubscribe("news", ShardId(2));
        assert_eq!(directory.shards("news"), vec![ShardId(1)]);
        directory.unsubscribe("news", ShardId(1));
        assert!(directory.shards("news").is_empty());
        assert_eq!(directory.topic_count(), 0);
        assert!(directory.shards("nobody-follows-this").is_empty());
    }

    // Goal: local followers are added and removed per connection, and empty topics vanish.
    #[test]
    fn local_followers() {
        let mut subscribers = TopicSubscribers::default();
        let topic: Arc<str> = Arc::from("t");
        subscribers.add(&topic, 1);
        subscribers.add(&topic, 2);
        assert_eq!(subscribers.conns("t"), &[1, 2]);
        subscribers.remove("t", 1);
        assert_eq!(subscribers.conns("t"), &[2]);
        subscribers.remove("t", 2);
        subscribers.remove("t", 2);
        assert!(subscribers.conns("t").is_empty());
        assert!(subscribers.topics.is_empty());
    }
}
