//! The OCR application as real pods, in podman: the scheduler in its own container (found by its service
//! name, as in Kubernetes), and the pod `pmctl app render` emits: the init container installing `pm-agent`
//! into the shared `/mnt/pipe`, the wget, tesseract and mc executor containers running `pm-agent exec` from
//! that volume, and the agent. A web container serves the page images under the original task's file names,
//! and a bucket container takes the upload (rclone over WebDAV; the `mc` of the upload image is a small shim
//! over rclone). The task is `examples/ocr-original.json`, the original project's task unchanged but for its
//! three URLs, which point at the web container.
//!
//! A second test kills the scheduler container (SIGKILL, then started again on its volume) while a task runs
//! and three wait, and then an executor container's process mid-command (podman restarts it): every task
//! still succeeds, the interrupted one on its second attempt. A third gives the pod a fourth executor on an
//! image without a shell: a task naming an executor no container serves waits and says why, a task on the
//! shell-less image fails saying so, and the agent keeps serving.
//!
//! Needs the images of `docker/build.sh` in local storage; skips without them unless `PM_IMAGE_TEST=require`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pm_tests::podman::{Podman, Secrets};
use serde_json::Value;

const VERSION: &str = "0.1.0";
const TOKENS: [(&str, &str); 3] =
    [("producer", "pod-test-producer-token"), ("agent", "pod-test-agent-token"), ("admin", "pod-test-admin-token")];

/// A utility image without a shell (the distroless-like base), as a fourth executor of the pod.
const NO_SHELL: &str = "localhost/pipeline-manager/base-static:latest";

