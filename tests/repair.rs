//! A start refused for corruption, and `pm-scheduler repair`, through the real binary: the node names the
//! damaged file and offset and points at the repair; the repair refuses to act without a confirmation, then
//! keeps every task before the damage, sets the rest aside, and the node starts again with ids that do not
//! repeat.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pm_client::ConnectOptions;
use pm_testkit::{bin, Scheduler};

fn repair(data: &Path, extra: &[&str]) -> Output {
    Command::new(bin("pm-scheduler"))
        .args(["repair", "--data"])
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn a_node_refused_for_corruption_starts_again_after_a_repair() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Scheduler::start_in(&data, &[]);
    let p = s.client(ConnectOptions::producer()).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        // One submit at a time: each is synced before the next, so damage to an early one is provably durable.
        ids.push(p.submit_one(pm_tests::task("repair", format!("task {i}").as_bytes())).await.unwrap());
    }
    drop(p);
    s.terminate(Duration::from_secs(10));
    let segment = data.join("wal").join(format!("wal-{:020}.log", 0));
    let mut bytes = std::fs::read(&segment).unwrap();
    // Inside a record some way in: past the header (48 bytes) and the first few records.
    let at = 48 + 400;
    assert!(bytes[at..at + 16].iter().any(|&b| b != 0), "no record at {at}");
    bytes[at] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();

    // Refused, naming the file and offset, and pointing at the repair.
    let refused = s.spawn().unwrap_err();
    assert!(refused.contains("corrupt record in") && refused.contains(&segment.display().to_string()), "{refused}");
    assert!(refused.contains("pm-scheduler repair --data"), "{refused}");

    // Without a terminal and without --yes, nothing changes.
    let o = repair(&data, &[]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(text(&o).contains("give --yes") && text(&o).contains("nothing changed"), "{}", text(&o));
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "the log was touched without a confirmation");

    let o = repair(&data, &["--yes"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains(&segment.display().to_string()) && out.contains("lost: the tasks submitted"), "{out}");
    assert!(out.contains("repaired: the node starts with the records before offset"), "{out}");
    let backup = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wal-repair-"));
    let backup = backup.unwrap_or_else(|| panic!("no wal-repair-* directory in {}", data.display()));
    assert_eq!(std::fs::read(backup.join(segment.file_name().unwrap())).unwrap(), bytes, "the damaged file is kept");
    assert!(text(&repair(&data, &[])).contains("nothing to repair"));

    // The node starts: the tasks before the damage are there, those after it are gone, new ids are new.
    s.spawn().unwrap();
    let p = s.client(ConnectOptions::producer()).await;
    let mut kept = 0;
    for id in &ids {
        let st = p.status(vec![*id]).await.unwrap().remove(0);
        if st.code == pm_protocol::ErrorCode::Ok as i32 {
            kept += 1;
        }
    }
    assert!(kept > 0 && kept < ids.len(), "{kept} of {} tasks kept", ids.len());
    let new = p.submit_one(pm_tests::task("repair", b"after")).await.unwrap();
    assert!(new > *ids.iter().max().unwrap(), "task id {new} was given before");
}
