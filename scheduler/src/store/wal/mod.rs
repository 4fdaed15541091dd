//! The segmented write-ahead log: the default [`TaskStore`].
//!
//! Why our own log: the scheduler only ever appends small records and reads them back once, at start. A
//! plain append-only file with one `pwrite` and one `fdatasync` per group of batches is the cheapest
//! durable write there is, and recovery is a single sequential read. What a database would add (indexes,
//! page management, background threads) we do not need; what we do need — knowing exactly which bytes
//! are durable and refusing to start on real corruption — is easier to get right in a few hundred lines
//! we control.
//!
//! # On-disk format
//!
//! A directory of segment files `wal-<20-digit index>.log`, read in index order. Each is preallocated to
//! [`WalOptions::segment_bytes`] with real blocks, so a full disk is reported when a segment is created,
//! not in the middle of a batch. All integers are little-endian.
//!
//! ```text
//! segment header (48 bytes)
//! 0          8          12         16                 24                 32                 40      44     48
//! +----------+----------+----------+------------------+------------------+------------------+-------+------+
//! | magic    | version  | hdr len  | segment index    | base seq         | task id floor    | crc32c| zero |
//! | PMWAL001 | u32 = 1  | u32 = 48 | u64 (= file name)| u64: seq of its  | u64: largest task| of    |      |
//! |          |          |          |                  | first record     | id ever appended | 0..40 |      |
//! +----------+----------+----------+------------------+------------------+------------------+-------+------+
//!
//! record (from offset 48, back to back; a len of 0 ends the written data of the segment)
//! 0        4        8      9          17         17+k
//! +--------+--------+------+----------+----------+--------------------------+
//! | len    | crc32c | type | seq      | sync lag | fields of the type       |
//! | u32    | u32    | u8   | u64      | LEB128   |                          |
//! +--------+--------+------+----------+----------+--------------------------+
//! len   = bytes after the crc field (type + seq + payload), at least 10
//! crc32c over the 4 len bytes, then type, seq and payload
//! seq   = one more than the previous record's, across the whole store (first record: 1)
//! lag   = seq - S where every record below seq S had been fdatasync'ed when this one was written
//!
//! payload by type                                 idem = expires_ms u64 | key_len u16 | key utf-8
//! 1 Enqueue     task_id u64 | flags u8 (1 = idem) | [idem] | body (rest)
//! 2 Attempt     task_id u64 | attempts u32
//! 3 Ack         task_id u64                          (tombstone)
//! 4 DeadLetter  task_id u64 | reason utf-8 (rest)
//! 5 Redrive     task_id u64
//! 6 Snapshot    task_id u64 | attempts u32 | flags u8 (1 = idem, 2 = dead) | [idem]
//!               | [reason_len u32 | reason] | body (rest)        written by compaction: full task state
//! 7 KeyCarry    task_id u64 | idem                   written by compaction: a key that outlives its task
//! 8 Checkpoint  (nothing)                            written when idle: proves everything before is synced
//! 9 Finish      task_id u64 | expires_ms u64 | body (rest)   tombstone + kept outcome (rewritten as is by
//!               compaction while the result is kept)
//! 10 Group      count u32                            the next `count` records are one unit: recovery applies
//!               all of them or none (a task's follow-ups and its Finish); a unit never spans two segments
//! ```
//!
//! Types 9 and 10 came after the first release; a build that predates them refuses a log holding one
//! (unknown record type) instead of misreading it.
//!
//! `base seq` of a segment also proves that every earlier record was synced: the previous segment is
//! synced before the next one is created. See `wal/recovery.rs` for how that proof separates a torn tail
//! (zeroed, store opens) from damaged durable data ([`StoreError::Corrupt`], store refuses to open), and
//! [`repair`] for starting again on purpose after such damage (`pm-scheduler repair`).
//!
//! # Writing
//!
//! A batch is encoded into one reusable buffer and written with one `pwrite` at the end of the newest
//! segment; if it does not fit, the segment is synced and a new one created first. If the write fails the
//! position is not advanced, so the next batch overwrites the failed bytes (and any of them beyond the next
//! batch are zeroed), and the store keeps working. `sync` is one `fdatasync` of the newest segment. A
//! failed `fdatasync` leaves the kernel's page cache in an unknown state, so it poisons the store: every
//! later call fails until a restart, whose recovery sees only what really reached the disk.
//!
//! # Space
//!
//! The live set (`wal/live.rs`) knows which segment holds each live task's full record, each
//! unexpired key and each kept result (unexpired, and at most [`WalOptions::max_results`] of them: beyond
//! that, the ones that expire soonest are dropped, at recovery exactly as when they were written). `maintain` (`wal/space.rs`) deletes segments from the front (oldest first) once
//! nothing live is in them — strictly in order, so a tombstone is never deleted while the record it
//! cancels still exists — and compacts the oldest segment forward when its live share is under
//! [`WalOptions::compact_live_ratio`]: its live tasks and keys are re-appended as Snapshot/KeyCarry
//! records, a slice per call (`maintain` returns [`Upkeep::Pending`] until the last), synced, and the
//! segment deleted. The newest segment is never deleted, and its header's
//! task id floor keeps [`Recovered::max_task_id`] right.

