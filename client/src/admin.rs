//! An operator's requests to one node: queue counters, queue control (pause, resume, purge), task listings and
//! dead letters. In a cluster each node answers for its own share of every queue; [`crate::Cluster`] asks
//! every member.

use pm_protocol::pb::{self, QueueAction, StatsReply, TaskState};
use pm_protocol::{ErrorCode, Kind};

use futures::future::join_all;

use crate::client::{unexpected, Client};
use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind};

/// What a task listing is filtered by (empty fields match everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this queue.
    pub queue: String,
    /// Only this state (`Unspecified`: any).
    pub state: TaskState,
    /// Only tasks with this key.
    pub key: String,
    /// Only tasks of this flow.
    pub flow_id: String,
}

/// One page of a task listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskPage {
    /// The tasks (statuses without their result documents).
    pub tasks: Vec<pb::TaskStatus>,
    /// The cursor of the next page (`before`), `None` when there is nothing older.
    pub next: Option<u64>,
}

/// One page of dead letters, oldest first.
#[derive(Debug, Clone, Default)]
pub struct DeadPage {
    /// The dead letters, with their payloads.
    pub tasks: Vec<pb::DeadLetter>,
    /// The cursor of the next page (`after`), `None` after the last one.
    pub next: Option<u64>,
}

/// What a [`QueueControl`](pb::QueueControl) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueControlled {
    /// Whether the queue is paused now.
    pub paused: bool,
    /// Tasks a purge cancelled.
    pub purged: u64,
}

fn coded(code: i32, message: String) -> Result<(), Error> {
    match ErrorCode::try_from(code).unwrap_or(ErrorCode::Internal) {
        ErrorCode::Ok => Ok(()),
        code => Err(Error::with_code(ErrorKind::Server, code, message)),
    }
}

