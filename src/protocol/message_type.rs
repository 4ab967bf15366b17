//! The message-type discriminator: every `type` string of PROTOCOL.md §4, which way it travels,
//! and its text. The server's message registry dispatches on [`MessageType`]; this module knows
//! nothing about the fields of any message.

/// Which way a message type travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
    /// Cluster-internal messages (PROTOCOL.md §4.12); a client never sends them.
    ServerToServer,
}

/// Declares `MessageType` with its wire text and direction in one table, so `parse`,
/// `as_str` and `direction` cannot drift apart.
macro_rules! message_types {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, $direction:ident; )*) => {
        /// Every `type` string of PROTOCOL.md §4.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MessageType {
            $( $(#[$doc])* $variant, )*
        }

        impl MessageType {
            /// Every message type, in declaration order.
            pub const ALL: &'static [MessageType] = &[$( MessageType::$variant, )*];

            /// The wire text, e.g. `"OP_BATCH"`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( MessageType::$variant => $text, )*
                }
            }

            /// The type named by a frame's `type` field; `None` for a type this protocol
            /// does not have.
            pub fn parse(text: &str) -> Option<MessageType> {
                match text {
                    $( $text => Some(MessageType::$variant), )*
                    _ => None,
                }
            }

            pub fn direction(self) -> Direction {
                match self {
                    $( MessageType::$variant => Direction::$direction, )*
                }
            }
        }
    };
}

