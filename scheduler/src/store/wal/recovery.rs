//! Recovery: rebuild the live set from the segments, and tell a torn tail from corruption.
//!
//! Each segment is read front to back while records chain (valid crc, `seq` one more than the last).
//! Where the chain stops, the rest of the segment is searched for valid records, and the next segment's
//! header is read. The question is whether the missing record had already been *synced*:
//!
//! - every record carries its sync lag, so a valid record found further on says "everything below seq
//!   `seq - lag` was durable when I was written";
//! - a segment header says the same about its `base_seq` (the previous segment is synced before the next
//!   one is created).
//!
//! If that evidence covers the missing record, durable data was damaged: [`StoreError::Corrupt`] names the
//! file and offset and the store refuses to open. If not, the bytes are the remains of a write that was
//! never synced — a torn tail, or the leftovers of a failed write — and they were never acknowledged: they
//! are zeroed so they can never be read again, and the store opens.
//!
//! Why evidence and not "any valid record after the bad one": the kernel may write back the pages of an
//! unsynced write in any order, so after a power cut a batch can lose its first page and keep its last.
//! Those later records are valid but were never acknowledged; treating them as proof of corruption would
//! refuse to start after an ordinary crash.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, Entry, Frame, SegmentHeader, FRAME_PREFIX, HEADER_LEN, MIN_LEN};
use super::live::{IdMap, LiveSet};
use super::segment;
use crate::store::StoreError;

/// What recovery knows about one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    /// The file.
    pub path: PathBuf,
    /// End of the valid records (where the next record goes, for the newest segment).
    pub written: u64,
    /// File size (its preallocated capacity).
    pub file_len: u64,
}

/// The result of reading every segment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Segments by index.
    pub segments: BTreeMap<u64, SegMeta>,
    /// Live tasks and keys with their locations.
    pub live: LiveSet,
    /// Bodies of the kept results (and, between prunings, of some that were dropped since).
    pub result_bodies: IdMap<Bytes>,
    /// `seq` for the next record.
    pub next_seq: u64,
}

/// Why a segment's chain of records stopped.
enum Stop {
    End,
    Bad(String),
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::End => f.write_str("written data ends"),
            Stop::Bad(d) => f.write_str(d),
        }
    }
}

/// Reads every segment of `dir`, keeping at most `max_results` results. `Ok(None)` if there is none yet.
pub(crate) fn recover(dir: &Path, max_results: usize) -> Result<Option<Scan>, StoreError> {
    let files = segment::list_segments(dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let headers = files.iter().map(|(index, path)| read_header(*index, path)).collect::<Result<Vec<_>, _>>()?;
    let mut scan = Scan { next_seq: headers[0].base_seq, ..Scan::default() };
    scan.live.max_results = max_results;
    // One thread reads the next segment from the disk while this one applies the current one: the cold read
    // and the CPU work overlap instead of taking turns.
    std::thread::scope(|threads| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let paths: Vec<&PathBuf> = files.iter().map(|(_, path)| path).collect();
        threads.spawn(move || {
            for path in paths {
                let read = segment::read_all(path).map(|data| {
                    let checked = checked_prefix(&data);
                    (data, checked)
                });
                if tx.send(read).is_err() {
                    return;
                }
            }
        });
        scan_segments(&files, &headers, &mut scan, || {
            rx.recv().unwrap_or_else(|_| {
                Err(StoreError::Io { path: dir.to_owned(), source: std::io::Error::other("segment reader stopped") })
            })
        })
    })?;
    Ok(Some(scan))
}

