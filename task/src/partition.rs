//! Partitions: the unit of replication, decoupled from the nodes.
//!
//! A replicated cluster splits the key space into a fixed number of partitions (`--partitions`, fixed for a
//! cluster's life). A key always lands in the same partition ([`partition_of`]: its XXH3 scaled onto the
//! count, no modulo bias), and each partition lives on `R` members, its **replicas**, chosen by the same
//! rendezvous hashing that places keys ([`replicas`]): the partition's seed is scored against every member and
//! the best `R` win. One of them leads the partition at a time (elected by its consensus group).
//!
//! Why partitions rather than placing keys on nodes directly: a replica group is a consensus group with a log,
//! a leader and followers. With a group per partition, adding a node moves the partitions the new node wins,
//! each as a whole log, instead of a slice of every key's history; and the number of groups a node runs stays
//! bounded by the partition count, not by the key count.

use xxhash_rust::xxh3::xxh3_64;

use crate::ring::Ring;

/// Partitions of a cluster unless configured otherwise: enough to spread leaders evenly over tens of nodes,
/// few enough that each node's groups cost little when idle (a heartbeat per group and tick).
pub const DEFAULT_PARTITIONS: u32 = 64;

/// Most partitions a cluster may have: a partition number takes 16 bits of a task id.
pub const MAX_PARTITIONS: u32 = 1 << 15;

/// The partition of `key` among `count` (which must be at least 1).
pub fn partition_of(key: &[u8], count: u32) -> u32 {
    // Lemire's multiply-shift: uniform over 0..count without the bias of `%`.
    ((u128::from(xxh3_64(key)) * u128::from(count.max(1))) >> 64) as u32
}

/// The seed a partition is placed by: distinct from any key's hash pattern so that partition placement and
/// key placement do not line up.
fn seed(partition: u32) -> u64 {
    xxh3_64(format!("partition/{partition}").as_bytes())
}

/// Ordinals of the members holding `partition` with replication factor `factor`, in preference order: the
/// first is the preferred leader. Fewer than `factor` if the ring is smaller.
pub fn replicas(ring: &Ring, partition: u32, factor: usize) -> Vec<usize> {
    let mut order = ring.preference_of_hash(seed(partition));
    order.truncate(factor);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        Ring::new((0..n).map(|i| format!("scheduler-{i}.scheduler:7070"))).expect("ring")
    }

    #[test]
    fn every_key_has_one_partition_and_they_fill_evenly() {
        let mut counts = vec![0usize; 64];
        for i in 0..64_000 {
            let p = partition_of(format!("key-{i}").as_bytes(), 64);
            counts[p as usize] += 1;
        }
        for c in &counts {
            assert!((800..=1200).contains(c), "uneven partitions: {counts:?}");
        }
        assert_eq!(partition_of(b"anything", 1), 0);
        assert_eq!(partition_of(b"k", 64), partition_of(b"k", 64));
    }

    #[test]
    fn replicas_are_distinct_members_and_leaders_spread() {
        let r = ring(5);
        let mut first = [0usize; 5];
        for p in 0..1000 {
            let set = replicas(&r, p, 3);
            assert_eq!(set.len(), 3);
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "partition {p}: {set:?}");
            first[set[0]] += 1;
        }
        for c in first {
            assert!((150..=250).contains(&c), "preferred leaders spread unevenly: {first:?}");
        }
        assert_eq!(replicas(&ring(2), 7, 3).len(), 2, "a smaller ring gives every member");
    }

    #[test]
    fn adding_a_member_changes_only_the_partitions_it_joins() {
        for n in 3..8 {
            let (old, new) = (ring(n), ring(n + 1));
            let mut moved = 0;
            for p in 0..1000 {
                let (a, b) = (replicas(&old, p, 3), replicas(&new, p, 3));
                if a != b {
                    moved += 1;
                    assert!(b.contains(&n), "partition {p} changed without the new member: {a:?} -> {b:?}");
                    let kept: Vec<_> = b.iter().filter(|m| **m != n).collect();
                    assert!(kept.iter().all(|m| a.contains(m)), "partition {p}: {a:?} -> {b:?}");
                }
            }
            let share = moved as f64 / 1000.0;
            let ideal = 3.0 / (n as f64 + 1.0);
            assert!((share - ideal).abs() < 0.07, "{n} -> {}: {share} of the partitions moved, ideal {ideal}", n + 1);
        }
    }
}
