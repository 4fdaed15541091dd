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
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
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
    let submit = frame(&pb::Submit { request_id: 1, tasks: vec![task("q", b"x")] }.into());
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
