//! beanstalkd, for comparison runs, over a minimal client of its text protocol
//! (<https://github.com/beanstalkd/beanstalkd/blob/master/doc/protocol.txt>): there is no well-kept async
//! Rust client, and the load test needs only `use`, `watch`, `ignore`, `put`, `reserve-with-timeout`,
//! `delete` and `stats-tube`. Replies are parsed strictly: any line that is not a valid reply to the command
//! sent is a [`LoadError::Backend`] carrying the line, and the connection is not used again.
//!
//! # Producer
//!
//! beanstalkd has no batch command, so a batch is pipelined: all its `put`s go out in one write, then the
//! replies are read in order. Clones share one connection through two locks, a write lock and a read lock:
//! a batch takes the write lock, writes, takes the read lock *before* releasing the write lock (so replies
//! are read in the order batches were written), then reads its replies. The next batch can therefore write
//! while the previous one is still reading: two batches in flight per connection, with no extra task.
//!
//! # Consumer
//!
//! Two protocol facts shape it: a job reserved by a connection can only be deleted (acked) by that same
//! connection, and beanstalkd handles a connection's commands strictly in order, so a blocking
//! `reserve-with-timeout` holds up every command sent after it on that connection. With one connection, acks
//! would wait behind a blocking reserve until the next job arrives or the timeout (1 s, the protocol's
//! smallest non-zero timeout) passes; the load generator measures latency up to the ack reply, so that would
//! be measured as queue latency. Polling with `reserve-with-timeout 0` and short sleeps would add the sleep to
//! every delivery instead.
//!
//! So a consumer owns a small pool of connections and keeps one rule: **a connection only blocks in
//! `reserve` while it holds no unacknowledged jobs.** `next` picks a connection with no unacked jobs
//! (opening one if there is none), blocks there in `reserve-with-timeout 1` (repeated on `TIMED_OUT`) for the
//! first job, then pipelines `reserve-with-timeout 0` to take what is already ready, up to `max` (in rounds
//! sized by the previous delivery, see `Conn::reserve`). Those jobs stay pinned to that connection (job id →
//! connection), and the acker pipelines their `delete`s on it. Since a connection with unacked jobs never
//! blocks, an ack waits at most for another ack on the same connection.
//!
//! The cost: more connections, about one per batch that is delivered but not yet acked, plus one blocking
//! (the load generator's `--ack-inflight` + 1), each opened once (TCP connect, `watch`, `ignore`) and reused;
//! the prefetch bounds it, since a consumer never holds more than `prefetch` unacked jobs (like pm's credits):
//! at most `prefetch` + 1 connections. And taking the ready jobs costs a few round trips when a burst
//! follows a quiet spell (rounds of 1, 2, 4, ... `reserve-with-timeout 0`), and one wasted `TIMED_OUT` per
//! delivery when the tube is nearly idle.
//!
//! A request that fails or is cancelled midway (the load generator aborts its consumers at the end) leaves
//! its connection out of step with the replies; the connection is then closed, which makes beanstalkd release
//! the jobs it had reserved: they become ready again and are delivered again (beanstalkd does not say a job is
//! a redelivery, so [`Delivery::redelivered`] is always `false`). Jobs are put with a 60 s TTR so a slow ack
//! does not release them either; `DEADLINE_SOON` (a reserved job within a second of its TTR) on a reserve is
//! answered by reserving again.
//!
//! # What the replies mean (durability)
//!
//! - `INSERTED <id>`: the job is in the server's memory and, when beanstalkd runs with a binlog (`-b DIR`),
//!   written to it (write(2)) before the reply: it survives a beanstalkd crash. It is fsynced per `-f MS`: by
//!   default at most once every 50 ms (so a power loss can lose the last ~50 ms), with `-f0` before the reply,
//!   with `-F` never. Without `-b` the job lives in memory only.
//! - `BURIED <id>`: stored but buried (the server could not grow its ready queue): it will not be delivered,
//!   so it counts as not accepted. `JOB_TOO_BIG`, `DRAINING` and `EXPECTED_CRLF` reject the one job.
//! - `DELETED`: the job is gone (a binlog records the delete). `NOT_FOUND`: the job was not reserved by this
//!   connection (its TTR ran out, or it was released): the ack counts as not accepted.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore};

use crate::backend::{Acker, Backend, Consumer, Delivery, LoadError, Producer};

/// Priority of every job (lower is more urgent; all jobs are equal here).
const PRIORITY: u32 = 1024;
/// Time-to-run: how long a reserved job may stay unacked before beanstalkd releases it. Far above any ack
/// delay of a healthy run, so a job is only ever redelivered when its connection closes.
const TTR_SECS: u32 = 60;
/// Timeout of the blocking reserve; 1 s is the smallest non-zero one. It only bounds how long a consumer
/// goes without noticing a dead server: a job that arrives ends the wait at once.
const BLOCK_SECS: u32 = 1;
/// Longest reply line accepted (the longest valid one, `USING` with a 200-byte tube name, is ~210 bytes).
const MAX_LINE: usize = 1024;
/// Largest job body accepted (beanstalkd's own limit for `-z`).
const MAX_BODY: usize = 1 << 30;
/// Deadline for connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// beanstalkd as a task queue: one tube.
#[derive(Debug, Clone)]
pub struct Beanstalk {
    /// `HOST:PORT` of beanstalkd.
    pub addr: String,
    /// Tube the jobs go to.
    pub tube: String,
}

