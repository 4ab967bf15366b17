//! The generator's side of the TopGun wire protocol (PROTOCOL.md §2–§4): encoders for the
//! client-to-server messages it sends, shaped like the stock client's, and a reader of
//! server-to-client frames. Only protocol facts are used, nothing shardgrid-specific, so the
//! generator works against any server speaking the protocol. The message-type table comes from
//! shardgrid's codec (`MessageType`); the codec itself only encodes server-to-client messages,
//! so the encoders here are written with `rmp::encode`.
//!
//! Every value the generator writes has the same shape, `{"k": <key number>, "t": <send time in
//! ns since the run's time base>, "v": <padding>}`: reads find a key with `where {k}`, and
//! subscribers compute write-to-delivery latency from `t`.

use rmpv::ValueRef;
use shardgrid::protocol::MessageType;

fn done<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    result.expect("writing msgpack to a Vec cannot fail")
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    done(rmp::encode::write_str(out, text));
}

fn write_map(out: &mut Vec<u8>, entries: u32) {
    done(rmp::encode::write_map_len(out, entries));
}

fn write_uint(out: &mut Vec<u8>, value: u64) {
    done(rmp::encode::write_uint(out, value));
}

/// `{"type": kind, "payload": {` with `payload_entries` entries to follow.
fn begin_payload_message(out: &mut Vec<u8>, kind: MessageType, payload_entries: u32) {
    write_map(out, 2);
    write_str(out, "type");
    write_str(out, kind.as_str());
    write_str(out, "payload");
    write_map(out, payload_entries);
}

/// `AUTH {token}` (flat).
pub fn encode_auth(out: &mut Vec<u8>, token: &str) {
    write_map(out, 2);
    write_str(out, "type");
    write_str(out, MessageType::Auth.as_str());
    write_str(out, "token");
    write_str(out, token);
}

/// `PING {timestamp}` (flat). The server echoes `timestamp` in its `PONG`.
pub fn encode_ping(out: &mut Vec<u8>, timestamp: u64) {
    write_map(out, 2);
    write_str(out, "type");
    write_str(out, MessageType::Ping.as_str());
    write_str(out, "timestamp");
    write_uint(out, timestamp);
}

/// A hybrid-logical-clock timestamp as the client sends it: `millis` as float64 (JavaScript
/// numbers above 2^32 are float64 on the wire, PROTOCOL.md §2.1).
#[derive(Clone, Copy, Debug)]
pub struct Timestamp<'a> {
    pub millis: u64,
    pub counter: u32,
    pub node_id: &'a str,
}

fn write_timestamp(out: &mut Vec<u8>, timestamp: &Timestamp<'_>) {
    write_map(out, 3);
    write_str(out, "millis");
    done(rmp::encode::write_f64(out, timestamp.millis as f64));
    write_str(out, "counter");
    write_uint(out, u64::from(timestamp.counter));
    write_str(out, "nodeId");
    write_str(out, timestamp.node_id);
}

/// The generator's record value (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct BenchValue<'a> {
    pub key_number: u64,
    pub stamp_ns: u64,
    pub padding: &'a str,
}

fn write_value(out: &mut Vec<u8>, value: &BenchValue<'_>) {
    write_map(out, 3);
    write_str(out, "k");
    write_uint(out, value.key_number);
    write_str(out, "t");
    write_uint(out, value.stamp_ns);
    write_str(out, "v");
    write_str(out, value.padding);
}

/// One LWW `PUT` op, as the stock client's op log holds it (PROTOCOL.md §4.0 ClientOp, §10.2).
#[derive(Clone, Copy, Debug)]
pub struct PutOp<'a> {
    /// The op id; the client's are the decimal strings of an ascending sequence.
    pub id: u64,
    pub map_name: &'a str,
    pub key: &'a str,
    pub value: BenchValue<'a>,
    pub timestamp: Timestamp<'a>,
    pub write_concern: Option<&'a str>,
}

/// `OP_BATCH {ops}`: the only write message the stock client sends over WebSocket.
pub fn encode_op_batch<'a>(out: &mut Vec<u8>, ops: &[PutOp<'a>]) {
    begin_payload_message(out, MessageType::OpBatch, 1);
    write_str(out, "ops");
    done(rmp::encode::write_array_len(out, ops.len() as u32));
    let mut id_text = String::new();
    for op in ops {
        write_map(out, if op.write_concern.is_some() { 8 } else { 7 });
        write_str(out, "id");
        id_text.clear();
        use std::fmt::Write as _;
        write!(id_text, "{}", op.id).expect("formatting into a String cannot fail");
        write_str(out, &id_text);
        write_str(out, "mapName");
        write_str(out, op.map_name);
        write_str(out, "opType");
        write_str(out, "PUT");
        write_str(out, "key");
        write_str(out, op.key);
        write_str(out, "record");
        write_map(out, 2);
        write_str(out, "value");
        write_value(out, &op.value);
        write_str(out, "timestamp");
        write_timestamp(out, &op.timestamp);
        // The client's op-log entries also carry the op's timestamp and `synced: false`.
        write_str(out, "timestamp");
        write_timestamp(out, &op.timestamp);
        write_str(out, "synced");
        done(rmp::encode::write_bool(out, false));
        if let Some(write_concern) = op.write_concern {
            write_str(out, "writeConcern");
            write_str(out, write_concern);
        }
    }
}

