//! Space reclamation: deleting drained segments from the front, compacting a sparse oldest segment
//! forward, and the idle checkpoint.
//!
//! Why strictly from the front: an Ack tombstone in segment N cancels an Enqueue in an older segment. If
//! N were deleted while the older one still existed, recovery would bring the task back. Deleting oldest
//! first means a tombstone can only disappear after everything it refers to is gone. Compaction exists
//! because one long-lived task would otherwise pin its whole segment, and every later one behind it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::format::{self, Entry, Frame, IdemRef, HEADER_LEN};
use super::{segment, Wal};
use crate::store::StoreError;

impl Wal {
    /// Deletes segments from the front while they hold nothing live (never the newest).
    pub(super) fn delete_front(&mut self) -> Result<(), StoreError> {
        let mut deleted = false;
        let mut retired = Vec::new();
        while let Some((&index, meta)) = self.segments.first_key_value() {
            if index == self.active.index || self.live.usage(index).items > 0 {
                break;
            }
            match segment::retire(&meta.path) {
                Ok(dead) => retired.push(dead),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&meta.path, e)),
            }
            self.segments.remove(&index);
            self.live.usage.remove(&index);
            deleted = true;
        }
        if deleted {
            segment::sync_dir(&self.dir)?;
        }
        for dead in retired {
            self.bg.unlink(dead);
        }
        Ok(())
    }

    /// Compacts the oldest segment forward if it is sparse: its live items are copied to the head a slice
    /// at a time (see [`Compaction`]), then the segment is deleted. Returns whether slices remain.
    ///
    /// A slice is at most [`COMPACT_SLICE`] bytes of the old segment, and one call works through slices for at
    /// most [`COMPACT_BUDGET`]: the commit thread runs a call between two groups, so commits never wait for a
    /// whole segment's read (64 MiB read, checked and looked up in one go held every commit for 13–33 ms).
    pub(super) fn compact_oldest(&mut self) -> Result<bool, StoreError> {
        let Some((&index, meta)) = self.segments.first_key_value() else {
            self.compaction = None;
            return Ok(false);
        };
        let (end, path) = (meta.written, meta.path.clone());
        if self.compaction.as_ref().is_some_and(|c| c.index != index) {
            // Its segment drained and was deleted by `delete_front` meanwhile.
            self.compaction = None;
        }
        if self.compaction.is_none() {
            let Some(c) = self.start_compaction(index)? else {
                return Ok(false);
            };
            self.compaction = Some(c);
        }
        let started = Instant::now();
        loop {
            let Some(c) = self.compaction.as_mut() else {
                return Ok(false);
            };
            let done = c.read_slice(end, &path)?;
            let mut buf = std::mem::take(&mut c.buf);
            let base = c.pos;
            let (mut carried, consumed, finished) = self.live_in(index, &buf, base, end, &path)?;
            let going = self.compaction.as_ref().and_then(|c| c.going);
            let mut forget = Vec::new();
            carried.retain(|c| {
                let push_out =
                    matches!((&c.result, going), (Some((exp, _)), Some(bound)) if (*exp, c.task_id) <= bound);
                if push_out {
                    forget.push(c.task_id);
                }
                !push_out
            });
            for id in forget {
                self.live.forget_result_now(id);
            }
            let entries: Vec<Entry<'_>> = carried.iter().map(Carried::entry).collect();
            let written = entries.len();
            if written > 0 {
                self.write_entries(&entries)?;
                self.evidence_pending = true;
            }
            drop(entries);
            drop(carried);
            buf.clear();
            let Some(c) = self.compaction.as_mut() else {
                return Ok(false);
            };
            c.buf = buf;
            if consumed == 0 && !finished && !done {
                // `read_slice` reads at least the whole next record, so this is a record that is not whole.
                let detail = "a record cut short inside the segment".to_string();
                return Err(StoreError::Corrupt { path, offset: c.pos, detail });
            }
            c.pos += consumed as u64;
            c.carried += written;
            if finished || done {
                break;
            }
            #[cfg(test)]
            let budget_spent = self.faults.one_slice || started.elapsed() >= COMPACT_BUDGET;
            #[cfg(not(test))]
            let budget_spent = started.elapsed() >= COMPACT_BUDGET;
            if budget_spent {
                return Ok(true);
            }
        }
        let carried = self.compaction.take().map_or(0, |c| c.carried);
        self.sync_active()?;
        let left = self.live.usage(index);
        if left.items > 0 {
            tracing::warn!(
                segment = index,
                items = left.items,
                "compaction left live items behind; keeping the segment"
            );
            return Ok(false);
        }
        tracing::debug!(segment = index, carried, "compacted segment forward");
        self.delete_front()?;
        Ok(false)
    }

    /// Decides whether segment `index` (the oldest) is worth compacting now, and what it need not carry.
    fn start_compaction(&mut self, index: u64) -> Result<Option<Compaction>, StoreError> {
        if self.draining.is_some_and(|(i, since)| i == index && since.elapsed() < DRAIN_RECHECK) {
            return Ok(None);
        }
        let Some(meta) = self.segments.get(&index) else {
            return Ok(None);
        };
        let usage = self.live.usage(index);
        let used = meta.written.saturating_sub(HEADER_LEN as u64) as f64;
        if index == self.active.index || usage.items == 0 || usage.bytes as f64 >= self.opts.compact_live_ratio * used {
            return Ok(None);
        }
        // When as many results are kept as allowed, the next finishes push out the ones that expire first. Those
        // of them in this segment are not copied forward: at a steady rate that re-wrote nearly every kept
        // result once per segment and stalled the log's commits. A segment that holds only such results is
        // left to drain; one that holds more forgets them and carries the rest.
        // The segment's own counts tell how many results it holds and the latest of them, so no kept result is
        // walked here.
        let full = self.live.max_results > 0 && self.live.results.len() >= self.live.max_results;
        let going = if full { self.live.going_bound(usage.results as usize) } else { None };
        if usage.items == usage.results && going.is_some_and(|bound| usage.newest_result <= bound) {
            self.draining = Some((index, Instant::now()));
            return Ok(None);
        }
        let file = File::open(&meta.path).map_err(|e| StoreError::io(&meta.path, e))?;
        Ok(Some(Compaction { index, file, pos: HEADER_LEN as u64, buf: Vec::new(), going, carried: 0 }))
    }

    /// The records of `data` (segment `index` from file offset `base`, which ends at `end`) that are the
    /// current home of a live task, key or result; then how many bytes of `data` were whole records, and
    /// whether the segment's records end inside `data`.
    fn live_in<'a>(
        &self,
        index: u64,
        data: &'a [u8],
        base: u64,
        end: u64,
        path: &Path,
    ) -> Result<(Vec<Carried<'a>>, usize, bool), StoreError> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let in_file = base + pos as u64;
            if in_file >= end {
                return Ok((out, pos, true));
            }
            // A record cut by the slice's end is read whole by the next slice.
            match format::frame_len(data, pos) {
                Some(len) if pos + len > data.len() && in_file + len as u64 <= end => return Ok((out, pos, false)),
                None if data.len() - pos < 4 && in_file + 4 <= end => return Ok((out, pos, false)),
                _ => {}
            }
            let (entry, size) = match format::read_frame(data, pos) {
                Frame::End => return Ok((out, pos, true)),
                Frame::Bad(detail) => {
                    return Err(StoreError::Corrupt { path: path.to_owned(), offset: in_file, detail })
                }
                Frame::Record { entry, size, .. } => (entry, size),
            };
            let off = in_file;
            pos += size;
            let (task_id, idem, body) = match entry {
                Entry::Enqueue { task_id, idem, body } | Entry::Snapshot { task_id, idem, body, .. } => {
                    (task_id, idem, Some(body))
                }
                Entry::KeyCarry { task_id, idem } => (task_id, Some(idem), None),
                Entry::Finish { task_id, expires_unix_ms, body } => {
                    let home = self.live.results.get(&task_id).is_some_and(|r| r.seg == index && r.off == off);
                    if home {
                        out.push(Carried { task_id, task: None, key: None, result: Some((expires_unix_ms, body)) });
                    }
                    continue;
                }
                _ => continue,
            };
            let task = body.and_then(|body| {
                let t = self.live.tasks.get(&task_id).filter(|t| t.seg == index && t.off == off)?;
                Some((t.attempts, t.dead.as_deref().map(String::from), body))
            });
            let key = idem.and_then(|k| {
                let l = self.live.keys.get(k.key).filter(|l| l.seg == index && l.off == off)?;
                Some((k.key, l.expires_unix_ms, l.task_id))
            });
            if task.is_some() || key.is_some() {
                out.push(Carried { task_id, task, key, result: None });
            }
        }
    }

    /// When idle and fully synced, writes a Checkpoint so the last synced records are proven durable
    /// (otherwise damage to them would look like a torn tail; see [`recovery`]).
    pub(super) fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.evidence_pending || self.active.unsynced || self.durable_before != self.next_seq {
            return Ok(());
        }
        self.write_entries(&[Entry::Checkpoint])?;
        self.sync_active()?;
        self.evidence_pending = false;
        Ok(())
    }
}

