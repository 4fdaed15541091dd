//! The original pod layout, on host processes: one agent with `--work-dir /mnt/pipe --pod-dir /mnt/pipe/.pm
//! --concurrency 1`, whose task directories are then shared (the work directory itself, one task at a time).
//!
//! - The original project's OCR task (`examples/ocr-original.json`) runs with its commands unchanged (only its
//!   URLs point at a local HTTP server serving three generated images under the original names) on three real
//!   `pm-agent exec` executors: `wget`, `tesseract` and `mc`, a small stand-in over rclone writing to a local
//!   bucket directory. The task writes to absolute `/mnt/pipe/...` paths, so it runs in `/mnt/pipe` itself:
//!   the test creates `/mnt/pipe` when it is free (CI runs as root) and removes it afterwards; it refuses to
//!   run if `/mnt/pipe` holds anything but an earlier run's leftovers. Only where `/mnt/pipe` cannot be
//!   created (not root) is the `/mnt/pipe` prefix of the task rewritten to a temporary directory, and the test
//!   says so on stderr.
//! - A second task in the shared layout starts in an emptied directory (after a failed task, whose files were
//!   kept until then); a resumed retry finds its files.
//! - `--task-dirs shared` with `--concurrency 2` is refused, and so is a work directory holding someone else's
//!   files (exit 64, the files untouched).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pm_testkit::{bin, free_addr, wait_for, Scheduler};
use pm_tests::submit_json;

/// The workspace root (where `examples/` is).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The three images of the original task, in GNU `ls -v` order, each with the text drawn on it.
const IMAGES: [(&str, &str); 3] = [
    ("2rb88.png", "ALPHA BRAVO ONE"),
    ("Cleartype-vs-Standard-Antialiasing.gif", "CHARLIE DELTA TWO"),
    ("text-photographed-eng.jpg", "ECHO FOXTROT THREE"),
];
/// The bucket the original task creates.
const BUCKET: &str = "buckets/5840e11b-2117-4036-a6e6-bcff03fbd3c9";
/// The original task's volume.
const PIPE: &str = "/mnt/pipe";

/// `mc` (the MinIO client) over rclone, as much of it as the original task uses: `mc mb ALIAS/BUCKET` and
/// `mc cp [--recursive] SRC ALIAS/BUCKET[/PATH]`, into the local directory `$MC_ROOT` (one directory per alias).
const MC_SHIM: &str = r#"#!/bin/sh
set -e
cmd=$1; shift
case "$cmd" in
  mb) exec rclone --config /dev/null mkdir ":local:$MC_ROOT/$1" ;;
  cp) if [ "$1" = --recursive ]; then shift; fi
      exec rclone --config /dev/null copy "$1" ":local:$MC_ROOT/$2" ;;
  *) echo "mc stand-in: $cmd is not supported" >&2; exit 2 ;;
esac
"#;

/// Child processes, killed when dropped (before the volume is removed).
#[derive(Default)]
struct Processes(Vec<Child>);

