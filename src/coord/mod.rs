//! shardgrid::coord: the coordination and messaging side of the protocol — topics (PROTOCOL
//! §4.6, §6.12), locks (§4.7, §6.11, DECISIONS §4.1), PN counters (§4.8, §6.5) and the event
//! journal (§4.11, DECISIONS §7.1).
//!
//! Each topic, lock and counter is owned by the shard its name hashes to, exactly like a key
//! (`partition_of(name)` -> owner in the partition table); the journal is kept per shard, by
//! the owner of each written key. The state machines here are sans-IO: requests and the
//! current time come in, replies and effects (grants to send, shards to deliver to) go out.
//! `service` is the glue that runs them on a `Node`: it turns session requests into hops to
//! the owners, and effects into hops and outbox pushes. Left out on purpose: the wire form
//! (`protocol`), per-connection bookkeeping (`session`), and the clock (`service` reads it).

pub mod counters;
pub mod journal;
pub mod locks;
pub mod service;
pub mod topics;

use crate::limits::COORD_NAME_CHARS_MAX;

/// Whether `name` is a valid topic or lock name: 1 to 256 characters of `[A-Za-z0-9_\-.:/]`
/// (PROTOCOL §6.11, §6.12). Anything else is answered `ERROR 400` (DECISIONS §4.1, §5).
pub fn is_valid_name(name: &str) -> bool {
    // All allowed characters are ASCII, so the byte length is the character count.
    !name.is_empty()
        && name.len() <= COORD_NAME_CHARS_MAX
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the name rule accepts exactly the reference's alphabet and length.
    // Method: boundary cases on length and each punctuation character.
    #[test]
    fn names_follow_the_reference_rule() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("orders/eu-west_1.v2:lock"));
        assert!(is_valid_name(&"x".repeat(COORD_NAME_CHARS_MAX)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name(&"x".repeat(COORD_NAME_CHARS_MAX + 1)));
        for bad in ["a b", "a*", "é", "a\n", "#topic", "a?b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