/// Most bytes of the old segment read and carried in one slice of a compaction.
pub(super) const COMPACT_SLICE: usize = 256 << 10;
/// A segment left to drain (it holds only results pushed out soon) is looked at again after this long.
const DRAIN_RECHECK: Duration = Duration::from_secs(10);
/// Most time one call of [`Wal::compact_oldest`] spends on slices (it always does one).
const COMPACT_BUDGET: Duration = Duration::from_micros(500);

/// A compaction of the oldest segment under way: it is read and carried forward a slice at a time, between
/// commits. Crash safety is as for a compaction in one go: carried records are newer copies, recovery keeps
/// the newest, and the old segment is deleted only after the carried ones are synced.
pub(super) struct Compaction {
    /// The segment being compacted.
    index: u64,
    file: File,
    /// File offset of the next record to read.
    pos: u64,
    /// The current slice (reused).
    buf: Vec<u8>,
    /// Results up to this (expiry, task id) are pushed out soon: not carried (see [`Wal::start_compaction`]).
    going: Option<(u64, u64)>,
    /// Records carried so far.
    carried: usize,
}

impl std::fmt::Debug for Compaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compaction").field("index", &self.index).field("pos", &self.pos).finish_non_exhaustive()
    }
}

impl Compaction {
    /// Reads the next slice from `pos` into `buf`: [`COMPACT_SLICE`] bytes, or a whole record if one is larger,
    /// never past `end`. Returns whether nothing is left to read.
    fn read_slice(&mut self, end: u64, path: &Path) -> Result<bool, StoreError> {
        if self.pos >= end {
            self.buf.clear();
            return Ok(true);
        }
        let mut want = COMPACT_SLICE.min((end - self.pos) as usize);
        let mut prefix = [0u8; 4];
        if self.file.read_exact_at(&mut prefix, self.pos).is_ok() {
            let len = u32::from_le_bytes(prefix) as usize + format::FRAME_PREFIX;
            want = want.max(len.min((end - self.pos) as usize));
        }
        self.buf.resize(want, 0);
        self.file.read_exact_at(&mut self.buf, self.pos).map_err(|e| StoreError::io(path, e))?;
        Ok(false)
    }
}

/// A live task and/or key found in a segment being compacted.
struct Carried<'a> {
    task_id: u64,
    /// Attempts, dead reason and body, if the record is the task's current home.
    task: Option<(u32, Option<String>, &'a [u8])>,
    /// Key, expiry and its task, if the record is the key's current home.
    key: Option<(&'a str, u64, u64)>,
    /// Expiry and outcome, if the record is a kept result's current home.
    result: Option<(u64, &'a [u8])>,
}

impl Carried<'_> {
    fn entry(&self) -> Entry<'_> {
        let idem = self.key.map(|(key, expires_unix_ms, _)| IdemRef { key, expires_unix_ms });
        if let Some((expires_unix_ms, body)) = self.result {
            return Entry::Finish { task_id: self.task_id, expires_unix_ms, body };
        }
        match (&self.task, self.key, idem) {
            (Some((attempts, dead, body)), _, _) => {
                Entry::Snapshot { task_id: self.task_id, attempts: *attempts, dead: dead.as_deref(), idem, body }
            }
            (None, Some((_, _, task_id)), Some(idem)) => Entry::KeyCarry { task_id, idem },
            _ => Entry::Checkpoint,
        }
    }
}