message_types! {
    // §4.1 connection, auth, liveness
    Auth = "AUTH", ClientToServer;
    AuthRequired = "AUTH_REQUIRED", ServerToClient;
    AuthAck = "AUTH_ACK", ServerToClient;
    AuthFail = "AUTH_FAIL", ServerToClient;
    DeviceHello = "DEVICE_HELLO", ClientToServer;
    DeviceAck = "DEVICE_ACK", ServerToClient;
    Ping = "PING", ClientToServer;
    Pong = "PONG", ServerToClient;
    Error = "ERROR", ServerToClient;
    // §4.2 writes
    OpBatch = "OP_BATCH", ClientToServer;
    ClientOp = "CLIENT_OP", ClientToServer;
    OpAck = "OP_ACK", ServerToClient;
    OpRejected = "OP_REJECTED", ServerToClient;
    ServerEvent = "SERVER_EVENT", ServerToClient;
    ServerBatchEvent = "SERVER_BATCH_EVENT", ServerToClient;
    MergeRejected = "MERGE_REJECTED", ServerToClient;
    // §4.3 LWW-map Merkle sync
    SyncInit = "SYNC_INIT", ClientToServer;
    SyncRespRoot = "SYNC_RESP_ROOT", ServerToClient;
    MerkleReqBucket = "MERKLE_REQ_BUCKET", ClientToServer;
    SyncRespBuckets = "SYNC_RESP_BUCKETS", ServerToClient;
    SyncRespLeaf = "SYNC_RESP_LEAF", ServerToClient;
    SyncResetRequired = "SYNC_RESET_REQUIRED", ServerToClient;
    GcPrune = "GC_PRUNE", ServerToClient;
    // §4.4 OR-map Merkle sync
    OrMapSyncInit = "ORMAP_SYNC_INIT", ClientToServer;
    OrMapSyncRespRoot = "ORMAP_SYNC_RESP_ROOT", ServerToClient;
    OrMapMerkleReqBucket = "ORMAP_MERKLE_REQ_BUCKET", ClientToServer;
    OrMapSyncRespBuckets = "ORMAP_SYNC_RESP_BUCKETS", ServerToClient;
    OrMapSyncRespLeaf = "ORMAP_SYNC_RESP_LEAF", ServerToClient;
    OrMapDiffRequest = "ORMAP_DIFF_REQUEST", ClientToServer;
    OrMapDiffResponse = "ORMAP_DIFF_RESPONSE", ServerToClient;
    OrMapPushDiff = "ORMAP_PUSH_DIFF", ClientToServer;
    ClientApplyAck = "CLIENT_APPLY_ACK", ClientToServer;
    // §4.5 live queries
    QuerySub = "QUERY_SUB", ClientToServer;
    QueryUnsub = "QUERY_UNSUB", ClientToServer;
    QueryResp = "QUERY_RESP", ServerToClient;
    QueryUpdate = "QUERY_UPDATE", ServerToClient;
    QuerySyncInit = "QUERY_SYNC_INIT", ClientToServer;
    SqlQuery = "SQL_QUERY", ClientToServer;
    SqlQueryResp = "SQL_QUERY_RESP", ServerToClient;
    // §4.6 topics
    TopicSub = "TOPIC_SUB", ClientToServer;
    TopicUnsub = "TOPIC_UNSUB", ClientToServer;
    TopicPub = "TOPIC_PUB", ClientToServer;
    TopicMessage = "TOPIC_MESSAGE", ServerToClient;
    // §4.7 locks
    LockRequest = "LOCK_REQUEST", ClientToServer;
    LockRelease = "LOCK_RELEASE", ClientToServer;
    LockGranted = "LOCK_GRANTED", ServerToClient;
    LockReleased = "LOCK_RELEASED", ServerToClient;
    // §4.8 PN counters
    CounterRequest = "COUNTER_REQUEST", ClientToServer;
    CounterSync = "COUNTER_SYNC", ClientToServer;
    CounterResponse = "COUNTER_RESPONSE", ServerToClient;
    CounterUpdate = "COUNTER_UPDATE", ServerToClient;
    // §4.9 full-text, hybrid and vector search
    Search = "SEARCH", ClientToServer;
    SearchResp = "SEARCH_RESP", ServerToClient;
    SearchSub = "SEARCH_SUB", ClientToServer;
    SearchUpdate = "SEARCH_UPDATE", ServerToClient;
    SearchUnsub = "SEARCH_UNSUB", ClientToServer;
    HybridSearch = "HYBRID_SEARCH", ClientToServer;
    HybridSearchResp = "HYBRID_SEARCH_RESP", ServerToClient;
    HybridSearchSub = "HYBRID_SEARCH_SUB", ClientToServer;
    HybridSearchUpdate = "HYBRID_SEARCH_UPDATE", ServerToClient;
    HybridSearchUnsub = "HYBRID_SEARCH_UNSUB", ClientToServer;
    VectorSearch = "VECTOR_SEARCH", ClientToServer;
    VectorSearchResp = "VECTOR_SEARCH_RESP", ServerToClient;
    /// Sent by the client, absent from the schema; shardgrid answers 501 (DECISIONS.md §5).
    HybridQuerySubscribe = "HYBRID_QUERY_SUBSCRIBE", ClientToServer;
    HybridQueryUnsubscribe = "HYBRID_QUERY_UNSUBSCRIBE", ClientToServer;
    // §4.10 entry processors and conflict resolvers
    EntryProcess = "ENTRY_PROCESS", ClientToServer;
    EntryProcessBatch = "ENTRY_PROCESS_BATCH", ClientToServer;
    EntryProcessResponse = "ENTRY_PROCESS_RESPONSE", ServerToClient;
    EntryProcessBatchResponse = "ENTRY_PROCESS_BATCH_RESPONSE", ServerToClient;
    RegisterResolver = "REGISTER_RESOLVER", ClientToServer;
    RegisterResolverResponse = "REGISTER_RESOLVER_RESPONSE", ServerToClient;
    UnregisterResolver = "UNREGISTER_RESOLVER", ClientToServer;
    UnregisterResolverResponse = "UNREGISTER_RESOLVER_RESPONSE", ServerToClient;
    ListResolvers = "LIST_RESOLVERS", ClientToServer;
    ListResolversResponse = "LIST_RESOLVERS_RESPONSE", ServerToClient;
    // §4.11 event journal
    JournalSubscribe = "JOURNAL_SUBSCRIBE", ClientToServer;
    JournalUnsubscribe = "JOURNAL_UNSUBSCRIBE", ClientToServer;
    JournalEvent = "JOURNAL_EVENT", ServerToClient;
    JournalRead = "JOURNAL_READ", ClientToServer;
    JournalReadResponse = "JOURNAL_READ_RESPONSE", ServerToClient;
    // §4.12 cluster / partition map
    PartitionMapRequest = "PARTITION_MAP_REQUEST", ClientToServer;
    PartitionMap = "PARTITION_MAP", ServerToClient;
    /// Recognised by the client in cluster mode; its shape is not specified and shardgrid
    /// never sends it.
    PartitionMapDelta = "PARTITION_MAP_DELTA", ServerToClient;
    ClusterSubRegister = "CLUSTER_SUB_REGISTER", ServerToServer;
    ClusterSubAck = "CLUSTER_SUB_ACK", ServerToServer;
    ClusterSubUpdate = "CLUSTER_SUB_UPDATE", ServerToServer;
    ClusterSubUnregister = "CLUSTER_SUB_UNREGISTER", ServerToServer;
    ClusterSearchReq = "CLUSTER_SEARCH_REQ", ServerToServer;
    ClusterSearchResp = "CLUSTER_SEARCH_RESP", ServerToServer;
    ClusterSearchSubscribe = "CLUSTER_SEARCH_SUBSCRIBE", ServerToServer;
    ClusterSearchUnsubscribe = "CLUSTER_SEARCH_UNSUBSCRIBE", ServerToServer;
    ClusterSearchUpdate = "CLUSTER_SEARCH_UPDATE", ServerToServer;
    // §4.13
    /// The envelope travels both ways with different layouts (PROTOCOL.md §4.13). It is
    /// classed client-to-server because shardgrid only ever receives it (PROTOCOL.md §11).
    Batch = "BATCH", ClientToServer;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: `parse` and `as_str` are inverse for every type and the texts are unique.
    #[test]
    fn parse_inverts_as_str() {
        let mut seen = std::collections::HashSet::new();
        for &message_type in MessageType::ALL {
            assert!(seen.insert(message_type.as_str()), "duplicate {}", message_type.as_str());
            assert_eq!(MessageType::parse(message_type.as_str()), Some(message_type));
        }
        assert_eq!(MessageType::parse("NOPE"), None);
        assert_eq!(MessageType::parse("op_batch"), None, "type strings are case-sensitive");
    }

    /// Goal: spot-check directions against the §4 tables.
    #[test]
    fn directions_follow_the_catalogue() {
        assert_eq!(MessageType::OpBatch.direction(), Direction::ClientToServer);
        assert_eq!(MessageType::OpAck.direction(), Direction::ServerToClient);
        assert_eq!(MessageType::ClusterSubAck.direction(), Direction::ServerToServer);
        assert_eq!(MessageType::HybridQuerySubscribe.direction(), Direction::ClientToServer);
        assert_eq!(MessageType::PartitionMapDelta.direction(), Direction::ServerToClient);
        let client_types = MessageType::ALL.iter().filter(|t| t.direction() == Direction::ClientToServer).count();
        assert_eq!(client_types, 42);
    }
}
