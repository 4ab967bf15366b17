//! A client WebSocket frame: decoding never panics, a decoded message round-trips through
//! the client's encoder, a BATCH's inner messages too; HTTP sync bodies never panic.
//! The property is `shardgrid::fuzzing::decode_message`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardgrid::fuzzing::decode_message(data));