/// Job counts of a tube, from `stats-tube` (the tests check a run leaves nothing behind).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TubeStats {
    /// Jobs waiting to be reserved.
    pub ready: u64,
    /// Jobs reserved and not yet deleted.
    pub reserved: u64,
    /// Jobs put with a delay that has not passed yet.
    pub delayed: u64,
    /// Buried jobs.
    pub buried: u64,
}

impl Beanstalk {
    /// A backend for `tube` on the beanstalkd at `addr` (`HOST:PORT`).
    pub fn new(addr: impl Into<String>, tube: impl Into<String>) -> Self {
        Self { addr: addr.into(), tube: tube.into() }
    }

    #[cfg(test)]
    /// The tube's job counts; all zero when the tube does not exist (beanstalkd drops unused empty tubes).
    pub async fn tube_stats(&self) -> Result<TubeStats, LoadError> {
        check_tube(&self.tube)?;
        let mut conn = Conn::connect(&self.addr).await?;
        match conn.command(&format!("stats-tube {}", self.tube)).await? {
            Reply::Ok(yaml) => Ok(parse_tube_stats(&yaml)),
            Reply::NotFound => Ok(TubeStats::default()),
            other => Err(unexpected("stats-tube", &other)),
        }
    }

    /// Deletes every ready job of the tube and returns how many. Call before a run, not during one: jobs a
    /// previous run put but never consumed would otherwise be delivered to the next one (with send times
    /// from another clock).
    pub async fn clear(&self) -> Result<u64, LoadError> {
        let mut conn = Conn::consumer(&self.addr, &self.tube).await?;
        let mut deleted = 0;
        loop {
            match conn.command("reserve-with-timeout 0").await? {
                Reply::Reserved { id, .. } => match conn.command(&format!("delete {id}")).await? {
                    Reply::Deleted => deleted += 1,
                    other => return Err(unexpected("delete", &other)),
                },
                Reply::TimedOut | Reply::DeadlineSoon => return Ok(deleted),
                other => return Err(unexpected("reserve-with-timeout", &other)),
            }
        }
    }
}

impl Backend for Beanstalk {
    type Producer = BeanstalkProducer;
    type Consumer = BeanstalkConsumer;

    async fn producer(&self, _i: usize) -> Result<BeanstalkProducer, LoadError> {
        check_tube(&self.tube)?;
        let mut conn = Conn::connect(&self.addr).await?;
        match conn.command(&format!("use {}", self.tube)).await? {
            Reply::Using(t) if t == self.tube => {}
            other => return Err(unexpected("use", &other)),
        }
        let Conn { reader, writer, out, .. } = conn;
        let inner = ProducerConn {
            writer: Mutex::new((writer, out)),
            reader: Mutex::new(reader),
            broken: AtomicBool::new(false),
        };
        Ok(BeanstalkProducer { inner: Arc::new(inner) })
    }

    /// Opens the consumer's first connection (failing fast on a bad address); more are opened on demand.
    /// A `prefetch` of 0 is taken as 1.
    async fn consumer(&self, _i: usize, prefetch: u32) -> Result<BeanstalkConsumer, LoadError> {
        check_tube(&self.tube)?;
        let first = Conn::consumer(&self.addr, &self.tube).await?;
        let shared = Shared {
            pool: StdMutex::new(vec![Arc::new(Mutex::new(Slot { conn: Some(first), unacked: 0 }))]),
            jobs: StdMutex::new(HashMap::new()),
            credits: Semaphore::new(usize::try_from(prefetch.max(1)).unwrap_or(1)),
        };
        Ok(BeanstalkConsumer {
            shared: Arc::new(shared),
            addr: self.addr.clone(),
            tube: self.tube.clone(),
            last_batch: 1,
        })
    }
}

/// Tube names: 1 to 200 of `A-Za-z0-9-+/;.$_()`, not starting with `-`. Checked here because the name goes
/// into command lines verbatim.
fn check_tube(tube: &str) -> Result<(), LoadError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-+/;.$_()".contains(c);
    if tube.is_empty() || tube.len() > 200 || tube.starts_with('-') || !tube.chars().all(ok_char) {
        return Err(LoadError::Backend(format!("invalid beanstalkd tube name {tube:?}")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Producer

/// Puts jobs; clones share one connection, on which two batches can be in flight (see the module doc).
#[derive(Clone)]
pub struct BeanstalkProducer {
    inner: Arc<ProducerConn>,
}

impl std::fmt::Debug for BeanstalkProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeanstalkProducer").field("broken", &self.inner.broken.load(Ordering::Relaxed)).finish()
    }
}

struct ProducerConn {
    /// The write half and its encode buffer.
    writer: Mutex<(OwnedWriteHalf, Vec<u8>)>,
    reader: Mutex<ReplyReader<OwnedReadHalf>>,
    /// Set when a batch failed or was cancelled between writing and reading all its replies: the replies no
    /// longer match the requests, so the connection is unusable.
    broken: AtomicBool,
}

impl ProducerConn {
    fn check(&self) -> Result<(), LoadError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(LoadError::Backend("beanstalkd producer connection unusable after an earlier failure".into()));
        }
        Ok(())
    }
}

