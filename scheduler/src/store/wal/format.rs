//! The WAL's bytes: segment header and record frames. A pure codec, no I/O.
//!
//! Keeping the layout in one file with no I/O means recovery, the writer and compaction all agree on it,
//! and it can be tested byte by byte. The layout itself is drawn in the [`super`] module docs.

use crate::store::{Record, StoreError};

/// First eight bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"PMWAL001";
/// Version of the layout below; bumped on any incompatible change.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the segment header; records start at this offset.
pub(crate) const HEADER_LEN: usize = 48;
/// `len` and `crc32c`: the bytes in front of what `len` counts.
pub(crate) const FRAME_PREFIX: usize = 8;
/// `type` and `seq`: the fixed part that `len` counts.
const FIXED: usize = 9;
/// Smallest possible `len`: type, seq and a one-byte sync lag (a checkpoint).
pub(crate) const MIN_LEN: usize = FIXED + 1;

/// Record type bytes. 1..=5 and 9 mirror [`Record`]; 6..=8 are written by the WAL itself.
mod kind {
    pub const ENQUEUE: u8 = 1;
    pub const ATTEMPT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const DEAD_LETTER: u8 = 4;
    pub const REDRIVE: u8 = 5;
    pub const SNAPSHOT: u8 = 6;
    pub const KEY_CARRY: u8 = 7;
    pub const CHECKPOINT: u8 = 8;
    pub const FINISH: u8 = 9;
    pub const GROUP: u8 = 10;
    pub const MAX: u8 = 10;
}

/// The fixed header at offset 0 of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Index in the file name; segments are read in this order.
    pub index: u64,
    /// `seq` of the first record this segment holds (or will hold).
    pub base_seq: u64,
    /// Largest task id ever appended to the store when this segment was created.
    pub task_id_floor: u64,
}

impl SegmentHeader {
    /// The 48 header bytes.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.index.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        h[32..40].copy_from_slice(&self.task_id_floor.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..40]);
        h[40..44].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Parses and checks a header; the error says what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!("segment header truncated to {} bytes", bytes.len()));
        }
        if bytes[0..8] != MAGIC {
            return Err("bad magic (not a pipeline-manager WAL segment)".into());
        }
        let crc = le_u32(&bytes[40..44]);
        if crc != crc32c::crc32c(&bytes[0..40]) {
            return Err("segment header crc mismatch".into());
        }
        let version = le_u32(&bytes[8..12]);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported format version {version} (this build reads {FORMAT_VERSION})"));
        }
        let header_len = le_u32(&bytes[12..16]);
        if header_len as usize != HEADER_LEN {
            return Err(format!("unexpected header length {header_len}"));
        }
        Ok(SegmentHeader {
            index: le_u64(&bytes[16..24]),
            base_seq: le_u64(&bytes[24..32]),
            task_id_floor: le_u64(&bytes[32..40]),
        })
    }
}