mod compaction;
mod format;
mod live;
mod reader;
mod recovery;
pub mod repair;
mod segment;
mod space;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

use format::{Entry, SegmentHeader, HEADER_LEN};
use live::LiveSet;
use recovery::SegMeta;
use segment::MAX_SEGMENT_BYTES;

use super::{
    BodyReader, Record, Recovered, RecoveredIdem, RecoveredResult, Recovery, StoreError, StoreStats, TaskBatches,
    TaskStore, Upkeep,
};

/// Tuning of the [`Wal`]. Every field has a sensible default.
#[derive(Debug, Clone, PartialEq)]
pub struct WalOptions {
    /// Size of each segment file, preallocated at creation. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest encoded record accepted (header included); must leave room for the segment header.
    /// Default 8 MiB.
    pub max_record_bytes: usize,
    /// An old segment whose live bytes are under this share of its written bytes is compacted forward.
    /// 0 disables compaction (segments are then only deleted when empty). Default 0.25.
    pub compact_live_ratio: f64,
    /// Most results of finished tasks ([`Record::Finish`]) kept; beyond it, the ones expiring soonest are
    /// dropped. 0 keeps none. Default 100,000.
    pub max_results: usize,
    /// Once this many bytes are written and not yet synced, a thread of their own writes them back (the
    /// commit thread does not wait). Without it a log that is rarely synced (`--fsync none`) leaves a whole
    /// segment of dirty pages for the sync that seals it, which held the commit thread for 50–80 ms per
    /// segment at full rate. 0 turns it off. Default 1 MiB.
    pub writeback_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 8 << 20,
            compact_live_ratio: 0.25,
            max_results: 100_000,
            writeback_bytes: 1 << 20,
        }
    }
}

impl WalOptions {
    /// Checks the options; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < segment::MIN_SEGMENT_BYTES {
            return Err(format!("segment size {} is below the minimum of 4096 bytes", self.segment_bytes));
        }
        if self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(format!("segment size {} is above the maximum of 4 GiB - 1", self.segment_bytes));
        }
        if self.max_record_bytes < 64 {
            return Err(format!("max record size {} is below the minimum of 64 bytes", self.max_record_bytes));
        }
        if self.max_record_bytes as u64 > self.segment_bytes - HEADER_LEN as u64 {
            return Err(format!(
                "max record size {} must be smaller than a segment ({} bytes)",
                self.max_record_bytes, self.segment_bytes
            ));
        }
        if !(0.0..1.0).contains(&self.compact_live_ratio) {
            return Err(format!("compaction live ratio {} must be in [0, 1)", self.compact_live_ratio));
        }
        Ok(())
    }
}

/// Test hooks standing in for a failing disk.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// This many next writes fail with `ENOSPC`...
    pub fail_writes: u32,
    /// ...after letting this many of their bytes through.
    pub write_prefix: usize,
    /// The next segment creation fails with this errno.
    pub fail_create: Option<i32>,
    /// The next `fdatasync` fails with `EIO`.
    pub fail_sync: bool,
    /// Ranges handed to the writeback thread (`writeback_bytes`), in order.
    pub written_back: Vec<std::ops::Range<u64>>,
    /// Each `maintain` carries one compaction slice only, as a slow machine would.
    pub one_slice: bool,
}