/// `QUERY_SUB {queryId, mapName, query}`: the whole map (`query: {}`), or with `key_number` the
/// record whose value has that `k` (`where {k}`, `limit 1`).
pub fn encode_query_sub(out: &mut Vec<u8>, query_id: &str, map_name: &str, key_number: Option<u64>) {
    begin_payload_message(out, MessageType::QuerySub, 3);
    write_str(out, "queryId");
    write_str(out, query_id);
    write_str(out, "mapName");
    write_str(out, map_name);
    write_str(out, "query");
    match key_number {
        None => write_map(out, 0),
        Some(key_number) => {
            write_map(out, 2);
            write_str(out, "where");
            write_map(out, 1);
            write_str(out, "k");
            write_uint(out, key_number);
            write_str(out, "limit");
            write_uint(out, 1);
        }
    }
}

/// `QUERY_UNSUB {queryId}`.
pub fn encode_query_unsub(out: &mut Vec<u8>, query_id: &str) {
    begin_payload_message(out, MessageType::QueryUnsub, 1);
    write_str(out, "queryId");
    write_str(out, query_id);
}

/// `TOPIC_SUB {topic}`.
pub fn encode_topic_sub(out: &mut Vec<u8>, topic: &str) {
    begin_payload_message(out, MessageType::TopicSub, 1);
    write_str(out, "topic");
    write_str(out, topic);
}

/// `TOPIC_PUB {topic, data}` with the generator's value as `data`.
pub fn encode_topic_pub(out: &mut Vec<u8>, topic: &str, data: &BenchValue<'_>) {
    begin_payload_message(out, MessageType::TopicPub, 2);
    write_str(out, "topic");
    write_str(out, topic);
    write_str(out, "data");
    write_value(out, data);
}

/// One decoded server frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// `None` for a `type` this protocol does not have (or a frame without one).
    pub kind: Option<MessageType>,
    pub type_text: &'a str,
    pub body: ValueRef<'a>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable server frame: {0}")]
pub struct FrameError(String);

/// Decodes one binary WebSocket message. Borrowing decode: strings stay in `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut reader = bytes;
    let body = rmpv::decode::read_value_ref(&mut reader).map_err(|error| FrameError(error.to_string()))?;
    let type_text = get(&body, "type").and_then(as_str).unwrap_or("");
    Ok(Frame { kind: MessageType::parse(type_text), type_text, body })
}

/// The value at a dot path of map keys (`"payload.record.value"`).
pub fn get<'v, 'a>(value: &'v ValueRef<'a>, path: &str) -> Option<&'v ValueRef<'a>> {
    let mut current = value;
    for part in path.split('.') {
        let ValueRef::Map(entries) = current else { return None };
        current = entries.iter().find(|(key, _)| as_str(key) == Some(part)).map(|(_, value)| value)?;
    }
    Some(current)
}

pub fn as_str<'a>(value: &ValueRef<'a>) -> Option<&'a str> {
    match value {
        ValueRef::String(text) => text.into_str(),
        _ => None,
    }
}

