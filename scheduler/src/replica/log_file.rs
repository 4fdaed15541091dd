//! The raft log on disk: every partition's frames, interleaved, in numbered segment files.
//!
//! One log per node, not one per partition, so that one `fdatasync` makes the entries of every partition
//! durable at once (group commit across partitions, as the task log does across shards). Frames are only ever
//! appended; a partition's state is what its frames add up to in order ([`super::storage::LogState::apply`]):
//! raft's overwriting of a conflicting tail is a later `ENTRIES` frame that starts at a lower index.
//!
//! Files are `DIR/raft-NNNNNNNNNNNNNNNN.log` (index in hex), each starting with a header
//! ([`super::codec::header`]). A new segment begins when the active one passes `segment_bytes`.
//!
//! At start every segment is read in order. The last segment may end in a torn frame (the process died during
//! a write that was never synced, so never acknowledged): the file is cut there. A bad frame in an older
//! segment, or a bad frame followed by good ones, is damage and stops the start with an error naming the file
//! and offset: losing a raft entry that was reported as persisted could break the election safety of its
//! group, so it is never skipped silently.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::codec::{self, Frame, Read};
use super::storage::{LogState, LogStateError};

/// Size at which the active segment is closed and a new one begun.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Errors of the raft log's files.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// An I/O call failed.
    #[error("raft log {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes that are not a torn tail do not read as frames.
    #[error("raft log {path} at offset {offset}: {reason}")]
    Damaged {
        /// Segment concerned.
        path: PathBuf,
        /// Where the bad frame starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A partition's frames do not add up.
    #[error("raft log {path}, partition {partition}: {source}")]
    State {
        /// Segment concerned.
        path: PathBuf,
        /// Partition concerned.
        partition: u32,
        /// What does not add up.
        #[source]
        source: LogStateError,
    },
    /// An earlier `fdatasync` failed: what the kernel holds is unknown, so nothing more is written.
    #[error("raft log is poisoned by an earlier failed sync; restart the node")]
    Poisoned,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogFileError + '_ {
    move |source| LogFileError::Io { path: path.to_path_buf(), source }
}

/// The raft log's segment files; owned by the writer thread once the node runs.
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_index: u64,
    active_len: u64,
    segment_bytes: u64,
    poisoned: bool,
}

/// The partitions' states read back at start.
pub(crate) type Partitions = BTreeMap<u32, LogState>;

impl LogFiles {
    /// Opens (or creates) the log in `dir` and reads every partition's state back.
    pub(crate) fn open(dir: &Path, segment_bytes: u64) -> Result<(LogFiles, Partitions), LogFileError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(hex) = name.strip_prefix("raft-").and_then(|n| n.strip_suffix(".log")) {
                if let Ok(index) = u64::from_str_radix(hex, 16) {
                    segments.push((index, path));
                }
            }
        }
        segments.sort();
        // A crash while a segment was being begun can leave it without its whole header: it holds no frame,
        // so it goes, and the segment before stays the active one.
        if let Some((_, path)) = segments.last() {
            let bytes = fs::read(path).map_err(io(path))?;
            if bytes.len() < codec::HEADER_LEN || bytes[..codec::HEADER_LEN].iter().all(|b| *b == 0) {
                tracing::warn!(path = %path.display(), "raft log: removing a segment whose header was never written whole");
                fs::remove_file(path).map_err(io(path))?;
                sync_dir(dir)?;
                segments.pop();
            }
        }
        let mut partitions = Partitions::new();
        let count = segments.len();
        let mut end = 0;
        for (i, (_, path)) in segments.iter().enumerate() {
            end = replay(path, i + 1 == count, &mut partitions)?;
        }
        let (active_index, active_path) = match segments.pop() {
            Some((index, path)) => (index, path),
            None => (1, segment_path(dir, 1)),
        };
        let mut active = OpenOptions::new().create(true).append(true).open(&active_path).map_err(io(&active_path))?;
        if count == 0 {
            active.write_all(&codec::header(active_index)).map_err(io(&active_path))?;
            active.sync_data().map_err(io(&active_path))?;
            sync_dir(dir)?;
            end = codec::HEADER_LEN as u64;
        }
        let files = LogFiles {
            dir: dir.to_path_buf(),
            active,
            active_path,
            active_index,
            active_len: end,
            segment_bytes,
            poisoned: false,
        };
        Ok((files, partitions))
    }

    /// Appends encoded frames (written, not yet durable: see [`LogFiles::sync`]).
    /// Any failure poisons the log: a failed or partial write would leave a bad frame before the good ones
    /// that follow, and a later success must never report the lost bytes durable.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), LogFileError> {
        if self.poisoned {
            return Err(LogFileError::Poisoned);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let result = self.append_unchecked(bytes);
        self.poisoned = result.is_err();
        result
    }

    fn append_unchecked(&mut self, bytes: &[u8]) -> Result<(), LogFileError> {
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        }
        self.active.write_all(bytes).map_err(io(&self.active_path))?;
        self.active_len += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable (`fdatasync` of the active segment; older ones were synced
    /// when the next began). A failure poisons the log.
    pub fn sync(&mut self) -> Result<(), LogFileError> {
        if self.poisoned {
            return Err(LogFileError::Poisoned);
        }
        self.active.sync_data().map_err(|e| {
            self.poisoned = true;
            io(&self.active_path)(e)
        })
    }

    /// Closes the active segment (synced) and begins the next.
    fn roll(&mut self) -> Result<(), LogFileError> {
        self.sync()?;
        let index = self.active_index + 1;
        let path = segment_path(&self.dir, index);
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io(&path))?;
        file.write_all(&codec::header(index)).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))?;
        sync_dir(&self.dir)?;
        (self.active, self.active_path, self.active_index) = (file, path, index);
        self.active_len = codec::HEADER_LEN as u64;
        Ok(())
    }

    /// Paths of the segment files, oldest first (for tests and tools).
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        (1..=self.active_index).map(|i| segment_path(&self.dir, i)).filter(|p| p.exists()).collect()
    }
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("raft-{index:016x}.log"))
}

