//! Kubernetes, offline (no cluster or container engine exists here):
//! - `pmctl app render examples/ocr/app.yaml` is pinned by a golden file;
//! - `pmctl app apply` hands exactly those manifests to `kubectl apply -f -` and passes kubectl's failure on;
//! - the pod that `pmctl app render` describes works: its containers' own commands, arguments and
//!   environment are started as the kubelet would (init container, then the executor sidecars, then the
//!   agent; on shutdown the agent first, the sidecars after it), with `/mnt/pipe` mapped to a temporary
//!   directory, against a real scheduler with tokens and TLS. A pipeline runs across two executors, the probes
//!   answer, and SIGTERM drains the agent while its executors still serve;
//! - both Helm charts and the rendered app pass `charts/check.py` (strict Kubernetes 1.32 schemas, the
//!   ServiceMonitor and ScaledObject CRD schemas, helm lint --strict, the security properties of every pod
//!   spec, and every metric a ScaledObject, alert rule or dashboard names is exported by the real binaries),
//!   and the app chart renders the same manifests as `pmctl app render`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pm_client::ConnectOptions;
use pm_testkit::{bin, wait_for, Scheduler};
use serde_json::Value;

/// The workspace root (where `examples/` and `charts/` are).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn pmctl(args: &[&str]) -> std::process::Output {
    Command::new(bin("pmctl")).args(args).current_dir(root()).output().unwrap()
}

