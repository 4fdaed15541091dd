//! The operator console (`/ui/`) in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! with `fantoccini`, against a real `pm-scheduler` with token files, a real producer and a real agent
//! connection.
//!
//! `console_in_a_browser` loads the console; sees that it needs a token and takes one; sees a submitted task
//! appear in the task list and opens its detail; pauses and resumes a queue with its buttons (the API reports
//! each); redrives a dead letter with its button (the agent is leased the task again); cancels a filtered
//! set after seeing how many it holds, and nothing outside it; and checks that the browser logged no error
//! and that the pages carry their Content-Security-Policy. A producer token reads, and its pause is refused.
//!
//! Without `chromium` and `chromedriver` (Debian packages of those names) the test says `SKIPPED`; with
//! `PM_BROWSER_TEST=require` (as `.ci/run` sets) it fails instead. `console_screenshots` (ignored; run it with
//! `cargo test -p pm-tests --test console -- --ignored`) writes the screenshots of docs/console.md into
//! docs/img/.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use pm_client::{Client, ConnectOptions};
use pm_protocol::pb::NackItem;
use pm_testkit::Scheduler;
use pm_tests::tokens::{token_flags, ADMIN, AGENT, PRODUCER};
use pm_tests::{http, next_lease, task, HttpReply};
use serde_json::{json, Value};