impl Client {
    /// Admin: queue counters.
    pub async fn stats(&self) -> Result<StatsReply, Error> {
        let env = self.request(|request_id| pb::StatsRequest { request_id }.into()).await?;
        match env.kind {
            Some(Kind::StatsReply(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: dead letters of `queue` (empty = all queues), oldest first.
    pub async fn dead_letters(&self, queue: &str, limit: u32) -> Result<Vec<pb::DeadLetter>, Error> {
        Ok(self.dead_letter_page(queue, limit, 0).await?.tasks)
    }

    /// Admin: one page of dead letters of `queue` (empty = all queues) with a task id above `after`.
    pub async fn dead_letter_page(&self, queue: &str, limit: u32, after: u64) -> Result<DeadPage, Error> {
        let queue = queue.to_string();
        let env = self.request(|request_id| pb::DeadLetterList { request_id, queue, limit, after }.into()).await?;
        match env.kind {
            Some(Kind::DeadLetterListReply(r)) => {
                Ok(DeadPage { tasks: r.tasks, next: (r.next_after != 0).then_some(r.next_after) })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Admin: makes dead letters ready again (empty `task_ids` = all of `queue`). Returns how many.
    pub async fn redrive(&self, queue: &str, task_ids: Vec<u64>) -> Result<u64, Error> {
        let queue = queue.to_string();
        let env = self.request(|request_id| pb::DeadLetterRedrive { request_id, queue, task_ids }.into()).await?;
        match env.kind {
            Some(Kind::DeadLetterRedriveReply(r)) => Ok(r.redriven),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: deletes the dead letters `task_ids` of `queue` (empty = any queue), or every one of them with
    /// `all`. Returns how many, once durable.
    pub async fn delete_dead_letters(&self, queue: &str, task_ids: Vec<u64>, all: bool) -> Result<u64, Error> {
        let queue = queue.to_string();
        let env = self.request(|request_id| pb::DeadLetterDelete { request_id, queue, task_ids, all }.into()).await?;
        match env.kind {
            Some(Kind::DeadLetterDeleteReply(r)) => coded(r.code, r.message).map(|()| r.deleted),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: pauses, resumes or purges `queue` on this node.
    pub async fn queue_control(&self, queue: &str, action: QueueAction) -> Result<QueueControlled, Error> {
        let queue = queue.to_string();
        let env =
            self.request(|request_id| pb::QueueControl { request_id, queue, action: action as i32 }.into()).await?;
        match env.kind {
            Some(Kind::QueueControlReply(r)) => {
                coded(r.code, r.message).map(|()| QueueControlled { paused: r.paused, purged: r.purged })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Producers and admins: one page of tasks matching `filter` with an id below `before` (0: the newest),
    /// newest first; `limit` 0 = 100.
    pub async fn list_tasks(&self, filter: &TaskFilter, limit: u32, before: u64) -> Result<TaskPage, Error> {
        let f = filter.clone();
        let env = self
            .request(|request_id| {
                pb::TaskList {
                    request_id,
                    queue: f.queue,
                    state: f.state as i32,
                    key: f.key,
                    flow_id: f.flow_id,
                    limit,
                    before,
                }
                .into()
            })
            .await?;
        match env.kind {
            Some(Kind::TaskListReply(r)) => {
                Ok(TaskPage { tasks: r.tasks, next: (r.next_before != 0).then_some(r.next_before) })
            }
            other => Err(unexpected(other)),
        }
    }
}

impl Cluster {
    /// Producers and admins: one page of tasks matching `filter` below `before` from every member, merged
    /// newest first. Fails if a member does not answer (a page without it would look complete).
    pub async fn list_tasks(&self, filter: &TaskFilter, limit: u32, before: u64) -> Result<TaskPage, Error> {
        let nodes = self.nodes();
        let asks = nodes.iter().map(|node| async move {
            let c = self.client(node).await?;
            c.list_tasks(filter, limit, before).await
        });
        let pages = join_all(asks).await.into_iter().collect::<Result<Vec<_>, _>>()?;
        let limit = if limit == 0 { 100 } else { limit as usize };
        Ok(merge_task_pages(pages, limit))
    }

    /// Admin: pauses, resumes or purges `queue` on every member; each member's outcome, in member order.
    pub async fn queue_control_all(
        &self,
        queue: &str,
        action: QueueAction,
    ) -> Vec<(String, Result<QueueControlled, Error>)> {
        let nodes = self.nodes();
        let asks = nodes.iter().map(|node| async move { self.client(node).await?.queue_control(queue, action).await });
        nodes.iter().cloned().zip(join_all(asks).await).collect()
    }
}

/// Adds one member's figures of a queue to `total`: counts and rates add up, the oldest ready age is the
/// largest. Whether the sum counts as paused is the caller's rule (it differs between a view that warns and
/// one that reports), so `paused` is left alone.
pub fn add_queue_stats(total: &mut pb::QueueStats, q: &pb::QueueStats) {
    total.ready += q.ready;
    total.delayed += q.delayed;
    total.leased += q.leased;
    total.dead += q.dead;
    total.credits += q.credits;
    total.agents += q.agents;
    total.waiting_executor += q.waiting_executor;
    total.lent += q.lent;
    total.stolen += q.stolen;
    total.submitted_per_sec += q.submitted_per_sec;
    total.completed_per_sec += q.completed_per_sec;
    total.oldest_ready_age_ms = total.oldest_ready_age_ms.max(q.oldest_ready_age_ms);
}

/// Merges pages of one listing asked of several parts (shards of a node, members of a cluster) into one page
/// of at most `limit` tasks, newest first.
///
/// Each part is complete from the top down to its own `next` cursor (none: complete to the bottom): below it the
/// part has not looked yet. So the merged page keeps only tasks at or above the highest of those cursors, and
/// its own cursor is the last task of a full page, else that highest cursor (more to look at), else none.
pub fn merge_task_pages(parts: impl IntoIterator<Item = TaskPage>, limit: usize) -> TaskPage {
    let mut floor = 0u64;
    let mut tasks = Vec::new();
    for p in parts {
        floor = floor.max(p.next.unwrap_or(0));
        tasks.extend(p.tasks);
    }
    tasks.retain(|t| t.task_id >= floor);
    tasks.sort_unstable_by_key(|t| std::cmp::Reverse(t.task_id));
    tasks.dedup_by_key(|t| t.task_id);
    let next = if tasks.len() >= limit && limit > 0 {
        tasks.truncate(limit);
        tasks.last().map(|t| t.task_id)
    } else {
        (floor > 0).then_some(floor)
    };
    TaskPage { tasks, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[u64], next: Option<u64>) -> TaskPage {
        let tasks = ids.iter().map(|&task_id| pb::TaskStatus { task_id, ..Default::default() }).collect();
        TaskPage { tasks, next }
    }

    fn ids(p: &TaskPage) -> Vec<u64> {
        p.tasks.iter().map(|t| t.task_id).collect()
    }

    #[test]
    fn complete_parts_merge_newest_first_and_a_full_page_points_at_its_last_task() {
        let m = merge_task_pages([page(&[9, 5, 1], None), page(&[8, 7, 2], None)], 4);
        assert_eq!((ids(&m), m.next), (vec![9, 8, 7, 5], Some(5)));
        let m = merge_task_pages([page(&[9, 5, 1], None), page(&[8], None)], 10);
        assert_eq!((ids(&m), m.next), (vec![9, 8, 5, 1], None), "everything seen: no next page");
    }

    #[test]
    fn a_part_that_stopped_early_bounds_the_page_so_nothing_is_skipped() {
        // The second part looked only down to 6: tasks below it from the first part wait for the next page,
        // which starts below 6 for both.
        let m = merge_task_pages([page(&[9, 5, 1], None), page(&[8], Some(6))], 10);
        assert_eq!((ids(&m), m.next), (vec![9, 8], Some(6)));
        let m = merge_task_pages([page(&[5, 1], None), page(&[], None)], 10);
        assert_eq!((ids(&m), m.next), (vec![5, 1], None));
    }
}
