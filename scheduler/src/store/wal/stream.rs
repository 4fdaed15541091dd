//! A recovered log's live tasks, read again from its segments in id order, a batch at a time
//! ([`SegmentStream`]).
//!
//! The replay keeps only each live task's place (the live set); the segments' contents are dropped as it goes,
//! so its memory does not grow with the log. The tasks are then handed over in batches of [`BATCH`] ids: each
//! batch's records are sliced out of their segments, read again (from the page cache, mostly, as the replay
//! just read them), and a segment is let go as soon as its last live task is in a batch. A task's body shares
//! its segment's buffer, so a buffer lives until the shard that decodes the batch drops it. Ids are allocated
//! in the order records are written, so a batch mostly needs one or two segments; a task compaction carried
//! forward keeps its newer segment loaded until the ids before it are handed over.
//!
//! Nothing writes to the log while the stream is read: the node feeds its shards before they run.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

use super::format::{self, Entry, Frame};
use super::live::{LiveSet, LiveTask};
use crate::store::{RecoveredTask, StoreError};

/// Tasks per batch: enough to spread a batch's decoding over every core, few enough that a batch's records
/// are a few MiB.
pub(crate) const BATCH: usize = 1 << 16;

/// The live tasks of a recovered log, from its segments, in id order. See the module doc.
pub(crate) struct SegmentStream {
    live: Arc<RwLock<LiveSet>>,
    /// The log's directory (named by errors).
    dir: PathBuf,
    /// Each segment's file and the end of its valid records.
    segments: BTreeMap<u64, (PathBuf, u64)>,
    /// The lowest id not handed over yet.
    next_id: u64,
    done: bool,
    /// Live tasks not handed over yet, per segment.
    left: HashMap<u64, usize>,
    /// Segments read and still needed.
    loaded: HashMap<u64, Bytes>,
    batch: usize,
    /// Set until every task is handed over (or the stream is dropped): the log does no upkeep meanwhile.
    streaming: Arc<AtomicBool>,
}

impl Drop for SegmentStream {
    fn drop(&mut self) {
        self.streaming.store(false, Ordering::Release);
    }
}

impl SegmentStream {
    /// The live tasks of `live`, whose records are in `segments` (index → file and valid length) of the log
    /// in `dir`; `streaming` is cleared once they are all handed over.
    pub(crate) fn new(
        live: Arc<RwLock<LiveSet>>,
        dir: PathBuf,
        segments: BTreeMap<u64, (PathBuf, u64)>,
        streaming: Arc<AtomicBool>,
    ) -> Self {
        let mut left: HashMap<u64, usize> = HashMap::new();
        for (_, t) in live.read().tasks.iter() {
            *left.entry(t.seg()).or_default() += 1;
        }
        let loaded = HashMap::new();
        SegmentStream { live, dir, segments, next_id: 0, done: false, left, loaded, batch: BATCH, streaming }
    }

    /// The same, `batch` tasks at a time (tests).
    #[cfg(test)]
    pub(crate) fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Segment `seg`'s valid records, read if not already.
    fn segment(&mut self, seg: u64) -> Result<Bytes, StoreError> {
        if let Some(b) = self.loaded.get(&seg) {
            return Ok(b.clone());
        }
        let Some((path, written)) = self.segments.get(&seg) else {
            let e = std::io::Error::other(format!("segment {seg} holds a live task but is not in the log"));
            return Err(StoreError::Io { path: self.dir.clone(), source: e });
        };
        let mut data = Vec::with_capacity(*written as usize);
        File::open(path).and_then(|f| f.take(*written).read_to_end(&mut data)).map_err(|e| StoreError::io(path, e))?;
        let data = Bytes::from(data);
        self.loaded.insert(seg, data.clone());
        Ok(data)
    }

    /// The places of the next batch: `(id, place, dead-letter reason)`.
    fn next_places(&mut self) -> Vec<(u64, LiveTask, Option<String>)> {
        let live = self.live.read();
        let dead = |id: &u64| (!live.dead.is_empty()).then(|| live.dead.get(id).map(|r| r.to_string())).flatten();
        live.tasks.iter_from(self.next_id).take(self.batch).map(|(id, t)| (id, *t, dead(&id))).collect()
    }
}

