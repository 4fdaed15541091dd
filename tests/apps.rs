//! Applications and pipeline templates, end to end: real `pm-scheduler`, `pm-agent` and `pmctl` processes,
//! the scheduler's HTTP API over real sockets, and the real `wget` and `tesseract`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pm_testkit::{pmctl, Agent, Scheduler};
use pm_tests::tokens::{token_flags, ADMIN, AGENT, PRODUCER};
use pm_tests::{http, HttpReply};
use serde_json::{json, Value};

fn start(dir: &Path, extra: &[&str]) -> Scheduler {
    let mut flags = token_flags(dir);
    flags.extend(extra.iter().map(|s| s.to_string()));
    Scheduler::start_in(&dir.join("data"), &flags.iter().map(String::as_str).collect::<Vec<_>>())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An HTTP request to the scheduler's API with `token`.
fn api(s: &Scheduler, method: &str, path: &str, token: &str, body: &Value) -> HttpReply {
    let auth = bearer(token);
    let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
    http(
        s.http_addr.as_deref().unwrap(),
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        &body,
    )
}

/// `pmctl --token TOKEN args...`; panics unless it succeeds; returns stdout.
fn pmctl_ok(s: &Scheduler, token: &str, args: &[&str]) -> String {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    let out = pmctl(&s.addr, &all, None);
    assert!(
        out.status.success(),
        "pmctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(stdout: &str) -> Vec<u64> {
    stdout.lines().map(|l| l.trim().parse().unwrap()).collect()
}

/// A static file server (`python3 -m http.server`) on a free loopback port, killed when dropped.
struct Www(Child, u16);

impl Www {
    fn start(dir: &Path) -> Www {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse().ok());
        Www(child, port.unwrap_or_else(|| panic!("http.server said {line:?}")))
    }
}

impl Drop for Www {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The OCR pipeline of the original design as a template: fetch `{{url}}`, read it with tesseract, and
/// "upload" the text as `{{name}}.txt` into `bucket`.
fn ocr_app_yaml(bucket: &Path) -> String {
    format!(
        r#"# The OCR application: producers give only the page's url and a name for its text.
name: myname
description: OCR of web pages
pipelines:
  - name: ocr
    params:
      url: {{required: true, description: the page to read}}
      name: {{}}
      lang: {{default: eng}}
    template:
      pipeline:
        - executorName: wget
          commands: ["wget -q -O page.png {{{{url}}}}"]
        - executorName: tesseract
          commands: ["OMP_THREAD_LIMIT=1 tesseract page.png text --psm 7 -l {{{{lang}}}} 2>/dev/null"]
        - executorName: mc
          commands: ["cp text.txt {bucket}/.{{{{name}}}}.part && mv {bucket}/.{{{{name}}}}.part {bucket}/{{{{name}}}}.txt"]
      maxAttempts: 3
"#,
        bucket = bucket.display()
    )
}

#[test]
fn an_ocr_app_runs_parameter_sets_from_http_and_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let (www, bucket) = (tmp.path().join("www"), tmp.path().join("bucket"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::create_dir_all(&bucket).unwrap();
    let texts = ["ALPHA 17", "BRAVO 29", "CHARLIE 31", "DELTA 43"];
    for (i, t) in texts.iter().enumerate() {
        let st = Command::new("/usr/bin/python3")
            .arg(root().join("examples/ocr/make_page.py"))
            .arg(www.join(format!("page{i}.png")))
            .arg(t)
            .status()
            .unwrap();
        assert!(st.success(), "make_page.py (needs python3-pil and fonts-dejavu-core)");
    }
    let server = Www::start(&www);
    let s = start(tmp.path(), &[]);

    let spec = tmp.path().join("app.yaml");
    std::fs::write(&spec, ocr_app_yaml(&bucket)).unwrap();
    let out = pmctl_ok(&s, ADMIN, &["app", "create", &spec.display().to_string()]);
    assert!(out.contains("myname/ocr  queue myname/ocr  params lang, name, url (required: name, url)"), "{out}");
    let _agent = Agent::start(&s.addr, &["--queue", "myname/ocr", "--token", AGENT, "--concurrency", "2"]);

    let url = |i: usize| format!("http://127.0.0.1:{}/page{}.png", server.1, i % texts.len());
    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    let mut all_ids = Vec::new();
    // Over HTTP: 50 requests of one parameter set each, then one request of 50.
    for i in 0..50 {
        let name = format!("http-{i}");
        let r =
            api(&s, "POST", "/api/applications/myname/pipelines/ocr", PRODUCER, &json!({"url": url(i), "name": name}));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let id = r.json()["taskId"].as_u64().unwrap();
        assert!(r.headers.contains(&format!("location: /api/tasks/{id}")), "{}", r.headers);
        all_ids.push(id);
        expected.insert(name, texts[i % texts.len()]);
    }
    let batch: Vec<Value> = (50..100)
        .map(|i| {
            expected.insert(format!("http-{i}"), texts[i % texts.len()]);
            json!({"url": url(i), "name": format!("http-{i}")})
        })
        .collect();
    let r = api(&s, "POST", "/api/applications/myname/pipelines/ocr", PRODUCER, &Value::Array(batch));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 50);
    all_ids.extend(r.json()["results"].as_array().unwrap().iter().map(|x| x["taskId"].as_u64().unwrap()));

    // Over the protocol: `pmctl submit --app` with 100 parameter sets (SubmitTemplate).
    let sets: String = (0..100)
        .map(|i| {
            expected.insert(format!("tcp-{i}"), texts[i % texts.len()]);
            format!("{}\n", json!({"url": url(i), "name": format!("tcp-{i}")}))
        })
        .collect();
    let file = tmp.path().join("sets.jsonl");
    std::fs::write(&file, sets).unwrap();
    let out = pmctl_ok(
        &s,
        PRODUCER,
        &["submit", "--app", "myname", "--pipeline", "ocr", "--params-file", &file.display().to_string()],
    );
    all_ids.extend(ids(&out));
    assert_eq!(all_ids.len(), 200);

    // Every task succeeds, and every page's text lands under its own name.
    let mut wait = vec!["wait", "--timeout", "300s"];
    let id_text: Vec<String> = all_ids.iter().map(u64::to_string).collect();
    wait.extend(id_text.iter().map(String::as_str));
    pmctl_ok(&s, PRODUCER, &wait);
    for (name, text) in &expected {
        let got = std::fs::read_to_string(bucket.join(format!("{name}.txt"))).unwrap_or_default();
        assert_eq!(got.trim(), *text, "{name}.txt");
    }
    assert_eq!(std::fs::read_dir(&bucket).unwrap().count(), 200, "no other file in the bucket");

    // The HTTP API reports a task's outcome with its result.
    let r = api(&s, "GET", &format!("/api/tasks/{}", all_ids[0]), PRODUCER, &Value::Null);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!((v["state"].as_str(), v["queue"].as_str()), (Some("succeeded"), Some("myname/ocr")), "{v}");
    assert_eq!(v["result"]["steps"].as_array().map(Vec::len), Some(3), "{v}");
}

#[test]
fn parameter_values_never_become_shell_syntax() {
    let tmp = tempfile::tempdir().unwrap();
    let (out_dir, victim) = (tmp.path().join("out"), tmp.path().join("victim"));
    let pwned = tmp.path().join("pwned");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), "still here").unwrap();
    let s = start(tmp.path(), &[]);
    let o = out_dir.display();
    let def = json!({"name": "echo", "params": {"v": {}, "n": {}}, "template": {"pipeline": [{
    "executorName": "sh",
    "env": {"PARAM": "{{v}}"},
    "commands": [
        format!("printf '%s' {{{{v}}}} > {o}/word-{{{{n}}}}"),
        format!("printf '%s' 'single:{{{{v}}}}' > {o}/single-{{{{n}}}}"),
        format!("printf '%s' \"double:{{{{v}}}}\" > {o}/double-{{{{n}}}}"),
        format!("printf '%s' \"$PARAM\" > {o}/env-{{{{n}}}}"),
    ]}]}});
    let r = api(&s, "POST", "/api/applications/safe/pipelines", ADMIN, &def);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let _agent = Agent::start(&s.addr, &["--queue", "safe/echo", "--token", AGENT]);

    let (v, p) = (victim.display(), pwned.display());
    let values = [
        format!("'; rm -rf {v}; '"),
        "'; rm -rf /; '".to_string(),
        format!("$(rm -rf {v})"),
        format!("`touch {p}`"),
        format!("\"; touch {p}; \""),
        format!("a\nb; touch {p}"),
        "$HOME ${HOME} \\ \\' * ?".to_string(),
        "'\"'\"'".to_string(),
        String::new(),
    ];
    let mut cases: Vec<(String, &String)> = Vec::new();
    let mut task_ids = Vec::new();
    for (i, value) in values.iter().enumerate() {
        // Over HTTP...
        let n = format!("h{i}");
        let r = api(&s, "POST", "/api/applications/safe/pipelines/echo", PRODUCER, &json!({"v": value, "n": n}));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        task_ids.push(r.json()["taskId"].as_u64().unwrap().to_string());
        cases.push((n, value));
        // ...and over the protocol.
        let n = format!("p{i}");
        let (v_arg, n_arg) = (format!("v={value}"), format!("n={n}"));
        let out = pmctl_ok(
            &s,
            PRODUCER,
            &["submit", "--app", "safe", "--pipeline", "echo", "--param", &v_arg, "--param", &n_arg],
        );
        task_ids.extend(ids(&out).iter().map(u64::to_string));
        cases.push((n, value));
    }
    let mut wait = vec!["wait", "--timeout", "120s"];
    wait.extend(task_ids.iter().map(String::as_str));
    pmctl_ok(&s, PRODUCER, &wait);
    for (n, value) in &cases {
        let read = |kind: &str| std::fs::read_to_string(out_dir.join(format!("{kind}-{n}"))).unwrap();
        assert_eq!(read("word"), **value, "outside quotes");
        assert_eq!(read("single"), format!("single:{value}"), "inside single quotes");
        assert_eq!(read("double"), format!("double:{value}"), "inside double quotes");
        assert_eq!(read("env"), **value, "through an env value");
    }
    assert_eq!(std::fs::read_to_string(victim.join("keep")).unwrap(), "still here");
    assert!(!pwned.exists(), "a value ran as a command");

    // A placeholder where no quoting is safe is refused when the pipeline is defined, over HTTP and pmctl.
    let bad =
        json!({"name": "bad", "template": {"pipeline": [{"executorName": "sh", "commands": ["echo `echo {{v}}`"]}]}});
    let r = api(&s, "POST", "/api/applications/safe/pipelines", ADMIN, &bad);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("in a command with backticks"), "{}", r.json());
    let file = tmp.path().join("bad.json");
    std::fs::write(&file, json!({"name": "safe2", "pipelines": [bad]}).to_string()).unwrap();
    let out = pmctl(&s.addr, &["--token", ADMIN, "app", "create", &file.display().to_string()], None);
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_commands_dialect_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let s = start(tmp.path(), &[]);
    let _agent = Agent::start(&s.addr, &["--queue", "old", "--token", AGENT]);
    // A task in the original agent's dialect, as it was...
    let task = tmp.path().join("task.json");
    let doc = json!({"commands": [{"executorName": "sh", "commandLines": [format!("echo plain > {}/plain.txt", out.display())]}], "queue": "old"});
    std::fs::write(&task, doc.to_string()).unwrap();
    let id = ids(&pmctl_ok(&s, PRODUCER, &["submit", &task.display().to_string()]))[0];
    // ...and as a template, with the `executor` spelling of the original template design.
    let def = json!({"name": "old", "template": {"queue": "old", "commands": [{"executor": "sh", "commandLines": [
        format!("echo {{{{word}}}} > {}/templated.txt", out.display())]}]}});
    let r = api(&s, "POST", "/api/applications/legacy/pipelines", ADMIN, &def);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["queue"], "old", "a template may name its queue");
    let r = api(&s, "POST", "/api/applications/legacy/pipelines/old", PRODUCER, &json!({"word": "templated"}));
    assert_eq!(r.status, 202);
    let id2 = r.json()["taskId"].as_u64().unwrap();
    pmctl_ok(&s, PRODUCER, &["wait", "--timeout", "60s", &id.to_string(), &id2.to_string()]);
    assert_eq!(std::fs::read_to_string(out.join("plain.txt")).unwrap(), "plain\n");
    assert_eq!(std::fs::read_to_string(out.join("templated.txt")).unwrap(), "templated\n");
}

