//! Decoding wire bytes into a [`Message`] and encoding it back, driven by a
//! [`Spec`]. Both directions check every length, every content class and every
//! bitmap bit against the spec; neither can panic on any input. A composite
//! field is kept as its wire bytes; its subfields are read on demand
//! (`composite.rs`). Hex, ASCII or EBCDIC (bitmaps, binary-as-hex values), is
//! written back in the case it was read, so a decoded message re-encodes byte for byte.

use std::borrow::Cow;

use bytes::Bytes;

use super::bitmap::Bitmap;
use super::encoding::{bcd, ebcdic, ebcdic_hex, hex};
use super::error::{CodecError, ErrorKind, Part};
use super::message::{Message, Mti, Slot};
use super::spec::{BcdFiller, ContentClass, Encoding, Field, LengthKind, PadSide, Spec};

/// Bit of each content class in [`BYTE_CLASSES`].
const fn class_bit(class: ContentClass) -> u16 {
    1 << (class as u16)
}

/// For every byte, the classes that allow it: one table load and a mask per
/// byte on the hot path, instead of a branchy test or an indirect call.
static BYTE_CLASSES: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut b = 0usize;
    while b < 256 {
        let c = b as u8;
        let digit = c.is_ascii_digit();
        let alpha = c.is_ascii_alphabetic();
        let space = c == b' ';
        let printable = c.is_ascii_graphic() || space;
        let special = space || c.is_ascii_punctuation();
        let mut bits = class_bit(ContentClass::B);
        if digit {
            bits |= class_bit(ContentClass::N);
        }
        if alpha || space {
            bits |= class_bit(ContentClass::A);
        }
        if special {
            bits |= class_bit(ContentClass::S);
        }
        if alpha || digit || space {
            bits |= class_bit(ContentClass::An);
        }
        if printable && !digit {
            bits |= class_bit(ContentClass::As);
        }
        if printable && !alpha {
            bits |= class_bit(ContentClass::Ns);
        }
        if printable {
            bits |= class_bit(ContentClass::Ans);
        }
        if digit || c == b'=' || c == b'D' {
            bits |= class_bit(ContentClass::Z);
        }
        table[b] = bits;
        b += 1;
    }
    table
};

/// Index of the first byte in `value` that `class` does not allow.
#[inline]
pub(crate) fn invalid_byte(class: ContentClass, value: &[u8]) -> Option<usize> {
    let check = |value: &[u8], class: ContentClass| {
        let mask = class_bit(class);
        value
            .iter()
            .position(|&b| BYTE_CLASSES[usize::from(b)] & mask == 0)
    };
    match class {
        ContentClass::B => None,
        ContentClass::XN => match value.first() {
            Some(b'C' | b'D') => check(&value[1..], ContentClass::N).map(|i| i + 1),
            _ => Some(0),
        },
        _ => check(value, class),
    }
}

/// Units (digits, characters or bytes) a value counts for its length.
#[inline]
fn units(field: &Field, value: &[u8]) -> usize {
    match field.class {
        ContentClass::XN => value.len().saturating_sub(1),
        _ => value.len(),
    }
}

impl Message {
    /// Decodes one message that fills `input` exactly. Values on an ASCII or
    /// binary wire are not copied: the message keeps `input` and points into it.
    pub fn decode(spec: &Spec, input: Bytes) -> Result<Message, CodecError> {
        Message::decode_or_salvage(spec, input, false).map_err(|(e, _)| e)
    }

    /// For answering a message that does not decode: its MTI and every field
    /// that decodes, up to the first whose extent cannot be read (a field too
    /// long or with a bad character is left out and the ones after it are
    /// read, so a refusal echoes the STAN, terminal id and RRN that follow
    /// a bad card number). None if not even the MTI and the bitmaps can be
    /// read.
    pub fn decode_readable_part(spec: &Spec, input: Bytes) -> Option<Message> {
        match Message::decode_or_salvage(spec, input, true) {
            Ok(msg) | Err((_, Some(msg))) => Some(msg),
            Err((_, None)) => None,
        }
    }

