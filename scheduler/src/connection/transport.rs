//! What a connection reads from and writes to: plain TCP (readiness-based: no buffer of its own, see
//! docs/architecture.md) or TLS over TCP (rustls keeps its own record buffers).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// A connection's socket.
pub trait Transport: AsyncWrite + Unpin + Send + 'static {
    /// Ready once a read may find bytes: the connection takes its read buffer only then, so an idle plain
    /// connection holds none.
    fn poll_readable(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// Reads what is available into `buf` (which has spare capacity); `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;
    /// Writes some of `buf`; `Pending` when the socket takes nothing now.
    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Pushes out anything written but held back (TLS records); plain TCP holds nothing.
    fn poll_push(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    /// The client's certificate (DER, the leaf), verified under mutual TLS; `None` without TLS or without a
    /// client certificate.
    fn peer_certificate(&self) -> Option<&[u8]> {
        None
    }
}

impl Transport for TcpStream {
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        loop {
            match self.try_read_buf(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                // try_read cleared the readiness; polling it again registers for the next one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.poll_read_ready(cx))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A TLS connection, boxed: its session state is large, and plain connections should not pay for it.
pub type TlsStream = Box<tokio_rustls::server::TlsStream<TcpStream>>;

impl Transport for TlsStream {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(self.as_mut()), cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.as_mut()).poll_write(cx, buf)
    }

    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.as_mut()).poll_flush(cx)
    }

    fn peer_certificate(&self) -> Option<&[u8]> {
        self.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|leaf| leaf.as_ref())
    }
}

/// An in-process pipe: the HTTP API's connections to its own node.
impl Transport for tokio::io::DuplexStream {
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self).poll_write(cx, buf)
    }

    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self).poll_flush(cx)
    }
}
