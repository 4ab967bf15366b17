//! shardgrid::merkle: the arithmetic of the protocol's Merkle tree (PROTOCOL.md §6.6,
//! DECISIONS.md §4.3) — exactly the client's single tree per map: depth 3, fan-out 16, a key in
//! the leaf named by the first three hex digits of `fnv1a(key)`, every node hash
//! `combine(children) = Σ mix(child)`.
//!
//! Leaf hashes are sums, so they add up across shards: each shard keeps, per map, the leaf sums
//! of the keys it owns ([`LeafSums`]), and the complete leaf is the per-leaf sum over shards.
//! Internal nodes are not additive (`mix` of a sum is not the sum of `mix`es), so they are
//! computed here from complete leaves ([`node_hash`], [`children`]). Which keys sit in a leaf
//! and what their item hashes are belongs to the per-shard sync indexes (`shard::sync`); the
//! item hashes themselves are in `hash`. Nothing here does IO or knows about shards.

use std::ops::Range;

use crate::hash::{merkle_path, merkle_path_of_hash, mix};

/// Levels of the tree below the root (PROTOCOL.md §6.6). Fixed by the protocol.
pub const TREE_DEPTH: usize = 3;
/// Children per internal node: one per hex digit.
pub const FAN_OUT: usize = 16;
/// Leaves of the tree: `FAN_OUT ^ TREE_DEPTH`.
pub const LEAF_COUNT: usize = FAN_OUT * FAN_OUT * FAN_OUT;

/// Occupied leaves a map's [`LeafSums`] keeps as a sorted list before it switches to a dense
/// array of all `LEAF_COUNT` leaves: 2 KiB of list against 32 KiB of array, so a small map costs
/// little and a large one gets O(1) updates.
const SPARSE_LEAVES_MAX: usize = 256;

const _: () = assert!(LEAF_COUNT == 4_096);
const _: () = assert!(SPARSE_LEAVES_MAX < LEAF_COUNT);

/// One leaf of the tree, as a number: the three hex digits of its path read as one number
/// (0..4096), so the leaves under any node form a contiguous range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeafIndex(u16);

impl LeafIndex {
    /// The leaf holding `key`.
    pub fn of_key(key: &str) -> LeafIndex {
        LeafIndex::of_path(merkle_path(key))
    }

    /// The leaf of the key whose `fnv1a_utf16` is `key_hash`.
    pub fn of_key_hash(key_hash: u32) -> LeafIndex {
        LeafIndex::of_path(merkle_path_of_hash(key_hash))
    }

    fn of_path([first, second, third]: [u8; 3]) -> LeafIndex {
        LeafIndex(u16::from(first) << 8 | u16::from(second) << 4 | u16::from(third))
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }

    /// The leaf with number `index`; `index` must be below `LEAF_COUNT`.
    pub fn new(index: usize) -> LeafIndex {
        assert!(index < LEAF_COUNT, "leaf {index} out of range");
        LeafIndex(index as u16)
    }
}

/// Why a bucket path from a client is refused (DECISIONS.md §4.4: `ERROR 400`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("bucket path must consist of hex digits")]
    NotHex,
    #[error("bucket path deeper than the tree ({TREE_DEPTH} levels)")]
    TooDeep,
}

/// A node of the tree named by its path of 0 to 3 hex digits (`""` is the root, three digits a
/// leaf). Upper-case digits are read like lower-case ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BucketPath {
    digits: [u8; TREE_DEPTH],
    len: u8,
}

impl BucketPath {
    pub const ROOT: BucketPath = BucketPath { digits: [0; TREE_DEPTH], len: 0 };

    pub fn parse(text: &str) -> Result<BucketPath, PathError> {
        let mut path = BucketPath::ROOT;
        for (level, character) in text.chars().enumerate() {
            let digit = character.to_digit(16).ok_or(PathError::NotHex)?;
            if level >= TREE_DEPTH {
                return Err(PathError::TooDeep);
            }
            path.digits[level] = digit as u8;
            path.len += 1;
        }
        Ok(path)
    }

    /// Number of digits: 0 for the root, `TREE_DEPTH` for a leaf.
    pub fn depth(self) -> usize {
        usize::from(self.len)
    }

    /// The leaf this path names, when it names one.
    pub fn leaf(self) -> Option<LeafIndex> {
        (self.depth() == TREE_DEPTH).then(|| LeafIndex::new(self.leaves().start))
    }

    /// The leaves under this node, as a range of leaf numbers.
    pub fn leaves(self) -> Range<usize> {
        let prefix =
            self.digits[..self.depth()].iter().fold(0usize, |value, digit| value * FAN_OUT + usize::from(*digit));
        let width = FAN_OUT.pow((TREE_DEPTH - self.depth()) as u32);
        prefix * width..(prefix + 1) * width
    }
}

