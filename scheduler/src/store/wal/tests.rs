//! WAL-specific tests: recovery (torn tails, corruption), rollover, space reclamation, write failures.
//! The behaviour every backend shares is tested in `store::conformance`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{self, Frame, HEADER_LEN};
use super::{now_unix_ms, Wal, WalOptions};
use crate::store::{IdemKey, Record, Recovered, StoreError, TaskStore, Upkeep};

fn opts(segment_bytes: u64) -> WalOptions {
    WalOptions { segment_bytes, max_record_bytes: 4096, compact_live_ratio: 0.25, ..WalOptions::default() }
}

fn open(dir: &Path, opts: WalOptions) -> (Wal, Recovered) {
    Wal::open(dir, opts).unwrap_or_else(|e| panic!("open: {e}"))
}

fn enq(task_id: u64, body_len: usize) -> Record {
    Record::Enqueue { task_id, body: body(task_id, body_len), idempotency: None }
}

/// The body `enq` gives a task.
fn body(task_id: u64, len: usize) -> Bytes {
    Bytes::from(format!("{task_id:08}").repeat(len / 8 + 1)).slice(..len)
}

fn ack(task_id: u64) -> Record {
    Record::Ack { task_id }
}

fn ids(rec: &Recovered) -> Vec<u64> {
    rec.tasks.iter().map(|t| t.task_id).collect()
}

/// `(start, end)` of every record in a segment file.
fn record_spans(path: &Path) -> Vec<(usize, usize)> {
    let data = fs::read(path).unwrap();
    let mut spans = Vec::new();
    let mut pos = HEADER_LEN;
    while let Frame::Record { size, .. } = format::read_frame(&data, pos) {
        spans.push((pos, pos + size));
        pos += size;
    }
    spans
}

fn newest(wal: &Wal) -> PathBuf {
    wal.segment_paths().pop().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Three synced batches of two tasks each (ids 1..=6); returns the segment file.
fn three_synced_batches(dir: &Path) -> PathBuf {
    let (mut wal, _) = open(dir, opts(64 << 10));
    for b in 0..3 {
        wal.append(&[enq(b * 2 + 1, 100), enq(b * 2 + 2, 100)]).unwrap();
        wal.sync().unwrap();
    }
    newest(&wal)
}

#[test]
fn torn_tail_at_every_offset_opens_without_the_last_record() {
    let pristine = tempfile::tempdir().unwrap();
    let seg = three_synced_batches(pristine.path());
    let (start, end) = *record_spans(&seg).last().unwrap();
    let name = seg.file_name().unwrap();
    for cut in start..end {
        for zero_instead_of_truncate in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let file = dir.path().join(name);
            if zero_instead_of_truncate {
                // A torn write into the preallocated file: the record's last bytes never arrived.
                let mut data = fs::read(&file).unwrap();
                data[cut..end].fill(0);
                fs::write(&file, data).unwrap();
            } else {
                fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(cut as u64).unwrap();
            }
            let (mut wal, rec) = Wal::open(dir.path(), opts(64 << 10))
                .unwrap_or_else(|e| panic!("cut at {cut} (zeroed: {zero_instead_of_truncate}): {e}"));
            assert_eq!(ids(&rec), vec![1, 2, 3, 4, 5], "cut at {cut}");
            // The store works on: the next record takes the torn one's place, and survives a reopen.
            wal.append(&[enq(7, 50)]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, rec) = open(dir.path(), opts(64 << 10));
            assert_eq!(ids(&rec), vec![1, 2, 3, 4, 5, 7], "cut at {cut}, after reopen");
        }
    }
}

