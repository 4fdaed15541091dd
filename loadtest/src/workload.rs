//! The producer/consumer workload behind `max-rate`, `fixed-rate` and `soak`.
//!
//! - **Closed loop** (`max-rate`): every producer keeps `inflight` Submits of `batch` tasks in flight.
//! - **Open loop** (`fixed-rate`, `soak`): a pacer thread releases Submits on a fixed schedule and each task
//!   carries its *intended* send time, so a slow server shows up as latency rather than as a lower offered
//!   rate (no coordinated omission). The pacer is an OS thread sleeping with `thread::sleep` (sub-100 µs
//!   precision here) because tokio's timer wheel ticks in whole milliseconds; how late it released each
//!   Submit is reported as `send_late_ms`, and that lateness is part of the latency.
//!
//! Latency = ack reply time − the time in the payload. Only completions inside the window
//! `[warmup, warmup + duration)` count towards the totals. Then producers stop and consumers drain for at
//! most `drain`. Every loop is bounded by time, and the producers also by `max_tasks` (the last Submit is cut
//! to fit, so a run submits exactly `max_tasks` unless the window ends first).
//!
//! One side may be absent, to build a backlog and drain it in separate runs: with no consumers the run ends
//! when the producers stop and the tasks stay queued; with no producers the consumers take what is queued and
//! the run ends once they acked `max_tasks` (or at the window's end plus `drain`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::backend::{Acker, Backend, Consumer, LoadError, Producer};
use crate::stats::{histogram, lock, Clock, Counters, Point, Quantiles, Recorder, Recorders, Totals};

/// How Submits are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Closed loop: as fast as replies come back.
    Max,
    /// Open loop at this many tasks per second.
    Fixed(u64),
}

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Pacing.
    pub pace: Pace,
    /// Producer connections (0: consumers only, until they acked `max_tasks`).
    pub producers: usize,
    /// Consumer connections (0: producers only; what they submit stays queued).
    pub consumers: usize,
    /// Tasks per Submit.
    pub batch: usize,
    /// Payload bytes per task (at least 8: the send time).
    pub payload: usize,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// Measurement window.
    pub duration: Duration,
    /// Longest wait for consumers to catch up after the window.
    pub drain: Duration,
    /// Submits in flight per producer.
    pub inflight: usize,
    /// Deliveries a consumer may hold unacked (pm credits).
    pub prefetch: u32,
    /// Deliveries acked per call at most.
    pub ack_batch: usize,
    /// Ack calls in flight per consumer.
    pub ack_inflight: usize,
    /// Producers stop after this many tasks in all; without producers, consumers stop once they acked this
    /// many.
    pub max_tasks: u64,
    /// Length of a series interval.
    pub interval: Duration,
    /// The server's pid (same machine): its memory is sampled every interval.
    pub server_pid: Option<u32>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Counters at the end.
    pub n: Totals,
    /// End-to-end latency over the window (µs).
    pub latency: Histogram<u64>,
    /// Submit round trip over the window (µs).
    pub submit_rtt: Histogram<u64>,
    /// How late the pacer released Submits (µs; open loop only).
    pub send_late: Histogram<u64>,
    /// One point per interval.
    pub series: Vec<Point>,
    /// Run time until the drain ended, s.
    pub elapsed_s: f64,
    /// Whether producers stopped early because of `max_tasks`.
    pub hit_max_tasks: bool,
}

/// Called once per closed interval (the progress line).
pub type OnTick = Box<dyn Fn(&Point, &Counters) + Send + Sync>;

struct Ctx<W> {
    w: W,
    clock: Clock,
    n: Counters,
    latency: Recorders,
    submit_rtt: Recorders,
    /// Tasks granted to producers so far (for `max_tasks`).
    granted: AtomicU64,
    hit_max: AtomicBool,
    /// Producers and the pacer stop.
    stop: AtomicBool,
    /// The drain is over: the ticker closes its last interval.
    done: AtomicBool,
}