/// What one leaf holds: the sum of `mix(item hash)` over its items, and how many keys it holds.
/// Both add up across shards. A leaf exists (is listed in `SYNC_RESP_BUCKETS`) when it holds a
/// key, even if the hashes happen to sum to 0; an OR-map key that holds only tombstones counts
/// as a key without an item hash, so the client still walks to it and learns the removals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafSum {
    pub hash: u32,
    pub keys: u32,
}

impl LeafSum {
    pub fn add(&mut self, other: LeafSum) {
        self.hash = self.hash.wrapping_add(other.hash);
        self.keys += other.keys;
    }

    fn is_zero(self) -> bool {
        self == LeafSum::default()
    }
}

/// The leaf sums of one map on one shard, kept current on every write. Lives on the
/// partition's owner shard, inside the shard's sync indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSums {
    repr: Repr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// Occupied leaves sorted by number, at most `SPARSE_LEAVES_MAX` of them.
    Sparse(Vec<(LeafIndex, LeafSum)>),
    /// Every leaf, by number.
    Dense(Box<[LeafSum]>),
}

impl Default for LeafSums {
    fn default() -> Self {
        LeafSums { repr: Repr::Sparse(Vec::new()) }
    }
}

impl LeafSums {
    /// Replaces one item's contribution to `leaf`: `old` leaves, `new` enters (`None` = no
    /// item). Wrapping arithmetic, as the hashes are sums modulo 2^32.
    pub fn replace_item(&mut self, leaf: LeafIndex, old: Option<u32>, new: Option<u32>) {
        if old == new {
            return;
        }
        let delta = new.map_or(0, mix).wrapping_sub(old.map_or(0, mix));
        self.update(leaf, |sum| sum.hash = sum.hash.wrapping_add(delta));
    }

    /// Counts a key that entered `leaf` (its item hash goes in with `replace_item`).
    pub fn add_key(&mut self, leaf: LeafIndex) {
        self.update(leaf, |sum| sum.keys += 1);
    }

    /// Uncounts a key that left `leaf`; the caller removed its item hash first.
    pub fn remove_key(&mut self, leaf: LeafIndex) {
        self.update(leaf, |sum| {
            assert!(sum.keys > 0, "key removed from empty leaf {leaf:?}");
            sum.keys -= 1;
        });
    }

    pub fn get(&self, leaf: LeafIndex) -> LeafSum {
        match &self.repr {
            Repr::Sparse(entries) => entries
                .binary_search_by_key(&leaf, |(index, _)| *index)
                .map(|position| entries[position].1)
                .unwrap_or_default(),
            Repr::Dense(leaves) => leaves[leaf.get()],
        }
    }

    /// Appends the sums of the leaves in `range` to `out`, one per leaf in order.
    pub fn copy_range(&self, range: Range<usize>, out: &mut Vec<LeafSum>) {
        assert!(range.end <= LEAF_COUNT);
        match &self.repr {
            Repr::Dense(leaves) => out.extend_from_slice(&leaves[range]),
            Repr::Sparse(entries) => {
                let start = out.len();
                out.resize(start + range.len(), LeafSum::default());
                for (leaf, sum) in entries {
                    if range.contains(&leaf.get()) {
                        out[start + leaf.get() - range.start] = *sum;
                    }
                }
            }
        }
    }

    /// Whether no leaf holds anything.
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::Sparse(entries) => entries.is_empty(),
            Repr::Dense(leaves) => leaves.iter().all(|sum| sum.is_zero()),
        }
    }

    fn update(&mut self, leaf: LeafIndex, change: impl FnOnce(&mut LeafSum)) {
        match &mut self.repr {
            Repr::Dense(leaves) => change(&mut leaves[leaf.get()]),
            Repr::Sparse(entries) => match entries.binary_search_by_key(&leaf, |(index, _)| *index) {
                Ok(position) => {
                    change(&mut entries[position].1);
                    if entries[position].1.is_zero() {
                        entries.remove(position);
                    }
                }
                Err(position) => {
                    let mut sum = LeafSum::default();
                    change(&mut sum);
                    if sum.is_zero() {
                        return;
                    }
                    entries.insert(position, (leaf, sum));
                    if entries.len() > SPARSE_LEAVES_MAX {
                        let mut leaves = vec![LeafSum::default(); LEAF_COUNT].into_boxed_slice();
                        for (index, sum) in entries.iter() {
                            leaves[index.get()] = *sum;
                        }
                        self.repr = Repr::Dense(leaves);
                    }
                }
            },
        }
    }
}

/// Adds one shard's leaf sums into the running total, leaf by leaf. Both cover the same leaves.
pub fn add_leaves(total: &mut [LeafSum], part: &[LeafSum]) {
    assert_eq!(total.len(), part.len(), "both cover the same leaves");
    for (sum, more) in total.iter_mut().zip(part) {
        sum.add(*more);
    }
}

