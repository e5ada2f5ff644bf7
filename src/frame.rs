//! Wire framing: the length header (and optional TPDU) that delimits each ISO 8583
//! message on a TCP stream, as a sans-IO `tokio_util` codec plus two small sync
//! helpers for CLI tools and tests.
//!
//! A frame on the wire is `length header | TPDU (5 bytes, optional) | message`. The
//! header counts TPDU + message, plus the header itself when `header_includes_self`.
//! Decoding is zero-copy: the message is split off the read buffer and frozen.
//!
//! Framing errors while decoding are fatal: a length header that cannot be trusted
//! leaves no way to find where the next frame starts, so the connection must be
//! closed (see [`FrameError::is_fatal`]).

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// How the frame length is written in front of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LengthHeader {
    /// Two bytes, big-endian binary; at most 65 535.
    #[default]
    #[serde(rename = "2b")]
    Binary2,
    /// Four bytes, big-endian binary; capped only by `max_frame_len`.
    #[serde(rename = "4b")]
    Binary4,
    /// Two ASCII decimal digits ("07"); at most 99.
    #[serde(rename = "2a")]
    Ascii2,
    /// Four ASCII decimal digits ("0123"); at most 9 999.
    #[serde(rename = "4a")]
    Ascii4,
}

/// The spellings accepted by `FromStr` and serde, in one place so messages agree.
const LENGTH_HEADER_NAMES: &str = "2b, 4b, 2a, 4a";

impl LengthHeader {
    /// Bytes the header occupies on the wire.
    pub const fn encoded_len(self) -> usize {
        match self {
            Self::Binary2 | Self::Ascii2 => 2,
            Self::Binary4 | Self::Ascii4 => 4,
        }
    }

    /// Largest length value this header kind can express.
    pub const fn max_value(self) -> usize {
        match self {
            Self::Binary2 => u16::MAX as usize,
            // Saturates on 16-bit targets; max_frame_len is the real cap anyway.
            Self::Binary4 => {
                if usize::BITS >= 32 {
                    u32::MAX as usize
                } else {
                    usize::MAX
                }
            }
            Self::Ascii2 => 99,
            Self::Ascii4 => 9_999,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::Binary2 => "2b",
            Self::Binary4 => "4b",
            Self::Ascii2 => "2a",
            Self::Ascii4 => "4a",
        }
    }

    /// Reads the declared length from the start of `buf`; `Ok(None)` while the
    /// header itself is still incomplete.
    #[inline]
    fn read(self, buf: &[u8], offset: u64) -> Result<Option<usize>, FrameError> {
        match self {
            Self::Binary2 => Ok(buf
                .first_chunk::<2>()
                .map(|b| usize::from(u16::from_be_bytes(*b)))),
            Self::Binary4 => Ok(buf
                .first_chunk::<4>()
                .map(|b| usize::try_from(u32::from_be_bytes(*b)).unwrap_or(usize::MAX))),
            Self::Ascii2 => buf
                .first_chunk::<2>()
                .map(|b| parse_ascii_length(b, offset))
                .transpose(),
            Self::Ascii4 => buf
                .first_chunk::<4>()
                .map(|b| parse_ascii_length(b, offset))
                .transpose(),
        }
    }

    /// Writes `declared`, which the caller has already checked against `max_value`.
    #[inline]
    fn write(self, declared: usize, dst: &mut impl BufMut) {
        match self {
            Self::Binary2 => dst.put_u16(
                u16::try_from(declared).expect("declared length checked against the 2b maximum"),
            ),
            Self::Binary4 => dst.put_u32(
                u32::try_from(declared).expect("declared length checked against the 4b maximum"),
            ),
            Self::Ascii2 => dst.put_slice(&ascii_digits::<2>(declared)),
            Self::Ascii4 => dst.put_slice(&ascii_digits::<4>(declared)),
        }
    }
}

#[inline]
fn parse_ascii_length<const N: usize>(digits: &[u8; N], offset: u64) -> Result<usize, FrameError> {
    let mut value = 0usize;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return Err(FrameError::BadAsciiLength {
                found: LengthBytes::new(digits),
                offset,
            });
        }
        value = value * 10 + usize::from(digit - b'0');
    }
    Ok(value)
}

#[inline]
fn ascii_digits<const N: usize>(mut value: usize) -> [u8; N] {
    let mut digits = [b'0'; N];
    for digit in digits.iter_mut().rev() {
        // value % 10 < 10, so the narrowing is exact.
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    digits
}

impl fmt::Display for LengthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LengthHeader {
    type Err = ParseLengthHeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2b" => Ok(Self::Binary2),
            "4b" => Ok(Self::Binary4),
            "2a" => Ok(Self::Ascii2),
            "4a" => Ok(Self::Ascii4),
            _ => Err(ParseLengthHeaderError {
                found: s.to_owned(),
            }),
        }
    }
}

/// A length-header name that is not one of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown length header {found:?}: expected one of {LENGTH_HEADER_NAMES}")]
pub struct ParseLengthHeaderError {
    pub found: String,
}