impl Processes {
    fn spawn(&mut self, cmd: &mut Command) {
        self.0.push(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}")));
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the original task's `/mnt/pipe` is: `/mnt/pipe` itself, or (only where it cannot be created) a
/// temporary directory. Removes what the test made there when dropped.
struct Volume {
    path: PathBuf,
    /// The test created `/mnt/pipe`: removed whole afterwards (else only the agent's entries).
    created: bool,
}

impl Volume {
    fn new(tmp: &Path) -> Volume {
        let pipe = Path::new(PIPE);
        if pipe.exists() {
            let mut left: Vec<String> = std::fs::read_dir(pipe)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".pm" && n != ".pm-shared")
                .collect();
            left.sort();
            assert!(
                left.is_empty(),
                "{PIPE} exists and holds {left:?}: this test runs the original task there and empties it; \
                 move those away first"
            );
            return Volume { path: pipe.to_path_buf(), created: false };
        }
        match std::fs::create_dir_all(pipe) {
            Ok(()) => Volume { path: pipe.to_path_buf(), created: true },
            Err(e) => {
                let path = tmp.join("pipe");
                eprintln!("cannot create {PIPE} ({e}): the task's {PIPE} prefix is rewritten to {}", path.display());
                std::fs::create_dir_all(&path).unwrap();
                Volume { path, created: false }
            }
        }
    }

    fn is_original(&self) -> bool {
        self.path == Path::new(PIPE)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if self.is_original() {
            let _ = std::fs::remove_dir_all(self.path.join(".pm"));
            let _ = std::fs::remove_file(self.path.join(".pm-shared"));
        }
    }
}

fn need(tool: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap().status.success();
    assert!(found, "{tool} is missing (apt-get install tesseract-ocr wget rclone python3-pil fonts-dejavu-core)");
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Starts `pm-agent run` against `server` with `args`, its stderr into `log`.
fn agent(server: &str, args: &[&str], log: &Path) -> Command {
    let mut cmd = Command::new(bin("pm-agent"));
    cmd.args(["run", "--server", server])
        .args(args)
        .env("PM_API_LISTEN", "off")
        // Each task's outcome ("task done") is a DEBUG line, which the tests read.
        .env("RUST_LOG", "info,pm_agent::agent=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn the_original_ocr_task_runs_unchanged_in_the_original_pod_layout() {
    for tool in ["tesseract", "wget", "rclone", "/usr/bin/python3"] {
        need(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let vol = Volume::new(tmp.path());
    let pipe = vol.path.clone();
    let pods = pipe.join(".pm");
    let mut procs = Processes::default();

    // The web server, serving the three images under their original names.
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (name, text) in IMAGES {
        let made = Command::new("/usr/bin/python3")
            .arg(root().join("examples/ocr/make_page.py"))
            .arg(www.join(name))
            .arg(text)
            .status()
            .unwrap();
        assert!(made.success(), "make_page.py {name}");
    }
    let web = free_addr("127.0.0.1");
    let port = web.rsplit(':').next().unwrap();
    procs.spawn(
        Command::new("/usr/bin/python3")
            .args(["-m", "http.server", port, "--bind", "127.0.0.1", "--directory"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );

    // The three utility containers: `pm-agent exec` with the utility on its PATH (`mc` is the stand-in).
    let shims = tmp.path().join("bin");
    std::fs::create_dir_all(&shims).unwrap();
    let mc = shims.join("mc");
    std::fs::write(&mc, MC_SHIM).unwrap();
    std::fs::set_permissions(&mc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bucket = tmp.path().join("bucket");
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap_or_default());
    for name in ["wget", "tesseract", "mc"] {
        procs.spawn(
            Command::new(bin("pm-agent"))
                .args(["exec", "--name", name, "--listen"])
                .arg(format!("unix://{}/{name}.sock", pods.display()))
                .env("PATH", &path)
                .env("MC_ROOT", &bucket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
    }
    for name in ["wget", "tesseract", "mc"] {
        wait_for(Duration::from_secs(10), "the executors' sockets", || {
            std::os::unix::net::UnixStream::connect(pods.join(format!("{name}.sock"))).ok()
        });
    }
    wait_for(Duration::from_secs(10), "the web server", || std::net::TcpStream::connect(&web).ok());

    // The agent as in the pod: the default --task-dirs (auto) picks the shared layout.
    let s = Scheduler::start(&[]);
    let log = tmp.path().join("agent.log");
    let (p, d) = (pipe.to_str().unwrap(), pods.to_str().unwrap());
    procs.spawn(&mut agent(&s.addr, &["--work-dir", p, "--pod-dir", d, "--concurrency", "1"], &log));

    // The original task, its URLs pointed at the web server (and, only off /mnt/pipe, its paths moved).
    let mut task = read(&root().join("examples/ocr-original.json")).replace("web:8080", &web);
    if !vol.is_original() {
        task = task.replace(PIPE, p);
    }
    submit_json(&s, &task);

    // The typo makes every image write `{file%.*}.txt.txt`: the last image in `ls -v` order wins.
    let uploaded = bucket.join(BUCKET);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = read(&uploaded.join("{file%.*}.txt.txt"));
        if !text.trim().is_empty() {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "no text in the bucket; agent log:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(text.trim(), IMAGES[2].1, "agent log:\n{}", read(&log));
    for (name, _) in IMAGES {
        assert!(uploaded.join(name).exists(), "{name} was uploaded with the rest of {PIPE}");
    }
    // Acked, and the shared directory emptied: only the socket directory and the marker stay.
    wait_for(Duration::from_secs(20), "the task to be acked", || read(&log).contains("task done").then_some(()));
    assert_eq!(names(&pipe), [".pm", ".pm-shared"]);
    assert!(read(&log).contains("work directory itself (shared)"), "auto picked shared; log:\n{}", read(&log));
    drop(procs);
}

#[tokio::test]
async fn a_shared_task_starts_in_an_emptied_directory_and_a_resumed_one_finds_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (work, out) = (tmp.path().join("work"), tmp.path().join("out"));
    std::fs::create_dir_all(&out).unwrap();
    let s = Scheduler::start(&[]);
    let log = tmp.path().join("agent.log");
    let args = ["--work-dir", work.to_str().unwrap(), "--task-dirs", "shared", "--concurrency", "1"];
    let mut procs = Processes::default();
    procs.spawn(agent(&s.addr, &args, &log).args(["--retry-backoff-ms", "10"]));

    // A failed task: its files stay until the next task.
    submit_json(
        &s,
        &format!(
            r#"{{"maxAttempts":1,"pipeline":[{{"executorName":"sh","commands":["echo left > leftover.txt; mkdir sub; touch {}/failed; exit 1"]}}]}}"#,
            out.display()
        ),
    );
    wait_for(Duration::from_secs(20), "the failed task", || out.join("failed").exists().then_some(()));
    wait_for(Duration::from_secs(20), "the failed task's files", || work.join("sub").exists().then_some(()));
    assert_eq!(read(&work.join("leftover.txt")), "left\n");

    // The next task runs in the work directory itself ($PIPE_DIR), emptied first.
    submit_json(
        &s,
        &format!(
            r#"{{"pipeline":[{{"executorName":"sh","commands":["pwd > {0}/pwd; echo $PIPE_DIR >> {0}/pwd; ls -A > {0}/listing"]}}]}}"#,
            out.display()
        ),
    );
    let listing = wait_for(Duration::from_secs(20), "the second task", || {
        Some(read(&out.join("listing"))).filter(|l| !l.is_empty())
    });
    assert_eq!(listing, ".pm-shared\n", "agent log:\n{}", read(&log));
    let work = work.canonicalize().unwrap();
    assert_eq!(read(&out.join("pwd")), format!("{0}\n{0}\n", work.display()));

    // A resumed retry keeps what its first attempt left (and skips the step it completed).
    submit_json(
        &s,
        &format!(
            r#"{{"resume":true,"maxAttempts":2,"pipeline":[{{"executorName":"sh","commands":["echo x >> one"]}},
                {{"executorName":"sh","commands":["test -e tried || {{ touch tried; exit 1; }}","cp one {}/one"]}}]}}"#,
            out.display()
        ),
    );
    let one = wait_for(Duration::from_secs(20), "the resumed task", || {
        Some(read(&out.join("one"))).filter(|t| !t.is_empty())
    });
    assert_eq!(one, "x\n", "step 1 ran once and its file survived the retry; agent log:\n{}", read(&log));
    wait_for(Duration::from_secs(20), "the work directory to be emptied after success", || {
        (names(&work) == [".pm-shared"]).then_some(())
    });
}

/// Runs `pm-agent run` with `args` (no scheduler is reached: it must refuse before connecting).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin("pm-agent"))
        .args(["run", "--server", "127.0.0.1:1"])
        .args(args)
        .env("PM_API_LISTEN", "off")
        // Each task's outcome ("task done") is a DEBUG line, which the tests read.
        .env("RUST_LOG", "info,pm_agent::agent=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn shared_task_directories_refuse_concurrency_and_someone_elses_files() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let w = work.to_str().unwrap();

    let (code, err) = refused(&["--work-dir", w, "--task-dirs", "shared", "--concurrency", "2"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--task-dirs shared runs one task at a time") && err.contains("--concurrency is 2"), "{err}");

    // A directory with a user's files and no marker: refused, nothing touched.
    std::fs::write(work.join("thesis.tex"), "years of work").unwrap();
    let pods = work.join(".pm");
    let (code, err) = refused(&["--work-dir", w, "--pod-dir", pods.to_str().unwrap(), "--concurrency", "1"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("`thesis.tex`") && err.contains(".pm-shared") && err.contains("per-task"), "{err}");
    assert_eq!(read(&work.join("thesis.tex")), "years of work");
    assert!(!work.join(".pm-shared").exists());

    // Emptied by hand, it is taken (the marker is written); --keep-task-dirs there is warned about.
    std::fs::remove_file(work.join("thesis.tex")).unwrap();
    let s = Scheduler::start(&[]);
    let log = tmp.path().join("agent.log");
    let mut procs = Processes::default();
    let args = ["--work-dir", w, "--task-dirs", "shared", "--concurrency", "1", "--keep-task-dirs"];
    procs.spawn(&mut agent(&s.addr, &args, &log));
    wait_for(Duration::from_secs(10), "the warning", || {
        read(&log).contains("kept only until the next task starts").then_some(())
    });
    assert!(work.join(".pm-shared").exists(), "taken: the marker is written");
}