#[test]
fn flipped_bit_in_an_older_record_is_corruption_naming_file_and_offset() {
    let pristine = tempfile::tempdir().unwrap();
    let seg = three_synced_batches(pristine.path());
    let spans = record_spans(&seg);
    // Every byte of the first two records (the first synced batch), followed by later synced batches.
    for &(start, end) in &spans[..2] {
        for byte in start..end {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), dir.path());
            let file = dir.path().join(seg.file_name().unwrap());
            let mut data = fs::read(&file).unwrap();
            data[byte] ^= 1 << (byte % 8);
            fs::write(&file, data).unwrap();
            match Wal::open(dir.path(), opts(64 << 10)) {
                Err(e @ StoreError::Corrupt { .. }) => {
                    let StoreError::Corrupt { path, offset, .. } = &e else { unreachable!() };
                    assert_eq!((path, *offset), (&file, start as u64), "flip at {byte}");
                    let msg = e.to_string();
                    assert!(msg.contains(&file.display().to_string()), "{msg}");
                    assert!(msg.contains(&format!("offset {start}")), "{msg}");
                }
                Err(e) => panic!("flip at {byte}: wrong error {e}"),
                Ok((_, rec)) => panic!("flip at {byte}: opened with tasks {:?}", ids(&rec)),
            }
        }
    }
}

#[test]
fn damage_to_the_last_synced_batch_is_corruption_once_a_checkpoint_proves_it_durable() {
    for checkpointed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = open(dir.path(), opts(64 << 10));
        wal.append(&[enq(1, 100), enq(2, 100)]).unwrap();
        wal.sync().unwrap();
        if checkpointed {
            while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
        }
        let seg = newest(&wal);
        drop(wal);
        let (start, _) = record_spans(&seg)[0];
        let mut data = fs::read(&seg).unwrap();
        data[start + 20] ^= 0x10;
        fs::write(&seg, data).unwrap();
        match Wal::open(dir.path(), opts(64 << 10)) {
            Err(StoreError::Corrupt { offset, .. }) => {
                assert!(checkpointed && offset == start as u64)
            }
            // Without later evidence the batch may never have been synced: it is a torn tail.
            Ok((_, rec)) => assert!(!checkpointed && rec.tasks.is_empty(), "{:?}", ids(&rec)),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn unsynced_batch_that_lost_its_first_page_is_a_torn_tail_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(64 << 10));
    wal.append(&[enq(1, 100)]).unwrap();
    wal.sync().unwrap();
    wal.append(&[enq(2, 100), enq(3, 100), enq(4, 100)]).unwrap();
    let seg = newest(&wal);
    drop(wal);
    // Page cache write-back order is not guaranteed: the batch's first record is lost, the rest made it.
    let (start, end) = record_spans(&seg)[1];
    let mut data = fs::read(&seg).unwrap();
    data[start..end].fill(0);
    fs::write(&seg, data).unwrap();
    let (mut wal, rec) = open(dir.path(), opts(64 << 10));
    assert_eq!(ids(&rec), vec![1]);
    assert_eq!(record_spans(&seg).len(), 1, "the leftovers were zeroed");
    wal.append(&[enq(5, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(ids(&open(dir.path(), opts(64 << 10)).1), vec![1, 5]);
}

#[test]
fn damaged_segment_header_or_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(8 << 10));
    for id in 1..=100 {
        wal.append(&[enq(id, 200)]).unwrap();
    }
    wal.sync().unwrap();
    let segs = wal.segment_paths();
    drop(wal);
    assert!(segs.len() >= 3);

    let mut header = fs::read(&segs[1]).unwrap();
    header[18] ^= 1;
    fs::write(&segs[1], &header).unwrap();
    let err = Wal::open(dir.path(), opts(8 << 10)).unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { path, offset: 0, .. } if *path == segs[1]), "{err}");
    header[18] ^= 1;
    fs::write(&segs[1], &header).unwrap();
    assert_eq!(open(dir.path(), opts(8 << 10)).1.tasks.len(), 100);

    fs::remove_file(&segs[1]).unwrap();
    let err = Wal::open(dir.path(), opts(8 << 10)).unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { path, .. } if *path == segs[0]), "{err}");
}