    /// Decodes `input`; with `salvage`, an error in a field (or after the
    /// last) comes with the message of the fields decoded before it.
    #[inline(always)]
    fn decode_or_salvage(
        spec: &Spec,
        input: Bytes,
        salvage: bool,
    ) -> Result<Message, (CodecError, Option<Message>)> {
        let mut d = Decoder::new(spec, &input, 0);
        let alone = |e: CodecError| (e, None);
        let mti = d.mti().map_err(alone)?;
        let mut wire = Bitmap::default();
        let mut bitmap_at = [0usize; 3];
        bitmap_at[0] = d.pos;
        wire.0[0] = d.bitmap(1).map_err(alone)?;
        if wire.0[0] & Bitmap::bit(1) != 0 {
            bitmap_at[1] = d.pos;
            wire.0[1] = d.bitmap(2).map_err(alone)?;
            if wire.0[1] & Bitmap::bit(65) != 0 {
                if !spec.has_tertiary_bitmap() {
                    return Err(alone(d.error(
                        Part::Bitmap(2),
                        bitmap_at[1],
                        ErrorKind::NoTertiaryBitmap,
                    )));
                }
                bitmap_at[2] = d.pos;
                wire.0[2] = d.bitmap(3).map_err(alone)?;
            }
        }
        let mut present = wire;
        present.remove(1);
        present.remove(65);
        let mut msg = Message {
            mti,
            present,
            slots: Vec::with_capacity(present.count()),
            raw: Bytes::new(),
            owned: Vec::new(),
            lower_bitmaps: d.bitmap_case == Some(true),
        };
        // What was read before an error, as a message of its own.
        let salvaged = |mut msg: Message, input: &Bytes| {
            salvage.then(|| {
                let mut read = Bitmap::default();
                for slot in &msg.slots {
                    read.insert(slot.field);
                }
                msg.present = read;
                msg.raw = input.clone();
                msg
            })
        };
        let mut first_error = None;
        for n in present.iter() {
            let Some(field) = spec.field(n) else {
                let word = usize::from(n - 1) / 64;
                let at = bitmap_at[word] + (usize::from(n - 1) % 64) / 8 * spec.bitmap_len() / 8;
                let e = d.error(Part::Field(n), at, ErrorKind::UndefinedField);
                return Err((e, salvaged(msg, &input)));
            };
            let start = d.pos;
            match d.field(field, &mut msg.owned) {
                Ok(slot) => msg.slots.push(slot),
                // Salvaging: a field whose extent can still be read is left
                // out and the rest read on, so a refusal can echo the STAN,
                // terminal id and RRN that come after a bad card number.
                Err(e) if salvage => {
                    d.pos = start;
                    let resumed = d.skip(field);
                    first_error.get_or_insert(e);
                    if !resumed {
                        break;
                    }
                }
                Err(e) => return Err((e, None)),
            }
        }
        if let Some(e) = first_error {
            return Err((e, salvaged(msg, &input)));
        }
        if d.pos != input.len() {
            let count = input.len() - d.pos;
            let e = d.error(Part::Message, d.pos, ErrorKind::TrailingBytes { count });
            return Err((e, salvaged(msg, &input)));
        }
        msg.raw = input;
        Ok(msg)
    }

    /// The MTI alone, for answering a message whose fields fail to decode.
    pub fn peek_mti(spec: &Spec, input: &[u8]) -> Option<Mti> {
        let mut d = Decoder::new(spec, input, 0);
        d.mti().ok()
    }

    /// Decodes a message from a borrowed slice (copies it once).
    pub fn decode_slice(spec: &Spec, input: &[u8]) -> Result<Message, CodecError> {
        Message::decode(spec, Bytes::copy_from_slice(input))
    }

