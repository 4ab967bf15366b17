//! A storage record described field by field plus a damage, or a raw segment image: valid
//! records round-trip, damaged ones are never trusted, recovery keeps only valid records.
//! The property is `shardgrid::fuzzing::segment_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgrid::fuzzing::segment_record(data));