/// Applies every segment in order, each one's contents given by `next_data`.
fn scan_segments(
    files: &[(u64, PathBuf)],
    headers: &[SegmentHeader],
    scan: &mut Scan,
    mut next_data: impl FnMut() -> Result<(Vec<u8>, Checked), StoreError>,
) -> Result<(), StoreError> {
    for (i, ((index, path), header)) in files.iter().zip(headers).enumerate() {
        let (data, checked) = next_data()?;
        scan.live.max_task_id = scan.live.max_task_id.max(header.task_id_floor);
        scan.live.add_segment(*index);
        let (end, next_seq, stop) = chain(&data, &checked, *index, scan.next_seq, scan);
        let corrupt = |detail: String| StoreError::Corrupt { path: path.clone(), offset: end as u64, detail };
        if let Some(((next_index, next_path), next)) = files.get(i + 1).zip(headers.get(i + 1)) {
            if next.base_seq > next_seq {
                return Err(corrupt(format!(
                    "{stop}; segment {next_index} starts at seq {}, so the records from seq {next_seq} had been synced",
                    next.base_seq
                )));
            }
            if next.base_seq < next_seq {
                return Err(StoreError::Corrupt {
                    path: next_path.clone(),
                    offset: 0,
                    detail: format!(
                        "segment starts at seq {} but the previous one ends before {next_seq}",
                        next.base_seq
                    ),
                });
            }
        }
        if let Some((at, seq, durable)) = evidence_after(&data, end, next_seq) {
            if durable > next_seq {
                return Err(corrupt(format!(
                    "{stop}; the valid record seq {seq} at offset {at} was written after seq {next_seq} had been synced"
                )));
            }
        }
        if let Some(last) = data[end..].iter().rposition(|&b| b != 0) {
            tracing::warn!(file = %path.display(), offset = end, bytes = last + 1, "{stop}: discarding an unsynced torn tail");
            zero(path, end as u64, last + 1)?;
        }
        scan.next_seq = next_seq;
        scan.segments.insert(*index, SegMeta { path: path.clone(), written: end as u64, file_len: data.len() as u64 });
    }
    Ok(())
}

fn read_header(index: u64, path: &Path) -> Result<SegmentHeader, StoreError> {
    let mut bytes = [0u8; HEADER_LEN];
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let corrupt = |detail: String| StoreError::Corrupt { path: path.to_owned(), offset: 0, detail };
    let n = file.read_at(&mut bytes, 0).map_err(|e| StoreError::io(path, e))?;
    let header = SegmentHeader::decode(&bytes[..n]).map_err(corrupt)?;
    if header.index != index {
        return Err(corrupt(format!("header says segment {} but the file name says {index}", header.index)));
    }
    Ok(header)
}

/// What the thread that reads the segments works out about one, so that [`chain`] neither computes the crcs
/// nor, for the most common records, reads their bytes again (which another core put in memory: waiting for
/// them was half of the replay's time).
struct Checked {
    /// Where the records stop following each other with a valid crc (the header's end if none does).
    end: usize,
    /// Those records in order, as far as the replay needs them.
    records: Vec<Parsed>,
}

/// A record below [`Checked::end`], decoded by the reading thread.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    pos: usize,
    size: usize,
    seq: u64,
    op: Op,
}

/// The records the replay applies from [`Parsed`] alone; the others it decodes again from the segment.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// An Enqueue without an idempotency key (its body is not needed by the replay).
    Enqueue(u64),
    Ack(u64),
    Attempt(u64, u32),
    Redrive(u64),
    Other,
}

fn checked_prefix(data: &[u8]) -> Checked {
    let mut checked = Checked { end: HEADER_LEN, records: Vec::new() };
    while let Frame::Record { size, entry, seq, .. } = format::read_frame(data, checked.end) {
        let pos = checked.end;
        checked.end += size;
        let op = match entry {
            Entry::Enqueue { task_id, idem: None, .. } => Op::Enqueue(task_id),
            Entry::Ack { task_id } => Op::Ack(task_id),
            Entry::Attempt { task_id, attempts } => Op::Attempt(task_id, attempts),
            Entry::Redrive { task_id } => Op::Redrive(task_id),
            _ => Op::Other,
        };
        checked.records.push(Parsed { pos, size, seq, op });
    }
    checked
}

/// Applies the chain of valid records of one segment; returns where it stopped, the next seq, and why. A
/// Group is applied only when all its records follow it intact; otherwise the chain stops at the Group.
/// The records below `checked.end` are known to be whole with a valid crc ([`checked_prefix`]), and are met
/// in the order of `checked.records`.
fn chain(data: &[u8], checked: &Checked, seg: u64, mut seq: u64, scan: &mut Scan) -> (usize, u64, Stop) {
    let mut pos = HEADER_LEN;
    let mut next = 0;
    loop {
        let (entry, size) = match next_record(data, checked, &mut next, pos, seq) {
            Ok(r) => r,
            Err(stop) => return (pos, seq, stop),
        };
        if let Entry::Group { count } = entry {
            // Read the whole unit before applying any of it.
            let mut unit = Vec::with_capacity(count as usize);
            let mut at = pos + size;
            for k in 0..u64::from(count) {
                match next_record(data, checked, &mut next, at, seq + 1 + k) {
                    Ok((e, n)) => {
                        unit.push((e, at, n));
                        at += n;
                    }
                    Err(stop) => {
                        let why = format!("a group of {} records ends after {k} ({stop})", count);
                        return (pos, seq, Stop::Bad(why));
                    }
                }
            }
            apply(scan, &entry, seg, pos, size);
            for (e, p, n) in &unit {
                apply(scan, e, seg, *p, *n);
            }
            seq += 1 + u64::from(count);
            pos = at;
            continue;
        }
        apply(scan, &entry, seg, pos, size);
        pos += size;
        seq += 1;
    }
}

