//! The sync family: Merkle sync of LWW maps (`SYNC_INIT`, `MERKLE_REQ_BUCKET`) and OR maps
//! (`ORMAP_SYNC_INIT`, `ORMAP_MERKLE_REQ_BUCKET`, `ORMAP_DIFF_REQUEST`, `ORMAP_PUSH_DIFF`) —
//! PROTOCOL.md §4.3, §4.4, §6.6, DECISIONS.md §2.4, §3.1, §4.3, §4.4.
//!
//! Every bucket request is answered from the map's tree as it is when the request arrives (the
//! node gathers the complete leaves from every shard; no per-connection snapshot is kept), so
//! a walk may see writes that landed during it: it then walks a little more, or the next sync
//! finishes the job; it never loses data. Pushed OR state goes through `Node::apply_batch` as
//! ordinary OR ops, so it fans out events and live-query changes like any write.

use std::sync::Arc;

use ahash::AHashSet;

use super::Session;
use crate::limits::{KEY_BYTES_MAX, MAP_NAME_BYTES_MAX, SYNC_DIFF_KEYS_MAX, SYNC_REPLY_BYTES_MAX};
use crate::merkle::{children, root_hash, BucketPath};
use crate::model::LwwRecord;
use crate::protocol::{ClientMessage, ClientOp, OpKind, OrMapEntry, ServerMessage};
use crate::shard::sync::TreeKind;
use crate::shard::OpOutcome;

/// Roughly what one record costs in a reply, for splitting big answers.
const RECORD_OVERHEAD_BYTES: usize = 64;

fn lww_record_bytes((key, record): &(String, LwwRecord)) -> usize {
    key.len() + record.value.as_ref().map_or(0, |value| value.len()) + RECORD_OVERHEAD_BYTES
}

fn or_entry_bytes(entry: &OrMapEntry) -> usize {
    let records: usize =
        entry.records.iter().map(|record| record.value.len() + record.tag.len() + RECORD_OVERHEAD_BYTES).sum();
    let tombstones: usize = entry.tombstones.iter().map(|tag| tag.len() + 2).sum();
    entry.key.len() + records + tombstones + RECORD_OVERHEAD_BYTES
}

/// Splits `items` into runs of at most `bytes_max` (by `size`), each at least one item; an
/// empty list gives one empty run, so every request gets an answer.
fn split_by_bytes<T>(items: Vec<T>, size: impl Fn(&T) -> usize, bytes_max: usize) -> Vec<Vec<T>> {
    let mut runs = vec![Vec::new()];
    let mut run_bytes = 0;
    for item in items {
        let item_bytes = size(&item);
        let current = runs.last_mut().expect("never empty");
        if !current.is_empty() && run_bytes + item_bytes > bytes_max {
            runs.push(Vec::new());
            run_bytes = 0;
        }
        run_bytes += item_bytes;
        runs.last_mut().expect("never empty").push(item);
    }
    runs
}

