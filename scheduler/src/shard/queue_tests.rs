//! Tests of one queue (`queue.rs`): ready order, credits, executor classes, small tasks and limits.

use super::*;

fn set(names: &[&str]) -> Executors {
    executor_set(names.iter().map(|s| s.to_string()).collect())
}

/// Leases everything leasable: (task id, conn) in order.
fn drain(q: &mut Queue) -> Vec<(u64, ConnId)> {
    let mut out = Vec::new();
    while let Some((class, group)) = q.best() {
        let e = q.pop(class).unwrap();
        out.push((e.task_id, q.take_credit_from(group).unwrap()));
    }
    out
}

#[test]
fn ready_order_is_priority_then_fifo() {
    let mut q = Queue::new("q".into());
    for (p, id) in [(0, 1), (5, 2), (0, 3), (5, 4), (-1, 5)] {
        q.push_ready(0, ReadyEntry { priority: p, task_id: id });
    }
    q.add_credit(1, 10, false, None);
    let order: Vec<u64> = drain(&mut q).into_iter().map(|(t, _)| t).collect();
    assert_eq!(order, vec![2, 4, 1, 3, 5]);
    assert_eq!(q.ready_len(), 0);
}

#[test]
fn small_tasks_take_their_turn_with_the_heap_by_priority_then_id() {
    let mut q = Queue::new("q".into());
    let s = Small::new(0, 0).unwrap();
    q.push_ready(0, ReadyEntry { priority: 0, task_id: 2 });
    q.push_small(0, 0, 1, s);
    q.push_small(0, 5, 4, s);
    q.push_ready(0, ReadyEntry { priority: 5, task_id: 3 });
    let x = q.class_of(&set(&["x"]));
    q.push_small(x, 9, 5, s);
    assert_eq!((q.ready_len(), q.small_len(), q.waiting_for_executor()), (5, 3, 1));
    assert_eq!(q.peek(0), Some(ReadyEntry { priority: 5, task_id: 3 }));
    q.add_credit(1, 10, false, Some(set(&[])));
    // As dispatch does: a small head becomes a heap entry, then the heap's head is taken.
    let mut order = Vec::new();
    while let Some((class, _)) = q.best() {
        if let Some((e, small)) = q.take_small_head(class) {
            assert_eq!(small, s);
            q.push_ready(class, e);
        }
        order.push(q.pop(class).unwrap().task_id);
    }
    assert_eq!(order, vec![3, 4, 1, 2], "the task needing `x` waits");
    assert_eq!((q.ready_len(), q.small_len()), (1, 1));
    q.push_small(0, 0, 7, s);
    q.push_small(0, 0, 8, s);
    q.retain_ready(|id| id != 7);
    assert_eq!((q.ready_len(), q.find_small(8), q.find_small(7)), (2, Some((0, 0, s)), None));
    q.remove_small(0, 8);
    assert_eq!((q.small_len(), q.find_small(5)), (1, Some((x, 9, s))));
}

#[test]
fn credits_are_served_round_robin() {
    let mut q = Queue::new("q".into());
    q.add_credit(1, 2, false, None);
    q.add_credit(2, 1, false, None);
    q.add_credit(1, 1, false, None);
    for id in 1..=5 {
        q.push_ready(0, ReadyEntry { priority: 0, task_id: id });
    }
    let got: Vec<ConnId> = drain(&mut q).into_iter().map(|(_, c)| c).collect();
    assert_eq!(got, vec![1, 2, 1, 1]);
    assert_eq!(q.total_credits(), 0);
    q.add_credit(3, 2, false, None);
    q.remove_agent(3);
    assert_eq!(q.best(), None);
}

#[test]
fn agents_are_served_before_peer_nodes_and_credits_can_be_set() {
    let mut q = Queue::new("q".into());
    q.add_credit(9, 2, true, None);
    q.add_credit(1, 1, false, None);
    assert_eq!(q.local_credits(), 1);
    for id in 1..=4 {
        q.push_ready(0, ReadyEntry { priority: 0, task_id: id });
    }
    q.add_credit(2, 1, false, None);
    let got: Vec<ConnId> = drain(&mut q).into_iter().map(|(_, c)| c).collect();
    assert_eq!(got, vec![1, 2, 9, 9], "the agents first, then the peer");
    q.add_credit(9, 5, true, None);
    q.set_credit(9, 1, true, None);
    q.add_credit(3, 4, false, None);
    q.set_credit(3, 0, false, None);
    assert_eq!((q.total_credits(), q.local_credits()), (1, 0));
    q.push_ready(0, ReadyEntry { priority: 0, task_id: 5 });
    assert_eq!(drain(&mut q), vec![(5, 9)]);
    assert!(!q.has_credit());
}

