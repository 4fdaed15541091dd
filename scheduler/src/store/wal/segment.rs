//! Segment files: names, creation with real block preallocation, positioned writes, directory sync.
//!
//! A segment is created under a temporary name, given all its blocks, stamped with its header, synced,
//! and only then renamed into place (and the directory synced). So every `wal-*.log` that exists has a
//! complete header and all its space: a full disk is reported when a segment is created, never in the
//! middle of a batch, and a crash during creation leaves only a `.tmp` file that the next open removes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::FallocateFlags;

use super::format::SegmentHeader;
use crate::store::StoreError;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".log";
const TMP_SUFFIX: &str = ".log.tmp";
const DEAD_SUFFIX: &str = ".log.dead";

/// `wal-<20-digit index>.log`: lexical order is index order.
pub(crate) fn segment_name(index: u64) -> String {
    format!("{PREFIX}{index:020}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of `dir` in index order. Leftover `.tmp` files of an interrupted creation are removed.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) && name.ends_with(TMP_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "removing unfinished segment");
            remove_leftover(&entry.path())?;
        } else if name.starts_with(PREFIX) && name.ends_with(DEAD_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "removing retired segment");
            remove_leftover(&entry.path())?;
        } else if let Some(index) = parse_name(name) {
            found.push((index, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(i, _)| *i);
    Ok(found)
}

/// Removes a leftover file; one already gone (a background thread of an earlier handle got there first) is fine.
fn remove_leftover(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// Retires a drained segment: renames it out of the log (a cheap metadata change, so the segment is gone
/// for recovery once the directory is synced) and returns the new path for [`Reaper::unlink`]. Unlinking a
/// 64 MiB file inline cost the commit thread ~70 ms (freeing its blocks), a stall every submit behind it saw.
pub(crate) fn retire(path: &Path) -> io::Result<PathBuf> {
    let mut dead = path.as_os_str().to_owned();
    dead.push(".dead");
    let dead = PathBuf::from(dead);
    fs::rename(path, &dead)?;
    Ok(dead)
}

/// Disk chores kept off the commit thread, one at a time on a thread of their own (`pm-wal-bg`), so they
/// never run concurrently with each other: unlinking retired segments, and zero-filling the *spare* that the
/// next roll turns into a segment. Files it leaves behind when the process ends are removed by the next
/// [`list_segments`].
#[derive(Debug, Default)]
pub(crate) struct Background {
    tx: Option<crossbeam_channel::Sender<Chore>>,
    /// Prepared spares (or why preparing one failed).
    ready_rx: Option<crossbeam_channel::Receiver<io::Result<PathBuf>>>,
    ready_tx: Option<crossbeam_channel::Sender<io::Result<PathBuf>>>,
    /// A spare was asked for and has not been taken.
    spare_requested: bool,
    /// Tells the thread to drop an unfinished spare when the log is closed.
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug)]
enum Chore {
    Unlink(PathBuf),
    Spare { dir: PathBuf, size: u64 },
}

impl Background {
    fn send(&mut self, chore: Chore) -> Result<(), Chore> {
        if self.tx.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<Chore>();
            let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
            let (done, closed) = (ready_tx.clone(), self.closed.clone());
            let spawned = std::thread::Builder::new().name("pm-wal-bg".into()).spawn(move || {
                for chore in rx {
                    match chore {
                        Chore::Unlink(path) => {
                            if let Err(e) = shrink_then_unlink(&path) {
                                tracing::warn!(file = %path.display(), "could not remove a retired segment: {e}");
                            }
                        }
                        Chore::Spare { dir, size } => {
                            let _ = done.send(make_spare(&dir, size, &closed, true));
                        }
                    }
                }
            });
            if spawned.is_ok() {
                self.tx = Some(tx);
                self.ready_rx = Some(ready_rx);
                self.ready_tx = Some(ready_tx);
            }
        }
        match &self.tx {
            Some(tx) => tx.send(chore).map_err(|e| e.into_inner()),
            None => Err(chore),
        }
    }

    /// Queues `path` for unlinking (inline if the thread cannot be started).
    pub(crate) fn unlink(&mut self, path: PathBuf) {
        if let Err(Chore::Unlink(path)) = self.send(Chore::Unlink(path)) {
            let _ = fs::remove_file(path);
        }
    }

    /// Asks for a zero-filled spare of `size` bytes in `dir`, unless one is already on its way.
    pub(crate) fn request_spare(&mut self, dir: &Path, size: u64) {
        if !self.spare_requested && self.send(Chore::Spare { dir: dir.to_owned(), size }).is_ok() {
            self.spare_requested = true;
        }
    }

    /// A finished spare, if one is ready now (never waits).
    pub(crate) fn take_spare(&mut self) -> Option<PathBuf> {
        let ready = self.ready_rx.as_ref()?.try_recv().ok()?;
        self.spare_requested = false;
        match ready {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!("could not prepare a spare segment (the next one is allocated inline): {e}");
                None
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        // An unused spare is of no use to anyone else.
        if let Some(rx) = &self.ready_rx {
            while let Ok(Ok(path)) = rx.try_recv() {
                let _ = fs::remove_file(path);
            }
        }
        drop(self.ready_tx.take());
    }
}

/// Writes back the newest segment's unsynced pages on a thread of its own (`pm-wal-flush`) when the log
/// asks (see `WalOptions::writeback_bytes`), so the sync that later seals the segment finds little left to
/// write. It is an `fdatasync` through an open file of its own: the commit thread never waits for it and
/// never counts on it. A write error it meets is still reported to the log's own next sync, which goes
/// through another open file description (Linux reports a writeback error once to each).
#[derive(Debug, Default)]
pub(crate) struct Writeback {
    tx: Option<crossbeam_channel::Sender<PathBuf>>,
    /// A request is queued or running; further ones are dropped until it ends (one covers them all).
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The thread could not be started: the log goes on without early writeback.
    unavailable: bool,
}

impl Writeback {
    /// Asks for the unsynced pages of `path` to be written back. False if a request is still running (or
    /// the thread cannot be started): the caller asks again later.
    pub(crate) fn request(&mut self, path: &Path) -> bool {
        use std::sync::atomic::Ordering;
        if self.unavailable {
            return false;
        }
        if self.tx.is_none() {
            let (tx, rx) = crossbeam_channel::unbounded::<PathBuf>();
            let busy = self.busy.clone();
            let spawned = std::thread::Builder::new().name("pm-wal-flush".into()).spawn(move || {
                // Opened per request and closed after it: a held file would keep a retired segment's inode.
                for path in rx {
                    if let Err(e) = File::open(&path).and_then(|file| file.sync_data()) {
                        tracing::debug!(file = %path.display(), "early writeback failed: {e}");
                    }
                    busy.store(false, Ordering::Release);
                }
            });
            match spawned {
                Ok(_) => self.tx = Some(tx),
                Err(e) => {
                    tracing::warn!("cannot start the WAL writeback thread (going on without it): {e}");
                    self.unavailable = true;
                    return false;
                }
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        match &self.tx {
            Some(tx) if tx.send(path.to_owned()).is_ok() => true,
            _ => {
                self.busy.store(false, Ordering::Release);
                false
            }
        }
    }
}

/// Zero-filled per step by [`make_spare`], each step synced.
const SPARE_STEP: usize = 256 << 10;
/// Pause between two steps of a background spare, leaving the device to the log's own syncs.
const SPARE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Writes a spare segment file of `size` zero bytes under a temporary name, synced, and returns its path.
///
/// Why zeros and not `fallocate`: `fallocate` leaves *unwritten* extents, and then every `fdatasync` of the log
/// also converts the extents it wrote into. Measured on this disk (ext4): 0.197 ms vs 0.135 ms median per
/// `fdatasync` after a 4 KiB write into `fallocate`d vs zero-filled blocks; end to end at 20 k tasks/s the
/// median latency fell from 1.34 to 1.17 ms and the p99 from 2.66 to 2.53 ms (docs/notes/wal-segments.md). Writing
/// the zeros in synced steps keeps each step's hold on the device short.
pub(crate) fn make_spare(
    dir: &Path,
    size: u64,
    closed: &std::sync::atomic::AtomicBool,
    pace: bool,
) -> io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{PREFIX}spare-{}-{n}{TMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let zeros = vec![0u8; SPARE_STEP];
        let mut at = 0u64;
        while at < size {
            if closed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(io::Error::other("the log was closed"));
            }
            let n = (size - at).min(SPARE_STEP as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            file.sync_data()?;
            at += n as u64;
            if pace {
                std::thread::sleep(SPARE_PAUSE);
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Blocks freed per step by [`shrink_then_unlink`].
const SHRINK_STEP: u64 = 1 << 20;
/// Pause between two steps.
const SHRINK_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Frees a retired segment's blocks a little at a time, then unlinks it.
///
/// On a filesystem mounted with `discard` (common on cloud disks), freeing 64 MiB at once sends one large
/// discard that holds the device queue: the commit thread's `fdatasync` waited ~65 ms behind it. Freeing
/// 1 MiB per step keeps each such wait near a millisecond.
fn shrink_then_unlink(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > 0 {
        len = len.saturating_sub(SHRINK_STEP);
        file.set_len(len)?;
        std::thread::sleep(SHRINK_PAUSE);
    }
    drop(file);
    fs::remove_file(path)
}

/// Creates segment `header.index` of `size` bytes, fully allocated, header written and synced.
///
/// Takes a zero-filled `spare` of `size` bytes (see [`Background::request_spare`]) instead of allocating when
/// one is given and usable; the spare is consumed either way. On failure nothing is left behind. `fail` is a
/// test hook standing in for a failing `fallocate`.
pub(crate) fn create_segment(
    dir: &Path,
    header: &SegmentHeader,
    size: u64,
    fail: Option<i32>,
    spare: Option<PathBuf>,
) -> Result<(File, PathBuf), StoreError> {
    let path = dir.join(segment_name(header.index));
    if header.index > MAX_SEGMENT_INDEX {
        // The live set keeps a task's place in 32 bits (`live.rs`). At the default segment size this is
        // 256 PiB of log; at the smallest, 16 TiB.
        let e = io::Error::other(format!("segment index {} is beyond the log's limit of 2^32 - 1", header.index));
        return Err(StoreError::io(dir, e));
    }
    if let (Some(spare), None) = (&spare, fail) {
        let installed = (|| {
            let file = OpenOptions::new().read(true).write(true).open(spare)?;
            if file.metadata()?.len() != size {
                return Err(io::Error::other("spare has the wrong size"));
            }
            file.write_all_at(&header.encode(), 0)?;
            file.sync_data()?;
            fs::rename(spare, &path)?;
            Ok(file)
        })();
        match installed {
            Ok(file) => {
                sync_dir(dir)?;
                return Ok((file, path));
            }
            Err(e) => tracing::warn!(file = %spare.display(), "spare segment unusable, allocating: {e}"),
        }
    }
    if let Some(spare) = spare {
        let _ = fs::remove_file(spare);
    }
    let tmp = dir.join(format!("{PREFIX}{:020}{TMP_SUFFIX}", header.index));
    let result = (|| {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        if let Some(code) = fail {
            return Err(io::Error::from_raw_os_error(code));
        }
        preallocate(&file, 0, size, false)?;
        file.write_all_at(&header.encode(), 0)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(file)
    })();
    match result {
        Ok(file) => {
            sync_dir(dir)?;
            Ok((file, path))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(StoreError::io(&path, e))
        }
    }
}

/// Gives `file` real blocks for `[from, from + len)` (`fallocate`, mode 0), or writes zeros where the
/// filesystem cannot allocate (`force_zero_fill` makes tests take that path).
pub(crate) fn preallocate(file: &File, from: u64, len: u64, force_zero_fill: bool) -> io::Result<()> {
    if !force_zero_fill {
        match rustix::fs::fallocate(file, FallocateFlags::empty(), from, len) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < from + len {
        let n = (from + len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// `pwrite`s all of `bytes` at `offset`; returns how many bytes reached the file even when it fails.
pub(crate) fn write_at(file: &File, bytes: &[u8], offset: u64) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match file.write_at(&bytes[done..], offset + done as u64) {
            Ok(0) => return (done, Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// Reads a whole segment into memory (recovery and compaction read segments front to back anyway).
pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(|e| StoreError::io(path, e))
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

/// Smallest segment accepted by [`super::WalOptions::validate`].
pub(crate) const MIN_SEGMENT_BYTES: u64 = 4096;

/// Largest segment accepted by [`super::WalOptions::validate`]: offsets in a segment are kept in 32 bits.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// Highest segment index the log starts: segment indices are kept in 32 bits.
pub(crate) const MAX_SEGMENT_INDEX: u64 = u32::MAX as u64;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(segment_name(42), "wal-00000000000000000042.log");
        assert_eq!(parse_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("wal-42.log"), None);
        assert_eq!(parse_name("wal-0000000000000000004x.log"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn both_preallocation_paths_allocate_blocks() {
        let dir = tempfile::tempdir().unwrap();
        for (i, zero_fill) in [false, true].into_iter().enumerate() {
            let file = File::create(dir.path().join(format!("f{i}"))).unwrap();
            preallocate(&file, 0, 3 << 20, zero_fill).unwrap();
            let meta = file.metadata().unwrap();
            assert_eq!(meta.len(), 3 << 20);
            assert!(meta.blocks() * 512 >= 3 << 20, "zero_fill={zero_fill}: {} blocks", meta.blocks());
        }
    }

    #[test]
    fn creation_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let h = SegmentHeader { index: 5, base_seq: 1, task_id_floor: 0 };
        let err = create_segment(dir.path(), &h, 1 << 16, Some(libc::ENOSPC), None).unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let (_, path) = create_segment(dir.path(), &h, 1 << 16, None, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 1 << 16);
        assert_eq!(SegmentHeader::decode(&fs::read(&path).unwrap()), Ok(h));
        fs::write(dir.path().join("wal-00000000000000000006.log.tmp"), b"x").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![(5, path)]);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "tmp file removed");
    }

    #[test]
    fn a_background_spare_becomes_the_next_segment_zeros_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut bg = Background::default();
        bg.request_spare(dir.path(), 1 << 20);
        bg.request_spare(dir.path(), 1 << 20); // one on its way is enough
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let spare = loop {
            if let Some(spare) = bg.take_spare() {
                break spare;
            }
            assert!(std::time::Instant::now() < deadline, "no spare was prepared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "exactly one spare");
        let h = SegmentHeader { index: 3, base_seq: 9, task_id_floor: 7 };
        let (_, path) = create_segment(dir.path(), &h, 1 << 20, None, Some(spare.clone())).unwrap();
        assert!(!spare.exists());
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert!(bytes[super::super::format::HEADER_LEN..].iter().all(|&b| b == 0), "the rest is zeros");
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 >= 1 << 20, "written blocks, not a sparse file");
        // A spare of the wrong size is refused and the segment is allocated instead.
        let odd = dir.path().join("odd");
        fs::write(&odd, b"short").unwrap();
        let h4 = SegmentHeader { index: 4, base_seq: 10, task_id_floor: 7 };
        let (_, path4) = create_segment(dir.path(), &h4, 1 << 20, None, Some(odd.clone())).unwrap();
        assert!(!odd.exists());
        assert_eq!(fs::metadata(&path4).unwrap().len(), 1 << 20);
    }
}