#[test]
fn segments_roll_over_are_preallocated_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(16 << 10));
    for b in 0..30u64 {
        wal.append(&(b * 10 + 1..=b * 10 + 10).map(|id| enq(id, 200)).collect::<Vec<_>>()).unwrap();
    }
    wal.sync().unwrap();
    let segs = wal.segment_paths();
    assert!(segs.len() >= 4, "{} segments", segs.len());
    for (i, path) in segs.iter().enumerate() {
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), format!("wal-{i:020}.log"));
        let meta = fs::metadata(path).unwrap();
        assert_eq!(meta.len(), 16 << 10);
        assert!(meta.blocks() * 512 >= 16 << 10, "{} is not allocated", path.display());
    }
    assert_eq!(wal.stats().disk_bytes, segs.len() as u64 * (16 << 10));
    drop(wal);
    let (_, rec) = open(dir.path(), opts(16 << 10));
    assert_eq!(ids(&rec), (1..=300).collect::<Vec<_>>());
    assert!(rec.tasks.iter().all(|t| t.body
        == match enq(t.task_id, 200) {
            Record::Enqueue { body, .. } => body,
            _ => unreachable!(),
        }));
}

#[test]
fn a_group_torn_anywhere_is_recovered_whole_or_not_at_all() {
    let pristine = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(pristine.path(), opts(64 << 10));
    wal.append(&[enq(1, 100)]).unwrap();
    wal.sync().unwrap();
    // Task 1 finishes and spawns 2 and 3, as one unit, in an unsynced batch after an ordinary record.
    let finish = Record::Finish { task_id: 1, expires_unix_ms: u64::MAX, body: Bytes::from_static(b"done") };
    wal.append(&[enq(4, 40), Record::Group { count: 3 }, enq(2, 100), enq(3, 100), finish]).unwrap();
    let seg = newest(&wal);
    drop(wal);
    let spans = record_spans(&seg);
    let (group_start, end) = (spans[2].0, spans[5].1);
    let name = seg.file_name().unwrap();
    for cut in group_start..end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), dir.path());
        fs::OpenOptions::new().write(true).open(dir.path().join(name)).unwrap().set_len(cut as u64).unwrap();
        let (_, rec) = Wal::open(dir.path(), opts(64 << 10)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(ids(&rec), vec![1, 4], "cut at {cut}: the unit is gone, task 1 is live");
        assert!(rec.results.is_empty());
    }
    let (_, rec) = open(pristine.path(), opts(64 << 10));
    assert_eq!(ids(&rec), vec![2, 3, 4], "intact: the follow-ups are live and task 1 finished");
    assert_eq!(rec.results.len(), 1);
}

#[test]
fn many_more_results_than_kept_recover_with_their_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions { max_results: 10, ..opts(1 << 20) };
    let (mut wal, _) = open(dir.path(), o.clone());
    // Far more Finish records than 2 × max + 1024, so recovery prunes the bodies it holds several times, the
    // last time at the very last record (every 1,035 records from the 1,045th).
    for batch in 0..83u64 {
        let finishes: Vec<Record> = (0..50)
            .map(|i| {
                let task_id = batch * 50 + i + 1;
                Record::Finish {
                    task_id,
                    expires_unix_ms: u64::MAX - 10_000 + task_id,
                    body: Bytes::from(format!("r{task_id}")),
                }
            })
            .collect();
        wal.append(&finishes).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(dir.path(), o);
    let got: Vec<(u64, String)> =
        rec.results.iter().map(|r| (r.task_id, String::from_utf8(r.body.to_vec()).unwrap())).collect();
    let want: Vec<(u64, String)> = (4141..=4150).map(|id| (id, format!("r{id}"))).collect();
    assert_eq!(got, want, "the newest ten, each with its body");
}

#[test]
fn a_group_is_never_split_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(8 << 10));
    // Fill most of the first segment, then a unit that does not fit in what is left.
    wal.append(&(1..=30).map(|id| enq(id, 200)).collect::<Vec<_>>()).unwrap();
    let mut batch = vec![enq(100, 200), Record::Group { count: 10 }];
    batch.extend((101..=110).map(|id| enq(id, 200)));
    wal.append(&batch).unwrap();
    wal.sync().unwrap();
    let segs = wal.segment_paths();
    assert_eq!(segs.len(), 2);
    let in_last = record_spans(&segs[1]).len();
    assert!(in_last >= 11, "the whole unit went to the new segment ({in_last} records there)");
    drop(wal);
    let (mut wal, rec) = open(dir.path(), opts(8 << 10));
    assert_eq!(rec.tasks.len(), 41);
    // A unit larger than a segment is refused, and nothing of it is written.
    let mut huge = vec![Record::Group { count: 50 }];
    huge.extend((200..250).map(|id| enq(id, 200)));
    assert!(matches!(wal.append(&huge), Err(StoreError::RecordTooLarge { .. })));
}