#[test]
fn tasks_go_only_to_agents_with_their_executors() {
    let mut q = Queue::new("q".into());
    let ocr = q.class_of(&set(&["wget", "tesseract"]));
    let dl = q.class_of(&set(&["wget"]));
    assert_eq!(q.class_of(&set(&["tesseract", "wget", "wget"])), ocr, "sets are interned");
    q.push_ready(ocr, ReadyEntry { priority: 9, task_id: 1 });
    q.push_ready(dl, ReadyEntry { priority: 0, task_id: 2 });
    q.push_ready(0, ReadyEntry { priority: 0, task_id: 3 });
    let ffmpeg = q.class_of(&set(&["ffmpeg"]));
    q.push_ready(ffmpeg, ReadyEntry { priority: 99, task_id: 4 });
    // Agent 1 has only wget; agent 2 runs anything but comes later.
    q.add_credit(1, 5, false, Some(set(&["wget"])));
    assert_eq!(drain(&mut q), vec![(2, 1), (3, 1)], "the ocr and ffmpeg tasks wait; the others run");
    assert_eq!(q.waiting_for_executor(), 2);
    assert_eq!(q.capable(ocr), (false, false));
    q.add_credit(5, 1, false, Some(set(&["tesseract", "wget", "mc"])));
    assert_eq!(q.capable(ocr), (true, true));
    assert_eq!(drain(&mut q), vec![(1, 5)]);
    assert_eq!(q.capable(ocr), (true, false), "connected but busy");
    assert_eq!(q.waiting_for_executor(), 1);
    q.add_credit(2, 1, false, None);
    assert_eq!(drain(&mut q), vec![(4, 2)], "an agent that declared nothing runs anything");
    q.remove_agent(5);
    assert_eq!(q.capable(ocr), (true, false), "agent 2 still runs anything");
    q.remove_agent(2);
    assert_eq!(q.capable(ocr), (false, false));
    assert_eq!(q.agent_executors(), vec![Some(&["wget".to_string()][..])]);
}

#[test]
fn peers_take_what_no_local_agent_can_and_foreign_tasks_go_to_capable_agents() {
    let mut q = Queue::new("q".into());
    let x = q.class_of(&set(&["x"]));
    q.push_ready(x, ReadyEntry { priority: 5, task_id: 1 });
    q.push_ready(0, ReadyEntry { priority: 0, task_id: 2 });
    q.add_credit(3, 5, false, Some(set(&["y"])));
    q.add_credit(9, 5, true, None);
    assert_eq!(drain(&mut q), vec![(2, 3), (1, 9)], "the local agent first, then the peer takes the rest");
    assert_eq!(q.take_local_credit_for(x), None, "agent 3 lacks x");
    q.add_credit(4, 1, false, Some(set(&["x", "y"])));
    assert_eq!(q.take_local_credit_for(x), Some(4));
    assert_eq!(q.take_local_credit_for(0), Some(3));
}

#[test]
fn a_key_at_its_limit_parks_its_tasks_until_a_lease_ends() {
    let mut q = Queue::new("q".into());
    q.set_limits(QueueLimits { max_per_key: 1, ..Default::default() });
    q.key_started("a");
    assert!(q.key_at_limit("a") && !q.key_at_limit("b") && !q.key_at_limit(""));
    q.park("a", 0, ReadyEntry { priority: 0, task_id: 3 });
    q.park("a", 0, ReadyEntry { priority: 1, task_id: 4 });
    assert_eq!(q.ready_len(), 2);
    assert!(q.key_ended("a"), "the best parked task is ready again");
    assert_eq!(q.peek(0).map(|e| e.task_id), Some(4));
    assert_eq!(q.running_of("a"), 0);
    q.retain_ready(|id| id != 3);
    assert_eq!(q.ready_len(), 1);
    assert!(!q.key_ended("a"));
    // The task a lease's end made ready is cancelled: the key's next parked task comes back.
    q.key_started("a");
    q.park("a", 0, ReadyEntry { priority: 0, task_id: 5 });
    assert!(q.key_ended("a"));
    q.park("a", 0, ReadyEntry { priority: 0, task_id: 6 });
    q.retain_ready(|id| id != 4 && id != 5);
    assert_eq!((q.peek(0).map(|e| e.task_id), q.ready_len()), (Some(6), 1), "not stuck behind a cancelled one");
}

#[test]
fn the_rate_limit_is_a_token_bucket() {
    let mut q = Queue::new("q".into());
    q.set_limits(QueueLimits { rate_per_sec: 10.0, burst: 2.0, ..Default::default() });
    let t0 = Instant::now();
    assert!(q.take_token(t0) && q.take_token(t0));
    assert!(!q.take_token(t0));
    let until = q.throttled_until.unwrap();
    assert!(until > t0 && until <= t0 + Duration::from_millis(100));
    assert!(q.take_token(t0 + Duration::from_millis(100)));
    assert!(q.throttled_until.is_none());
}
