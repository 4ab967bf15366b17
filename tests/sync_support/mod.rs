//! A small sync client for the end-to-end tests of Merkle and HTTP sync: replicas of an LWW map
//! and an OR map that keep the client's Merkle tree (PROTOCOL §6.6: depth 3, fan-out 16, built
//! here the naive way, leaf by leaf), and the walks the TopGun client does over WebSocket
//! (PROTOCOL §4.3, §4.4: compare the root, ask for the differing buckets, merge the leaves; for
//! OR maps push its own state back), counting every byte on the wire.

#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::{BTreeMap, BTreeSet};

use rmpv::Value;
use shardgrid::hash::{combine, fnv1a_utf16, lww_item_hash, mix, or_entry_hash};
use shardgrid::model::{OrRecord, Timestamp, ValueBytes};
use tungstenite::Message;

use crate::common::{get, map, msg, msg_payload, s, type_of, Client};

pub const LEAF_COUNT: usize = 4096;

/// The leaf number of `key`: the first three hex digits of `fnv1a(key)`.
pub fn leaf_of(key: &str) -> usize {
    (fnv1a_utf16(key) >> 20) as usize
}

/// The leaves under a hex path, as a range of leaf numbers.
fn leaf_range(path: &str) -> std::ops::Range<usize> {
    let prefix = usize::from_str_radix(if path.is_empty() { "0" } else { path }, 16).unwrap();
    let width = 16usize.pow(3 - path.len() as u32);
    prefix * width..(prefix + 1) * width
}

/// The client's tree: each leaf holds its keys' item hashes.
pub struct ClientTree {
    leaves: Vec<BTreeMap<String, u32>>,
}

impl Default for ClientTree {
    fn default() -> Self {
        ClientTree { leaves: vec![BTreeMap::new(); LEAF_COUNT] }
    }
}

impl ClientTree {
    pub fn set(&mut self, key: &str, item: Option<u32>) {
        let leaf = &mut self.leaves[leaf_of(key)];
        match item {
            Some(item) => {
                leaf.insert(key.to_string(), item);
            }
            None => {
                leaf.remove(key);
            }
        }
    }

    /// The hash of the node at `path`: a leaf combines its items, a node its children.
    pub fn hash(&self, path: &str) -> u32 {
        if path.len() == 3 {
            return combine(self.leaves[leaf_range(path).start].values().copied());
        }
        (0..16).fold(0u32, |sum, child| sum.wrapping_add(mix(self.hash(&format!("{path}{child:x}")))))
    }

    /// The children of `path` holding at least one key, with their hashes.
    pub fn buckets(&self, path: &str) -> BTreeMap<String, u32> {
        (0..16)
            .map(|child| format!("{path}{child:x}"))
            .filter(|child| leaf_range(child).any(|leaf| !self.leaves[leaf].is_empty()))
            .map(|child| (child[path.len()..].to_string(), self.hash(&child)))
            .collect()
    }

    pub fn keys_under(&self, path: &str) -> Vec<String> {
        leaf_range(path).flat_map(|leaf| self.leaves[leaf].keys().cloned()).collect()
    }
}

/// Reads a wire timestamp (`millis` may be any integer or a float).
/// An LWW `PUT` op of the stock client's op log.
pub fn put(id: usize, map_name: &str, key: &str, value: Value, timestamp: &Timestamp) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("PUT")),
        ("key", s(key)),
        ("record", map(vec![("value", value), ("timestamp", timestamp_value(timestamp))])),
    ])
}

/// An LWW `REMOVE` op: a tombstone record.
pub fn remove(id: usize, map_name: &str, key: &str, timestamp: &Timestamp) -> Value {
    map(vec![
        ("id", s(&id.to_string())),
        ("mapName", s(map_name)),
        ("opType", s("REMOVE")),
        ("key", s(key)),
        ("record", map(vec![("value", Value::Nil), ("timestamp", timestamp_value(timestamp))])),
    ])
}

/// The LWW rule applied to a model of the server's map.
pub fn model_merge(model: &mut BTreeMap<String, (Value, Timestamp)>, key: &str, value: Value, timestamp: Timestamp) {
    if model.get(key).is_none_or(|(_, current)| *current < timestamp) {
        model.insert(key.to_string(), (value, timestamp));
    }
}

