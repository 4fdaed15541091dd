//! Chaining against real processes: a task's `onSuccess` / `onFailure` follow-ups are submitted by the
//! scheduler when it finishes, with its id, key and results directory; trees complete and `pmctl flow` shows
//! them; SIGKILLs of the scheduler in the middle of many trees lose no follow-up and double none.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use pm_testkit::{pmctl, Agent, Scheduler};
use pm_tests::submit_json;
use rand::Rng;

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The tasks `pmctl flow ID --json` shows: (depth, task id, state, parent id, children). Every task it names
/// must be known: a follow-up is shown under its parent only once it exists.
fn flow(s: &Scheduler, id: u64) -> Vec<(u64, u64, String, u64, Vec<u64>)> {
    let o = pmctl(&s.addr, &["flow", "--json", &id.to_string()], None);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_ne!(v["state"], "not-found", "the flow of {id} names a task no node knows: {l}");
            let children = v["children"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
            let parent = v["parentId"].as_u64().unwrap_or(0);
            (
                v["depth"].as_u64().unwrap(),
                v["taskId"].as_u64().unwrap(),
                v["state"].as_str().unwrap().into(),
                parent,
                children,
            )
        })
        .collect()
}

/// Polls `pmctl flow` until the tree of `root` has `n` tasks that all succeeded.
fn flow_done(s: &Scheduler, root: u64, n: usize, within: Duration) -> Vec<(u64, u64, String, u64, Vec<u64>)> {
    let deadline = Instant::now() + within;
    loop {
        let tree = flow(s, root);
        if tree.len() == n && tree.iter().all(|t| t.2 == "succeeded") {
            return tree;
        }
        assert!(Instant::now() < deadline, "flow {root} not done: {tree:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A root with three follow-ups, each with one more; every task appends `<name> <its task id>` to `log`.
fn tree(log: &Path, tag: &str) -> String {
    let rec = |name: String| format!("echo {name} $PM_TASK_ID >> {}", log.display());
    let leaf = |name: String| format!(r#"{{"pipeline":[{{"executorName":"sh","commands":["{}"]}}]}}"#, rec(name));
    let children: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"pipeline":[{{"executorName":"sh","commands":["sleep 0.2","{}"]}}],"onSuccess":[{}]}}"#,
                rec(format!("{tag}.c{i}")),
                leaf(format!("{tag}.c{i}.g"))
            )
        })
        .collect();
    format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["sleep 0.2","{}"]}}],"key":"{tag}","onSuccess":[{}]}}"#,
        rec(format!("{tag}.root")),
        children.join(",")
    )
}

