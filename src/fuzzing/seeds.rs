//! Starting corpora for the fuzz targets, derived from the protocol vectors
//! (`shared/protocol/vectors/*.msgpack`) plus a few hand-made inputs for what the vectors do
//! not hold (HTTP heads, every predicate operator). The `seed_corpus` program of the `fuzz/`
//! crate writes them to `fuzz/corpus/<target>/`; `tests/fuzz_smoke.rs` runs every target over
//! them and their mutations.

use std::io;
use std::path::Path;

use rmpv::Value;
use shardgrid_storage::fuzzing::{image_input, record_input, segment_header, Damage};
use shardgrid_storage::{RecordBody, RecordEncoder, RecordKind, StoredTimestamp};

use super::{encode_client_message, map_of, predicate_node};
use crate::hash::partition_of;
use crate::model::{LwwRecord, OrRecord, Timestamp};
use crate::protocol::{decode_client_message, ClientMessage, ClientOp, DecodeLimits, OpKind};

/// The fuzz targets, by the names of their `fuzz/fuzz_targets/*.rs` files.
pub const TARGETS: [&str; 4] = ["decode_message", "http_head", "predicate", "segment_record"];

/// Every `.msgpack` file of the vectors directory, by file name.
pub fn vector_files(vectors: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(vectors)? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "msgpack") {
            let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
            files.push((name, std::fs::read(&path)?));
        }
    }
    files.sort();
    Ok(files)
}

/// The seeds of `target` (one of [`TARGETS`]).
pub fn for_target(target: &str, vectors: &Path) -> io::Result<Vec<Vec<u8>>> {
    let files = vector_files(vectors)?;
    Ok(match target {
        "decode_message" => decode_message(&files),
        "http_head" => http_head(),
        "predicate" => predicate(&files),
        "segment_record" => segment_record(&files),
        other => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no fuzz target {other:?}"))),
    })
}

/// The client messages among the vectors.
fn client_messages(files: &[(String, Vec<u8>)]) -> Vec<ClientMessage> {
    files.iter().filter_map(|(_, bytes)| decode_client_message(bytes, &DecodeLimits::default()).ok()).collect()
}

/// Every vector as it is (the server's too: they are refused, which is worth exploring), and
/// one inbound `BATCH` carrying every client vector.
fn decode_message(files: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|(_, bytes)| bytes.clone()).collect();
    let mut data = Vec::new();
    for (_, bytes) in files {
        if decode_client_message(bytes, &DecodeLimits::default()).is_ok() {
            data.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            data.extend_from_slice(bytes);
        }
    }
    seeds.push(encode_client_message(&ClientMessage::Batch { data }));
    seeds
}

/// Request heads: WebSocket upgrades (valid, keyless, empty key), plain endpoints, a body
/// after the head, bare line feeds, and a head just under the size bound. Each starts with
/// the read-size byte of the `http_head` target.
fn http_head() -> Vec<Vec<u8>> {
    let upgrade = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let heads: Vec<Vec<u8>> = vec![
        upgrade.as_bytes().to_vec(),
        format!("{upgrade}\u{82}\u{80}").into_bytes(),
        "GET /?token=x HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
            Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \r\n\r\n"
            .into(),
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n".into(),
        "GET /health HTTP/1.1\r\nHost: a\r\n\r\n".into(),
        "GET /metrics HTTP/1.0\n\n".into(),
        "POST /sync HTTP/1.1\r\nContent-Type: application/x-msgpack\r\nContent-Length: 3\r\n\r\n\u{81}\u{a1}a".into(),
        {
            let mut big = b"GET /health HTTP/1.1\r\nX-Filler: ".to_vec();
            big.resize(crate::limits::HTTP_HEAD_BYTES_MAX - 40, b'f');
            big.extend_from_slice(b"\r\nHost: a\r\n\r\n");
            big
        },
    ];
    let mut seeds = Vec::new();
    for head in heads {
        for chunk_code in [0u8, 7, 45, 255] {
            let mut seed = vec![chunk_code];
            seed.extend_from_slice(&head);
            seeds.push(seed);
        }
    }
    seeds
}