impl Ctx<Workload> {
    fn new(w: Workload, clock: Clock) -> Self {
        Ctx {
            w,
            clock,
            n: Counters::default(),
            latency: Recorders::default(),
            submit_rtt: Recorders::default(),
            granted: AtomicU64::new(0),
            hit_max: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    /// Reserves the tasks of one Submit under `max_tasks`: `batch`, fewer for the last one, 0 once the budget is
    /// spent.
    fn grant(&self) -> usize {
        let b = self.w.batch as u64;
        let before = self.granted.fetch_add(b, Relaxed);
        let n = self.w.max_tasks.saturating_sub(before).min(b);
        if n < b {
            self.hit_max.store(true, Relaxed);
        }
        n as usize
    }

    /// Whether the consumers are done: they acked what was submitted, or (with no producers) `max_tasks`.
    fn drained(&self) -> bool {
        let acked = self.n.acked.load(Relaxed);
        if self.w.producers > 0 {
            return acked >= self.n.submitted.load(Relaxed);
        }
        let done = acked >= self.w.max_tasks;
        if done {
            self.hit_max.store(true, Relaxed);
        }
        done
    }

    fn producing(&self) -> bool {
        !self.stop.load(Relaxed) && self.clock.now_ns() < self.clock.win_end
    }

    fn payloads(&self, stamp: u64, n: usize) -> Vec<Bytes> {
        let mut buf = BytesMut::zeroed(self.w.payload.max(8));
        buf[..8].copy_from_slice(&stamp.to_le_bytes());
        let one = buf.freeze();
        vec![one; n]
    }
}

/// Runs the workload against `backend` and returns what it measured.
pub async fn run<B: Backend>(backend: Arc<B>, w: Workload, on_tick: Option<OnTick>) -> Result<Outcome, LoadError> {
    let mut producers = Vec::with_capacity(w.producers);
    let mut consumers = Vec::with_capacity(w.consumers);
    for i in 0..w.consumers {
        consumers.push(backend.consumer(i, w.prefetch).await?);
    }
    for i in 0..w.producers {
        producers.push(backend.producer(i).await?);
    }
    let t0 = Instant::now();
    let win_start = w.warmup.as_nanos() as u64;
    let clock = Clock { t0, win_start, win_end: win_start + w.duration.as_nanos() as u64 };
    let ctx = Arc::new(Ctx::new(w, clock));

    let mut consumer_tasks = JoinSet::new();
    for c in consumers {
        consumer_tasks.spawn(consume(ctx.clone(), c));
    }
    let send_late = Arc::new(Mutex::new(histogram()));
    let mut producer_tasks = JoinSet::new();
    match ctx.w.pace {
        Pace::Max => {
            for p in producers {
                producer_tasks.spawn(produce_closed(ctx.clone(), p));
            }
        }
        Pace::Fixed(_) if producers.is_empty() => {}
        Pace::Fixed(rate) => {
            let mut ticks = Vec::new();
            for p in producers {
                let (tx, rx) = mpsc::unbounded_channel();
                ticks.push(tx);
                producer_tasks.spawn(produce_open(ctx.clone(), p, rx));
            }
            let (ctx2, late) = (ctx.clone(), send_late.clone());
            std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pace(&ctx2, rate, ticks, &late))
                .map_err(LoadError::Io)?;
        }
    }
    let ticker = tokio::spawn(tick(ctx.clone(), on_tick));

    // Producers stop at the window's end (their last Submits may still be in flight); then drain.
    let deadline = tokio::time::Instant::from(t0 + Duration::from_nanos(ctx.clock.win_end) + ctx.w.drain);
    while tokio::time::timeout_at(deadline, producer_tasks.join_next()).await.ok().flatten().is_some() {}
    ctx.stop.store(true, Relaxed);
    producer_tasks.abort_all();
    while ctx.w.consumers > 0 && !ctx.drained() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    consumer_tasks.abort_all();
    let elapsed_s = t0.elapsed().as_secs_f64();
    ctx.done.store(true, Relaxed);
    let series = ticker.await.unwrap_or_default();
    let send_late = lock(&send_late).clone();
    Ok(Outcome {
        latency: ctx.latency.window(),
        submit_rtt: ctx.submit_rtt.window(),
        send_late,
        series,
        elapsed_s,
        hit_max_tasks: ctx.hit_max.load(Relaxed),
        n: ctx.n.totals(),
    })
}

async fn submit<P: Producer>(ctx: &Ctx<Workload>, p: &P, rec: &Mutex<Recorder>, stamp: u64, n: usize) {
    let sent = ctx.clock.now_ns();
    match p.submit(ctx.payloads(stamp, n)).await {
        Ok(ok) => {
            let now = ctx.clock.now_ns();
            let win = ctx.clock.in_window(now);
            lock(rec).record(now.saturating_sub(sent) / 1000, win);
            ctx.n.submitted.fetch_add(ok as u64, Relaxed);
            if win {
                ctx.n.submitted_win.fetch_add(ok as u64, Relaxed);
            }
            ctx.n.rejected.fetch_add((n - ok.min(n)) as u64, Relaxed);
        }
        Err(e) => error(&ctx.n.submit_errors, "submit", &e),
    }
}

async fn produce_closed<P: Producer>(ctx: Arc<Ctx<Workload>>, p: P) {
    let rec = ctx.submit_rtt.add();
    let mut set = JoinSet::new();
    for _ in 0..ctx.w.inflight {
        let (ctx, p, rec) = (ctx.clone(), p.clone(), rec.clone());
        set.spawn(async move {
            while ctx.producing() {
                let n = ctx.grant();
                if n == 0 {
                    break;
                }
                submit(&ctx, &p, &rec, ctx.clock.now_ns(), n).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Sends one Submit per tick (its intended time and its number of tasks), each stamped with its intended time;
/// at most `inflight` in flight, later ones wait for a slot (keeping their stamp, so the wait counts as
/// latency).
async fn produce_open<P: Producer>(ctx: Arc<Ctx<Workload>>, p: P, mut ticks: mpsc::UnboundedReceiver<(u64, usize)>) {
    let rec = ctx.submit_rtt.add();
    let slots = Arc::new(Semaphore::new(ctx.w.inflight));
    let mut set = JoinSet::new();
    while let Some((intended, n)) = ticks.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (ctx, p, rec) = (ctx.clone(), p.clone(), rec.clone());
        set.spawn(async move {
            submit(&ctx, &p, &rec, intended, n).await;
            drop(slot);
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
}

/// The pacer thread: releases Submits round-robin over the producers at `rate` tasks/s.
fn pace(ctx: &Ctx<Workload>, rate: u64, ticks: Vec<mpsc::UnboundedSender<(u64, usize)>>, late: &Mutex<Histogram<u64>>) {
    let interval_ns = (ctx.w.batch as f64 / rate.max(1) as f64 * 1e9) as u64;
    let mut intended = 0u64;
    let mut late_local = histogram();
    for i in 0.. {
        if intended >= ctx.clock.win_end || ctx.stop.load(Relaxed) {
            break;
        }
        let n = ctx.grant();
        if n == 0 {
            break;
        }
        let now = ctx.clock.now_ns();
        if intended > now {
            std::thread::sleep(Duration::from_nanos(intended - now));
        }
        late_local.saturating_record(ctx.clock.now_ns().saturating_sub(intended) / 1000);
        if ticks[i % ticks.len()].send((intended, n)).is_err() {
            break;
        }
        intended += interval_ns;
    }
    *lock(late) = late_local;
}

async fn consume<C: Consumer>(ctx: Arc<Ctx<Workload>>, mut c: C) {
    let rec = ctx.latency.add();
    let acker = c.acker();
    let slots = Arc::new(Semaphore::new(ctx.w.ack_inflight));
    let mut acks = JoinSet::new();
    loop {
        let batch = match c.next(ctx.w.ack_batch).await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                error(&ctx.n.ack_errors, "receive", &e);
                break;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let redelivered = batch.iter().filter(|d| d.redelivered).count() as u64;
        ctx.n.redelivered.fetch_add(redelivered, Relaxed);
        let stamps: Vec<Option<u64>> =
            batch.iter().map(|d| d.payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)).collect();
        let tokens = batch.into_iter().map(|d| d.token).collect();
        let (ctx, acker, rec) = (ctx.clone(), acker.clone(), rec.clone());
        acks.spawn(async move {
            match acker.ack(tokens).await {
                Ok(oks) => {
                    let now = ctx.clock.now_ns();
                    let win = ctx.clock.in_window(now);
                    let mut acked = 0u64;
                    let mut r = lock(&rec);
                    for (ok, stamp) in oks.iter().zip(&stamps) {
                        if !ok {
                            ctx.n.ack_errors.fetch_add(1, Relaxed);
                            continue;
                        }
                        acked += 1;
                        if let Some(s) = stamp {
                            r.record(now.saturating_sub(*s) / 1000, win);
                        }
                    }
                    drop(r);
                    ctx.n.ack_errors.fetch_add(stamps.len().saturating_sub(oks.len()) as u64, Relaxed);
                    ctx.n.acked.fetch_add(acked, Relaxed);
                    if win {
                        ctx.n.acked_win.fetch_add(acked, Relaxed);
                    }
                }
                Err(e) => error(&ctx.n.ack_errors, "ack", &e),
            }
            drop(slot);
        });
        while acks.try_join_next().is_some() {}
    }
}

/// Closes an interval every `ctx.w.interval` until the run stops; returns the series.
async fn tick(ctx: Arc<Ctx<Workload>>, on_tick: Option<OnTick>) -> Vec<Point> {
    let mut series = Vec::new();
    let (mut sub0, mut ack0) = (0, 0);
    let mut last = Instant::now();
    let mut timer = tokio::time::interval(ctx.w.interval);
    timer.tick().await;
    loop {
        // The last interval closes early, when the run is done.
        tokio::select! {
            _ = timer.tick() => {}
            _ = wait_done(&ctx) => {}
        }
        let (sub, ack) = (ctx.n.submitted.load(Relaxed), ctx.n.acked.load(Relaxed));
        let secs = last.elapsed().as_secs_f64().max(1e-9);
        last = Instant::now();
        let point = Point {
            t: ctx.clock.now_ns() as f64 / 1e9,
            submitted_per_s: (sub - sub0) as f64 / secs,
            acked_per_s: (ack - ack0) as f64 / secs,
            latency_ms: Quantiles::of(&ctx.latency.take_interval()),
            server_rss: ctx.w.server_pid.and_then(|pid| crate::idle::rss(pid).ok()),
        };
        (sub0, ack0) = (sub, ack);
        if let Some(f) = &on_tick {
            f(&point, &ctx.n);
        }
        series.push(point);
        if ctx.done.load(Relaxed) {
            return series;
        }
    }
}

async fn wait_done(ctx: &Ctx<Workload>) {
    while !ctx.done.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Counts an error and prints the first few.
fn error(counter: &AtomicU64, what: &str, e: &LoadError) {
    if counter.fetch_add(1, Relaxed) < 5 {
        eprintln!("{what}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(producers: usize, batch: usize, max_tasks: u64) -> Ctx<Workload> {
        let w = Workload {
            pace: Pace::Max,
            producers,
            consumers: 1,
            batch,
            payload: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            drain: Duration::ZERO,
            inflight: 1,
            prefetch: 1,
            ack_batch: 1,
            ack_inflight: 1,
            max_tasks,
            interval: Duration::from_secs(1),
            server_pid: None,
        };
        Ctx::new(w, Clock { t0: Instant::now(), win_start: 0, win_end: 1 })
    }

    #[test]
    fn the_last_submit_is_cut_to_fit_max_tasks() {
        let c = ctx(1, 64, 150);
        assert_eq!((c.grant(), c.grant()), (64, 64));
        assert!(!c.hit_max.load(Relaxed));
        assert_eq!(c.grant(), 22, "150 = 64 + 64 + 22");
        assert!(c.hit_max.load(Relaxed));
        assert_eq!((c.grant(), c.grant()), (0, 0), "the budget is spent");
        assert_eq!(c.payloads(7, 22).len(), 22);
    }

    #[test]
    fn consumers_alone_are_done_at_max_tasks_acked() {
        let c = ctx(0, 64, 100);
        c.n.acked.store(99, Relaxed);
        assert!(!c.drained());
        c.n.acked.store(100, Relaxed);
        assert!(c.drained() && c.hit_max.load(Relaxed));
        let with_producers = ctx(1, 64, 100);
        with_producers.n.submitted.store(64, Relaxed);
        with_producers.n.acked.store(64, Relaxed);
        assert!(with_producers.drained(), "with producers: done once every submitted task is acked");
    }
}
