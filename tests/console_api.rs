//! The operating API end to end (docs/http-api.md, "Operating queues and tasks"): real `pm-scheduler`
//! processes, real agents over the protocol, HTTP over real sockets. Queues (with every cluster member's
//! figures, a member that is down named), pause, resume and purge (a pause kept across a restart), task
//! listings with cursor pages, counts and bulk cancels that reach exactly their filter, dead letters paged,
//! redriven and deleted, the live event stream, and the refusals: bad filters name their parameter, the wrong
//! token or another site's page changes nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use pm_client::{Client, ConnectOptions};
use pm_protocol::pb::TaskSpec;
use pm_testkit::{Scheduler, SchedulerCluster};
use pm_tests::tokens::{token_flags, ADMIN, AGENT, PRODUCER};
use pm_tests::{assert_no_lease, http, next_lease, task, HttpReply};
use serde_json::{json, Value};

fn start(dir: &Path) -> Scheduler {
    let flags = token_flags(dir);
    Scheduler::start_in(&dir.join("data"), &flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A request with `token` (empty: none) and optional extra headers.
fn api_with(s: &Scheduler, method: &str, path: &str, token: &str, extra: &[(&str, &str)], body: &Value) -> HttpReply {
    let auth = format!("Bearer {token}");
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if !token.is_empty() {
        headers.push(("Authorization", &auth));
    }
    headers.extend_from_slice(extra);
    let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
    http(s.http_addr.as_deref().unwrap(), method, path, &headers, &body)
}

fn api(s: &Scheduler, method: &str, path: &str, token: &str, body: &Value) -> HttpReply {
    api_with(s, method, path, token, &[], body)
}

fn get(s: &Scheduler, path: &str) -> Value {
    let r = api(s, "GET", path, PRODUCER, &Value::Null);
    assert_eq!(r.status, 200, "GET {path}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn queue<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["queues"].as_array().unwrap().iter().find(|q| q["queue"] == name).unwrap_or_else(|| panic!("{view}"))
}

fn ids(v: &Value, field: &str) -> Vec<u64> {
    v[field].as_array().unwrap().iter().map(|t| t["taskId"].as_u64().unwrap()).collect()
}

/// A `400` naming `param`.
fn assert_bad_param(r: &HttpReply, param: &str) {
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["param"], param, "{}", r.json());
}

async fn producer(s: &Scheduler) -> Client {
    s.client(ConnectOptions::producer().token(PRODUCER)).await
}

async fn agent(s: &Scheduler) -> (Client, pm_client::Leases) {
    Client::connect_agent(&s.addr, ConnectOptions::agent().token(AGENT).reconnect(false)).await.unwrap()
}

fn one_attempt(queue: &str, payload: &str) -> TaskSpec {
    TaskSpec { max_attempts: 1, ..task(queue, payload.as_bytes()) }
}

#[tokio::test]
async fn a_pause_holds_leases_across_a_restart_and_refused_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    let p = producer(&s).await;
    let first = p.submit_one(task("q", b"one")).await.unwrap();

    let view = get(&s, "/api/queues");
    assert_eq!((queue(&view, "q")["ready"].as_u64(), queue(&view, "q")["paused"].as_bool()), (Some(1), Some(false)));
    assert_eq!(view["members"][0]["up"], true, "{view}");
    assert_eq!(api(&s, "GET", "/api/queues/nope", PRODUCER, &Value::Null).status, 404);
    assert_eq!(api(&s, "POST", "/api/queues/nope/pause", ADMIN, &Value::Null).status, 404);

    // Refused: no token, a producer token, another site's page. Nothing changes.
    assert_eq!(api(&s, "POST", "/api/queues/q/pause", "", &Value::Null).status, 401);
    let r = api(&s, "POST", "/api/queues/q/pause", PRODUCER, &Value::Null);
    assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("ROLE_NOT_ALLOWED")));
    let evil = [("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")];
    let r = api_with(&s, "POST", "/api/queues/q/pause", ADMIN, &evil, &Value::Null);
    assert_eq!((r.status, r.json()["code"].as_str()), (403, Some("CROSS_ORIGIN")));
    assert_eq!(queue(&get(&s, "/api/queues"), "q")["paused"], false, "refused requests changed nothing");

    let r = api(&s, "POST", "/api/queues/q/pause", ADMIN, &Value::Null);
    assert_eq!((r.status, r.json()["paused"].as_bool()), (200, Some(true)), "{}", r.json());
    s.restart();
    let p = producer(&s).await;
    let second = p.submit_one(task("q", b"two")).await.unwrap();
    assert_eq!(queue(&get(&s, "/api/queues"), "q")["paused"], true, "the pause is kept across the restart");
    let (a, mut leases) = agent(&s).await;
    a.credit("q", 2).await.unwrap();
    assert_no_lease(&mut leases, Duration::from_millis(500)).await;

    let r = api(&s, "POST", "/api/queues/q/resume", ADMIN, &Value::Null);
    assert_eq!((r.status, r.json()["paused"].as_bool()), (200, Some(false)));
    let got: HashSet<u64> = [next_lease(&mut leases).await.task_id, next_lease(&mut leases).await.task_id].into();
    assert_eq!(got, HashSet::from([first, second]));
}

