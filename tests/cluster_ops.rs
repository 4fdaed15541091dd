//! Operating nodes without surprises, with real processes over real sockets: the probes answer on their own
//! listener while clients hold every connection of the HTTP endpoint, a member restarted after applications
//! changed has them before it serves its first request, and members come from DNS SRV records (a DNS server
//! of the test's own stands in for a headless Service).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pm_testkit::{free_addr, Scheduler, SchedulerCluster};
use pm_tests::http;

/// `GET path` over HTTP/1.0 on a new connection; the status and the time from connecting to the end of the
/// answer, or `None` if no answer came within `wait`.
fn timed_get(addr: &str, path: &str, wait: Duration) -> Option<(u16, Duration)> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let status = reply.split(' ').nth(1)?.parse().ok()?;
    Some((status, started.elapsed()))
}

/// 200 clients send an unfinished request header to the HTTP endpoint and hold their connections (64 are
/// accepted, until the 5 s header timeout; the rest wait to be accepted). A probe there waits with them; on
/// `--probe-listen` it is answered at once. The objective is 100 ms; the assertion is the kubelet's 1 s
/// timeout (this machine runs other tests meanwhile), and the time is printed.
#[test]
fn probes_answer_on_their_own_listener_while_clients_hold_the_http_port() {
    let probe = free_addr("127.0.0.1");
    let s = Scheduler::start(&["--probe-listen", &probe]);
    let main = s.http_addr.clone().unwrap();
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(&main).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Unfinished: ").unwrap();
        held.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    // The attack holds: the main endpoint does not answer its own probe within the kubelet's timeout.
    let blocked = timed_get(&main, "/healthz", Duration::from_secs(1));
    assert!(blocked.is_none(), "the main endpoint answered while held: {blocked:?}");
    for path in ["/healthz", "/readyz"] {
        let (status, took) = timed_get(&probe, path, Duration::from_secs(5)).expect("no answer on --probe-listen");
        println!(
            "{path} on --probe-listen answered {status} in {:.1} ms with 200 clients holding the HTTP port",
            took.as_secs_f64() * 1000.0
        );
        assert_eq!(status, 200, "{path}");
        assert!(took < Duration::from_secs(1), "{path} took {took:?}");
    }
    // Only the probes live there.
    assert_eq!(timed_get(&probe, "/metrics", Duration::from_secs(5)).map(|(s, _)| s), Some(404));
    drop(held);
}

/// An application created while a member was down is there when the member's first request after its
/// restart asks for it: the member copies the others' applications before it serves (the periodic pull is an
/// hour away here, so only the pull at start can bring it).
#[test]
fn a_restarted_member_serves_applications_created_while_it_was_down_from_its_first_request() {
    let mut c = SchedulerCluster::start(2, &["--catalog-sync-interval", "1h", "--steal-interval", "0"]);
    c.nodes[1].kill();
    let def = serde_json::json!({"name": "ocr", "params": {"url": {}}, "template": {"pipeline": [
        {"executorName": "sh", "commands": ["echo {{url}}"]}]}});
    let h0 = c.nodes[0].http_addr.clone().unwrap();
    let r = http(&h0, "POST", "/api/applications/myname/pipelines", &[], def.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    c.nodes[1].restart();
    let h1 = c.nodes[1].http_addr.clone().unwrap();
    let first = http(&h1, "GET", "/api/applications/myname/pipelines/ocr", &[], b"");
    assert_eq!(first.status, 200, "first request after the restart: {}", String::from_utf8_lossy(&first.body));
    let submit = http(&h1, "POST", "/api/applications/myname/pipelines/ocr", &[], br#"{"url": "x"}"#);
    assert_eq!(submit.status, 202, "{}", String::from_utf8_lossy(&submit.body));
}

/// A DNS server of the test's own on 127.0.0.1, answering the SRV query for `name` with the records the test
/// puts in `records` (`HOST:PORT` each; TTL 0), and every other query with NXDOMAIN.
struct Dns {
    addr: String,
    records: Arc<Mutex<Vec<String>>>,
}

impl Dns {
    fn start(name: &'static str) -> Dns {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::rdata::SRV;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let records: Arc<Mutex<Vec<String>>> = Arc::default();
        let shared = records.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut reply = Message::new();
                reply.set_id(query.id()).set_message_type(MessageType::Response).set_op_code(query.op_code());
                reply.set_recursion_desired(query.recursion_desired()).set_recursion_available(true);
                reply.set_authoritative(true);
                let mut found = false;
                for q in query.queries() {
                    reply.add_query(q.clone());
                    let asked = q.name().to_ascii();
                    if q.query_type() == RecordType::SRV && asked.trim_end_matches('.').eq_ignore_ascii_case(name) {
                        found = true;
                        for r in shared.lock().unwrap().iter() {
                            let (host, port) = r.rsplit_once(':').unwrap();
                            let target = Name::from_ascii(format!("{host}.")).unwrap();
                            let srv = SRV::new(0, 10, port.parse().unwrap(), target);
                            reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::SRV(srv)));
                        }
                    }
                }
                if !found {
                    reply.set_response_code(ResponseCode::NXDomain);
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from);
            }
        });
        Dns { addr, records }
    }

    fn set(&self, records: &[&String]) {
        *self.records.lock().unwrap() = records.iter().map(|r| r.to_string()).collect();
    }
}