#[test]
fn a_batch_larger_than_a_segment_is_spread_over_several() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(8 << 10));
    wal.append(&(1..=100).map(|id| enq(id, 200)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    assert!(wal.segment_paths().len() >= 3);
    drop(wal);
    assert_eq!(ids(&open(dir.path(), opts(8 << 10)).1), (1..=100).collect::<Vec<_>>());
}

/// Runs `tasks` enqueues (256-byte bodies, batches of 64), acking each batch one batch later except the
/// ids `keep` selects; syncs and maintains every 16 batches. Returns the most segments seen.
fn churn(wal: &mut Wal, tasks: u64, keep: impl Fn(u64) -> bool) -> usize {
    let mut most = 0;
    let mut previous: Vec<u64> = Vec::new();
    for (n, first) in (1..=tasks).step_by(64).enumerate() {
        let batch: Vec<u64> = (first..(first + 64).min(tasks + 1)).collect();
        let mut records: Vec<Record> = batch.iter().map(|&id| enq(id, 256)).collect();
        records.extend(previous.iter().filter(|&&id| !keep(id)).map(|&id| ack(id)));
        wal.append(&records).unwrap();
        previous = batch;
        if n % 16 == 15 {
            wal.sync().unwrap();
            while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
        }
        most = most.max(wal.segment_paths().len());
    }
    wal.append(&previous.iter().filter(|&&id| !keep(id)).map(|&id| ack(id)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    most
}

#[test]
fn disk_use_stays_bounded_under_steady_enqueue_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(1 << 20));
    let most = churn(&mut wal, 200_000, |_| false);
    assert!(most <= 3, "up to {most} segments of 1 MiB for a ~57 MiB stream");
    assert!(wal.segment_paths().len() <= 2);
    assert_eq!(wal.stats().live_tasks, 0);
    let first_left = wal.segment_paths()[0].clone();
    assert!(!first_left.ends_with(super::segment::segment_name(0)), "old segments were deleted");
    // Retired segments are unlinked off the commit thread: the files themselves go soon after.
    let files = || fs::read_dir(dir.path()).unwrap().count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files() > 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(files() <= 3, "{} files left in the log directory", files());
    drop(wal);
    let (_, rec) = open(dir.path(), opts(1 << 20));
    assert!(rec.tasks.is_empty());
    assert_eq!(rec.max_task_id, 200_000);
}

#[test]
fn a_retired_segment_left_by_a_crash_is_ignored_and_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(16 << 10));
    wal.append(&[enq(1, 100), enq(2, 100)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    // A retired segment whose unlink never ran, holding a task that must not come back.
    let other = tempfile::tempdir().unwrap();
    let (mut old, _) = open(other.path(), opts(16 << 10));
    old.append(&[enq(99, 100)]).unwrap();
    old.sync().unwrap();
    let stale = old.segment_paths()[0].clone();
    drop(old);
    let dead = dir.path().join(format!("{}.dead", super::segment::segment_name(7)));
    fs::copy(&stale, &dead).unwrap();
    let (_, rec) = open(dir.path(), opts(16 << 10));
    assert_eq!(ids(&rec), vec![1, 2]);
    assert!(!dead.exists(), "the retired segment was removed at open");
}

#[test]
fn compaction_reclaims_sparse_segments_and_long_lived_tasks_and_keys_survive() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(1 << 20));
    let expires = now_unix_ms() + 3_600_000;
    // An acked task whose idempotency key must outlive it, and a long-lived task with some history.
    let keyed = Record::Enqueue {
        task_id: 1_000_000,
        body: Bytes::from_static(b"keyed"),
        idempotency: Some(IdemKey { key: "q/k".into(), expires_unix_ms: expires }),
    };
    wal.append(&[keyed, ack(1_000_000), enq(1_000_001, 300)]).unwrap();
    wal.append(&[
        Record::Attempt { task_id: 1_000_001, attempts: 4 },
        Record::DeadLetter { task_id: 1_000_001, reason: "gave up".into() },
    ])
    .unwrap();
    let most = churn(&mut wal, 200_000, |id| id % 1000 == 0);
    assert!(most <= 4, "up to {most} segments: sparse ones must be compacted forward");
    assert!(wal.segment_paths().len() <= 3, "{:?}", wal.segment_paths());
    assert_eq!(wal.stats().live_tasks, 201);
    drop(wal);

    let (mut wal, rec) = open(dir.path(), opts(1 << 20));
    let mut expected: Vec<u64> = (1..=200).map(|i| i * 1000).collect();
    expected.push(1_000_001);
    assert_eq!(ids(&rec), expected);
    let dead = rec.tasks.last().unwrap();
    assert_eq!((dead.attempts, dead.dead_reason.as_deref()), (4, Some("gave up")));
    assert_eq!(dead.body.len(), 300);
    assert!(rec.tasks.iter().filter(|t| t.task_id < 1_000_000).all(|t| t.body.len() == 256));
    assert_eq!(rec.idempotency.len(), 1);
    assert_eq!((rec.idempotency[0].key.as_str(), rec.idempotency[0].task_id), ("q/k", 1_000_000));
    assert_eq!(rec.max_task_id, 1_000_001);

    // Once the key expires and the tasks are acked, everything but the newest segment goes.
    let all: Vec<Record> = expected.iter().map(|&id| ack(id)).collect();
    wal.append(&all).unwrap();
    wal.sync().unwrap();
    while wal.maintain(expires + 1).unwrap() == Upkeep::Pending {}
    assert_eq!(wal.segment_paths().len(), 1);
    drop(wal);
    let (_, rec) = open(dir.path(), opts(1 << 20));
    assert!(rec.tasks.is_empty());
    assert_eq!(rec.max_task_id, 1_000_001, "the newest segment's header remembers the largest id");
}

