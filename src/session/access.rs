//! What each client message needs from the access policy (`crate::acl`), checked on the
//! connection's shard before the message is dispatched, so a denied message never hops.
//! A denied message gets one `ERROR {code: 403}` and nothing of it is applied (for an
//! `OP_BATCH`, not even the ops that were allowed: DECISIONS §5).

use crate::acl::{Access, Permission, Resource};
use crate::protocol::{ClientMessage, ClientOp, OpKind};

fn map(name: &str, permission: Permission) -> Access<'_> {
    Access { kind: Resource::Map, name, permission }
}

fn op_access(op: &ClientOp) -> Access<'_> {
    let permission = match op.kind {
        OpKind::Remove { .. } | OpKind::OrRemove { .. } => Permission::Remove,
        OpKind::Put(_) | OpKind::OrAdd(_) | OpKind::Noop => Permission::Write,
    };
    map(&op.map_name, permission)
}

/// Journal reads without a map name read every map: checked as map `*`.
const EVERY_MAP: &str = "*";

/// Appends every access `message` needs. Messages that touch no named resource (handshake,
/// PING, unsubscribes, the partition map) need none.
pub fn required<'a>(message: &'a ClientMessage, needs: &mut Vec<Access<'a>>) {
    match message {
        ClientMessage::ClientOp(op) => needs.push(op_access(op)),
        ClientMessage::OpBatch { ops, .. } => needs.extend(ops.iter().map(op_access)),
        ClientMessage::QuerySub { map_name, .. } | ClientMessage::SearchSub { map_name, .. } => {
            needs.push(map(map_name, Permission::Read));
            needs.push(map(map_name, Permission::Subscribe));
        }
        ClientMessage::Search { map_name, .. }
        | ClientMessage::HybridSearch { map_name, .. }
        | ClientMessage::VectorSearch { map_name, .. }
        | ClientMessage::SyncInit { map_name, .. }
        | ClientMessage::MerkleReqBucket { map_name, .. }
        | ClientMessage::OrMapSyncInit { map_name, .. }
        | ClientMessage::OrMapMerkleReqBucket { map_name, .. }
        | ClientMessage::OrMapDiffRequest { map_name, .. } => needs.push(map(map_name, Permission::Read)),
        ClientMessage::HybridSearchSub { map_name, .. } => {
            needs.push(map(map_name, Permission::Read));
            needs.push(map(map_name, Permission::Subscribe));
        }
        ClientMessage::OrMapPushDiff { map_name, entries } => {
            needs.push(map(map_name, Permission::Write));
            if entries.iter().any(|entry| !entry.tombstones.is_empty()) {
                needs.push(map(map_name, Permission::Remove));
            }
        }
        ClientMessage::EntryProcess { map_name, .. } | ClientMessage::EntryProcessBatch { map_name, .. } => {
            needs.push(map(map_name, Permission::Read));
            needs.push(map(map_name, Permission::Write));
        }
        ClientMessage::RegisterResolver { map_name, .. } | ClientMessage::UnregisterResolver { map_name, .. } => {
            needs.push(map(map_name, Permission::Admin))
        }
        ClientMessage::ListResolvers { map_name, .. } => {
            needs.push(map(map_name.as_deref().unwrap_or(EVERY_MAP), Permission::Read))
        }
        ClientMessage::JournalSubscribe { map_name, .. } | ClientMessage::JournalRead { map_name, .. } => {
            needs.push(map(map_name.as_deref().unwrap_or(EVERY_MAP), Permission::Read))
        }
        ClientMessage::TopicSub { topic } => {
            needs.push(Access { kind: Resource::Topic, name: topic, permission: Permission::Subscribe })
        }
        ClientMessage::TopicPub { topic, .. } => {
            needs.push(Access { kind: Resource::Topic, name: topic, permission: Permission::Publish })
        }
        ClientMessage::LockRequest { name, .. } | ClientMessage::LockRelease { name, .. } => {
            needs.push(Access { kind: Resource::Lock, name, permission: Permission::Lock })
        }
        ClientMessage::CounterRequest { name } => {
            needs.push(Access { kind: Resource::Counter, name, permission: Permission::Read })
        }
        ClientMessage::CounterSync { name, .. } => {
            needs.push(Access { kind: Resource::Counter, name, permission: Permission::Read });
            needs.push(Access { kind: Resource::Counter, name, permission: Permission::Write });
        }
        ClientMessage::Auth { .. }
        | ClientMessage::DeviceHello { .. }
        | ClientMessage::Ping { .. }
        | ClientMessage::ClientApplyAck { .. }
        | ClientMessage::QueryUnsub { .. }
        | ClientMessage::QuerySyncInit { .. }
        | ClientMessage::SqlQuery { .. }
        | ClientMessage::TopicUnsub { .. }
        | ClientMessage::SearchUnsub { .. }
        | ClientMessage::HybridSearchUnsub { .. }
        | ClientMessage::HybridQuerySubscribe { .. }
        | ClientMessage::HybridQueryUnsubscribe { .. }
        | ClientMessage::JournalUnsubscribe { .. }
        | ClientMessage::PartitionMapRequest { .. }
        | ClientMessage::Batch { .. } => {}
    }
}