/// The hash of the node whose complete leaves are `leaves` (1, 16, 256 or 4096 of them): a
/// leaf's hash is its sum; an internal node's is `Σ mix(child hash)`. A child without keys
/// has hash 0 and `mix(0) = 0`, so listing it or not changes nothing.
pub fn node_hash(leaves: &[LeafSum]) -> u32 {
    match leaves.len() {
        1 => leaves[0].hash,
        len => {
            assert!(len % FAN_OUT == 0 && len <= LEAF_COUNT, "{len} leaves is not a node");
            leaves.chunks(len / FAN_OUT).fold(0u32, |sum, child| sum.wrapping_add(mix(node_hash(child))))
        }
    }
}

/// The root hash of a map from all its complete leaves; 0 for an empty map.
pub fn root_hash(leaves: &[LeafSum]) -> u32 {
    assert_eq!(leaves.len(), LEAF_COUNT);
    node_hash(leaves)
}

/// The children of the internal node at `path` that hold at least one key, as
/// `(child digit, child hash)` in digit order: the `buckets` of `SYNC_RESP_BUCKETS`. `leaves`
/// are the complete leaves under `path` (`path.leaves()`).
pub fn children(path: BucketPath, leaves: &[LeafSum]) -> Vec<(u8, u32)> {
    assert!(path.depth() < TREE_DEPTH, "a leaf has no children");
    assert_eq!(leaves.len(), path.leaves().len());
    leaves
        .chunks(leaves.len() / FAN_OUT)
        .enumerate()
        .filter(|(_, child)| child.iter().any(|sum| sum.keys > 0))
        .map(|(digit, child)| (digit as u8, node_hash(child)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value as Json;

    use crate::hash::lww_item_hash;
    use crate::model::Timestamp;

    /// Loads `hashes.json`: beside the workspace in the real repo, at the shared path otherwise.
    fn vectors() -> Json {
        let beside_workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/protocol/vectors/hashes.json");
        let text = std::fs::read_to_string(beside_workspace)
            .or_else(|_| std::fs::read_to_string("/work/shared/protocol/vectors/hashes.json"))
            .expect("hashes.json not found beside the workspace or under /work/shared");
        serde_json::from_str(&text).expect("hashes.json is JSON")
    }

    fn leaves_of(sums: &[&LeafSums], path: BucketPath) -> Vec<LeafSum> {
        let mut total = Vec::new();
        sums[0].copy_range(path.leaves(), &mut total);
        for more in &sums[1..] {
            let mut part = Vec::new();
            more.copy_range(path.leaves(), &mut part);
            add_leaves(&mut total, &part);
        }
        total
    }

    #[test]
    fn tree_matches_the_lww_vector_even_when_split_over_shards() {
        // Goal: DECISIONS §4.3 — the root, the root's buckets and a level-1 bucket map equal the
        // client's for the worked example. Method: put the example's items into one LeafSums,
        // and again spread over two (as two shards would hold them), then assemble the tree.
        let vectors = vectors();
        let example = &vectors["lwwMerkle"];
        let mut single = LeafSums::default();
        let mut split = [LeafSums::default(), LeafSums::default()];
        for (index, record) in example["records"].as_array().unwrap().iter().enumerate() {
            let key = record["key"].as_str().unwrap();
            let stamp = &record["timestamp"];
            let timestamp = Timestamp::new(
                stamp["millis"].as_u64().unwrap(),
                stamp["counter"].as_u64().unwrap() as u32,
                stamp["nodeId"].as_str().unwrap(),
            );
            let item = lww_item_hash(key, &timestamp);
            assert_eq!(u64::from(item), record["itemHash"].as_u64().unwrap());
            let leaf = LeafIndex::of_key(key);
            assert_eq!(BucketPath::parse(record["leafPath"].as_str().unwrap()).unwrap().leaf(), Some(leaf));
            for sums in [&mut single, &mut split[index % 2]] {
                sums.add_key(leaf);
                sums.replace_item(leaf, None, Some(item));
            }
        }
        let root = example["rootHash"].as_u64().unwrap() as u32;
        let expected_buckets: Vec<(u8, u32)> = example["rootBuckets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(digit, hash)| (u8::from_str_radix(digit, 16).unwrap(), hash.as_u64().unwrap() as u32))
            .collect();
        let level1 = &example["exampleLevel1"];
        let level1_path = BucketPath::parse(level1["path"].as_str().unwrap()).unwrap();
        let expected_level1: Vec<(u8, u32)> = level1["buckets"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(digit, hash)| (u8::from_str_radix(digit, 16).unwrap(), hash.as_u64().unwrap() as u32))
            .collect();
        for shards in [vec![&single], vec![&split[0], &split[1]]] {
            let all = leaves_of(&shards, BucketPath::ROOT);
            assert_eq!(root_hash(&all), root);
            assert_eq!(children(BucketPath::ROOT, &all), expected_buckets);
            assert_eq!(children(level1_path, &leaves_of(&shards, level1_path)), expected_level1);
        }
    }

    #[test]
    fn empty_tree_has_root_zero_and_no_children() {
        // Goal: §6.6 — an empty map's root is 0 and no bucket is listed. Method: assemble an
        // empty tree; then add a key and remove it again.
        let mut sums = LeafSums::default();
        assert_eq!(root_hash(&leaves_of(&[&sums], BucketPath::ROOT)), 0);
        let leaf = LeafIndex::of_key("k");
        sums.add_key(leaf);
        sums.replace_item(leaf, None, Some(7));
        assert!(!sums.is_empty());
        sums.replace_item(leaf, Some(7), None);
        sums.remove_key(leaf);
        assert!(sums.is_empty());
        let all = leaves_of(&[&sums], BucketPath::ROOT);
        assert_eq!(root_hash(&all), 0);
        assert!(children(BucketPath::ROOT, &all).is_empty());
    }

    #[test]
    fn a_key_without_item_hash_still_makes_its_buckets_exist() {
        // Goal: an OR key holding only tombstones is listed (hash 0) so the client walks to it,
        // without changing any hash. Method: count a key with no item hash; check the buckets.
        let mut sums = LeafSums::default();
        let leaf = LeafIndex::new(0xabc);
        sums.add_key(leaf);
        let all = leaves_of(&[&sums], BucketPath::ROOT);
        assert_eq!(root_hash(&all), 0);
        assert_eq!(children(BucketPath::ROOT, &all), vec![(0xa, 0)]);
        let path = BucketPath::parse("ab").unwrap();
        assert_eq!(children(path, &leaves_of(&[&sums], path)), vec![(0xc, 0)]);
    }

    #[test]
    fn sparse_and_dense_leaf_sums_agree() {
        // Goal: switching from the sparse list to the dense array loses nothing. Method: fill
        // leaves one by one past SPARSE_LEAVES_MAX, comparing every range with a plain model.
        let mut sums = LeafSums::default();
        let mut model = vec![LeafSum::default(); LEAF_COUNT];
        for step in 0..(SPARSE_LEAVES_MAX * 3) {
            let leaf = LeafIndex::new((step * 2_654_435_761usize) % LEAF_COUNT);
            let item = (step as u32).wrapping_mul(0x9E37_79B9);
            sums.add_key(leaf);
            sums.replace_item(leaf, None, Some(item));
            model[leaf.get()].keys += 1;
            model[leaf.get()].hash = model[leaf.get()].hash.wrapping_add(mix(item));
            if step % 97 == 0 {
                assert_eq!(leaves_of(&[&sums], BucketPath::ROOT), model, "step {step}");
            }
        }
        assert!(matches!(sums.repr, Repr::Dense(_)));
        let path = BucketPath::parse("3f").unwrap();
        assert_eq!(leaves_of(&[&sums], path), model[path.leaves()].to_vec());
        for (leaf, expected) in model.iter().enumerate() {
            assert_eq!(sums.get(LeafIndex::new(leaf)), *expected);
        }
    }

    #[test]
    fn paths_parse_or_are_refused() {
        // Goal: DECISIONS §4.4 — hex paths up to three digits name nodes; anything else is
        // refused. Method: parse good and bad paths; check the leaf ranges they cover.
        assert_eq!(BucketPath::parse("").unwrap(), BucketPath::ROOT);
        assert_eq!(BucketPath::ROOT.leaves(), 0..LEAF_COUNT);
        assert_eq!(BucketPath::parse("a").unwrap().leaves(), 0xa00..0xb00);
        assert_eq!(BucketPath::parse("A").unwrap().leaves(), 0xa00..0xb00);
        assert_eq!(BucketPath::parse("d3").unwrap().leaves(), 0xd30..0xd40);
        assert_eq!(BucketPath::parse("d39").unwrap().leaf(), Some(LeafIndex::new(0xd39)));
        assert_eq!(BucketPath::parse("d3").unwrap().leaf(), None);
        assert_eq!(BucketPath::parse("xyz"), Err(PathError::NotHex));
        assert_eq!(BucketPath::parse("a-"), Err(PathError::NotHex));
        assert_eq!(BucketPath::parse("é"), Err(PathError::NotHex));
        assert_eq!(BucketPath::parse("abcd"), Err(PathError::TooDeep));
        assert_eq!(BucketPath::parse(&"0".repeat(10_000)), Err(PathError::TooDeep));
        assert_eq!(LeafIndex::of_key("todo-1"), LeafIndex::new(0xd39));
    }
}