/// Framing of one listener or issuer link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameConfig {
    pub header: LengthHeader,
    /// The header value counts the header's own bytes too.
    pub header_includes_self: bool,
    /// Every frame carries a 5-byte TPDU between header and message.
    pub tpdu: bool,
    /// Largest whole frame on the wire (header + TPDU + message) we will buffer;
    /// anything larger is refused before memory is reserved for it.
    pub max_frame_len: usize,
}

impl Default for FrameConfig {
    fn default() -> Self {
        Self {
            header: LengthHeader::Binary2,
            header_includes_self: false,
            tpdu: false,
            max_frame_len: 8192,
        }
    }
}

impl FrameConfig {
    /// Largest message (payload) one frame can carry under this config. Zero means
    /// the config cannot carry any message; config loading should refuse it.
    pub fn max_payload_len(&self) -> usize {
        self.max_declared_len()
            .saturating_sub(self.self_len() + self.tpdu_len())
    }

    /// Bytes the header value counts beyond TPDU + message.
    #[inline]
    fn self_len(&self) -> usize {
        if self.header_includes_self {
            self.header.encoded_len()
        } else {
            0
        }
    }

    #[inline]
    fn tpdu_len(&self) -> usize {
        if self.tpdu {
            Tpdu::LEN
        } else {
            0
        }
    }

    /// Smallest acceptable header value: TPDU plus at least one message byte.
    #[inline]
    fn min_declared_len(&self) -> usize {
        self.self_len() + self.tpdu_len() + 1
    }

    /// Largest acceptable header value, from the header kind and `max_frame_len`.
    #[inline]
    fn max_declared_len(&self) -> usize {
        let from_frame = self
            .max_frame_len
            .saturating_sub(self.header.encoded_len())
            .saturating_add(self.self_len());
        self.header.max_value().min(from_frame)
    }

    /// The cheap "is a whole frame here?" check: how many bytes the first frame in
    /// `buf` occupies, or the header length while the header is still incomplete.
    /// Either way, `buf.len()` below the result means "wait for more".
    #[inline]
    fn frame_len(&self, buf: &[u8], offset: u64) -> Result<usize, FrameError> {
        let header_len = self.header.encoded_len();
        let Some(declared) = self.header.read(buf, offset)? else {
            return Ok(header_len);
        };
        let minimum = self.min_declared_len();
        if declared < minimum {
            return Err(FrameError::Undersized {
                length: declared,
                minimum,
                offset,
            });
        }
        let max = self.max_declared_len();
        if declared > max {
            return Err(FrameError::Oversized {
                length: declared,
                max,
                offset,
            });
        }
        Ok(declared - self.self_len() + header_len)
    }

    /// Splits one whole frame of `total` bytes (as measured by `frame_len`) off `src`.
    #[inline]
    fn split_frame(&self, src: &mut BytesMut, total: usize) -> Frame {
        src.advance(self.header.encoded_len());
        let tpdu = if self.tpdu {
            let bytes = *src
                .first_chunk::<{ Tpdu::LEN }>()
                .expect("frame_len guarantees the TPDU is buffered");
            src.advance(Tpdu::LEN);
            Some(Tpdu(bytes))
        } else {
            None
        };
        let payload_len = total - self.header.encoded_len() - self.tpdu_len();
        Frame {
            tpdu,
            payload: src.split_to(payload_len).freeze(),
        }
    }

    /// Checks that `frame` fits this framing; returns the header value to write.
    #[inline]
    fn declared_len_of(&self, frame: &Frame) -> Result<usize, FrameError> {
        if self.tpdu != frame.tpdu.is_some() {
            return Err(FrameError::TpduMismatch {
                expected: self.tpdu,
            });
        }
        let length = frame.payload.len();
        if length == 0 {
            return Err(FrameError::EmptyPayload);
        }
        let max = self.max_payload_len();
        if length > max {
            return Err(FrameError::PayloadTooLong { length, max });
        }
        Ok(self.self_len() + self.tpdu_len() + length)
    }

    #[inline]
    fn wire_len(&self, frame: &Frame) -> usize {
        self.header.encoded_len() + self.tpdu_len() + frame.payload.len()
    }

    #[inline]
    fn write_frame(&self, declared: usize, frame: &Frame, dst: &mut impl BufMut) {
        self.header.write(declared, dst);
        if let Some(tpdu) = &frame.tpdu {
            dst.put_slice(&tpdu.0);
        }
        dst.put_slice(&frame.payload);
    }
}

/// Transport Protocol Data Unit: `id` (usually 0x60), destination (2 bytes) and
/// source (2 bytes), used by POS networks to address terminals and hosts.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tpdu(pub [u8; 5]);

impl Tpdu {
    /// Bytes a TPDU occupies on the wire.
    pub const LEN: usize = 5;

    pub const fn new(id: u8, destination: u16, source: u16) -> Self {
        let [d0, d1] = destination.to_be_bytes();
        let [s0, s1] = source.to_be_bytes();
        Self([id, d0, d1, s0, s1])
    }

    pub const fn id(&self) -> u8 {
        self.0[0]
    }