/// Sets the flag on drop unless disarmed: marks a connection broken on every early return and cancellation.
struct BreakOnDrop<'a>(Option<&'a AtomicBool>);

impl BreakOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for BreakOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(flag) = self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

impl Producer for BeanstalkProducer {
    /// Pipelines one `put` per payload; counts `INSERTED` replies.
    async fn submit(&self, payloads: Vec<Bytes>) -> Result<usize, LoadError> {
        if payloads.is_empty() {
            return Ok(0);
        }
        let inner = &*self.inner;
        let mut writer = inner.writer.lock().await;
        inner.check()?;
        let guard = BreakOnDrop(Some(&inner.broken));
        let (io, out) = &mut *writer;
        out.clear();
        for p in &payloads {
            encode_put(out, p)?;
        }
        io.write_all(out).await?;
        // Queue for the replies before the next batch may write, so batches read in the order they wrote.
        let mut reader = inner.reader.lock().await;
        drop(writer);
        inner.check()?;
        let mut accepted = 0;
        for _ in &payloads {
            if put_accepted(reader.read_reply().await?)? {
                accepted += 1;
            }
        }
        guard.disarm();
        Ok(accepted)
    }
}

fn encode_put(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), LoadError> {
    write!(out, "put {PRIORITY} 0 {TTR_SECS} {}\r\n", payload.len())?;
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Whether a reply to `put` means the job is ready for delivery; errors on replies `put` never gets.
fn put_accepted(reply: Reply) -> Result<bool, LoadError> {
    match reply {
        Reply::Inserted(_) => Ok(true),
        Reply::Buried(_) | Reply::JobTooBig | Reply::Draining | Reply::ExpectedCrlf => Ok(false),
        other => Err(unexpected("put", &other)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Consumer

/// Reserves jobs over a pool of connections (see the module doc).
pub struct BeanstalkConsumer {
    shared: Arc<Shared>,
    addr: String,
    tube: String,
    /// Size of the previous delivery: a guess of how many jobs the next one finds ready.
    last_batch: usize,
}

impl std::fmt::Debug for BeanstalkConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeanstalkConsumer").field("addr", &self.addr).field("tube", &self.tube).finish_non_exhaustive()
    }
}

/// State shared by a consumer and its ackers.
struct Shared {
    /// Every open connection of the consumer.
    pool: StdMutex<Vec<Arc<Mutex<Slot>>>>,
    /// Unacked job id → the connection that reserved it (the only one that can delete it).
    jobs: StdMutex<HashMap<u64, Arc<Mutex<Slot>>>>,
    /// Free prefetch: one permit per job the consumer may still reserve before acking.
    credits: Semaphore,
}

/// One pooled connection. Its lock is held by `next` for a whole reserve round and by `ack` for a delete
/// round, never across anything else.
struct Slot {
    /// `None` once closed (after an error or a cancelled request); jobs it had reserved are back in the tube.
    conn: Option<Conn>,
    /// Jobs reserved on this connection and not yet claimed by an ack; only zero lets `next` block here.
    unacked: usize,
}

/// Gives `n` permits back to the credits on drop (also when a request is cancelled).
struct Refund<'a> {
    credits: &'a Semaphore,
    n: usize,
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.credits.add_permits(self.n);
        }
    }
}

fn lock<T>(m: &StdMutex<T>) -> StdMutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked (no invariant spans a panic point).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BeanstalkConsumer {
    /// A locked connection holding no unacked jobs: an existing one, else a new one. Closed or out-of-step
    /// connections found on the way are dropped from the pool. Connections busy with an ack are skipped
    /// rather than waited for.
    async fn idle_slot(&self) -> Result<(Arc<Mutex<Slot>>, OwnedMutexGuard<Slot>), LoadError> {
        let slots: Vec<_> = lock(&self.shared.pool).clone();
        for slot in slots {
            let Ok(mut guard) = slot.clone().try_lock_owned() else { continue };
            match &guard.conn {
                Some(conn) if !conn.busy => {
                    if guard.unacked == 0 {
                        return Ok((slot, guard));
                    }
                }
                _ => {
                    // Closing the socket makes beanstalkd release whatever it still had reserved.
                    guard.conn = None;
                    drop(guard);
                    lock(&self.shared.pool).retain(|s| !Arc::ptr_eq(s, &slot));
                }
            }
        }
        let conn = Conn::consumer(&self.addr, &self.tube).await?;
        let slot = Arc::new(Mutex::new(Slot { conn: Some(conn), unacked: 0 }));
        let guard = slot.clone().lock_owned().await;
        lock(&self.shared.pool).push(slot.clone());
        Ok((slot, guard))
    }
}

