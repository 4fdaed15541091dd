//! Space reclamation: deleting drained segments from the front, compacting a sparse oldest segment
//! forward, and the idle checkpoint.
//!
//! Why strictly from the front: an Ack tombstone in segment N cancels an Enqueue in an older segment. If
//! N were deleted while the older one still existed, recovery would bring the task back. Deleting oldest
//! first means a tombstone can only disappear after everything it refers to is gone. Compaction exists
//! because one long-lived task would otherwise pin its whole segment, and every later one behind it.

use std::io;
use std::path::Path;

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

    /// Copies the live items of the oldest segment to the head if it is sparse, then deletes it.
    pub(super) fn compact_oldest(&mut self) -> Result<(), StoreError> {
        let Some((&index, meta)) = self.segments.first_key_value() else {
            return Ok(());
        };
        let usage = self.live.usage(index);
        let used = meta.written.saturating_sub(HEADER_LEN as u64) as f64;
        if index == self.active.index || usage.items == 0 || usage.bytes as f64 >= self.opts.compact_live_ratio * used {
            return Ok(());
        }
        // When as many results are kept as allowed, the next finishes push out the ones that expire first. Those
        // of them in this segment are not copied forward: at a steady rate that re-wrote nearly every kept
        // result once per segment and stalled the log's commits. A segment that holds only such results is
        // left to drain; one that holds more forgets them and carries the rest.
        let full = self.live.max_results > 0 && self.live.results.len() >= self.live.max_results;
        let going = if full {
            let results_here = self.live.results.values().filter(|r| r.seg == index).count();
            let going = self.live.first_results(results_here);
            let going_here = self.live.results.iter().filter(|(id, r)| r.seg == index && going.contains(id)).count();
            if going_here as u64 == usage.items {
                return Ok(());
            }
            going
        } else {
            Default::default()
        };
        let path = meta.path.clone();
        let data = segment::read_all(&path)?;
        let end = (meta.written as usize).min(data.len());
        let mut carried = self.live_in(index, &data[..end], &path)?;
        carried.retain(|c| {
            if c.result.is_some() && going.contains(&c.task_id) {
                self.live.forget_result_now(c.task_id);
                false
            } else {
                true
            }
        });
        let entries: Vec<Entry<'_>> = carried.iter().map(Carried::entry).collect();
        self.write_entries(&entries)?;
        self.evidence_pending = true;
        self.sync_active()?;
        let left = self.live.usage(index);
        if left.items > 0 {
            tracing::warn!(
                segment = index,
                items = left.items,
                "compaction left live items behind; keeping the segment"
            );
            return Ok(());
        }
        tracing::debug!(segment = index, tasks = entries.len(), "compacted segment forward");
        self.delete_front()
    }

    /// The records of segment `index` that are the current home of a live task or key.
    fn live_in<'a>(&self, index: u64, data: &'a [u8], path: &Path) -> Result<Vec<Carried<'a>>, StoreError> {
        let mut out = Vec::new();
        let mut pos = HEADER_LEN;
        loop {
            let (entry, size) = match format::read_frame(data, pos) {
                Frame::End => return Ok(out),
                Frame::Bad(detail) => {
                    return Err(StoreError::Corrupt { path: path.to_owned(), offset: pos as u64, detail })
                }
                Frame::Record { entry, size, .. } => (entry, size),
            };
            let off = pos as u64;
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
