//! Structured messages built by `arbitrary` (the requests a client sends and the frames the server pushes):
//! every one that fits the frame limit encodes, and decodes back to exactly itself, whole and split at an
//! arbitrary offset; one that does not fit is refused by the encoder, never written.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pm_protocol::codec::{decode_frame, encode_frame};
use pm_protocol::{pb, Envelope};

#[derive(Arbitrary, Debug)]
struct Task {
    payload: Vec<u8>,
    queue: String,
    key: String,
    priority: i32,
    delay_ms: u64,
    max_attempts: u32,
    lease_ms: u32,
    idempotency_key: String,
    executors: Vec<String>,
}

#[derive(Arbitrary, Debug)]
enum Msg {
    Hello { version: u32, role: i32, client_id: String, queues: Vec<String>, capabilities: Vec<String>, token: String },
    Submit { request_id: u64, tasks: Vec<Task>, failover: bool, notify: bool },
    Credit { queue: String, n: u32, set: bool },
    Leased { tasks: Vec<(u64, u64, u32, u64, Vec<u8>, String, String, u32)> },
    Ack { request_id: u64, items: Vec<(u64, Vec<u8>)> },
    Nack { request_id: u64, items: Vec<(u64, u64, String, bool, Vec<u8>, bool)> },
    Extend { request_id: u64, lease_ids: Vec<u64>, extend_ms: u32 },
    Cancel { request_id: u64, task_ids: Vec<u64> },
    Status { request_id: u64, task_ids: Vec<u64> },
    Watch { request_id: u64, task_ids: Vec<u64> },
    Ping(u64),
    Error { code: i32, request_id: u64, message: String },
}

impl From<Msg> for Envelope {
    fn from(m: Msg) -> Envelope {
        match m {
            Msg::Hello { version, role, client_id, queues, capabilities, token } => {
                pb::Hello { version, role, client_id, queues, capabilities, auth_token: token }.into()
            }
            Msg::Submit { request_id, tasks, failover, notify } => pb::Submit {
                request_id,
                failover,
                notify,
                tasks: tasks
                    .into_iter()
                    .map(|t| pb::TaskSpec {
                        payload: t.payload.into(),
                        queue: t.queue,
                        key: t.key,
                        priority: t.priority,
                        delay_ms: t.delay_ms,
                        max_attempts: t.max_attempts,
                        lease_ms: t.lease_ms,
                        idempotency_key: t.idempotency_key,
                        executors: t.executors,
                    })
                    .collect(),
            }
            .into(),
            Msg::Credit { queue, n, set } => pb::Credit { queue, n, set }.into(),
            Msg::Leased { tasks } => pb::Leased {
                tasks: tasks
                    .into_iter()
                    .map(|(task_id, lease_id, attempt, deadline_unix_ms, payload, queue, key, max_attempts)| {
                        pb::LeasedTask {
                            task_id,
                            lease_id,
                            attempt,
                            deadline_unix_ms,
                            payload: payload.into(),
                            queue,
                            key,
                            max_attempts,
                        }
                    })
                    .collect(),
            }
            .into(),
            Msg::Ack { request_id, items } => pb::Ack {
                request_id,
                items: items.into_iter().map(|(lease_id, r)| pb::AckItem { lease_id, result: r.into() }).collect(),
            }
            .into(),
            Msg::Nack { request_id, items } => pb::Nack {
                request_id,
                items: items
                    .into_iter()
                    .map(|(lease_id, retry_after_ms, reason, released, result, fail)| pb::NackItem {
                        lease_id,
                        retry_after_ms,
                        reason,
                        released,
                        result: result.into(),
                        fail,
                    })
                    .collect(),
            }
            .into(),
            Msg::Extend { request_id, lease_ids, extend_ms } => pb::Extend { request_id, lease_ids, extend_ms }.into(),
            Msg::Cancel { request_id, task_ids } => pb::Cancel { request_id, task_ids }.into(),
            Msg::Status { request_id, task_ids } => pb::Status { request_id, task_ids }.into(),
            Msg::Watch { request_id, task_ids } => pb::Watch { request_id, task_ids }.into(),
            Msg::Ping(nonce) => pb::Ping { nonce }.into(),
            Msg::Error { code, request_id, message } => pb::Error { code, request_id, message }.into(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    msgs: Vec<Msg>,
    split: usize,
}

fuzz_target!(|input: Input| {
    let max = 64 * 1024;
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for msg in input.msgs {
        let env = Envelope::from(msg);
        let before = wire.len();
        match encode_frame(&env, max, &mut wire) {
            Ok(()) => sent.push(env),
            Err(_) => assert_eq!(wire.len(), before, "a refused frame writes nothing"),
        }
    }
    let split = if wire.is_empty() { 0 } else { input.split % (wire.len() + 1) };
    let mut buf = BytesMut::from(&wire[..split]);
    let mut got = Vec::new();
    while let Some(env) = decode_frame(&mut buf, max).expect("our own frames decode") {
        got.push(env);
    }
    buf.extend_from_slice(&wire[split..]);
    while let Some(env) = decode_frame(&mut buf, max).expect("our own frames decode") {
        got.push(env);
    }
    assert!(buf.is_empty());
    assert_eq!(got, sent);
});
