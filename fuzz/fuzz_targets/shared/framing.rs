//! What every framing target does with its input: the first byte picks
//! whether the header counts itself, whether a TPDU follows and how the rest
//! is chunked; the rest is fed to a stream decoder and to `decode_one`.
//! Frames never exceed the limit, and every refusal names an offset inside
//! what was fed.

use bytes::BytesMut;
use isoswitch::frame::{decode_one, FrameCodec, FrameConfig, FrameError, LengthHeader};
use tokio_util::codec::Decoder;

/// Small, so inputs reach both sides of it.
const MAX_FRAME_LEN: usize = 256;

fn offset(e: &FrameError) -> u64 {
    match e {
        FrameError::BadAsciiLength { offset, .. }
        | FrameError::Oversized { offset, .. }
        | FrameError::Undersized { offset, .. }
        | FrameError::Truncated { offset, .. } => *offset,
        other => panic!("a decoder returned a non-decoding error: {other}"),
    }
}

pub fn run(header: LengthHeader, data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let config = FrameConfig {
        header,
        header_includes_self: control & 1 != 0,
        tpdu: control & 2 != 0,
        max_frame_len: MAX_FRAME_LEN,
    };
    let chunk = usize::from(control >> 2).max(1);

    let mut codec = FrameCodec::new(config);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    'feed: for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.payload.is_empty(), "an empty frame");
                    assert!(
                        frame.payload.len() <= MAX_FRAME_LEN,
                        "a frame over the limit"
                    );
                }
                Ok(None) => {
                    // The buffer holds at most a frame and a chunk; growth
                    // by doubling (and a split buffer's reallocation) may
                    // take up to four times that, never what a header asks.
                    assert!(
                        buf.capacity() <= 4 * (MAX_FRAME_LEN + chunk),
                        "reserved {} bytes waiting for a frame",
                        buf.capacity()
                    );
                    break;
                }
                Err(e) => {
                    assert!(offset(&e) < fed as u64, "offset past the input: {e}");
                    break 'feed;
                }
            }
        }
    }

    match decode_one(&config, input) {
        Ok(Some((frame, used))) => {
            assert!(used <= input.len() && used <= MAX_FRAME_LEN);
            assert!(!frame.payload.is_empty());
        }
        Ok(None) => {}
        Err(e) => assert!(offset(&e) < input.len().max(1) as u64, "{e}"),
    }
}
