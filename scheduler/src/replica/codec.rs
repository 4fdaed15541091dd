//! The raft log's bytes: segment header and frames. A pure codec, no I/O.
//!
//! ```text
//! segment header (24 B): magic "PMRAFT01" | index u64 | crc32c u32 of the 16 bytes before | 4 zero bytes
//! frame:  len u32 | crc32c u32 of the kind and body | kind u8 | body (len - 1 bytes)
//! ```
//!
//! Bodies, all integers little-endian:
//! - `ENTRIES`: partition u32 | count u32 | count × (index u64 | term u64 | type u8 | data_len u32 | data |
//!   context_len u32 | context). The entries are consecutive; the first replaces the partition's entry at its
//!   index and everything after it (raft overwrites a follower's conflicting tail this way).
//! - `HARD_STATE`: partition u32 | term u64 | vote u64 | commit u64.
//! - `CONF_STATE`: partition u32 | four id lists (voters, learners, outgoing voters, next learners), each a
//!   u32 count and that many u64 | auto_leave u8 (0 or 1). The last three are set only during a joint change.
//! - `COMPACTED`: partition u32 | index u64 | term u64: entries up to `index` are gone from the log (they are
//!   applied and held by the state machine); `term` is kept because raft matches on the term of the entry
//!   before the first one it has.

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};

/// First eight bytes of every raft log segment.
pub(crate) const MAGIC: [u8; 8] = *b"PMRAFT01";
/// Size of the segment header; frames start at this offset.
pub(crate) const HEADER_LEN: usize = 24;
/// `len` and `crc32c`.
pub(crate) const FRAME_PREFIX: usize = 8;
/// Largest frame body accepted when reading; a bigger `len` is damage, not a frame.
pub(crate) const MAX_FRAME: usize = 1 << 30;

const ENTRIES: u8 = 1;
const HARD_STATE: u8 = 2;
const CONF_STATE: u8 = 3;
const COMPACTED: u8 = 4;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Frame {
    /// Entries of one partition, consecutive, the first one replacing any at its index.
    Entries { partition: u32, entries: Vec<Entry> },
    /// A partition's term, vote and commit index.
    HardState { partition: u32, state: HardState },
    /// A partition's voters and learners.
    ConfState { partition: u32, state: ConfState },
    /// Entries of a partition up to `index` (whose term was `term`) are gone.
    Compacted { partition: u32, index: u64, term: u64 },
}

/// The 24 header bytes of segment `index`.
pub(crate) fn header(index: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The segment index a header names, or what is wrong with it.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("raft log segment header truncated to {} bytes", bytes.len()));
    }
    if bytes[0..8] != MAGIC {
        return Err("bad magic (not a pipeline-manager raft log segment)".into());
    }
    if le_u32(&bytes[16..20]) != crc32c::crc32c(&bytes[0..16]) {
        return Err("raft log segment header crc mismatch".into());
    }
    Ok(le_u64(&bytes[8..16]))
}