fn msgpack(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing msgpack into a Vec<u8> cannot fail");
    bytes
}

fn leaf(op: &str, attribute: &str, value: Value) -> Value {
    map_of(vec![("op", Value::from(op)), ("attribute", Value::from(attribute)), ("value", value)])
}

/// One query per operator and shape, over the attributes of `hand_made_records`.
fn hand_made_queries() -> Vec<Value> {
    let strings = |items: &[&str]| Value::Array(items.iter().map(|item| Value::from(*item)).collect());
    let predicates = vec![
        leaf("eq", "name", "Alice Smith".into()),
        leaf("neq", "age", 30.into()),
        leaf("gt", "age", Value::F64(29.5)),
        leaf("gte", "score", 1.into()),
        leaf("lt", "name", "B".into()),
        leaf("lte", "nested.x", 1.into()),
        leaf("between", "age", Value::Array(vec![18.into(), 65.into()])),
        leaf("in", "age", Value::Array(vec![30.into(), Value::F64(31.0)])),
        leaf("like", "name", "A%S_ith".into()),
        leaf("regex", "name", "^A.*h$".into()),
        leaf("isNull", "missing", Value::Nil),
        leaf("isNotNull", "none", Value::Nil),
        leaf("contains", "tags", "a".into()),
        leaf("containsAll", "tags", strings(&["a", "b"])),
        leaf("containsAny", "name", strings(&["smith", "jones"])),
        leaf("startsWith", "name", "Ali".into()),
        leaf("endsWith", "name", "ith".into()),
        leaf("match", "name", "alice".into()),
        predicate_node("and", vec![leaf("eq", "flag", true.into()), leaf("gt", "age", 20.into())]),
        predicate_node("or", vec![leaf("eq", "age", 1.into()), leaf("isNull", "age", Value::Nil)]),
        predicate_node("not", vec![leaf("eq", "name", "Bob".into())]),
    ];
    let mut queries: Vec<Value> = predicates.into_iter().map(|node| map_of(vec![("predicate", node)])).collect();
    queries.push(map_of(vec![
        ("where", map_of(vec![("flag", true.into()), ("none", Value::Nil)])),
        ("predicate", leaf("gte", "age", 30.into())),
        ("sort", map_of(vec![("age", "desc".into()), ("name", "asc".into())])),
        ("limit", 10.into()),
    ]));
    queries.push(map_of(vec![("sort", map_of(vec![("score", "asc".into())])), ("cursor", "not-a-cursor".into())]));
    queries.push(map_of(vec![
        ("sort", map_of(vec![("name", "desc".into()), ("tags", "asc".into())])),
        ("limit", 1.into()),
    ]));
    queries.push(Value::Nil);
    queries
}

fn hand_made_records() -> Vec<Value> {
    vec![
        map_of(vec![
            ("name", "Alice Smith".into()),
            ("age", 30.into()),
            ("score", Value::F64(1.5)),
            ("tags", Value::Array(vec!["a".into(), "b".into()])),
            ("nested", map_of(vec![("x", 1.into())])),
            ("flag", true.into()),
            ("none", Value::Nil),
        ]),
        map_of(vec![("name", "Bob".into()), ("age", Value::F64(f64::NAN)), ("score", (-3).into())]),
        Value::Array(vec![1.into()]),
        Value::Nil,
    ]
}

/// Record values among the vectors: put and OR-add values, topic data, processor arguments.
fn vector_values(messages: &[ClientMessage]) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for message in messages {
        for op in ops_of(message) {
            match &op.kind {
                OpKind::Put(LwwRecord { value: Some(value), .. }) => values.push(value.to_vec()),
                OpKind::OrAdd(OrRecord { value, .. }) => values.push(value.to_vec()),
                _ => {}
            }
        }
        match message {
            ClientMessage::TopicPub { data, .. } => values.push(data.to_vec()),
            ClientMessage::EntryProcess { processor, .. } => {
                values.extend(processor.args.iter().map(|args| args.to_vec()))
            }
            _ => {}
        }
    }
    values
}

