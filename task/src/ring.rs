//! Placement of task keys on scheduler nodes: rendezvous (highest random weight) hashing.
//!
//! Every member gets a score for a key; the highest score owns it. Adding a member moves only the keys the
//! new member wins (1/(N+1) of them on average) and removing one moves only the keys it owned, with no virtual
//! nodes to tune. A lookup hashes the key once (XXH3) and mixes that hash with each member's seed, so it costs
//! a few nanoseconds per member: fine for the tens of nodes a cluster has.
//!
//! The member list is ordered: a member's position is its **ordinal**, which becomes the top bits of the task
//! ids it assigns ([`TASK_ID_NODE_SHIFT`]), so a task id names the node that owns it. Members are only ever
//! appended (a Kubernetes StatefulSet scales at its end); reordering the list changes ordinals.
//!
//! The **epoch** is a fingerprint of the member list: equal epochs mean equal rings. It is never 0; 0 means
//! "no cluster" (a single node).

use xxhash_rust::xxh3::xxh3_64;

/// Task ids of the node with ordinal `n` start at `n << TASK_ID_NODE_SHIFT` (2^48 ids per node).
pub const TASK_ID_NODE_SHIFT: u32 = 48;

/// Most members a ring may have (ordinals must fit in the top bits of task and lease ids; the highest bit of
/// a lease id is taken).
pub const MAX_MEMBERS: usize = 1 << (63 - TASK_ID_NODE_SHIFT);

/// Errors building a ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A member name appears twice.
    #[error("member {0:?} is listed twice")]
    Duplicate(String),
    /// An empty member name.
    #[error("a member name is empty")]
    Empty,
    /// More members than ordinals.
    #[error("{0} members; at most {MAX_MEMBERS} are allowed")]
    TooMany(usize),
}

/// A consistent-hashing ring over named members (node addresses such as `scheduler-1.scheduler:7070`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    members: Vec<String>,
    seeds: Vec<u64>,
    epoch: u64,
}

impl Ring {
    /// Builds a ring; the order of `members` gives their ordinals. An empty list is a single node (epoch 0).
    pub fn new<I, S>(members: I) -> Result<Ring, RingError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members: Vec<String> = members.into_iter().map(Into::into).collect();
        if members.len() > MAX_MEMBERS {
            return Err(RingError::TooMany(members.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for m in &members {
            if m.is_empty() {
                return Err(RingError::Empty);
            }
            if !seen.insert(m.as_str()) {
                return Err(RingError::Duplicate(m.clone()));
            }
        }
        let seeds = members.iter().map(|m| xxh3_64(m.as_bytes())).collect();
        let epoch = if members.is_empty() { 0 } else { xxh3_64(members.join("\n").as_bytes()) | 1 };
        Ok(Ring { members, seeds, epoch })
    }

    /// The members, in ordinal order.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True for the single-node ring.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The epoch: a fingerprint of the member list (0 for the empty ring).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The ordinal of `member`, if it is one.
    pub fn ordinal(&self, member: &str) -> Option<usize> {
        self.members.iter().position(|m| m == member)
    }

    /// The ordinal of the member owning `key` (`None` for the empty ring).
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        let h = xxh3_64(key);
        self.seeds.iter().enumerate().max_by_key(|(_, s)| score(h, **s)).map(|(i, _)| i)
    }

    /// Ordinals of all members by preference for `key`: the owner first, then where the key goes if the
    /// owner is away (failover order).
    pub fn preference(&self, key: &[u8]) -> Vec<usize> {
        self.preference_of_hash(xxh3_64(key))
    }

    /// Ordinals of all members by preference for an already hashed name (a key's XXH3, or a partition's seed:
    /// [`crate::partition`]).
    pub fn preference_of_hash(&self, h: u64) -> Vec<usize> {
        let mut order: Vec<(u64, usize)> = self.seeds.iter().enumerate().map(|(i, s)| (score(h, *s), i)).collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        order.into_iter().map(|(_, i)| i).collect()
    }

    /// The ordinal encoded in a task id.
    pub fn ordinal_of_task(task_id: u64) -> usize {
        (task_id >> TASK_ID_NODE_SHIFT) as usize
    }
}

/// The weight of a member for a key: the key's hash mixed with the member's seed (SplitMix64's finalizer,
/// a bijection, so distinct members never tie for one key unless their seeds are equal).
fn score(key_hash: u64, seed: u64) -> u64 {
    let mut z = key_hash ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        Ring::new((0..n).map(|i| format!("scheduler-{i}.scheduler:7070"))).expect("ring")
    }

