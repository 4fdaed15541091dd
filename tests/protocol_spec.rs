//! What docs/protocol.md promises a third-party client, checked over raw sockets: when an error closes the
//! connection, the order of the checks before `Hello`, backpressure instead of `LIMIT_EXCEEDED`, the empty
//! `Credit.queue`, item counts of `Extend`, who pings, `Hello.queues`, queue names that look like paths; and
//! the scheduler's exit code for a token file with a short token.

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

fn hello_with(role: Role, queues: &[&str]) -> Vec<u8> {
    let queues = queues.iter().map(|q| q.to_string()).collect();
    frame(&pb::Hello { version: PROTOCOL_VERSION, role: role as i32, queues, ..Default::default() }.into())
}

/// Connects and completes the handshake.
async fn connect(s: &Scheduler, role: Role, queues: &[&str]) -> TcpStream {
    let mut c = TcpStream::connect(&s.addr).await.unwrap();
    c.write_all(&hello_with(role, queues)).await.unwrap();
    assert!(matches!(read_frame(&mut c).await.kind, Some(Kind::Welcome(_))));
    c
}

async fn read_frame(s: &mut TcpStream) -> Envelope {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len)).await.expect("no frame in 10 s").unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    Envelope::decode(&body[..]).unwrap()
}

/// Reads every frame until the server closes (within 5 s).
async fn until_close(s: &mut TcpStream) -> Vec<Envelope> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    let (mut out, mut rest) = (Vec::new(), &buf[..]);
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(Envelope::decode(&rest[4..4 + len]).unwrap());
        rest = &rest[4 + len..];
    }
    out
}

fn error_of(env: &Envelope) -> (ErrorCode, u64) {
    match &env.kind {
        Some(Kind::Error(e)) => (ErrorCode::try_from(e.code).unwrap(), e.request_id),
        other => panic!("expected an Error, got {other:?}"),
    }
}

async fn ping_pong(c: &mut TcpStream, nonce: u64) {
    c.write_all(&frame(&pb::Ping { nonce }.into())).await.unwrap();
    match read_frame(c).await.kind {
        Some(Kind::Pong(p)) => assert_eq!(p.nonce, nonce),
        other => panic!("expected Pong, got {other:?}"),
    }
}

/// Point 1: an error with request id 0 closes the connection, and one with a request id never does. A Credit has
/// no request id, so its refusals (wrong role, bad queue name) come with 0 and close.
#[tokio::test]
async fn an_error_with_request_id_0_closes_and_one_with_a_request_id_does_not() {
    let s = Scheduler::start(&[]);
    let mut producer = connect(&s, Role::Producer, &[]).await;
    producer.write_all(&frame(&pb::Credit { queue: "q".into(), n: 1, set: false }.into())).await.unwrap();
    let frames = until_close(&mut producer).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(error_of(&frames[0]), (ErrorCode::RoleNotAllowed, 0));

    let mut agent = connect(&s, Role::Agent, &[]).await;
    agent.write_all(&frame(&pb::Credit { queue: "bad queue".into(), n: 1, set: false }.into())).await.unwrap();
    let frames = until_close(&mut agent).await;
    assert_eq!(error_of(frames.last().unwrap()), (ErrorCode::InvalidTask, 0));

    let mut agent = connect(&s, Role::Agent, &[]).await;
    let submit = pb::Submit { request_id: 9, tasks: vec![task("q", b"x")], failover: false, notify: false };
    agent.write_all(&frame(&submit.into())).await.unwrap();
    assert_eq!(error_of(&read_frame(&mut agent).await), (ErrorCode::RoleNotAllowed, 9));
    ping_pong(&mut agent, 1).await;
}

/// Point 2 and 10: before Hello, the frame is decoded first (length against the 64 KiB pre-Hello limit, then
/// protobuf, then a known kind), then it must be Hello. An empty envelope is UNKNOWN_MESSAGE, also before Hello.
#[tokio::test]
async fn checks_before_hello_run_in_the_documented_order() {
    let s = Scheduler::start(&[]);
    let raw = |bytes: Vec<u8>| {
        let addr = s.addr.clone();
        async move {
            let mut c = TcpStream::connect(&addr).await.unwrap();
            c.write_all(&bytes).await.unwrap();
            error_of(until_close(&mut c).await.last().unwrap())
        }
    };
    // 64 KiB + 1 announced: too large before Hello although --max-frame-bytes is 4 MiB.
    assert_eq!(raw((64 * 1024 + 1u32).to_be_bytes().to_vec()).await, (ErrorCode::FrameTooLarge, 0));
    assert_eq!(raw(vec![0, 0, 0, 3, 0xff, 0xff, 0xff]).await, (ErrorCode::MalformedFrame, 0));
    assert_eq!(raw(vec![0, 0, 0, 0]).await, (ErrorCode::UnknownMessage, 0));
    assert_eq!(raw(frame(&pb::Ping { nonce: 1 }.into())).await, (ErrorCode::HandshakeRequired, 0));
    let mut v2 = frame(&pb::Hello { version: 2, role: Role::Producer as i32, ..Default::default() }.into());
    v2.extend(frame(&pb::Ping { nonce: 1 }.into()));
    assert_eq!(raw(v2).await, (ErrorCode::UnsupportedVersion, 0));
    assert_eq!(raw(hello_with(Role::Unspecified, &[])).await, (ErrorCode::Unauthorized, 0));
    // After Hello, an empty envelope is UNKNOWN_MESSAGE too.
    let mut c = connect(&s, Role::Producer, &[]).await;
    c.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert_eq!(error_of(until_close(&mut c).await.last().unwrap()), (ErrorCode::UnknownMessage, 0));
}

