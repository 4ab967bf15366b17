//! shardgrid::crdt: the merge rules of the protocol's replicated types — the LWW map
//! (PROTOCOL.md §6.2), the OR map (§6.4) and the PN counter (§6.5) — as plain in-memory
//! containers, following DECISIONS.md §1 and §2.1.
//!
//! Each container holds one map's (or one counter's) data and lives on the partition's owner
//! shard; nothing here is shared between shards or synchronised. Merges report whether state
//! changed, because an unchanged merge must produce no event, journal entry or Merkle change
//! (DECISIONS.md §2.1). Left out on purpose: Merkle trees, events, persistence, the wire form,
//! and clocks — timestamps arrive inside the records, and "now" for TTLs is an argument.

pub mod counter;
pub mod lww;
pub mod ormap;

pub use counter::PnCounter;
pub use lww::{IndexSlot, LwwMap, LwwMerge};
pub use ormap::{OrChange, OrMap};

/// Seeded randomness for the property tests of all three containers.
#[cfg(test)]
pub(crate) mod test_prng {
    pub(crate) use crate::fuzzing::Prng;
}