#[tokio::test]
async fn listings_page_by_cursor_and_bulk_actions_reach_exactly_their_filter() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let p = producer(&s).await;
    let mut mine = Vec::new();
    for i in 0..25 {
        let key = if i % 5 == 0 { "vip" } else { "" };
        mine.push(
            p.submit_one(TaskSpec { key: key.into(), ..task("list", format!("t{i}").as_bytes()) }).await.unwrap(),
        );
    }
    let other = p.submit_one(task("other", b"x")).await.unwrap();

    // Pages of 10, newest first; new tasks do not shift the pages already asked for.
    let first = get(&s, "/api/tasks?queue=list&limit=10");
    assert_eq!(ids(&first, "tasks"), mine.iter().rev().take(10).copied().collect::<Vec<_>>());
    p.submit_one(task("list", b"newer")).await.unwrap();
    let cursor = first["nextCursor"].as_str().unwrap().to_string();
    let second = get(&s, &format!("/api/tasks?queue=list&limit=10&cursor={cursor}"));
    assert_eq!(ids(&second, "tasks"), mine.iter().rev().skip(10).take(10).copied().collect::<Vec<_>>());
    let cursor = second["nextCursor"].as_str().unwrap().to_string();
    let third = get(&s, &format!("/api/tasks?queue=list&limit=10&cursor={cursor}"));
    assert_eq!(ids(&third, "tasks"), mine.iter().rev().skip(20).copied().collect::<Vec<_>>());
    assert!(third["nextCursor"].is_null(), "{third}");
    assert_eq!(get(&s, "/api/tasks?state=ready&key=vip")["tasks"].as_array().unwrap().len(), 5);

    // Bad filters are refused, naming the parameter.
    assert_bad_param(&api(&s, "GET", "/api/tasks?state=bogus", PRODUCER, &Value::Null), "state");
    assert_bad_param(&api(&s, "GET", "/api/tasks?limit=1001", PRODUCER, &Value::Null), "limit");
    assert_bad_param(&api(&s, "GET", "/api/tasks?qeue=list", PRODUCER, &Value::Null), "qeue");
    assert_bad_param(&api(&s, "GET", "/api/tasks?cursor=abc", PRODUCER, &Value::Null), "cursor");
    assert_bad_param(&api(&s, "GET", "/api/tasks?queue=bad%20name", PRODUCER, &Value::Null), "queue");
    assert_eq!(api(&s, "GET", "/api/tasks/999999", PRODUCER, &Value::Null).status, 404);

    // A bulk cancel says how many first, and reaches exactly that set.
    let count = get(&s, "/api/tasks/count?queue=list&key=vip");
    assert_eq!((count["count"].as_u64(), count["exact"].as_bool()), (Some(5), Some(true)));
    assert_bad_param(&api(&s, "POST", "/api/tasks/cancel", ADMIN, &json!({})), "all");
    let r = api(&s, "POST", "/api/tasks/cancel", PRODUCER, &json!({"queue": "list", "key": "vip"}));
    assert_eq!(r.status, 403);
    let r = api(&s, "POST", "/api/tasks/cancel", ADMIN, &json!({"queue": "list", "key": "vip"}));
    assert_eq!((r.status, r.json()["cancelled"].as_u64()), (200, Some(5)), "{}", r.json());
    assert_eq!(get(&s, "/api/tasks/count?queue=list&state=ready")["count"], 21);
    assert_eq!(get(&s, "/api/tasks/count?queue=list&state=cancelled")["count"], 5);
    assert_eq!(get(&s, &format!("/api/tasks/{other}"))["state"], "ready", "another queue is untouched");

    // A purge cancels what is ready and delayed, not what is leased.
    let (a, mut leases) = agent(&s).await;
    a.credit("list", 1).await.unwrap();
    let running = next_lease(&mut leases).await.task_id;
    let r = api(&s, "POST", "/api/queues/list/purge", ADMIN, &Value::Null);
    assert_eq!((r.status, r.json()["purged"].as_u64()), (200, Some(20)), "{}", r.json());
    let q = queue(&get(&s, "/api/queues"), "list").clone();
    assert_eq!((q["ready"].as_u64(), q["leased"].as_u64()), (Some(0), Some(1)), "{q}");
    assert_eq!(get(&s, &format!("/api/tasks/{running}"))["state"], "leased");
}