fn ops_of(message: &ClientMessage) -> Vec<&ClientOp> {
    match message {
        ClientMessage::ClientOp(op) => vec![op],
        ClientMessage::OpBatch { ops, .. } => ops.iter().collect(),
        _ => Vec::new(),
    }
}

/// Each query (the vectors' and the hand-made ones) followed by two record values, a few
/// pairings each.
fn predicate(files: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let messages = client_messages(files);
    let mut queries: Vec<Vec<u8>> = messages
        .iter()
        .filter_map(|message| match message {
            ClientMessage::QuerySub { query, .. } => Some(msgpack(query)),
            _ => None,
        })
        .collect();
    queries.extend(hand_made_queries().iter().map(msgpack));
    let mut records = vector_values(&messages);
    records.extend(hand_made_records().iter().map(msgpack));
    const PAIRINGS: usize = 3;
    let mut seeds = Vec::new();
    for (index, query) in queries.iter().enumerate() {
        for pairing in 0..PAIRINGS {
            let record = &records[(index + pairing) % records.len()];
            let other = &records[(index + pairing + 1) % records.len()];
            seeds.push([&query[..], record, other].concat());
        }
    }
    // Paging by a string that is not UTF-8 (a client can store one): `{name: "\xff\xfe", age: 1}`
    // against every record, under a one-row page sorted by name.
    let not_utf8: &[u8] = &[0x82, 0xa4, b'n', b'a', b'm', b'e', 0xa2, 0xff, 0xfe, 0xa3, b'a', b'g', b'e', 0x01];
    let one_row_by_name = msgpack(&map_of(vec![("sort", map_of(vec![("name", "asc".into())])), ("limit", 1.into())]));
    for record in &records {
        seeds.push([&one_row_by_name[..], not_utf8, record].concat());
    }
    seeds
}

/// The records the vectors' writes would store, each with one damage (the damages and
/// positions taken in turn), and images of all of them back to back, with and without a
/// segment header put in front.
fn segment_record(files: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    let messages = client_messages(files);
    let no_timestamp = Timestamp::default();
    let mut described = Vec::new();
    for op in messages.iter().flat_map(ops_of) {
        let (kind, timestamp, ttl_ms, tag, value): (_, _, _, &str, &[u8]) = match &op.kind {
            OpKind::Put(record) => {
                (RecordKind::LwwPut, &record.timestamp, record.ttl_ms, "", record.value.as_deref().unwrap_or_default())
            }
            OpKind::Remove { record } => {
                let timestamp = record.as_ref().map_or(&no_timestamp, |record| &record.timestamp);
                (RecordKind::LwwTombstone, timestamp, None, "", &[])
            }
            OpKind::OrAdd(record) => (RecordKind::OrAdd, &record.timestamp, record.ttl_ms, &record.tag, &record.value),
            OpKind::OrRemove { tag } => (RecordKind::OrRemove, &no_timestamp, None, tag, &[]),
            OpKind::Noop => continue,
        };
        let body = RecordBody {
            partition: partition_of(&op.key),
            map: &op.map_name,
            key: &op.key,
            timestamp: StoredTimestamp {
                millis: timestamp.millis,
                counter: timestamp.counter,
                node_id: &timestamp.node_id,
            },
            ttl_ms,
            tag,
            value,
        };
        described.push((kind, body));
    }
    let mut seeds = Vec::new();
    let mut image = Vec::new();
    let mut encoder = RecordEncoder::default();
    for (index, (kind, body)) in described.iter().enumerate() {
        let damage = [Damage::BitFlip, Damage::Burst, Damage::CrcField, Damage::Truncation][index % 4];
        let position = (index as u32).wrapping_mul(0x9e37_79b9);
        seeds.push(record_input(*kind, body, damage, position, position.rotate_left(7)));
        encoder.encode(*kind, body, &mut image);
    }
    seeds.push(image_input(&image, true));
    seeds.push(image_input(&[&segment_header()[..], &image].concat(), false));
    seeds
}