#[test]
fn results_pushed_out_soon_are_not_copied_forward_by_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions { max_results: 500, ..opts(64 << 10) };
    let (mut wal, _) = open(dir.path(), o.clone());
    // A long-lived task pins the first segment; then a steady stream of finished tasks, each kept.
    wal.append(&[enq(1, 300)]).unwrap();
    let expires = now_unix_ms() + 3_600_000;
    let mut written = 1u64;
    for batch in 0..200u64 {
        let finishes: Vec<Record> = (0..25)
            .map(|i| Record::Finish {
                task_id: 10 + batch * 25 + i,
                expires_unix_ms: expires + batch,
                body: Bytes::from(vec![b'r'; 100]),
            })
            .collect();
        written += finishes.len() as u64;
        wal.append(&finishes).unwrap();
        wal.sync().unwrap();
        while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    }
    // Beyond the appended records: a Checkpoint per idle maintain (200) and the long-lived task carried at
    // each compaction of its segment. Copying the oldest segment's kept results forward as well wrote 1,306.
    let extra = wal.next_seq - 1 - written;
    assert!(extra <= 230, "{extra} records written beyond the appended ones");
    assert!(wal.segment_paths().len() <= 4, "{:?}", wal.segment_paths());
    drop(wal);
    let (_, rec) = open(dir.path(), o);
    assert_eq!(ids(&rec), vec![1], "the long-lived task survives");
    let got: Vec<u64> = rec.results.iter().map(|r| r.task_id).collect();
    let newest: Vec<u64> = (10 + 5000 - 500..10 + 5000).collect();
    assert_eq!(got, newest, "the newest results are kept");
}