/// An idempotency key as stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdemRef<'a> {
    /// The key.
    pub key: &'a str,
    /// Expiry, ms since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// One decoded (or to-be-encoded) record payload, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    /// [`Record::Enqueue`].
    Enqueue { task_id: u64, idem: Option<IdemRef<'a>>, body: &'a [u8] },
    /// [`Record::Attempt`].
    Attempt { task_id: u64, attempts: u32 },
    /// [`Record::Ack`].
    Ack { task_id: u64 },
    /// [`Record::DeadLetter`].
    DeadLetter { task_id: u64, reason: &'a str },
    /// [`Record::Redrive`].
    Redrive { task_id: u64 },
    /// Compaction: the whole current state of a live task, replacing whatever came before.
    Snapshot { task_id: u64, attempts: u32, dead: Option<&'a str>, idem: Option<IdemRef<'a>>, body: &'a [u8] },
    /// Compaction: an unexpired key whose task is gone.
    KeyCarry { task_id: u64, idem: IdemRef<'a> },
    /// Proof that every record before it was synced (written when idle).
    Checkpoint,
    /// [`Record::Finish`]; compaction carries a kept result forward by writing it again.
    Finish { task_id: u64, expires_unix_ms: u64, body: &'a [u8] },
    /// [`Record::Group`]: the next `count` records are applied all together or not at all.
    Group { count: u32 },
}

impl<'a> Entry<'a> {
    /// Borrows a caller's record.
    pub(crate) fn from_record(r: &'a Record) -> Self {
        match r {
            Record::Enqueue { task_id, body, idempotency } => Entry::Enqueue {
                task_id: *task_id,
                idem: idempotency.as_ref().map(|k| IdemRef { key: k.key.as_str(), expires_unix_ms: k.expires_unix_ms }),
                body: body.as_ref(),
            },
            Record::Attempt { task_id, attempts } => Entry::Attempt { task_id: *task_id, attempts: *attempts },
            Record::Ack { task_id } => Entry::Ack { task_id: *task_id },
            Record::DeadLetter { task_id, reason } => Entry::DeadLetter { task_id: *task_id, reason: reason.as_str() },
            Record::Redrive { task_id } => Entry::Redrive { task_id: *task_id },
            Record::Finish { task_id, expires_unix_ms, body } => {
                Entry::Finish { task_id: *task_id, expires_unix_ms: *expires_unix_ms, body: body.as_ref() }
            }
            Record::Group { count } => Entry::Group { count: *count },
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Entry::Enqueue { .. } => kind::ENQUEUE,
            Entry::Attempt { .. } => kind::ATTEMPT,
            Entry::Ack { .. } => kind::ACK,
            Entry::DeadLetter { .. } => kind::DEAD_LETTER,
            Entry::Redrive { .. } => kind::REDRIVE,
            Entry::Snapshot { .. } => kind::SNAPSHOT,
            Entry::KeyCarry { .. } => kind::KEY_CARRY,
            Entry::Checkpoint => kind::CHECKPOINT,
            Entry::Finish { .. } => kind::FINISH,
            Entry::Group { .. } => kind::GROUP,
        }
    }
}

/// Appends one framed record to `buf` and returns its encoded size.
///
/// `lag` is `seq - durable_before`: every record with a seq below `seq - lag` had been synced when this one
/// was written. Recovery uses it to tell a torn tail from damaged durable data.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, lag: u64, entry: &Entry<'_>) -> Result<usize, StoreError> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_PREFIX]);
    buf.push(entry.kind());
    buf.extend_from_slice(&seq.to_le_bytes());
    put_varint(buf, lag);
    let ok = match *entry {
        Entry::Enqueue { task_id, idem, body } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            buf.push(u8::from(idem.is_some()));
            let ok = idem.map_or(Ok(()), |k| put_idem(buf, k));
            buf.extend_from_slice(body);
            ok
        }
        Entry::Attempt { task_id, attempts } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            buf.extend_from_slice(&attempts.to_le_bytes());
            Ok(())
        }
        Entry::Ack { task_id } | Entry::Redrive { task_id } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            Ok(())
        }
        Entry::DeadLetter { task_id, reason } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            buf.extend_from_slice(reason.as_bytes());
            Ok(())
        }
        Entry::Snapshot { task_id, attempts, dead, idem, body } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            buf.extend_from_slice(&attempts.to_le_bytes());
            buf.push(u8::from(idem.is_some()) | (u8::from(dead.is_some()) << 1));
            let ok = idem.map_or(Ok(()), |k| put_idem(buf, k));
            if let Some(reason) = dead {
                buf.extend_from_slice(&(reason.len() as u32).to_le_bytes());
                buf.extend_from_slice(reason.as_bytes());
            }
            buf.extend_from_slice(body);
            ok
        }
        Entry::KeyCarry { task_id, idem } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            put_idem(buf, idem)
        }
        Entry::Checkpoint => Ok(()),
        Entry::Finish { task_id, expires_unix_ms, body } => {
            buf.extend_from_slice(&task_id.to_le_bytes());
            buf.extend_from_slice(&expires_unix_ms.to_le_bytes());
            buf.extend_from_slice(body);
            Ok(())
        }
        Entry::Group { count } => {
            buf.extend_from_slice(&count.to_le_bytes());
            Ok(())
        }
    };
    let total = buf.len() - start;
    let checked = ok.and_then(|()| {
        u32::try_from(total - FRAME_PREFIX)
            .map_err(|_| StoreError::RecordTooLarge { len: total, max: u32::MAX as usize })
    });
    let len = match checked {
        Ok(len) => len,
        Err(e) => {
            buf.truncate(start);
            return Err(e);
        }
    };
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &buf[start + FRAME_PREFIX..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(total)
}

