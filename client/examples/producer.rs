//! A producer: submits a batch of tasks to one queue, then waits until each has finished and prints its
//! outcome (state, attempts, the worker's result or the reason it failed).
//!
//! It shows [`Client::connect_watching`], [`Client::submit_notify`] (the reply comes once the tasks are
//! durable; the server then reports each one on [`Completions`] when it finishes) and [`Client::status`].
//!
//! Run it against `pm dev` (a scheduler on `127.0.0.1:7070` with an agent of its own on the `default`
//! queue), with the worker example serving the queue `examples`:
//!
//! ```sh
//! cargo run -p pm -- dev                                                  # terminal 1
//! cargo run -p pm-client --example worker                                 # terminal 2
//! cargo run -p pm-client --example producer -- 127.0.0.1:7070 examples 6  # terminal 3
//! ```
//!
//! Arguments, all optional: the scheduler's address (`127.0.0.1:7070`), the queue (`examples`), how many
//! tasks (`6`). Each task's payload is `{"n": i}`; the worker answers `{"square": i*i}`. Exit code 1 unless
//! every task succeeded within 30 s.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use pm_client::pm_protocol::pb::{TaskSpec, TaskState, TaskStatus};
use pm_client::pm_protocol::ErrorCode;
use pm_client::{Client, Completions, ConnectOptions, Error};

/// How long to wait for every task to finish before asking for the status of the missing ones.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7070".into());
    let queue = args.next().unwrap_or_else(|| "examples".into());
    let count = match args.next().map(|n| n.parse::<u32>()) {
        None => 6,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("the task count must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&addr, &queue, count).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("producer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Submits `count` tasks and reports each outcome; `Ok(true)` when all succeeded.
async fn run(addr: &str, queue: &str, count: u32) -> Result<bool, Error> {
    let opts = ConnectOptions::producer().client_id("example-producer");
    let (client, mut completions) = Client::connect_watching(addr, opts).await?;

    let tasks = (0..count)
        .map(|n| TaskSpec {
            payload: format!(r#"{{"n": {n}}}"#).into_bytes().into(),
            queue: queue.to_string(),
            ..Default::default()
        })
        .collect();
    let mut waiting = HashSet::new();
    for (n, r) in client.submit_notify(tasks).await?.into_iter().enumerate() {
        let code = ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal);
        if code == ErrorCode::Ok {
            println!("submitted task {} (n = {n})", r.task_id);
            waiting.insert(r.task_id);
        } else {
            println!("task n = {n} refused: {} {}", code.as_str_name(), r.message);
        }
    }
    let submitted = waiting.len();

    let mut succeeded = 0;
    let finished = tokio::time::timeout(WAIT, wait_all(&mut completions, &mut waiting, &mut succeeded)).await;
    if finished.is_err() {
        // A reconnect loses the Completed messages of the old connection: ask for the status instead.
        for status in client.status(waiting.iter().copied().collect()).await? {
            println!("task {} not finished after {WAIT:?}: {}", status.task_id, state(&status));
        }
    }
    println!("{succeeded} of {submitted} tasks succeeded");
    Ok(succeeded == count as usize)
}

/// Takes finished tasks off `completions` until none of `waiting` is left.
async fn wait_all(completions: &mut Completions, waiting: &mut HashSet<u64>, succeeded: &mut usize) {
    while !waiting.is_empty() {
        let Some(status) = completions.next().await else { return };
        if !waiting.remove(&status.task_id) {
            continue;
        }
        let result = String::from_utf8_lossy(&status.result);
        println!(
            "task {} {} after {} attempt(s): {}",
            status.task_id,
            state(&status),
            status.attempts,
            if status.reason.is_empty() { result.as_ref() } else { status.reason.as_str() },
        );
        if status.state() == TaskState::Succeeded {
            *succeeded += 1;
        }
    }
}

/// The task's state as the protocol names it, e.g. `TASK_STATE_SUCCEEDED`.
fn state(status: &TaskStatus) -> &'static str {
    status.state().as_str_name()
}