/// Appends one frame to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, frame: &Frame) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_PREFIX]);
    match frame {
        Frame::Entries { partition, entries } => {
            buf.push(ENTRIES);
            buf.extend_from_slice(&partition.to_le_bytes());
            buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                buf.extend_from_slice(&e.index.to_le_bytes());
                buf.extend_from_slice(&e.term.to_le_bytes());
                buf.push(e.get_entry_type() as u8);
                put_bytes(buf, &e.data);
                put_bytes(buf, &e.context);
            }
        }
        Frame::HardState { partition, state } => {
            buf.push(HARD_STATE);
            buf.extend_from_slice(&partition.to_le_bytes());
            for v in [state.term, state.vote, state.commit] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        Frame::ConfState { partition, state } => {
            buf.push(CONF_STATE);
            buf.extend_from_slice(&partition.to_le_bytes());
            for ids in [&state.voters, &state.learners, &state.voters_outgoing, &state.learners_next] {
                buf.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    buf.extend_from_slice(&id.to_le_bytes());
                }
            }
            buf.push(u8::from(state.auto_leave));
        }
        Frame::Compacted { partition, index, term } => {
            buf.push(COMPACTED);
            buf.extend_from_slice(&partition.to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(&term.to_le_bytes());
        }
    }
    let len = (buf.len() - start - FRAME_PREFIX) as u32;
    let crc = crc32c::crc32c(&buf[start + FRAME_PREFIX..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading a frame at some offset found.
#[derive(Debug, PartialEq)]
pub(crate) enum Read {
    /// A whole, intact frame and its size in bytes (prefix included).
    Frame(Frame, usize),
    /// The bytes end before the frame does, or its CRC does not match: a torn write, or damage.
    Torn(String),
    /// Nothing left (the caller drops trailing zeros before reading: they are space a crash left, not frames).
    End,
}

/// Reads the frame at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Read {
    if bytes.is_empty() {
        return Read::End;
    }
    if bytes.len() < FRAME_PREFIX {
        return Read::Torn(format!("{} bytes left, less than a frame prefix", bytes.len()));
    }
    let len = le_u32(&bytes[0..4]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Read::Torn(format!("frame length {len} out of range"));
    }
    let Some(body) = bytes.get(FRAME_PREFIX..FRAME_PREFIX + len) else {
        return Read::Torn(format!("frame of {len} bytes cut short at {}", bytes.len() - FRAME_PREFIX));
    };
    if le_u32(&bytes[4..8]) != crc32c::crc32c(body) {
        return Read::Torn("frame crc mismatch".into());
    }
    match parse(body) {
        Some(frame) => Read::Frame(frame, FRAME_PREFIX + len),
        None => Read::Torn(format!("frame of kind {} does not parse", body[0])),
    }
}

/// Parses a frame body whose CRC matched; `None` if it is malformed.
fn parse(body: &[u8]) -> Option<Frame> {
    let mut r = Reader { bytes: &body[1..] };
    let partition = r.u32()?;
    let frame = match body[0] {
        ENTRIES => {
            let count = r.u32()? as usize;
            // Each entry takes at least 25 bytes; a count beyond that is damage, not a reason to allocate.
            if count > r.bytes.len() / 25 {
                return None;
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let (index, term, kind) = (r.u64()?, r.u64()?, entry_type(r.u8()?)?);
                let data = bytes::Bytes::copy_from_slice(r.bytes()?);
                let context = bytes::Bytes::copy_from_slice(r.bytes()?);
                let mut e = Entry { index, term, data, context, ..Entry::default() };
                e.set_entry_type(kind);
                entries.push(e);
            }
            Frame::Entries { partition, entries }
        }
        HARD_STATE => {
            let state = HardState { term: r.u64()?, vote: r.u64()?, commit: r.u64()?, ..HardState::default() };
            Frame::HardState { partition, state }
        }
        CONF_STATE => {
            let (voters, learners, voters_outgoing, learners_next) = (r.ids()?, r.ids()?, r.ids()?, r.ids()?);
            let auto_leave = match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let state =
                ConfState { voters, learners, voters_outgoing, learners_next, auto_leave, ..ConfState::default() };
            Frame::ConfState { partition, state }
        }
        COMPACTED => Frame::Compacted { partition, index: r.u64()?, term: r.u64()? },
        _ => return None,
    };
    r.bytes.is_empty().then_some(frame)
}

fn entry_type(b: u8) -> Option<EntryType> {
    match b {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

/// A cursor over a frame body; every read checks the length.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.bytes.get(..n)?, self.bytes.get(n..)?);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(le_u64(self.take(8)?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn ids(&mut self) -> Option<Vec<u64>> {
        let n = self.u32()? as usize;
        if n > self.bytes.len() / 8 {
            return None;
        }
        (0..n).map(|_| self.u64()).collect()
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: bytes::Bytes::copy_from_slice(data), ..Entry::default() }
    }

    fn frames() -> Vec<Frame> {
        let hs = HardState { term: 3, vote: 2, commit: 17, ..HardState::default() };
        let cs = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            voters_outgoing: vec![1, 2, 5],
            auto_leave: true,
            ..ConfState::default()
        };
        let mut conf = entry(9, 3, b"change");
        conf.set_entry_type(EntryType::EntryConfChangeV2);
        conf.context = bytes::Bytes::from_static(b"ctx");
        vec![
            Frame::Entries { partition: 7, entries: vec![entry(8, 3, b"records"), conf, entry(10, 3, b"")] },
            Frame::HardState { partition: 7, state: hs },
            Frame::ConfState { partition: 1, state: cs },
            Frame::Compacted { partition: 2, index: 100, term: 4 },
            Frame::Entries { partition: 0, entries: vec![] },
        ]
    }

    #[test]
    fn frames_read_back_as_written() {
        let mut buf = Vec::new();
        for f in frames() {
            encode(&mut buf, &f);
        }
        let mut at = 0;
        let mut back = Vec::new();
        while let Read::Frame(f, n) = decode(&buf[at..]) {
            back.push(f);
            at += n;
        }
        assert_eq!(back, frames());
        assert_eq!(at, buf.len());
        assert!(matches!(decode(&[0u8; 64]), Read::Torn(_)), "zeros are no frame (the log file drops them)");
        assert_eq!(decode(&[]), Read::End);
    }

    #[test]
    fn a_cut_or_flipped_frame_is_torn_never_misread() {
        let mut buf = Vec::new();
        encode(&mut buf, &frames()[0]);
        for cut in 1..buf.len() {
            assert!(matches!(decode(&buf[..cut]), Read::Torn(_)), "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(!matches!(decode(&bad), Read::Frame(..)), "flip at {i} read as a frame");
        }
    }

    #[test]
    fn headers_check_their_magic_and_crc() {
        let h = header(42);
        assert_eq!(decode_header(&h), Ok(42));
        let mut bad = h;
        bad[9] ^= 1;
        assert!(decode_header(&bad).is_err());
        assert!(decode_header(&h[..10]).is_err());
        assert!(decode_header(b"PMWAL001xxxxxxxxxxxxxxxx").is_err());
    }
}