fn image(name: &str) -> String {
    format!("pipeline-manager/{name}:{VERSION}")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The original task, and the (file name, URL path) of each image its wget step fetches.
fn original_task() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join("examples/ocr-original.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let wget = doc["pipeline"].as_array().unwrap().iter().find(|s| s["executorName"] == "wget").unwrap();
    let names = wget["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str()?.split_whitespace().find_map(|w| w.strip_prefix("/mnt/pipe/")))
        .map(String::from)
        .collect();
    (text, names)
}

/// `pmctl app render` of the test's application: the OCR pod, against the scheduler container.
fn rendered_deployment(dir: &Path) -> Value {
    let spec = format!(
        "name: ocr\nnamespace: pods\nqueue: ocr\nconcurrency: 1\n\
         scheduler: {{address: \"pipeline-manager:7070\", tokenSecret: {{name: pm-tokens, key: agent}}}}\n\
         agent: {{image: \"{agent}\"}}\n\
         executors:\n\
         - {{name: wget, image: \"{wget}\"}}\n\
         - {{name: tesseract, image: \"{tesseract}\"}}\n\
         - {{name: mc, image: \"{mc}\", envFrom: [{{secretRef: {{name: ocr-bucket}}}}]}}\n\
         - {{name: noshell, image: \"{noshell}\"}}\n",
        agent = image("pm-agent"),
        wget = image("ocr-wget"),
        tesseract = image("ocr-tesseract"),
        mc = image("ocr-mc"),
        noshell = NO_SHELL,
    );
    let path = dir.join("app.yaml");
    std::fs::write(&path, spec).unwrap();
    let out = Command::new(pm_testkit::bin("pmctl")).args(["app", "render"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
    docs.into_iter().find(|d| d["kind"] == "Deployment").expect("a Deployment")
}

/// `pmctl ARGS` against `server` as a producer (as an admin for `stats`).
fn pmctl(server: &str, args: &[&str]) -> (bool, String) {
    let token = if args.first() == Some(&"stats") { TOKENS[2].1 } else { TOKENS[0].1 };
    let out = Command::new(pm_testkit::bin("pmctl"))
        .args(["--server", server, "--token", token])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The OCR application running: the web, bucket and scheduler containers and the application pod.
struct Ocr {
    p: Podman,
    tmp: tempfile::TempDir,
    scheduler: String,
    bucket: String,
    pod: String,
    /// The original task, and the file names of its images.
    task: String,
    names: Vec<String>,
}

impl Ocr {
    /// Starts it all, or `None` when the test must skip (no podman or no images).
    fn start(test: &str) -> Option<Ocr> {
        let mut images: Vec<String> =
            ["pm-scheduler", "pm-agent", "ocr-wget", "ocr-tesseract", "ocr-mc"].map(image).into();
        images.push(NO_SHELL.into());
        let p = match Podman::start(test, &images.iter().map(String::as_str).collect::<Vec<_>>()) {
            Ok(p) => p,
            Err(why) => {
                Podman::skip(&why);
                return None;
            }
        };
        let tmp = tempfile::tempdir().unwrap();
        let (task, names) = original_task();
        assert_eq!(names.len(), 3, "the original fetches three images: {names:?}");

        // The page images, each with a text of its own, served under the original file names.
        let www = tmp.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (i, name) in names.iter().enumerate() {
            let text = format!("IMAGE NUMBER {} SAYS HELLO", ["ONE", "TWO", "THREE"][i]);
            let status = Command::new("/usr/bin/python3")
                .arg(root().join("examples/ocr/make_page.py"))
                .arg(www.join(name))
                .arg(&text)
                .status()
                .unwrap();
            assert!(status.success(), "make_page.py {name}");
        }
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(tmp.path()).status();
        let www_mount = format!("{}:/www:ro", www.display());
        p.container(
            "web",
            &["--network-alias", "web", "-v", &www_mount],
            &image("ocr-mc"),
            &["rclone", "serve", "http", "/www", "--addr", ":8080"],
        );
        let bucket_volume = format!("{}:/data", p.volume("bucket"));
        let bucket = p.container(
            "bucket",
            &["--network-alias", "bucket", "-v", &bucket_volume],
            &image("ocr-mc"),
            &["rclone", "serve", "webdav", "/data", "--addr", ":8090"],
        );

        // The scheduler, by its service name.
        let tokens = tmp.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        for (role, token) in TOKENS {
            std::fs::write(tokens.join(role), format!("{token}\n")).unwrap();
        }
        let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&tokens).status();
        let token_mount = format!("{}:/etc/pm-tokens:ro", tokens.display());
        let data = format!("{}:/var/lib/pipeline-manager", p.volume("data"));
        let scheduler_args = [
            "--listen",
            "0.0.0.0:7070",
            "--http-listen",
            "0.0.0.0:7072",
            "--data",
            "/var/lib/pipeline-manager",
            "--producer-token-file",
            "/etc/pm-tokens/producer",
            "--agent-token-file",
            "/etc/pm-tokens/agent",
            "--admin-token-file",
            "/etc/pm-tokens/admin",
        ];
        let scheduler = p.container(
            "scheduler",
            &["--network-alias", "pipeline-manager", "-v", &data, "-v", &token_mount, "-p", "127.0.0.1::7070"],
            &image("pm-scheduler"),
            &scheduler_args,
        );
        let server = format!("127.0.0.1:{}", p.host_port(&scheduler, 7070));
        assert!(
            Podman::wait_for(Duration::from_secs(30), || pmctl(&server, &["stats"]).0),
            "the scheduler did not answer\n{}",
            p.logs(&scheduler)
        );

        // The application pod, as rendered.
        let deployment = rendered_deployment(tmp.path());
        let mut secrets = Secrets::new();
        secrets.insert("pm-tokens".into(), vec![("agent".into(), TOKENS[1].1.into())]);
        secrets.insert(
            "ocr-bucket".into(),
            vec![
                ("RCLONE_CONFIG_BUCKETS_TYPE".into(), "webdav".into()),
                ("RCLONE_CONFIG_BUCKETS_URL".into(), "http://bucket:8090".into()),
            ],
        );
        let pod = p.play("ocr", &deployment, &secrets, &[7072]).unwrap_or_else(|e| panic!("{e}"));
        let agent = format!("{pod}-agent");
        let readyz = format!("127.0.0.1:{}", p.host_port(&pod_infra(&p, &pod), 7072));
        assert!(
            Podman::wait_for(Duration::from_secs(60), || pm_tests::http(&readyz, "GET", "/readyz", &[], b"").status
                == 200),
            "the agent never became ready\n{}",
            p.logs(&agent)
        );
        Some(Ocr { p, tmp, scheduler, bucket, pod, task, names })
    }

    /// The scheduler's address from the host (a restarted container gets a new host port).
    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.p.host_port(&self.scheduler, 7070))
    }

    /// Submits task document `json` to the application's queue as a new task (no idempotency key: the same
    /// document twice is two tasks); its id.
    fn submit(&self, json: &str) -> String {
        let file = self.tmp.path().join(format!("task-{}.json", rand_suffix()));
        std::fs::write(&file, json).unwrap();
        let (ok, out) =
            pmctl(&self.server(), &["submit", "--no-idempotency-key", "--queue", "ocr", file.to_str().unwrap()]);
        assert!(ok, "submit: {out}");
        out.split_whitespace().last().unwrap().to_string()
    }

    /// Waits for task `id` to succeed; fails the test with its status and the pod's logs if it does not.
    fn wait_succeeded(&self, id: &str) {
        let (ok, out) = pmctl(&self.server(), &["wait", "--timeout", "180s", id]);
        let logs = || {
            ["exec-wget", "exec-tesseract", "exec-mc", "agent"]
                .map(|c| self.p.logs(&format!("{}-{c}", self.pod)))
                .join("\n")
        };
        assert!(ok, "task {id} did not succeed: {out}\n{}\n{}", pmctl(&self.server(), &["status", id]).1, logs());
    }

    /// The status of task `id` as `pmctl status` prints it.
    fn status(&self, id: &str) -> String {
        pmctl(&self.server(), &["status", id]).1
    }
}

/// A different name each call within this process.
fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn the_original_ocr_task_runs_in_real_pods_and_its_text_lands_in_the_bucket() {
    let Some(o) = Ocr::start("ocr") else { return };
    let (p, task, names) = (&o.p, &o.task, &o.names);

    // The original task, as is, on the application's queue.
    let id = o.submit(task);
    o.wait_succeeded(&id);

    // The original's `{file%.*}.txt` typo: every image wrote `{file%.*}.txt.txt`, the last in `ls -v` order won.
    let last = natural_last(names);
    let n = names.iter().position(|x| *x == last).unwrap();
    let want = ["ONE", "TWO", "THREE"][n];
    let bucket_dir = original_bucket(task);
    let text = p.run(&["exec", &o.bucket, "cat", &format!("/data/{bucket_dir}/{{file%.*}}.txt.txt")]);
    let listing = || p.run(&["exec", &o.bucket, "find", "/data"]).unwrap_or_else(|e| e);
    let status = || o.status(&id);
    let text = text.unwrap_or_else(|e| panic!("{e}\nbucket:\n{}\n{}", listing(), status()));
    assert!(
        text.contains("IMAGE NUMBER") && text.contains(want),
        "the bucket holds {text:?}, not image {want}\n{}",
        status()
    );
}

/// The name `ls -v` lists last (version sort in the C locale: digits, then capitals, then small letters).
fn natural_last(names: &[String]) -> String {
    names.iter().max_by(|a, b| a.as_bytes().cmp(b.as_bytes())).cloned().unwrap_or_default()
}

/// The bucket path the original's `mc mb buckets/<uuid>` makes.
fn original_bucket(task: &str) -> String {
    let i = task.find("mc mb buckets/").expect("the original's mc mb") + "mc mb buckets/".len();
    task[i..].chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-').collect()
}

/// The infra container of `pod`, which holds the pod's published ports.
fn pod_infra(p: &Podman, pod: &str) -> String {
    p.must(&["pod", "inspect", "--format", "{{.InfraContainerID}}", pod])
}

/// A task that runs for a while in the tesseract container, then reads one page image there.
const SLOW_TASK: &str = r#"{"pipeline":[
  {"executorName":"wget","commands":["wget -q -O /mnt/pipe/page.png http://web:8080/2rb88.png"]},
  {"executorName":"tesseract","commands":["sleep 4","tesseract page.png page"]},
  {"executorName":"mc","commands":["test -s page.txt"]}]}"#;