fn put_idem(buf: &mut Vec<u8>, k: IdemRef<'_>) -> Result<(), StoreError> {
    let len = u16::try_from(k.key.len())
        .map_err(|_| StoreError::RecordTooLarge { len: k.key.len(), max: u16::MAX as usize })?;
    buf.extend_from_slice(&k.expires_unix_ms.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(k.key.as_bytes());
    Ok(())
}

/// What [`read_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// `len` is 0 (or the file ends cleanly): no more written data here.
    End,
    /// Not a valid record; the text says why.
    Bad(String),
    /// A valid record of `size` bytes (prefix included).
    Record { seq: u64, lag: u64, entry: Entry<'a>, size: usize },
}

/// The whole size (prefix included) of the record whose length prefix is at `pos`, if the prefix is there and
/// not 0.
pub(crate) fn frame_len(data: &[u8], pos: usize) -> Option<usize> {
    let len = le_u32(data.get(pos..pos + 4)?) as usize;
    (len > 0).then_some(FRAME_PREFIX + len)
}

/// Reads the record at `pos`: checks length, crc, type and payload.
pub(crate) fn read_frame(data: &[u8], pos: usize) -> Frame<'_> {
    let rest = data.get(pos..).unwrap_or_default();
    if rest.len() < 4 {
        return if rest.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Bad(format!("only {} bytes left for a record length", rest.len()))
        };
    }
    let len = le_u32(&rest[0..4]) as usize;
    if len == 0 {
        return Frame::End;
    }
    if len < MIN_LEN {
        return Frame::Bad(format!("impossible record length {len}"));
    }
    let Some(frame) = rest.get(..FRAME_PREFIX + len) else {
        return Frame::Bad(format!("record length {len} runs past the end of the file"));
    };
    let crc = le_u32(&frame[4..8]);
    let body = &frame[FRAME_PREFIX..];
    if crc != crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), body) {
        return Frame::Bad("crc mismatch".into());
    }
    decode_frame(frame)
}

/// Reads again the record at `pos` of a buffer that [`read_frame`] has already checked, without computing its
/// crc a second time (recovery finds each live task's body this way, once every record has been checked).
pub(crate) fn reread_frame(data: &[u8], pos: usize) -> Frame<'_> {
    let Some(len) = frame_len(data, pos) else { return Frame::End };
    match data.get(pos..pos + len) {
        Some(frame) if len >= FRAME_PREFIX + MIN_LEN => decode_frame(frame),
        _ => Frame::Bad(format!("record length {len} at {pos} does not fit")),
    }
}

/// Decodes a whole frame (prefix included) whose length and crc are known to be right.
fn decode_frame(frame: &[u8]) -> Frame<'_> {
    let body = &frame[FRAME_PREFIX..];
    let seq = le_u64(&body[1..9]);
    let mut r = Reader { bytes: &body[FIXED..] };
    let decoded = r.varint().and_then(|lag| decode_payload(body[0], &mut r).map(|entry| (lag, entry)));
    match decoded {
        Ok((lag, _)) if lag > seq => Frame::Bad(format!("sync lag {lag} exceeds seq {seq}")),
        Ok((lag, entry)) => Frame::Record { seq, lag, entry, size: frame.len() },
        Err(e) => Frame::Bad(format!("record type {}: {e}", body[0])),
    }
}

/// Cheap test for "could a record of seq in `seqs` start here?" before the crc is computed.
pub(crate) fn plausible(data: &[u8], pos: usize, seqs: std::ops::RangeInclusive<u64>) -> bool {
    let Some(head) = data.get(pos..pos + FRAME_PREFIX + FIXED) else {
        return false;
    };
    let len = le_u32(&head[0..4]) as usize;
    let kind = head[8];
    len >= MIN_LEN
        && pos + FRAME_PREFIX + len <= data.len()
        && (1..=kind::MAX).contains(&kind)
        && seqs.contains(&le_u64(&head[9..17]))
}

fn decode_payload<'a>(kind: u8, r: &mut Reader<'a>) -> Result<Entry<'a>, String> {
    let entry = match kind {
        kind::ENQUEUE => {
            let task_id = r.u64()?;
            let flags = r.u8()?;
            let idem = if flags & 1 != 0 { Some(r.idem()?) } else { None };
            Entry::Enqueue { task_id, idem, body: r.rest() }
        }
        kind::ATTEMPT => Entry::Attempt { task_id: r.u64()?, attempts: r.u32()? },
        kind::ACK => Entry::Ack { task_id: r.u64()? },
        kind::DEAD_LETTER => {
            let task_id = r.u64()?;
            Entry::DeadLetter { task_id, reason: utf8(r.rest())? }
        }
        kind::REDRIVE => Entry::Redrive { task_id: r.u64()? },
        kind::SNAPSHOT => {
            let task_id = r.u64()?;
            let attempts = r.u32()?;
            let flags = r.u8()?;
            let idem = if flags & 1 != 0 { Some(r.idem()?) } else { None };
            let dead = if flags & 2 != 0 {
                let n = r.u32()? as usize;
                Some(utf8(r.take(n)?)?)
            } else {
                None
            };
            Entry::Snapshot { task_id, attempts, dead, idem, body: r.rest() }
        }
        kind::KEY_CARRY => Entry::KeyCarry { task_id: r.u64()?, idem: r.idem()? },
        kind::CHECKPOINT => Entry::Checkpoint,
        kind::FINISH => Entry::Finish { task_id: r.u64()?, expires_unix_ms: r.u64()?, body: r.rest() },
        kind::GROUP => Entry::Group { count: r.u32()? },
        other => return Err(format!("unknown record type {other}")),
    };
    if !r.bytes.is_empty() {
        return Err(format!("{} trailing bytes", r.bytes.len()));
    }
    Ok(entry)
}

fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("invalid utf-8: {e}"))
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("payload truncated: wanted {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(le_u64(self.take(8)?))
    }
    fn idem(&mut self) -> Result<IdemRef<'a>, String> {
        let expires_unix_ms = self.u64()?;
        let n = u16::from_le_bytes([self.u8()?, self.u8()?]) as usize;
        Ok(IdemRef { key: utf8(self.take(n)?)?, expires_unix_ms })
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Entry<'static>> {
        let idem = IdemRef { key: "q/key-1", expires_unix_ms: 1_700_000_000_000 };
        vec![
            Entry::Enqueue { task_id: 7, idem: None, body: b"hello" },
            Entry::Enqueue { task_id: 8, idem: Some(idem), body: b"" },
            Entry::Attempt { task_id: 7, attempts: 3 },
            Entry::Ack { task_id: 7 },
            Entry::DeadLetter { task_id: 9, reason: "too many attempts" },
            Entry::Redrive { task_id: 9 },
            Entry::Snapshot { task_id: 10, attempts: 2, dead: Some("x"), idem: Some(idem), body: b"body" },
            Entry::Snapshot { task_id: 11, attempts: 0, dead: None, idem: None, body: b"b" },
            Entry::KeyCarry { task_id: 12, idem },
            Entry::Checkpoint,
            Entry::Finish { task_id: 13, expires_unix_ms: 1_700_000_000_000, body: b"outcome" },
            Entry::Finish { task_id: 14, expires_unix_ms: 0, body: b"" },
            Entry::Group { count: 3 },
        ]
    }

    #[test]
    fn every_entry_round_trips() {
        for (i, e) in samples().iter().enumerate() {
            let mut buf = vec![0xAA; 3];
            let seq = 1000 + i as u64;
            let size = encode(&mut buf, seq, 300, e).unwrap();
            assert_eq!(size, buf.len() - 3);
            assert!(plausible(&buf, 3, seq..=seq));
            match read_frame(&buf, 3) {
                Frame::Record { seq: s, lag, entry, size: n } => {
                    assert_eq!((s, lag, n), (seq, 300, size));
                    assert_eq!(&entry, e);
                }
                other => panic!("{e:?}: {other:?}"),
            }
            assert_eq!(reread_frame(&buf, 3), read_frame(&buf, 3), "{e:?}");
        }
    }

    #[test]
    fn a_reread_frame_must_at_least_fit() {
        let mut buf = Vec::new();
        encode(&mut buf, 5, 1, &Entry::Enqueue { task_id: 1, idem: None, body: b"abc" }).unwrap();
        assert!(matches!(reread_frame(&buf[..buf.len() - 1], 0), Frame::Bad(_)));
        assert_eq!(reread_frame(&[0u8; 8], 0), Frame::End);
        assert!(matches!(reread_frame(&[2, 0, 0, 0, 0, 0, 0, 0], 0), Frame::Bad(_)));
    }

    #[test]
    fn zero_length_and_clean_eof_are_the_end() {
        let buf = [0u8; 16];
        assert_eq!(read_frame(&buf, 0), Frame::End);
        assert_eq!(read_frame(&buf, 14), Frame::End);
        assert_eq!(read_frame(&buf, 16), Frame::End);
        assert!(matches!(read_frame(&[0, 1], 0), Frame::Bad(_)));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut clean = Vec::new();
        encode(&mut clean, 5, 1, &Entry::Enqueue { task_id: 1, idem: None, body: b"abc" }).unwrap();
        for byte in 0..clean.len() {
            for bit in 0..8 {
                let mut b = clean.clone();
                b[byte] ^= 1 << bit;
                assert!(matches!(read_frame(&b, 0), Frame::Bad(_) | Frame::End), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader { index: 3, base_seq: 99, task_id_floor: 12 };
        let mut bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        bytes[20] ^= 4;
        assert!(SegmentHeader::decode(&bytes).unwrap_err().contains("crc"));
        assert!(SegmentHeader::decode(b"PMWAL001").is_err());
    }

    #[test]
    fn oversized_key_is_refused_without_leaving_bytes() {
        let key = "k".repeat(70_000);
        let mut buf = vec![1, 2];
        let e = Entry::Enqueue { task_id: 1, idem: Some(IdemRef { key: &key, expires_unix_ms: 0 }), body: b"" };
        assert!(matches!(encode(&mut buf, 1, 0, &e), Err(StoreError::RecordTooLarge { .. })));
        assert_eq!(buf, vec![1, 2]);
    }
}
