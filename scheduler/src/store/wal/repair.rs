//! Repairing a log that refuses to open: keep every record before the damage, set aside everything after.
//!
//! Recovery refuses to open a log when a record that had been synced is damaged
//! ([`StoreError::Corrupt`], naming the file and offset; see `recovery.rs`). Nothing after that point can be
//! replayed: records chain by `seq`, so the records after a missing one (the rest of its segment, and every
//! later segment) describe a history with a hole in it. [`inspect`] finds the damage and says what a repair
//! would set aside; [`repair`] does it:
//!
//! - the damaged segment is copied whole into the backup directory, then zeroed from the damaged offset on
//!   (a damaged header, offset below [`HEADER_LEN`], moves the whole segment instead);
//! - every later segment is moved into the backup directory;
//! - task ids never repeat: when the records set aside name task ids above the largest one kept, a new,
//!   empty segment is started whose header carries that id as its floor, so new tasks are numbered above;
//! - the log is read again, as a start would, and must open.
//!
//! What that loses is what those records said: tasks submitted there (acknowledged to their producers) are
//! gone, and acks, outcomes and cancellations recorded there are forgotten, so those tasks run again
//! (at-least-once). Nothing is deleted: the backup keeps every byte that was set aside.
//!
//! The one damage it cannot repair is the header of the oldest segment: nothing before it can be kept, and
//! without it the log does not know which task ids were used (new ones could repeat them).

use std::fs;
use std::path::{Path, PathBuf};

use super::format::{self, Entry, Frame, SegmentHeader, HEADER_LEN};
use super::{recovery, segment};
use crate::store::StoreError;

/// Size of a segment's header: damage below this offset sets the whole segment aside.
pub const HEADER_BYTES: u64 = HEADER_LEN as u64;

/// The damage recovery found, and what a repair would set aside.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    /// The damaged segment.
    pub path: PathBuf,
    /// Where its records stop being usable.
    pub offset: u64,
    /// What recovery found wrong.
    pub detail: String,
    /// Bytes of the damaged segment from `offset` up to its last non-zero byte (what the zeroing discards).
    pub tail_bytes: u64,
    /// Later segments, which follow the damage and are set aside whole.
    pub later: Vec<PathBuf>,
    /// The damage is in the header of the oldest segment: there is nothing before it to keep.
    pub oldest_header: bool,
}

/// Errors of a repair.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading or writing the log failed, or it still does not open after the repair.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The oldest segment's header is damaged: nothing can be kept.
    #[error(
        "the header of the oldest segment {0} is damaged: nothing before it can be kept, and the task ids in use \
         are unknown; move the whole log directory aside to start an empty one"
    )]
    NothingToKeep(PathBuf),
}

/// Reads the log in `dir` as a start would (a torn tail is discarded, as at every start): `None` when it
/// opens, else the damage and what a repair would set aside.
pub fn inspect(dir: &Path) -> Result<Option<Damage>, StoreError> {
    let (path, offset, detail) = match recovery::recover(dir, 0) {
        Ok(_) => return Ok(None),
        Err(StoreError::Corrupt { path, offset, detail }) => (path, offset, detail),
        Err(e) => return Err(e),
    };
    let segments = segment::list_segments(dir)?;
    let at = segments.iter().position(|(_, p)| *p == path);
    let later = at.map(|i| segments[i + 1..].iter().map(|(_, p)| p.clone()).collect()).unwrap_or_default();
    let data = segment::read_all(&path)?;
    let from = (offset as usize).min(data.len());
    let tail_bytes = data[from..].iter().rposition(|&b| b != 0).map_or(0, |last| last as u64 + 1);
    let oldest_header = at == Some(0) && offset < HEADER_LEN as u64;
    Ok(Some(Damage { path, offset, detail, tail_bytes, later, oldest_header }))
}