#[test]
fn killed_scheduler_and_executor_containers_lose_no_task() {
    let Some(o) = Ocr::start("faults") else { return };
    let p = &o.p;

    // The scheduler container killed with SIGKILL mid-task, then started again on its volume.
    let first = o.submit(SLOW_TASK);
    let queued: Vec<String> = (0..3).map(|_| o.submit(&o.task)).collect();
    assert!(
        Podman::wait_for(Duration::from_secs(30), || o.status(&first).contains("running")),
        "the slow task never started: {}",
        o.status(&first)
    );
    p.must(&["kill", "-s", "KILL", &o.scheduler]);
    p.must(&["start", &o.scheduler]);
    assert!(
        Podman::wait_for(Duration::from_secs(30), || pmctl(&o.server(), &["stats"]).0),
        "the scheduler did not come back\n{}",
        p.logs(&o.scheduler)
    );
    for id in std::iter::once(&first).chain(&queued) {
        o.wait_succeeded(id);
    }

    // An executor container's process killed with SIGKILL mid-command: podman restarts the container, and the
    // task, failed by the lost command, runs again and succeeds.
    let id = o.submit(SLOW_TASK);
    assert!(
        Podman::wait_for(Duration::from_secs(30), || o.status(&id).contains("running")),
        "the slow task never started: {}",
        o.status(&id)
    );
    std::thread::sleep(Duration::from_secs(2));
    let tesseract = format!("{}-exec-tesseract", o.pod);
    let pid = p.pid(&tesseract);
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    o.wait_succeeded(&id);
    let status = o.status(&id);
    assert!(status.contains("attempt 2/"), "the killed run was retried: {status}");
}

#[test]
fn a_missing_executor_or_a_shell_less_image_is_a_clear_error_and_the_agent_keeps_serving() {
    let Some(o) = Ocr::start("bad") else { return };

    // An executor no container of the pod serves: the task waits, saying why, and is not lost.
    let missing = o.submit(r#"{"pipeline":[{"executorName":"imagemagick","commands":["convert a.png b.jpg"]}]}"#);
    let want = "no connected agent of queue `ocr` has the executors `imagemagick`";
    assert!(Podman::wait_for(Duration::from_secs(10), || o.status(&missing).contains(want)), "{}", o.status(&missing));
    assert!(o.status(&missing).contains("ready"), "still waiting: {}", o.status(&missing));

    // A utility image without a shell: the step fails, saying so.
    let no_shell = o.submit(r#"{"maxAttempts":1,"pipeline":[{"executorName":"noshell","commands":["echo hi"]}]}"#);
    let (ok, out) = pmctl(&o.server(), &["wait", "--timeout", "60s", &no_shell]);
    let status = o.status(&no_shell);
    assert!(!ok, "a task on an image without a shell failed: {out}\n{status}");
    assert!(status.contains("cannot start `sh`"), "{status}");

    // The agent keeps serving: the original task still runs to the end.
    let good = o.submit(&o.task);
    o.wait_succeeded(&good);
    assert!(o.status(&missing).contains("ready"), "the waiting task is still there: {}", o.status(&missing));
}
