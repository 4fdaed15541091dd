//! `pmctl why`: one line per task on why it is not running now (no agent with credit or with its
//! executors, delayed, held after a restart, ...), or how it ended. The reason is the one the node holding
//! the task gives in its status.

use pm_client::ConnectOptions;
use pm_protocol::pb::{TaskState, TaskStatus};
use pm_protocol::ErrorCode;

use super::status::{state_name, status};
use crate::shared::{Failure, ServerArgs};

/// The arguments of `pmctl why`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Task ids.
    #[arg(required = true)]
    ids: Vec<u64>,
}

/// `pmctl why`.
pub async fn run(server: &ServerArgs, args: &Args) -> Result<(), Failure> {
    let cluster = server.connect_cluster(ConnectOptions::producer()).await?;
    for r in status(&cluster, &args.ids).await {
        println!("{}", why(&r.map_err(Failure::failed)?));
    }
    Ok(())
}

/// One line on why the task is not running now (or how it ended).
fn why(s: &TaskStatus) -> String {
    if s.code != ErrorCode::Ok as i32 {
        return format!("{}: not found (unknown here, or its outcome is no longer kept)", s.task_id);
    }
    match s.state() {
        TaskState::Ready | TaskState::Delayed | TaskState::Leased => {
            format!("{} {}: {}", s.task_id, state_name(s), s.reason)
        }
        _ if s.reason.is_empty() => format!("{}: finished, {}", s.task_id, state_name(s)),
        _ => format!("{}: finished, {}: {}", s.task_id, state_name(s), s.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::status::not_found;

    #[test]
    fn a_finished_task_says_how_it_ended() {
        let s = TaskStatus {
            task_id: 7,
            state: TaskState::Failed as i32,
            reason: "`false` exited with 1".into(),
            ..Default::default()
        };
        assert_eq!(why(&s), "7: finished, failed: `false` exited with 1");
        assert_eq!(why(&not_found(7)), "7: not found (unknown here, or its outcome is no longer kept)");
    }
}