impl Consumer for BeanstalkConsumer {
    /// The job id.
    type Token = u64;
    type Acker = BeanstalkAcker;

    /// Waits for a free credit, then reserves up to `max` jobs (as many as free credits allow) on one idle
    /// connection. Never `Ok(None)`: a tube does not end.
    async fn next(&mut self, max: usize) -> Result<Option<Vec<Delivery<u64>>>, LoadError> {
        let shared = &*self.shared;
        let first = shared.credits.acquire().await.map_err(|_| LoadError::Backend("consumer closed".into()))?;
        first.forget();
        let mut refund = Refund { credits: &shared.credits, n: 1 };
        // Only acks add permits meanwhile, so what is available now can be taken.
        let extra = shared.credits.available_permits().min(max.saturating_sub(1)).min(u32::MAX as usize);
        if extra > 0 {
            if let Ok(permits) = shared.credits.try_acquire_many(extra as u32) {
                permits.forget();
                refund.n += extra;
            }
        }
        let (slot, mut guard) = self.idle_slot().await?;
        let result = match guard.conn.as_mut() {
            Some(conn) => conn.reserve(refund.n, self.last_batch).await,
            None => Err(LoadError::Backend("beanstalkd connection closed".into())),
        };
        let jobs = match result {
            Ok(jobs) => jobs,
            Err(e) => {
                guard.conn = None;
                drop(guard);
                lock(&shared.pool).retain(|s| !Arc::ptr_eq(s, &slot));
                return Err(e);
            }
        };
        // Counted and mapped before the lock is released, so an ack of these jobs finds the slot busy and
        // `next` never blocks on this connection while they are unacked.
        guard.unacked = jobs.len();
        {
            let mut map = lock(&shared.jobs);
            for (id, _) in &jobs {
                map.insert(*id, slot.clone());
            }
        }
        drop(guard);
        refund.n -= jobs.len().min(refund.n);
        self.last_batch = jobs.len();
        let deliveries = jobs.into_iter().map(|(id, payload)| Delivery { payload, token: id, redelivered: false });
        Ok(Some(deliveries.collect()))
    }

    fn acker(&self) -> BeanstalkAcker {
        BeanstalkAcker { shared: self.shared.clone() }
    }
}

/// Deletes jobs, each on the connection that reserved it.
#[derive(Clone)]
pub struct BeanstalkAcker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BeanstalkAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeanstalkAcker").finish_non_exhaustive()
    }
}

impl Acker for BeanstalkAcker {
    type Token = u64;