/// The valid record at `pos`, which must have seq `seq`. Below `checked.end` it is `checked.records[*next]`
/// (the chain meets the records in their order), applied from what the reading thread decoded or decoded again
/// without its crc; past it, read and checked here.
fn next_record<'a>(
    data: &'a [u8],
    checked: &Checked,
    next: &mut usize,
    pos: usize,
    seq: u64,
) -> Result<(Entry<'a>, usize), Stop> {
    // (The chain and the reading thread walk the same records, so `pos` always matches; were it not so, the
    // record is read and checked here.)
    let frame = match checked.records.get(*next).filter(|p| p.pos == pos) {
        Some(parsed) => {
            *next += 1;
            let entry = match parsed.op {
                Op::Enqueue(task_id) => Some(Entry::Enqueue { task_id, idem: None, body: &[] }),
                Op::Ack(task_id) => Some(Entry::Ack { task_id }),
                Op::Attempt(task_id, attempts) => Some(Entry::Attempt { task_id, attempts }),
                Op::Redrive(task_id) => Some(Entry::Redrive { task_id }),
                Op::Other => None,
            };
            match entry {
                Some(entry) => Frame::Record { seq: parsed.seq, lag: 0, entry, size: parsed.size },
                None => format::reread_frame(data, pos),
            }
        }
        None => format::read_frame(data, pos),
    };
    match frame {
        Frame::End => Err(Stop::End),
        Frame::Bad(detail) => Err(Stop::Bad(detail)),
        Frame::Record { seq: found, .. } if found != seq => {
            Err(Stop::Bad(format!("record has seq {found} where {seq} was expected")))
        }
        Frame::Record { entry, size, .. } => Ok((entry, size)),
    }
}

fn apply(scan: &mut Scan, entry: &Entry<'_>, seg: u64, pos: usize, size: usize) {
    if let Entry::Finish { task_id, body, .. } = *entry {
        if scan.live.max_results > 0 {
            scan.result_bodies.insert(task_id, Bytes::copy_from_slice(body));
        }
    }
    scan.live.apply(entry, seg, pos as u64, size as u64);
    scan.live.trim();
    // Bodies of results pushed out since stay in `result_bodies` until this pruning (after the record is
    // applied, so the result just added is kept): bounded memory.
    if matches!(entry, Entry::Finish { .. }) && scan.result_bodies.len() > 2 * scan.live.results.len() + 1024 {
        let live = &scan.live.results;
        scan.result_bodies.retain(|id, _| live.contains_key(id));
    }
}

/// Searches `data[from..]` for valid records of seq `min_seq` or later and returns the one proving the
/// most: `(offset, seq, durable_before)` with the largest `durable_before = seq - lag`.
fn evidence_after(data: &[u8], from: usize, min_seq: u64) -> Option<(usize, u64, u64)> {
    let smallest = FRAME_PREFIX + MIN_LEN;
    let max_seq = min_seq + (data.len().saturating_sub(from) / smallest) as u64;
    let mut best: Option<(usize, u64, u64)> = None;
    let mut at = from;
    while at + smallest <= data.len() {
        if data[at..at + 4] == [0; 4] {
            // A record's length field is never all zeros, so it starts at most 3 bytes before the next
            // non-zero byte: jump over runs of zeros (the unwritten rest of a preallocated segment).
            match data[at + 4..].iter().position(|&b| b != 0) {
                Some(z) => at = (at + 4 + z - 3).max(at + 1),
                None => break,
            }
            continue;
        }
        if format::plausible(data, at, min_seq..=max_seq) {
            if let Frame::Record { seq, lag, .. } = format::read_frame(data, at) {
                let durable = seq - lag;
                if best.is_none_or(|(_, _, d)| durable > d) {
                    best = Some((at, seq, durable));
                }
            }
        }
        at += 1;
    }
    best
}

/// Overwrites `len` bytes at `offset` with zeros and syncs, so a torn tail is never read again.
fn zero(path: &Path, offset: u64, len: usize) -> Result<(), StoreError> {
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| StoreError::io(path, e))?;
    let (_, result) = segment::write_at(&file, &vec![0u8; len], offset);
    result.and_then(|()| file.sync_data()).map_err(|e| StoreError::io(path, e))
}
