//! A table of values by scheduler-allocated id, kept in id order in chunks ([`IdTable`]).
//!
//! Why not a hash map: a hash map's buckets hold its entries, and its buckets double, so a table of millions
//! sits between 7/16 and 7/8 full: an entry of 24 B costs 28–57 B, plus a control byte. A backlog of queued
//! tasks is many millions of such entries (docs/notes/backlog.md). Task ids are allocated in increasing
//! order, so tasks arrive almost in id order and mostly leave oldest first: kept sorted, in chunks of at most
//! [`CHUNK`] entries, the table grows one chunk at a time at its back and shrinks at its front, ~24 B an entry
//! of 24 B. A restart inserts a log's tasks in the order they were written, so the table is built by
//! appending, without hashing and without a cache miss per task.
//!
//! A lookup finds the chunk by binary search over the chunks' first ids (one contiguous array of small
//! headers), then the entry by binary search in the chunk; the first and the last chunk are tried first, as
//! departures are mostly the oldest tasks and arrivals the newest. An id that arrives out of order is
//! inserted at its place; a chunk that overflows is split in two. A chunk left small by departures is
//! merged into a neighbour when both fit in one chunk, so a table emptied at random keeps at least ~3/8 of
//! its room used.
//!
//! **Invariant:** the chunks are non-empty and sorted, every id of a chunk is at least its `first` and below
//! the next chunk's `first`, and each id is held once.

use std::collections::VecDeque;

/// Most entries in one chunk: its inserts and removals move at most half of it, and the chunk headers (one
/// per `CHUNK` entries) stay a small array to search.
const CHUNK: usize = 512;

/// A chunk below this many entries is merged with a neighbour when they fit together.
const SMALL: usize = CHUNK / 4;

/// A run of entries in id order.
#[derive(Debug)]
struct Chunk<V> {
    /// A lower bound of the chunk's ids (its first id when it was made; removals do not raise it).
    first: u64,
    entries: VecDeque<(u64, V)>,
}

impl<V> Chunk<V> {
    fn with(first: u64, entries: VecDeque<(u64, V)>) -> Self {
        Chunk { first, entries }
    }

    /// The index of `id` in the chunk, or where it would go.
    fn search(&self, id: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&id, |(k, _)| *k)
    }
}

/// Values by id, in id order. See the module doc.
#[derive(Debug)]
pub(crate) struct IdTable<V> {
    chunks: VecDeque<Chunk<V>>,
    len: usize,
}

impl<V> Default for IdTable<V> {
    fn default() -> Self {
        IdTable { chunks: VecDeque::new(), len: 0 }
    }
}