    /// Pipelines `delete <id>` per connection: `true` for `DELETED`; `false` for `NOT_FOUND`, for ids this
    /// consumer does not hold (unknown, or already acked) and for jobs whose connection was closed (they are
    /// back in the tube). Frees one prefetch credit per job it takes over.
    async fn ack(&self, tokens: Vec<u64>) -> Result<Vec<bool>, LoadError> {
        let shared = &*self.shared;
        let mut out = vec![false; tokens.len()];
        let mut groups: Vec<(Arc<Mutex<Slot>>, Vec<usize>)> = Vec::new();
        {
            let map = lock(&shared.jobs);
            for (pos, id) in tokens.iter().enumerate() {
                let Some(slot) = map.get(id) else { continue };
                match groups.iter_mut().find(|(s, _)| Arc::ptr_eq(s, slot)) {
                    Some((_, positions)) => positions.push(pos),
                    None => groups.push((slot.clone(), vec![pos])),
                }
            }
        }
        let mut failure = None;
        for (slot, positions) in groups {
            let mut guard = slot.lock().await;
            // Claimed only now, under the connection's lock: a cancelled wait above leaves the jobs mapped,
            // and of two acks of the same id only one claims it.
            let claimed: Vec<usize> = {
                let mut map = lock(&shared.jobs);
                positions
                    .into_iter()
                    .filter(|&pos| {
                        let mine = map.get(&tokens[pos]).is_some_and(|s| Arc::ptr_eq(s, &slot));
                        if mine {
                            map.remove(&tokens[pos]);
                        }
                        mine
                    })
                    .collect()
            };
            if claimed.is_empty() {
                continue;
            }
            guard.unacked = guard.unacked.saturating_sub(claimed.len());
            // Whatever the deletes answer, these jobs are no longer held by this consumer.
            let _refund = Refund { credits: &shared.credits, n: claimed.len() };
            let Some(conn) = guard.conn.as_mut() else { continue };
            let ids: Vec<u64> = claimed.iter().map(|&pos| tokens[pos]).collect();
            match conn.delete(&ids).await {
                Ok(oks) => {
                    for (&pos, ok) in claimed.iter().zip(oks) {
                        out[pos] = ok;
                    }
                }
                Err(e) => {
                    guard.conn = None;
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Connection and protocol

/// One connection used by one task at a time (behind a lock).
struct Conn {
    reader: ReplyReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Encode buffer: a whole pipeline goes out in one write.
    out: Vec<u8>,
    /// Set while a request is outstanding; still set afterwards means it failed or was cancelled midway,
    /// and the replies no longer match the requests.
    busy: bool,
}

impl Conn {
    async fn connect(addr: &str) -> Result<Conn, LoadError> {
        let connect_err = |message: String| LoadError::Connect { addr: addr.to_string(), message };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        // Small pipelined requests must not wait for Nagle.
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn { reader: ReplyReader::new(r), writer: w, out: Vec::with_capacity(4096), busy: false })
    }

    /// A connection that watches only `tube`.
    async fn consumer(addr: &str, tube: &str) -> Result<Conn, LoadError> {
        check_tube(tube)?;
        let mut conn = Conn::connect(addr).await?;
        match conn.command(&format!("watch {tube}")).await? {
            Reply::Watching(_) => {}
            other => return Err(unexpected("watch", &other)),
        }
        // Every connection starts watching `default`; ignoring the only watched tube would be refused.
        if tube != "default" {
            match conn.command("ignore default").await? {
                Reply::Watching(_) => {}
                other => return Err(unexpected("ignore", &other)),
            }
        }
        Ok(conn)
    }

    fn begin(&mut self) -> Result<(), LoadError> {
        if self.busy {
            return Err(LoadError::Backend("beanstalkd connection unusable after an earlier failure".into()));
        }
        self.busy = true;
        self.out.clear();
        Ok(())
    }

    async fn send(&mut self) -> Result<(), LoadError> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// One command line, one reply.
    async fn command(&mut self, line: &str) -> Result<Reply, LoadError> {
        self.begin()?;
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.send().await?;
        let reply = self.reader.read_reply().await?;
        self.busy = false;
        Ok(reply)
    }

    /// Blocks until one job is reserved, then takes up to `n - 1` more that are ready right now, in pipelined
    /// rounds of `reserve-with-timeout 0`: the first round has `first_round` of them (the caller passes how
    /// many the previous call got), each full round doubles the next, and a round with a `TIMED_OUT` ends it.
    /// So a busy tube is emptied in one round trip, and an almost idle one costs one `TIMED_OUT` per call
    /// rather than `n - 1` (with one job per `next`, that was most of the work on both sides).
    async fn reserve(&mut self, n: usize, first_round: usize) -> Result<Vec<(u64, Bytes)>, LoadError> {
        self.begin()?;
        let mut jobs = Vec::with_capacity(n);
        while jobs.is_empty() {
            write!(self.out, "reserve-with-timeout {BLOCK_SECS}\r\n")?;
            self.send().await?;
            match self.reader.read_reply().await? {
                Reply::Reserved { id, body } => jobs.push((id, body)),
                Reply::TimedOut | Reply::DeadlineSoon => {}
                other => return Err(unexpected("reserve-with-timeout", &other)),
            }
        }
        let mut round = first_round.max(1);
        while jobs.len() < n {
            let k = round.min(n - jobs.len());
            for _ in 0..k {
                self.out.extend_from_slice(b"reserve-with-timeout 0\r\n");
            }
            self.send().await?;
            // Every reply must be read, and a job can turn up after a TIMED_OUT: it is then reserved by us.
            let mut full = true;
            for _ in 0..k {
                match self.reader.read_reply().await? {
                    Reply::Reserved { id, body } => jobs.push((id, body)),
                    Reply::TimedOut | Reply::DeadlineSoon => full = false,
                    other => return Err(unexpected("reserve-with-timeout", &other)),
                }
            }
            if !full {
                break;
            }
            round = round.saturating_mul(2);
        }
        self.busy = false;
        Ok(jobs)
    }

    /// Pipelined `delete`s; per id, whether it was deleted.
    async fn delete(&mut self, ids: &[u64]) -> Result<Vec<bool>, LoadError> {
        self.begin()?;
        for id in ids {
            write!(self.out, "delete {id}\r\n")?;
        }
        self.send().await?;
        let mut oks = Vec::with_capacity(ids.len());
        for _ in ids {
            match self.reader.read_reply().await? {
                Reply::Deleted => oks.push(true),
                Reply::NotFound => oks.push(false),
                other => return Err(unexpected("delete", &other)),
            }
        }
        self.busy = false;
        Ok(oks)
    }
}

/// A server reply, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Inserted(u64),
    Buried(u64),
    Reserved {
        id: u64,
        body: Bytes,
    },
    /// `OK <bytes>` and its data (a `stats*` reply, YAML).
    Ok(Bytes),
    Using(String),
    Watching(u64),
    Deleted,
    NotFound,
    TimedOut,
    DeadlineSoon,
    NotIgnored,
    JobTooBig,
    Draining,
    ExpectedCrlf,
}

fn unexpected(command: &str, reply: &Reply) -> LoadError {
    LoadError::Backend(format!("beanstalkd: unexpected reply to {command}: {reply:?}"))
}

/// Reads replies from a byte stream into a buffer.
struct ReplyReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    fn new(io: R) -> Self {
        Self { io, buf: BytesMut::with_capacity(16 * 1024) }
    }

    async fn read_reply(&mut self) -> Result<Reply, LoadError> {
        loop {
            if let Some(reply) = parse_reply(&mut self.buf)? {
                return Ok(reply);
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(LoadError::Backend("beanstalkd closed the connection".into()));
            }
        }
    }
}

/// Takes one complete reply off the front of `buf`; `Ok(None)` (consuming nothing) while it is incomplete.
/// Anything but a well-formed known reply is an error naming the line.
fn parse_reply(buf: &mut BytesMut) -> Result<Option<Reply>, LoadError> {
    let scan = &buf[..buf.len().min(MAX_LINE + 2)];
    let Some(eol) = scan.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            let head = String::from_utf8_lossy(&buf[..64]);
            return Err(LoadError::Backend(format!("beanstalkd: reply line too long: {head:?}...")));
        }
        return Ok(None);
    };
    let raw = &buf[..eol];
    let bad = || LoadError::Backend(format!("beanstalkd: unexpected reply line {:?}", String::from_utf8_lossy(raw)));
    let line = std::str::from_utf8(raw).map_err(|_| bad())?;
    let num = |s: &str| -> Result<u64, LoadError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut words = line.split(' ');
    let word = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    // Replies that carry data: `RESERVED <id> <bytes>` and `OK <bytes>`, then `<data>\r\n`.
    let (head, body_len) = match (word, args.as_slice()) {
        ("RESERVED", [id, len]) => (Reply::Reserved { id: num(id)?, body: Bytes::new() }, Some(num(len)?)),
        ("OK", [len]) => (Reply::Ok(Bytes::new()), Some(num(len)?)),
        ("INSERTED", [id]) => (Reply::Inserted(num(id)?), None),
        ("BURIED", [id]) => (Reply::Buried(num(id)?), None),
        ("USING", [tube]) => (Reply::Using((*tube).to_string()), None),
        ("WATCHING", [n]) => (Reply::Watching(num(n)?), None),
        ("DELETED", []) => (Reply::Deleted, None),
        ("NOT_FOUND", []) => (Reply::NotFound, None),
        ("TIMED_OUT", []) => (Reply::TimedOut, None),
        ("DEADLINE_SOON", []) => (Reply::DeadlineSoon, None),
        ("NOT_IGNORED", []) => (Reply::NotIgnored, None),
        ("JOB_TOO_BIG", []) => (Reply::JobTooBig, None),
        ("DRAINING", []) => (Reply::Draining, None),
        ("EXPECTED_CRLF", []) => (Reply::ExpectedCrlf, None),
        ("OUT_OF_MEMORY" | "INTERNAL_ERROR" | "BAD_FORMAT" | "UNKNOWN_COMMAND", []) => {
            return Err(LoadError::Backend(format!("beanstalkd error: {line}")));
        }
        _ => return Err(bad()),
    };
    let Some(len) = body_len else {
        buf.advance(eol + 2);
        return Ok(Some(head));
    };
    let len = usize::try_from(len).ok().filter(|&l| l <= MAX_BODY).ok_or_else(bad)?;
    let start = eol + 2;
    if buf.len() < start + len + 2 {
        return Ok(None);
    }
    if &buf[start + len..start + len + 2] != b"\r\n" {
        return Err(bad());
    }
    buf.advance(start);
    let data = buf.split_to(len).freeze();
    buf.advance(2);
    Ok(Some(match head {
        Reply::Reserved { id, .. } => Reply::Reserved { id, body: data },
        _ => Reply::Ok(data),
    }))
}

