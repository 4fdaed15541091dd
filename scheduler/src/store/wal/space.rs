//! Space reclamation: deleting drained segments from the front, compacting a sparse oldest segment
//! forward, and the idle checkpoint.
//!
//! Why strictly from the front: an Ack tombstone in segment N cancels an Enqueue in an older segment. If
//! N were deleted while the older one still existed, recovery would bring the task back. Deleting oldest
//! first means a tombstone can only disappear after everything it refers to is gone. Compaction exists
//! because one long-lived task would otherwise pin its whole segment, and every later one behind it.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::compaction::{Carried, Compaction};
use super::format::{self, Entry, Frame, HEADER_LEN};
use super::{segment, Wal};
use crate::store::StoreError;

impl Wal {
    /// Deletes segments from the front while they hold nothing live (never the newest).
    pub(super) fn delete_front(&mut self) -> Result<(), StoreError> {
        let mut deleted = false;
        let mut retired = Vec::new();
        while let Some((&index, meta)) = self.segments.first_key_value() {
            if index == self.active.index || self.live.read().usage(index).items > 0 {
                break;
            }
            match segment::retire(&meta.path) {
                Ok(dead) => retired.push(dead),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&meta.path, e)),
            }
            self.segments.remove(&index);
            self.live.write().usage.remove(&index);
            self.reader.forget(index);
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
                self.live.write().forget_result_now(id);
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
        let left = self.live.read().usage(index);
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
        let live = self.live.read();
        let usage = live.usage(index);
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
        let full = live.max_results > 0 && live.results.len() >= live.max_results;
        let going = if full { live.going_bound(usage.results as usize) } else { None };
        drop(live);
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
        let live = self.live.read();
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
                    let home = live.results.get(&task_id).is_some_and(|r| r.seg == index && r.off == off);
                    if home {
                        out.push(Carried { task_id, task: None, key: None, result: Some((expires_unix_ms, body)) });
                    }
                    continue;
                }
                _ => continue,
            };
            let task = body.and_then(|body| {
                let t = live.tasks.get(task_id).filter(|t| t.seg() == index && t.off() == off)?;
                Some((t.attempts, live.dead.get(&task_id).map(|r| String::from(&**r)), body))
            });
            let key = idem.and_then(|k| {
                let l = live.keys.get(k.key).filter(|l| l.seg == index && l.off == off)?;
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

/// A segment left to drain (it holds only results pushed out soon) is looked at again after this long.
const DRAIN_RECHECK: Duration = Duration::from_secs(10);
/// Most time one call of [`Wal::compact_oldest`] spends on slices (it always does one).
const COMPACT_BUDGET: Duration = Duration::from_micros(500);
