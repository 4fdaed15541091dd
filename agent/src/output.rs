//! Bounded output: a command may print without end, and what is kept of it never grows past its bound.
//!
//! `Tail` keeps the last bytes of a stream (the runner's `stdoutTail` / `stderrTail`, the stderr the gRPC
//! executor logs); `Head` keeps the first bytes and counts the rest (the stdout one `ExecuteCommands` call
//! returns). Both take chunks as they come and cost O(bound) memory whatever the stream's length.

/// Keeps the last `keep` bytes of a stream.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    keep: usize,
    bytes: Vec<u8>,
}

impl Tail {
    /// A tail of at most `keep` bytes.
    pub(crate) fn new(keep: usize) -> Tail {
        Tail { keep, bytes: Vec::new() }
    }

    /// Appends a chunk, dropping what falls out of the window (amortised: trims once twice the window).
    pub(crate) fn push(&mut self, data: &[u8]) {
        if data.len() >= self.keep {
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[data.len() - self.keep..]);
            return;
        }
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.keep.saturating_mul(2).max(8192) {
            self.bytes.drain(..self.bytes.len() - self.keep);
        }
    }

    /// The kept bytes as (lossy) UTF-8.
    pub(crate) fn into_string(mut self) -> String {
        if self.bytes.len() > self.keep {
            self.bytes.drain(..self.bytes.len() - self.keep);
        }
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Keeps the first `keep` bytes of a stream and counts the bytes after them.
#[cfg(feature = "exec-grpc")]
#[derive(Debug, Default)]
pub(crate) struct Head {
    keep: usize,
    bytes: Vec<u8>,
    dropped: u64,
}

#[cfg(feature = "exec-grpc")]
impl Head {
    /// A head of at most `keep` bytes.
    pub(crate) fn new(keep: usize) -> Head {
        Head { keep, bytes: Vec::new(), dropped: 0 }
    }

    /// Appends what still fits of a chunk and counts the rest.
    pub(crate) fn push(&mut self, data: &[u8]) {
        let take = data.len().min(self.keep.saturating_sub(self.bytes.len()));
        self.bytes.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// Bytes that did not fit.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept bytes as (lossy) UTF-8.
    pub(crate) fn into_string(self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"abc");
        t.push(b"def");
        assert_eq!(t.into_string(), "cdef");
        let mut t = Tail::new(4);
        t.push(b"0123456789");
        t.push(b"x");
        assert_eq!(t.into_string(), "789x");
        let mut t = Tail::new(3);
        for _ in 0..10_000 {
            t.push(b"ab");
        }
        assert_eq!(t.into_string(), "bab");
    }

    #[cfg(feature = "exec-grpc")]
    #[test]
    fn head_keeps_the_first_bytes_and_counts_the_rest() {
        let mut h = Head::new(4);
        h.push(b"abc");
        h.push(b"def");
        h.push(b"gh");
        assert_eq!(h.dropped(), 4);
        assert_eq!(h.into_string(), "abcd");
        let mut h = Head::new(0);
        h.push(b"x");
        assert_eq!((h.dropped(), h.into_string().as_str()), (1, ""));
    }
}
