//! A connection's outbox, and the node-wide registry of connections that enforces the idle timeout and
//! closes connections at shutdown.
//!
//! Why not a tokio mpsc channel: an unbounded channel allocates its first block of 32 slots up front, a few KiB
//! per connection even when nothing is ever sent. The outbox is a mutex around a `Vec` that holds no memory
//! while empty, plus one waker: the connection task takes the whole batch at once, so a burst costs one lock.
//!
//! Why not a timer per connection: a tokio `Sleep` lives inside the connection's future (about a hundred bytes
//! each), and re-arming it on every read takes the timer wheel's lock on the hot path. Instead one sweeper per
//! node ticks a coarse clock; a connection stamps the tick of its last read, and the sweeper flags and wakes
//! the ones silent for longer than the idle timeout.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{ConnId, Outbound};
use crate::idmap::IdMap;

/// The receiver is gone: sends fail.
const CLOSED: u8 = 1;
/// The sweeper saw no read for longer than the idle timeout.
const IDLE: u8 = 2;
/// The node is shutting down.
const SHUTDOWN: u8 = 4;

/// What a connection shares with its senders and the registry.
struct Shared {
    queue: Mutex<Vec<Outbound>>,
    /// The queue is not empty (changed under its lock; read without it).
    pending: AtomicBool,
    waker: AtomicWaker,
    flags: AtomicU8,
    /// Registry tick of the connection's last read. 32 bits (compared with wrapping arithmetic) keep the whole
    /// allocation at 80 bytes instead of 96.
    last_read: AtomicU32,
}

/// Sender side of a connection's outbox: cheap to clone, never blocks (unbounded, like the replies it carries:
/// what a connection may have in flight is bounded elsewhere).
#[derive(Clone)]
pub struct OutTx(Arc<Shared>);

/// [`OutTx::send`] found the connection closed; the message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Debug for OutTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutTx").field("flags", &self.0.flags.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl OutTx {
    /// True when both handles lead to the same connection.
    pub fn same_channel(&self, other: &OutTx) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Queues `msg` for the connection; drops it if the connection has closed.
    pub fn send(&self, msg: Outbound) -> Result<(), Closed> {
        if self.0.flags.load(Ordering::Acquire) & CLOSED != 0 {
            return Err(Closed);
        }
        let was_empty = {
            let mut q = self.0.queue.lock();
            let was_empty = q.is_empty();
            q.push(msg);
            self.0.pending.store(true, Ordering::Release);
            was_empty
        };
        // A non-empty queue has already woken the connection, which takes everything queued when it runs.
        if was_empty {
            self.0.waker.wake();
        }
        Ok(())
    }

    /// True once the connection has stopped taking messages.
    pub fn is_closed(&self) -> bool {
        self.0.flags.load(Ordering::Acquire) & CLOSED != 0
    }
}

/// Receiver side of an outbox, owned by the connection task. Dropping it closes the outbox.
pub struct OutRx(Arc<Shared>);

/// A new outbox.
pub fn channel() -> (OutTx, OutRx) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::new()),
        pending: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        flags: AtomicU8::new(0),
        last_read: AtomicU32::new(0),
    });
    (OutTx(shared.clone()), OutRx(shared))
}

impl OutRx {
    /// Wakes `waker` on the next send, idle timeout or shutdown. Call before [`OutRx::take`], or a send in
    /// between is missed.
    pub fn register(&self, waker: &Waker) {
        self.0.waker.register(waker);
    }

    /// Swaps everything queued into `batch` (which must be empty; its capacity is handed to the senders).
    pub fn take(&self, batch: &mut Vec<Outbound>) {
        let mut q = self.0.queue.lock();
        std::mem::swap(&mut *q, batch);
        self.0.pending.store(false, Ordering::Release);
    }

    /// True when something is queued (a peek without the lock; [`OutRx::take`] is what counts).
    pub fn has_queued(&self) -> bool {
        self.0.pending.load(Ordering::Acquire)
    }

    /// Gives back the queue's memory if it is empty (the connection is going idle).
    pub fn shrink(&self) {
        let mut q = self.0.queue.lock();
        if q.is_empty() {
            *q = Vec::new();
        }
    }

    /// Stops taking messages: later sends fail and what is queued is dropped.
    pub fn close(&self) {
        self.0.flags.fetch_or(CLOSED, Ordering::AcqRel);
        let dropped = {
            let mut q = self.0.queue.lock();
            self.0.pending.store(false, Ordering::Release);
            std::mem::take(&mut *q)
        };
        drop(dropped);
    }

