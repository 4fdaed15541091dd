//! Maps and sets keyed by ids the scheduler allocates itself (task, lease and connection ids).
//!
//! SipHash, the standard hasher, showed up as one of the largest costs of the WAL's live set and of the
//! shard's hot path. These ids are never chosen by clients, so hash flooding is not a concern and one
//! multiply is enough; keys that clients choose (idempotency keys, queue names) keep the default hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of a `u64`: spreads sequential ids over the high bits hashbrown looks at.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// A map keyed by a scheduler-allocated id.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A set of scheduler-allocated ids.
pub(crate) type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Makes room in `map` for `items` and sorts them in the order of the buckets they will go to, so that
/// inserting them sweeps the table once instead of missing the cache at every item.
///
/// Why: the hash spreads neighbouring ids over the whole table on purpose (it keeps a map used as a FIFO
/// healthy), so millions of ids inserted in id order cost a cache and TLB miss each; a restart inserts that
/// many at once (the WAL's live set, a shard's tasks). hashbrown keeps at most 7/8 of its buckets full, and a
/// bucket is the hash's low bits; were the count computed here a power of two off, the sweep would be two
/// interleaved sweeps, still in order.
pub(crate) fn sort_for_insert<V: Send>(map: &mut IdMap<u64, V>, items: &mut [(u64, V)]) {
    use rayon::prelude::*;
    use std::hash::BuildHasher as _;
    map.reserve(items.len());
    let mask = bucket_mask(map);
    let hasher = map.hasher().clone();
    items.par_sort_unstable_by_key(|(id, _)| hasher.hash_one(id) & mask);
}

/// The bucket mask of `map` as hashbrown sizes it for its capacity.
fn bucket_mask<V>(map: &IdMap<u64, V>) -> u64 {
    (map.capacity() / 7 * 8).next_power_of_two() as u64 - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_the_high_bits() {
        let tops: HashSet<u64> = (0..1024u64)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u64(id);
                h.finish() >> 57
            })
            .collect();
        // 1024 sequential ids must reach (nearly) all 128 buckets of the top 7 bits hashbrown uses as tags.
        assert!(tops.len() > 120, "only {} distinct top-7-bit values", tops.len());
    }

    #[test]
    fn items_sorted_for_insert_follow_the_buckets() {
        use std::hash::BuildHasher as _;
        let mut map: IdMap<u64, u64> = IdMap::default();
        let mut items: Vec<(u64, u64)> = (0..5000u64).map(|id| (id, id * 2)).collect();
        sort_for_insert(&mut map, &mut items);
        assert!(map.capacity() >= 5000);
        let mask = bucket_mask(&map);
        let buckets: Vec<u64> = items.iter().map(|(id, _)| map.hasher().hash_one(id) & mask).collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "not in bucket order");
        assert!(items.iter().all(|(id, v)| *v == id * 2), "an item lost its value");
        assert_ne!(items[1].0, 1, "id order is not bucket order");
    }
}