/// Point 3: requests in flight beyond --max-inflight-per-conn are not refused: the server stops reading until
/// replies go out, and every request is answered.
#[tokio::test]
async fn submits_past_the_in_flight_limit_wait_and_are_all_answered() {
    let s = Scheduler::start(&["--max-inflight-per-conn", "1"]);
    let mut c = connect(&s, Role::Producer, &[]).await;
    let mut burst = Vec::new();
    for request_id in 1..=50 {
        let submit = pb::Submit { request_id, tasks: vec![task("q", b"x")], failover: false, notify: false };
        burst.extend(frame(&submit.into()));
    }
    c.write_all(&burst).await.unwrap();
    let mut acked = Vec::new();
    while acked.len() < 50 {
        match read_frame(&mut c).await.kind {
            Some(Kind::SubmitAck(a)) => {
                assert_eq!(a.results[0].code, ErrorCode::Ok as i32);
                acked.push(a.request_id);
            }
            other => panic!("expected SubmitAck, got {other:?}"),
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, (1..=50).collect::<Vec<u64>>());
}

/// Points 4, 7 and 11: an empty Credit.queue is `default`; Hello.queues is not a subscription (credits name the
/// queue); the server never pings, so a silent connection hears nothing until its idle timeout.
#[tokio::test]
async fn an_empty_credit_queue_is_default_and_hello_queues_subscribe_to_nothing() {
    let s = Scheduler::start(&["--idle-timeout", "1s"]);
    let p = s.client(ConnectOptions::producer()).await;
    p.submit_one(task("", b"to default")).await.unwrap();
    p.submit_one(task("elsewhere", b"not in Hello.queues")).await.unwrap();
    let mut a = connect(&s, Role::Agent, &["default"]).await;
    a.write_all(&frame(&pb::Credit { queue: String::new(), n: 1, set: false }.into())).await.unwrap();
    match read_frame(&mut a).await.kind {
        Some(Kind::Leased(l)) => {
            assert_eq!((l.tasks[0].queue.as_str(), &l.tasks[0].payload[..]), ("default", &b"to default"[..]))
        }
        other => panic!("expected Leased, got {other:?}"),
    }
    a.write_all(&frame(&pb::Credit { queue: "elsewhere".into(), n: 1, set: false }.into())).await.unwrap();
    match read_frame(&mut a).await.kind {
        Some(Kind::Leased(l)) => assert_eq!(l.tasks[0].queue, "elsewhere"),
        other => panic!("expected Leased, got {other:?}"),
    }
    // Silent from now on: the next frame is the idle timeout's error, not a Ping.
    let frames = until_close(&mut a).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(error_of(&frames[0]), (ErrorCode::Timeout, 0));
}

/// Point 6: Ack, Nack and Extend have no item limit of their own, only the frame's.
#[tokio::test]
async fn an_extend_of_many_leases_gets_one_code_each() {
    let s = Scheduler::start(&["--max-batch", "100"]);
    let mut a = connect(&s, Role::Agent, &[]).await;
    let lease_ids: Vec<u64> = (1..=10_000).collect();
    a.write_all(&frame(&pb::Extend { request_id: 3, lease_ids, extend_ms: 1000 }.into())).await.unwrap();
    match read_frame(&mut a).await.kind {
        Some(Kind::LeaseReply(r)) => {
            assert_eq!(r.request_id, 3);
            assert_eq!(r.codes, vec![ErrorCode::StaleLease as i32; 10_000]);
        }
        other => panic!("expected LeaseReply, got {other:?}"),
    }
}

/// Point 13: `/` and `.` are ordinary characters of a queue name; names never become file paths.
#[tokio::test]
async fn a_queue_name_that_looks_like_a_path_stays_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Scheduler::start_in(&data, &[]);
    let p = s.client(ConnectOptions::producer()).await;
    let id = p.submit_one(task("../../escaped", b"x")).await.unwrap();
    let st = p.status(vec![id]).await.unwrap();
    assert_eq!(st[0].queue, "../../escaped");
    let mut names = Vec::new();
    for root in [dir.path().to_path_buf(), data.clone()] {
        for e in walk(&root) {
            names.push(e);
        }
    }
    assert!(names.iter().all(|n| !n.contains("escaped")), "{names:?}");
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// A token file holding a token under 16 characters is a bad configuration value: exit 64 before binding.
#[test]
fn a_token_file_with_a_short_token_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "short\n").unwrap();
    let out = std::process::Command::new(pm_testkit::bin("pm-scheduler"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "off", "--data"])
        .arg(dir.path().join("data"))
        .arg("--producer-token-file")
        .arg(&tokens)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("16 characters"), "{err}");
    assert!(out.stdout.is_empty(), "nothing was bound");
}
