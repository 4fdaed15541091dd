//! [`FrameCodec`]: frames of `u32` big-endian length + one protobuf [`Envelope`].
//!
//! The length prefix is checked *before* any buffer grows, so a hostile 4 GiB prefix costs nothing but an
//! error. "Need more bytes" (`Ok(None)`) is kept apart from "invalid" (`Err`), as in mini-redis: a caller
//! answers an `Err` with an error frame and closes the connection.

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::limits::DEFAULT_MAX_FRAME_BYTES;
use crate::pb::Envelope;
use crate::ErrorCode;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// What can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix exceeds the limit; nothing of the body was read.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced (or encoded) body length.
        len: usize,
        /// Limit in force.
        max: usize,
    },
    /// The body is not a valid protobuf `Envelope`.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The envelope holds no message this build knows (empty, or a newer kind).
    #[error("unknown or empty message kind")]
    UnknownMessage,
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    /// The stable error code to send back for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::Malformed(_) => ErrorCode::MalformedFrame,
            WireError::UnknownMessage => ErrorCode::UnknownMessage,
            WireError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Length-delimited protobuf frames, built on [`LengthDelimitedCodec`].
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max_frame: usize,
    /// The inner codec has consumed a length prefix and waits for the body: `src` starts with body bytes.
    in_body: bool,
}

impl FrameCodec {
    /// A codec refusing frames whose body exceeds `max_frame` bytes (both directions).
    pub fn new(max_frame: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(LEN_PREFIX)
            .big_endian()
            .max_frame_length(max_frame)
            .new_codec();
        FrameCodec { inner, max_frame, in_body: false }
    }

    /// The limit in force.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder for FrameCodec {
    type Item = Envelope;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, WireError> {
        if !self.in_body && src.len() >= LEN_PREFIX {
            let len = (&src[..LEN_PREFIX]).get_u32() as usize;
            if len > self.max_frame {
                return Err(WireError::FrameTooLarge { len, max: self.max_frame });
            }
        }
        let had_head = self.in_body || src.len() >= LEN_PREFIX;
        let Some(body) = self.inner.decode(src)? else {
            self.in_body = had_head;
            return Ok(None);
        };
        self.in_body = false;
        let env = Envelope::decode(body.freeze())?;
        if env.kind.is_none() {
            return Err(WireError::UnknownMessage);
        }
        Ok(Some(env))
    }
}

impl Encoder<&Envelope> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, env: &Envelope, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_frame(env, self.max_frame, dst)
    }
}

impl Encoder<Envelope> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, env: Envelope, dst: &mut BytesMut) -> Result<(), WireError> {
        encode_frame(&env, self.max_frame, dst)
    }
}

/// Takes one whole frame off the front of `src`, without any state between calls: `Ok(None)` while the frame
/// is incomplete (after reserving room for the rest of it, once its length is known). Checks the length prefix
/// against `max_frame` before reserving anything. The same rules as [`FrameCodec`], for callers that keep no
/// codec per connection (the scheduler keeps its idle connections small).
pub fn decode_frame(src: &mut BytesMut, max_frame: usize) -> Result<Option<Envelope>, WireError> {
    if src.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = (&src[..LEN_PREFIX]).get_u32() as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge { len, max: max_frame });
    }
    let total = LEN_PREFIX + len;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    src.advance(LEN_PREFIX);
    let env = Envelope::decode(src.split_to(len).freeze())?;
    if env.kind.is_none() {
        return Err(WireError::UnknownMessage);
    }
    Ok(Some(env))
}