    fn keys(n: usize) -> Vec<String> {
        // Deterministic pseudo-random keys (SplitMix64 stream) so a failure reproduces.
        let mut x = 0x1234_5678_9abc_def0u64;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                format!("key-{:016x}", score(x, 0))
            })
            .collect()
    }

    #[test]
    fn adding_a_node_moves_at_most_its_share_of_the_keys_and_only_to_it() {
        let keys = keys(100_000);
        for n in 1..=12 {
            let (old, new) = (ring(n), ring(n + 1));
            let mut moved = 0usize;
            for k in &keys {
                let (a, b) = (old.owner(k.as_bytes()), new.owner(k.as_bytes()));
                if a != b {
                    moved += 1;
                    assert_eq!(b, Some(n), "a moved key goes to the new member");
                }
            }
            let share = moved as f64 / keys.len() as f64;
            let bound = 1.0 / (n as f64 + 1.0) + 0.01;
            println!("{n} -> {} members: {share:.4} of the keys moved (ideal {:.4})", n + 1, 1.0 / (n as f64 + 1.0));
            assert!(share <= bound, "{n} -> {}: moved {share:.4} > {bound:.4}", n + 1);
            assert!(share >= 1.0 / (n as f64 + 1.0) - 0.01, "{n} -> {}: moved only {share:.4}", n + 1);
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let keys = keys(20_000);
        let full = ring(5);
        let without: Vec<String> = full.members().iter().filter(|m| !m.starts_with("scheduler-2.")).cloned().collect();
        let less = Ring::new(without).expect("ring");
        for k in &keys {
            let before = &full.members()[full.owner(k.as_bytes()).expect("owner")];
            let after = &less.members()[less.owner(k.as_bytes()).expect("owner")];
            if !before.starts_with("scheduler-2.") {
                assert_eq!(before, after, "{k} moved although its owner stayed");
            }
        }
    }

    #[test]
    fn keys_spread_evenly() {
        let keys = keys(100_000);
        let r = ring(8);
        let mut counts = [0usize; 8];
        for k in &keys {
            counts[r.owner(k.as_bytes()).expect("owner")] += 1;
        }
        for c in counts {
            assert!((11_500..=13_500).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn preference_starts_with_the_owner_and_lists_everyone() {
        let r = ring(6);
        for k in keys(1000) {
            let p = r.preference(k.as_bytes());
            assert_eq!(p.first().copied(), r.owner(k.as_bytes()));
            let mut sorted = p.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        }
    }

    #[test]
    fn epochs_fingerprint_the_member_list() {
        assert_eq!(Ring::new(Vec::<String>::new()).expect("empty").epoch(), 0);
        assert_ne!(ring(3).epoch(), 0);
        assert_eq!(ring(3).epoch(), ring(3).epoch());
        assert_ne!(ring(3).epoch(), ring(4).epoch());
        let swapped = Ring::new(["b:1", "a:1"]).expect("ring");
        assert_ne!(swapped.epoch(), Ring::new(["a:1", "b:1"]).expect("ring").epoch(), "order gives ordinals");
        assert_eq!(Ring::new(["a:1", "a:1"]), Err(RingError::Duplicate("a:1".into())));
        assert_eq!(Ring::new(["a:1", ""]), Err(RingError::Empty));
    }

    #[test]
    fn task_ids_name_their_node() {
        assert_eq!(Ring::ordinal_of_task((3 << TASK_ID_NODE_SHIFT) + 17), 3);
        assert_eq!(Ring::ordinal_of_task(17), 0);
    }
}