pub fn timestamp_of(value: &Value) -> Timestamp {
    let number = |field: &str| {
        let value = get(value, field);
        value
            .as_u64()
            .or_else(|| value.as_f64().map(|float| float as u64))
            .unwrap_or_else(|| panic!("{field} in {value}"))
    };
    Timestamp::new(number("millis"), number("counter") as u32, get(value, "nodeId").as_str().unwrap())
}

pub fn timestamp_value(timestamp: &Timestamp) -> Value {
    map(vec![
        ("millis", Value::F64(timestamp.millis as f64)),
        ("counter", Value::from(timestamp.counter)),
        ("nodeId", s(&timestamp.node_id)),
    ])
}

pub fn encode_value(value: &Value) -> ValueBytes {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    ValueBytes::from(out)
}

/// A WebSocket client whose traffic is counted, in bytes of message payload each way.
pub struct Wire<'a> {
    pub client: &'a mut Client,
    pub sent_bytes: usize,
    pub received_bytes: usize,
}

impl<'a> Wire<'a> {
    pub fn new(client: &'a mut Client) -> Wire<'a> {
        Wire { client, sent_bytes: 0, received_bytes: 0 }
    }

    pub fn send(&mut self, message: &Value) {
        let bytes = encode_value(message);
        self.sent_bytes += bytes.len();
        self.client.send_bytes(&bytes);
    }

    pub fn recv(&mut self) -> Value {
        loop {
            match self.client.socket.read().expect("a message before the timeout") {
                Message::Binary(bytes) => {
                    self.received_bytes += bytes.len();
                    return rmpv::decode::read_value(&mut &bytes[..]).unwrap();
                }
                Message::Close(frame) => panic!("unexpected close: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message that is not a `SERVER_EVENT` or `PONG`.
    pub fn recv_reply(&mut self) -> Value {
        loop {
            let message = self.recv();
            if !matches!(type_of(&message).as_str(), "SERVER_EVENT" | "PONG") {
                return message;
            }
        }
    }

    /// Sends a `PING` and waits for its `PONG`: everything sent before has been handled.
    pub fn fence(&mut self) {
        self.send(&msg("PING", vec![("timestamp", Value::from(1))]));
        loop {
            if type_of(&self.recv()) == "PONG" {
                return;
            }
        }
    }
}

/// What one walk did.
#[derive(Debug, Default)]
pub struct WalkStats {
    pub bucket_requests: usize,
    pub leaves_received: usize,
    pub records_received: usize,
    pub pushes: usize,
}

/// An LWW map as the client holds it: key -> (value, timestamp); nil value = tombstone.
#[derive(Default)]
pub struct LwwReplica {
    pub records: BTreeMap<String, (Value, Timestamp)>,
    pub tree: ClientTree,
}

impl LwwReplica {
    /// LWW merge (PROTOCOL §6.2): the remote record wins only if strictly newer.
    pub fn merge(&mut self, key: &str, value: Value, timestamp: Timestamp) -> bool {
        if self.records.get(key).is_some_and(|(_, current)| *current >= timestamp) {
            return false;
        }
        self.tree.set(key, Some(lww_item_hash(key, &timestamp)));
        self.records.insert(key.to_string(), (value, timestamp));
        true
    }

    pub fn root(&self) -> u32 {
        self.tree.hash("")
    }
}

/// The client's LWW sync: `SYNC_INIT`; if the roots differ, walk every differing bucket down to
/// the leaves and merge their records.
pub fn lww_walk(wire: &mut Wire<'_>, map_name: &str, replica: &mut LwwReplica) -> WalkStats {
    let mut stats = WalkStats::default();
    wire.send(&msg("SYNC_INIT", vec![("mapName", s(map_name)), ("lastSyncTimestamp", Value::from(0))]));
    let root = wire.recv_reply();
    assert_eq!(type_of(&root), "SYNC_RESP_ROOT", "{root}");
    timestamp_of(get(&root, "payload.timestamp"));
    if get(&root, "payload.rootHash").as_u64() == Some(u64::from(replica.root())) {
        return stats;
    }
    let request = |wire: &mut Wire<'_>, path: &str| {
        wire.send(&msg_payload("MERKLE_REQ_BUCKET", vec![("mapName", s(map_name)), ("path", s(path))]));
    };
    request(wire, "");
    stats.bucket_requests += 1;
    let mut outstanding = 1;
    while outstanding > 0 {
        let reply = wire.recv_reply();
        outstanding -= 1;
        let path = get(&reply, "payload.path").as_str().unwrap().to_string();
        match type_of(&reply).as_str() {
            "SYNC_RESP_BUCKETS" => {
                let Value::Map(buckets) = get(&reply, "payload.buckets") else { panic!("buckets: {reply}") };
                for (child, hash) in buckets {
                    let child_path = format!("{path}{}", child.as_str().unwrap());
                    if replica.tree.hash(&child_path) != hash.as_u64().unwrap() as u32 {
                        request(wire, &child_path);
                        stats.bucket_requests += 1;
                        outstanding += 1;
                    }
                }
            }
            "SYNC_RESP_LEAF" => {
                stats.leaves_received += 1;
                let Value::Array(records) = get(&reply, "payload.records") else { panic!("records: {reply}") };
                for entry in records {
                    let record = get(entry, "record");
                    stats.records_received += 1;
                    replica.merge(
                        get(entry, "key").as_str().unwrap(),
                        get(record, "value").clone(),
                        timestamp_of(get(record, "timestamp")),
                    );
                }
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    stats
}

/// An OR map as the client holds it: key -> tag -> record, and the tombstoned tags.
#[derive(Default)]
pub struct OrReplica {
    pub items: BTreeMap<String, BTreeMap<String, OrRecord>>,
    pub tombstones: BTreeSet<String>,
    pub tree: ClientTree,
}

pub fn or_record(value: &Value, timestamp: Timestamp) -> OrRecord {
    OrRecord { value: encode_value(value), tag: timestamp.to_string(), timestamp, ttl_ms: None }
}

pub fn or_record_value(record: &OrRecord) -> Value {
    let value = rmpv::decode::read_value(&mut &record.value[..]).unwrap();
    map(vec![("value", value), ("timestamp", timestamp_value(&record.timestamp)), ("tag", s(&record.tag))])
}

fn or_record_of(value: &Value) -> OrRecord {
    OrRecord {
        value: encode_value(get(value, "value")),
        timestamp: timestamp_of(get(value, "timestamp")),
        tag: get(value, "tag").as_str().unwrap().to_string(),
        ttl_ms: get(value, "ttlMs").as_u64(),
    }
}

impl OrReplica {
    fn rehash(&mut self, key: &str) {
        let item = self
            .items
            .get(key)
            .filter(|records| !records.is_empty())
            .map(|records| or_entry_hash(key, records.values()));
        if item.is_none() {
            self.items.remove(key);
        }
        self.tree.set(key, item);
    }

    pub fn add(&mut self, key: &str, record: OrRecord) {
        if !self.tombstones.contains(&record.tag) {
            self.items.entry(key.to_string()).or_default().insert(record.tag.clone(), record);
            self.rehash(key);
        }
    }

    pub fn remove(&mut self, key: &str, tag: &str) {
        self.tombstones.insert(tag.to_string());
        if let Some(records) = self.items.get_mut(key) {
            records.remove(tag);
        }
        self.rehash(key);
    }

    /// The client's `mergeKey`: tombstones first, then unknown or newer records.
    pub fn merge_key(&mut self, key: &str, records: Vec<OrRecord>, tombstones: Vec<String>) {
        self.tombstones.extend(tombstones);
        let tombstones = &self.tombstones;
        let local = self.items.entry(key.to_string()).or_default();
        local.retain(|tag, _| !tombstones.contains(tag));
        for record in records {
            if tombstones.contains(&record.tag) {
                continue;
            }
            match local.get(&record.tag) {
                Some(current) if current.timestamp >= record.timestamp => {}
                _ => {
                    local.insert(record.tag.clone(), record);
                }
            }
        }
        self.rehash(key);
    }

    pub fn root(&self) -> u32 {
        self.tree.hash("")
    }

    /// The client's push: its records of each key that has some, with the whole map's
    /// tombstone set in every entry (PROTOCOL §4.4).
    pub fn push_entries(&self, keys: &[String]) -> Vec<Value> {
        let tombstones = Value::Array(self.tombstones.iter().map(|tag| s(tag)).collect());
        keys.iter()
            .filter_map(|key| self.items.get(key).filter(|records| !records.is_empty()).map(|records| (key, records)))
            .map(|(key, records)| {
                map(vec![
                    ("key", s(key)),
                    ("records", Value::Array(records.values().map(or_record_value).collect())),
                    ("tombstones", tombstones.clone()),
                ])
            })
            .collect()
    }

    fn push(&self, wire: &mut Wire<'_>, map_name: &str, keys: &[String], stats: &mut WalkStats) {
        let entries = self.push_entries(keys);
        if !entries.is_empty() {
            stats.pushes += 1;
            wire.send(&msg_payload(
                "ORMAP_PUSH_DIFF",
                vec![("mapName", s(map_name)), ("entries", Value::Array(entries))],
            ));
        }
    }
}

/// Reads an `ORMapEntry` from the wire.
pub fn or_entry_of(entry: &Value) -> (String, Vec<OrRecord>, Vec<String>) {
    let Value::Array(records) = get(entry, "records") else { panic!("records: {entry}") };
    let Value::Array(tombstones) = get(entry, "tombstones") else { panic!("tombstones: {entry}") };
    (
        get(entry, "key").as_str().unwrap().to_string(),
        records.iter().map(or_record_of).collect(),
        tombstones.iter().map(|tag| tag.as_str().unwrap().to_string()).collect(),
    )
}

/// The client's OR sync (its `ORMapSyncHandler`): `ORMAP_SYNC_INIT` with its root and root
/// buckets; walk the differing buckets; push local buckets the server does not list; merge each
/// leaf and push its own state of the leaf's keys back.
pub fn or_walk(wire: &mut Wire<'_>, map_name: &str, replica: &mut OrReplica) -> WalkStats {
    let mut stats = WalkStats::default();
    let buckets = replica.tree.buckets("");
    let bucket_hashes: Vec<(&str, Value)> =
        buckets.iter().map(|(child, hash)| (child.as_str(), Value::from(*hash))).collect();
    wire.send(&msg(
        "ORMAP_SYNC_INIT",
        vec![
            ("mapName", s(map_name)),
            ("rootHash", Value::from(replica.root())),
            ("bucketHashes", map(bucket_hashes)),
            ("lastSyncTimestamp", Value::from(0)),
        ],
    ));
    let root = wire.recv_reply();
    assert_eq!(type_of(&root), "ORMAP_SYNC_RESP_ROOT", "{root}");
    assert_eq!(get(&root, "payload.fullResync"), &Value::Nil, "never sent: tombstones are not pruned");
    assert_eq!(get(&root, "payload.coveringEpoch"), &Value::Nil);
    if get(&root, "payload.rootHash").as_u64() == Some(u64::from(replica.root())) {
        return stats;
    }
    let request = |wire: &mut Wire<'_>, path: &str| {
        wire.send(&msg_payload("ORMAP_MERKLE_REQ_BUCKET", vec![("mapName", s(map_name)), ("path", s(path))]));
    };
    request(wire, "");
    stats.bucket_requests += 1;
    let mut outstanding = 1;
    while outstanding > 0 {
        let reply = wire.recv_reply();
        outstanding -= 1;
        let path = get(&reply, "payload.path").as_str().unwrap().to_string();
        match type_of(&reply).as_str() {
            "ORMAP_SYNC_RESP_BUCKETS" => {
                let Value::Map(buckets) = get(&reply, "payload.buckets") else { panic!("buckets: {reply}") };
                let remote: BTreeMap<String, u32> = buckets
                    .iter()
                    .map(|(child, hash)| (child.as_str().unwrap().to_string(), hash.as_u64().unwrap() as u32))
                    .collect();
                for (child, hash) in &remote {
                    let child_path = format!("{path}{child}");
                    if replica.tree.hash(&child_path) != *hash {
                        request(wire, &child_path);
                        stats.bucket_requests += 1;
                        outstanding += 1;
                    }
                }
                for (child, hash) in replica.tree.buckets(&path) {
                    if !remote.contains_key(&child) && hash != 0 {
                        let keys = replica.tree.keys_under(&format!("{path}{child}"));
                        replica.push(wire, map_name, &keys, &mut stats);
                    }
                }
            }
            "ORMAP_SYNC_RESP_LEAF" => {
                stats.leaves_received += 1;
                let Value::Array(entries) = get(&reply, "payload.entries") else { panic!("entries: {reply}") };
                let mut keys = Vec::new();
                for entry in entries {
                    let (key, records, tombstones) = or_entry_of(entry);
                    stats.records_received += records.len();
                    replica.merge_key(&key, records, tombstones);
                    keys.push(key);
                }
                replica.push(wire, map_name, &keys, &mut stats);
            }
            other => panic!("unexpected {other}: {reply}"),
        }
    }
    stats
}