    /// Appends the wire form of the message to `out`. On error `out` is left as
    /// it was.
    pub fn encode_into(&self, spec: &Spec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        let result = self.encode_unchecked_rollback(spec, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The wire form of the message.
    pub fn encode(&self, spec: &Spec) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.owned.len() + self.raw.len() + 64);
        self.encode_into(spec, &mut out)?;
        Ok(out)
    }

    fn encode_unchecked_rollback(&self, spec: &Spec, out: &mut Vec<u8>) -> Result<(), CodecError> {
        write_mti(spec.mti_encoding, self.mti, out);
        let mut words = self.present.0;
        if words[2] != 0 {
            words[1] |= Bitmap::bit(65);
        }
        if words[1] != 0 {
            words[0] |= Bitmap::bit(1);
        }
        let lower = self.lower_bitmaps;
        write_bitmap(spec.bitmap_encoding, words[0], lower, out);
        if words[1] != 0 {
            write_bitmap(spec.bitmap_encoding, words[1], lower, out);
        }
        if words[2] != 0 {
            write_bitmap(spec.bitmap_encoding, words[2], lower, out);
        }
        for slot in &self.slots {
            let value = self.value(slot);
            let Some(field) = spec.field(slot.field) else {
                return Err(CodecError::encode(
                    Part::Field(slot.field),
                    0,
                    ErrorKind::UndefinedField,
                    &[],
                ));
            };
            encode_field_cased(field, value, slot.lower, out)?;
        }
        Ok(())
    }
}

fn write_mti(encoding: Encoding, mti: Mti, out: &mut Vec<u8>) {
    let digits = mti.as_bytes();
    match encoding {
        Encoding::Bcd => {
            out.push((digits[0] - b'0') << 4 | (digits[1] - b'0'));
            out.push((digits[2] - b'0') << 4 | (digits[3] - b'0'));
        }
        Encoding::Ebcdic => out.extend(digits.iter().map(|d| d - b'0' + 0xF0)),
        _ => out.extend_from_slice(digits),
    }
}

fn write_bitmap(encoding: Encoding, word: u64, lower: bool, out: &mut Vec<u8>) {
    match encoding {
        Encoding::Hex => hex::encode_cased_into(&word.to_be_bytes(), lower, out),
        Encoding::EbcdicHex => ebcdic_hex::encode_cased_into(&word.to_be_bytes(), lower, out),
        _ => out.extend_from_slice(&word.to_be_bytes()),
    }
}

/// Appends field `field` (its length prefix, then its value) to `out`.
pub(crate) fn encode_field(
    field: &Field,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    encode_field_cased(field, value, false, out)
}

/// [`encode_field`], hex written lowercase if `lower`.
#[inline]
fn encode_field_cased(
    field: &Field,
    value: &[u8],
    lower: bool,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    if field.composite.is_some() {
        // Already wire bytes: its subfields were checked when they were set.
        super::composite::check_raw_length(field, value)?;
        if field.length != LengthKind::Fixed {
            write_prefix(field, value.len(), out);
        }
        out.extend_from_slice(value);
        return Ok(());
    }
    let (content, len) = checked_value(field, value)?;
    if field.length != LengthKind::Fixed {
        write_prefix(field, len, out);
    }
    write_cased_value(field, &content, len, lower, out)
        .map_err(|(i, k)| CodecError::encode(Part::Field(field.number), i, k, value))
}

