//! The partition table: which shard owns each partition. Partitions are assigned to shards in
//! contiguous, balanced ranges, so shard `i` of `n` owns `[i*P/n, (i+1)*P/n)`. The table is built
//! once at start-up and is identical on every shard (each holds its own copy; nothing is shared).

use crate::ShardId;

/// A partition number, `0..partition_count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(pub u16);

#[derive(Clone, Debug)]
pub struct PartitionTable {
    owners: Vec<ShardId>,
    shard_count: usize,
}

impl PartitionTable {
    pub fn new(partition_count: u16, shard_count: usize) -> PartitionTable {
        assert!(shard_count > 0, "a partition table needs at least one shard");
        assert!(shard_count <= partition_count as usize, "more shards than partitions");
        assert!(shard_count <= u16::MAX as usize);
        let partitions = partition_count as usize;
        let mut owners = Vec::with_capacity(partitions);
        for shard in 0..shard_count {
            let (first, end) = (shard * partitions / shard_count, (shard + 1) * partitions / shard_count);
            owners.extend((first..end).map(|_| ShardId(shard as u16)));
        }
        assert_eq!(owners.len(), partitions);
        PartitionTable { owners, shard_count }
    }

    pub fn owner(&self, partition: PartitionId) -> ShardId {
        self.owners[partition.0 as usize]
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn partition_count(&self) -> u16 {
        self.owners.len() as u16
    }

    /// The partitions `shard` owns, ascending.
    pub fn partitions_of(&self, shard: ShardId) -> impl Iterator<Item = PartitionId> + '_ {
        self.owners
            .iter()
            .enumerate()
            .filter(move |(_, owner)| **owner == shard)
            .map(|(partition, _)| PartitionId(partition as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every partition has exactly one owner, ranges are contiguous and sizes differ by at most one.
    #[test]
    fn balanced_contiguous_ranges() {
        for shards in 1..=16 {
            let table = PartitionTable::new(271, shards);
            let sizes: Vec<usize> = (0..shards).map(|s| table.partitions_of(ShardId(s as u16)).count()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 271);
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            let owners: Vec<u16> = (0..271).map(|p| table.owner(PartitionId(p)).0).collect();
            assert!(owners.windows(2).all(|pair| pair[0] <= pair[1]), "ranges are contiguous");
        }
    }
}
