//! The client's side of the codec: every [`ClientMessage`] written back as a frame that
//! [`decode_client_message`](crate::protocol::decode_client_message) reads as the same message.
//! The server never sends these; the round-trip property of the `decode_message` target needs
//! them. Record values and other raw values are spliced in verbatim, as the decoder keeps
//! them (`ValueBytes`); free-form bodies (`rmpv::Value`) are written as rmpv would, strings kept strings. Every map is written as a map32
//! whose length is patched at the end, so the field list below is the only place a field is named.

use std::collections::BTreeMap;

use crate::model::{LwwRecord, PnCounterState, Timestamp};
use crate::protocol::{
    write_lww_record, write_or_record, write_timestamp, ClientMessage, ClientOp, EntryProcessor, OpKind, OrMapEntry,
    ResolverDef, SearchOptions,
};

/// Writing into a `Vec<u8>` only fails if allocation fails, which aborts first.
const VEC_WRITE: &str = "writing msgpack into a Vec<u8> cannot fail";
/// The map32 marker; its four length bytes follow.
const MAP32: u8 = 0xdf;

/// One msgpack map being written: a map32 header whose entry count is filled in by `finish`.
struct MapWriter<'o> {
    out: &'o mut Vec<u8>,
    header_at: usize,
    entries: u32,
}

impl<'o> MapWriter<'o> {
    fn new(out: &'o mut Vec<u8>) -> MapWriter<'o> {
        let header_at = out.len();
        out.push(MAP32);
        out.extend_from_slice(&[0; 4]);
        MapWriter { out, header_at, entries: 0 }
    }

    /// Writes the key and hands out the buffer for exactly one value.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        self.entries += 1;
        rmp::encode::write_str(self.out, name).expect(VEC_WRITE);
        self.out
    }

    fn str(&mut self, name: &str, value: &str) {
        rmp::encode::write_str(self.key(name), value).expect(VEC_WRITE);
    }

    fn opt_str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(name, value);
        }
    }

    fn uint(&mut self, name: &str, value: u64) {
        rmp::encode::write_uint(self.key(name), value).expect(VEC_WRITE);
    }

    fn opt_uint(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.uint(name, value);
        }
    }

    fn f64(&mut self, name: &str, value: f64) {
        rmp::encode::write_f64(self.key(name), value).expect(VEC_WRITE);
    }

    /// An already-encoded value, spliced in as it is.
    fn raw(&mut self, name: &str, value: &[u8]) {
        self.key(name).extend_from_slice(value);
    }

    fn value(&mut self, name: &str, value: &rmpv::Value) {
        write_value(self.key(name), value);
    }

    fn strings(&mut self, name: &str, items: &[String]) {
        let out = self.key(name);
        write_array_len(out, items.len());
        for item in items {
            rmp::encode::write_str(out, item).expect(VEC_WRITE);
        }
    }

    fn timestamp(&mut self, name: &str, timestamp: &Timestamp) {
        write_timestamp(self.key(name), timestamp);
    }

    fn number_map(&mut self, name: &str, numbers: &BTreeMap<String, f64>) {
        let mut map = MapWriter::new(self.key(name));
        for (key, number) in numbers {
            map.f64(key, *number);
        }
        map.finish();
    }

    /// A nested map under `name`, filled by `fields`.
    fn map(&mut self, name: &str, fields: impl FnOnce(&mut MapWriter<'_>)) {
        let mut map = MapWriter::new(self.key(name));
        fields(&mut map);
        map.finish();
    }

    /// An array under `name` with one map per item, each filled by `fields`.
    fn maps<T>(&mut self, name: &str, items: &[T], fields: impl Fn(&mut MapWriter<'_>, &T)) {
        let out = self.key(name);
        write_array_len(out, items.len());
        for item in items {
            let mut map = MapWriter::new(out);
            fields(&mut map, item);
            map.finish();
        }
    }

    fn finish(self) {
        self.out[self.header_at + 1..self.header_at + 5].copy_from_slice(&self.entries.to_be_bytes());
    }
}

/// `rmpv::encode::write_value`, except that a string that is not UTF-8 stays a string (rmpv
/// writes it as binary), so a decoded body is written back as it came. The value was decoded
/// under the frame's depth bound, which bounds this recursion.
fn write_value(out: &mut Vec<u8>, value: &rmpv::Value) {
    match value {
        rmpv::Value::String(text) => {
            let bytes = text.as_bytes();
            let len = u32::try_from(bytes.len()).expect("a decoded string is shorter than 4 GiB");
            rmp::encode::write_str_len(out, len).expect(VEC_WRITE);
            out.extend_from_slice(bytes);
        }
        rmpv::Value::Array(items) => {
            write_array_len(out, items.len());
            items.iter().for_each(|item| write_value(out, item));
        }
        rmpv::Value::Map(entries) => {
            let len = u32::try_from(entries.len()).expect("a decoded map has fewer than 2^32 entries");
            rmp::encode::write_map_len(out, len).expect(VEC_WRITE);
            for (key, entry) in entries {
                write_value(out, key);
                write_value(out, entry);
            }
        }
        scalar => rmpv::encode::write_value(out, scalar).expect(VEC_WRITE),
    }
}

fn write_array_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a decoded array has fewer than 2^32 items");
    rmp::encode::write_array_len(out, len).expect(VEC_WRITE);
}