fn render(spec: &Path) -> String {
    let out = pmctl(&["app", "render", spec.to_str().unwrap()]);
    assert!(out.status.success(), "pmctl app render: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `pmctl app render examples/ocr/app.yaml` is pinned; `UPDATE_GOLDEN=1 cargo test --test k8s` rewrites
/// the golden file after an intended change (review its diff).
#[test]
fn the_ocr_app_renders_as_the_golden_file() {
    let got = render(&root().join("examples/ocr/app.yaml"));
    let golden = root().join("tests/golden/ocr-app.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(got == want, "pmctl app render changed; diff against {}:\n{got}", golden.display());
}

#[test]
fn a_bad_spec_exits_65_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("app.yaml");
    std::fs::write(
        &spec,
        "name: ocr\nscheduler: {address: 'pm:7070'}\nexecutors: [{name: wget, image: x, imgae: y}]\n",
    )
    .unwrap();
    let out = pmctl(&["app", "render", spec.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.starts_with("pmctl: ") && err.contains("imgae"), "{err}");
    assert!(out.stdout.is_empty(), "nothing rendered");
}

/// `pmctl app apply` pipes the rendered manifests to `kubectl apply -f -` with the extra arguments. No
/// cluster exists here, so the kubectl is a stand-in script that records its arguments and input.
#[test]
fn app_apply_pipes_the_manifests_to_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = dir.path().join("kubectl");
    let (args_file, stdin_file) = (dir.path().join("args"), dir.path().join("stdin"));
    std::fs::write(
        &kubectl,
        format!("#!/bin/sh\necho \"$@\" > {}\ncat > {}\n", args_file.display(), stdin_file.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kubectl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = root().join("examples/ocr/app.yaml");
    let k = kubectl.to_str().unwrap();
    let out = pmctl(&["app", "apply", spec.to_str().unwrap(), "--kubectl", k, "--", "--context", "prod"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&args_file).unwrap(), "apply -f - --context prod\n");
    assert_eq!(std::fs::read_to_string(&stdin_file).unwrap(), render(&spec));

    // kubectl fails (e.g. no cluster): pmctl says so and exits 1.
    std::fs::write(&kubectl, "#!/bin/sh\ncat > /dev/null\necho 'connection refused' >&2\nexit 3\n").unwrap();
    let out = pmctl(&["app", "apply", spec.to_str().unwrap(), "--kubectl", k]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("connection refused") && err.contains("apply failed"), "{err}");
}

/// The YAML stream as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

/// Replaces the pod's paths and addresses with this machine's: `/mnt/pipe` → `pipe`, the agent image's
/// binary → the built one, the mounted token → `token`, the probes port → a free loopback port.
struct PodHost {
    pipe: PathBuf,
    token: PathBuf,
    ca: PathBuf,
}

impl PodHost {
    fn map(&self, s: &str) -> String {
        s.replace("/usr/local/bin/pm-agent", bin("pm-agent").to_str().unwrap())
            .replace("/var/run/secrets/pipeline-manager/agent/token", self.token.to_str().unwrap())
            .replace("/var/run/secrets/pipeline-manager/scheduler-ca/ca.crt", self.ca.to_str().unwrap())
            .replace("/mnt/pipe", self.pipe.to_str().unwrap())
            .replace("0.0.0.0:7072", "127.0.0.1:0")
            .replace("127.0.0.1:7071", "off")
    }

    /// Starts a container: its `command` + `args` with its `env` (fieldRefs resolved for pod `pod`).
    fn start(&self, c: &Value, pod: &str, log: &Path) -> Child {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().map(|s| self.map(s.as_str().unwrap())).collect()).unwrap_or_default()
        };
        let argv: Vec<String> = strings(&c["command"]).into_iter().chain(strings(&c["args"])).collect();
        let mut env = HashMap::new();
        for e in c["env"].as_array().into_iter().flatten() {
            let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                (Value::String(v), _) => self.map(v),
                (_, Value::String(f)) if f == "metadata.name" => pod.to_string(),
                other => panic!("unexpected env source {other:?}"),
            };
            env.insert(e["name"].as_str().unwrap().to_string(), value);
        }
        Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

fn sigterm(c: &Child) {
    let status = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(c: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

const PRODUCER: &str = "producer-token-0123456789";
const AGENT: &str = "agent-token-0123456789abc";

#[tokio::test]
async fn the_rendered_pod_runs_a_pipeline_with_its_containers_started_as_the_kubelet_would() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let flags: Vec<String> = [
        ("--producer-token-file", write("producer", &format!("{PRODUCER}\n"))),
        ("--agent-token-file", write("agents", &format!("{AGENT}\n"))),
        ("--admin-token-file", write("admin", "admin-token-0123456789abc\n")),
    ]
    .into_iter()
    .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
    .collect();
    // Over TLS, as with the scheduler chart's tls.enabled.
    let ca = pm_testkit::tls::TestCa::new(dir.path(), "pod");
    let cert = ca.issue("scheduler", &["127.0.0.1"]);
    let mut flags = flags;
    flags.extend(["--tls-cert-file".into(), cert.cert.display().to_string()]);
    flags.extend(["--tls-key-file".into(), cert.key.display().to_string()]);
    let s = Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let tls = pm_client::tls::client_config(&ca.ca_file, None).unwrap();
    let spec = write(
        "app.yaml",
        &format!(
            "name: sim\nqueue: sim\nscheduler:\n  address: '{}'\n  tokenSecret: {{name: pm-tokens, key: agent}}\n\
             \x20 tls: {{caSecret: {{name: pm-tls, key: ca.crt}}}}\n\
             agent: {{drainTimeoutSeconds: 20}}\n\
             executors:\n  - {{name: fetch, image: 'alpine:3.20'}}\n  - {{name: shout, image: 'debian:12-slim'}}\n",
            s.addr
        ),
    );
    let docs = documents(&render(&spec));
    let pod = &docs.iter().find(|d| d["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"];
    let host =
        PodHost { pipe: dir.path().join("pipe"), token: write("token", &format!("{AGENT}\n")), ca: ca.ca_file.clone() };
    std::fs::create_dir_all(&host.pipe).unwrap();

    // Init containers in order: the installer runs to completion, each sidecar (restartPolicy Always) keeps
    // running; then the agent.
    let mut sidecars = Vec::new();
    for (i, c) in pod["initContainers"].as_array().unwrap().iter().enumerate() {
        let mut child = host.start(c, "sim-0", &dir.path().join(format!("init-{i}.log")));
        if c["restartPolicy"] == "Always" {
            sidecars.push(child);
        } else {
            assert!(child.wait().unwrap().success(), "init container {} failed", c["name"]);
        }
    }
    assert!(host.pipe.join(".pm/bin/pm-agent").exists(), "the installer put pm-agent into the shared volume");
    for name in ["fetch", "shout"] {
        wait_for(Duration::from_secs(10), "the executor sockets", || {
            host.pipe.join(format!(".pm/{name}.sock")).exists().then_some(())
        });
    }
    let agent_log = dir.path().join("agent.log");
    let mut agent = host.start(&pod["containers"][0], "sim-0", &agent_log);
    let mut line = String::new();
    BufReader::new(agent.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let probes = line.trim().strip_prefix("http listening on ").unwrap_or_else(|| panic!("{line:?}")).to_string();
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http_get(&probes, path).0, 200, "{path}; agent log:\n{}", log());
    }

    // A pipeline across both executors, sharing its task directory in the volume.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let producer = s.client(ConnectOptions::producer().token(PRODUCER).tls(tls.clone())).await;
    let submit = |json: String| {
        let producer = producer.clone();
        async move { producer.submit_one(pm_tests::task("sim", json.as_bytes())).await.unwrap() }
    };
    submit(format!(
        r#"{{"pipeline":[{{"executorName":"fetch","commands":["echo page > page.txt"]}},
            {{"executorName":"shout","commands":["tr a-z A-Z < page.txt > {}/result.txt"]}}]}}"#,
        out.display()
    ))
    .await;
    let result = wait_for(Duration::from_secs(20), "the pipeline's result", || {
        std::fs::read_to_string(out.join("result.txt")).ok().filter(|t| t.ends_with('\n'))
    });
    assert_eq!(result, "PAGE\n", "agent log:\n{}", log());
    // The counter moves once the pipeline has ended, a moment after its last command wrote the file.
    wait_for(Duration::from_secs(10), "pm_agent_tasks_total on /metrics", || {
        http_get(&probes, "/metrics").1.contains("pm_agent_tasks_total").then_some(())
    });

    // Scale-down: SIGTERM reaches the agent; the sidecars stay up until it has drained, so the running task
    // finishes on its executor and is acked.
    submit(format!(
        r#"{{"pipeline":[{{"executorName":"fetch","commands":["touch {0}/slow-started; sleep 2; echo done > {0}/slow"]}}]}}"#,
        out.display()
    ))
    .await;
    wait_for(Duration::from_secs(20), "the slow task to start", || out.join("slow-started").exists().then_some(()));
    sigterm(&agent);
    let status = wait_exit(&mut agent, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}; agent log:\n{}", log());
    assert_eq!(std::fs::read_to_string(out.join("slow")).unwrap(), "done\n", "agent log:\n{}", log());
    let admin = s.client(ConnectOptions::admin().token("admin-token-0123456789abc").tls(tls)).await;
    let q = admin.stats().await.unwrap().queues.into_iter().find(|q| q.queue == "sim").unwrap();
    assert_eq!((q.ready, q.leased, q.dead), (0, 0, 0), "both tasks were acked");
    for mut c in sidecars {
        sigterm(&c);
        assert!(wait_exit(&mut c, Duration::from_secs(10)).is_some_and(|s| s.success()));
    }
    assert!(!host.pipe.join(".pm/fetch.sock").exists(), "an executor removes its socket on the way out");
}

/// Runs `python3 charts/check.py ARGS`; asserts it found nothing (exit 0) and returns its output.
fn check(args: &[&str]) -> String {
    let out = Command::new("python3").arg("charts/check.py").args(args).current_dir(root()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "charts/check.py {args:?} (exit {:?}; `pip install -r charts/requirements.txt` installs what it needs):\n{text}",
        out.status.code()
    );
    text
}

/// The metric names a real scheduler exports once a queue holds a ready task and a leased one (the
/// ScaledObject's query names the queue gauges), one per line in a file.
async fn exported_metrics(dir: &Path) -> PathBuf {
    let s = Scheduler::start(&[]);
    let p = s.client(ConnectOptions::producer()).await;
    let (a, mut leases) = s.agent().await;
    for body in [&b"leased"[..], b"ready"] {
        p.submit_one(pm_tests::task("ocr", body)).await.unwrap();
    }
    a.credit("ocr", 1).await.unwrap();
    pm_tests::next_lease(&mut leases).await;
    let addr = s.http_addr.clone().unwrap();
    let text = wait_for(Duration::from_secs(10), "the queue gauges", || {
        let (_, text) = http_get(&addr, "/metrics");
        (text.contains("pm_queue_depth{") && text.contains("pm_leases_in_flight{")).then_some(text)
    });
    let names: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| l.starts_with("pm_")).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let file = dir.join("exported-metrics");
    std::fs::write(&file, names.into_iter().collect::<Vec<_>>().join("\n")).unwrap();
    file
}