/// The browser's tools, or `None` (after saying why) when they are missing and not required.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| names.iter().find_map(|n| which(n));
    let driver = find(&["chromedriver"]);
    let browser = find(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, browser) {
        (Some(d), Some(b)) => Some((d, b)),
        (d, b) => {
            let why =
                format!("needs chromedriver and chromium (found {d:?} and {b:?}; Debian: chromium-driver, chromium)");
            if std::env::var("PM_BROWSER_TEST").is_ok_and(|v| v == "require") {
                panic!("PM_BROWSER_TEST=require, but the console's browser test {why}");
            }
            eprintln!("SKIPPED: the console's browser test {why}");
            None
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A chromedriver process and one headless Chromium session; both end when it is dropped.
struct Session {
    browser: Browser,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Session {
    async fn start(driver: &Path, chromium: &Path) -> Session {
        let port = pm_testkit::free_addr("127.0.0.1").rsplit_once(':').unwrap().1.to_string();
        // Its own process group: the browsers it starts are in it too, and `Drop` ends them all together.
        let mut child = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
            if let Ok(Some(st)) = child.try_wait() {
                panic!("chromedriver exited: {st}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1440,960", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.path().display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector).capabilities(caps).connect(&url).await.expect("a browser session");
        Session { browser, driver: child, _profile: profile }
    }

    /// The browser's console messages since the last call: `(level, message)`.
    async fn log(&self) -> Vec<(String, String)> {
        let v = self.browser.issue_cmd(BrowserLog).await.expect("read the browser's log");
        v.as_array()
            .unwrap_or_else(|| panic!("the log is not a list: {v}"))
            .iter()
            .map(|e| (e["level"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// Waits (up to 20 s) until `script` (a function body returning a value) returns something truthy, and
    /// returns it.
    async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.browser.execute(script, args.clone()).await.unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.text("main").await;
                panic!("timed out waiting for {what}; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` exists (and is shown).
    async fn wait_for(&self, css: &str) {
        let script = "const e = document.querySelector(arguments[0]); return !!e && e.offsetParent !== null;";
        self.wait_js(css, script, vec![json!(css)]).await;
    }

    /// Waits until the element matching `css` contains `text`.
    async fn wait_text(&self, css: &str, text: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); \
                      return e && e.textContent.includes(arguments[1]) ? e.textContent : null;";
        let what = format!("{css} to say {text:?}");
        self.wait_js(&what, script, vec![json!(css), json!(text)]).await.as_str().unwrap_or("").to_string()
    }

    /// The text of the element matching `css` (empty if none).
    async fn text(&self, css: &str) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';";
        let v = self.browser.execute(script, vec![json!(css)]).await.unwrap_or(Value::Null);
        v.as_str().unwrap_or("").to_string()
    }

    /// Clicks the element matching `css` once it is shown.
    async fn click(&self, css: &str) {
        self.wait_for(css).await;
        self.browser.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    /// Clicks the button matching `css`, then the confirmation dialog's confirm button.
    async fn click_and_confirm(&self, css: &str) {
        self.click(css).await;
        self.click("dialog[open] #confirm-ok").await;
        self.wait_js("the dialog to close", "return !document.querySelector('dialog[open]');", vec![]).await;
    }

    /// Pastes `token` into the token field and uses it.
    async fn use_token(&self, token: &str) {
        self.click("#token-input").await;
        self.browser.find(Locator::Css("#token-input")).await.unwrap().send_keys(token).await.unwrap();
        self.click("#token-save").await;
    }

    /// Goes to a fragment of the console (`#/tasks?queue=q`) without reloading the page.
    async fn show(&self, fragment: &str) {
        self.browser.execute("location.hash = arguments[0];", vec![json!(fragment)]).await.unwrap();
    }
}

impl Session {
    /// Ends the browser session (chromedriver quits Chromium), then chromedriver.
    async fn close(self) {
        let _ = self.browser.clone().close().await;
    }
}

impl Drop for Session {
    /// Kills chromedriver's process group, so that no browser outlives a failed test.
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's log command (`POST /session/{id}/se/log`, type `browser`): the console messages of the page.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (::http::Method, Option<String>) {
        (::http::Method::POST, Some(r#"{"type":"browser"}"#.to_string()))
    }
}

/// `GET path` on the API with the admin token.
fn api(s: &Scheduler, path: &str) -> HttpReply {
    let auth = format!("Bearer {ADMIN}");
    http(s.http_addr.as_deref().unwrap(), "GET", path, &[("Authorization", &auth)], b"")
}

/// Polls `GET path` (admin) until `ok` holds for its JSON, up to 10 s.
async fn api_until(s: &Scheduler, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = api(s, path);
        if r.status == 200 && ok(&r.json()) {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: GET {path} answered {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The errors (`SEVERE`) among the browser's messages.
fn errors(log: &[(String, String)]) -> Vec<&(String, String)> {
    log.iter().filter(|(level, _)| level == "SEVERE").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser() {
    let Some((driver, chromium)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let s = Scheduler::start(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    let base = format!("http://{}", s.http_addr.as_deref().unwrap());

    // The page's own answer: its policy and content type (no inline code can run, whatever a task prints).
    let page = http(s.http_addr.as_deref().unwrap(), "GET", "/ui/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.headers.contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{}",
        page.headers
    );
    assert!(page.headers.contains("content-type: text/html"), "{}", page.headers);
    assert_eq!(http(s.http_addr.as_deref().unwrap(), "GET", "/ui", &[], b"").status, 308);

    let b = Session::start(&driver, &chromium).await;
    b.browser.goto(&format!("{base}/ui/")).await.unwrap();

    // Without a token the API answers 401, and the page says what to do.
    b.wait_text("main", "needs a token").await;
    let first = b.log().await;
    for (_, msg) in errors(&first) {
        assert!(msg.contains("401"), "an error other than the expected 401 before the token: {msg}");
    }

    // A producer token reads: the overview shows this node, up, and the queue. It may not act: Pause is
    // refused, the page says why, and the queue is not paused.
    let producer = s.client(ConnectOptions::producer().token(PRODUCER)).await;
    producer.submit_one(task("web", br#"{"pipeline":[]}"#)).await.unwrap();
    b.use_token(PRODUCER).await;
    b.wait_text("#members tbody", "up").await;
    b.wait_text("#live", "live").await;
    b.click_and_confirm("button[data-action='pause'][data-queue='web']").await;
    b.wait_text("#notices", "may only read").await;
    b.wait_text("#token-state", "read-only token").await;
    assert_eq!(api(&s, "/api/queues/web").json()["paused"], json!(false), "a refused pause changed nothing");
    let refused = b.log().await;
    for (_, msg) in errors(&refused) {
        assert!(msg.contains("403"), "an error other than the expected 403 of the refused pause: {msg}");
    }

    // With the admin token, everything below works.
    b.use_token(ADMIN).await;
    b.wait_text("#token-state", "token set").await;

    // A submitted task appears in the task list (it refreshes on its own) and opens to its detail.
    b.show("#/tasks?queue=web").await;
    b.wait_text("#tasks tbody", "web").await;
    let id = producer.submit_one(task("web", br#"{"pipeline":[]}"#)).await.unwrap();
    let row = format!("#tasks tr[data-task-id='{id}'] a.task-link");
    b.click(&row).await;
    b.wait_text("#task-state", "ready").await;
    assert!(b.browser.current_url().await.unwrap().as_str().ends_with(&format!("#/task/{id}")));
    b.wait_text("#task-facts", "web").await;

    // Pause and resume the queue with its buttons; the API reports each.
    b.show("#/").await;
    b.click_and_confirm("button[data-action='pause'][data-queue='web']").await;
    api_until(&s, "/api/queues/web", "paused after the button", |q| q["paused"] == json!(true)).await;
    b.wait_for("button[data-action='resume'][data-queue='web']").await;
    b.click_and_confirm("button[data-action='resume'][data-queue='web']").await;
    api_until(&s, "/api/queues/web", "resumed after the button", |q| q["paused"] == json!(false)).await;
    b.wait_for("button[data-action='pause'][data-queue='web']").await;

    // A task with one attempt, nacked by the agent, is a dead letter; its Redrive button makes it ready, and
    // the agent is leased it again.
    let mut poison = task("poison", b"bad input");
    poison.max_attempts = 1;
    let dead_id = producer.submit_one(poison).await.unwrap();
    let (agent, mut leases) =
        Client::connect_agent(&s.addr, ConnectOptions::agent().token(AGENT).reconnect(false)).await.unwrap();
    agent.credit("poison", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, dead_id);
    let nack = NackItem { lease_id: t.lease_id, reason: "cannot parse the input".into(), ..Default::default() };
    agent.nack(vec![nack]).await.unwrap();
    api_until(&s, &format!("/api/tasks/{dead_id}"), "dead after the nack", |t| t["state"] == "dead").await;
    b.show("#/dead?queue=poison").await;
    b.wait_text("#dead tbody", "cannot parse the input").await;
    b.click_and_confirm(&format!("#dead button[data-action='redrive'][data-task-id='{dead_id}']")).await;
    b.wait_text("#notices", "Redrove 1 task").await;
    agent.credit("poison", 1).await.unwrap();
    let again = next_lease(&mut leases).await;
    assert_eq!(again.task_id, dead_id, "the redriven task is leased again");
    b.wait_text("#dead tbody", "No dead letter here").await;

    // Cancelling the filtered set says how many first (the two ready tasks of `web`), and reaches only them:
    // the leased task of `poison` runs on.
    b.show("#/tasks?queue=web&state=ready").await;
    b.wait_text("#tasks tbody", &id.to_string()).await;
    b.click("#bulk-cancel").await;
    b.wait_text("dialog[open]", "Cancel 2 task(s)").await;
    b.click("dialog[open] #confirm-ok").await;
    b.wait_text("#notices", "Cancelled 2 task(s)").await;
    let left = api(&s, "/api/tasks/count?queue=web&state=ready").json();
    assert_eq!(left["count"], json!(0), "{left}");
    let running = api(&s, &format!("/api/tasks/{dead_id}")).json();
    assert_eq!(running["state"], "leased", "a task outside the filter was touched: {running}");

    // Nothing went wrong in the browser after the token: no error in its console (a failed request, a script
    // error, a refused policy would each be one).
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "the browser logged errors: {:#?}", errors(&log));
    b.close().await;
}

/// `POST path` with a JSON body (no token: the screenshots' node serves on loopback without tokens).
fn post(s: &Scheduler, path: &str, body: &Value) -> HttpReply {
    let json = serde_json::to_vec(body).unwrap();
    http(s.http_addr.as_deref().unwrap(), "POST", path, &[("Content-Type", "application/json")], &json)
}

/// Writes the screenshots of docs/console.md into docs/img/: a node with an application, a real agent running
/// its tasks (some fail, one starts a flow), steady submits for the sparklines, a paused queue and dead
/// letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/img/console-*.png; run with --ignored"]
async fn console_screenshots() {
    let Some((driver, chromium)) = tools() else { return };
    let s = Scheduler::start(&[]);
    let base = format!("http://{}", s.http_addr.as_deref().unwrap());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    std::fs::create_dir_all(&out).unwrap();

    let pipeline = json!({"name": "thumbnail",
        "params": {"url": {"description": "the image to fetch"}, "size": {"default": "200", "description": "pixels"}},
        "template": {"pipeline": [
            {"executorName": "sh", "commands": ["echo fetching {{url}}", "echo resized to {{size}} px"]},
            {"executorName": "sh", "commands": ["echo stored as thumb-$PM_TASK_ID.png"]}]}});
    let r = post(&s, "/api/applications/shop/pipelines", &pipeline);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let _agent = pm_testkit::Agent::start(&s.addr, &["--queue", "shop/thumbnail"]);
    // A flow: a step that fails, its onFailure follow-up, and an onSuccess branch that does not run.
    let flow = json!({"queue": "shop/thumbnail", "flowId": "order-981", "key": "customer-7",
        "pipeline": [{"executorName": "sh", "commands": ["echo checking the upload", "echo 'no such image: 404' >&2; exit 3"]}],
        "onSuccess": [{"queue": "shop/thumbnail", "pipeline": [{"executorName": "sh", "commands": ["echo publish"]}]}],
        "onFailure": [{"queue": "shop/thumbnail", "pipeline": [{"executorName": "sh", "commands": ["echo telling customer-7"]}],
                       "onSuccess": [{"queue": "shop/thumbnail", "pipeline": [{"executorName": "sh", "commands": ["echo logged"]}]}]}]});
    let root = pm_tests::submit_json(&s, &flow.to_string());
    // Dead letters on another queue, and waiting work on a paused one.
    let producer = s.client(ConnectOptions::producer()).await;
    let (agent, mut leases) = s.agent().await;
    for i in 0..3 {
        let mut t = task("billing", format!("{{\"invoice\": {}}}", 4410 + i).as_bytes());
        t.max_attempts = 1;
        producer.submit_one(t).await.unwrap();
    }
    agent.credit("billing", 3).await.unwrap();
    for _ in 0..3 {
        let t = next_lease(&mut leases).await;
        let reason = "payment provider answered 503 three times".into();
        agent.nack(vec![NackItem { lease_id: t.lease_id, reason, ..Default::default() }]).await.unwrap();
    }
    for i in 0..40 {
        producer.submit_one(task("email", format!("{{\"to\": \"user{i}@example.com\"}}").as_bytes())).await.unwrap();
    }
    assert_eq!(post(&s, "/api/queues/email/pause", &json!({})).status, 200);

    // Steady submits for the sparklines while the browser watches the overview.
    let http_addr = s.http_addr.clone().unwrap();
    let feeder = tokio::spawn(async move {
        for i in 0..400u32 {
            let body = json!({"url": format!("https://img.example/{i}.png")}).to_string();
            let addr = http_addr.clone();
            let _ = tokio::task::spawn_blocking(move || {
                http(&addr, "POST", "/api/applications/shop/pipelines/thumbnail", &[], body.as_bytes())
            })
            .await;
            let wave = 120 + (i % 40) * 6;
            tokio::time::sleep(Duration::from_millis(u64::from(wave))).await;
        }
    });

    let b = Session::start(&driver, &chromium).await;
    b.browser.set_window_size(1440, 900).await.unwrap();
    b.browser.goto(&format!("{base}/ui/")).await.unwrap();
    b.wait_for("tr[data-queue='shop/thumbnail']").await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let shot = |name: &'static str| {
        let (b, out) = (&b, &out);
        async move {
            let png = b.browser.screenshot().await.unwrap();
            std::fs::write(out.join(name), png).unwrap();
        }
    };
    shot("console-overview.png").await;

    b.show("#/tasks?queue=shop/thumbnail").await;
    b.wait_for("#tasks tbody tr[data-task-id]").await;
    shot("console-tasks.png").await;

    // Taller, so that the steps and the flow fit in one picture.
    b.browser.set_window_size(1440, 1300).await.unwrap();
    b.show(&format!("#/task/{root}")).await;
    b.wait_text("#flow", "onFailure").await;
    shot("console-task.png").await;
    b.browser.set_window_size(1440, 900).await.unwrap();

    b.show("#/dead?queue=billing").await;
    b.wait_text("#dead tbody", "payment provider").await;
    shot("console-dead.png").await;

    b.show("#/apps").await;
    b.click("button[data-pipeline='thumbnail']").await;
    b.wait_for(".submit-form").await;
    shot("console-apps.png").await;
    feeder.abort();
    let log = b.log().await;
    assert!(errors(&log).is_empty(), "the browser logged errors: {:#?}", errors(&log));
    b.close().await;
}
