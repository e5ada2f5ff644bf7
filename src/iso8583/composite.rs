//! Subfields of composite fields, decoded and encoded on demand. A message keeps a
//! composite field as its wire bytes (after the field's own length prefix), so
//! the hot path never parses subfields it does not read; [`Message::subfields`]
//! reads them into a [`Composite`] tree and [`Message::set_subfields`] writes one.

use std::fmt;

use super::codec::{checked_value, encode_field, write_value, Decoder};
use super::composite_spec::{tlv_length_ok, CompositeLayout, CompositeSpec, Subfield, TlvPartFile};
use super::encoding::{bcd, ebcdic, ebcdic_hex, hex};
use super::error::{CodecError, ErrorKind, Part};
use super::message::Message;
use super::spec::{BcdFiller, ContentClass, Encoding, Field, LengthKind, Spec};

/// The subfields of one composite value, in wire order on decode and in the
/// order they were added for encode.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Composite {
    entries: Vec<SubEntry>,
}

/// One subfield: its id (position, bit number or tag text) and its value.
#[derive(Clone, PartialEq, Eq)]
pub struct SubEntry {
    pub id: String,
    pub value: SubValue,
}

/// A subfield's value: text as ASCII bytes and binary as raw bytes (as
/// [`Message::get`] gives a field), or the subfields of a nested composite.
#[derive(Clone, PartialEq, Eq)]
pub enum SubValue {
    Value(Vec<u8>),
    Composite(Composite),
}

impl From<&str> for SubValue {
    fn from(text: &str) -> Self {
        SubValue::Value(text.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for SubValue {
    fn from(bytes: Vec<u8>) -> Self {
        SubValue::Value(bytes)
    }
}

impl From<&[u8]> for SubValue {
    fn from(bytes: &[u8]) -> Self {
        SubValue::Value(bytes.to_vec())
    }
}

impl From<Composite> for SubValue {
    fn from(composite: Composite) -> Self {
        SubValue::Composite(composite)
    }
}

impl Composite {
    pub fn new() -> Composite {
        Composite::default()
    }

    /// Adds subfield `id` after the ones already there.
    pub fn push(&mut self, id: impl Into<String>, value: impl Into<SubValue>) -> &mut Self {
        self.entries.push(SubEntry {
            id: id.into(),
            value: value.into(),
        });
        self
    }

    /// [`Composite::push`] for building in one expression.
    pub fn with(mut self, id: impl Into<String>, value: impl Into<SubValue>) -> Self {
        self.push(id, value);
        self
    }

    /// The first subfield with this id.
    pub fn get(&self, id: &str) -> Option<&SubValue> {
        self.entries.iter().find(|e| e.id == id).map(|e| &e.value)
    }

    /// The plain value of subfield `id` (None for a nested composite).
    pub fn value(&self, id: &str) -> Option<&[u8]> {
        match self.get(id)? {
            SubValue::Value(v) => Some(v),
            SubValue::Composite(_) => None,
        }
    }

    pub fn entries(&self) -> &[SubEntry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Composite {
    /// Ids only, as `Message`'s Debug: a subfield may hold card data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Composite [")?;
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&e.id)?;
            if let SubValue::Composite(c) = &e.value {
                write!(f, " {c:?}")?;
            }
        }
        f.write_str("]")
    }
}

impl fmt::Debug for SubEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            SubValue::Value(_) => write!(f, "SubEntry({})", self.id),
            SubValue::Composite(c) => write!(f, "SubEntry({} {c:?})", self.id),
        }
    }
}

impl fmt::Debug for SubValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubValue::Value(v) => write!(f, "Value({} bytes)", v.len()),
            SubValue::Composite(c) => write!(f, "{c:?}"),
        }
    }
}

fn not_composite(n: u8) -> CodecError {
    CodecError::encode(Part::Field(n), 0, ErrorKind::NotComposite, &[])
}

impl Message {
    /// Decodes the subfields of composite field `n`; None when the field is
    /// absent. Offsets in errors count from the start of the message when it
    /// was decoded, from the start of the value when the field was set.
    pub fn subfields(&self, spec: &Spec, n: u8) -> Result<Option<Composite>, CodecError> {
        let field = spec
            .field(n)
            .ok_or_else(|| CodecError::decode(Part::Field(n), 0, ErrorKind::UndefinedField, &[]))?;
        let Some(composite) = &field.composite else {
            return Err(CodecError::decode(
                Part::Field(n),
                0,
                ErrorKind::NotComposite,
                &[],
            ));
        };
        if !self.has(n) {
            return Ok(None);
        }
        let slot = &self.slots[self.present.rank(n)];
        let (input, start) = match slot.owned {
            false => {
                let end = (slot.start + slot.len) as usize;
                (&self.raw[..end], slot.start as usize)
            }
            true => (self.value(slot), 0),
        };
        decode_composite(spec, composite, &n.to_string(), input, start).map(Some)
    }