/// The frame a client would send for `message`.
pub fn encode_client_message(message: &ClientMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut top = MapWriter::new(&mut out);
    top.str("type", message.message_type().as_str());
    write_fields(&mut top, message);
    top.finish();
    out
}

/// Everything of `message` but its `type`.
fn write_fields(top: &mut MapWriter<'_>, message: &ClientMessage) {
    match message {
        ClientMessage::Auth { token, device_token, protocol_version } => {
            top.str("token", token);
            top.opt_str("deviceToken", device_token.as_deref());
            top.opt_uint("protocolVersion", *protocol_version);
        }
        ClientMessage::DeviceHello { device_token } => top.opt_str("deviceToken", device_token.as_deref()),
        ClientMessage::Ping { timestamp } => top.uint("timestamp", *timestamp),
        ClientMessage::ClientOp(op) => top.map("payload", |payload| client_op(payload, op)),
        ClientMessage::OpBatch { ops, write_concern, timeout } => top.map("payload", |payload| {
            payload.maps("ops", ops, client_op);
            payload.opt_str("writeConcern", write_concern.map(|concern| concern.as_str()));
            payload.opt_uint("timeout", *timeout);
        }),
        ClientMessage::SyncInit { map_name, last_sync_timestamp } => {
            top.str("mapName", map_name);
            top.opt_uint("lastSyncTimestamp", *last_sync_timestamp);
        }
        ClientMessage::MerkleReqBucket { map_name, path } | ClientMessage::OrMapMerkleReqBucket { map_name, path } => {
            top.map("payload", |payload| {
                payload.str("mapName", map_name);
                payload.str("path", path);
            })
        }
        ClientMessage::OrMapSyncInit { map_name, root_hash, bucket_hashes, last_sync_timestamp, claimed_epoch } => {
            top.str("mapName", map_name);
            top.uint("rootHash", u64::from(*root_hash));
            top.map("bucketHashes", |buckets| {
                for (child, hash) in bucket_hashes {
                    buckets.uint(child, u64::from(*hash));
                }
            });
            top.opt_uint("lastSyncTimestamp", *last_sync_timestamp);
            top.opt_uint("claimedEpoch", *claimed_epoch);
        }
        ClientMessage::OrMapDiffRequest { map_name, keys } => top.map("payload", |payload| {
            payload.str("mapName", map_name);
            payload.strings("keys", keys);
        }),
        ClientMessage::OrMapPushDiff { map_name, entries } => top.map("payload", |payload| {
            payload.str("mapName", map_name);
            payload.maps("entries", entries, or_map_entry);
        }),
        ClientMessage::ClientApplyAck { cursor } => top.uint("cursor", *cursor),
        ClientMessage::QuerySub { query_id, map_name, query, fields } => top.map("payload", |payload| {
            payload.str("queryId", query_id);
            payload.str("mapName", map_name);
            payload.value("query", query);
            if let Some(fields) = fields {
                payload.strings("fields", fields);
            }
        }),
        ClientMessage::QueryUnsub { query_id } => top.map("payload", |payload| payload.str("queryId", query_id)),
        ClientMessage::QuerySyncInit { query_id, root_hash } => top.map("payload", |payload| {
            payload.str("queryId", query_id);
            payload.uint("rootHash", u64::from(*root_hash));
        }),
        ClientMessage::SqlQuery { sql, query_id } => top.map("payload", |payload| {
            payload.str("sql", sql);
            payload.str("queryId", query_id);
        }),
        ClientMessage::TopicSub { topic } | ClientMessage::TopicUnsub { topic } => {
            top.map("payload", |payload| payload.str("topic", topic))
        }
        ClientMessage::TopicPub { topic, data } => top.map("payload", |payload| {
            payload.str("topic", topic);
            payload.raw("data", data);
        }),
        ClientMessage::LockRequest { request_id, name, ttl } => top.map("payload", |payload| {
            payload.str("requestId", request_id);
            payload.str("name", name);
            payload.opt_uint("ttl", *ttl);
        }),
        ClientMessage::LockRelease { request_id, name, fencing_token } => top.map("payload", |payload| {
            payload.opt_str("requestId", request_id.as_deref());
            payload.str("name", name);
            payload.uint("fencingToken", *fencing_token);
        }),
        ClientMessage::CounterRequest { name } => top.map("payload", |payload| payload.str("name", name)),
        ClientMessage::CounterSync { name, state } => top.map("payload", |payload| {
            payload.str("name", name);
            payload.map("state", |map| counter_state(map, state));
        }),
        ClientMessage::Search { request_id, map_name, query, options } => top.map("payload", |payload| {
            payload.str("requestId", request_id);
            payload.str("mapName", map_name);
            payload.str("query", query);
            payload.map("options", |map| search_options(map, options));
        }),
        ClientMessage::SearchSub { subscription_id, map_name, query, options } => top.map("payload", |payload| {
            payload.str("subscriptionId", subscription_id);
            payload.str("mapName", map_name);
            payload.str("query", query);
            payload.map("options", |map| search_options(map, options));
        }),
        ClientMessage::SearchUnsub { subscription_id } | ClientMessage::HybridSearchUnsub { subscription_id } => {
            top.map("payload", |payload| payload.str("subscriptionId", subscription_id))
        }
        // The ids are read out of the payload, which is kept whole.
        ClientMessage::HybridSearch { payload, .. }
        | ClientMessage::HybridSearchSub { payload, .. }
        | ClientMessage::VectorSearch { payload, .. }
        | ClientMessage::HybridQuerySubscribe { payload }
        | ClientMessage::HybridQueryUnsubscribe { payload } => top.value("payload", payload),
        ClientMessage::EntryProcess { request_id, map_name, key, processor } => {
            top.str("requestId", request_id);
            top.str("mapName", map_name);
            top.str("key", key);
            top.map("processor", |map| entry_processor(map, processor));
        }
        ClientMessage::EntryProcessBatch { request_id, map_name, keys, processor } => {
            top.str("requestId", request_id);
            top.str("mapName", map_name);
            top.strings("keys", keys);
            top.map("processor", |map| entry_processor(map, processor));
        }
        ClientMessage::RegisterResolver { request_id, map_name, resolver } => {
            top.str("requestId", request_id);
            top.str("mapName", map_name);
            top.map("resolver", |map| resolver_def(map, resolver));
        }
        ClientMessage::UnregisterResolver { request_id, map_name, resolver_name } => {
            top.str("requestId", request_id);
            top.str("mapName", map_name);
            top.str("resolverName", resolver_name);
        }
        ClientMessage::ListResolvers { request_id, map_name } => {
            top.str("requestId", request_id);
            top.opt_str("mapName", map_name.as_deref());
        }
        ClientMessage::JournalSubscribe { request_id, from_sequence, map_name, types } => {
            top.str("requestId", request_id);
            // The client sends sequences as decimal strings.
            top.opt_str("fromSequence", from_sequence.map(|sequence| sequence.to_string()).as_deref());
            top.opt_str("mapName", map_name.as_deref());
            if let Some(types) = types {
                let out = top.key("types");
                write_array_len(out, types.len());
                for event_type in types {
                    rmp::encode::write_str(out, event_type.as_str()).expect(VEC_WRITE);
                }
            }
        }
        ClientMessage::JournalUnsubscribe { subscription_id } => top.str("subscriptionId", subscription_id),
        ClientMessage::JournalRead { request_id, from_sequence, limit, map_name } => {
            top.str("requestId", request_id);
            top.str("fromSequence", &from_sequence.to_string());
            top.opt_uint("limit", *limit);
            top.opt_str("mapName", map_name.as_deref());
        }
        ClientMessage::PartitionMapRequest { current_version } => {
            if let Some(version) = current_version {
                top.map("payload", |payload| payload.uint("currentVersion", *version));
            }
        }
        ClientMessage::Batch { data } => rmp::encode::write_bin(top.key("data"), data).expect(VEC_WRITE),
    }
}

