//! Hostile and broken clients: each gets an error frame and a closed connection, while the server stays up
//! and other connections are unaffected.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pm_client::ConnectOptions;
use pm_protocol::pb;
use pm_protocol::{Envelope, ErrorCode, Kind, Message, Role, PROTOCOL_VERSION};
use pm_testkit::Scheduler;
use pm_tests::task;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn frame(env: &Envelope) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(env.encoded_len() as u32);
    env.encode(&mut b).unwrap();
    b.to_vec()
}

fn hello(role: Role, version: u32) -> Vec<u8> {
    frame(&pb::Hello { version, role: role as i32, client_id: "raw".into(), ..Default::default() }.into())
}

/// Reads frames until EOF; returns them. Fails if the server does not close within 5 s.
async fn read_until_close(s: &mut TcpStream) -> Vec<Envelope> {
    let mut buf = Vec::new();
    // Generous: on a loaded machine a shutdown (signal, drain, settle) can take seconds to reach the socket.
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "server did not close the connection");
    let mut out = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(Envelope::decode(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    out
}

fn last_error(frames: &[Envelope]) -> (ErrorCode, String) {
    match frames.last().and_then(|e| e.kind.clone()) {
        Some(Kind::Error(e)) => (ErrorCode::try_from(e.code).unwrap(), e.message),
        other => panic!("expected an Error frame last, got {other:?}"),
    }
}

async fn raw(s: &Scheduler, bytes: &[u8]) -> Vec<Envelope> {
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(bytes).await.unwrap();
    read_until_close(&mut c).await
}

#[tokio::test]
async fn bad_clients_get_an_error_and_a_closed_connection() {
    let s = Scheduler::start(&["--max-frame-bytes", "65536", "--max-payload-bytes", "60000"]);
    // A well-behaved producer stays connected throughout.
    let p = s.client(ConnectOptions::producer()).await;
    p.submit_one(task("q", b"before")).await.unwrap();

    // Garbage: an HTTP request reads as a ~1.2 GB length prefix.
    let (code, _) = last_error(&raw(&s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert_eq!(code, ErrorCode::FrameTooLarge);

    // A 4 GiB length prefix.
    let (code, msg) = last_error(&raw(&s, &[0xff, 0xff, 0xff, 0xff, 0, 1, 2]).await);
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert!(msg.contains("65536"), "{msg}");

    // A request before Hello.
    let submit =
        frame(&pb::Submit { request_id: 1, tasks: vec![task("q", b"x")], failover: false, notify: false }.into());
    assert_eq!(last_error(&raw(&s, &submit).await).0, ErrorCode::HandshakeRequired);

    // An unsupported protocol version.
    assert_eq!(last_error(&raw(&s, &hello(Role::Producer, 99)).await).0, ErrorCode::UnsupportedVersion);

    // An unknown message kind after a good Hello (field 99 of Envelope).
    let mut bytes = hello(Role::Producer, PROTOCOL_VERSION);
    bytes.extend_from_slice(&[0, 0, 0, 3, 0x98, 0x06, 0x01]);
    let frames = raw(&s, &bytes).await;
    assert!(matches!(frames[0].kind, Some(Kind::Welcome(_))));
    assert_eq!(last_error(&frames).0, ErrorCode::UnknownMessage);

    // A body that is not protobuf.
    let mut bytes = hello(Role::Producer, PROTOCOL_VERSION);
    bytes.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(last_error(&raw(&s, &bytes).await).0, ErrorCode::MalformedFrame);

    // A message only servers send.
    let mut bytes = hello(Role::Agent, PROTOCOL_VERSION);
    bytes.extend(frame(&pb::Leased { tasks: vec![] }.into()));
    assert_eq!(last_error(&raw(&s, &bytes).await).0, ErrorCode::UnknownMessage);

    // A second Hello.
    let mut bytes = hello(Role::Producer, PROTOCOL_VERSION);
    bytes.extend(hello(Role::Producer, PROTOCOL_VERSION));
    assert_eq!(last_error(&raw(&s, &bytes).await).0, ErrorCode::HandshakeRequired);

    // An oversized frame after the handshake (length just over the limit).
    let mut bytes = hello(Role::Producer, PROTOCOL_VERSION);
    bytes.extend_from_slice(&65537u32.to_be_bytes());
    bytes.extend_from_slice(&[0u8; 100]);
    assert_eq!(last_error(&raw(&s, &bytes).await).0, ErrorCode::FrameTooLarge);

    // The server is still up, and the first connection still works.
    p.submit_one(task("q", b"after")).await.unwrap();
    let admin = s.client(ConnectOptions::admin()).await;
    let ready: u64 = admin.stats().await.unwrap().queues.iter().map(|q| q.ready).sum();
    assert_eq!(ready, 2);
}

#[tokio::test]
async fn silent_connection_is_closed_by_the_handshake_timeout() {
    let s = Scheduler::start(&["--handshake-timeout", "300ms"]);
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let frames = read_until_close(&mut c).await;
    assert_eq!(last_error(&frames).0, ErrorCode::Timeout);
}

/// Reads one frame (with a 5 s limit).
async fn read_frame(s: &mut TcpStream) -> Envelope {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await.unwrap().unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    Envelope::decode(&body[..]).unwrap()
}

#[tokio::test]
async fn silent_connection_is_closed_by_the_idle_timeout_and_pings_keep_one_open() {
    let s = Scheduler::start(&["--idle-timeout", "400ms"]);
    let mut silent = TcpStream::connect(&s.addr).await.unwrap();
    let mut pinging = TcpStream::connect(&s.addr).await.unwrap();
    // The silent connection's last frame is its hello: the idle timeout counts from there, so the clock
    // starts before that hello is written (starting it later would measure less than the server waited).
    let since = std::time::Instant::now();
    for c in [&mut silent, &mut pinging] {
        c.write_all(&hello(Role::Agent, PROTOCOL_VERSION)).await.unwrap();
        assert!(matches!(read_frame(c).await.kind, Some(Kind::Welcome(_))));
    }
    // The pinging connection outlives the silent one by well over a timeout.
    let pinger = tokio::spawn(async move {
        for nonce in 0..12 {
            pinging.write_all(&frame(&pb::Ping { nonce }.into())).await.unwrap();
            assert!(matches!(read_frame(&mut pinging).await.kind, Some(Kind::Pong(_))), "ping {nonce}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let frames = read_until_close(&mut silent).await;
    let waited = since.elapsed();
    assert_eq!(last_error(&frames).0, ErrorCode::Timeout);
    assert!(waited >= Duration::from_millis(400), "closed after {waited:?}, before the idle timeout");
    pinger.await.unwrap();
}

#[tokio::test]
async fn pipelined_submits_beyond_the_inflight_limit_are_all_answered() {
    let s = Scheduler::start(&["--max-inflight-per-conn", "1"]);
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    let mut bytes = hello(Role::Producer, PROTOCOL_VERSION);
    for request_id in 1..=20 {
        bytes.extend(frame(
            &pb::Submit { request_id, tasks: vec![task("q", b"x")], failover: false, notify: false }.into(),
        ));
    }
    c.write_all(&bytes).await.unwrap();
    assert!(matches!(read_frame(&mut c).await.kind, Some(Kind::Welcome(_))));
    let mut acked = Vec::new();
    for _ in 1..=20 {
        match read_frame(&mut c).await.kind {
            Some(Kind::SubmitAck(a)) => acked.push(a.request_id),
            other => panic!("expected SubmitAck, got {other:?}"),
        }
    }
    assert_eq!(acked, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn open_connections_are_told_about_shutdown() {
    let mut s = Scheduler::start(&[]);
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(&hello(Role::Agent, PROTOCOL_VERSION)).await.unwrap();
    assert!(matches!(read_frame(&mut c).await.kind, Some(Kind::Welcome(_))));
    let stop = tokio::task::spawn_blocking(move || s.terminate(Duration::from_secs(15)));
    let frames = read_until_close(&mut c).await;
    assert_eq!(last_error(&frames).0, ErrorCode::ShuttingDown);
    assert!(stop.await.unwrap().is_some_and(|st| st.success()));
}

#[tokio::test]
async fn connection_limit_refuses_with_a_clear_code() {
    let s = Scheduler::start(&["--max-connections", "2"]);
    let _a = s.client(ConnectOptions::producer()).await;
    let _b = s.client(ConnectOptions::producer()).await;
    let err = pm_client::Client::connect(&s.addr, ConnectOptions::producer().reconnect(false)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooManyConnections), "{err}");
    drop(_a);
    // A slot frees up once a connection closes.
    let mut ok = false;
    for _ in 0..100 {
        if pm_client::Client::connect(&s.addr, ConnectOptions::producer()).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot must accept a new connection");
}

#[tokio::test]
async fn bad_config_exits_64_before_binding() {
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--fsync", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--max-payload-bytes", "999999999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-payload-bytes"));
    assert!(out.stdout.is_empty(), "nothing may be bound on bad config");
}

#[tokio::test]
async fn the_connection_limit_per_source_address_refuses_only_that_address() {
    let s = Scheduler::start(&["--max-connections-per-ip", "2"]);
    let a = s.client(ConnectOptions::producer()).await;
    let _b = s.client(ConnectOptions::producer()).await;
    let err = pm_client::Client::connect(&s.addr, ConnectOptions::producer().reconnect(false)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooManyConnections), "{err}");
    assert!(err.to_string().contains("per source address"), "{err}");
    // The HTTP API's requests are connections to the node too, counted under their source address.
    let api = s.http_addr.clone().unwrap();
    let r = pm_tests::http(&api, "GET", "/api/queues", &[], b"");
    assert_eq!((r.status, r.json()["code"].as_str()), (503, Some("TOO_MANY_CONNECTIONS")), "{}", r.json());
    assert!(r.json()["error"].as_str().unwrap().contains("per source address"), "{}", r.json());
    // Another source address still gets in.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(s.addr.parse().unwrap()).await.unwrap();
    other.write_all(&hello(Role::Producer, PROTOCOL_VERSION)).await.unwrap();
    assert!(matches!(read_frame(&mut other).await.kind, Some(Kind::Welcome(_))));
    // A closed connection gives its address a slot back.
    drop(a);
    // (The HTTP calls block: off the runtime, so the dropped client's task can close its connection.)
    let get = |api: String| tokio::task::spawn_blocking(move || pm_tests::http(&api, "GET", "/api/queues", &[], b""));
    let mut served = false;
    for _ in 0..100 {
        if get(api.clone()).await.unwrap().status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "with a slot free, the HTTP API serves the address again (and gives the slot back)");
    let mut ok = false;
    for _ in 0..100 {
        if pm_client::Client::connect(&s.addr, ConnectOptions::producer().reconnect(false)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a freed slot must accept a new connection from the same address");
}

/// An agent that grants credits and then stops reading (it still pings): the tasks pushed to it pile up
/// unwritten past --max-write-buffer-bytes and its socket takes nothing for --write-stall-timeout; the node
/// closes that connection, its leases return at once, and another agent receives every task.
#[tokio::test]
async fn a_consumer_that_stops_reading_is_disconnected_and_its_leases_return() {
    let s = Scheduler::start(&[
        "--fsync",
        "none",
        "--max-frame-bytes",
        "65536",
        "--max-payload-bytes",
        "60000",
        "--max-write-buffer-bytes",
        "1048576",
        "--write-stall-timeout",
        "1s",
    ]);
    let mut slow = TcpStream::connect(&s.addr).await.unwrap();
    slow.write_all(&hello(Role::Agent, PROTOCOL_VERSION)).await.unwrap();
    let credit = pb::Credit { queue: "slow".into(), n: 100_000, set: false };
    slow.write_all(&frame(&credit.into())).await.unwrap();
    // 21 MiB of tasks: more than the loopback socket buffers (at most ~10 MiB here) and the 1 MiB allowed on
    // top of them.
    let p = s.client(ConnectOptions::producer()).await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..450 {
        let batch = (0..6).map(|_| task("slow", &[7u8; 8 * 1024])).collect();
        for r in p.submit(batch).await.unwrap_or_else(|e| panic!("{e}; node log:\n{}", s.log_tail())) {
            assert_eq!(r.code, ErrorCode::Ok as i32, "{}", r.message);
            ids.insert(r.task_id);
        }
    }
    eprintln!("TIMING submitted at {:?}", std::time::SystemTime::now());
    // It stays alive: a ping every 200 ms (which also wakes its connection on the node).
    let (mut slow_rd, mut slow_wr) = slow.into_split();
    let pinger = tokio::spawn(async move {
        for nonce in 0.. {
            if slow_wr.write_all(&frame(&pb::Ping { nonce }.into())).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The node gave up on the slow agent: every task is ready again and goes to an agent that reads (and
    // grants a credit back per task, as pm-agent does).
    let (good, mut leases) = s.agent().await;
    good.credit("slow", 64).await.unwrap();
    let mut got = std::collections::HashSet::new();
    while got.len() < ids.len() {
        let mut batch = vec![pm_tests::next_lease(&mut leases).await];
        while let Some(pm_client::AgentEvent::Leased(t)) = leases.try_next() {
            batch.push(t);
        }
        good.ack(batch.iter().map(|t| (t.lease_id, bytes::Bytes::new())).collect()).await.unwrap();
        good.credit("slow", batch.len() as u32).await.unwrap();
        got.extend(batch.iter().map(|t| t.task_id));
    }
    eprintln!("TIMING received at {:?}", std::time::SystemTime::now());
    assert_eq!(got, ids);
    // The slow connection was closed by the node: its reads end (after what was written before).
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow_rd.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow consumer's connection is still open");
    pinger.abort();
}

/// Before Hello, frames are bounded by 64 KiB whatever --max-frame-bytes allows: an unauthenticated peer that
/// sends a large length prefix and stalls is refused at once instead of making the node reserve the frame.
/// After Hello the configured limit applies.
#[tokio::test]
async fn frames_before_hello_are_bounded_by_64_kib() {
    let s = Scheduler::start(&[]);
    let mut prefix = (1u32 << 20).to_be_bytes().to_vec();
    prefix.extend_from_slice(&[0u8; 16]);
    let (code, msg) = last_error(&raw(&s, &prefix).await);
    assert_eq!(code, ErrorCode::FrameTooLarge, "{msg}");
    assert!(msg.contains("65536"), "{msg}");
    // A 1 MiB task after Hello is fine (the default limit is 4 MiB).
    let p = s.client(ConnectOptions::producer()).await;
    p.submit_one(task("big", &vec![1u8; 1 << 20])).await.unwrap();
}

/// Every frame the node sends within `d` of silence (reads until nothing arrives for `d`).
async fn frames_until_quiet(s: &mut TcpStream, d: Duration) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(d, s.read_exact(&mut len)).await {
            Err(_) => return out,
            Ok(r) => {
                r.unwrap();
            }
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        out.push(Envelope::decode(&body[..]).unwrap());
    }
}

/// The tasks pushed to a raw agent: frames are read until `want` tasks came (10 s at most), then until the
/// node is quiet for 700 ms, so that a push past `want` is seen too.
async fn leased_then_quiet(s: &mut TcpStream, want: usize) -> Vec<pb::LeasedTask> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        got.extend(leased(&frames_until_quiet(s, Duration::from_millis(100)).await));
    }
    got.extend(leased(&frames_until_quiet(s, Duration::from_millis(700)).await));
    got
}

/// The leased tasks among `frames`.
fn leased(frames: &[Envelope]) -> Vec<pb::LeasedTask> {
    frames
        .iter()
        .filter_map(|f| match &f.kind {
            Some(Kind::Leased(l)) => Some(l.tasks.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// --max-leases-per-conn: a raw agent that grants billions of credits on two queues is never pushed more than
/// the cap (credits and unacked leases together, across its queues); the clamps are counted; each ack frees a
/// place that a new credit fills; another agent connection has a cap of its own.
#[tokio::test]
async fn an_agent_never_holds_more_leases_than_the_cap_whatever_it_grants() {
    const CAP: usize = 10;
    let s = Scheduler::start(&["--fsync", "none", "--max-leases-per-conn", "10"]);
    let p = s.client(ConnectOptions::producer()).await;
    for q in ["cap-a", "cap-b"] {
        let tasks = (0..30).map(|i| task(q, format!("{q} {i}").as_bytes())).collect();
        for r in p.submit(tasks).await.unwrap() {
            assert_eq!(r.code, ErrorCode::Ok as i32, "{}", r.message);
        }
    }
    assert_eq!(pm_tests::refused_total(&s, "lease_cap"), 0);

    let mut a = TcpStream::connect(&s.addr).await.unwrap();
    a.write_all(&hello(Role::Agent, PROTOCOL_VERSION)).await.unwrap();
    assert!(matches!(read_frame(&mut a).await.kind, Some(Kind::Welcome(_))));
    let huge = |queue: &str| frame(&pb::Credit { queue: queue.into(), n: 4_000_000_000, set: false }.into());
    let mut grants = huge("cap-a");
    grants.extend(huge("cap-a"));
    a.write_all(&grants).await.unwrap();
    let first = leased_then_quiet(&mut a, CAP).await;
    assert_eq!(first.len(), CAP, "pushed {} tasks with a cap of {CAP}", first.len());
    // The cap spans queues (which may live on other shards): cap-b gets nothing while cap-a holds it all.
    a.write_all(&huge("cap-b")).await.unwrap();
    let none = leased(&frames_until_quiet(&mut a, Duration::from_millis(700)).await);
    assert!(none.is_empty(), "{} more tasks pushed past the cap", none.len());
    assert!(pm_tests::refused_total(&s, "lease_cap") >= 3, "every clamped Credit is counted");
    // The credits past the cap were dropped, not kept: the node's stats show none outstanding.
    let admin = s.client(ConnectOptions::admin()).await;
    let stats = admin.stats().await.unwrap();
    let credits: u64 = stats.queues.iter().filter(|q| q.queue.starts_with("cap-")).map(|q| q.credits).sum();
    assert_eq!(credits, 0, "{stats:?}");

    // Three acks free three places; a new huge credit (now on cap-b) fills exactly those.
    let items = first[..3].iter().map(|t| pb::AckItem { lease_id: t.lease_id, ..Default::default() }).collect();
    a.write_all(&frame(&pb::Ack { request_id: 7, items }.into())).await.unwrap();
    match read_frame(&mut a).await.kind {
        Some(Kind::LeaseReply(r)) => assert_eq!(r.codes, vec![ErrorCode::Ok as i32; 3]),
        other => panic!("expected LeaseReply, got {other:?}"),
    }
    a.write_all(&huge("cap-b")).await.unwrap();
    let second = leased_then_quiet(&mut a, 3).await;
    assert_eq!(second.len(), 3, "three acks free three places");
    assert!(second.iter().all(|t| t.queue == "cap-b"));

    // A nack frees a place too; the task goes to the next credit.
    let nack = pb::NackItem { lease_id: second[0].lease_id, ..Default::default() };
    a.write_all(&frame(&pb::Nack { request_id: 8, items: vec![nack] }.into())).await.unwrap();
    match read_frame(&mut a).await.kind {
        Some(Kind::LeaseReply(r)) => assert_eq!(r.codes, vec![ErrorCode::Ok as i32]),
        other => panic!("expected LeaseReply, got {other:?}"),
    }
    a.write_all(&huge("cap-b")).await.unwrap();
    assert_eq!(leased_then_quiet(&mut a, 1).await.len(), 1);

    // Another agent connection has a cap of its own.
    let (b, mut leases) = s.agent().await;
    b.credit("cap-a", u32::MAX).await.unwrap();
    for _ in 0..CAP {
        pm_tests::next_lease(&mut leases).await;
    }
    pm_tests::assert_no_lease(&mut leases, Duration::from_millis(700)).await;
}