    /// Decodes the subfields of every composite field present: what `parse`,
    /// `explain` and the JSON form check beyond [`Message::decode`].
    pub fn check_subfields(&self, spec: &Spec) -> Result<(), CodecError> {
        for n in self.present.iter() {
            if spec.field(n).is_some_and(|f| f.composite.is_some()) {
                self.subfields(spec, n)?;
            }
        }
        Ok(())
    }

    /// Encodes `value` as the subfields of composite field `n` and sets the
    /// field to the result, checking each subfield as a field is checked.
    pub fn set_subfields(
        &mut self,
        spec: &Spec,
        n: u8,
        value: &Composite,
    ) -> Result<&mut Self, CodecError> {
        let field = spec
            .field(n)
            .ok_or_else(|| CodecError::encode(Part::Field(n), 0, ErrorKind::UndefinedField, &[]))?;
        let composite = field.composite.as_deref().ok_or_else(|| not_composite(n))?;
        let mut bytes = Vec::new();
        encode_composite(composite, &n.to_string(), value, &mut bytes)?;
        check_raw_length(field, &bytes)?;
        self.set(n, bytes)
            .map_err(|_| CodecError::encode(Part::Field(n), 0, ErrorKind::UndefinedField, &[]))
    }
}

/// The length check of a composite value written as it is (no class, no pad).
pub(crate) fn check_raw_length(field: &Field, value: &[u8]) -> Result<(), CodecError> {
    let len = value.len();
    let kind = if len > field.max {
        ErrorKind::TooLong {
            length: len,
            max: field.max,
        }
    } else if field.length == LengthKind::Fixed && len != field.max {
        ErrorKind::WrongLength {
            length: len,
            expected: field.max,
        }
    } else {
        return Ok(());
    };
    Err(CodecError::encode(
        Part::Field(field.number),
        len.min(field.max),
        kind,
        value,
    ))
}

/// Decodes the composite whose content runs from `start` to the end of `input`
/// (input starts where the message does, so offsets are the message's).
pub(crate) fn decode_composite(
    spec: &Spec,
    composite: &CompositeSpec,
    path: &str,
    input: &[u8],
    start: usize,
) -> Result<Composite, CodecError> {
    let part = Part::Field(composite.subfields.first().map_or(0, |s| s.field.number));
    let mut d = Decoder::new(spec, input, start);
    let mut out = Composite::new();
    let here = |e: CodecError| e.in_subfield(path);
    match composite.layout {
        CompositeLayout::Positional => {
            for sub in &composite.subfields {
                if d.pos == input.len() {
                    break;
                }
                let value = read_subfield(&mut d, sub, None)?;
                out.push(sub.id.clone(), value);
            }
        }
        CompositeLayout::Bitmap => {
            let at = d.pos;
            let bits = read_sub_bitmap(&mut d, composite, part).map_err(here)?;
            for (bit, bit_at) in bits {
                let sub = composite.numbered(bit).ok_or_else(|| {
                    d.error(part, bit_at.max(at), ErrorKind::UndefinedField)
                        .in_subfield(&format!("{path}.{bit}"))
                })?;
                let value = read_subfield(&mut d, sub, None)?;
                out.push(sub.id.clone(), value);
            }
        }
        CompositeLayout::Tlv => {
            let tag = composite.tag.unwrap_or(TlvPartFile {
                width: 2,
                encoding: Encoding::Ascii,
            });
            while d.pos < input.len() {
                let at = d.pos;
                let text = read_tag(&mut d, &tag, part).map_err(here)?;
                let sub = composite.subfield(&text).ok_or_else(|| {
                    let known: Vec<&str> =
                        composite.subfields.iter().map(|s| s.id.as_str()).collect();
                    d.error(
                        part,
                        at,
                        ErrorKind::UnknownTag {
                            tag: text.clone(),
                            known: known.join(", "),
                        },
                    )
                    .in_subfield(path)
                })?;
                let value = read_subfield(&mut d, sub, composite.value_length.as_ref())?;
                out.push(sub.id.clone(), value);
            }
        }
    }
    if d.pos != input.len() {
        let count = input.len() - d.pos;
        return Err(d
            .error(part, d.pos, ErrorKind::TrailingBytes { count })
            .in_subfield(path));
    }
    Ok(out)
}