/// The newest segment, the only one written to.
#[derive(Debug)]
struct Active {
    index: u64,
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    pos: u64,
    /// File size; a batch that does not fit below it goes to a new segment.
    capacity: u64,
    /// Bytes in `[pos, dirty_end)` may hold remains of a failed write (clean when `dirty_end <= pos`).
    dirty_end: u64,
    /// Written since the last `fdatasync`.
    unsynced: bool,
    /// Everything below this offset was synced, or handed to the writeback thread.
    written_back: u64,
}

/// The segmented write-ahead log. See the module docs for the format and the reasons.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Shared with [`reader::WalReader`], which reads live bodies back from other threads.
    live: Arc<RwLock<LiveSet>>,
    reader: Arc<reader::WalReader>,
    segments: BTreeMap<u64, SegMeta>,
    active: Active,
    next_seq: u64,
    /// Every record below this seq is synced.
    durable_before: u64,
    /// Records were synced that no later record or header proves synced yet (see `checkpoint`).
    evidence_pending: bool,
    /// Set by a failed `fdatasync`; the store refuses further work.
    poisoned: Option<String>,
    buf: Vec<u8>,
    sizes: Vec<usize>,
    /// Unlinks retired segments and prepares spare segments off the commit thread.
    bg: segment::Background,
    /// Writes back unsynced pages early (`WalOptions::writeback_bytes`).
    writeback: segment::Writeback,
    /// The compaction under way, if any (continued by each `maintain`).
    compaction: Option<compaction::Compaction>,
    /// Set while the recovered tasks are still being read from their segments (`stream.rs`): `maintain`
    /// then neither compacts nor deletes a segment, which would move or remove records not read yet.
    streaming: Arc<AtomicBool>,
    /// The oldest segment, found to hold only results that go soon, and since when (see `space.rs`).
    draining: Option<(u64, std::time::Instant)>,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering every live task and unexpired key.
    ///
    /// Fails with [`StoreError::Corrupt`] if durable records are damaged; a torn tail is discarded.
    pub fn open(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovered), StoreError> {
        let (wal, recovery) = Wal::open_batches(dir, opts)?;
        Ok((wal, recovery.collect()?))
    }

    /// [`Wal::open`], the live tasks handed over a batch at a time: read again from the segments in id order
    /// (`stream.rs`), so that the log's live part is never in memory at once. Nothing may be written to the
    /// log until the batches are all taken.
    pub fn open_batches(dir: &Path, opts: WalOptions) -> Result<(Wal, Recovery), StoreError> {
        opts.validate().map_err(|msg| StoreError::Io {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, msg),
        })?;
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let started = std::time::Instant::now();
        let mut scan = match recovery::recover(dir, opts.max_results)? {
            Some(scan) => scan,
            None => {
                let header = SegmentHeader { index: 0, base_seq: 1, task_id_floor: 0 };
                // A new log's first segment is zero-filled right here (64 MiB: ~0.1 s), like every later one
                // in the background: see `segment::make_spare` for why zeros.
                let spare = segment::make_spare(dir, opts.segment_bytes, &Default::default(), false)
                    .map_err(|e| tracing::warn!("cannot zero-fill the first segment, allocating it: {e}"))
                    .ok();
                let (_, path) = segment::create_segment(dir, &header, opts.segment_bytes, None, spare)?;
                let meta = SegMeta { path, written: HEADER_LEN as u64, file_len: opts.segment_bytes };
                let mut scan = recovery::Scan { next_seq: 1, ..Default::default() };
                scan.live.max_results = opts.max_results;
                scan.segments.insert(0, meta);
                scan.live.add_segment(0);
                scan
            }
        };
        let Some((&index, meta)) = scan.segments.last_key_value() else {
            return Err(StoreError::Io { path: dir.to_owned(), source: io::Error::other("no segment after recovery") });
        };
        let path = meta.path.clone();
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
        let mut capacity = meta.file_len;
        if capacity < opts.segment_bytes {
            match segment::preallocate(&file, capacity, opts.segment_bytes - capacity, false) {
                Ok(()) => capacity = opts.segment_bytes,
                Err(e) => {
                    tracing::warn!(file = %path.display(), "cannot extend the newest segment: {e}")
                }
            }
        }
        // What recovery read may still be only in the page cache (after a process crash): make it durable
        // before new records claim that it is.
        file.sync_data().map_err(|e| StoreError::io(&path, e))?;
        segment::sync_dir(dir)?;
        let written = meta.written;
        if let Some(m) = scan.segments.get_mut(&index) {
            m.file_len = capacity;
        }
        scan.live.expire(now_unix_ms());
        scan.live.shrink_to_fit();
        // Where a long restart goes: reading and replaying the segments (then the shards' rebuild, reading
        // them again).
        tracing::info!(
            segments = scan.segments.len(),
            replay_ms = started.elapsed().as_millis() as u64,
            "log replayed"
        );
        let (idempotency, results) = kept(&mut scan);
        let max_task_id = scan.live.max_task_id;
        let live = Arc::new(RwLock::new(scan.live));
        let places = scan.segments.iter().map(|(i, m)| (*i, (m.path.clone(), m.written))).collect();
        let streaming = Arc::new(AtomicBool::new(true));
        let stream = stream::SegmentStream::new(live.clone(), dir.to_owned(), places, streaming.clone());
        let total = live.read().tasks.len();
        let recovered = Recovery { tasks: TaskBatches::new(total, stream), idempotency, max_task_id, results };
        let mut wal = Wal {
            dir: dir.to_owned(),
            opts,
            reader: Arc::new(reader::WalReader::new(dir.to_owned(), live.clone())),
            live,
            segments: scan.segments,
            active: Active {
                index,
                file,
                path,
                pos: written,
                capacity,
                dirty_end: 0,
                unsynced: false,
                written_back: written,
            },
            next_seq: scan.next_seq,
            durable_before: scan.next_seq,
            evidence_pending: false,
            poisoned: None,
            buf: Vec::with_capacity(64 << 10),
            sizes: Vec::new(),
            bg: segment::Background::default(),
            writeback: segment::Writeback::default(),
            compaction: None,
            streaming,
            draining: None,
            #[cfg(test)]
            faults: Faults::default(),
        };
        wal.bg.request_spare(dir, wal.opts.segment_bytes);
        Ok((wal, recovered))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.values().map(|m| m.path.clone()).collect()
    }

    fn usable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            None => Ok(()),
            Some(why) => Err(StoreError::Io {
                path: self.dir.clone(),
                source: io::Error::other(format!("store disabled after a failed fsync ({why}); restart to recover")),
            }),
        }
    }

    /// Encodes, places and writes `entries`, then applies them to the live set.
    fn write_entries(&mut self, entries: &[Entry<'_>]) -> Result<(), StoreError> {
        self.buf.clear();
        self.sizes.clear();
        for (i, entry) in entries.iter().enumerate() {
            let seq = self.next_seq + i as u64;
            let size = format::encode(&mut self.buf, seq, seq - self.durable_before, entry)?;
            if size > self.opts.max_record_bytes {
                return Err(StoreError::RecordTooLarge { len: size, max: self.opts.max_record_bytes });
            }
            self.sizes.push(size);
        }
        let total = self.buf.len() as u64;
        let fresh = self.opts.segment_bytes - HEADER_LEN as u64;
        if self.active.pos + total > self.active.capacity && total <= fresh {
            self.roll()?;
        }
        // Units: a Group and its records together, any other record alone. A unit never spans two segments.
        let mut unit_end = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            let end = match entries[i] {
                Entry::Group { count } if i + 1 + count as usize > entries.len() => {
                    let detail = format!("a group of {count} records with {} after it", entries.len() - i - 1);
                    return Err(StoreError::Io { path: self.dir.clone(), source: io::Error::other(detail) });
                }
                Entry::Group { count } => i + 1 + count as usize,
                _ => i + 1,
            };
            unit_end.extend(std::iter::repeat_n(end, end - i));
            i = end;
        }
        // Normally one chunk; a batch larger than a whole segment is spread over several.
        let (mut first, mut offset) = (0, 0);
        let mut rolled = false;
        while first < entries.len() {
            let room = self.active.capacity.saturating_sub(self.active.pos);
            let (mut last, mut bytes) = (first, 0u64);
            while last < entries.len() {
                let end = unit_end[last];
                let unit: u64 = self.sizes[last..end].iter().map(|&s| s as u64).sum();
                if bytes + unit > room {
                    break;
                }
                bytes += unit;
                last = end;
            }
            if last == first {
                if rolled {
                    // Not even an empty segment holds this unit.
                    let len = self.sizes[first..unit_end[first]].iter().sum();
                    return Err(StoreError::RecordTooLarge { len, max: fresh as usize });
                }
                self.roll()?;
                rolled = true;
                continue;
            }
            rolled = false;
            let at = self.active.pos;
            self.write_chunk(offset..offset + bytes as usize)?;
            let mut off = at;
            let mut live = self.live.write();
            for (entry, &size) in entries[first..last].iter().zip(&self.sizes[first..last]) {
                live.apply(entry, self.active.index, off, size as u64);
                off += size as u64;
            }
            drop(live);
            self.next_seq += (last - first) as u64;
            offset += bytes as usize;
            first = last;
        }
        self.live.write().trim();
        Ok(())
    }

    /// One `pwrite` of `buf[range]` at the end of the newest segment.
    fn write_chunk(&mut self, range: std::ops::Range<usize>) -> Result<(), StoreError> {
        let pos = self.active.pos;
        let end = pos + range.len() as u64;
        if self.active.dirty_end > end {
            self.clear_dirty(end)?;
        }
        let (written, result) = self.pwrite_buf(range, pos);
        match result {
            Ok(()) => {
                self.active.pos = end;
                self.active.dirty_end = 0;
                self.active.unsynced = true;
                metrics::counter!(crate::metrics::WAL_BYTES_WRITTEN).increment(end - pos);
                self.start_writeback();
                Ok(())
            }
            Err(e) => {
                self.active.dirty_end = self.active.dirty_end.max(pos + written as u64);
                if let Err(z) = self.clear_dirty(pos) {
                    tracing::warn!("cannot clear a failed write yet (the next write will): {z}");
                }
                Err(StoreError::io(&self.active.path, e))
            }
        }
    }

    fn pwrite_buf(&mut self, range: std::ops::Range<usize>, offset: u64) -> (usize, io::Result<()>) {
        let bytes = &self.buf[range];
        #[cfg(test)]
        if self.faults.fail_writes > 0 {
            self.faults.fail_writes -= 1;
            let n = self.faults.write_prefix.min(bytes.len());
            let (done, _) = segment::write_at(&self.active.file, &bytes[..n], offset);
            return (done, Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        segment::write_at(&self.active.file, bytes, offset)
    }

    /// Zeroes `[from, dirty_end)` of the newest segment: remains of a failed write that must never be read.
    fn clear_dirty(&mut self, from: u64) -> Result<(), StoreError> {
        if self.active.dirty_end <= from {
            return Ok(());
        }
        let zeros = vec![0u8; (self.active.dirty_end - from) as usize];
        #[cfg(test)]
        if self.faults.fail_writes > 0 {
            self.faults.fail_writes -= 1;
            return Err(StoreError::io(&self.active.path, io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        let (_, result) = segment::write_at(&self.active.file, &zeros, from);
        result.map_err(|e| StoreError::io(&self.active.path, e))?;
        self.active.dirty_end = from;
        self.active.unsynced = true;
        Ok(())
    }

    /// Seals the newest segment (no garbage past its end, synced) and starts the next one.
    fn roll(&mut self) -> Result<(), StoreError> {
        let pos = self.active.pos;
        self.clear_dirty(pos)?;
        self.sync_active()?;
        let index = self.active.index + 1;
        let header = SegmentHeader { index, base_seq: self.next_seq, task_id_floor: self.live.read().max_task_id };
        #[cfg(test)]
        let fail = self.faults.fail_create.take();
        #[cfg(not(test))]
        let fail = None;
        let spare = self.bg.take_spare();
        let (file, path) = segment::create_segment(&self.dir, &header, self.opts.segment_bytes, fail, spare)?;
        self.bg.request_spare(&self.dir, self.opts.segment_bytes);
        if let Some(old) = self.segments.get_mut(&self.active.index) {
            old.written = pos;
        }
        let meta = SegMeta { path: path.clone(), written: HEADER_LEN as u64, file_len: self.opts.segment_bytes };
        self.segments.insert(index, meta);
        self.live.write().add_segment(index);
        let capacity = self.opts.segment_bytes;
        let pos = HEADER_LEN as u64;
        self.active = Active { index, file, path, pos, capacity, dirty_end: 0, unsynced: false, written_back: 0 };
        Ok(())
    }

    /// Once `writeback_bytes` were written since the last sync (or the last request), asks the writeback
    /// thread to write them back. Never waits; the log's own syncs and their meaning are unchanged.
    fn start_writeback(&mut self) {
        let step = self.opts.writeback_bytes;
        let (from, to) = (self.active.written_back, self.active.pos);
        if step == 0 || to < from.saturating_add(step) || !self.writeback.request(&self.active.path) {
            return;
        }
        #[cfg(test)]
        self.faults.written_back.push(from..to);
        self.active.written_back = to;
    }

    /// `fdatasync` of the newest segment (older ones were synced when it was created).
    fn sync_active(&mut self) -> Result<(), StoreError> {
        if self.active.unsynced {
            #[cfg(test)]
            let result = if std::mem::take(&mut self.faults.fail_sync) {
                Err(io::Error::from_raw_os_error(libc::EIO))
            } else {
                self.active.file.sync_data()
            };
            #[cfg(not(test))]
            let result = self.active.file.sync_data();
            if let Err(e) = result {
                let err = StoreError::io(&self.active.path, e);
                self.poisoned = Some(err.to_string());
                return Err(err);
            }
            self.active.unsynced = false;
        }
        self.active.written_back = self.active.pos;
        self.durable_before = self.next_seq;
        Ok(())
    }
}

impl TaskStore for Wal {
    fn append(&mut self, records: &[Record]) -> Result<(), StoreError> {
        self.usable()?;
        if records.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry<'_>> = records.iter().map(Entry::from_record).collect();
        self.write_entries(&entries)?;
        self.evidence_pending = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        self.sync_active()
    }

    fn maintain(&mut self, now_unix_ms: u64) -> Result<Upkeep, StoreError> {
        self.usable()?;
        if self.streaming.load(Ordering::Acquire) {
            return Ok(Upkeep::Done); // the recovered tasks are still read from their segments
        }
        self.live.write().expire(now_unix_ms);
        self.delete_front()?;
        if self.opts.compact_live_ratio > 0.0 && self.compact_oldest()? {
            return Ok(Upkeep::Pending);
        }
        self.checkpoint()?;
        Ok(Upkeep::Done)
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            disk_bytes: self.segments.values().map(|m| m.file_len).sum(),
            segments: self.segments.len() as u64,
            live_tasks: self.live.read().tasks.len() as u64,
            results: self.live.read().results.len() as u64,
        }
    }

    fn body_reader(&self) -> Arc<dyn BodyReader> {
        self.reader.clone()
    }
}

/// The unexpired keys and kept results of a replayed log, as `open` returns them.
fn kept(scan: &mut recovery::Scan) -> (Vec<RecoveredIdem>, Vec<RecoveredResult>) {
    let live = &scan.live;
    let mut idempotency: Vec<RecoveredIdem> = live
        .keys
        .iter()
        .map(|(key, k)| RecoveredIdem { key: key.clone(), task_id: k.task_id, expires_unix_ms: k.expires_unix_ms })
        .collect();
    idempotency.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let result_bodies = &mut scan.result_bodies;
    let mut results: Vec<RecoveredResult> = live
        .results
        .iter()
        .map(|(&task_id, r)| RecoveredResult {
            task_id,
            expires_unix_ms: r.expires_unix_ms,
            body: result_bodies.remove(&task_id).unwrap_or_default(),
        })
        .collect();
    results.sort_unstable_by_key(|r| (r.expires_unix_ms, r.task_id));
    (idempotency, results)
}

/// Wall-clock time in ms since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