/// Sets aside what `damage` names into `backup` (created; on the same filesystem as the log, so segments
/// are moved, not copied), then checks that the log opens. See the module doc.
pub fn repair(dir: &Path, damage: &Damage, backup: &Path) -> Result<(), RepairError> {
    if damage.oldest_header {
        return Err(RepairError::NothingToKeep(damage.path.clone()));
    }
    fs::create_dir_all(backup).map_err(|e| StoreError::io(backup, e))?;
    let into_backup = |p: &Path| backup.join(p.file_name().unwrap_or_default());
    let highest_set_aside = highest_id_set_aside(damage)?;
    if damage.offset < HEADER_LEN as u64 {
        move_file(&damage.path, &into_backup(&damage.path))?;
    } else {
        let copy = into_backup(&damage.path);
        fs::copy(&damage.path, &copy).map_err(|e| StoreError::io(&copy, e))?;
        fs::File::open(&copy).and_then(|f| f.sync_all()).map_err(|e| StoreError::io(&copy, e))?;
        zero_from(&damage.path, damage.offset, damage.tail_bytes)?;
    }
    for p in &damage.later {
        move_file(p, &into_backup(p))?;
    }
    segment::sync_dir(backup)?;
    segment::sync_dir(dir)?;
    keep_ids_above(dir, highest_set_aside)?;
    match inspect(dir)? {
        None => Ok(()),
        Some(d) => Err(RepairError::Store(StoreError::Corrupt { path: d.path, offset: d.offset, detail: d.detail })),
    }
}

/// The largest task id the records to be set aside name (0 if none): the valid records found in the damaged
/// segment's tail, and in every later segment (whose header's floor counts too).
fn highest_id_set_aside(damage: &Damage) -> Result<u64, StoreError> {
    let data = segment::read_all(&damage.path)?;
    let mut highest = highest_id_in(&data, damage.offset as usize);
    for p in &damage.later {
        let data = segment::read_all(p)?;
        let floor = SegmentHeader::decode(data.get(..HEADER_LEN).unwrap_or_default()).map_or(0, |h| h.task_id_floor);
        highest = highest.max(floor).max(highest_id_in(&data, HEADER_LEN));
    }
    Ok(highest)
}

/// The largest task id of the valid records found anywhere in `data[from..]` (searched byte by byte past
/// damage, record by record where they chain).
fn highest_id_in(data: &[u8], from: usize) -> u64 {
    let mut highest = 0;
    let mut at = from;
    while at < data.len() {
        if !format::plausible(data, at, 0..=u64::MAX) {
            at += 1;
            continue;
        }
        match format::read_frame(data, at) {
            Frame::Record { entry, size, .. } => {
                highest = highest.max(task_id(&entry));
                at += size;
            }
            _ => at += 1,
        }
    }
    highest
}

fn task_id(entry: &Entry<'_>) -> u64 {
    match *entry {
        Entry::Enqueue { task_id, .. }
        | Entry::Attempt { task_id, .. }
        | Entry::Ack { task_id }
        | Entry::DeadLetter { task_id, .. }
        | Entry::Redrive { task_id }
        | Entry::Snapshot { task_id, .. }
        | Entry::KeyCarry { task_id, .. }
        | Entry::Finish { task_id, .. } => task_id,
        _ => 0,
    }
}

/// When the kept log knows only ids below `highest`, starts an empty segment whose header says `highest`
/// was used, so that new task ids start above it.
fn keep_ids_above(dir: &Path, highest: u64) -> Result<(), StoreError> {
    let Some(scan) = recovery::recover(dir, 0)? else { return Ok(()) };
    let Some((&last, meta)) = scan.segments.last_key_value() else { return Ok(()) };
    if highest <= scan.live.max_task_id {
        return Ok(());
    }
    let header = SegmentHeader { index: last + 1, base_seq: scan.next_seq, task_id_floor: highest };
    segment::create_segment(dir, &header, meta.file_len, None, None).map(|_| ())
}

fn move_file(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|e| StoreError::io(from, e))
}