/// Reads one subfield (after its tag, for tlv) and, when it is composite, its
/// own subfields.
fn read_subfield(
    d: &mut Decoder<'_>,
    sub: &Subfield,
    value_length: Option<&TlvPartFile>,
) -> Result<SubValue, CodecError> {
    let field = &sub.field;
    let part = Part::Field(field.number);
    let mut owned = Vec::new();
    let slot = match value_length {
        None => d.field(field, &mut owned),
        Some(width) => {
            let at = d.pos;
            read_tlv_length(d, width, part).and_then(|len| {
                if tlv_length_ok(field, len) {
                    return d.content(field, len, &mut owned);
                }
                let kind = if len > field.max {
                    ErrorKind::TooLong {
                        length: len,
                        max: field.max,
                    }
                } else {
                    ErrorKind::WrongLength {
                        length: len,
                        expected: field.max,
                    }
                };
                Err(d.error(part, at, kind))
            })
        }
    }
    .map_err(|e| e.in_subfield(&sub.path))?;
    let (start, end) = (slot.start as usize, (slot.start + slot.len) as usize);
    if let Some(nested) = &field.composite {
        // A composite subfield is never converted: its slot is in the input.
        return decode_composite(d.spec, nested, &sub.path, &d.input[..end], start)
            .map(SubValue::Composite);
    }
    Ok(SubValue::Value(match slot.owned {
        true => owned[start..end].to_vec(),
        false => d.input[start..end].to_vec(),
    }))
}

/// The bit numbers set in a subfield bitmap with the offset of the byte each
/// is in; bit 1 of a 16-byte bitmap (its second half follows) is not listed.
fn read_sub_bitmap(
    d: &mut Decoder<'_>,
    composite: &CompositeSpec,
    part: Part,
) -> Result<Vec<(usize, usize)>, CodecError> {
    let Some(bitmap) = composite.bitmap else {
        return Ok(Vec::new());
    };
    let chars = bitmap_chars(bitmap.encoding);
    // A 2- or 4-byte bitmap (jPOS IFE_BITMAP) is the top of the word.
    let width = bitmap.bytes.min(8);
    let mut bits = Vec::new();
    let mut half = 0;
    loop {
        let at = d.pos;
        let wire = d.take(part, width * chars)?;
        let mut word = [0u8; 8];
        match bitmap.encoding {
            Encoding::Hex => {
                let mut bytes = Vec::with_capacity(8);
                hex::decode_into(wire, &mut bytes).map_err(|i| {
                    let found = wire.get(i).copied().unwrap_or(0);
                    d.error(part, at + i, ErrorKind::InvalidHex { found })
                })?;
                word[..width].copy_from_slice(&bytes);
            }
            Encoding::EbcdicHex => {
                let mut bytes = Vec::with_capacity(8);
                ebcdic_hex::decode_into(wire, &mut bytes).map_err(|i| {
                    let found = wire.get(i).copied().unwrap_or(0);
                    d.error(part, at + i, ErrorKind::InvalidEbcdicHex { found })
                })?;
                word[..width].copy_from_slice(&bytes);
            }
            _ => word[..width].copy_from_slice(wire),
        }
        let word = u64::from_be_bytes(word);
        for i in 0..64 {
            let bit = half * 64 + i + 1;
            if word & (1u64 << (63 - i)) != 0 && !(bit == 1 && bitmap.bytes == 16) {
                bits.push((bit, at + i / 8 * chars));
            }
        }
        half += 1;
        let more = bitmap.bytes == 16 && half == 1 && word & (1u64 << 63) != 0;
        if !more {
            return Ok(bits);
        }
    }
}

/// Wire bytes per bitmap byte: two for hex text, ASCII or EBCDIC.
fn bitmap_chars(encoding: Encoding) -> usize {
    match encoding {
        Encoding::Hex | Encoding::EbcdicHex => 2,
        _ => 1,
    }
}