/// A `ClientOp` map: the fields of the op, then the ones its kind is classified by
/// (PROTOCOL.md §4.0 with DECISIONS.md §1.7), chosen so the decoder classifies it the same way.
fn client_op(map: &mut MapWriter<'_>, op: &ClientOp) {
    map.opt_str("id", op.id.as_deref());
    map.str("mapName", &op.map_name);
    map.str("key", &op.key);
    match &op.kind {
        OpKind::Put(record) => {
            map.str("opType", "PUT");
            write_lww_record(map.key("record"), record);
        }
        OpKind::Remove { record } => {
            map.str("opType", "REMOVE");
            // The tombstone's timestamp travels as the op's own; a remove keeps no TTL.
            if let Some(LwwRecord { timestamp, .. }) = record {
                map.timestamp("timestamp", timestamp);
            }
        }
        OpKind::OrAdd(record) => {
            map.str("opType", "OR_ADD");
            write_or_record(map.key("orRecord"), record);
        }
        OpKind::OrRemove { tag } => {
            map.str("opType", "OR_REMOVE");
            map.str("orTag", tag);
        }
        OpKind::Noop => {}
    }
    map.opt_str("writeConcern", op.write_concern.map(|concern| concern.as_str()));
    map.opt_uint("timeout", op.timeout);
}