/// `value` checked against the field's class and length, padded to a fixed
/// length where the field pads; with its length in units.
pub(crate) fn checked_value<'v>(
    field: &Field,
    value: &'v [u8],
) -> Result<(Cow<'v, [u8]>, usize), CodecError> {
    let part = Part::Field(field.number);
    let err = |offset, kind| CodecError::encode(part, offset, kind, value);
    if let Some(i) = invalid_byte(field.class, value) {
        let kind = ErrorKind::InvalidContent {
            class: field.class,
            found: value.get(i).copied().unwrap_or_default(),
        };
        return Err(err(i, kind));
    }
    let len = units(field, value);
    if len > field.max {
        return Err(err(
            field.max,
            ErrorKind::TooLong {
                length: len,
                max: field.max,
            },
        ));
    }
    if field.length == LengthKind::Fixed && len < field.max {
        if field.pad == PadSide::None {
            let kind = ErrorKind::WrongLength {
                length: len,
                expected: field.max,
            };
            return Err(err(len, kind));
        }
        let fill = field.max - len;
        let mut padded = Vec::with_capacity(value.len() + fill);
        match field.pad {
            PadSide::Left => {
                padded.resize(fill, field.pad_char);
                padded.extend_from_slice(value);
            }
            _ => {
                padded.extend_from_slice(value);
                padded.resize(value.len() + fill, field.pad_char);
            }
        }
        if let Some(i) = invalid_byte(field.class, &padded) {
            let kind = ErrorKind::InvalidContent {
                class: field.class,
                found: padded[i],
            };
            return Err(err(i, kind));
        }
        return Ok((Cow::Owned(padded), field.max));
    }
    Ok((Cow::Borrowed(value), len))
}