    pub const fn destination(&self) -> u16 {
        u16::from_be_bytes([self.0[1], self.0[2]])
    }

    pub const fn source(&self) -> u16 {
        u16::from_be_bytes([self.0[3], self.0[4]])
    }

    /// The TPDU for the response: same id, destination and source exchanged.
    pub const fn swapped(&self) -> Tpdu {
        let [id, d0, d1, s0, s1] = self.0;
        Tpdu([id, s0, s1, d0, d1])
    }
}

impl fmt::Display for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tpdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tpdu({self})")
    }
}

impl FromStr for Tpdu {
    type Err = ParseTpduError;

    /// Parses 10 hex digits, either case, e.g. "6000010000".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.as_bytes();
        if text.len() != 2 * Tpdu::LEN {
            return Err(ParseTpduError::WrongLength { found: text.len() });
        }
        let mut bytes = [0u8; Tpdu::LEN];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0], 2 * i)?;
            let lo = hex_digit(pair[1], 2 * i + 1)?;
            bytes[i] = (hi << 4) | lo;
        }
        Ok(Tpdu(bytes))
    }
}

fn hex_digit(c: u8, offset: usize) -> Result<u8, ParseTpduError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ParseTpduError::NotHex {
            found: c.escape_ascii().to_string(),
            offset,
        }),
    }
}

/// Text that is not a TPDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseTpduError {
    #[error("TPDU must be 10 hex digits (e.g. 6000010000), found {found} bytes")]
    WrongLength { found: usize },
    #[error("TPDU must be 10 hex digits, found {found:?} at byte offset {offset}")]
    NotHex { found: String, offset: usize },
}

/// One framed message: the TPDU when the framing has one, and the ISO 8583 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tpdu: Option<Tpdu>,
    pub payload: Bytes,
}

impl Frame {
    /// A frame for framing without TPDU.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            tpdu: None,
            payload: payload.into(),
        }
    }

    /// A frame for framing with TPDU.
    pub fn with_tpdu(tpdu: Tpdu, payload: impl Into<Bytes>) -> Self {
        Self {
            tpdu: Some(tpdu),
            payload: payload.into(),
        }
    }

    /// The frame answering this one: the TPDU (if any) swapped, new payload.
    pub fn response(&self, payload: impl Into<Bytes>) -> Self {
        Self {
            tpdu: self.tpdu.map(|t| t.swapped()),
            payload: payload.into(),
        }
    }
}

/// The raw bytes of a bad ASCII length header, shown as text and hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthBytes {
    bytes: [u8; 4],
    len: u8,
}

impl LengthBytes {
    fn new(found: &[u8]) -> Self {
        let mut bytes = [0u8; 4];
        let len = found.len().min(bytes.len());
        bytes[..len].copy_from_slice(&found[..len]);
        Self {
            bytes,
            // len <= 4 by the min above.
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for LengthBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" (hex ", self.as_bytes().escape_ascii())?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// What went wrong framing or unframing a message. Offsets count bytes from the start
/// of the stream the codec has decoded (for [`decode_one`], from the start of its
/// input) and point at the frame's length header.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "length header at byte offset {offset}: expected {} ASCII decimal digits, found {found}",
        found.as_bytes().len()
    )]
    BadAsciiLength { found: LengthBytes, offset: u64 },
    #[error(
        "length header at byte offset {offset} declares {length} bytes, \
         more than the {max} this framing accepts"
    )]
    Oversized {
        length: usize,
        max: usize,
        offset: u64,
    },
    #[error(
        "length header at byte offset {offset} declares {length} bytes, \
         fewer than the {minimum} this framing needs for at least one message byte"
    )]
    Undersized {
        length: usize,
        minimum: usize,
        offset: u64,
    },
    #[error("stream ended inside the frame at byte offset {offset}: expected {needed} bytes, received {received}")]
    Truncated {
        needed: usize,
        received: usize,
        offset: u64,
    },
    #[error("cannot frame a {length}-byte message: this framing carries at most {max} bytes")]
    PayloadTooLong { length: usize, max: usize },
    #[error("cannot frame an empty message: a frame carries at least one message byte")]
    EmptyPayload,
    #[error("{}", tpdu_mismatch_message(*expected))]
    TpduMismatch { expected: bool },
    #[error("I/O error on the framed stream: {0}")]
    Io(#[from] std::io::Error),
}

fn tpdu_mismatch_message(expected: bool) -> &'static str {
    if expected {
        "frame has no TPDU but this framing expects one"
    } else {
        "frame has a TPDU but this framing expects none"
    }
}

impl FrameError {
    /// Whether the connection must be closed. Any decoding error is fatal: once a
    /// length header is wrong there is no marker to find the next frame, so the
    /// stream cannot be resynchronised. Encoding errors are not: nothing was
    /// written, the frame is refused and the connection stays usable.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::BadAsciiLength { .. }
            | Self::Oversized { .. }
            | Self::Undersized { .. }
            | Self::Truncated { .. }
            | Self::Io(_) => true,
            Self::PayloadTooLong { .. } | Self::EmptyPayload | Self::TpduMismatch { .. } => false,
        }
    }

    /// A short fixed name, fit for a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadAsciiLength { .. } => "bad_ascii_length",
            Self::Oversized { .. } => "oversized",
            Self::Undersized { .. } => "undersized",
            Self::Truncated { .. } => "truncated",
            Self::PayloadTooLong { .. } => "payload_too_long",
            Self::EmptyPayload => "empty_payload",
            Self::TpduMismatch { .. } => "tpdu_mismatch",
            Self::Io(_) => "io",
        }
    }
}

