//! Shard tests of what an operator does, against a real committer and WAL: listings (filters, cursor, kept
//! outcomes), pause and resume, purge, dead-letter paging and deletion, durable across a reopen. (That a
//! pause survives a restart is the paused-queues file's: `crate::paused`, and tests/console_api.rs.)

use std::time::Duration;

use pm_protocol::pb::{self, QueueAction, TaskState};
use pm_protocol::ErrorCode;

use super::list_query::ListQuery;
use super::tests::{ack, nack, spec, Harness};
use super::ShardMsg;
use crate::outbox::Part;

impl Harness {
    async fn list(&mut self, state: TaskState, limit: usize, before: u64) -> (Vec<u64>, Option<u64>) {
        let request_id = self.request_id();
        let query = ListQuery { queue: "q".into(), state, limit, before, ..Default::default() };
        self.shard.send(ShardMsg::TaskList { out: self.out.clone(), request_id, query });
        match self.part(request_id).await {
            Part::TaskList(page) => (page.tasks.iter().map(|t| t.task_id).collect(), page.next),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn control(&mut self, action: QueueAction) -> Result<(bool, u64), (ErrorCode, String)> {
        let request_id = self.request_id();
        let (out, queue) = (self.out.clone(), "q".to_string());
        self.shard.send(ShardMsg::QueueControl { out, request_id, queue, action });
        match self.part(request_id).await {
            Part::QueueControl(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Leases the next task and nacks it (dead-lettered when it has one attempt).
    async fn lease_and_nack(&mut self) -> u64 {
        let l = self.leased().await;
        assert_eq!(self.lease_op(|out, id| nack(out, id, l.lease_id)).await, ErrorCode::Ok);
        l.task_id
    }

    async fn dead_page(&mut self, limit: usize, after: u64) -> Vec<u64> {
        let request_id = self.request_id();
        let (out, queue) = (self.out.clone(), "q".to_string());
        self.shard.send(ShardMsg::DeadList { out, request_id, queue, limit, after });
        match self.part(request_id).await {
            Part::DeadList(list) => list.iter().map(|d| d.task_id).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn one_attempt(payload: &str) -> pb::TaskSpec {
    pb::TaskSpec { max_attempts: 1, ..spec(payload, 0, 0) }
}

#[tokio::test]
async fn a_listing_pages_newest_first_by_state_and_shows_kept_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let ids = h.submit((0..5).map(|i| spec(&format!("t{i}"), 0, 0)).collect()).await;
    let delayed = h.submit(vec![spec("later", 0, 60_000)]).await[0];
    // The oldest is leased and acked: a kept outcome.
    h.credit(1);
    let l = h.leased().await;
    assert_eq!(l.task_id, ids[0]);
    assert_eq!(h.lease_op(|out, id| ack(out, id, l.lease_id)).await, ErrorCode::Ok);

    let (all, next) = h.list(TaskState::Unspecified, 3, 0).await;
    assert_eq!(all, vec![delayed, ids[4], ids[3]]);
    assert_eq!(next, Some(ids[3]), "a full page points at its last task");
    let (rest, next) = h.list(TaskState::Unspecified, 3, ids[3]).await;
    assert_eq!(rest, vec![ids[2], ids[1], ids[0]], "the acked task is listed from its kept outcome");
    assert_eq!(next, Some(ids[0]));
    assert_eq!(h.list(TaskState::Unspecified, 3, ids[0]).await, (vec![], None));

    assert_eq!(h.list(TaskState::Ready, 10, 0).await.0, vec![ids[4], ids[3], ids[2], ids[1]]);
    assert_eq!(h.list(TaskState::Delayed, 10, 0).await.0, vec![delayed]);
    assert_eq!(h.list(TaskState::Succeeded, 10, 0).await.0, vec![ids[0]]);
    assert_eq!(h.list(TaskState::Leased, 10, 0).await.0, Vec::<u64>::new());
    // New tasks do not shift a page already asked for.
    h.submit(vec![spec("newer", 0, 0)]).await;
    assert_eq!(h.list(TaskState::Ready, 2, ids[3]).await.0, vec![ids[2], ids[1]]);
}

#[tokio::test]
async fn a_paused_queue_leases_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    assert_eq!(h.control(QueueAction::Pause).await, Ok((true, 0)));
    let id = h.submit(vec![spec("a", 0, 0)]).await[0];
    h.credit(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = h.stats().await;
    assert!(st.paused && st.ready == 1 && st.leased == 0, "{st:?}");
    assert_eq!(h.control(QueueAction::Resume).await, Ok((false, 0)));
    assert_eq!(h.leased().await.task_id, id);
}

#[tokio::test]
async fn a_purge_cancels_ready_and_delayed_tasks_durably_and_leaves_leased_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let leased = h.submit(vec![spec("first", 5, 0)]).await[0];
    h.credit(1);
    assert_eq!(h.leased().await.task_id, leased);
    h.submit(vec![spec("a", 0, 0), spec("b", 0, 0), spec("later", 0, 60_000)]).await;
    assert_eq!(h.control(QueueAction::Purge).await, Ok((false, 3)));
    let st = h.stats().await;
    assert_eq!((st.ready, st.delayed, st.leased), (0, 0, 1), "{st:?}");
    assert_eq!(h.list(TaskState::Cancelled, 10, 0).await.0.len(), 3, "the purged tasks' outcomes are kept");
    let rec = h.reopen(dir.path());
    assert_eq!(rec.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![leased], "only the leased one is live");
}

#[tokio::test]
async fn dead_letters_page_by_cursor_and_a_delete_takes_only_what_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    let ids = h.submit((0..5).map(|i| one_attempt(&format!("d{i}"))).collect()).await;
    for _ in 0..5 {
        h.credit(1);
        h.lease_and_nack().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.dead_page(2, 0).await, vec![ids[0], ids[1]]);
    assert_eq!(h.dead_page(2, ids[1]).await, vec![ids[2], ids[3]]);
    assert_eq!(h.dead_page(2, ids[3]).await, vec![ids[4]]);

    // Nothing named and not `all`: nothing deleted.
    let request_id = h.request_id();
    let (out, queue) = (h.out.clone(), "q".to_string());
    h.shard.send(ShardMsg::DeadDelete { out, request_id, queue, task_ids: vec![], all: false });
    assert!(matches!(h.part(request_id).await, Part::DeadDelete(Ok(0))));
    let request_id = h.request_id();
    let (out, queue) = (h.out.clone(), "q".to_string());
    h.shard.send(ShardMsg::DeadDelete { out, request_id, queue, task_ids: vec![ids[1], ids[3]], all: false });
    assert!(matches!(h.part(request_id).await, Part::DeadDelete(Ok(2))));
    assert_eq!(h.dead_page(10, 0).await, vec![ids[0], ids[2], ids[4]]);
    let rec = h.reopen(dir.path());
    let live: Vec<u64> = rec.tasks.iter().map(|t| t.task_id).collect();
    assert_eq!(live, vec![ids[0], ids[2], ids[4]], "the deletion is durable");
}

/// A payload the store cannot give back (an I/O error) does not lose its task: it is dead-lettered with why,
/// and once the store reads again a redrive delivers it whole.
#[tokio::test]
async fn a_payload_the_store_cannot_read_back_dead_letters_its_task_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let (mut h, _) = Harness::start(dir.path());
    h.fail_reads.store(true, std::sync::atomic::Ordering::SeqCst);
    let ids = h.submit(vec![spec("kept on disk", 0, 0)]).await;
    h.credit(1);
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = h.dead_page(10, 0).await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead, ids);
    let request_id = h.request_id();
    h.shard.send(ShardMsg::DeadList { out: h.out.clone(), request_id, queue: "q".into(), limit: 10, after: 0 });
    let Part::DeadList(list) = h.part(request_id).await else { panic!("a dead-letter list") };
    assert!(list[0].reason.contains("could not be read from the store"), "{}", list[0].reason);
    h.fail_reads.store(false, std::sync::atomic::Ordering::SeqCst);
    let request_id = h.request_id();
    let (out, queue) = (h.out.clone(), "q".to_string());
    h.shard.send(ShardMsg::Redrive { out, request_id, queue, task_ids: ids.clone() });
    assert!(matches!(h.part(request_id).await, Part::Redrive(1)));
    let leased = h.leased().await;
    assert_eq!((leased.task_id, &leased.payload[..]), (ids[0], &b"kept on disk"[..]));
}