/// Zeroes `len` bytes of `path` from `offset` and syncs.
fn zero_from(path: &Path, offset: u64, len: u64) -> Result<(), StoreError> {
    let file = fs::OpenOptions::new().write(true).open(path).map_err(|e| StoreError::io(path, e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        let (_, result) = segment::write_at(&file, &zeros[..n], offset + done);
        result.map_err(|e| StoreError::io(path, e))?;
        done += n as u64;
    }
    file.sync_data().map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::super::{Wal, WalOptions};
    use super::*;
    use crate::store::{Record, TaskStore};

    fn opts() -> WalOptions {
        WalOptions { segment_bytes: 8 << 10, max_record_bytes: 4096, ..WalOptions::default() }
    }

    /// 150 tasks of 200 bytes, each synced on its own (several segments); returns the segment files.
    fn log(dir: &Path) -> Vec<PathBuf> {
        let (mut wal, _) = Wal::open(dir, opts()).unwrap();
        for id in 1..=150u64 {
            let body = bytes::Bytes::from(vec![b'x'; 200]);
            wal.append(&[Record::Enqueue { task_id: id, body, idempotency: None }]).unwrap();
            wal.sync().unwrap();
        }
        wal.segment_paths()
    }

    fn flip(path: &Path, at: usize) {
        let mut data = fs::read(path).unwrap();
        data[at] ^= 0x10;
        fs::write(path, data).unwrap();
    }

    #[test]
    fn a_damaged_record_mid_log_is_cut_there_and_everything_after_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let segs = log(&wal_dir);
        assert!(segs.len() >= 3, "{} segments", segs.len());
        assert_eq!(inspect(&wal_dir).unwrap(), None, "an intact log needs nothing");
        let original = fs::read(&segs[1]).unwrap();
        flip(&segs[1], HEADER_LEN + 300);
        let damage = inspect(&wal_dir).unwrap().unwrap();
        assert_eq!(damage.path, segs[1]);
        assert!(damage.offset >= HEADER_LEN as u64 && damage.offset <= HEADER_LEN as u64 + 300, "{damage:?}");
        assert_eq!(damage.later, segs[2..].to_vec());
        assert!(damage.tail_bytes > 0 && !damage.oldest_header);
        assert!(Wal::open(&wal_dir, opts()).is_err(), "refused before the repair");

        let backup = dir.path().join("backup");
        repair(&wal_dir, &damage, &backup).unwrap();
        let (_, rec) = Wal::open(&wal_dir, opts()).unwrap();
        let ids: Vec<u64> = rec.tasks.iter().map(|t| t.task_id).collect();
        assert!(!ids.is_empty() && ids.len() < 150, "{ids:?}");
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "every task before the damage, in order");
        assert_eq!(rec.max_task_id, 150, "ids set aside are never given again");
        // Nothing is lost from disk: the damaged segment as it was, and the later ones, are in the backup.
        let name = |p: &PathBuf| p.file_name().unwrap().to_owned();
        let mut kept = original.clone();
        kept[HEADER_LEN + 300] ^= 0x10;
        assert_eq!(fs::read(backup.join(name(&segs[1]))).unwrap(), kept);
        for s in &segs[2..] {
            assert!(backup.join(name(s)).exists(), "{}", s.display());
        }
        // The live log: the cut segment and one new, empty segment carrying the id floor.
        let live: Vec<PathBuf> = segment::list_segments(&wal_dir).unwrap().into_iter().map(|(_, p)| p).collect();
        assert_eq!(live, segs[..3].to_vec());
    }

    #[test]
    fn a_damaged_header_sets_its_segment_aside_but_the_oldest_one_cannot_be_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let segs = log(dir.path());
        flip(&segs[2], 18);
        let damage = inspect(dir.path()).unwrap().unwrap();
        assert_eq!((damage.path.clone(), damage.offset, damage.oldest_header), (segs[2].clone(), 0, false));
        let backup = dir.path().join("backup");
        repair(dir.path(), &damage, &backup).unwrap();
        assert!(backup.join(segs[2].file_name().unwrap()).exists());
        let (_, rec) = Wal::open(dir.path(), opts()).unwrap();
        assert!(!rec.tasks.is_empty() && rec.tasks.len() < 150);
        assert_eq!(rec.max_task_id, 150);

        let other = tempfile::tempdir().unwrap();
        let segs = log(other.path());
        flip(&segs[0], 18);
        let damage = inspect(other.path()).unwrap().unwrap();
        assert!(damage.oldest_header, "{damage:?}");
        let e = repair(other.path(), &damage, &other.path().join("backup")).unwrap_err();
        assert!(matches!(e, RepairError::NothingToKeep(_)), "{e}");
        assert!(segs[0].exists(), "nothing was touched");
    }
}