/// The member list a node announces in its `Welcome`.
async fn ring_of(addr: &str) -> Vec<String> {
    let c = pm_client::Client::connect(addr, pm_client::ConnectOptions::producer().reconnect(false)).await.unwrap();
    c.welcome().members.clone()
}

/// `--members dns:NAME` against a local DNS server standing in for a headless Service: every node derives the
/// same ordered list; a node added to DNS (the StatefulSet scaled up) starts with the longer list, and an older
/// member takes it on restart with the same flags; a member missing from DNS later (a pod being recreated)
/// keeps its place; and a node that finds no member in DNS and remembers none refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_from_dns_in_a_stable_order_that_only_grows() {
    const NAME: &str = "_pm._tcp.pm.test";
    let dns = Dns::start(NAME);
    let tmp = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = (0..3).map(|i| free_addr(&format!("127.0.0.{}", 20 + i))).collect();
    let start = |i: usize| {
        let args = [
            "--members",
            "dns:_pm._tcp.pm.test",
            "--members-dns-server",
            &dns.addr,
            "--advertise",
            &addrs[i],
            "--members-dns-interval",
            "200ms",
        ];
        Scheduler::start_at(&addrs[i], &tmp.path().join(format!("node-{i}")), None, &args)
    };
    dns.set(&[&addrs[1], &addrs[0]]);
    let mut n0 = start(0);
    let _n1 = start(1);
    let two = vec![addrs[0].clone(), addrs[1].clone()];
    assert_eq!(ring_of(&addrs[0]).await, two);
    assert_eq!(ring_of(&addrs[1]).await, two);

    // Scaled up: the new member starts with all three; an older one takes them on at its restart.
    dns.set(&[&addrs[0], &addrs[1], &addrs[2]]);
    let _n2 = start(2);
    assert_eq!(ring_of(&addrs[2]).await, addrs);
    assert_eq!(ring_of(&addrs[0]).await, two, "a running node keeps its ring");
    // ... and counts the member it does not use yet.
    let metrics0 = n0.http_addr.clone().unwrap();
    pm_testkit::wait_for(Duration::from_secs(20), "pm_cluster_members_pending 1 on node 0", || {
        let text = String::from_utf8(http(&metrics0, "GET", "/metrics", &[], b"").body).unwrap();
        text.lines().any(|l| l == "pm_cluster_members_pending 1").then_some(())
    });
    n0.restart();
    assert_eq!(ring_of(&addrs[0]).await, addrs);

    // Member 1 is missing from DNS for a while: the others keep it in its place.
    dns.set(&[&addrs[0], &addrs[2]]);
    n0.restart();
    assert_eq!(ring_of(&addrs[0]).await, addrs);

    // No record at all and nothing remembered: no ring to join, the start fails (after --members-dns-wait).
    dns.set(&[]);
    let lone = free_addr("127.0.0.23");
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", &lone, "--advertise", &lone, "--http-listen", "off"])
        .args(["--members", "dns:_pm._tcp.pm.test", "--members-dns-server", &dns.addr, "--members-dns-wait", "1s"])
        .arg("--data")
        .arg(tmp.path().join("lone"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("dns:_pm._tcp.pm.test"), "{stderr}");
}
