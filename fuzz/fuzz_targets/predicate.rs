//! A QUERY_SUB query map, then two record values: parse and evaluation never panic and are
//! deterministic, where/predicate/not combine as boolean algebra, the index terms hold.
//! The property is `shardgrid::fuzzing::predicate`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgrid::fuzzing::predicate(data));
