//! The message registry: which handler family answers each client message type. Built once
//! from one table, so the whole dispatch surface can be read in one place; the families' code
//! lives in their own modules.

use crate::protocol::MessageType;

/// The handler family for a message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `AUTH`, `DEVICE_HELLO`: the handshake (`handshake`).
    Handshake,
    /// `PING` (`handshake`).
    Liveness,
    /// `CLIENT_OP`, `OP_BATCH` (`writes`).
    Writes,
    /// `QUERY_SUB`, `QUERY_UNSUB` (`queries`).
    Queries,
    /// `SEARCH`, `SEARCH_SUB`, `SEARCH_UNSUB` (`search`).
    Search,
    /// `ENTRY_PROCESS`, `ENTRY_PROCESS_BATCH` (`processors`).
    Processors,
    /// `REGISTER_RESOLVER`, `UNREGISTER_RESOLVER`, `LIST_RESOLVERS` (`resolvers`).
    Resolvers,
    /// `TOPIC_SUB`, `TOPIC_UNSUB`, `TOPIC_PUB` (`topics`).
    Topics,
    /// `LOCK_REQUEST`, `LOCK_RELEASE` (`locks`).
    Locks,
    /// `COUNTER_REQUEST`, `COUNTER_SYNC` (`counters`).
    Counters,
    /// `JOURNAL_SUBSCRIBE`, `JOURNAL_UNSUBSCRIBE`, `JOURNAL_READ` (`journal`).
    Journal,
    /// `PARTITION_MAP_REQUEST` (`cluster`).
    Cluster,
    /// `SYNC_INIT`, `MERKLE_REQ_BUCKET`, `ORMAP_SYNC_INIT`, `ORMAP_MERKLE_REQ_BUCKET`,
    /// `ORMAP_DIFF_REQUEST`, `ORMAP_PUSH_DIFF` (`sync`).
    Sync,
    /// The inbound `BATCH` envelope: each inner message is dispatched in order.
    Envelope,
    /// Messages the protocol lets a server ignore without a reply (PROTOCOL §4.4, §4.5):
    /// `CLIENT_APPLY_ACK` (we never send `coveringEpoch`), `QUERY_SYNC_INIT`.
    Ignored,
    /// `SQL_QUERY`: answered with `SQL_QUERY_RESP {code: FEATURE_DISABLED}`.
    SqlDisabled,
    /// A client message shardgrid does not implement yet: `ERROR 501` (DECISIONS §5).
    NotImplemented,
}

/// The table itself. A client-to-server type missing here is `NotImplemented`.
const TABLE: &[(MessageType, Family)] = &[
    (MessageType::Auth, Family::Handshake),
    (MessageType::DeviceHello, Family::Handshake),
    (MessageType::Ping, Family::Liveness),
    (MessageType::ClientOp, Family::Writes),
    (MessageType::OpBatch, Family::Writes),
    (MessageType::QuerySub, Family::Queries),
    (MessageType::QueryUnsub, Family::Queries),
    (MessageType::Search, Family::Search),
    (MessageType::SearchSub, Family::Search),
    (MessageType::SearchUnsub, Family::Search),
    (MessageType::EntryProcess, Family::Processors),
    (MessageType::EntryProcessBatch, Family::Processors),
    (MessageType::RegisterResolver, Family::Resolvers),
    (MessageType::UnregisterResolver, Family::Resolvers),
    (MessageType::ListResolvers, Family::Resolvers),
    (MessageType::TopicSub, Family::Topics),
    (MessageType::TopicUnsub, Family::Topics),
    (MessageType::TopicPub, Family::Topics),
    (MessageType::LockRequest, Family::Locks),
    (MessageType::LockRelease, Family::Locks),
    (MessageType::CounterRequest, Family::Counters),
    (MessageType::CounterSync, Family::Counters),
    (MessageType::JournalSubscribe, Family::Journal),
    (MessageType::JournalUnsubscribe, Family::Journal),
    (MessageType::JournalRead, Family::Journal),
    (MessageType::PartitionMapRequest, Family::Cluster),
    (MessageType::SyncInit, Family::Sync),
    (MessageType::MerkleReqBucket, Family::Sync),
    (MessageType::OrMapSyncInit, Family::Sync),
    (MessageType::OrMapMerkleReqBucket, Family::Sync),
    (MessageType::OrMapDiffRequest, Family::Sync),
    (MessageType::OrMapPushDiff, Family::Sync),
    (MessageType::Batch, Family::Envelope),
    (MessageType::ClientApplyAck, Family::Ignored),
    (MessageType::QuerySyncInit, Family::Ignored),
    (MessageType::SqlQuery, Family::SqlDisabled),
];

/// Looks up a message type's family.
pub fn family(message_type: MessageType) -> Family {
    TABLE.iter().find(|(entry, _)| *entry == message_type).map(|(_, family)| *family).unwrap_or(Family::NotImplemented)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each type appears at most once in the table, so a lookup has one answer.
    #[test]
    fn table_has_no_duplicates() {
        for (index, (message_type, _)) in TABLE.iter().enumerate() {
            assert!(TABLE[index + 1..].iter().all(|(other, _)| other != message_type), "{message_type:?} twice");
        }
        assert_eq!(family(MessageType::OpBatch), Family::Writes);
        assert_eq!(family(MessageType::TopicPub), Family::Topics);
        assert_eq!(family(MessageType::HybridQuerySubscribe), Family::NotImplemented);
    }
}
