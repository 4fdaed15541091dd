//! Kill -9 loop: SIGKILL the scheduler at random moments under continuous submit + lease + ack load, restart
//! it on the same data, and prove that every task whose SubmitAck arrived was delivered at least once.
//! Duplicates (redeliveries of tasks whose ack was lost with the process) are counted and reported.
//!
//! `PM_CRASH_KILLS` sets the number of kills (default 20).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pm_client::{Client, ConnectOptions};
use pm_testkit::Scheduler;
use pm_tests::task;
use rand::Rng;

#[derive(Default)]
struct Ledger {
    /// Payload numbers whose SubmitAck said OK.
    acked_submits: HashSet<u64>,
    /// Payload number → times delivered.
    delivered: HashMap<u64, u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_task_survives_kill_9() {
    let kills: usize = std::env::var("PM_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut sched = Scheduler::start(&["--default-lease", "2s"]);
    let addr = sched.addr.clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let opts = || ConnectOptions::producer().max_backoff(Duration::from_millis(100));
    let producer = Client::connect(&addr, opts()).await.unwrap();
    let prod = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let batch: Vec<u64> = (next..next + 16).collect();
                next += 16;
                let tasks = batch.iter().map(|n| task("crash", &n.to_be_bytes())).collect();
                match producer.submit(tasks).await {
                    Ok(results) => {
                        let mut l = ledger.lock().unwrap();
                        for (n, r) in batch.iter().zip(results) {
                            if r.code == 0 {
                                l.acked_submits.insert(*n);
                            }
                        }
                    }
                    // In flight when the server died: maybe enqueued, maybe not. Not counted.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            next
        })
    };

    let (agent, mut leases) = Client::connect_agent(
        &addr,
        ConnectOptions::agent().max_backoff(Duration::from_millis(100)).request_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    agent.credit("crash", 64).await.unwrap();
    let cons = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            while let Some(ev) = leases.next().await {
                let Some(t) = ev.into_leased() else { continue };
                let n = u64::from_be_bytes(t.payload[..8].try_into().unwrap());
                *ledger.lock().unwrap().delivered.entry(n).or_default() += 1;
                let agent = agent.clone();
                tokio::spawn(async move {
                    let _ = agent.ack(vec![(t.lease_id, Bytes::new())]).await;
                    let _ = agent.credit("crash", 1).await;
                });
            }
        })
    };

    let mut rng = rand::thread_rng();
    for i in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
        sched.kill();
        if i % 3 == 0 {
            // Sometimes stay down a little, so clients go through their backoff.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
        }
        sched.restart();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let submitted = prod.await.unwrap();

    // Let the agent drain everything (redeliveries of lost leases take one lease period).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let l = ledger.lock().unwrap();
            l.acked_submits.iter().filter(|n| !l.delivered.contains_key(n)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} acknowledged tasks were never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cons.abort();
    let l = ledger.lock().unwrap();
    let dups: u32 = l.delivered.values().map(|c| c - 1).sum();
    let lost = l.acked_submits.iter().filter(|n| !l.delivered.contains_key(n)).count();
    eprintln!(
        "crash loop: {kills} kills, {submitted} submitted, {} acknowledged, {} delivered, {dups} duplicate deliveries, {lost} lost",
        l.acked_submits.len(),
        l.delivered.len()
    );
    assert_eq!(lost, 0);
    assert!(l.acked_submits.len() > 1000, "the load was too light to prove anything: {}", l.acked_submits.len());
}
