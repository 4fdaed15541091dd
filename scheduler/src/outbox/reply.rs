//! What handlers and shards send to a connection, and how a reply that comes back from several shards in parts
//! is put together before it is written.

use pm_client::TaskPage;
use pm_protocol::pb::{self, DeadLetter, QueueStats, SubmitResult};
use pm_protocol::{Envelope, ErrorCode};

/// What the writer is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write this frame.
    Frame(Envelope),
    /// A request whose reply arrives in `merge.parts` parts (registered before any part is sent).
    Begin {
        /// Request id.
        request_id: u64,
        /// How to assemble the reply.
        merge: Merge,
    },
    /// One part of a reply.
    Part {
        /// Request id.
        request_id: u64,
        /// The part.
        part: Part,
    },
    /// Flush and close the connection.
    Close,
}

/// A piece of a reply produced by one shard.
#[derive(Debug)]
pub enum Part {
    /// Submit results by index in the request.
    Submit(Vec<(usize, SubmitResult)>),
    /// Ack/nack/extend codes by index.
    Lease(Vec<(usize, ErrorCode)>),
    /// Queue counters.
    Stats(Vec<QueueStats>),
    /// Dead letters.
    DeadList(Vec<DeadLetter>),
    /// Redriven count.
    Redrive(u64),
    /// Cancel codes by index in the request (only for the task ids this shard owns).
    Cancel(Vec<(usize, ErrorCode)>),
    /// Reclaim results by index in the request (only for the task ids this shard owns).
    Reclaim(Vec<(usize, pb::ReclaimResult)>),
    /// Task statuses by index in the request (only for the task ids this shard knows).
    Status(Vec<(usize, pb::TaskStatus)>),
    /// One shard's page of a task listing.
    TaskList(TaskPage),
    /// A queue control's effect: (paused now, tasks purged), or why it failed.
    QueueControl(Result<(bool, u64), (ErrorCode, String)>),
    /// Dead letters deleted, or why none were.
    DeadDelete(Result<u64, (ErrorCode, String)>),
}

/// A reply being assembled.
#[derive(Debug)]
pub struct Merge {
    /// Parts still expected.
    pub parts: usize,
    /// The reply so far.
    pub reply: Reply,
    /// Counts against the connection's in-flight limit until the reply is written (Submits).
    pub holds_slot: bool,
}

/// Reply under construction.
#[derive(Debug)]
pub enum Reply {
    /// SubmitAck.
    Submit(Vec<SubmitResult>),
    /// LeaseReply.
    Lease(Vec<i32>),
    /// StatsReply.
    Stats(Box<pb::StatsReply>),
    /// DeadLetterListReply (with its limit).
    DeadList(Vec<DeadLetter>, usize),
    /// DeadLetterRedriveReply.
    Redrive(u64),
    /// CancelReply: one code per task id, `NOT_FOUND` until the owning shard says otherwise.
    Cancel(Vec<i32>),
    /// ReclaimReply: one result per item, `NOT_FOUND` until the owning shard says otherwise.
    Reclaim(Vec<pb::ReclaimResult>),
    /// StatusReply: one status per task id, `NOT_FOUND` until the owning shard says otherwise.
    Status(Vec<pb::TaskStatus>),
    /// WatchReply: one code per task id (merged from [`Part::Cancel`] parts), `NOT_FOUND` until a shard
    /// knows the task.
    Watch(Vec<i32>),
    /// TaskListReply: every shard's page (merged at the end), and the page size.
    TaskList(Vec<TaskPage>, usize),
    /// QueueControlReply.
    QueueControl(pb::QueueControlReply),
    /// DeadLetterDeleteReply: deleted counts add up; the first error is kept.
    DeadDelete(pb::DeadLetterDeleteReply),
}

impl Merge {
    pub(crate) fn add(&mut self, part: Part) {
        self.parts = self.parts.saturating_sub(1);
        match (&mut self.reply, part) {
            (Reply::Submit(all), Part::Submit(items)) => {
                for (i, r) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            (Reply::Lease(all), Part::Lease(items)) => {
                for (i, c) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = c as i32;
                    }
                }
            }
            (Reply::Stats(s), Part::Stats(q)) => s.queues.extend(q),
            (Reply::DeadList(all, limit), Part::DeadList(items)) => {
                all.extend(items);
                all.sort_by_key(|d| d.task_id);
                all.truncate(*limit);
            }
            (Reply::Redrive(n), Part::Redrive(k)) => *n += k,
            (Reply::Cancel(all) | Reply::Watch(all), Part::Cancel(items)) => {
                for (i, c) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = c as i32;
                    }
                }
            }
            (Reply::Reclaim(all), Part::Reclaim(items)) => {
                for (i, r) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            (Reply::Status(all), Part::Status(items)) => {
                for (i, r) in items {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = r;
                    }
                }
            }
            (Reply::TaskList(pages, _), Part::TaskList(page)) => pages.push(page),
            (Reply::QueueControl(r), Part::QueueControl(answer)) => match answer {
                Ok((paused, purged)) => {
                    r.paused = paused;
                    r.purged += purged;
                }
                Err((code, message)) => {
                    r.code = code as i32;
                    r.message = message;
                }
            },
            (Reply::DeadDelete(r), Part::DeadDelete(answer)) => match answer {
                Ok(n) => r.deleted += n,
                Err((code, message)) => {
                    if r.code == ErrorCode::Ok as i32 {
                        r.code = code as i32;
                        r.message = message;
                    }
                }
            },
            (_, part) => tracing::error!(?part, "reply part of the wrong kind dropped"),
        }
    }

    pub(crate) fn finish(self, request_id: u64) -> Envelope {
        match self.reply {
            Reply::Submit(results) => pb::SubmitAck { request_id, results }.into(),
            Reply::Lease(codes) => pb::LeaseReply { request_id, codes }.into(),
            Reply::Stats(mut s) => {
                s.request_id = request_id;
                s.queues.sort_by(|a, b| a.queue.cmp(&b.queue));
                (*s).into()
            }
            Reply::DeadList(tasks, limit) => {
                // Each shard sent what it has above the cursor, up to the limit: a full page may have more after.
                let next_after = if tasks.len() >= limit { tasks.last().map_or(0, |d| d.task_id) } else { 0 };
                pb::DeadLetterListReply { request_id, tasks, next_after }.into()
            }
            Reply::Redrive(redriven) => pb::DeadLetterRedriveReply { request_id, redriven }.into(),
            Reply::Cancel(codes) => pb::CancelReply { request_id, codes }.into(),
            Reply::Reclaim(results) => pb::ReclaimReply { request_id, results }.into(),
            Reply::Status(tasks) => pb::StatusReply { request_id, tasks }.into(),
            Reply::Watch(codes) => pb::WatchReply { request_id, codes }.into(),
            Reply::TaskList(pages, limit) => {
                let page = pm_client::merge_task_pages(pages, limit);
                pb::TaskListReply { request_id, tasks: page.tasks, next_before: page.next.unwrap_or(0) }.into()
            }
            Reply::QueueControl(mut r) => {
                r.request_id = request_id;
                r.into()
            }
            Reply::DeadDelete(mut r) => {
                r.request_id = request_id;
                r.into()
            }
        }
    }
}