impl Session {
    pub(super) async fn on_sync(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::SyncInit { map_name, .. } => self.on_sync_init(map_name, TreeKind::Lww).await,
            ClientMessage::OrMapSyncInit { map_name, .. } => self.on_sync_init(map_name, TreeKind::Or).await,
            ClientMessage::MerkleReqBucket { map_name, path } => self.on_bucket(map_name, path, TreeKind::Lww).await,
            ClientMessage::OrMapMerkleReqBucket { map_name, path } => {
                self.on_bucket(map_name, path, TreeKind::Or).await
            }
            ClientMessage::OrMapDiffRequest { map_name, keys } => self.on_diff_request(map_name, keys).await,
            ClientMessage::OrMapPushDiff { map_name, entries } => self.on_push_diff(map_name, entries).await,
            _ => unreachable!("registry routes only the sync messages here"),
        }
    }

    /// The map name, or an `ERROR 400` naming the message.
    fn sync_map(&mut self, map_name: &str, message: &str) -> Option<Arc<str>> {
        if map_name.is_empty() || map_name.len() > MAP_NAME_BYTES_MAX {
            self.send_error(
                400,
                format!("malformed message: {message}.mapName must be 1 to {MAP_NAME_BYTES_MAX} bytes"),
            );
            return None;
        }
        Some(Arc::from(map_name))
    }

    /// `SYNC_INIT` / `ORMAP_SYNC_INIT`: the root of the map's tree and the server clock. The
    /// connection becomes interested in the map (DECISIONS §3.1). `ORMAP_SYNC_RESP_ROOT` has no
    /// `coveringEpoch` or `fullResync`: tombstones are never pruned (PROTOCOL §4.4).
    async fn on_sync_init(&mut self, map_name: String, kind: TreeKind) {
        let message = match kind {
            TreeKind::Lww => "SYNC_INIT",
            TreeKind::Or => "ORMAP_SYNC_INIT",
        };
        let Some(map) = self.sync_map(&map_name, message) else { return };
        self.add_interest(&map).await;
        let leaves = self.node.merkle_leaves(&map, kind, BucketPath::ROOT).await;
        let root_hash = root_hash(&leaves);
        let timestamp = self.node.hlc_now();
        self.send(&match kind {
            TreeKind::Lww => ServerMessage::SyncRespRoot { map_name, root_hash, timestamp },
            TreeKind::Or => ServerMessage::OrMapSyncRespRoot {
                map_name,
                root_hash,
                timestamp,
                covering_epoch: None,
                full_resync: false,
            },
        });
    }

    /// `MERKLE_REQ_BUCKET` / `ORMAP_MERKLE_REQ_BUCKET`: the children of an internal node, or the
    /// contents of a leaf. Empty and unknown nodes get an empty answer; a path that is not hex
    /// or is deeper than the tree gets `ERROR 400` (DECISIONS §4.4).
    async fn on_bucket(&mut self, map_name: String, path_text: String, kind: TreeKind) {
        let message = match kind {
            TreeKind::Lww => "MERKLE_REQ_BUCKET",
            TreeKind::Or => "ORMAP_MERKLE_REQ_BUCKET",
        };
        let Some(map) = self.sync_map(&map_name, message) else { return };
        let path = match BucketPath::parse(&path_text) {
            Ok(path) => path,
            Err(error) => {
                // The path may be huge; a prefix is enough to recognise it.
                let shown: String = path_text.chars().take(16).collect();
                return self.send_error(400, format!("invalid bucket path {shown:?}: {error}"));
            }
        };
        match (path.leaf(), kind) {
            (None, _) => {
                let leaves = self.node.merkle_leaves(&map, kind, path).await;
                let buckets = children(path, &leaves);
                self.send(&match kind {
                    TreeKind::Lww => ServerMessage::SyncRespBuckets { map_name, path: path_text, buckets },
                    TreeKind::Or => ServerMessage::OrMapSyncRespBuckets { map_name, path: path_text, buckets },
                });
            }
            (Some(leaf), TreeKind::Lww) => {
                let records = self.node.lww_leaf_records(&map, leaf).await;
                for records in split_by_bytes(records, lww_record_bytes, SYNC_REPLY_BYTES_MAX) {
                    self.send(&ServerMessage::SyncRespLeaf {
                        map_name: map_name.clone(),
                        path: path_text.clone(),
                        records,
                    });
                }
            }
            (Some(leaf), TreeKind::Or) => {
                let entries = self.node.or_leaf_entries(&map, leaf).await;
                for entries in split_by_bytes(entries, or_entry_bytes, SYNC_REPLY_BYTES_MAX) {
                    self.send(&ServerMessage::OrMapSyncRespLeaf {
                        map_name: map_name.clone(),
                        path: path_text.clone(),
                        entries,
                        covering_epoch: None,
                    });
                }
            }
        }
    }

    /// `ORMAP_DIFF_REQUEST`: the entries of the asked keys; a key the map lacks gets an entry
    /// with empty lists.
    async fn on_diff_request(&mut self, map_name: String, keys: Vec<String>) {
        let Some(map) = self.sync_map(&map_name, "ORMAP_DIFF_REQUEST") else { return };
        if keys.len() > SYNC_DIFF_KEYS_MAX {
            return self.send_error(413, format!("ORMAP_DIFF_REQUEST asks for more than {SYNC_DIFF_KEYS_MAX} keys"));
        }
        if keys.iter().any(|key| key.len() > KEY_BYTES_MAX) {
            return self.send_error(
                400,
                format!("malformed message: ORMAP_DIFF_REQUEST key longer than {KEY_BYTES_MAX} bytes"),
            );
        }
        let entries = self.node.or_entries(&map, keys).await;
        for entries in split_by_bytes(entries, or_entry_bytes, SYNC_REPLY_BYTES_MAX) {
            self.send(&ServerMessage::OrMapDiffResponse { map_name: map_name.clone(), entries, covering_epoch: None });
        }
    }

    /// `ORMAP_PUSH_DIFF`: merges the client's state of some keys with OR-set semantics, whatever
    /// this connection's sync state (DECISIONS §2.4). The client puts the whole map's tombstone
    /// set into every entry (PROTOCOL §4.4), so the tombstones are taken once, as globally
    /// unique removals: each one removes the record carrying that tag under whichever key holds
    /// it; a tag no shard holds is ignored (PROTOCOL §4.4 allows it). Then every pushed record
    /// is added under its entry's key. No `OP_ACK`; records with timestamps too far in the
    /// future are refused (DECISIONS §1.8) and reported in one `ERROR 400`.
    async fn on_push_diff(&mut self, map_name: String, entries: Vec<OrMapEntry>) {
        let Some(map) = self.sync_map(&map_name, "ORMAP_PUSH_DIFF") else { return };
        // Checked before anything is applied: a bad entry refuses the whole push.
        if entries.iter().any(|entry| entry.key.len() > KEY_BYTES_MAX) {
            return self
                .send_error(400, format!("malformed message: ORMAP_PUSH_DIFF key longer than {KEY_BYTES_MAX} bytes"));
        }
        self.add_interest(&map).await;
        let mut tags: Vec<String> = Vec::new();
        {
            let mut seen: AHashSet<&str> = AHashSet::new();
            for tag in entries.iter().flat_map(|entry| entry.tombstones.iter()) {
                if seen.insert(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        let mut ops = Vec::new();
        if !tags.is_empty() {
            for (tag, key) in self.node.or_tag_holders(&map, tags).await {
                ops.push(or_op(&map_name, key, OpKind::OrRemove { tag }));
            }
        }
        for entry in entries {
            for record in entry.records {
                ops.push(or_op(&map_name, entry.key.clone(), OpKind::OrAdd(record)));
            }
        }
        if ops.is_empty() {
            return;
        }
        let outcomes = self.node.apply_batch(ops, self.conn_ref()).await;
        let rejected = outcomes.iter().filter(|outcome| matches!(outcome, OpOutcome::Rejected { .. })).count();
        if rejected > 0 {
            self.send_error(
                400,
                format!("ORMAP_PUSH_DIFF: {rejected} records refused: timestamp too far in the future"),
            );
        }
    }
}

fn or_op(map_name: &str, key: String, kind: OpKind) -> ClientOp {
    ClientOp { id: None, map_name: map_name.into(), key: key.into(), kind, write_concern: None, timeout: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_by_bytes_and_never_vanish() {
        // Goal: a big leaf goes out as several messages of bounded size, each non-empty, and an
        // empty leaf still gets one (empty) answer. Method: split lists of sized items.
        assert_eq!(split_by_bytes(Vec::<usize>::new(), |size| *size, 10), vec![Vec::<usize>::new()]);
        assert_eq!(split_by_bytes(vec![4, 4, 4, 4], |size| *size, 10), vec![vec![4, 4], vec![4, 4]]);
        assert_eq!(split_by_bytes(vec![30, 1], |size| *size, 10), vec![vec![30], vec![1]]);
    }
}