fn read_tag(d: &mut Decoder<'_>, tag: &TlvPartFile, part: Part) -> Result<String, CodecError> {
    let at = d.pos;
    let wire = d.take(part, tag.wire_len())?;
    let bad = |i: usize, d: &Decoder<'_>, class: ContentClass| {
        let found = wire.get(i).copied().unwrap_or(0);
        d.error(part, at + i, ErrorKind::InvalidContent { class, found })
    };
    let mut text = String::with_capacity(tag.text_len());
    match tag.encoding {
        Encoding::Binary => text = hex::to_string(wire),
        Encoding::Bcd => {
            for (i, &b) in wire.iter().enumerate() {
                for n in [b >> 4, b & 0xF] {
                    if n > 9 {
                        return Err(d.error(part, at + i, ErrorKind::InvalidBcd { nibble: n }));
                    }
                    text.push(char::from(b'0' + n));
                }
            }
        }
        Encoding::Hex => {
            for (i, &b) in wire.iter().enumerate() {
                if hex::nibble(b).is_none() {
                    return Err(d.error(part, at + i, ErrorKind::InvalidHex { found: b }));
                }
                text.push(char::from(b.to_ascii_uppercase()));
            }
        }
        // Tag text checked as uppercase hex at spec load; matched to an id after.
        Encoding::Ebcdic | Encoding::EbcdicHex => {
            for (i, &b) in wire.iter().enumerate() {
                let a = ebcdic::to_ascii(b)
                    .ok_or_else(|| d.error(part, at + i, ErrorKind::InvalidEbcdic { found: b }))?;
                text.push(char::from(a));
            }
        }
        Encoding::Ascii => {
            for (i, &b) in wire.iter().enumerate() {
                if !b.is_ascii_graphic() {
                    return Err(bad(i, d, ContentClass::Ans));
                }
                text.push(char::from(b));
            }
        }
    }
    Ok(text)
}

fn read_tlv_length(
    d: &mut Decoder<'_>,
    width: &TlvPartFile,
    part: Part,
) -> Result<usize, CodecError> {
    let at = d.pos;
    let wire = d.take(part, width.wire_len())?;
    let bad = |d: &Decoder<'_>| {
        let found = match width.encoding {
            Encoding::Ascii => format!("{:?}", String::from_utf8_lossy(wire)),
            _ => format!("0x{}", hex::to_string(wire)),
        };
        d.error(
            part,
            at,
            ErrorKind::BadLengthPrefix {
                digits: width.text_len(),
                found,
            },
        )
    };
    let mut len = 0usize;
    for &b in wire {
        let next = match width.encoding {
            Encoding::Binary => Some(len << 8 | usize::from(b)),
            Encoding::Bcd => {
                let (hi, lo) = (b >> 4, b & 0xF);
                (hi <= 9 && lo <= 9).then(|| len * 100 + usize::from(hi * 10 + lo))
            }
            Encoding::Hex => hex::nibble(b).map(|n| len << 4 | usize::from(n)),
            Encoding::EbcdicHex => ebcdic_hex::nibble(b).map(|n| len << 4 | usize::from(n)),
            Encoding::Ebcdic => {
                let d = b.wrapping_sub(0xF0);
                (d <= 9).then(|| len * 10 + usize::from(d))
            }
            Encoding::Ascii => {
                let d = b.wrapping_sub(b'0');
                (d <= 9).then(|| len * 10 + usize::from(d))
            }
        };
        len = next.ok_or_else(|| bad(d))?;
    }
    Ok(len)
}

/// Appends the wire form of `value`'s subfields (no outer length prefix).
pub(crate) fn encode_composite(
    composite: &CompositeSpec,
    path: &str,
    value: &Composite,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let number = composite.subfields.first().map_or(0, |s| s.field.number);
    let error = |kind: ErrorKind| CodecError::encode(Part::Field(number), 0, kind, &[]);
    let mut subs = Vec::with_capacity(value.len());
    for entry in value.entries() {
        let sub = composite.subfield(&entry.id).ok_or_else(|| {
            let known: Vec<&str> = composite.subfields.iter().map(|s| s.id.as_str()).collect();
            error(ErrorKind::NoSuchSubfield {
                known: known.join(", "),
            })
            .in_subfield(&format!("{path}.{}", entry.id))
        })?;
        subs.push((sub, &entry.value));
    }
    match composite.layout {
        CompositeLayout::Positional => {
            for (i, (sub, _)) in subs.iter().enumerate() {
                let expected = &composite.subfields[i];
                if sub.id != expected.id {
                    return Err(error(ErrorKind::SubfieldOrder {
                        expected: expected.id.clone(),
                        found: sub.id.clone(),
                    })
                    .in_subfield(path));
                }
            }
            for (sub, v) in subs {
                write_subfield(sub, v, None, out)?;
            }
        }
        CompositeLayout::Bitmap => {
            subs.sort_by_key(|(sub, _)| sub.number);
            if let Some(pair) = subs.windows(2).find(|w| w[0].0.number == w[1].0.number) {
                return Err(error(ErrorKind::SubfieldOrder {
                    expected: "each bit once".into(),
                    found: format!("{} twice", pair[0].0.id),
                })
                .in_subfield(path));
            }
            let mut words = [0u64; 2];
            for (sub, _) in &subs {
                let bit = sub.number - 1;
                words[bit / 64] |= 1u64 << (63 - bit % 64);
            }
            let two = composite.has_second_bitmap() && words[1] != 0;
            if two {
                words[0] |= 1u64 << 63;
            }
            let encoding = composite.bitmap.map(|b| b.encoding);
            let width = composite.bitmap.map_or(8, |b| b.bytes.min(8));
            for word in &words[..1 + usize::from(two)] {
                let bytes = &word.to_be_bytes()[..width];
                match encoding {
                    Some(Encoding::Hex) => hex::encode_into(bytes, out),
                    Some(Encoding::EbcdicHex) => ebcdic_hex::encode_cased_into(bytes, false, out),
                    _ => out.extend_from_slice(bytes),
                }
            }
            for (sub, v) in subs {
                write_subfield(sub, v, None, out)?;
            }
        }
        CompositeLayout::Tlv => {
            let tag = composite.tag.unwrap_or(TlvPartFile {
                width: 2,
                encoding: Encoding::Ascii,
            });
            for (sub, v) in subs {
                write_tag(&tag, &sub.id, out);
                write_subfield(sub, v, composite.value_length.as_ref(), out)?;
            }
        }
    }
    Ok(())
}