#[tokio::test]
async fn dead_letters_are_paged_redriven_and_deleted_only_as_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let p = producer(&s).await;
    let (a, mut leases) = agent(&s).await;
    let mut dead = Vec::new();
    for i in 0..5 {
        dead.push(p.submit_one(one_attempt("dl", &format!("{{\"n\": {i}}}"))).await.unwrap());
        a.credit("dl", 1).await.unwrap();
        let t = next_lease(&mut leases).await;
        let item = pm_protocol::pb::NackItem { lease_id: t.lease_id, reason: "exit 3".into(), ..Default::default() };
        a.nack(vec![item]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue(&get(&s, "/api/queues"), "dl")["dead"] != 5 {
        assert!(Instant::now() < deadline, "not all dead: {}", get(&s, "/api/queues"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = get(&s, "/api/dead?queue=dl&limit=2");
    assert_eq!(ids(&page, "deadLetters"), dead[..2].to_vec());
    assert_eq!(page["deadLetters"][0]["payload"], json!({"n": 0}));
    assert_eq!(page["deadLetters"][0]["reason"].as_str().map(|r| r.contains("exit 3")), Some(true));
    let next = page["nextCursor"].as_str().unwrap().to_string();
    assert_eq!(ids(&get(&s, &format!("/api/dead?queue=dl&limit=2&cursor={next}")), "deadLetters"), dead[2..4].to_vec());
    assert_bad_param(&api(&s, "GET", "/api/dead?limit=0", PRODUCER, &Value::Null), "limit");

    // Naming nothing is refused, never taken as "all"; then one redriven, two deleted.
    assert_bad_param(&api(&s, "POST", "/api/dead/redrive", ADMIN, &json!({"queue": "dl"})), "ids");
    assert_bad_param(&api(&s, "POST", "/api/dead/delete", ADMIN, &json!({})), "ids");
    assert_eq!(api(&s, "POST", "/api/dead/redrive", PRODUCER, &json!({"ids": [dead[0]]})).status, 403);
    let r = api(&s, "POST", "/api/dead/redrive", ADMIN, &json!({"ids": [dead[0]]}));
    assert_eq!((r.status, r.json()["redriven"].as_u64()), (200, Some(1)), "{}", r.json());
    a.credit("dl", 1).await.unwrap();
    assert_eq!(next_lease(&mut leases).await.task_id, dead[0], "the redriven task is delivered again");
    let r = api(&s, "POST", "/api/dead/delete", ADMIN, &json!({"ids": [dead[1], dead[2]]}));
    assert_eq!((r.status, r.json()["deleted"].as_u64()), (200, Some(2)));
    assert_eq!(ids(&get(&s, "/api/dead?queue=dl"), "deadLetters"), dead[3..].to_vec());
    let r = api(&s, "POST", "/api/dead/delete", ADMIN, &json!({"queue": "dl", "all": true}));
    assert_eq!(r.json()["deleted"], 2);
    assert_eq!(get(&s, "/api/dead")["deadLetters"], json!([]));
}

/// Reads an event stream until `want` has been seen (or 10 s); returns what was read.
fn read_events(addr: &str, path: &str, token: &str, want: &[&str]) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
    let (mut text, mut buf) = (String::new(), [0u8; 4096]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !want.iter().all(|w| text.contains(w)) {
        if let Ok(n) = c.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    text
}

#[tokio::test]
async fn the_event_stream_sends_queue_figures_and_a_task_s_state_changes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let p = producer(&s).await;
    let id = p.submit_one(task("live", b"x")).await.unwrap();
    let addr = s.http_addr.clone().unwrap();
    let path = format!("/api/events?queue=live&task={id}");
    let reader = {
        let addr = addr.clone();
        std::thread::spawn(move || read_events(&addr, &path, PRODUCER, &["\"state\":\"succeeded\""]))
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (a, mut leases) = agent(&s).await;
    a.credit("live", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    a.ack(vec![(t.lease_id, bytes::Bytes::new())]).await.unwrap();
    let text = reader.join().unwrap();
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("event: queues"), "{text}");
    assert!(text.contains("event: queue"), "{text}");
    let states: Vec<&str> =
        ["\"state\":\"ready\"", "\"state\":\"succeeded\""].into_iter().filter(|s| text.contains(s)).collect();
    assert_eq!(states.len(), 2, "the task's ready, then succeeded: {text}");
    let r = api(&s, "GET", "/api/events?task=abc", PRODUCER, &Value::Null);
    assert_bad_param(&r, "task");
    assert_eq!(api(&s, "GET", "/api/events", "", &Value::Null).status, 401);
}

#[tokio::test]
async fn a_cluster_view_sums_every_member_and_names_one_that_is_down() {
    let mut c = SchedulerCluster::start(3, &[]);
    let seeds = c.members();
    let cluster = pm_client::Cluster::connect(&seeds, ConnectOptions::producer(), Default::default()).await.unwrap();
    let specs: Vec<TaskSpec> = (0..30).map(|i| TaskSpec { key: format!("k{i}"), ..task("spread", b"x") }).collect();
    let submitted: HashSet<u64> = cluster.submit(specs).await.unwrap().iter().map(|r| r.task_id).collect();
    let s = &c.nodes[0];
    let view = get(s, "/api/queues");
    let q = queue(&view, "spread");
    assert_eq!(q["ready"], 30, "{view}");
    assert!(q["byMember"].as_object().unwrap().len() > 1, "tasks of every member: {view}");
    // Pages across the members, newest first, nothing twice and nothing missed.
    let mut listed = Vec::new();
    let mut path = "/api/tasks?queue=spread&limit=7".to_string();
    loop {
        let page = get(s, &path);
        listed.extend(ids(&page, "tasks"));
        match page["nextCursor"].as_str() {
            Some(next) => path = format!("/api/tasks?queue=spread&limit=7&cursor={next}"),
            None => break,
        }
    }
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first: {listed:?}");
    assert_eq!(listed.iter().copied().collect::<HashSet<_>>(), submitted);

    c.nodes[2].kill();
    let view = get(&c.nodes[0], "/api/queues");
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{view}");
    assert_eq!(members[2]["up"], false, "the member that is down is named: {view}");
    assert!(members[2]["error"].as_str().is_some_and(|e| !e.is_empty()), "{view}");
    let r = api(&c.nodes[0], "POST", "/api/queues/spread/pause", "", &Value::Null);
    assert_eq!(r.status, 207, "two of three members paused: {}", r.json());
    let body = r.json();
    let failed = body["members"].as_array().unwrap().iter().filter(|m| m["ok"] == false).count();
    assert_eq!(failed, 1, "{body}");
    // A bulk cancel by ids names the member it could not reach, and how many tasks that leaves.
    let ids: Vec<u64> = submitted.iter().copied().collect();
    let r = api(&c.nodes[0], "POST", "/api/tasks/cancel", "", &json!({"ids": ids}));
    let body = r.json();
    assert_eq!(r.status, 207, "{body}");
    let unreached = body["failed"][0]["tasks"].as_u64().unwrap();
    assert_eq!(body["cancelled"].as_u64().unwrap() + unreached, 30, "{body}");
    // A listing that would leave the member out fails rather than look complete.
    assert_eq!(api(&c.nodes[0], "GET", "/api/tasks?queue=spread", "", &Value::Null).status, 502);
}

fn pmctl(s: &Scheduler, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    pm_testkit::pmctl(&s.addr, &all, Some(b""))
}

#[tokio::test]
async fn pmctl_lists_tasks_and_steers_queues_and_a_purge_needs_a_yes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let p = producer(&s).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(p.submit_one(TaskSpec { key: format!("k{}", i % 2), ..task("cli", b"x") }).await.unwrap());
    }
    let o = pmctl(&s, PRODUCER, &["ls", "--queue", "cli", "--key", "k1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want: Vec<u64> =
        ids.iter().rev().copied().filter(|id| ids.iter().position(|x| x == id).unwrap() % 2 == 1).collect();
    assert_eq!(ids_of(&v), want);
    let o = pmctl(&s, PRODUCER, &["ls", "--queue", "cli", "--limit", "4"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(text.lines().count(), 1 + 4 + 1, "header, 4 tasks, the next-page hint:\n{text}");
    assert!(text.contains(&format!("--before {}", ids[2])), "{text}");
    let o = pmctl(&s, PRODUCER, &["ls", "--state", "bogus"]);
    assert_eq!(o.status.code(), Some(64), "{}", String::from_utf8_lossy(&o.stderr));

    let o = pmctl(&s, ADMIN, &["queue", "pause", "cli"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cli paused\n");
    assert_eq!(queue(&get(&s, "/api/queues"), "cli")["paused"], true);
    assert!(!pmctl(&s, ADMIN, &["queue", "pause", "nope"]).status.success(), "an unknown queue is refused");
    assert!(!pmctl(&s, PRODUCER, &["queue", "resume", "cli"]).status.success(), "a producer may not act");
    let o = pmctl(&s, ADMIN, &["queue", "purge", "cli"]);
    assert_eq!(o.status.code(), Some(64), "no terminal, no --yes: refused");
    assert_eq!(queue(&get(&s, "/api/queues"), "cli")["ready"], 6, "nothing purged");
    let o = pmctl(&s, ADMIN, &["queue", "purge", "cli", "--yes"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cli purged: 6 task(s) cancelled\n");
    let o = pmctl(&s, ADMIN, &["queue", "resume", "cli"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "cli resumed\n");
}

fn ids_of(v: &Value) -> Vec<u64> {
    ids(v, "tasks")
}

#[tokio::test]
async fn raw_task_json_is_submitted_and_cancelled_over_http_without_an_application() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let hello = json!({"pipeline": [{"executorName": "sh", "commands": ["echo hi"]}]});
    let original = json!({"commands": [{"executorName": "sh", "commandLines": ["echo hi"]}]});

    assert_eq!(api(&s, "POST", "/api/queues/jobs/tasks", "", &hello).status, 401);
    let r = api(&s, "POST", "/api/queues/jobs/tasks", PRODUCER, &hello);
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["taskId"].as_u64().unwrap();
    assert!(r.headers.contains(&format!("location: /api/tasks/{id}")), "{}", r.headers);
    let (a, mut leases) = agent(&s).await;
    a.credit("jobs", 1).await.unwrap();
    let t = next_lease(&mut leases).await;
    assert_eq!(t.task_id, id);
    assert_eq!(serde_json::from_slice::<Value>(&t.payload).unwrap(), hello, "the payload is the document as sent");

    // An array: each item on its own; the invalid one and the one naming another queue are refused.
    let items = json!([hello, {"pipeline": []}, original, {"queue": "other", "pipeline": hello["pipeline"]}]);
    let r = api(&s, "POST", "/api/queues/jobs/tasks", PRODUCER, &items);
    assert_eq!(r.status, 207, "{}", r.json());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(r.json()["accepted"], 2);
    assert!(results[0]["taskId"].is_u64() && results[2]["taskId"].is_u64(), "{results:?}");
    assert_eq!(
        (results[1]["code"].as_str(), results[3]["code"].as_str()),
        (Some("INVALID_TASK"), Some("INVALID_TASK"))
    );
    assert!(results[3]["error"].as_str().unwrap().contains("other"), "{results:?}");

    // An idempotency key returns the first task; a queue with a slash is written %2F.
    let key = [("Idempotency-Key", "order-7")];
    let first = api_with(&s, "POST", "/api/queues/shop%2Fmail/tasks", PRODUCER, &key, &hello).json();
    let again = api_with(&s, "POST", "/api/queues/shop%2Fmail/tasks", PRODUCER, &key, &hello).json();
    assert_eq!((first["taskId"].clone(), again["duplicate"].as_bool()), (again["taskId"].clone(), Some(true)));
    assert_eq!(get(&s, &format!("/api/tasks/{}", first["taskId"]))["queue"], "shop/mail");
    let r = api(&s, "POST", "/api/queues/shop%2Fmail/pause", ADMIN, &Value::Null);
    assert_eq!((r.status, r.json()["paused"].as_bool()), (200, Some(true)), "{}", r.json());
    assert_bad_param(&api(&s, "POST", "/api/queues/bad%20name/tasks", PRODUCER, &hello), "queue");
    assert_eq!(api(&s, "POST", "/api/queues/jobs/tasks", PRODUCER, &json!({"no": "pipeline"})).status, 400);

    // DELETE cancels once; then the task is finished.
    let doomed = first["taskId"].as_u64().unwrap();
    let r = api(&s, "DELETE", &format!("/api/tasks/{doomed}"), PRODUCER, &Value::Null);
    assert_eq!((r.status, r.json()["cancelled"].as_bool()), (200, Some(true)));
    assert_eq!(api(&s, "DELETE", &format!("/api/tasks/{doomed}"), PRODUCER, &Value::Null).status, 404);
    assert_eq!(get(&s, &format!("/api/tasks/{doomed}"))["state"], "cancelled");
}
