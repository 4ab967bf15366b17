//! A request head (first byte: the most bytes one read returns): never panics, never accepts a
//! head over the size bound, reads alike however it is split, an upgrade has a valid key.
//! The property is `shardgrid::fuzzing::http_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgrid::fuzzing::http_head(data));
