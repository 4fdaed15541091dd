//! The connection's socket side: reading frames into a buffer taken only while bytes are there, and writing
//! what the outbox holds (merging replies in parts) with one write.
//!
//! [`Conn`] is what a connection task owns while it waits: the socket, its outbox, and nothing else; its
//! buffers live in [`Busy`], boxed and dropped whenever the connection is idle. `poll_serve` is the serving
//! loop: replies first, then every whole frame already read (each handed to [`crate::handlers::dispatch`]),
//! then more bytes.

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pm_protocol::codec::{decode_frame, encode_frame};
use pm_protocol::{Envelope, WireError};

use super::transport::Transport;
use crate::handlers::{self, ConnCtx};
use crate::idmap::IdMap;
use crate::metrics as m;
use crate::outbox::{Merge, OutRx, Outbound};

/// Room reserved for a read: the kernel hands over at most this much per call.
const READ_CHUNK: usize = 8 * 1024;
/// Frames handled in one poll before the task yields to the others.
const FRAME_BUDGET: usize = 256;

/// Why the serving loop ended.
pub(super) enum Exit {
    /// The peer closed (or reset) its side.
    Eof,
    /// A frame could not be decoded.
    Wire(WireError),
    /// A handler asked to close (it has sent its error already).
    Handler,
    /// No frame for the idle timeout.
    Idle,
    /// The node is shutting down.
    Shutdown,
    /// The outbox was closed (a `Close` was queued) and everything before it is written.
    Closed,
    /// Writing failed: the socket is broken, nothing more can be said.
    WriteFailed,
}

/// What the connection task owns while it waits: the socket, its outbox, and nothing else.
pub(super) struct Conn<S> {
    pub(super) stream: S,
    pub(super) rx: OutRx,
    /// Everything a connection needs only while it has work: `None` when idle.
    pub(super) busy: Option<Box<Busy>>,
    pub(super) max_frame: usize,
    /// A `Close` was taken from the outbox: nothing after it is written.
    pub(super) closed: bool,
}

/// A connection's buffers and replies in progress, boxed so that an idle connection's future does not carry
/// them. Each buffer holds memory only while there are bytes in it.
#[derive(Default)]
pub(super) struct Busy {
    /// Bytes read and not yet decoded.
    pub(super) rbuf: BytesMut,
    /// Encoded frames not yet written.
    pub(super) wbuf: BytesMut,
    /// Messages taken from the outbox, being encoded (kept between batches while busy).
    batch: Vec<Outbound>,
    /// The outbox has been given `batch`'s capacity since the last release.
    lent: bool,
    /// Replies waiting for more parts, by request id.
    merges: IdMap<u64, Merge>,
    /// Since when more than the write bound has waited with the socket taking nothing.
    stalled_since: Option<tokio::time::Instant>,
}

/// `--max-write-buffer-bytes` and `--write-stall-timeout`: a connection with more than `bytes` unwritten that
/// takes nothing for `stall` is closed (`bytes` 0: never).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteBound {
    pub(crate) bytes: usize,
    pub(crate) stall: Duration,
}

impl WriteBound {
    const NONE: WriteBound = WriteBound { bytes: 0, stall: Duration::ZERO };
}

impl Busy {
    /// Turns one outbox message into the frame to write now, if any; `Err(())` for `Close`.
    fn assemble(&mut self, msg: Outbound, inflight: &mut usize) -> Result<Option<Envelope>, ()> {
        let finish = |merge: Merge, request_id: u64, inflight: &mut usize| {
            if merge.holds_slot {
                *inflight = inflight.saturating_sub(1);
            }
            merge.finish(request_id)
        };
        Ok(match msg {
            Outbound::Frame(env) => Some(env),
            Outbound::Begin { request_id, merge } => {
                if merge.parts == 0 {
                    Some(finish(merge, request_id, inflight))
                } else {
                    self.merges.insert(request_id, merge);
                    None
                }
            }
            Outbound::Part { request_id, part } => match self.merges.get_mut(&request_id) {
                Some(merge) => {
                    merge.add(part);
                    if merge.parts > 0 {
                        None
                    } else {
                        self.merges.remove(&request_id).map(|m| finish(m, request_id, inflight))
                    }
                }
                None => None,
            },
            Outbound::Close => return Err(()),
        })
    }
}