/// Appends one frame (prefix + body) to `dst`, refusing bodies over `max_frame`.
pub fn encode_frame(env: &Envelope, max_frame: usize, dst: &mut BytesMut) -> Result<(), WireError> {
    let len = env.encoded_len();
    if len > max_frame {
        return Err(WireError::FrameTooLarge { len, max: max_frame });
    }
    dst.reserve(LEN_PREFIX + len);
    dst.put_u32(len as u32);
    env.encode(dst).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// Envelopes of the kinds that carry most of the traffic, with arbitrary fields.
    fn any_envelope() -> impl Strategy<Value = Envelope> {
        let task = (vec(any::<u8>(), 0..600), "[a-z0-9/._-]{0,24}", "[a-z0-9]{0,16}", any::<i32>(), any::<u64>())
            .prop_map(|(payload, queue, key, priority, delay_ms)| pb::TaskSpec {
                payload: payload.into(),
                queue,
                key,
                priority,
                delay_ms,
                ..Default::default()
            });
        prop_oneof![
            (any::<u64>(), vec(task, 0..6)).prop_map(|(request_id, tasks)| pb::Submit {
                request_id,
                tasks,
                failover: false,
                notify: false,
            }
            .into()),
            any::<u64>().prop_map(|nonce| pb::Ping { nonce }.into()),
            (any::<u64>(), vec((any::<u64>(), vec(any::<u8>(), 0..64)), 0..8)).prop_map(|(request_id, items)| {
                let items = items.into_iter().map(|(lease_id, r)| pb::AckItem { lease_id, result: r.into() });
                pb::Ack { request_id, items: items.collect() }.into()
            }),
            (any::<u64>(), vec((any::<u64>(), any::<u64>(), ".{0,40}", any::<bool>()), 0..8)).prop_map(
                |(request_id, items)| {
                    let items = items.into_iter().map(|(lease_id, retry_after_ms, reason, released)| pb::NackItem {
                        lease_id,
                        retry_after_ms,
                        reason,
                        released,
                        ..Default::default()
                    });
                    pb::Nack { request_id, items: items.collect() }.into()
                }
            ),
            ("[a-z]{0,12}", any::<u32>(), any::<bool>())
                .prop_map(|(queue, n, set)| pb::Credit { queue, n, set }.into()),
        ]
    }

    proptest! {
        /// Any sequence of frames, cut into pieces at any byte offsets, decodes to exactly what was sent.
        #[test]
        fn a_stream_split_at_arbitrary_offsets_decodes_to_what_was_sent(
            envs in vec(any_envelope(), 1..6),
            cuts in vec(any::<proptest::sample::Index>(), 0..10),
        ) {
            let mut wire = BytesMut::new();
            for env in &envs {
                encode_frame(env, DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
            }
            let mut offsets: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            offsets.sort_unstable();
            offsets.push(wire.len());
            let (mut buf, mut got, mut from) = (BytesMut::new(), Vec::new(), 0);
            for to in offsets {
                buf.extend_from_slice(&wire[from..to]);
                from = to;
                while let Some(env) = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap() {
                    got.push(env);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, envs);
        }

        /// Arbitrary bytes never panic the decoder: it yields frames, waits for more, or names an error.
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(bytes in vec(any::<u8>(), 0..4096), max in 0usize..8192) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(env)) = decode_frame(&mut buf, max) {
                prop_assert!(env.kind.is_some());
            }
        }
    }

    fn sample() -> Envelope {
        pb::Submit {
            request_id: 7,
            tasks: vec![pb::TaskSpec { payload: vec![1u8; 300].into(), queue: "q".into(), ..Default::default() }],
            failover: false,
            notify: false,
        }
        .into()
    }

    #[test]
    fn round_trip_split_at_every_byte() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(&sample(), &mut wire).unwrap();
        codec.encode(&Envelope::from(pb::Ping { nonce: 9 }), &mut wire).unwrap();
        for split in 0..=wire.len() {
            let mut dec = FrameCodec::default();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(env) = dec.decode(&mut buf).unwrap() {
                got.push(env);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(env) = dec.decode(&mut buf).unwrap() {
                got.push(env);
            }
            assert_eq!(got, vec![sample(), pb::Ping { nonce: 9 }.into()], "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn decode_frame_matches_the_codec_at_every_split() {
        let mut wire = BytesMut::new();
        encode_frame(&sample(), DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
        encode_frame(&pb::Ping { nonce: 9 }.into(), DEFAULT_MAX_FRAME_BYTES, &mut wire).unwrap();
        for split in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = Vec::new();
            while let Some(env) = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap() {
                got.push(env);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(env) = decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap() {
                got.push(env);
            }
            assert_eq!(got, vec![sample(), pb::Ping { nonce: 9 }.into()], "split at {split}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn decode_frame_refuses_bad_input_like_the_codec() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap_before = buf.capacity();
        assert!(matches!(decode_frame(&mut buf, 1024), Err(WireError::FrameTooLarge { len: 0xffff_ffff, max: 1024 })));
        assert_eq!(buf.capacity(), cap_before);
        let mut garbage = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(decode_frame(&mut garbage, 1024), Err(WireError::Malformed(_))));
        let mut unknown = BytesMut::from(&[0, 0, 0, 3, 0x98, 0x06, 0x01][..]);
        assert!(matches!(decode_frame(&mut unknown, 1024), Err(WireError::UnknownMessage)));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(decode_frame(&mut empty, 1024), Err(WireError::UnknownMessage)));
    }

    #[test]
    fn huge_length_prefix_is_refused_before_allocating() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap_before = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { len: 0xffff_ffff, max: 1024 }));
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn garbage_body_is_malformed() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut buf), Err(WireError::Malformed(_))));
    }

    #[test]
    fn empty_or_unknown_kind_is_refused() {
        let mut codec = FrameCodec::default();
        // Field 99, varint 1: a kind this build does not know.
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0x98, 0x06, 0x01][..]);
        assert!(matches!(codec.decode(&mut buf), Err(WireError::UnknownMessage)));
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(codec.decode(&mut empty), Err(WireError::UnknownMessage)));
    }

    #[test]
    fn oversized_outgoing_frame_is_refused() {
        let mut codec = FrameCodec::new(64);
        let mut dst = BytesMut::new();
        assert!(matches!(codec.encode(&sample(), &mut dst), Err(WireError::FrameTooLarge { .. })));
        assert!(dst.is_empty());
    }
}