fn write_prefix(field: &Field, len: usize, out: &mut Vec<u8>) {
    let digits = field.length.prefix_digits();
    match field.prefix {
        Encoding::Binary => {
            if field.prefix_len() == 1 {
                out.push(len as u8);
            } else {
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        Encoding::Hex => {
            // The binary prefix's bytes as hex text: `0A` or `010F`.
            let bytes = (len as u16).to_be_bytes();
            hex::encode_into(&bytes[2 - field.prefix_len() / 2..], out);
        }
        Encoding::Bcd => {
            let text = format!("{len:0digits$}");
            // Already validated digits; pack cannot fail on them.
            let _ = bcd::pack_into(text.as_bytes(), BcdFiller::Left, false, out);
        }
        encoding => {
            // ASCII digits, or EBCDIC digits (0xF0 + d): the prefix is at most 6.
            let zero = if encoding == Encoding::Ebcdic {
                0xF0
            } else {
                b'0'
            };
            for place in (0..digits as u32).rev() {
                out.push(zero + (len / 10usize.pow(place) % 10) as u8);
            }
        }
    }
}

/// Writes an already validated value; errors are (value index, kind).
pub(crate) fn write_value(
    field: &Field,
    value: &[u8],
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), (usize, ErrorKind)> {
    write_cased_value(field, value, len, false, out)
}

#[inline]
fn write_cased_value(
    field: &Field,
    value: &[u8],
    len: usize,
    lower: bool,
    out: &mut Vec<u8>,
) -> Result<(), (usize, ErrorKind)> {
    match field.encoding {
        Encoding::Ascii | Encoding::Binary => out.extend_from_slice(value),
        Encoding::Hex => hex::encode_cased_into(value, lower, out),
        Encoding::EbcdicHex => ebcdic_hex::encode_cased_into(value, lower, out),
        Encoding::Ebcdic => {
            for (i, &b) in value.iter().enumerate() {
                let e = ebcdic::from_ascii(b).ok_or((
                    i,
                    ErrorKind::InvalidContent {
                        class: field.class,
                        found: b,
                    },
                ))?;
                out.push(e);
            }
        }
        Encoding::Bcd => {
            let (sign, digits) = match field.class {
                ContentClass::XN => value.split_at(1),
                _ => (&[][..], value),
            };
            out.extend_from_slice(sign);
            debug_assert_eq!(digits.len(), len);
            let separator_ok = field.class == ContentClass::Z;
            bcd::pack_into(digits, field.bcd_filler, separator_ok, out).map_err(|e| match e {
                bcd::BcdError::BadDigit { index, found } => (
                    index + sign.len(),
                    ErrorKind::InvalidContent {
                        class: field.class,
                        found,
                    },
                ),
                _ => (0, ErrorKind::InvalidBcd { nibble: 0 }),
            })?;
        }
    }
    Ok(())
}

/// Reading state over one input buffer (for a composite's subfields, the
/// message up to the end of the composite, so offsets stay the message's).
pub(crate) struct Decoder<'a> {
    pub(crate) spec: &'a Spec,
    pub(crate) input: &'a [u8],
    pub(crate) pos: usize,
    /// The case of the letters in the hex bitmaps read so far.
    bitmap_case: Option<bool>,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(spec: &'a Spec, input: &'a [u8], pos: usize) -> Decoder<'a> {
        Decoder {
            spec,
            input,
            pos,
            bitmap_case: None,
        }
    }

    pub(crate) fn error(&self, part: Part, offset: usize, kind: ErrorKind) -> CodecError {
        CodecError::decode(part, offset, kind, self.input)
    }

    #[inline]
    pub(crate) fn take(&mut self, part: Part, n: usize) -> Result<&'a [u8], CodecError> {
        let available = self.input.len() - self.pos;
        if n > available {
            let kind = ErrorKind::Truncated {
                expected: n,
                available,
            };
            return Err(self.error(part, self.pos, kind));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn mti(&mut self) -> Result<Mti, CodecError> {
        let encoding = self.spec.mti_encoding;
        let wire = self.take(Part::Mti, if encoding == Encoding::Bcd { 2 } else { 4 })?;
        let digits =
            match encoding {
                Encoding::Bcd => [wire[0] >> 4, wire[0] & 0xF, wire[1] >> 4, wire[1] & 0xF]
                    .map(|n| if n <= 9 { n + b'0' } else { 0 }),
                Encoding::Ebcdic => {
                    [wire[0], wire[1], wire[2], wire[3]].map(|b| ebcdic::to_ascii(b).unwrap_or(0))
                }
                _ => [wire[0], wire[1], wire[2], wire[3]],
            };
        Mti::new(digits).ok_or_else(|| {
            let found = hex::to_string(wire);
            self.error(
                Part::Mti,
                self.pos - wire.len(),
                ErrorKind::BadMti { found },
            )
        })
    }

    fn bitmap(&mut self, which: u8) -> Result<u64, CodecError> {
        let part = Part::Bitmap(which);
        match self.spec.bitmap_encoding {
            Encoding::Hex => {
                let at = self.pos;
                let text = self.take(part, 16)?;
                self.bitmap_case = hex::letter_case(text, self.bitmap_case).map_err(|i| {
                    self.error(part, at + i, ErrorKind::MixedHexCase { found: text[i] })
                })?;
                let mut word = 0u64;
                for (i, &c) in text.iter().enumerate() {
                    let n = hex::nibble(c).ok_or_else(|| {
                        self.error(part, at + i, ErrorKind::InvalidHex { found: c })
                    })?;
                    word = word << 4 | u64::from(n);
                }
                Ok(word)
            }
            Encoding::EbcdicHex => {
                let at = self.pos;
                let text = self.take(part, 16)?;
                let mut word = 0u64;
                for (i, &c) in text.iter().enumerate() {
                    let n = ebcdic_hex::nibble(c).ok_or_else(|| {
                        self.error(part, at + i, ErrorKind::InvalidEbcdicHex { found: c })
                    })?;
                    word = word << 4 | u64::from(n);
                }
                self.bitmap_case =
                    ebcdic_hex::letter_case(text, self.bitmap_case).map_err(|i| {
                        self.error(part, at + i, ErrorKind::MixedHexCase { found: text[i] })
                    })?;
                Ok(word)
            }
            _ => {
                let bytes = self.take(part, 8)?;
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                Ok(u64::from_be_bytes(word))
            }
        }
    }

    fn prefix(&mut self, field: &Field) -> Result<usize, CodecError> {
        let at = self.pos;
        let len = self.prefix_value(field)?;
        if len > field.max {
            return Err(self.error(
                Part::Field(field.number),
                at,
                ErrorKind::TooLong {
                    length: len,
                    max: field.max,
                },
            ));
        }
        Ok(len)
    }

    /// Moves past `field` without checking its content or its maximum:
    /// whether its extent could be read (then the next field can be).
    fn skip(&mut self, field: &Field) -> bool {
        let len = match field.length {
            LengthKind::Fixed => field.max,
            _ => match self.prefix_value(field) {
                Ok(len) => len,
                Err(_) => return false,
            },
        };
        self.take(Part::Field(field.number), field.wire_len(len))
            .is_ok()
    }

    /// The length a variable field's prefix says, whatever the field's maximum.
    fn prefix_value(&mut self, field: &Field) -> Result<usize, CodecError> {
        let part = Part::Field(field.number);
        let at = self.pos;
        let digits = field.length.prefix_digits();
        let wire = self.take(part, field.prefix_len())?;
        let bad = |d: &Self| {
            let found = match field.prefix {
                Encoding::Ascii | Encoding::Hex => format!("{:?}", String::from_utf8_lossy(wire)),
                _ => format!("0x{}", hex::to_string(wire)),
            };
            d.error(part, at, ErrorKind::BadLengthPrefix { digits, found })
        };
        let mut len = 0usize;
        match field.prefix {
            Encoding::Binary => {
                for &b in wire {
                    len = len << 8 | usize::from(b);
                }
            }
            Encoding::Hex => {
                for &b in wire {
                    let d = (b as char).to_digit(16).ok_or_else(|| bad(self))?;
                    len = len << 4 | d as usize;
                }
            }
            Encoding::Bcd => {
                for &b in wire {
                    let (hi, lo) = (b >> 4, b & 0xF);
                    if hi > 9 || lo > 9 {
                        return Err(bad(self));
                    }
                    len = len * 100 + usize::from(hi) * 10 + usize::from(lo);
                }
            }
            encoding => {
                for &b in wire {
                    let d = if encoding == Encoding::Ebcdic {
                        b.wrapping_sub(0xF0)
                    } else {
                        b.wrapping_sub(b'0')
                    };
                    if d > 9 {
                        return Err(bad(self));
                    }
                    len = len * 10 + usize::from(d);
                }
            }
        }
        Ok(len)
    }

    #[inline]
    pub(crate) fn field(&mut self, field: &Field, owned: &mut Vec<u8>) -> Result<Slot, CodecError> {
        let len = match field.length {
            LengthKind::Fixed => field.max,
            _ => self.prefix(field)?,
        };
        self.content(field, len, owned)
    }

    /// Reads the value of `field`, `len` units long, that starts here.
    #[inline]
    pub(crate) fn content(
        &mut self,
        field: &Field,
        len: usize,
        owned: &mut Vec<u8>,
    ) -> Result<Slot, CodecError> {
        let part = Part::Field(field.number);
        let at = self.pos;
        let wire = self.take(part, field.wire_len(len))?;
        let content_error = |d: &Self, i: usize, found: u8| {
            let kind = ErrorKind::InvalidContent {
                class: field.class,
                found,
            };
            d.error(part, at + i, kind)
        };
        let raw = Slot {
            field: field.number,
            owned: false,
            start: at as u32,
            len: wire.len() as u32,
            lower: false,
        };
        match field.encoding {
            Encoding::Ascii | Encoding::Binary => {
                // A composite's content is checked subfield by subfield, on demand.
                if field.composite.is_none() {
                    if let Some(i) = invalid_byte(field.class, wire) {
                        return Err(content_error(self, i, wire[i]));
                    }
                }
                return Ok(raw);
            }
            // Subfields have their own encodings: keep the wire bytes as they are.
            Encoding::Ebcdic if field.composite.is_some() => return Ok(raw),
            _ => {}
        }
        let mut lower = false;
        let start = owned.len();
        if owned.capacity() == 0 {
            owned.reserve(self.input.len() * 2);
        }
        match field.encoding {
            Encoding::Ebcdic => {
                for (i, &b) in wire.iter().enumerate() {
                    let a = ebcdic::to_ascii(b).ok_or_else(|| {
                        self.error(part, at + i, ErrorKind::InvalidEbcdic { found: b })
                    })?;
                    owned.push(a);
                }
            }
            Encoding::Hex => {
                hex::decode_into(wire, owned).map_err(|i| {
                    let found = wire.get(i).copied().unwrap_or(0);
                    self.error(part, at + i, ErrorKind::InvalidHex { found })
                })?;
                lower = hex::letter_case(wire, None)
                    .map_err(|i| {
                        owned.truncate(start);
                        self.error(part, at + i, ErrorKind::MixedHexCase { found: wire[i] })
                    })?
                    .unwrap_or(false);
            }
            Encoding::EbcdicHex => {
                ebcdic_hex::decode_into(wire, owned).map_err(|i| {
                    owned.truncate(start);
                    let found = wire.get(i).copied().unwrap_or(0);
                    self.error(part, at + i, ErrorKind::InvalidEbcdicHex { found })
                })?;
                lower = ebcdic_hex::letter_case(wire, None)
                    .map_err(|i| {
                        owned.truncate(start);
                        self.error(part, at + i, ErrorKind::MixedHexCase { found: wire[i] })
                    })?
                    .unwrap_or(false);
            }
            _ => {
                let (sign, packed) = match field.class {
                    ContentClass::XN => wire.split_at(1),
                    _ => (&[][..], wire),
                };
                owned.extend_from_slice(sign);
                let separator_ok = field.class == ContentClass::Z;
                bcd::unpack_into(packed, len, field.bcd_filler, separator_ok, owned).map_err(
                    |e| match e {
                        bcd::BcdError::BadFiller {
                            index,
                            expected,
                            found,
                        } => self.error(
                            part,
                            at + sign.len() + index,
                            ErrorKind::BadFiller { expected, found },
                        ),
                        bcd::BcdError::BadNibble { index, nibble } => self.error(
                            part,
                            at + sign.len() + index,
                            ErrorKind::InvalidBcd { nibble },
                        ),
                        bcd::BcdError::BadDigit { index, found } => {
                            content_error(self, sign.len() + index, found)
                        }
                    },
                )?;
            }
        }
        if let Some(i) = invalid_byte(field.class, &owned[start..]) {
            let found = owned[start + i];
            owned.truncate(start);
            // Offsets into converted text map back to the wire only for 1:1 encodings.
            let wire_index = if field.encoding == Encoding::Ebcdic {
                i
            } else {
                0
            };
            return Err(content_error(self, wire_index, found));
        }
        Ok(Slot {
            field: field.number,
            owned: true,
            start: start as u32,
            len: (owned.len() - start) as u32,
            lower,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classes as ISO 8583 words them, one byte at a time.
    fn allowed(class: ContentClass, b: u8) -> bool {
        let printable = b.is_ascii_graphic() || b == b' ';
        match class {
            ContentClass::B => true,
            ContentClass::N | ContentClass::XN => b.is_ascii_digit(),
            ContentClass::A => b.is_ascii_alphabetic() || b == b' ',
            ContentClass::S => b == b' ' || b.is_ascii_punctuation(),
            ContentClass::An => b.is_ascii_alphanumeric() || b == b' ',
            ContentClass::As => printable && !b.is_ascii_digit(),
            ContentClass::Ns => printable && !b.is_ascii_alphabetic(),
            ContentClass::Ans => printable,
            ContentClass::Z => b.is_ascii_digit() || b == b'=' || b == b'D',
        }
    }

    #[test]
    fn class_table_matches_the_class_definitions_for_every_byte() {
        use ContentClass::*;
        for class in [A, N, S, An, As, Ns, Ans, B, Z] {
            for b in 0..=255u8 {
                assert_eq!(
                    invalid_byte(class, &[b]).is_none(),
                    allowed(class, b),
                    "class {class} byte {b:#04x}"
                );
            }
        }
    }

    fn ebcdic_hex_spec() -> Spec {
        let toml = "name = \"e\"\nmti_encoding = \"ebcdic\"\nbitmap_encoding = \"ebcdic-hex\"\n\
                    [defaults]\nnumeric = \"ebcdic\"\ntext = \"ebcdic\"\nbinary = \"binary\"\nprefix = \"ebcdic\"\n\
                    [fields.52]\nname = \"PIN\"\nmax = 2\nclass = \"b\"\nencoding = \"ebcdic-hex\"\n";
        Spec::from_toml_str(toml, "e.toml").expect("valid spec")
    }

    /// 0800, bitmap with bit 52 (0000000000001000), field 52 = AB 0f: EBCDIC hex.
    fn ebcdic_hex_wire(pin: [u8; 4]) -> Vec<u8> {
        let mut wire = vec![0xF0, 0xF8, 0xF0, 0xF0];
        wire.extend([0xF0; 12]);
        wire.extend([0xF1, 0xF0, 0xF0, 0xF0]);
        wire.extend(pin);
        wire
    }

    #[test]
    fn ebcdic_hex_decodes_and_encodes_back_byte_for_byte_in_either_case() {
        let spec = ebcdic_hex_spec();
        for pin in [[0xC1, 0xC2, 0xF0, 0xC6], [0x81, 0x82, 0xF0, 0x86]] {
            let wire = ebcdic_hex_wire(pin);
            let message = Message::decode_slice(&spec, &wire).expect("decodes");
            assert_eq!(message.get(52), Some(&[0xAB, 0x0F][..]));
            let mut again = Vec::new();
            message.encode_into(&spec, &mut again).expect("encodes");
            assert_eq!(again, wire);
        }
    }

    #[test]
    fn a_non_ebcdic_hex_byte_is_refused_at_its_offset() {
        let spec = ebcdic_hex_spec();
        // ASCII 'B' (0x42) where an EBCDIC hex digit belongs: byte 21 of the message.
        let err = Message::decode_slice(&spec, &ebcdic_hex_wire([0xC1, 0x42, 0xF0, 0xC6]))
            .expect_err("0x42 is not EBCDIC hex");
        let text = err.to_string();
        assert!(text.contains("field 52 at byte 21"), "{text}");
        assert!(text.contains("expected an EBCDIC hex digit"), "{text}");
        assert!(text.contains("found 0x42"), "{text}");
        // An ASCII bitmap byte in an EBCDIC hex bitmap.
        let mut wire = ebcdic_hex_wire([0xC1, 0xC2, 0xF0, 0xC6]);
        wire[7] = b'0';
        let text = Message::decode_slice(&spec, &wire)
            .expect_err("bad bitmap")
            .to_string();
        assert!(text.contains("at byte 7"), "{text}");
        assert!(text.contains("found 0x30"), "{text}");
        // Mixed case within one value.
        let text = Message::decode_slice(&spec, &ebcdic_hex_wire([0xC1, 0x82, 0xF0, 0xC6]))
            .expect_err("mixed case")
            .to_string();
        assert!(text.contains("one case"), "{text}");
    }

    #[test]
    fn x_plus_n_needs_a_sign_then_digits() {
        assert_eq!(invalid_byte(ContentClass::XN, b"C00001000"), None);
        assert_eq!(invalid_byte(ContentClass::XN, b"D1"), None);
        assert_eq!(invalid_byte(ContentClass::XN, b"+100"), Some(0));
        assert_eq!(invalid_byte(ContentClass::XN, b"C10a"), Some(3));
        assert_eq!(invalid_byte(ContentClass::XN, b""), Some(0));
    }
}