/// Both charts (defaults and every `ci/*-values.yaml`) and the rendered OCR app pass `charts/check.py`
/// (helm lint --strict, strict Kubernetes 1.32 schemas, CRD schemas, the security properties of every pod
/// spec, exported metrics only), and the app chart renders the same objects as `pmctl app render` from the
/// same spec.
#[tokio::test]
async fn the_charts_and_the_rendered_app_pass_the_offline_checks() {
    let dir = tempfile::tempdir().unwrap();
    check(&["selftest"]);
    let exported = exported_metrics(dir.path()).await;
    let exported = exported.to_str().unwrap();
    let summary = check(&["--exported-metrics", exported, "charts", "charts"]);
    for rendering in [
        "pipeline-manager [defaults]",
        "pipeline-manager [ci/five-replicas-values.yaml]",
        "pipeline-manager [ci/replicated-values.yaml]",
        "pipeline-app [ci/ocr-values.yaml]",
    ] {
        assert!(summary.contains(rendering), "{rendering} not checked:\n{summary}");
    }
    for (spec, namespace) in
        [("examples/ocr/app.yaml", "pipelines"), ("charts/pipeline-app/ci/full-values.yaml", "default")]
    {
        let ours = dir.path().join("pmctl.yaml");
        std::fs::write(&ours, render(&root().join(spec))).unwrap();
        check(&["--exported-metrics", exported, "manifests", ours.to_str().unwrap()]);
        let helm = dir.path().join("helm.yaml");
        let chart = check(&["render", "charts/pipeline-app", "--values", spec, "--namespace", namespace]);
        std::fs::write(&helm, chart).unwrap();
        let same = check(&["same", ours.to_str().unwrap(), helm.to_str().unwrap()]);
        assert!(same.starts_with("same: "), "{spec}: {same}");
    }
}