impl<V> IdTable<V> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The chunk that holds `id` or would (the table is not empty).
    fn chunk_of(&self, id: u64) -> usize {
        let n = self.chunks.len();
        if n == 1 || id < self.chunks[1].first {
            return 0;
        }
        if id >= self.chunks[n - 1].first {
            return n - 1;
        }
        // The first chunk whose lower bound is above `id`, less one (chunk 1's is not, so it is at least 2).
        self.chunks.partition_point(|c| c.first <= id) - 1
    }

    /// The value of `id`.
    pub(crate) fn get(&self, id: u64) -> Option<&V> {
        if self.chunks.is_empty() {
            return None;
        }
        let c = &self.chunks[self.chunk_of(id)];
        c.search(id).ok().map(|i| &c.entries[i].1)
    }

    /// The value of `id`, to change in place.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut V> {
        if self.chunks.is_empty() {
            return None;
        }
        let at = self.chunk_of(id);
        let c = &mut self.chunks[at];
        c.search(id).ok().map(|i| &mut c.entries[i].1)
    }

    /// True when `id` is held.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Puts `value` under `id`; the value it replaces, if any.
    pub(crate) fn insert(&mut self, id: u64, value: V) -> Option<V> {
        // The common case: a new id above every other, appended to the last chunk.
        let newest = self.chunks.back().map(|c| c.entries.back().map_or(c.first, |e| e.0));
        if newest.is_none_or(|last| id > last) {
            match self.chunks.back_mut() {
                Some(c) if c.entries.len() < CHUNK => c.entries.push_back((id, value)),
                _ => {
                    let mut entries = VecDeque::with_capacity(CHUNK);
                    entries.push_back((id, value));
                    self.chunks.push_back(Chunk::with(id, entries));
                }
            }
            self.len += 1;
            return None;
        }
        let mut at = self.chunk_of(id);
        let i = match self.chunks[at].search(id) {
            Ok(i) => return Some(std::mem::replace(&mut self.chunks[at].entries[i].1, value)),
            Err(i) => i,
        };
        let i = if self.chunks[at].entries.len() < CHUNK {
            i
        } else {
            // Full: its upper half becomes a chunk of its own, so no chunk ever grows past its room.
            let mut upper = VecDeque::with_capacity(CHUNK);
            upper.extend(self.chunks[at].entries.drain(CHUNK / 2..));
            let first = upper.front().map_or(id, |e| e.0);
            self.chunks.insert(at + 1, Chunk::with(first, upper));
            if i > CHUNK / 2 {
                at += 1;
                i - CHUNK / 2
            } else {
                i
            }
        };
        let c = &mut self.chunks[at];
        c.entries.insert(i, (id, value));
        c.first = c.first.min(id);
        self.len += 1;
        None
    }

    /// Takes `id` out; its value, if it was held.
    pub(crate) fn remove(&mut self, id: u64) -> Option<V> {
        if self.chunks.is_empty() {
            return None;
        }
        let at = self.chunk_of(id);
        let c = &mut self.chunks[at];
        let i = c.search(id).ok()?;
        let (_, value) = c.entries.remove(i)?;
        self.len -= 1;
        let left = c.entries.len();
        if left == 0 {
            self.chunks.remove(at);
        } else if left < SMALL {
            self.merge_around(at);
        }
        Some(value)
    }

    /// Merges the small chunk `at` with a neighbour if they fit in one chunk: the smaller one's entries go to
    /// the other, which keeps its allocation.
    fn merge_around(&mut self, at: usize) {
        let len_of = |t: &Self, i: usize| t.chunks.get(i).map_or(usize::MAX, |c| c.entries.len());
        let here = len_of(self, at);
        let next = at.checked_add(1).filter(|&i| len_of(self, i).saturating_add(here) <= CHUNK);
        let prev = at.checked_sub(1).filter(|&i| len_of(self, i).saturating_add(here) <= CHUNK);
        let Some((lower, upper)) = next.map(|n| (at, n)).or(prev.map(|p| (p, at))) else { return };
        let Some(mut taken) = self.chunks.remove(upper) else { return };
        let low = &mut self.chunks[lower];
        if low.entries.capacity() >= low.entries.len() + taken.entries.len() {
            low.entries.append(&mut taken.entries);
        } else {
            // The lower chunk's room is too small: its entries go in front of the upper one's instead.
            for e in low.entries.drain(..).rev() {
                taken.entries.push_front(e);
            }
            low.entries = taken.entries;
        }
    }

    /// The entry of the lowest id.
    pub(crate) fn first(&self) -> Option<(u64, &V)> {
        self.chunks.front().and_then(|c| c.entries.front()).map(|(id, v)| (*id, v))
    }

    /// Takes the entry of the lowest id out.
    pub(crate) fn pop_first(&mut self) -> Option<(u64, V)> {
        let c = self.chunks.front_mut()?;
        let e = c.entries.pop_front()?;
        self.len -= 1;
        if c.entries.is_empty() {
            self.chunks.pop_front();
        }
        Some(e)
    }

    /// Keeps only the entries for which `keep` is true. Chunks left empty go; chunks left small stay as they
    /// are (a retain is rare: a purge, a batch of cancellations).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64, &V) -> bool) {
        for c in &mut self.chunks {
            c.entries.retain(|(id, v)| keep(*id, v));
        }
        self.chunks.retain(|c| !c.entries.is_empty());
        self.len = self.chunks.iter().map(|c| c.entries.len()).sum();
    }

    /// The entries from `id` on (`id` included if held), in id order.
    pub(crate) fn iter_from(&self, id: u64) -> impl Iterator<Item = (u64, &V)> + '_ {
        let (at, skip) = match self.chunks.is_empty() {
            true => (0, 0),
            false => {
                let at = self.chunk_of(id);
                (at, self.chunks[at].search(id).unwrap_or_else(|i| i))
            }
        };
        self.chunks
            .iter()
            .skip(at)
            .enumerate()
            .flat_map(move |(k, c)| c.entries.iter().skip(if k == 0 { skip } else { 0 }).map(|(id, v)| (*id, v)))
    }

    /// The entries in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.chunks.iter().flat_map(|c| c.entries.iter().map(|(id, v)| (*id, v)))
    }

    /// Gives back the room of the chunk headers beyond what is held.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
    }

    /// Bytes the table holds on the heap (its chunks' room and their headers).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, V)>();
        let rooms: usize = self.chunks.iter().map(|c| c.entries.capacity() * entry).sum();
        rooms + self.chunks.capacity() * std::mem::size_of::<Chunk<V>>()
    }

    /// Checks the invariant (tests).
    #[cfg(test)]
    fn check(&self) {
        let mut prev: Option<u64> = None;
        let mut n = 0;
        for (k, c) in self.chunks.iter().enumerate() {
            assert!(!c.entries.is_empty(), "chunk {k} is empty");
            assert!(c.entries.len() <= CHUNK, "chunk {k} holds {}", c.entries.len());
            assert!(prev.is_none_or(|p| p < c.first), "chunk {k}'s bound {} is not above {prev:?}", c.first);
            for (id, _) in &c.entries {
                assert!(*id >= c.first && prev.is_none_or(|p| p < *id), "id {id} out of order in chunk {k}");
                prev = Some(*id);
            }
            n += c.entries.len();
        }
        assert_eq!(n, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn ids_appended_in_order_fill_whole_chunks_and_leave_from_the_front() {
        let mut t = IdTable::default();
        for id in 1..=10_000u64 {
            assert_eq!(t.insert(id, id * 3), None);
        }
        t.check();
        assert_eq!(t.chunks.len(), 10_000usize.div_ceil(CHUNK), "every chunk but the last is full");
        let per_entry = t.heap_bytes() as f64 / t.len() as f64;
        assert!(per_entry < 26.0, "{per_entry} B an entry of 16 B");
        assert_eq!(t.get(777), Some(&2331));
        assert_eq!(t.insert(777, 1), Some(2331), "an insert of a held id replaces its value");
        for id in 1..=9_990u64 {
            assert!(t.remove(id).is_some());
        }
        t.check();
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), (9_991..=10_000).collect::<Vec<_>>());
        assert_eq!(t.get(5), None);
        assert_eq!((t.remove(5), t.len()), (None, 10));
    }

    #[test]
    fn a_table_matches_a_sorted_map_under_random_use() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed * 0x9E37_79B9);
            let mut t = IdTable::default();
            let mut model = BTreeMap::new();
            let mut next = 1u64;
            for step in 0..20_000 {
                match rng.next() % 10 {
                    // Mostly new ids, sometimes a little out of order (a follow-up, a recovered task).
                    0..=4 => {
                        let id =
                            if rng.next().is_multiple_of(8) { next.saturating_sub(rng.next() % 2000) } else { next };
                        next += 1;
                        assert_eq!(t.insert(id, step), model.insert(id, step), "seed {seed} step {step}");
                    }
                    // Mostly the oldest leave, sometimes any.
                    5..=8 => {
                        let id = match (model.keys().next(), rng.next() % 4) {
                            (Some(&oldest), 0..=2) => oldest,
                            _ => rng.next() % next.max(1),
                        };
                        assert_eq!(t.remove(id), model.remove(&id), "seed {seed} step {step}");
                    }
                    _ => {
                        let id = rng.next() % next.max(1);
                        assert_eq!(t.get(id), model.get(&id), "seed {seed} step {step}");
                        if let (Some(v), Some(m)) = (t.get_mut(id), model.get_mut(&id)) {
                            *v += 1;
                            *m += 1;
                        }
                    }
                }
            }
            t.check();
            let got: Vec<(u64, usize)> = t.iter().map(|(id, v)| (id, *v)).collect();
            let want: Vec<(u64, usize)> = model.into_iter().collect();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn a_table_emptied_at_random_merges_its_small_chunks() {
        let mut rng = Rng(7);
        let mut t = IdTable::default();
        let n = 100_000u64;
        for id in 0..n {
            t.insert(id, 0u64);
        }
        // Remove 90 % of the ids at random: without merging, every chunk would keep its full room.
        let mut ids: Vec<u64> = (0..n).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        for id in &ids[..90_000] {
            assert!(t.remove(*id).is_some());
        }
        t.check();
        let full = t.len() * std::mem::size_of::<(u64, u64)>();
        assert!(t.heap_bytes() < 3 * full, "{} B held for {} B of entries", t.heap_bytes(), full);
        let mut left: Vec<u64> = ids[90_000..].to_vec();
        left.sort_unstable();
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), left);
    }

    #[test]
    fn the_first_entry_comes_out_first_and_retain_keeps_the_order() {
        let mut t = IdTable::default();
        for id in 0..2_000u64 {
            t.insert(id, id % 7);
        }
        assert_eq!(t.first(), Some((0, &0)));
        assert_eq!(t.pop_first(), Some((0, 0)));
        for _ in 1..CHUNK {
            assert!(t.pop_first().is_some());
        }
        t.check();
        assert_eq!((t.first(), t.len()), (Some((CHUNK as u64, &(CHUNK as u64 % 7))), 2_000 - CHUNK));
        t.retain(|id, v| *v != 0 && id % 2 == 0);
        t.check();
        let want: Vec<u64> = (CHUNK as u64..2_000).filter(|id| id % 7 != 0 && id % 2 == 0).collect();
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), want);
        let from: Vec<u64> = t.iter_from(1_001).take(3).map(|(id, _)| id).collect();
        assert_eq!(from, vec![1_002, 1_004, 1_006], "from an id not held: the next ones");
        assert_eq!(t.iter_from(0).count(), t.len());
        assert_eq!(t.iter_from(5_000).count(), 0);
        t.retain(|_, _| false);
        assert_eq!((t.len(), t.first()), (0, None));
        assert_eq!(t.pop_first(), None);
    }

    #[test]
    fn ids_inserted_in_descending_order_split_chunks_and_stay_sorted() {
        let mut t = IdTable::default();
        for id in (0..5_000u64).rev() {
            t.insert(id, ());
        }
        t.check();
        assert_eq!(t.len(), 5_000);
        assert!(t.contains(0) && t.contains(4_999) && !t.contains(5_000));
        assert!(t.iter().map(|(id, _)| id).eq(0..5_000));
    }
}