/// `tokio_util` codec for one connection. Use one per connection: it counts the
/// bytes decoded so far so errors can name their stream offset.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    config: FrameConfig,
    decoded_bytes: u64,
}

impl FrameCodec {
    pub fn new(config: FrameConfig) -> Self {
        Self {
            config,
            decoded_bytes: 0,
        }
    }

    pub fn config(&self) -> &FrameConfig {
        &self.config
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let total = self.config.frame_len(src, self.decoded_bytes)?;
        if src.len() < total {
            // frame_len has bounded `total` by max_frame_len, so this is safe to reserve.
            src.reserve(total - src.len());
            return Ok(None);
        }
        self.decoded_bytes += total as u64;
        Ok(Some(self.config.split_frame(src, total)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        Err(FrameError::Truncated {
            needed: self.config.frame_len(src, self.decoded_bytes)?,
            received: src.len(),
            offset: self.decoded_bytes,
        })
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    /// Writes nothing when the frame is refused.
    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let declared = self.config.declared_len_of(frame)?;
        dst.reserve(self.config.wire_len(frame));
        self.config.write_frame(declared, frame, dst);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Encoder::<&Frame>::encode(self, &frame, dst)
    }
}

/// Frames one message into a fresh buffer (CLI tools, tests).
pub fn encode_frame(config: &FrameConfig, frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let declared = config.declared_len_of(frame)?;
    let mut out = Vec::with_capacity(config.wire_len(frame));
    config.write_frame(declared, frame, &mut out);
    Ok(out)
}

/// Unframes the first message in `bytes`: `Ok(None)` if it is not complete yet,
/// otherwise the frame and how many bytes it took.
pub fn decode_one(
    config: &FrameConfig,
    bytes: &[u8],
) -> Result<Option<(Frame, usize)>, FrameError> {
    let total = config.frame_len(bytes, 0)?;
    let Some(frame_bytes) = bytes.get(..total) else {
        return Ok(None);
    };
    let mut buf = BytesMut::from(frame_bytes);
    Ok(Some((config.split_frame(&mut buf, total), total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_HEADERS: [LengthHeader; 4] = [
        LengthHeader::Binary2,
        LengthHeader::Binary4,
        LengthHeader::Ascii2,
        LengthHeader::Ascii4,
    ];

    const TPDU: Tpdu = Tpdu([0x60, 0x00, 0x01, 0x00, 0x02]);

    fn config(header: LengthHeader) -> FrameConfig {
        FrameConfig {
            header,
            ..FrameConfig::default()
        }
    }

    /// Every combination of header kind, includes-self and TPDU.
    fn all_configs() -> Vec<FrameConfig> {
        let mut configs = Vec::new();
        for header in ALL_HEADERS {
            for header_includes_self in [false, true] {
                for tpdu in [false, true] {
                    configs.push(FrameConfig {
                        header,
                        header_includes_self,
                        tpdu,
                        ..FrameConfig::default()
                    });
                }
            }
        }
        configs
    }

    fn sample_frame(config: &FrameConfig, payload: &'static [u8]) -> Frame {
        Frame {
            tpdu: config.tpdu.then_some(TPDU),
            payload: Bytes::from_static(payload),
        }
    }

    fn encode(config: FrameConfig, frame: &Frame) -> Result<Vec<u8>, FrameError> {
        let mut dst = BytesMut::new();
        FrameCodec::new(config).encode(frame, &mut dst)?;
        Ok(dst.to_vec())
    }

    fn decode_all(config: FrameConfig, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut codec = FrameCodec::new(config);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn assert_golden(config: FrameConfig, frame: Frame, wire: &[u8]) {
        assert_eq!(encode(config, &frame).unwrap(), wire, "{config:?}");
        assert_eq!(encode_frame(&config, &frame).unwrap(), wire, "{config:?}");
        assert_eq!(decode_all(config, wire).unwrap(), vec![frame.clone()]);
        assert_eq!(
            decode_one(&config, wire).unwrap(),
            Some((frame, wire.len()))
        );
    }

    #[test]
    fn binary2_header_is_two_big_endian_bytes_of_message_length() {
        assert_golden(
            config(LengthHeader::Binary2),
            Frame::new(&b"abc"[..]),
            b"\x00\x03abc",
        );
    }

    #[test]
    fn binary4_header_is_four_big_endian_bytes_of_message_length() {
        assert_golden(
            config(LengthHeader::Binary4),
            Frame::new(&b"abc"[..]),
            b"\x00\x00\x00\x03abc",
        );
    }

    #[test]
    fn ascii2_header_is_two_decimal_digits() {
        assert_golden(
            config(LengthHeader::Ascii2),
            Frame::new(&b"abc"[..]),
            b"03abc",
        );
    }

    #[test]
    fn ascii4_header_is_four_decimal_digits() {
        assert_golden(
            config(LengthHeader::Ascii4),
            Frame::new(&b"abc"[..]),
            b"0003abc",
        );
        let long = vec![b'x'; 1234];
        let mut wire = b"1234".to_vec();
        wire.extend_from_slice(&long);
        assert_golden(config(LengthHeader::Ascii4), Frame::new(long), &wire);
    }

    #[test]
    fn header_including_itself_adds_its_own_length() {
        let mut cfg = config(LengthHeader::Binary2);
        cfg.header_includes_self = true;
        assert_golden(cfg, Frame::new(&b"abc"[..]), b"\x00\x05abc");

        cfg.header = LengthHeader::Ascii4;
        assert_golden(cfg, Frame::new(&b"abc"[..]), b"0007abc");
    }

    #[test]
    fn tpdu_sits_between_header_and_message_and_is_counted() {
        let mut cfg = config(LengthHeader::Binary2);
        cfg.tpdu = true;
        assert_golden(
            cfg,
            Frame::with_tpdu(TPDU, &b"abc"[..]),
            b"\x00\x08\x60\x00\x01\x00\x02abc",
        );

        cfg.header = LengthHeader::Ascii2;
        cfg.header_includes_self = true;
        assert_golden(
            cfg,
            Frame::with_tpdu(TPDU, &b"abc"[..]),
            b"10\x60\x00\x01\x00\x02abc",
        );
    }

    #[test]
    fn response_tpdu_exchanges_destination_and_source() {
        let request = Tpdu::new(0x60, 0x0001, 0x0002);
        assert_eq!(request, TPDU);
        let response = request.swapped();
        assert_eq!(response.0, [0x60, 0x00, 0x02, 0x00, 0x01]);
        assert_eq!(response.id(), 0x60);
        assert_eq!(response.destination(), 0x0002);
        assert_eq!(response.source(), 0x0001);
        assert_eq!(response.swapped(), request);

        let answer = Frame::with_tpdu(request, &b"req"[..]).response(&b"resp"[..]);
        assert_eq!(answer.tpdu, Some(response));
        assert_eq!(Frame::new(&b"req"[..]).response(&b"r"[..]).tpdu, None);
    }

    #[test]
    fn tpdu_prints_and_parses_as_ten_hex_digits() {
        assert_eq!(TPDU.to_string(), "6000010002");
        assert_eq!(format!("{TPDU:?}"), "Tpdu(6000010002)");
        assert_eq!("6000010002".parse::<Tpdu>().unwrap(), TPDU);
        assert_eq!(
            "60abCDef01".parse::<Tpdu>().unwrap().0,
            [0x60, 0xab, 0xcd, 0xef, 0x01]
        );
    }

    #[test]
    fn tpdu_text_of_wrong_length_or_digits_is_refused_with_the_position() {
        assert_eq!(
            "600001".parse::<Tpdu>(),
            Err(ParseTpduError::WrongLength { found: 6 })
        );
        let err = "60000100zz".parse::<Tpdu>().unwrap_err();
        assert_eq!(
            err,
            ParseTpduError::NotHex {
                found: "z".into(),
                offset: 8
            }
        );
        assert!(err.to_string().contains("10 hex digits"), "{err}");
        assert!(err.to_string().contains("offset 8"), "{err}");
        // Multi-byte characters count as bytes and never split a char boundary.
        assert!("é00001000".parse::<Tpdu>().is_err());
    }

    #[test]
    fn length_header_names_round_trip_through_text_and_serde() {
        for header in ALL_HEADERS {
            let name = header.to_string();
            assert_eq!(name.parse::<LengthHeader>().unwrap(), header);
            let json = serde_json::to_string(&header).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<LengthHeader>(&json).unwrap(), header);
        }
    }

    #[test]
    fn unknown_length_header_name_lists_the_accepted_ones() {
        let err = "2c".parse::<LengthHeader>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown length header \"2c\": expected one of 2b, 4b, 2a, 4a"
        );
        let err = serde_json::from_str::<LengthHeader>("\"binary\"").unwrap_err();
        assert!(err.to_string().contains("2b"), "{err}");
    }

    #[test]
    fn frame_config_defaults_to_two_binary_bytes_without_tpdu() {
        let cfg = FrameConfig::default();
        assert_eq!(cfg.header, LengthHeader::Binary2);
        assert!(!cfg.header_includes_self);
        assert!(!cfg.tpdu);
        assert_eq!(cfg.max_frame_len, 8192);
        assert_eq!(cfg.max_payload_len(), 8190);
    }

    #[test]
    fn frame_config_loads_from_toml_with_defaults_and_refuses_unknown_keys() {
        let cfg: FrameConfig = toml::from_str("header = \"4a\"\ntpdu = true\n").unwrap();
        assert_eq!(cfg.header, LengthHeader::Ascii4);
        assert!(cfg.tpdu);
        assert_eq!(cfg.max_frame_len, 8192);
        assert!(toml::from_str::<FrameConfig>("headr = \"4a\"\n").is_err());
        assert!(toml::from_str::<FrameConfig>("header = \"4x\"\n").is_err());
    }

    #[test]
    fn max_payload_respects_header_kind_and_frame_limit() {
        let big = |header, header_includes_self, tpdu| FrameConfig {
            header,
            header_includes_self,
            tpdu,
            max_frame_len: 1 << 20,
        };
        assert_eq!(
            big(LengthHeader::Ascii2, false, false).max_payload_len(),
            99
        );
        assert_eq!(big(LengthHeader::Ascii2, true, true).max_payload_len(), 92);
        assert_eq!(
            big(LengthHeader::Ascii4, false, false).max_payload_len(),
            9999
        );
        assert_eq!(
            big(LengthHeader::Binary2, false, false).max_payload_len(),
            65535
        );
        assert_eq!(
            big(LengthHeader::Binary4, false, true).max_payload_len(),
            (1 << 20) - 4 - 5
        );
        let tiny = FrameConfig {
            max_frame_len: 3,
            ..FrameConfig::default()
        };
        assert_eq!(tiny.max_payload_len(), 1);
        let useless = FrameConfig {
            max_frame_len: 2,
            ..FrameConfig::default()
        };
        assert_eq!(useless.max_payload_len(), 0);
    }

    #[test]
    fn largest_payload_of_each_header_kind_round_trips() {
        for header in ALL_HEADERS {
            let cfg = FrameConfig {
                header,
                max_frame_len: 70_000,
                ..FrameConfig::default()
            };
            let frame = Frame::new(vec![0xA5; cfg.max_payload_len()]);
            let wire = encode(cfg, &frame).unwrap();
            assert_eq!(
                wire.len(),
                cfg.max_frame_len
                    .min(header.max_value() + header.encoded_len())
            );
            assert_eq!(decode_all(cfg, &wire).unwrap(), vec![frame]);
        }
    }

    #[test]
    fn frame_fed_one_byte_at_a_time_decodes_only_when_complete() {
        for cfg in all_configs() {
            let frame = sample_frame(&cfg, b"\x02\x00hello iso");
            let wire = encode(cfg, &frame).unwrap();
            let mut codec = FrameCodec::new(cfg);
            let mut buf = BytesMut::new();
            for (i, byte) in wire.iter().enumerate() {
                buf.put_u8(*byte);
                let decoded = codec.decode(&mut buf).unwrap();
                if i + 1 < wire.len() {
                    assert_eq!(decoded, None, "{cfg:?} after {} bytes", i + 1);
                } else {
                    assert_eq!(decoded, Some(frame.clone()), "{cfg:?}");
                }
            }
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn frame_split_at_every_position_decodes_identically() {
        for cfg in all_configs() {
            let frame = sample_frame(&cfg, b"0800\x82\x20");
            let wire = encode(cfg, &frame).unwrap();
            for split in 0..wire.len() {
                let mut codec = FrameCodec::new(cfg);
                let mut buf = BytesMut::from(&wire[..split]);
                assert_eq!(codec.decode(&mut buf).unwrap(), None);
                buf.extend_from_slice(&wire[split..]);
                assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame.clone()));
                assert!(buf.is_empty());
                assert_eq!(decode_one(&cfg, &wire[..split]).unwrap(), None);
            }
        }
    }

    #[test]
    fn two_frames_in_one_buffer_decode_in_order_and_leave_a_partial_third() {
        for cfg in all_configs() {
            let first = sample_frame(&cfg, b"first");
            let second = sample_frame(&cfg, b"second!");
            let mut wire = encode(cfg, &first).unwrap();
            let first_len = wire.len();
            wire.extend(encode(cfg, &second).unwrap());
            let third = encode(cfg, &sample_frame(&cfg, b"third")).unwrap();
            wire.extend_from_slice(&third[..third.len() - 1]);

            let mut codec = FrameCodec::new(cfg);
            let mut buf = BytesMut::from(&wire[..]);
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(first.clone()));
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(second));
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert_eq!(&buf[..], &third[..third.len() - 1]);

            assert_eq!(decode_one(&cfg, &wire).unwrap(), Some((first, first_len)));
        }
    }

    #[test]
    fn incomplete_frame_reserves_the_missing_capacity() {
        let mut codec = FrameCodec::new(config(LengthHeader::Binary2));
        let mut buf = BytesMut::from(&b"\x03\xe8ab"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 2 + 1000, "capacity {}", buf.capacity());
    }

    #[test]
    fn non_digit_ascii_length_is_reported_as_text_and_hex_with_its_offset() {
        let cfg = config(LengthHeader::Ascii4);
        let mut wire = encode(cfg, &Frame::new(&b"ok"[..])).unwrap();
        wire.extend_from_slice(b"00x\x01rest");
        let mut codec = FrameCodec::new(cfg);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let err = codec.decode(&mut buf).unwrap_err();
        match &err {
            FrameError::BadAsciiLength { found, offset } => {
                assert_eq!(found.as_bytes(), b"00x\x01");
                assert_eq!(*offset, 6);
            }
            other => panic!("expected BadAsciiLength, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "length header at byte offset 6: expected 4 ASCII decimal digits, \
             found \"00x\\x01\" (hex 30307801)"
        );
        assert!(err.is_fatal());

        let err = decode_one(&config(LengthHeader::Ascii2), b"-1abc").unwrap_err();
        assert!(
            matches!(err, FrameError::BadAsciiLength { offset: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn declared_length_above_max_frame_len_is_refused_before_buffering() {
        let cfg = FrameConfig {
            header: LengthHeader::Binary4,
            max_frame_len: 1024,
            ..FrameConfig::default()
        };
        let mut codec = FrameCodec::new(cfg);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xffab"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Oversized {
                    length: 0xffff_ffff,
                    max: 1020,
                    offset: 0
                }
            ),
            "{err:?}"
        );
        assert!(buf.capacity() < 1 << 20, "capacity {}", buf.capacity());
        assert!(err.to_string().contains("1020"), "{err}");
        assert!(err.is_fatal());

        // Exactly at the limit is fine, one past is not.
        let at_limit = decode_one(&cfg, &[0, 0, 0x03, 0xfc]).unwrap();
        assert_eq!(at_limit, None);
        assert!(matches!(
            decode_one(&cfg, &[0, 0, 0x03, 0xfd]),
            Err(FrameError::Oversized { length: 1021, .. })
        ));
    }

    #[test]
    fn zero_length_message_is_undersized() {
        let err = decode_one(&config(LengthHeader::Binary2), b"\x00\x00").unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Undersized {
                    length: 0,
                    minimum: 1,
                    offset: 0
                }
            ),
            "{err:?}"
        );
        assert!(err.is_fatal());
        assert!(err.to_string().contains("declares 0 bytes"), "{err}");
    }

    #[test]
    fn length_including_self_but_smaller_than_the_header_is_undersized() {
        let cfg = FrameConfig {
            header: LengthHeader::Ascii4,
            header_includes_self: true,
            ..FrameConfig::default()
        };
        for wire in [&b"0003abc"[..], b"0004abc"] {
            let err = decode_one(&cfg, wire).unwrap_err();
            assert!(
                matches!(err, FrameError::Undersized { minimum: 5, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn length_not_covering_the_tpdu_and_a_message_byte_is_undersized() {
        let cfg = FrameConfig {
            tpdu: true,
            ..FrameConfig::default()
        };
        for length in [3u8, 5] {
            let wire = [0, length, 0x60, 0, 1, 0, 2, b'x'];
            let err = decode_one(&cfg, &wire).unwrap_err();
            assert!(
                matches!(err, FrameError::Undersized { minimum: 6, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        let cfg = config(LengthHeader::Binary2);
        let mut codec = FrameCodec::new(cfg);
        let mut buf = BytesMut::from(&b"\x00\x01a\x00\x05ab"[..]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_some());
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::Truncated {
                    needed: 7,
                    received: 4,
                    offset: 3
                }
            ),
            "{err:?}"
        );
        assert!(err.is_fatal());

        let mut half_header = BytesMut::from(&b"\x00"[..]);
        assert!(matches!(
            FrameCodec::new(cfg).decode_eof(&mut half_header),
            Err(FrameError::Truncated {
                needed: 2,
                received: 1,
                ..
            })
        ));
        assert_eq!(
            FrameCodec::new(cfg)
                .decode_eof(&mut BytesMut::new())
                .unwrap(),
            None
        );
    }

    #[test]
    fn payload_too_long_for_the_header_kind_is_refused_not_truncated() {
        let cfg = FrameConfig {
            header: LengthHeader::Ascii2,
            max_frame_len: 1 << 20,
            ..FrameConfig::default()
        };
        let mut dst = BytesMut::from(&b"earlier"[..]);
        let err = FrameCodec::new(cfg)
            .encode(Frame::new(vec![b'x'; 100]), &mut dst)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::PayloadTooLong {
                    length: 100,
                    max: 99
                }
            ),
            "{err:?}"
        );
        assert_eq!(&dst[..], b"earlier", "a refused frame writes nothing");
        assert!(!err.is_fatal());

        let cfg = FrameConfig {
            max_frame_len: 1 << 20,
            ..FrameConfig::default()
        };
        assert!(matches!(
            encode_frame(&cfg, &Frame::new(vec![0; 65_536])),
            Err(FrameError::PayloadTooLong { max: 65_535, .. })
        ));
        assert!(matches!(
            encode_frame(&FrameConfig::default(), &Frame::new(vec![0; 8191])),
            Err(FrameError::PayloadTooLong { max: 8190, .. })
        ));
    }

    #[test]
    fn empty_payload_is_refused() {
        let err = encode_frame(&FrameConfig::default(), &Frame::new(Bytes::new())).unwrap_err();
        assert!(matches!(err, FrameError::EmptyPayload), "{err:?}");
        assert!(!err.is_fatal());
    }

    #[test]
    fn tpdu_presence_must_match_the_framing() {
        let with = FrameConfig {
            tpdu: true,
            ..FrameConfig::default()
        };
        let err = encode_frame(&with, &Frame::new(&b"x"[..])).unwrap_err();
        assert!(matches!(err, FrameError::TpduMismatch { expected: true }));
        assert_eq!(
            err.to_string(),
            "frame has no TPDU but this framing expects one"
        );
        assert!(!err.is_fatal());

        let err =
            encode_frame(&FrameConfig::default(), &Frame::with_tpdu(TPDU, &b"x"[..])).unwrap_err();
        assert!(matches!(err, FrameError::TpduMismatch { expected: false }));
        assert_eq!(
            err.to_string(),
            "frame has a TPDU but this framing expects none"
        );
    }

    #[test]
    fn io_errors_convert_and_are_fatal() {
        let err = FrameError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(err, FrameError::Io(_)));
        assert!(err.is_fatal());
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn error_offsets_count_bytes_decoded_on_this_stream() {
        let cfg = config(LengthHeader::Binary2);
        let mut codec = FrameCodec::new(cfg);
        let mut buf = BytesMut::from(&b"\x00\x02ab\x00\x01c\x00\x00"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Undersized { offset: 7, .. })
        ));
    }

    fn any_header() -> impl Strategy<Value = LengthHeader> {
        prop::sample::select(ALL_HEADERS.to_vec())
    }

    fn any_config() -> impl Strategy<Value = FrameConfig> {
        (any_header(), any::<bool>(), any::<bool>(), 16usize..=12_000).prop_map(
            |(header, header_includes_self, tpdu, max_frame_len)| FrameConfig {
                header,
                header_includes_self,
                tpdu,
                max_frame_len,
            },
        )
    }

    /// A config and a frame it can carry, with lengths biased to the edges.
    fn config_and_frame() -> impl Strategy<Value = (FrameConfig, Frame)> {
        any_config().prop_flat_map(|cfg| {
            let max = cfg.max_payload_len();
            let len = prop_oneof![Just(1), Just(max), 1..=max];
            let payload = len.prop_flat_map(|n| prop::collection::vec(any::<u8>(), n));
            (Just(cfg), payload, any::<[u8; 5]>()).prop_map(|(cfg, payload, tpdu)| {
                let frame = Frame {
                    tpdu: cfg.tpdu.then_some(Tpdu(tpdu)),
                    payload: payload.into(),
                };
                (cfg, frame)
            })
        })
    }

    /// Decodes until the codec wants more input or fails; never more frames than bytes.
    fn drain(codec: &mut FrameCodec, buf: &mut BytesMut) -> Result<usize, FrameError> {
        let mut frames = 0;
        loop {
            let before = buf.len();
            match codec.decode(buf)? {
                Some(frame) => {
                    assert!(buf.len() < before, "a decoded frame consumes input");
                    assert!(!frame.payload.is_empty());
                    frames += 1;
                }
                None => return Ok(frames),
            }
        }
    }

    proptest! {
        #[test]
        fn encoded_frames_decode_to_the_same_frame((cfg, frame) in config_and_frame()) {
            let wire = encode(cfg, &frame)?;
            prop_assert_eq!(&wire, &encode_frame(&cfg, &frame)?);
            prop_assert!(wire.len() <= cfg.max_frame_len);
            prop_assert_eq!(decode_all(cfg, &wire)?, vec![frame.clone()]);
            prop_assert_eq!(decode_one(&cfg, &wire)?, Some((frame, wire.len())));
        }

        #[test]
        fn frames_split_at_any_point_decode_identically(
            (cfg, frame) in config_and_frame(),
            split in any::<prop::sample::Index>(),
        ) {
            let wire = encode(cfg, &frame)?;
            let split = split.index(wire.len());
            let mut codec = FrameCodec::new(cfg);
            let mut buf = BytesMut::from(&wire[..split]);
            prop_assert_eq!(codec.decode(&mut buf)?, None);
            buf.extend_from_slice(&wire[split..]);
            prop_assert_eq!(codec.decode(&mut buf)?, Some(frame));
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(
            cfg in any_config(),
            bytes in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut codec = FrameCodec::new(cfg);
            let mut buf = BytesMut::from(&bytes[..]);
            match drain(&mut codec, &mut buf) {
                Ok(frames) => prop_assert!(frames <= bytes.len()),
                Err(err) => prop_assert!(err.is_fatal(), "{:?}", err),
            }
            let _ = codec.decode_eof(&mut buf);
            let _ = decode_one(&cfg, &bytes);
        }

        #[test]
        fn corrupted_frame_streams_never_panic_the_decoder(
            (cfg, frame) in config_and_frame(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut wire = encode(cfg, &frame)?;
            wire.extend(encode(cfg, &frame)?);
            for (at, value) in flips {
                let at = at.index(wire.len());
                wire[at] = value;
            }
            let mut codec = FrameCodec::new(cfg);
            let mut buf = BytesMut::from(&wire[..]);
            if let Err(err) = drain(&mut codec, &mut buf) {
                prop_assert!(err.is_fatal(), "{:?}", err);
            }
        }
    }
}
