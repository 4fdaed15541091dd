//! Raw bytes as they might arrive on a socket, fed to the frame decoder in pieces of a size the input
//! chooses: decoding never panics, the pieces give exactly the frames (and the same error or wait) that the
//! whole input gives at once, and every frame decoded encodes and decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pm_protocol::codec::{decode_frame, encode_frame};
use pm_protocol::Envelope;

/// Frames of `bytes` fed `chunk` bytes at a time, and whether decoding stopped at an error.
fn decode(bytes: &[u8], chunk: usize, max: usize) -> (Vec<Envelope>, bool) {
    let (mut buf, mut frames) = (BytesMut::new(), Vec::new());
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decode_frame(&mut buf, max) {
                Ok(Some(env)) => frames.push(env),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let chunk = usize::from(first % 64) + 1;
    // A small maximum, so the length checks are reached often.
    let max = 16 * 1024;
    let whole = decode(rest, rest.len().max(1), max);
    let pieces = decode(rest, chunk, max);
    assert_eq!(whole, pieces, "splitting the input changed what was decoded");
    for env in whole.0 {
        let mut wire = BytesMut::new();
        encode_frame(&env, max, &mut wire).expect("a decoded frame encodes within the same limit");
        let again = decode_frame(&mut wire, max).expect("re-decode").expect("a whole frame");
        assert_eq!(again, env);
        assert!(wire.is_empty());
    }
});