/// An unsigned integer in any msgpack integer encoding, or a float64/float32 holding a whole
/// number (PROTOCOL.md §2.1: integers may arrive as floats).
pub fn as_u64(value: &ValueRef<'_>) -> Option<u64> {
    match value {
        ValueRef::Integer(integer) => integer.as_u64(),
        ValueRef::F64(float) if float.fract() == 0.0 && *float >= 0.0 && *float < u64::MAX as f64 => {
            Some(*float as u64)
        }
        ValueRef::F32(float) if float.fract() == 0.0 && *float >= 0.0 => Some(*float as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn decoded(bytes: &[u8]) -> Value {
        rmpv::decode::read_value(&mut &bytes[..]).unwrap()
    }

    fn field<'v>(value: &'v Value, path: &str) -> &'v Value {
        path.split('.').fold(value, |current, part| match current {
            Value::Map(entries) => entries
                .iter()
                .find(|(key, _)| key.as_str() == Some(part))
                .map(|(_, value)| value)
                .unwrap_or(&Value::Nil),
            Value::Array(items) => &items[part.parse::<usize>().unwrap()],
            _ => &Value::Nil,
        })
    }

    // Goal: an OP_BATCH has the stock client's op shape (PROTOCOL.md §4.0, §10.2): string ids,
    // opType PUT, a record with value and a float64 `millis`, the extra timestamp and synced.
    #[test]
    fn op_batch_is_shaped_like_the_clients() {
        let op = PutOp {
            id: 41,
            map_name: "bench",
            key: "k7",
            value: BenchValue { key_number: 7, stamp_ns: 123, padding: "xx" },
            timestamp: Timestamp { millis: 1_717_171_717_171, counter: 3, node_id: "bench-0" },
            write_concern: Some("APPLIED"),
        };
        let mut out = Vec::new();
        encode_op_batch(&mut out, &[op, PutOp { id: 42, write_concern: None, ..op }]);
        let message = decoded(&out);
        assert_eq!(field(&message, "type").as_str(), Some("OP_BATCH"));
        assert_eq!(field(&message, "payload.ops.0.id").as_str(), Some("41"));
        assert_eq!(field(&message, "payload.ops.1.id").as_str(), Some("42"));
        assert_eq!(field(&message, "payload.ops.0.opType").as_str(), Some("PUT"));
        assert_eq!(field(&message, "payload.ops.0.mapName").as_str(), Some("bench"));
        assert_eq!(field(&message, "payload.ops.0.record.value.k").as_u64(), Some(7));
        assert_eq!(field(&message, "payload.ops.0.record.value.t").as_u64(), Some(123));
        assert_eq!(field(&message, "payload.ops.0.record.timestamp.millis"), &Value::F64(1_717_171_717_171.0));
        assert_eq!(field(&message, "payload.ops.0.record.timestamp.nodeId").as_str(), Some("bench-0"));
        assert_eq!(field(&message, "payload.ops.0.synced"), &Value::Boolean(false));
        assert_eq!(field(&message, "payload.ops.0.writeConcern").as_str(), Some("APPLIED"));
        assert_eq!(field(&message, "payload.ops.1.writeConcern"), &Value::Nil);
    }

    // Goal: the other client messages carry the fields PROTOCOL.md §4.1, §4.5 and §4.6 name.
    #[test]
    fn other_messages_carry_their_fields() {
        let mut out = Vec::new();
        encode_auth(&mut out, "tok");
        assert_eq!(field(&decoded(&out), "token").as_str(), Some("tok"));
        out.clear();
        encode_ping(&mut out, 99);
        assert_eq!(field(&decoded(&out), "timestamp").as_u64(), Some(99));
        out.clear();
        encode_query_sub(&mut out, "q1", "m", Some(5));
        let query = decoded(&out);
        assert_eq!(field(&query, "payload.queryId").as_str(), Some("q1"));
        assert_eq!(field(&query, "payload.query.where.k").as_u64(), Some(5));
        assert_eq!(field(&query, "payload.query.limit").as_u64(), Some(1));
        out.clear();
        encode_query_sub(&mut out, "q2", "m", None);
        assert_eq!(field(&decoded(&out), "payload.query"), &Value::Map(vec![]));
        out.clear();
        encode_query_unsub(&mut out, "q2");
        assert_eq!(field(&decoded(&out), "type").as_str(), Some("QUERY_UNSUB"));
        out.clear();
        encode_topic_sub(&mut out, "news");
        assert_eq!(field(&decoded(&out), "payload.topic").as_str(), Some("news"));
        out.clear();
        encode_topic_pub(&mut out, "news", &BenchValue { key_number: 0, stamp_ns: 5, padding: "" });
        assert_eq!(field(&decoded(&out), "payload.data.t").as_u64(), Some(5));
    }

    // Goal: server frames decode with tolerant integers (float64 whole numbers, §2.1) and an
    // unknown type is reported as such rather than failing.
    #[test]
    fn decodes_server_frames() {
        let mut out = Vec::new();
        let pong =
            Value::Map(vec![(Value::from("type"), Value::from("PONG")), (Value::from("timestamp"), Value::F64(12.0))]);
        rmpv::encode::write_value(&mut out, &pong).unwrap();
        let frame = decode_frame(&out).unwrap();
        assert_eq!(frame.kind, Some(MessageType::Pong));
        assert_eq!(get(&frame.body, "timestamp").and_then(as_u64), Some(12));

        out.clear();
        let odd = Value::Map(vec![(Value::from("type"), Value::from("NOT_A_TYPE"))]);
        rmpv::encode::write_value(&mut out, &odd).unwrap();
        let frame = decode_frame(&out).unwrap();
        assert_eq!((frame.kind, frame.type_text), (None, "NOT_A_TYPE"));
        assert!(decode_frame(&[0xa5, b'a']).is_err(), "a str of 5 bytes cut after one");
    }
}
