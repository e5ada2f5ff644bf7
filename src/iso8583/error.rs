//! The one error type of the codec. Every error names the part of the message that
//! failed (MTI, a bitmap or a field), the byte offset, what was expected and what
//! was found, and carries a few bytes around the offset to show as a hex dump.

use std::fmt;

use super::spec::ContentClass;

/// The part of a message an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Mti,
    /// 1 = primary, 2 = secondary, 3 = tertiary.
    Bitmap(u8),
    Field(u8),
    /// The whole message (bytes left over after the last field).
    Message,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Mti => f.write_str("MTI"),
            Part::Bitmap(1) => f.write_str("primary bitmap"),
            Part::Bitmap(2) => f.write_str("secondary bitmap"),
            Part::Bitmap(_) => f.write_str("tertiary bitmap"),
            Part::Field(n) => write!(f, "field {n}"),
            Part::Message => f.write_str("message"),
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("expected {expected} more bytes, found {available}")]
    Truncated { expected: usize, available: usize },
    #[error("expected a {digits}-digit length prefix, found {found}")]
    BadLengthPrefix { digits: usize, found: String },
    #[error("length {length} is over the maximum {max}")]
    TooLong { length: usize, max: usize },
    #[error("length {length} is not the fixed length {expected}")]
    WrongLength { length: usize, expected: usize },
    #[error("expected {}, found {}", .class.describe(), show_byte(*.found))]
    InvalidContent { class: ContentClass, found: u8 },
    #[error("expected a BCD digit, found nibble {nibble:X}")]
    InvalidBcd { nibble: u8 },
    #[error("expected filler nibble {expected:X}, found {found:X}")]
    BadFiller { expected: u8, found: u8 },
    #[error("expected a hex character 0-9/A-F, found {}", show_byte(*.found))]
    InvalidHex { found: u8 },
    #[error(
        "expected an EBCDIC hex digit (0xF0-0xF9, 0xC1-0xC6 or 0x81-0x86), found 0x{found:02X}"
    )]
    InvalidEbcdicHex { found: u8 },
    #[error("expected an EBCDIC character that maps to printable ASCII, found 0x{found:02X}")]
    InvalidEbcdic { found: u8 },
    #[error("expected four digits, found {found}")]
    BadMti { found: String },
    #[error("bit is set but the spec defines no such field")]
    UndefinedField,
    #[error("bit 65 is set but the spec has no tertiary bitmap (no fields 129-192)")]
    NoTertiaryBitmap,
    #[error("{count} bytes left over after the last field")]
    TrailingBytes { count: usize },
    #[error("expected hex letters all in one case (so the value re-encodes as it was read), found {} after the first letter", show_byte(*.found))]
    MixedHexCase { found: u8 },
    #[error("unknown tag {tag:?}: expected one of {known}")]
    UnknownTag { tag: String, known: String },
    #[error("the spec defines no such subfield: expected one of {known}")]
    NoSuchSubfield { known: String },
    #[error("the spec does not define this field as a composite of subfields")]
    NotComposite,
    #[error("positional subfields are written in order without gaps: expected {expected}, found {found}")]
    SubfieldOrder { expected: String, found: String },
}

impl ErrorKind {
    /// A short fixed name, fit for a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::Truncated { .. } => "truncated",
            ErrorKind::BadLengthPrefix { .. } => "bad_length_prefix",
            ErrorKind::TooLong { .. } => "too_long",
            ErrorKind::WrongLength { .. } => "wrong_length",
            ErrorKind::InvalidContent { .. } => "invalid_content",
            ErrorKind::InvalidBcd { .. } => "invalid_bcd",
            ErrorKind::BadFiller { .. } => "bad_filler",
            ErrorKind::InvalidHex { .. } => "invalid_hex",
            ErrorKind::InvalidEbcdicHex { .. } => "invalid_ebcdic_hex",
            ErrorKind::InvalidEbcdic { .. } => "invalid_ebcdic",
            ErrorKind::BadMti { .. } => "bad_mti",
            ErrorKind::UndefinedField => "undefined_field",
            ErrorKind::NoTertiaryBitmap => "no_tertiary_bitmap",
            ErrorKind::TrailingBytes { .. } => "trailing_bytes",
            ErrorKind::MixedHexCase { .. } => "mixed_hex_case",
            ErrorKind::UnknownTag { .. } => "unknown_tag",
            ErrorKind::NoSuchSubfield { .. } => "no_such_subfield",
            ErrorKind::NotComposite => "not_composite",
            ErrorKind::SubfieldOrder { .. } => "subfield_order",
        }
    }
}

/// Whether the error was met reading wire bytes or checking a value to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Decode,
    Encode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    part: Part,
    direction: Direction,
    offset: usize,
    kind: ErrorKind,
    /// The dotted subfield path (`48.22`) when the error is inside a composite.
    subfield: Option<String>,
    window_start: usize,
    window: Vec<u8>,
}