/// Picks the job counts out of a `stats-tube` YAML document (`current-jobs-ready: 3` lines).
#[cfg(test)]
fn parse_tube_stats(yaml: &[u8]) -> TubeStats {
    let mut stats = TubeStats::default();
    for line in String::from_utf8_lossy(yaml).lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let Ok(value) = value.trim().parse::<u64>() else { continue };
        match key.trim() {
            "current-jobs-ready" => stats.ready = value,
            "current-jobs-reserved" => stats.reserved = value,
            "current-jobs-delayed" => stats.delayed = value,
            "current-jobs-buried" => stats.buried = value,
            _ => {}
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use crate::backend::conformance;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use tokio::io::AsyncWriteExt;

    use super::*;

    // --- parser, no sockets ---

    fn parse_all(bytes: &[u8]) -> Result<Option<Reply>, LoadError> {
        parse_reply(&mut BytesMut::from(bytes))
    }

    #[test]
    fn parses_simple_replies() {
        assert_eq!(parse_all(b"INSERTED 42\r\n").expect("ok"), Some(Reply::Inserted(42)));
        assert_eq!(parse_all(b"BURIED 7\r\n").expect("ok"), Some(Reply::Buried(7)));
        assert_eq!(parse_all(b"DELETED\r\n").expect("ok"), Some(Reply::Deleted));
        assert_eq!(parse_all(b"TIMED_OUT\r\n").expect("ok"), Some(Reply::TimedOut));
        assert_eq!(parse_all(b"USING jobs\r\n").expect("ok"), Some(Reply::Using("jobs".into())));
        assert_eq!(parse_all(b"WATCHING 2\r\n").expect("ok"), Some(Reply::Watching(2)));
        assert_eq!(parse_all(b"INSERTED 42").expect("incomplete"), None);
    }

    #[test]
    fn reserved_needs_its_whole_body_and_leaves_the_rest() {
        let whole = b"RESERVED 9 5\r\na\r\nb\x00\r\nDELETED\r\n";
        // Fed a byte at a time, nothing is consumed before the body's CR LF has arrived.
        let mut buf = BytesMut::new();
        for (i, b) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = parse_reply(&mut buf).expect("valid prefix");
            if i + 1 < 21 {
                assert_eq!(got, None, "after {} bytes", i + 1);
            } else {
                assert_eq!(got, Some(Reply::Reserved { id: 9, body: Bytes::from_static(b"a\r\nb\x00") }));
                break;
            }
        }
        buf.extend_from_slice(&whole[21..]);
        assert_eq!(parse_reply(&mut buf).expect("ok"), Some(Reply::Deleted));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_unexpected_lines() {
        let err = |b: &[u8]| match parse_all(b) {
            Err(LoadError::Backend(m)) => m,
            other => panic!("{:?}: expected an error, got {other:?}", String::from_utf8_lossy(b)),
        };
        assert!(err(b"HELLO there\r\n").contains("HELLO there"));
        assert!(err(b"INSERTED\r\n").contains("INSERTED"));
        assert!(err(b"INSERTED 1 2\r\n").contains("INSERTED 1 2"));
        assert!(err(b"INSERTED -1\r\n").contains("INSERTED -1"));
        assert!(err(b"INSERTED +1\r\n").contains("INSERTED +1"));
        assert!(err(b"DELETED 3\r\n").contains("DELETED 3"));
        assert!(err(b"OUT_OF_MEMORY\r\n").contains("OUT_OF_MEMORY"));
        assert!(err(b"BAD_FORMAT\r\n").contains("BAD_FORMAT"));
        // The body must end in CR LF exactly where its length says.
        assert!(err(b"RESERVED 1 2\r\nabc\r\n").contains("RESERVED 1 2"));
        assert!(err(&[b'x'; MAX_LINE + 1]).contains("too long"));
    }

    #[test]
    fn put_replies() {
        assert!(put_accepted(Reply::Inserted(1)).expect("ok"));
        assert!(!put_accepted(Reply::Buried(1)).expect("ok"));
        assert!(!put_accepted(Reply::JobTooBig).expect("ok"));
        assert!(put_accepted(Reply::Deleted).is_err());
        let mut out = Vec::new();
        encode_put(&mut out, b"x\r\ny").expect("encode");
        assert_eq!(out, b"put 1024 0 60 4\r\nx\r\ny\r\n");
    }

    #[tokio::test]
    async fn reader_waits_for_a_reply_split_across_reads() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = ReplyReader::new(client);
        let read = tokio::spawn(async move {
            let first = reader.read_reply().await;
            let second = reader.read_reply().await;
            let third = reader.read_reply().await;
            (first, second, third)
        });
        for part in [&b"RESERVED 12 3\r"[..], b"\nab", b"c\r", b"\nTIMED_", b"OUT\r\nNOPE\r\n"] {
            server.write_all(part).await.expect("write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (first, second, third) = read.await.expect("join");
        assert_eq!(first.expect("reserved"), Reply::Reserved { id: 12, body: Bytes::from_static(b"abc") });
        assert_eq!(second.expect("timed out"), Reply::TimedOut);
        assert!(matches!(third, Err(LoadError::Backend(m)) if m.contains("NOPE")));
    }

    #[tokio::test]
    async fn reader_reports_a_closed_connection() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut reader = ReplyReader::new(client);
        server.write_all(b"RESERVED 1 10\r\nabc").await.expect("write");
        drop(server);
        assert!(matches!(reader.read_reply().await, Err(LoadError::Backend(m)) if m.contains("closed")));
    }

    #[test]
    fn tube_stats_yaml() {
        let yaml = b"---\nname: t\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 3\ncurrent-jobs-reserved: 2\ncurrent-jobs-delayed: 1\ncurrent-jobs-buried: 0\n";
        assert_eq!(parse_tube_stats(yaml), TubeStats { ready: 3, reserved: 2, delayed: 1, buried: 0 });
    }

    #[test]
    fn tube_names() {
        assert!(check_tube("pm-loadtest_1.a(b)$;+/").is_ok());
        for bad in ["", "-x", "a b", "a\r\nput", &"x".repeat(201)] {
            assert!(check_tube(bad).is_err(), "{bad:?}");
        }
    }

    // --- against a real beanstalkd ---

    /// A `beanstalkd` on a free loopback port, killed on drop.
    struct Server {
        child: Child,
        port: u16,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts the server, or `None` (with a notice) when `beanstalkd` is not installed.
    async fn start_server() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let spawned = Command::new("beanstalkd")
            .args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("NOTICE: beanstalkd not installed, skipping the beanstalkd backend test");
                return None;
            }
            Err(e) => panic!("spawn beanstalkd: {e}"),
        };
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "beanstalkd did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    async fn next_within(c: &mut BeanstalkConsumer, max: usize) -> Vec<Delivery<u64>> {
        tokio::time::timeout(Duration::from_secs(10), c.next(max))
            .await
            .expect("deliveries within 10 s")
            .expect("next")
            .expect("tube does not end")
    }

    #[tokio::test]
    async fn submit_consume_ack_roundtrip() {
        let Some(server) = start_server().await else { return };
        let backend = Beanstalk::new(format!("127.0.0.1:{}", server.port), "pm-loadtest");
        assert_eq!(backend.clear().await.expect("clear"), 0);

        let acker = conformance::round_trip(&backend, 1000).await;
        // Acking again (or an id never delivered) is not accepted.
        assert_eq!(acker.ack(vec![1, 999_999]).await.expect("ack"), vec![false, false]);

        let stats = backend.tube_stats().await.expect("stats");
        assert_eq!((stats.ready, stats.reserved), (0, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn acks_do_not_wait_behind_a_blocking_reserve() {
        let Some(server) = start_server().await else { return };
        let backend = Beanstalk::new(format!("127.0.0.1:{}", server.port), "latency");
        let producer = backend.producer(0).await.expect("producer");
        let mut consumer = backend.consumer(0, 100).await.expect("consumer");
        let acker = consumer.acker();
        assert_eq!(producer.submit(vec![Bytes::from_static(b"one")]).await.expect("submit"), 1);
        let first = next_within(&mut consumer, 10).await;
        assert_eq!(first.len(), 1);

        // The tube is empty now: this `next` sits in a blocking reserve.
        let waiting = tokio::spawn(async move {
            let got = next_within(&mut consumer, 10).await;
            (consumer, got)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        assert_eq!(acker.ack(vec![first[0].token]).await.expect("ack"), vec![true]);
        let took = t.elapsed();
        // Behind a blocking reserve the ack would take until its 1 s timeout.
        assert!(took < Duration::from_millis(500), "ack took {took:?}");

        assert_eq!(producer.submit(vec![Bytes::from_static(b"two")]).await.expect("submit"), 1);
        let (_consumer, second) =
            tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("woken").expect("join");
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].payload, Bytes::from_static(b"two"));
        assert_eq!(acker.ack(vec![second[0].token]).await.expect("ack"), vec![true]);
        let stats = backend.tube_stats().await.expect("stats");
        assert_eq!((stats.ready, stats.reserved), (0, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn prefetch_bounds_unacked_jobs() {
        let Some(server) = start_server().await else { return };
        let backend = Beanstalk::new(format!("127.0.0.1:{}", server.port), "prefetch");
        let producer = backend.producer(0).await.expect("producer");
        let payloads = (0..5).map(|i| conformance::payload(0, i)).collect();
        assert_eq!(producer.submit(payloads).await.expect("submit"), 5);
        let mut consumer = backend.consumer(0, 2).await.expect("consumer");
        let acker = consumer.acker();
        let held = next_within(&mut consumer, 10).await;
        assert_eq!(held.len(), 2, "no more than the prefetch");

        let more = tokio::spawn(async move {
            let got = next_within(&mut consumer, 10).await;
            (consumer, got)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!more.is_finished(), "next must wait for an ack while the prefetch is used up");
        assert_eq!(acker.ack(vec![held[0].token]).await.expect("ack"), vec![true]);
        let (mut consumer, got) =
            tokio::time::timeout(Duration::from_secs(5), more).await.expect("woken").expect("join");
        assert_eq!(got.len(), 1, "one credit came back");
        let stats = backend.tube_stats().await.expect("stats");
        // Five put: one acked, two held, two still ready.
        assert_eq!((stats.ready, stats.reserved), (2, 2), "{stats:?}");

        // Drain the rest, never more than two at a time; everything acks.
        assert_eq!(acker.ack(vec![held[1].token, got[0].token]).await.expect("ack"), vec![true; 2]);
        let mut left = 2;
        while left > 0 {
            let batch = next_within(&mut consumer, 10).await;
            assert!(batch.len() <= 2, "batch of {}", batch.len());
            left -= batch.len();
            let n = batch.len();
            assert_eq!(acker.ack(batch.into_iter().map(|d| d.token).collect()).await.expect("ack"), vec![true; n]);
        }
        let stats = backend.tube_stats().await.expect("stats");
        assert_eq!((stats.ready, stats.reserved), (0, 0), "{stats:?}");
    }
}