#[tokio::test]
async fn follow_ups_run_with_their_parents_values_and_pmctl_flow_shows_the_tree() {
    let s = Scheduler::start(&[]);
    let _agent = Agent::start(&s.addr, &["--concurrency", "4"]);
    let _other = Agent::start(&s.addr, &["--queue", "post"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The root leaves a file in its results directory; its follow-ups read it, one of them on another queue;
    // a failing follow-up's onFailure runs, its onSuccess does not.
    let root = submit_json(
        &s,
        &format!(
            r#"{{"pipeline":[{{"executorName":"sh","commands":["echo from-root > $PM_RESULTS_DIR/data.txt"]}}],
              "key":"cust-7","flowId":"order-42","onSuccess":[
                {{"pipeline":[{{"executorName":"sh","commands":["cat $PM_PARENT_RESULTS_DIR/data.txt > {d}/a.txt","echo $PM_PARENT_TASK_ID $PM_PARENT_KEY $PM_PARENT_STATE $PM_FLOW_ID >> {d}/a.txt"]}}]}},
                {{"pipeline":[{{"executorName":"sh","commands":["echo post $PM_PARENT_TASK_ID > {d}/b.txt"]}}],"queue":"post"}},
                {{"pipeline":[{{"executorName":"sh","commands":["exit 3"]}}],"maxAttempts":1,
                  "onSuccess":[{{"pipeline":[{{"executorName":"sh","commands":["touch {d}/never.txt"]}}]}}],
                  "onFailure":[{{"pipeline":[{{"executorName":"sh","commands":["echo $PM_PARENT_STATE > {d}/c.txt"]}}]}}]}}],
              "onFailure":[{{"pipeline":[{{"executorName":"sh","commands":["touch {d}/never.txt"]}}]}}]}}"#
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let tree = loop {
        let tree = flow(&s, root);
        if tree.len() == 5 && tree.iter().filter(|t| t.2 == "succeeded" || t.2 == "dead").count() == 5 {
            break tree;
        }
        assert!(Instant::now() < deadline, "flow not done: {tree:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert_eq!(read("a.txt"), format!("from-root\n{root} cust-7 succeeded order-42\n"));
    assert_eq!(read("b.txt"), format!("post {root}\n"));
    assert_eq!(read("c.txt"), "failed\n");
    assert!(!dir.path().join("never.txt").exists());
    // Root first, its three children under it (the failed one with its onFailure follow-up), in order.
    let shape: Vec<(u64, String)> = tree.iter().map(|t| (t.0, t.2.clone())).collect();
    let want = [(0, "succeeded"), (1, "succeeded"), (1, "succeeded"), (1, "dead"), (2, "succeeded")];
    assert_eq!(shape, want.map(|(d, s)| (d, s.to_string())).to_vec(), "{tree:?}");
    assert_eq!(tree[0].4.len(), 3);
    assert!(tree[1..].iter().filter(|t| t.0 == 1).all(|t| t.3 == root), "children name their parent");
    // From any task of the flow, the same tree; the human form draws it.
    let from_leaf = flow(&s, tree[4].1);
    assert_eq!(from_leaf.iter().map(|t| t.1).collect::<Vec<_>>(), tree.iter().map(|t| t.1).collect::<Vec<_>>());
    let text = out(&pmctl(&s.addr, &["flow", &root.to_string()], None));
    assert!(text.starts_with(&format!("flow order-42\n{root} succeeded  queue default key cust-7\n")), "{text}");
    // Each follow-up is marked with the branch of its parent that submitted it.
    assert_eq!(text.matches("\n   └─ onSuccess: ").count(), 3, "{text}");
    assert!(text.contains("\n      └─ onFailure: "), "{text}");
    // A bad follow-up is refused at submit, with nothing enqueued.
    let bad = r#"{"pipeline":[{"executorName":"sh","commands":["true"]}],"onSuccess":[{"pipeline":[]}]}"#;
    let file = dir.path().join("bad.json");
    std::fs::write(&file, bad).unwrap();
    let o = pmctl(&s.addr, &["submit", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(65), "{}", out(&o));
    assert!(out(&o).contains("onSuccess[0]"), "{}", out(&o));
}

#[tokio::test]
async fn follow_ups_spelt_with_json_escapes_are_validated_and_chained() {
    let s = Scheduler::start(&[]);
    let _agent = Agent::start(&s.addr, &[]);
    let dir = tempfile::tempdir().unwrap();
    let client = s.client(pm_client::ConnectOptions::producer()).await;
    // `on\u0053uccess` is `onSuccess` to any JSON parser, though its bytes are not.
    let bad = br#"{"pipeline":[{"executorName":"sh","commands":["true"]}],"on\u0053uccess":[{"pipeline":[]}]}"#;
    let e = client.submit_one(pm_tests::task("default", bad)).await.unwrap_err();
    assert_eq!(e.code(), Some(pm_protocol::ErrorCode::InvalidTask), "{e}");
    assert!(e.message().contains("onSuccess[0]"), "{e}");
    let good = format!(
        r#"{{"pipeline":[{{"executorName":"sh","commands":["true"]}}],
            "on\u0053uccess":[{{"pipeline":[{{"executorName":"sh","commands":["touch {}/child"]}}]}}]}}"#,
        dir.path().display()
    );
    let root = client.submit_one(pm_tests::task("default", good.as_bytes())).await.unwrap();
    let tree = flow_done(&s, root, 2, Duration::from_secs(30));
    assert_eq!(tree[1].3, root, "the follow-up names its parent");
    assert!(dir.path().join("child").exists());
}

#[tokio::test]
async fn sigkills_during_many_trees_lose_no_follow_up_and_double_none() {
    const TREES: usize = 16;
    const KILLS: usize = 8;
    let mut s = Scheduler::start(&["--reclaim-grace-ms", "300"]);
    let _agent = Agent::start(&s.addr, &["--concurrency", "8", "--retry-backoff-ms", "10"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ran.log");
    let roots: Vec<u64> = (0..TREES).map(|t| submit_json(&s, &tree(&log, &format!("t{t}")))).collect();
    let mut rng = rand::thread_rng();
    let runs = || std::fs::read_to_string(&log).map(|t| t.lines().count()).unwrap_or(0);
    let mut during = 0;
    let mut last = 0;
    for k in 0..KILLS {
        // Each kill lands at a random moment after the restarted node has made progress again.
        let wait = Instant::now() + Duration::from_secs(10);
        while runs() <= last && runs() < TREES * 7 && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        let before = runs();
        last = before;
        during += usize::from(before > 0 && before < TREES * 7);
        eprintln!("kill {k}: {before} of {} runs done", TREES * 7);
        s.restart(); // SIGKILL, then start again on the same data and address
    }
    assert!(during >= KILLS / 2, "most kills must land while the trees run ({during} of {KILLS} did)");
    // Every task of every tree ran, each node of a tree as exactly one task id (a rerun after a kill keeps its
    // id: at-least-once delivery, but the scheduler submitted each follow-up once).
    let names: BTreeSet<String> = (0..TREES)
        .flat_map(|t| {
            let mut v = vec![format!("t{t}.root")];
            for i in 0..3 {
                v.push(format!("t{t}.c{i}"));
                v.push(format!("t{t}.c{i}.g"));
            }
            v
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let ran = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let mut ran: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        let mut lines = 0;
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if let (Some(name), Some(id)) = (it.next(), it.next().and_then(|i| i.parse().ok())) {
                ran.entry(name.to_string()).or_default().insert(id);
                lines += 1;
            }
        }
        if ran.len() == names.len() {
            eprintln!("{} nodes ran as {lines} runs ({} reruns after kills)", ran.len(), lines - ran.len());
            break ran;
        }
        assert!(
            Instant::now() < deadline,
            "not every node ran: missing {:?}",
            names.iter().filter(|n| !ran.contains_key(*n)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ran.keys().cloned().collect::<BTreeSet<_>>(), names);
    for (name, ids) in &ran {
        assert_eq!(ids.len(), 1, "{name} was submitted as several tasks: {ids:?}");
    }
    // Each tree: 7 tasks, the root with 3 children and each child with one, all succeeded.
    for root in roots {
        let tree = flow_done(&s, root, 7, Duration::from_secs(30));
        assert_eq!(tree[0].4.len(), 3, "{tree:?}");
        assert!(tree.iter().filter(|t| t.0 == 1).all(|t| t.4.len() == 1), "{tree:?}");
    }
}
