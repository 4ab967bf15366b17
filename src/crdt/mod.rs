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
pub use lww::{LwwMap, LwwMerge};
pub use ormap::{OrChange, OrMap};

/// Seeded randomness for the property tests of all three containers.
#[cfg(test)]
pub(crate) mod test_prng {
    /// A xorshift64* generator: seeded, replayable, no dependency.
    pub(crate) struct Prng(u64);

    impl Prng {
        pub(crate) fn from_seed(seed: u64) -> Prng {
            Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// A number in `0..bound`.
        pub(crate) fn below(&mut self, bound: u64) -> u64 {
            assert!(bound > 0);
            self.next() % bound
        }

        /// An index into a slice of `len` elements.
        pub(crate) fn index(&mut self, len: usize) -> usize {
            self.below(len as u64) as usize
        }

        /// Fisher-Yates shuffle.
        pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
            for last in (1..items.len()).rev() {
                let other = self.index(last + 1);
                items.swap(last, other);
            }
        }
    }
}
