//! The frozen segment file of format version 1 (`tests/data/segment-v1.seg`, written by the
//! first version that shipped the format): this and every later version must read it exactly.
//! Regenerate it only with a format version bump, and then keep the old file too
//! (`SHARDGRID_WRITE_FROZEN=1 cargo test -p shardgrid-storage --test frozen` writes it).

use shardgrid_storage::format::{RecordEncoder, RecordKind, SegmentHeader};
use shardgrid_storage::{LogRecovery, RecordBody, SegmentId, StoredTimestamp};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/segment-v1.seg");

/// (kind, partition, map, key, (millis, counter, node), ttl, tag, value): one of each kind.
type Expected =
    (RecordKind, u16, &'static str, &'static str, (u64, u32, &'static str), Option<u64>, &'static str, &'static [u8]);

const RECORDS: [Expected; 6] = [
    (RecordKind::LwwPut, 12, "users", "alice", (1_700_000_000_000, 0, "client-a"), None, "", b"\x81\xa4name\xa5Alice"),
    (RecordKind::LwwPut, 200, "users", "bob", (1_700_000_000_001, 3, "client-b"), Some(60_000), "", b"\x2a"),
    (RecordKind::LwwTombstone, 12, "users", "alice", (1_700_000_000_500, 0, "client-a"), None, "", b""),
    (
        RecordKind::OrAdd,
        7,
        "tags",
        "post-1",
        (1_700_000_001_000, 1, "client-c"),
        None,
        "1700000001000:1:client-c",
        b"\xa4rust",
    ),
    (RecordKind::OrRemove, 7, "tags", "post-1", (1_700_000_002_000, 0, ""), None, "1700000001000:1:client-c", b""),
    (
        RecordKind::CounterState,
        99,
        "",
        "likes",
        (1_700_000_003_000, 0, "node"),
        None,
        "",
        b"\x82\xa1p\x81\xa1a\x05\xa1n\x80",
    ),
];

fn build() -> Vec<u8> {
    let header =
        SegmentHeader { segment: SegmentId(1), segment_bytes: 64 * 1024, shard: 0, shard_count: 1, generation: 1 };
    let mut image = header.encode().to_vec();
    let mut encoder = RecordEncoder::default();
    for (kind, partition, map, key, (millis, counter, node_id), ttl_ms, tag, value) in RECORDS {
        let body = RecordBody {
            partition,
            map,
            key,
            timestamp: StoredTimestamp { millis, counter, node_id },
            ttl_ms,
            tag,
            value,
        };
        encoder.encode(kind, &body, &mut image);
    }
    image
}

// Goal: the frozen v1 segment decodes to exactly the records it was written with, and today's
// encoder still produces it byte for byte. Method: recover the file, compare field by field.
#[test]
fn frozen_v1_segment_reads_back() {
    if std::env::var_os("SHARDGRID_WRITE_FROZEN").is_some() {
        std::fs::write(PATH, build()).unwrap();
    }
    let image = std::fs::read(PATH).expect("the frozen segment is in the repository");
    let mut recovery = LogRecovery::new(false);
    let mut seen = Vec::new();
    recovery
        .segment(SegmentId(1), &image, |_, record| {
            let body = record.body;
            let timestamp = (body.timestamp.millis(), body.timestamp.counter(), body.timestamp.node_id().to_string());
            seen.push((
                record.kind,
                record.partition,
                body.map().to_string(),
                body.key().to_string(),
                timestamp,
                body.ttl_ms(),
                body.tag().to_string(),
                body.value().to_vec(),
            ));
        })
        .expect("the frozen segment is valid");
    let end = recovery.finish();
    assert!(end.cut.is_none());
    assert_eq!(seen.len(), RECORDS.len());
    for (seen, (kind, partition, map, key, (millis, counter, node_id), ttl_ms, tag, value)) in seen.iter().zip(RECORDS)
    {
        assert_eq!(
            seen,
            &(
                kind,
                partition,
                map.to_string(),
                key.to_string(),
                (millis, counter, node_id.to_string()),
                ttl_ms,
                tag.to_string(),
                value.to_vec()
            )
        );
    }
    assert_eq!(build(), image, "the encoder still writes format version 1 byte for byte");
}