impl<S: Transport> Conn<S> {
    /// Takes everything queued in the outbox, encodes it (merging reply parts), and writes what the socket
    /// takes. `Err` when writing failed.
    /// More than `bound.bytes` left unwritten while the socket takes nothing for `bound.stall` is an error: the
    /// peer stopped reading. (A burst over the bound that the peer keeps reading is fine.)
    fn pump_out(&mut self, cx: &mut Context<'_>, inflight: &mut usize, bound: WriteBound) -> io::Result<()> {
        if !self.closed {
            self.rx.register(cx.waker());
            let max_frame = self.max_frame;
            if self.rx.has_queued() {
                let busy = self.busy.get_or_insert_with(Default::default);
                busy.lent |= busy.batch.capacity() > 0;
                self.rx.take(&mut busy.batch);
                let mut batch = std::mem::take(&mut busy.batch);
                for msg in batch.drain(..) {
                    match busy.assemble(msg, inflight) {
                        Ok(None) => {}
                        Ok(Some(env)) => {
                            if let Err(e) = encode_frame(&env, max_frame, &mut busy.wbuf) {
                                // A reply the peer would refuse anyway; the connection cannot go on without it.
                                tracing::warn!("cannot encode a frame: {e}");
                                return Err(io::Error::other(e.to_string()));
                            }
                        }
                        Err(()) => {
                            self.closed = true;
                            self.rx.close();
                            break;
                        }
                    }
                }
                busy.batch = batch;
            }
        }
        let Some(busy) = self.busy.as_mut() else {
            // Nothing of ours is unwritten, but a TLS session may still hold records the socket did not take.
            return match self.stream.poll_push(cx) {
                Poll::Ready(Err(e)) => Err(e),
                _ => Ok(()),
            };
        };
        while !busy.wbuf.is_empty() {
            match self.stream.poll_send(cx, &busy.wbuf) {
                Poll::Pending => {
                    if bound.bytes > 0 && busy.wbuf.len() > bound.bytes {
                        let now = tokio::time::Instant::now();
                        let since = *busy.stalled_since.get_or_insert(now);
                        if now.duration_since(since) >= bound.stall {
                            metrics::counter!(m::REFUSED, "reason" => "slow_consumer").increment(1);
                            let unwritten = busy.wbuf.len();
                            tracing::warn!(
                                unwritten,
                                "closing a connection that stopped reading (--max-write-buffer-bytes)"
                            );
                            return Err(io::Error::other("slow consumer"));
                        }
                    }
                    return Ok(());
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    busy.wbuf.advance(n);
                    busy.stalled_since = None;
                }
            }
        }
        match self.stream.poll_push(cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads what the socket has into the read buffer (allocated only now that bytes are there).
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        std::task::ready!(self.stream.poll_readable(cx))?;
        let rbuf = &mut self.busy.get_or_insert_with(Default::default).rbuf;
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
            rbuf.reserve(READ_CHUNK);
        }
        self.stream.poll_fill(cx, rbuf)
    }

    /// The next whole frame already read, if any.
    fn decode(&mut self) -> Result<Option<Envelope>, WireError> {
        match self.busy.as_mut() {
            Some(busy) => decode_frame(&mut busy.rbuf, self.max_frame),
            None => Ok(None),
        }
    }

    /// Gives memory back once it holds nothing: the connection is about to wait. Buffers emptied by `advance`
    /// or `split_to` can report no capacity while still holding their allocation, so they are replaced
    /// whenever they are empty.
    fn release(&mut self) {
        let Some(busy) = self.busy.as_mut() else { return };
        if busy.lent {
            self.rx.shrink();
            busy.lent = false;
        }
        if busy.rbuf.is_empty() && busy.wbuf.is_empty() && busy.merges.is_empty() {
            self.busy = None;
            return;
        }
        if busy.rbuf.is_empty() {
            busy.rbuf = BytesMut::new();
        }
        if busy.wbuf.is_empty() {
            busy.wbuf = BytesMut::new();
        }
        busy.batch = Vec::new();
    }

    /// The next frame (for the handshake: nothing is written yet). `None` at end of stream.
    pub(super) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Envelope, WireError>>> {
        loop {
            match self.decode() {
                Ok(Some(env)) => return Poll::Ready(Some(Ok(env))),
                Ok(None) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(WireError::Io(e)))),
                Poll::Pending => {
                    self.release();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Serves requests until the connection must close: replies first (they free in-flight slots and are what
    /// the peer waits for), then every whole frame already read, then more bytes from the socket.
    pub(super) fn poll_serve(&mut self, cx: &mut Context<'_>, ctx: &mut ConnCtx) -> Poll<Exit> {
        let limit = ctx.server.cfg.max_inflight_per_conn;
        let mut frames = 0;
        loop {
            let bound =
                WriteBound { bytes: ctx.server.cfg.max_write_buffer_bytes, stall: ctx.server.cfg.write_stall_timeout };
            if self.pump_out(cx, &mut ctx.inflight, bound).is_err() {
                return Poll::Ready(Exit::WriteFailed);
            }
            if self.closed {
                return Poll::Ready(Exit::Closed);
            }
            if self.rx.shutting_down() {
                return Poll::Ready(Exit::Shutdown);
            }
            if frames >= FRAME_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut handled = false;
            while ctx.inflight < limit {
                match self.decode() {
                    Ok(Some(env)) => {
                        if !handlers::dispatch(ctx, env) {
                            return Poll::Ready(Exit::Handler);
                        }
                        handled = true;
                        frames += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return Poll::Ready(Exit::Wire(e)),
                }
            }
            if handled {
                // Write their replies before reading on.
                continue;
            }
            if ctx.inflight >= limit {
                // Not reading: waiting for replies (the outbox wakes us), and the silence is ours, not the peer's.
                self.rx.touch(&ctx.server.conns);
                return Poll::Pending;
            }
            if self.rx.idle_expired(&ctx.server.conns) {
                return Poll::Ready(Exit::Idle);
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Exit::Eof),
                Poll::Ready(Ok(_)) => self.rx.touch(&ctx.server.conns),
                Poll::Ready(Err(e)) => return Poll::Ready(Exit::Wire(WireError::Io(e))),
                Poll::Pending => {
                    self.release();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes everything queued up to the `Close`, then half-closes the socket.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inflight = 0;
        self.pump_out(cx, &mut inflight, WriteBound::NONE)?;
        if self.closed && self.busy.as_ref().is_none_or(|b| b.wbuf.is_empty()) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}
