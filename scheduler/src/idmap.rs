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
}