#[test]
fn apps_survive_a_restart_and_the_api_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = start(tmp.path(), &["--http-max-body-bytes", "4096"]);
    let def = json!({"name": "ocr", "params": {"url": {}}, "template": {"pipeline": [
        {"executorName": "wget", "commands": ["wget -O image.png {{url}}"]}], "maxAttempts": 2}});
    let path = "/api/applications/myname/pipelines";

    // Who may do what.
    let addr = s.http_addr.clone().unwrap();
    let r = http(&addr, "POST", path, &[], def.to_string().as_bytes());
    assert_eq!(r.status, 401, "no token");
    assert!(r.headers.contains("www-authenticate: bearer"), "{}", r.headers);
    assert_eq!(api(&s, "POST", path, "wrong-token", &def).status, 401);
    let r = api(&s, "POST", path, PRODUCER, &def);
    assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("ROLE_NOT_ALLOWED")), "{}", r.json());
    assert!(r.json()["error"].as_str().unwrap().contains("token of role producer; this needs role admin"));
    let r = api(&s, "GET", "/api/applications", AGENT, &Value::Null);
    assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("ROLE_NOT_ALLOWED")), "an agent token: {}", r.json());
    assert!(r.json()["error"].as_str().unwrap().contains("needs role producer (or admin)"), "{}", r.json());
    let r = api(&s, "POST", path, ADMIN, &def);
    assert_eq!(r.status, 201, "{}", r.json());
    assert!(r.headers.contains("location: /api/applications/myname/pipelines/ocr"), "{}", r.headers);
    assert_eq!(r.json()["queue"], "myname/ocr");
    assert_eq!(api(&s, "POST", path, ADMIN, &def).status, 409, "created twice");

    // Bad submits: refused at submit, with the reason, nothing queued.
    let submit = "/api/applications/myname/pipelines/ocr";
    let r = api(&s, "POST", submit, PRODUCER, &json!({}));
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("missing parameter: url")));
    let r = api(&s, "POST", submit, PRODUCER, &json!({"url": "x", "uri": "y"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("unknown parameter uri"), "{}", r.json());
    assert_eq!(api(&s, "POST", submit, PRODUCER, &json!({"url": {"a": 1}})).status, 400);
    assert_eq!(api(&s, "POST", "/api/applications/myname/pipelines/nope", PRODUCER, &json!({})).status, 404);
    assert_eq!(api(&s, "POST", "/api/applications/nobody/pipelines/ocr", PRODUCER, &json!({})).status, 404);
    let r = http(&addr, "POST", submit, &[("Authorization", &bearer(PRODUCER))], b"{not json");
    assert_eq!(r.status, 400);
    let big = json!({"url": "x".repeat(5000)});
    assert_eq!(api(&s, "POST", submit, PRODUCER, &big).status, 413, "over --http-max-body-bytes");
    let r = api(&s, "POST", &format!("{submit}?priority=high"), PRODUCER, &json!({"url": "x"}));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let stats = pmctl_ok(&s, ADMIN, &["stats", "--json"]);
    assert!(!stats.contains("myname/ocr"), "nothing was queued: {stats}");

    // A good one, with an idempotency key: a repeat returns the same task.
    let r = api(
        &s,
        "POST",
        &format!("{submit}?key=k1&priority=3&idempotencyKey=once"),
        PRODUCER,
        &json!({"url": "http://x/1"}),
    );
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["taskId"].as_u64().unwrap();
    let r = api(&s, "POST", &format!("{submit}?idempotencyKey=once"), PRODUCER, &json!({"url": "http://x/1"}));
    assert_eq!((r.json()["taskId"].as_u64(), r.json()["duplicate"].as_bool()), (Some(id), Some(true)));
    let t = api(&s, "GET", &format!("/api/tasks/{id}"), PRODUCER, &Value::Null).json();
    assert_eq!(
        (t["state"].as_str(), t["key"].as_str(), t["maxAttempts"].as_u64()),
        (Some("ready"), Some("k1"), Some(2)),
        "{t}"
    );
    assert_eq!(api(&s, "GET", "/api/tasks/999999", PRODUCER, &Value::Null).status, 404);

    // Everything survives a SIGKILL.
    let before = api(&s, "GET", "/api/applications/myname", PRODUCER, &Value::Null).json();
    s.restart();
    let after = api(&s, "GET", "/api/applications/myname", PRODUCER, &Value::Null).json();
    assert_eq!(before, after, "the application is as it was");
    assert!(s.data.join("apps/myname.json").exists());
    let listed = pmctl_ok(&s, PRODUCER, &["app", "list"]);
    assert!(listed.contains("myname/ocr  queue myname/ocr  params url"), "{listed}");
    let r = api(&s, "POST", submit, PRODUCER, &json!({"url": "http://x/2"}));
    assert_eq!(r.status, 202, "templates work after the restart");
    let r = api(&s, "POST", submit, ADMIN, &json!({"url": "http://x/3"}));
    assert_eq!(r.status, 202, "an admin may submit too");

    // Replace, then delete, and restart again.
    let v1 = after["version"].as_u64().unwrap();
    let mut def2 = def.clone();
    def2["params"] = json!({"url": {}, "out": {"default": "image.png"}});
    def2["template"]["pipeline"][0]["commands"] = json!(["wget -O {{out}} {{url}}"]);
    let r = api(&s, "PUT", &format!("{path}/ocr"), ADMIN, &def2);
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["params"], json!(["out", "url"]));
    let app = api(&s, "GET", "/api/applications/myname", PRODUCER, &Value::Null).json();
    assert!(app["version"].as_u64().unwrap() > v1);
    assert_eq!(api(&s, "DELETE", &format!("{path}/ocr"), PRODUCER, &Value::Null).status, 403);
    assert_eq!(api(&s, "DELETE", &format!("{path}/ocr"), ADMIN, &Value::Null).status, 200);
    s.restart();
    assert_eq!(api(&s, "GET", &format!("{path}/ocr"), PRODUCER, &Value::Null).status, 404);
    let shown = pmctl_ok(&s, PRODUCER, &["app", "show", "myname", "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["pipelines"], json!([]), "{shown}");
    pmctl_ok(&s, ADMIN, &["app", "delete", "myname"]);
    // The example of docs/apps.md is a valid application.
    let example = root().join("examples/ocr/templates.yaml").display().to_string();
    let out = pmctl_ok(&s, ADMIN, &["app", "create", &example]);
    assert!(out.contains("myname/ocr  queue myname/ocr  params lang, url (required: url)"), "{out}");
    pmctl_ok(&s, ADMIN, &["app", "delete", "myname"]);
    assert_eq!(api(&s, "GET", "/api/applications", PRODUCER, &Value::Null).json(), json!({"applications": []}));
}

#[test]
fn applications_are_copied_to_every_member() {
    let mut c = pm_testkit::SchedulerCluster::start(3, &["--catalog-sync-interval", "300ms"]);
    let url = |i: usize, path: &str| (c_http(&c, i), path.to_string());
    let def = json!({"name": "ocr", "params": {"url": {}}, "template": {"pipeline": [
        {"executorName": "sh", "commands": ["echo {{url}}"]}]}});
    let (h0, p) = url(0, "/api/applications/myname/pipelines");
    assert_eq!(http(&h0, "POST", &p, &[], def.to_string().as_bytes()).status, 201);
    // Sent to every member before the answer: each has it now, and fills it in.
    for i in 1..3 {
        let h = c_http(&c, i);
        assert_eq!(http(&h, "GET", "/api/applications/myname/pipelines/ocr", &[], b"").status, 200, "node {i}");
        let r = http(&h, "POST", "/api/applications/myname/pipelines/ocr", &[], br#"{"url": "x"}"#);
        assert_eq!(r.status, 202, "node {i}: {}", String::from_utf8_lossy(&r.body));
    }
    // A member that was down while things changed catches up by asking the others.
    c.nodes[2].kill();
    let down = c.members()[2].clone();
    let mut def2 = def.clone();
    def2["params"] = json!({"url": {}, "n": {"default": 1}});
    let r = http(&h0, "PUT", "/api/applications/myname/pipelines/ocr", &[], def2.to_string().as_bytes());
    assert_eq!(r.status, 200);
    // Stored, and the answer says which member does not have it yet.
    let warning = r.json()["warning"].as_str().unwrap_or_default().to_string();
    assert!(warning.contains("not yet on") && warning.contains(&down), "{}", r.json());
    // pmctl says so too, on stderr, and succeeds.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), json!({"name": "fourth"}).to_string()).unwrap();
    let out = pmctl(&c.nodes[0].addr, &["app", "create", &file.path().display().to_string()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pmctl: warning: ") && stderr.contains(&down), "{stderr}");
    let second = json!({"name": "second", "pipelines": [def]});
    assert_eq!(http(&c_http(&c, 1), "POST", "/api/applications", &[], second.to_string().as_bytes()).status, 201);
    assert_eq!(http(&h0, "DELETE", "/api/applications/second", &[], b"").status, 200);
    let third = json!({"name": "third"});
    assert_eq!(http(&c_http(&c, 1), "POST", "/api/applications", &[], third.to_string().as_bytes()).status, 201);
    c.nodes[2].restart();
    let h2 = c_http(&c, 2);
    let want = http(&h0, "GET", "/api/applications/myname", &[], b"").json();
    pm_testkit::wait_for(Duration::from_secs(20), "node 2 to catch up", || {
        let got = http(&h2, "GET", "/api/applications/myname", &[], b"").json();
        let third = http(&h2, "GET", "/api/applications/third", &[], b"").status;
        let fourth = http(&h2, "GET", "/api/applications/fourth", &[], b"").status;
        (got == want && third == 200 && fourth == 200).then_some(())
    });
    assert_eq!(http(&h2, "GET", "/api/applications/second", &[], b"").status, 404, "the deletion came too");
    let names = |i: usize| http(&c_http(&c, i), "GET", "/api/applications", &[], b"").json();
    assert_eq!(names(0), names(2));
    assert_eq!(names(1), names(2));
}

fn c_http(c: &pm_testkit::SchedulerCluster, i: usize) -> String {
    c.nodes[i].http_addr.clone().unwrap()
}