fn or_map_entry(map: &mut MapWriter<'_>, entry: &OrMapEntry) {
    map.str("key", &entry.key);
    let out = map.key("records");
    write_array_len(out, entry.records.len());
    for record in &entry.records {
        write_or_record(out, record);
    }
    map.strings("tombstones", &entry.tombstones);
}

fn counter_state(map: &mut MapWriter<'_>, state: &PnCounterState) {
    map.number_map("p", &state.positive);
    map.number_map("n", &state.negative);
}

fn search_options(map: &mut MapWriter<'_>, options: &SearchOptions) {
    map.opt_uint("limit", options.limit);
    if let Some(min_score) = options.min_score {
        map.f64("minScore", min_score);
    }
    if !options.boost.is_empty() {
        map.number_map("boost", &options.boost);
    }
}

fn entry_processor(map: &mut MapWriter<'_>, processor: &EntryProcessor) {
    map.str("name", &processor.name);
    map.str("code", &processor.code);
    if let Some(args) = &processor.args {
        map.raw("args", args);
    }
}

fn resolver_def(map: &mut MapWriter<'_>, resolver: &ResolverDef) {
    map.str("name", &resolver.name);
    map.str("code", &resolver.code);
    map.opt_uint("priority", resolver.priority);
    map.opt_str("keyPattern", resolver.key_pattern.as_deref());
}
