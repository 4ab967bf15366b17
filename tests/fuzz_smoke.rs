//! The fuzz targets (`fuzz/`, `shardgrid::fuzzing`) run for a short, bounded, deterministic
//! time on the stable toolchain: each target over its seed corpus (derived from the protocol
//! vectors) and over a fixed number of seeded mutations of those seeds (bit flips,
//! truncations, splices, insertions and deletions of bytes). A target panics only when one of
//! its properties fails, so a failure here names the property and the input (printed in hex,
//! ready to be saved as a fuzz artifact).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use shardgrid::fuzzing::{self, seeds, Prng};
use shardgrid::protocol::{decode_client_message, ClientMessage, DecodeLimits};
use shardgrid::query::Query;

fn vectors_dir() -> PathBuf {
    // `shared/` sits beside the repository; a scratch crate elsewhere finds it at its home.
    let beside_repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/protocol/vectors"));
    if beside_repo.is_dir() {
        return beside_repo;
    }
    PathBuf::from("/work/shared/protocol/vectors")
}

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    let seeds = seeds::for_target(target, &vectors_dir()).expect("the vectors are readable");
    assert!(!seeds.is_empty(), "{target} has seeds");
    seeds
}

/// Bytes that mean something to msgpack (nil, reserved, map32, fixmap, fixstr, bin8) or HTTP.
const INTERESTING: [u8; 12] = [0x00, 0xff, 0xc0, 0xc1, 0xdf, 0x80, 0xa0, 0xc4, b'\r', b'\n', b':', b' '];

/// One to three random edits of `seed`, sometimes spliced with `other`.
fn mutate(seed: &[u8], other: &[u8], rng: &mut Prng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.index(3) {
        match rng.index(7) {
            0 | 1 if !data.is_empty() => {
                let bit = rng.index(data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            2 if !data.is_empty() => data.truncate(rng.index(data.len())),
            3 => {
                let byte =
                    if rng.index(2) == 0 { INTERESTING[rng.index(INTERESTING.len())] } else { rng.next_u64() as u8 };
                data.insert(rng.index(data.len() + 1), byte);
            }
            4 if !data.is_empty() => {
                let at = rng.index(data.len());
                let len = 1 + rng.index((data.len() - at).min(8));
                data.drain(at..at + len);
            }
            5 if !other.is_empty() => {
                let cut = rng.index(data.len() + 1);
                let from = rng.index(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            _ if !data.is_empty() => {
                let at = rng.index(data.len());
                let len = 1 + rng.index((data.len() - at).min(16));
                let copy = data[at..at + len].to_vec();
                data.splice(at..at, copy);
            }
            _ => data.push(rng.next_u64() as u8),
        }
    }
    data
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Runs `target` over every seed, then over `mutations` mutations of them; on a property
/// failure, names the input.
fn run(name: &str, target: fn(&[u8]), seeds: &[Vec<u8>], mutations: usize, seed: u64) {
    let check = |data: &[u8], what: &str| {
        if catch_unwind(AssertUnwindSafe(|| target(data))).is_err() {
            panic!("{name}: a property failed on {what} ({} bytes): {}", data.len(), hex(data));
        }
    };
    for (index, data) in seeds.iter().enumerate() {
        check(data, &format!("seed {index}"));
    }
    let mut rng = Prng::from_seed(seed);
    for round in 0..mutations {
        let data = &seeds[rng.index(seeds.len())];
        let other = &seeds[rng.index(seeds.len())];
        check(&mutate(data, other, &mut rng), &format!("mutation {round}"));
    }
}

// Goal: the frame decoder's properties over every vector, a BATCH of them and mutations.
#[test]
fn decode_message_over_vectors_and_mutations() {
    let seeds = seeds_of("decode_message");
    // The seeds exercise the round trip, not only the refusals: every client vector decodes.
    let decoded = seeds.iter().filter(|seed| decode_client_message(seed, &DecodeLimits::default()).is_ok()).count();
    assert!(decoded >= 31, "only {decoded} seeds decode");
    run("decode_message", fuzzing::decode_message, &seeds, 20_000, 1);
}

// Goal: the write path's one-pass shortcut agrees with the general decoder (a property of
// `decode_message`) on write frames that are almost right, where the two are likeliest to part.
// Method: only the OP_BATCH and CLIENT_OP seeds, mutated.
#[test]
fn write_frames_and_their_mutations() {
    let writes: Vec<Vec<u8>> = seeds_of("decode_message")
        .into_iter()
        .filter(|seed| {
            let message = decode_client_message(seed, &DecodeLimits::default());
            matches!(message, Ok(ClientMessage::OpBatch { .. } | ClientMessage::ClientOp(_)))
        })
        .collect();
    assert!(writes.len() >= 3, "only {} write seeds", writes.len());
    run("decode_message", fuzzing::decode_message, &writes, 20_000, 4);
}

// Goal: the HTTP head reader's properties over upgrades, endpoints and a head at the bound.
#[test]
fn http_head_over_seeds_and_mutations() {
    run("http_head", fuzzing::http_head, &seeds_of("http_head"), 4_000, 2);
}

// Goal: the query engine's properties over the vectors' queries and records, every operator
// and mutations.
#[test]
fn predicate_over_seeds_and_mutations() {
    let seeds = seeds_of("predicate");
    // Every seed's query parses, so the seeds reach evaluation.
    for seed in &seeds {
        let query = rmpv::decode::read_value(&mut &seed[..]).expect("a seed starts with a query");
        assert!(Query::from_value(&query).is_ok(), "seed query {query} does not parse");
    }
    run("predicate", fuzzing::predicate, &seeds, 8_000, 3);
}

// Goal: the segment record decoder's properties over the vectors' writes as records, images
// of them, and mutations.
#[test]
fn segment_record_over_seeds_and_mutations() {
    run("segment_record", fuzzing::segment_record, &seeds_of("segment_record"), 4_000, 4);
}