impl Iterator for SegmentStream {
    type Item = Result<Vec<RecoveredTask>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let places = self.next_places();
        let Some(&(last, ..)) = places.last() else {
            self.done = true;
            self.streaming.store(false, Ordering::Release);
            return None;
        };
        self.next_id = last + 1;
        let mut batch = Vec::with_capacity(places.len());
        for (task_id, place, dead_reason) in places {
            let seg = place.seg();
            let buffer = match self.segment(seg) {
                Ok(b) => b,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let body = match format::reread_frame(&buffer, place.off() as usize) {
                Frame::Record { entry: Entry::Enqueue { body, .. } | Entry::Snapshot { body, .. }, .. } => {
                    buffer.slice_ref(body)
                }
                _ => {
                    // Not reachable while the live set and the segments agree; said loudly if they ever do not.
                    tracing::error!(task_id, seg, offset = place.off(), "a live task's record is not at its place");
                    Bytes::new()
                }
            };
            batch.push(RecoveredTask { task_id, body, attempts: place.attempts, dead_reason });
            if let Some(n) = self.left.get_mut(&seg) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.loaded.remove(&seg);
                }
            }
        }
        Some(Ok(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::{Wal, WalOptions};
    use crate::store::{Record, TaskStore};

    fn body(id: u64) -> Bytes {
        Bytes::from(format!("{id:08}").repeat(25))
    }

    #[test]
    fn batches_bring_every_live_task_in_id_order_and_let_each_segment_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions { segment_bytes: 16 << 10, max_record_bytes: 4096, ..WalOptions::default() };
        let (mut wal, _) = Wal::open(dir.path(), opts.clone()).expect("open");
        // 600 tasks of 200 B over many 16 KiB segments; every third is acked, one is dead-lettered.
        for id in 1..=600u64 {
            wal.append(&[Record::Enqueue { task_id: id, body: body(id), idempotency: None }]).expect("append");
        }
        let acks: Vec<Record> = (1..=600u64).filter(|id| id % 3 == 0).map(|task_id| Record::Ack { task_id }).collect();
        wal.append(&acks).expect("acks");
        wal.append(&[Record::DeadLetter { task_id: 7, reason: "gave up".into() }]).expect("dead");
        wal.sync().expect("sync");
        drop(wal);

        let (wal, _) = Wal::open(dir.path(), opts).expect("reopen");
        assert!(wal.segments.len() >= 5, "{} segments", wal.segments.len());
        let segments = wal.segments.iter().map(|(i, m)| (*i, (m.path.clone(), m.written))).collect();
        let streaming = Arc::new(AtomicBool::new(true));
        let mut stream =
            SegmentStream::new(wal.live.clone(), dir.path().to_owned(), segments, streaming.clone()).with_batch(7);
        let mut got = Vec::new();
        let mut most_loaded = 0;
        while let Some(batch) = stream.next() {
            let batch = batch.expect("batch");
            assert!(!batch.is_empty() && batch.len() <= 7);
            most_loaded = most_loaded.max(stream.loaded.len());
            got.extend(batch);
        }
        let want: Vec<u64> = (1..=600u64).filter(|id| id % 3 != 0).collect();
        assert_eq!(got.iter().map(|t| t.task_id).collect::<Vec<_>>(), want);
        assert!(got.iter().all(|t| t.body == body(t.task_id)), "each body is its own task's");
        let dead: Vec<_> = got.iter().filter_map(|t| t.dead_reason.as_deref().map(|r| (t.task_id, r))).collect();
        assert_eq!(dead, vec![(7, "gave up")]);
        assert!(most_loaded <= 2, "{most_loaded} segments held at once");
        assert!(stream.loaded.is_empty(), "every segment let go at the end");
        assert!(!streaming.load(Ordering::Acquire), "done: the log may do its upkeep again");
    }

    #[test]
    fn the_log_does_no_upkeep_until_its_recovered_tasks_are_read() {
        use crate::store::Upkeep;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = WalOptions {
            segment_bytes: 16 << 10,
            max_record_bytes: 4096,
            compact_live_ratio: 0.5,
            ..WalOptions::default()
        };
        let (mut wal, _) = Wal::open(dir.path(), opts.clone()).expect("open");
        // Every 50th task stays live: the old segments are sparse, worth compacting.
        for id in 1..=600u64 {
            wal.append(&[Record::Enqueue { task_id: id, body: body(id), idempotency: None }]).expect("append");
        }
        let acks: Vec<Record> = (1..=600u64).filter(|id| id % 50 != 0).map(|task_id| Record::Ack { task_id }).collect();
        wal.append(&acks).expect("acks");
        wal.sync().expect("sync");
        drop(wal);

        let (mut wal, recovery) = Wal::open_batches(dir.path(), opts).expect("reopen");
        let before = wal.segment_paths();
        for _ in 0..5 {
            assert_eq!(wal.maintain(crate::store::wal::now_unix_ms()).expect("maintain"), Upkeep::Done);
        }
        assert_eq!(wal.segment_paths(), before, "nothing compacted or deleted while the tasks are read");
        let tasks = recovery.tasks.collect_all().expect("tasks");
        let want: Vec<u64> = (1..=600u64).filter(|id| id % 50 == 0).collect();
        assert_eq!(tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), want);
        assert!(tasks.iter().all(|t| t.body == body(t.task_id)));
        // Read: the upkeep runs again, and the sparse segments go.
        while wal.maintain(crate::store::wal::now_unix_ms()).expect("maintain") == Upkeep::Pending {}
        assert!(
            wal.segment_paths().len() < before.len(),
            "{} segments, {} before",
            wal.segment_paths().len(),
            before.len()
        );
    }
}