/// A codec error. Boxed so `Result<Message, CodecError>` stays one word wide on the
/// hot path; building one allocates, which only the failure path pays.
#[derive(Clone, PartialEq, Eq)]
pub struct CodecError(Box<Inner>);

/// Bytes shown either side of the offset in the hex dump.
const WINDOW: usize = 8;

impl CodecError {
    /// An error met decoding `input` at `offset`.
    pub(crate) fn decode(part: Part, offset: usize, kind: ErrorKind, input: &[u8]) -> Self {
        Self::new(part, Direction::Decode, offset, kind, input)
    }

    /// An error in a value to encode, `offset` counted within that value.
    pub(crate) fn encode(part: Part, offset: usize, kind: ErrorKind, value: &[u8]) -> Self {
        Self::new(part, Direction::Encode, offset, kind, value)
    }

    fn new(part: Part, direction: Direction, offset: usize, kind: ErrorKind, bytes: &[u8]) -> Self {
        let start = offset.saturating_sub(WINDOW).min(bytes.len());
        let end = offset.saturating_add(WINDOW).min(bytes.len());
        CodecError(Box::new(Inner {
            part,
            direction,
            offset,
            kind,
            subfield: None,
            window_start: start,
            window: bytes[start..end].to_vec(),
        }))
    }

    /// Names the subfield the error is in (`48.22`), unless a deeper one is
    /// already named.
    pub(crate) fn in_subfield(mut self, path: &str) -> Self {
        if self.0.subfield.is_none() {
            self.0.subfield = Some(path.to_string());
        }
        self
    }

    /// The dotted subfield path (`48.22`, `127.25.3`) of an error inside a
    /// composite field; [`CodecError::field`] is then the top-level field.
    pub fn subfield(&self) -> Option<&str> {
        self.0.subfield.as_deref()
    }

    pub fn part(&self) -> Part {
        self.0.part
    }

    /// The field number, when the error is about a field.
    pub fn field(&self) -> Option<u8> {
        match self.0.part {
            Part::Field(n) => Some(n),
            _ => None,
        }
    }

    /// Byte offset in the message (decode) or in the field's value (encode).
    pub fn offset(&self) -> usize {
        self.0.offset
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    pub fn direction(&self) -> Direction {
        self.0.direction
    }

    /// The bytes around the offset as hex, the byte at the offset in brackets.
    pub fn hex_dump(&self) -> String {
        let mut out = String::new();
        for (i, b) in self.0.window.iter().enumerate() {
            if !out.is_empty() {
                out.push(' ');
            }
            if self.0.window_start + i == self.0.offset {
                out.push_str(&format!("[{b:02X}]"));
            } else {
                out.push_str(&format!("{b:02X}"));
            }
        }
        if self.0.offset >= self.0.window_start + self.0.window.len() {
            out.push_str(if out.is_empty() { "[end]" } else { " [end]" });
        }
        out
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let where_ = match self.0.direction {
            Direction::Decode => "at byte",
            Direction::Encode => "value byte",
        };
        let part = match &self.0.subfield {
            Some(path) => format!("field {path}"),
            None => self.0.part.to_string(),
        };
        write!(
            f,
            "{part} {where_} {}: {} (bytes from {}: {})",
            self.0.offset,
            self.0.kind,
            self.0.window_start,
            self.hex_dump()
        )
    }
}

impl fmt::Debug for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug goes to logs: no raw bytes there, the window may hold a PAN.
        write!(
            f,
            "CodecError {{ part: {}, subfield: {:?}, offset: {}, kind: {:?} }}",
            self.0.part, self.0.subfield, self.0.offset, self.0.kind
        )
    }
}

impl std::error::Error for CodecError {}

/// A byte as a person reads it: `0x41 'A'`.
fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("0x{b:02X} '{}'", char::from(b))
    } else {
        format!("0x{b:02X}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_part_offset_expectation_and_dumps_bytes() {
        let input = b"0100\x00\x00\x00\x00\x00\x00\x00\x00ABC";
        let err = CodecError::decode(
            Part::Field(3),
            12,
            ErrorKind::InvalidContent {
                class: ContentClass::N,
                found: b'A',
            },
            input,
        );
        let text = err.to_string();
        assert!(
            text.starts_with("field 3 at byte 12: expected a digit 0-9, found 0x41 'A'"),
            "{text}"
        );
        assert!(text.contains("[41] 42 43"), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn dump_marks_the_end_when_input_ran_out() {
        let err = CodecError::decode(
            Part::Field(2),
            4,
            ErrorKind::Truncated {
                expected: 2,
                available: 0,
            },
            b"0100",
        );
        assert!(err.hex_dump().ends_with("[end]"), "{}", err.hex_dump());
    }

    #[test]
    fn debug_output_holds_no_raw_bytes() {
        let err = CodecError::decode(
            Part::Field(2),
            0,
            ErrorKind::TrailingBytes { count: 16 },
            b"4111111111111111",
        );
        assert!(!format!("{err:?}").contains("31"));
    }
}
