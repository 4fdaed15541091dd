//! Reading a live task's body back from the log, from any thread: the [`BodyReader`] of the WAL.
//!
//! The live set already knows where each live task's full record is (segment, offset, size): the Enqueue it
//! was written with, or the Snapshot compaction carried it forward as. A read looks that place up under the
//! live set's read lock, lets the lock go, and reads the record with one `pread` from a file descriptor
//! kept open per segment, through the page cache: a task written recently is still cached.
//!
//! Why this is safe while the commit thread keeps writing: a record, once written, never changes in place.
//! Compaction writes a *new* copy and moves the task's place in the live set before it retires the old
//! segment, and a retired segment is renamed, then unlinked, never reused. So a place read under the lock is
//! either still current or points into a segment whose old bytes are still there (a file descriptor opened
//! before the unlink still reads them). If the segment's file is already gone when the reader opens it, the
//! place is looked up again. Every read checks the record's CRC, type and task id, so a wrong place is an
//! error, never a wrong body. The descriptor of a retired segment is dropped ([`WalReader::forget`]) so that
//! its disk space is freed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::format::{self, Entry, Frame};
use super::live::LiveSet;
use super::segment::segment_name;
use crate::store::{BodyReader, StoreError};

/// How many times a read looks a task's place up again when its segment was retired in between.
const RELOOKUPS: usize = 3;

/// The WAL's body reader: shares the live set with the log, keeps a descriptor per segment it has read.
#[derive(Debug)]
pub(crate) struct WalReader {
    dir: PathBuf,
    live: Arc<RwLock<LiveSet>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl WalReader {
    pub(crate) fn new(dir: PathBuf, live: Arc<RwLock<LiveSet>>) -> Self {
        Self { dir, live, files: Mutex::new(HashMap::new()) }
    }

    /// Drops the descriptor of segment `index`, retired by the log (a read under way keeps its own).
    pub(crate) fn forget(&self, index: u64) {
        self.files.lock().remove(&index);
    }

    /// The open descriptor of segment `index`; `Ok(None)` if its file is gone (retired meanwhile).
    fn file(&self, index: u64) -> Result<Option<Arc<File>>, StoreError> {
        if let Some(f) = self.files.lock().get(&index) {
            return Ok(Some(f.clone()));
        }
        let path = self.dir.join(segment_name(index));
        match File::open(&path) {
            Ok(f) => {
                let f = Arc::new(f);
                self.files.lock().insert(index, f.clone());
                // Retired between the open and the insert: `forget` came first, so drop it here (the log
                // removes a segment from the live set before it forgets its descriptor).
                if !self.live.read().usage.contains_key(&index) {
                    self.forget(index);
                }
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }
}

impl BodyReader for WalReader {
    fn read_body(&self, task_id: u64) -> Result<Option<Bytes>, StoreError> {
        for _ in 0..RELOOKUPS {
            let Some((seg, off, size)) = self.live.read().tasks.get(task_id).map(|t| (t.seg(), t.off(), t.size()))
            else {
                return Ok(None);
            };
            let Some(file) = self.file(seg)? else { continue };
            let path = || self.dir.join(segment_name(seg));
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, off).map_err(|e| StoreError::io(path(), e))?;
            let corrupt = |detail: String| StoreError::Corrupt { path: path(), offset: off, detail };
            return match format::read_frame(&buf, 0) {
                Frame::Record { entry: Entry::Enqueue { task_id: id, body, .. }, .. }
                | Frame::Record { entry: Entry::Snapshot { task_id: id, body, .. }, .. }
                    if id == task_id =>
                {
                    // The body is the record's tail: keep the one buffer, cut to it.
                    let start = buf.len() - body.len();
                    Ok(Some(Bytes::from(buf).slice(start..)))
                }
                Frame::Record { .. } => Err(corrupt(format!("the record at task {task_id}'s place is another one"))),
                Frame::End => Err(corrupt(format!("no record at task {task_id}'s place"))),
                Frame::Bad(detail) => Err(corrupt(format!("task {task_id}'s record: {detail}"))),
            };
        }
        Err(StoreError::Io {
            path: self.dir.clone(),
            source: io::Error::other(format!("task {task_id}'s segment kept being retired while it was read")),
        })
    }
}