    /// Records a read at the registry's current tick (the idle timeout counts from here).
    pub fn touch(&self, registry: &Registry) {
        let now = registry.clock.load(Ordering::Relaxed);
        if self.0.last_read.load(Ordering::Relaxed) != now {
            self.0.last_read.store(now, Ordering::Relaxed);
        }
    }

    /// True when the node is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.0.flags.load(Ordering::Acquire) & SHUTDOWN != 0
    }

    /// True when the connection has been silent for longer than the idle timeout. The sweeper's flag is checked
    /// against the last read again: a read may have come after the sweep.
    pub fn idle_expired(&self, registry: &Registry) -> bool {
        if self.0.flags.load(Ordering::Acquire) & IDLE == 0 {
            return false;
        }
        if registry.expired(self.0.last_read.load(Ordering::Relaxed)) {
            return true;
        }
        self.0.flags.fetch_and(!IDLE, Ordering::AcqRel);
        false
    }

    /// Waits for the next message, one at a time (for tests; the connection takes whole batches).
    pub async fn recv(&mut self) -> Option<Outbound> {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            self.register(cx.waker());
            let mut q = self.0.queue.lock();
            if !q.is_empty() {
                let msg = q.remove(0);
                self.0.pending.store(!q.is_empty(), Ordering::Release);
                return Poll::Ready(Some(msg));
            }
            // Only this receiver and the registry can hold the outbox without being a sender.
            if Arc::strong_count(&self.0) == 1 {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for OutRx {
    fn drop(&mut self) {
        self.close();
    }
}

/// The node's open connections (after their handshake), for the idle sweep and shutdown.
pub struct Registry {
    conns: Mutex<IdMap<ConnId, Arc<Shared>>>,
    /// Ticks since start (wrapping); a connection's last read is stamped with it.
    clock: AtomicU32,
    tick: Duration,
    /// Silence longer than this many whole ticks is idle (at most 2^31: differences are taken wrapping).
    idle_ticks: u32,
}

impl Registry {
    /// A registry closing connections silent for longer than `idle_timeout`. The sweep runs 16 times per idle
    /// timeout (at most once a second), so a silent connection is closed between `idle_timeout` and about
    /// `idle_timeout` + 2 ticks after its last read.
    pub fn new(idle_timeout: Duration) -> Self {
        let tick = (idle_timeout / 16).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let idle_ticks = idle_timeout.as_nanos().div_ceil(tick.as_nanos()).min(u128::from(u32::MAX / 2)) as u32;
        Registry { conns: Mutex::new(IdMap::default()), clock: AtomicU32::new(0), tick, idle_ticks }
    }

    /// Whether a connection whose last read was stamped `last` has been silent for too long. A read during
    /// tick `last` may have happened at its very end, so one more tick must pass.
    fn expired(&self, last: u32) -> bool {
        self.clock.load(Ordering::Relaxed).wrapping_sub(last) > self.idle_ticks
    }

    /// Adds a connection (after its handshake); it counts as read now. Flags it at once if shutdown has begun.
    pub fn add(&self, id: ConnId, rx: &OutRx, shutdown: &CancellationToken) {
        rx.touch(self);
        self.conns.lock().insert(id, rx.0.clone());
        if shutdown.is_cancelled() {
            rx.0.flags.fetch_or(SHUTDOWN, Ordering::AcqRel);
        }
    }

    /// Removes a connection.
    pub fn remove(&self, id: ConnId) {
        let removed = self.conns.lock().remove(&id);
        drop(removed);
    }

    /// Open (registered) connections.
    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }

    /// True when no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn flag_where(&self, flag: u8, pred: impl Fn(&Shared) -> bool) {
        let conns = self.conns.lock();
        for shared in conns.values() {
            if pred(shared) && shared.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0 {
                shared.waker.wake();
            }
        }
    }

    /// Ticks the clock and wakes silent connections until `shutdown` is cancelled, then flags every connection
    /// for shutdown and returns. Also returns when the registry is the last reference (the node is gone).
    pub async fn sweep(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => {
                    self.flag_where(SHUTDOWN, |_| true);
                    return;
                }
            }
            if Arc::strong_count(&self) == 1 {
                return;
            }
            self.clock.fetch_add(1, Ordering::Relaxed);
            self.flag_where(IDLE, |s| self.expired(s.last_read.load(Ordering::Relaxed)));
        }
    }
}
