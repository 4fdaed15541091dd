//! The WAL on a real disk: a full disk refuses submits with a clear error and acknowledges nothing it could
//! not persist, then recovers when space returns; a flipped bit in an old record stops the node from starting
//! with a message naming the file and the offset.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use pm_client::ConnectOptions;
use pm_protocol::ErrorCode;
use pm_testkit::Scheduler;
use pm_tests::{next_lease, task};

/// A small tmpfs, unmounted on drop.
struct Tmpfs(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&mnt).status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "mounting a tmpfs failed: this test needs root (CAP_SYS_ADMIN) to create a small full disk"
        );
        Tmpfs(mnt, dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(path: &Path, bytes: usize) {
    let _ = std::fs::write(path, vec![7u8; bytes]);
}

#[tokio::test]
async fn full_disk_refuses_submits_and_recovers() {
    full_disk(false).await;
}

/// Regression: with its own log on the full disk, a failed log write once panicked a shard (tracing's
/// internal-error `eprintln!`), and that shard's requests then hung forever.
#[tokio::test]
async fn full_disk_with_the_log_on_it_too() {
    full_disk(true).await;
}

async fn full_disk(log_on_same_disk: bool) {
    let fs = Tmpfs::mount("2m");
    let data = fs.0.join("data");
    let args = ["--max-frame-bytes", "65536", "--max-payload-bytes", "16384", "--segment-bytes", "262144"];
    let log = fs.0.join("scheduler.log");
    let mut s = Scheduler::start_logging_to(&data, log_on_same_disk.then_some(log.as_path()), &args);
    // Leave room for only a few segments.
    let filler = fs.0.join("filler");
    fill(&filler, 1024 * 1024);
    let p = s.client(ConnectOptions::producer()).await;
    let mut acked = BTreeSet::new();
    let mut refused = 0;
    let payload = vec![b'x'; 8000];
    for _ in 0..400 {
        let results = match p.submit(vec![task("d", &payload)]).await {
            Ok(r) => r,
            Err(e) => panic!("submit failed: {e}; scheduler log:\n{}", s.log_tail()),
        };
        match ErrorCode::try_from(results[0].code).unwrap() {
            ErrorCode::Ok => {
                acked.insert(results[0].task_id);
            }
            ErrorCode::StoreFull => {
                refused += 1;
                assert!(results[0].message.contains("space"), "{}", results[0].message);
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}: {}", results[0].message),
        }
    }
    assert!(refused >= 3, "the disk never filled up ({} acked)", acked.len());
    assert!(!acked.is_empty());

    // Space returns: submits work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut back = false;
    for _ in 0..50 {
        let r = p.submit(vec![task("d", &payload)]).await.unwrap();
        if r[0].code == 0 {
            acked.insert(r[0].task_id);
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "submits must succeed again once space returns");

    // Everything acknowledged is there after a crash, and nothing else.
    drop(p);
    s.kill();
    s.restart();
    let (a, mut leases) = s.agent().await;
    a.credit("d", acked.len() as u32 + 10).await.unwrap();
    let mut got = BTreeSet::new();
    for _ in 0..acked.len() {
        let t = next_lease(&mut leases).await;
        got.insert(t.task_id);
        a.ack(vec![(t.lease_id, Bytes::new())]).await.unwrap();
    }
    assert_eq!(got, acked);
    pm_tests::assert_no_lease(&mut leases, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn flipped_bit_in_an_old_record_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Scheduler::start_in(&data, &[]);
    let p = s.client(ConnectOptions::producer()).await;
    for i in 0..20u8 {
        p.submit_one(task("c", &[i; 200])).await.unwrap();
    }
    drop(p);
    s.terminate(Duration::from_secs(10));
    let seg = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .min()
        .expect("a segment file");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip one bit in the payload of an early record: the 200-byte run of task 3's payload.
    let pos = bytes.windows(200).position(|w| w.iter().all(|b| *b == 3)).expect("payload of task 3") + 100;
    bytes[pos] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let out = Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a corrupt log must not open");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = seg.file_name().unwrap().to_string_lossy();
    assert!(err.contains(&*name), "error must name the file: {err}");
    assert!(err.contains("offset"), "error must name the offset: {err}");
    assert!(out.stdout.is_empty(), "nothing may be bound");
}