/// Writes one subfield: a value checked as a field's (class, length, pad), or a
/// nested composite encoded first; the length from `value_length` in a tlv.
fn write_subfield(
    sub: &Subfield,
    value: &SubValue,
    value_length: Option<&TlvPartFile>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let field = &sub.field;
    let here = |e: CodecError| e.in_subfield(&sub.path);
    let nested;
    let bytes: &[u8] = match (value, &field.composite) {
        (SubValue::Value(v), _) => v,
        (SubValue::Composite(c), Some(spec)) => {
            let mut inner = Vec::new();
            encode_composite(spec, &sub.path, c, &mut inner)?;
            nested = inner;
            &nested
        }
        (SubValue::Composite(_), None) => {
            return Err(here(CodecError::encode(
                Part::Field(field.number),
                0,
                ErrorKind::NotComposite,
                &[],
            )))
        }
    };
    let Some(width) = value_length else {
        return encode_field(field, bytes, out).map_err(here);
    };
    if field.composite.is_some() {
        check_raw_length(field, bytes).map_err(here)?;
        write_tlv_length(width, bytes.len(), out);
        out.extend_from_slice(bytes);
        return Ok(());
    }
    let (content, len) = checked_value(field, bytes).map_err(here)?;
    write_tlv_length(width, len, out);
    write_value(field, &content, len, out).map_err(|(i, kind)| {
        here(CodecError::encode(
            Part::Field(field.number),
            i,
            kind,
            bytes,
        ))
    })
}

/// Writes tag text checked at spec load (and matched to a subfield id).
fn write_tag(tag: &TlvPartFile, text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    match tag.encoding {
        Encoding::Binary => {
            // Uppercase hex by the spec check: decoding cannot fail.
            let _ = hex::decode_into(bytes, out);
        }
        Encoding::Bcd => {
            let _ = bcd::pack_into(bytes, BcdFiller::Left, false, out);
        }
        // EBCDIC hex tag text is its hex digits as EBCDIC characters.
        Encoding::Ebcdic | Encoding::EbcdicHex => {
            out.extend(bytes.iter().map(|&b| ebcdic::from_ascii(b).unwrap_or(0x40)))
        }
        _ => out.extend_from_slice(bytes),
    }
}

fn write_tlv_length(width: &TlvPartFile, len: usize, out: &mut Vec<u8>) {
    match width.encoding {
        Encoding::Binary => {
            let bytes = (len as u64).to_be_bytes();
            out.extend_from_slice(&bytes[8 - width.width.min(8)..]);
        }
        Encoding::Hex => {
            let text = format!("{len:0w$X}", w = width.width);
            out.extend_from_slice(text.as_bytes());
        }
        Encoding::EbcdicHex => {
            let text = format!("{len:0w$X}", w = width.width);
            out.extend(text.bytes().map(|b| ebcdic::from_ascii(b).unwrap_or(0x40)));
        }
        Encoding::Bcd => {
            let text = format!("{len:0w$}", w = width.text_len());
            let _ = bcd::pack_into(text.as_bytes(), BcdFiller::Left, false, out);
        }
        Encoding::Ebcdic => {
            let text = format!("{len:0w$}", w = width.width);
            out.extend(text.bytes().map(|b| b - b'0' + 0xF0));
        }
        Encoding::Ascii => {
            let text = format!("{len:0w$}", w = width.width);
            out.extend_from_slice(text.as_bytes());
        }
    }
}