#[test]
fn a_compaction_spread_over_many_calls_carries_records_larger_than_a_slice_and_those_cut_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let big = super::compaction::COMPACT_SLICE + 50_000;
    let o = WalOptions { max_record_bytes: 2 * big, ..opts(4 << 20) };
    let (mut wal, _) = open(dir.path(), o.clone());
    wal.faults.one_slice = true;
    // Long-lived tasks, two larger than a slice, among many short-lived ones of odd sizes (so records are cut
    // by slice ends), then enough churn to roll the first segment and leave it sparse.
    let keep = |id: u64| id.is_multiple_of(997) || id == 5 || id == 6000;
    let size = |id: u64| if id == 5 || id == 6000 { big } else { 200 + (id % 13) as usize * 37 };
    let mut pending_calls = 0;
    let mut previous: Vec<u64> = Vec::new();
    for first in (1..=40_000u64).step_by(50) {
        let batch: Vec<u64> = (first..first + 50).collect();
        let mut records: Vec<Record> = batch.iter().map(|&id| enq(id, size(id))).collect();
        records.extend(previous.iter().filter(|&&id| !keep(id)).map(|&id| ack(id)));
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        // One slice per batch, as the commit thread does between groups.
        if wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {
            pending_calls += 1;
        }
        previous = batch;
    }
    wal.append(&previous.iter().filter(|&&id| !keep(id)).map(|&id| ack(id)).collect::<Vec<_>>()).unwrap();
    wal.sync().unwrap();
    while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    assert!(pending_calls >= 10, "compactions took {pending_calls} extra calls: not spread over slices");
    let expected: Vec<u64> = (1..=40_000u64).filter(|&id| keep(id)).collect();
    assert!(wal.segment_paths().len() <= 3, "{:?}", wal.segment_paths());
    assert_eq!(wal.stats().live_tasks, expected.len() as u64);
    drop(wal);
    let (_, rec) = open(dir.path(), o);
    assert_eq!(ids(&rec), expected);
    for t in &rec.tasks {
        assert!(t.body == body(t.task_id, size(t.task_id)), "task {} came back with another body", t.task_id);
    }
}

#[test]
fn failed_write_is_rolled_back_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(64 << 10));
    wal.append(&[enq(1, 100), enq(2, 100)]).unwrap();
    let size = record_spans(&newest(&wal))[0].1 - HEADER_LEN;
    // The failed batch gets all but its last byte onto the disk, and clearing it fails too:
    // its first two records are complete, valid, and would chain after a shorter next batch.
    wal.faults.fail_writes = 2;
    wal.faults.write_prefix = 3 * size - 1;
    let err = wal.append(&[enq(10, 100), enq(11, 100), enq(12, 100)]).unwrap_err();
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert_eq!(wal.stats().live_tasks, 2, "nothing of the failed batch is applied");
    wal.append(&[enq(20, 100)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (mut wal, rec) = open(dir.path(), opts(64 << 10));
    assert_eq!(ids(&rec), vec![1, 2, 20], "the failed batch must not come back");

    // A failed write whose clean-up succeeds: same outcome.
    wal.faults.fail_writes = 1;
    wal.faults.write_prefix = 50;
    assert!(wal.append(&[enq(30, 100)]).is_err());
    wal.append(&[enq(31, 100)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(ids(&open(dir.path(), opts(64 << 10)).1), vec![1, 2, 20, 31]);
}

#[test]
fn full_disk_at_segment_creation_fails_the_batch_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(8 << 10));
    let mut id = 0;
    while wal.segment_paths().len() == 1 {
        id += 1;
        wal.append(&[enq(id, 500)]).unwrap();
    }
    // The next batch needs a new segment and the disk is full.
    let segs = wal.segment_paths().len();
    for _ in 0..20 {
        id += 1;
        wal.faults.fail_create = Some(libc::ENOSPC);
        match wal.append(&[enq(id, 500)]) {
            Ok(()) => continue,
            Err(StoreError::NoSpace { path }) => {
                assert!(path.starts_with(dir.path()));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wal.segment_paths().len(), segs, "no segment was created");
    let failed = id;
    wal.faults.fail_create = None;
    wal.append(&[enq(failed + 1, 500)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    let (_, rec) = open(dir.path(), opts(8 << 10));
    let mut expected: Vec<u64> = (1..failed).collect();
    expected.push(failed + 1);
    assert_eq!(ids(&rec), expected);
}

#[test]
fn failed_fsync_disables_the_store_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(64 << 10));
    wal.append(&[enq(1, 10)]).unwrap();
    wal.sync().unwrap();
    wal.append(&[enq(2, 10)]).unwrap();
    wal.faults.fail_sync = true;
    assert!(wal.sync().is_err());
    let err = wal.append(&[enq(3, 10)]).unwrap_err();
    assert!(err.to_string().contains("restart"), "{err}");
    assert!(wal.sync().is_err() && wal.maintain(0).is_err());
    drop(wal);
    let (_, rec) = open(dir.path(), opts(64 << 10));
    assert_eq!(ids(&rec)[0], 1);
}

#[test]
fn oversized_record_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(64 << 10));
    let err = wal.append(&[enq(1, 10), enq(2, 5000)]).unwrap_err();
    assert!(matches!(err, StoreError::RecordTooLarge { max: 4096, .. }), "{err}");
    wal.append(&[enq(3, 10)]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    assert_eq!(ids(&open(dir.path(), opts(64 << 10)).1), vec![3]);
}

#[test]
fn max_task_id_comes_from_the_header_floor_after_old_segments_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), opts(8 << 10));
    wal.append(&[enq(9_999, 10), ack(9_999)]).unwrap();
    for id in 1..=200 {
        wal.append(&[enq(id, 200), ack(id)]).unwrap();
        while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    }
    wal.sync().unwrap();
    while wal.maintain(now_unix_ms()).unwrap() == Upkeep::Pending {}
    assert!(!wal.segment_paths()[0].ends_with(super::segment::segment_name(0)), "segment 0 was deleted");
    drop(wal);
    assert_eq!(open(dir.path(), opts(8 << 10)).1.max_task_id, 9_999);
}

