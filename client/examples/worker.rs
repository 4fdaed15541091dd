//! A worker: connects as an agent for one queue, grants credits, and for each leased task does its work and
//! acks it with a result document, or nacks it with a reason.
//!
//! It shows what every agent does ([`Client::connect_agent`], [`Client::credit`], the
//! [`Leases`](pm_client::Leases) stream, [`Client::ack`], [`Client::nack`]) without the pipeline runner of
//! `pm-agent`:
//! - a credit is one task the server may push; each finished task gives its credit back;
//! - every ack or nack quotes the lease id of the delivery (an old lease id is refused as `STALE_LEASE`);
//! - a nack with `retry_after_ms` makes the task ready again after that delay (a new attempt, until its
//!   attempts are used up and it is dead-lettered); a nack with `fail` ends it as `FAILED` at once;
//! - a task that is cancelled while it runs arrives as [`AgentEvent::Revoked`]: stop it, send nothing.
//!
//! The work: a payload `{"n": N}` is answered with `{"square": N*N}`. The first attempt of every task whose
//! `n` is a multiple of 3 fails on purpose and is retried after 0.5 s, to show a redelivery; a payload that
//! is not such a document fails for good.
//!
//! Run it against `pm dev` (see the producer example for the whole walk-through):
//!
//! ```sh
//! cargo run -p pm -- dev                                              # terminal 1
//! cargo run -p pm-client --example worker -- 127.0.0.1:7070 examples  # terminal 2; Ctrl-C stops it
//! cargo run -p pm-client --example producer                           # terminal 3
//! ```
//!
//! Arguments, all optional: the scheduler's address (`127.0.0.1:7070`), the queue (`examples`). `pm dev`'s
//! own agent serves the queue `default`, so this worker alone takes the tasks of `examples`.

use std::process::ExitCode;

use bytes::Bytes;
use pm_client::pm_protocol::pb::{LeasedTask, NackItem};
use pm_client::pm_protocol::ErrorCode;
use pm_client::{AgentEvent, Client, ConnectOptions, Error};

/// Tasks this worker runs at once: the credits it grants.
const CREDITS: u32 = 4;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let queue = args.next().unwrap_or_else(|| "examples".into());
    tokio::select! {
        r = run(&addr, &queue) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}

/// Serves `queue` until the connection is closed for good.
async fn run(addr: &str, queue: &str) -> Result<(), Error> {
    // The queues named here are the ones this agent takes tasks from. The client reconnects by itself and
    // grants the outstanding credits again; the old connection's leases went back to their queues.
    let opts = ConnectOptions::agent().client_id("example-worker").queues(vec![queue.to_string()]);
    let (client, mut leases) = Client::connect_agent(addr, opts).await?;
    client.credit(queue, CREDITS).await?;
    println!("worker: serving queue {queue} on {addr} with {CREDITS} credits");

    while let Some(event) = leases.next().await {
        match event {
            AgentEvent::Leased(task) => {
                let client = client.clone();
                let queue = queue.to_string();
                tokio::spawn(async move {
                    if let Err(e) = finish(&client, task).await {
                        // The lease ends by itself and the task is delivered again.
                        eprintln!("worker: could not report a task: {e}");
                    }
                    if let Err(e) = client.credit(&queue, 1).await {
                        eprintln!("worker: could not grant a credit back: {e}");
                    }
                });
            }
            // The work here is too short to stop; a real worker cancels the task of this lease.
            AgentEvent::Revoked(r) => println!("worker: lease {} revoked", r.lease_id),
            // Only sent to agents that set `ConnectOptions::reclaim`.
            AgentEvent::Reclaimed(_) => {}
        }
    }
    Ok(())
}

/// Runs one task and acks or nacks its lease.
async fn finish(client: &Client, task: LeasedTask) -> Result<(), Error> {
    let codes = match work(&task) {
        Ok(result) => {
            println!("worker: task {} attempt {}: done, {result}", task.task_id, task.attempt);
            client.ack(vec![(task.lease_id, Bytes::from(result))]).await?
        }
        Err(Failure { reason, retry }) => {
            println!("worker: task {} attempt {}: {reason}", task.task_id, task.attempt);
            let item = NackItem {
                lease_id: task.lease_id,
                retry_after_ms: if retry { 500 } else { 0 },
                reason,
                fail: !retry,
                ..Default::default()
            };
            client.nack(vec![item]).await?
        }
    };
    // One code per item. Not OK: the lease is no longer this worker's (it expired, or the task was cancelled).
    match codes.first() {
        Some(ErrorCode::Ok) => {}
        Some(code) => println!("worker: task {}: report refused, {}", task.task_id, code.as_str_name()),
        None => println!("worker: task {}: empty reply", task.task_id),
    }
    Ok(())
}

/// Why a task failed, and whether another attempt may succeed.
struct Failure {
    reason: String,
    retry: bool,
}

/// The task itself: `{"n": N}` → `{"square": N*N}`.
fn work(task: &LeasedTask) -> Result<String, Failure> {
    let doc: serde_json::Value = serde_json::from_slice(&task.payload)
        .map_err(|e| Failure { reason: format!("not a JSON payload: {e}"), retry: false })?;
    let n = doc
        .get("n")
        .and_then(serde_json::Value::as_i64)
        .ok_or_else(|| Failure { reason: r#"no number "n" in the payload"#.into(), retry: false })?;
    if n % 3 == 0 && task.attempt == 1 {
        return Err(Failure { reason: format!("n = {n}: failing the first attempt on purpose"), retry: true });
    }
    Ok(serde_json::json!({ "square": n.saturating_mul(n) }).to_string())
}