fn sync_dir(dir: &Path) -> Result<(), LogFileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads one segment into `partitions`; returns the length of its good part. The last segment's torn tail is
/// cut off the file.
fn replay(path: &Path, last: bool, partitions: &mut Partitions) -> Result<u64, LogFileError> {
    let bytes = fs::read(path).map_err(io(path))?;
    let damaged = |offset: usize, reason: String| LogFileError::Damaged {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    codec::decode_header(&bytes).map_err(|r| damaged(0, r))?;
    // Zeros from some offset to the end are room a crash left (the file grew, its bytes never came): no frame
    // starts there. (A frame may end in zeros itself, so they are only judged where a frame would start.)
    let zeros_from = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut at = codec::HEADER_LEN;
    loop {
        if at >= zeros_from {
            if last {
                cut(path, at, "trailing zeros")?;
            }
            return Ok(at as u64);
        }
        match codec::decode(&bytes[at..]) {
            Read::Frame(frame, n) => {
                let partition = partition_of(&frame);
                partitions.entry(partition).or_default().apply(frame).map_err(|source| LogFileError::State {
                    path: path.to_path_buf(),
                    partition,
                    source,
                })?;
                at += n;
            }
            Read::End => return Ok(at as u64),
            Read::Torn(reason) => {
                if !last || good_frame_after(&bytes, at) {
                    return Err(damaged(at, reason));
                }
                cut(path, at, &reason)?;
                return Ok(at as u64);
            }
        }
    }
}

/// Cuts the last segment at `at` (a torn tail, never synced, so never reported durable), if it is longer.
fn cut(path: &Path, at: usize, reason: &str) -> Result<(), LogFileError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io(path))?;
    if file.metadata().map_err(io(path))?.len() > at as u64 {
        tracing::warn!(path = %path.display(), offset = at, %reason, "raft log: cutting a torn tail (never synced)");
        file.set_len(at as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok(())
}

/// Whether an intact frame starts anywhere after `at`: then the bad bytes at `at` are not a torn tail.
fn good_frame_after(bytes: &[u8], at: usize) -> bool {
    (at + 1..bytes.len()).any(|i| matches!(codec::decode(&bytes[i..]), Read::Frame(..)))
}

fn partition_of(frame: &Frame) -> u32 {
    match frame {
        Frame::Entries { partition, .. }
        | Frame::HardState { partition, .. }
        | Frame::ConfState { partition, .. }
        | Frame::Compacted { partition, .. } => *partition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, HardState};

    fn entries(partition: u32, from: u64, to: u64, term: u64) -> Frame {
        let entries = (from..=to)
            .map(|i| Entry {
                index: i,
                term,
                data: bytes::Bytes::from(format!("p{partition} e{i}")),
                ..Entry::default()
            })
            .collect();
        Frame::Entries { partition, entries }
    }

    fn bytes_of(frames: &[Frame]) -> Vec<u8> {
        let mut buf = Vec::new();
        for f in frames {
            codec::encode(&mut buf, f);
        }
        buf
    }

    #[test]
    fn partitions_read_back_across_segments_with_overwritten_tails() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, parts) = LogFiles::open(dir.path(), 200).expect("open");
            assert!(parts.is_empty());
            let hs = HardState { term: 2, vote: 1, commit: 3, ..HardState::default() };
            for f in [
                entries(0, 1, 5, 1),
                entries(1, 1, 2, 1),
                Frame::HardState { partition: 0, state: hs },
                entries(0, 4, 6, 2),
            ] {
                log.append(&bytes_of(&[f])).expect("append");
            }
            log.sync().expect("sync");
            assert!(log.segment_paths().len() > 1, "small segments roll over");
        }
        let (_, parts) = LogFiles::open(dir.path(), 200).expect("reopen");
        let p0 = &parts[&0];
        let got: Vec<(u64, u64)> = p0.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]);
        assert_eq!((p0.hard.term, p0.hard.vote, p0.hard.commit), (2, 1, 3));
        assert_eq!(parts[&1].last_index(), 2);
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_good_frames_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = {
            let (mut log, _) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("open");
            log.append(&bytes_of(&[entries(3, 1, 2, 1), entries(3, 3, 4, 1)])).expect("append");
            log.sync().expect("sync");
            log.segment_paths()[0].clone()
        };
        let whole = fs::read(&path).expect("read");
        // A write cut anywhere in the second frame: the first frame's entries survive, the file is cut.
        let second = codec::HEADER_LEN + bytes_of(&[entries(3, 1, 2, 1)]).len();
        for cut in [second + 3, second + 20, whole.len() - 1] {
            fs::write(&path, &whole[..cut]).expect("write");
            let (mut log, parts) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("torn tail opens");
            assert_eq!(parts[&3].last_index(), 2, "cut at {cut}");
            assert_eq!(fs::metadata(&path).expect("meta").len(), second as u64);
            log.append(&bytes_of(&[entries(3, 3, 3, 2)])).expect("append after the cut");
            log.sync().expect("sync");
            let (_, parts) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("reopen");
            assert_eq!(parts[&3].last_index(), 3);
        }
        // Zeros after the last frame (the file grew, its bytes never came) are cut, so appends follow the frames.
        let mut zeroed = whole.clone();
        zeroed.extend_from_slice(&vec![0u8; 256 << 10]);
        fs::write(&path, &zeroed).expect("write");
        let (mut log, parts) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("zeros open");
        assert_eq!(parts[&3].last_index(), 4);
        log.append(&bytes_of(&[entries(3, 5, 5, 1)])).expect("append");
        log.sync().expect("sync");
        drop(log);
        let (_, parts) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("reopen after zeros");
        assert_eq!(parts[&3].last_index(), 5);
        // A segment begun by a crash without its header: removed, the one before goes on.
        let begun = dir.path().join("raft-0000000000000002.log");
        fs::write(&begun, [0u8; 10]).expect("write");
        let (log, parts) = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect("a half-begun segment opens");
        assert_eq!(parts[&3].last_index(), 5);
        assert_eq!(log.segment_paths(), vec![path.clone()]);
        drop(log);
        // A flipped byte in the first frame, with a good frame after it: damage, not a tail.
        let mut bad = whole.clone();
        bad[codec::HEADER_LEN + 12] ^= 0xff;
        fs::write(&path, &bad).expect("write");
        let err = LogFiles::open(dir.path(), DEFAULT_SEGMENT_BYTES).expect_err("damage is refused");
        assert!(matches!(err, LogFileError::Damaged { offset, .. } if offset == codec::HEADER_LEN as u64), "{err}");
    }
}