#[test]
fn options_are_validated() {
    assert_eq!(WalOptions::default().validate(), Ok(()));
    let bad = [
        WalOptions { segment_bytes: 1000, ..WalOptions::default() },
        WalOptions { max_record_bytes: 64 << 20, ..WalOptions::default() },
        WalOptions { max_record_bytes: 10, ..WalOptions::default() },
        WalOptions { compact_live_ratio: 1.0, ..WalOptions::default() },
        WalOptions { compact_live_ratio: f64::NAN, ..WalOptions::default() },
    ];
    for opts in bad {
        assert!(opts.validate().is_err(), "{opts:?}");
        let dir = tempfile::tempdir().unwrap();
        assert!(Wal::open(dir.path(), opts).is_err());
    }
}

#[test]
fn unsynced_bytes_are_handed_to_writeback_and_a_sync_restarts_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let step = 64 << 10;
    let (mut wal, _) = open(dir.path(), WalOptions { writeback_bytes: step, ..opts(4 << 20) });
    // ~300 KiB, never synced (as with --fsync none).
    for id in 1..=300 {
        wal.append(&[enq(id, 1000)]).unwrap();
    }
    let hints = wal.faults.written_back.clone();
    assert!(!hints.is_empty());
    let mut at = HEADER_LEN as u64;
    for r in &hints {
        assert_eq!(r.start, at, "contiguous: {hints:?}");
        assert!(r.end - r.start >= step, "{hints:?}");
        at = r.end;
    }
    assert!(at <= wal.active.pos);
    // After a sync the count starts at the synced end: less than a step more asks for nothing.
    wal.sync().unwrap();
    let synced = wal.active.pos;
    wal.faults.written_back.clear();
    for id in 301..=340 {
        wal.append(&[enq(id, 1000)]).unwrap();
    }
    assert!(wal.faults.written_back.is_empty(), "{:?}", wal.faults.written_back);
    // A step more asks again (once the request before the sync has ended).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut id = 341;
    while wal.faults.written_back.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no writeback asked for");
        wal.append(&[enq(id, 1000)]).unwrap();
        id += 1;
    }
    assert_eq!(wal.faults.written_back[0].start, synced);
    drop(wal);
    let (_, rec) = open(dir.path(), opts(4 << 20));
    assert_eq!(ids(&rec), (1..id).collect::<Vec<_>>(), "writing back early changes nothing on disk");
}

#[test]
fn no_writeback_hints_when_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = open(dir.path(), WalOptions { writeback_bytes: 0, ..opts(4 << 20) });
    for id in 1..=300 {
        wal.append(&[enq(id, 1000)]).unwrap();
    }
    assert!(wal.faults.written_back.is_empty());
}
