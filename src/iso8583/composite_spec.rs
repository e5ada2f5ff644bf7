//! The composite part of a spec: a field made of subfields, laid out one after
//! another (positional), behind a subfield bitmap (as BASE I field 126), or as
//! tag–length–value entries (as Mastercard DE 48). The file form is what a TOML
//! spec says; [`CompositeSpec`] is its checked form, compiled with the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::{ContentClass, Encoding, Field, FieldFile, LengthKind};

/// How the subfields of a composite follow one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompositeLayout {
    /// Subfields "1".."n" one after another in numeric order; trailing ones may
    /// be left out.
    Positional,
    /// A subfield bitmap, then the subfields whose bits are set, by bit number.
    Bitmap,
    /// Tag, (value length,) value, repeated: any tag order on decode, written in
    /// the order the caller gives (so decoded subfields encode back as read);
    /// an unknown tag is an error naming it and its byte.
    Tlv,
}

/// How a composite's subfield bitmap is written. With `bytes = 16`, bit 1 says
/// whether the second 8 bytes follow (as bit 1 of a message bitmap does) and is
/// never a subfield; with `bytes = 8`, bit 1 is subfield "1" like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubBitmapFile {
    /// Bytes of bitmap data: 8, or 16 (8 more when bit 1 is set); 2 or 4 for
    /// jPOS's short subfield bitmaps (bit 1 an ordinary subfield).
    pub bytes: usize,
    /// `binary`, or `hex` (two characters a byte on the wire).
    pub encoding: Encoding,
}

/// How a tlv composite writes each tag or each value length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlvPartFile {
    /// Characters for ascii, ebcdic and hex; bytes for binary and bcd.
    pub width: usize,
    pub encoding: Encoding,
}

impl TlvPartFile {
    /// Bytes the part takes on the wire.
    pub fn wire_len(&self) -> usize {
        self.width
    }

    /// Characters of tag text (or decimal digits of a length) it carries.
    pub fn text_len(&self) -> usize {
        match self.encoding {
            Encoding::Binary | Encoding::Bcd => self.width * 2,
            _ => self.width,
        }
    }

    /// Largest value length it can carry.
    pub fn capacity(&self) -> usize {
        let max = match self.encoding {
            Encoding::Binary => 1u128 << (8 * self.width.min(8) as u32),
            Encoding::Hex | Encoding::EbcdicHex => 1u128 << (4 * self.width.min(16) as u32),
            _ => 10u128.saturating_pow(self.text_len() as u32),
        };
        usize::try_from(max - 1).unwrap_or(usize::MAX)
    }
}

/// A composite as a spec file writes it (`composite = { … }` under a field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeFile {
    /// "positional" | "bitmap" | "tlv".
    pub layout: CompositeLayout,
    /// bitmap layout: how the subfield bitmap is written (its first subfield,
    /// "field 0" in jPOS terms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitmap: Option<SubBitmapFile>,
    /// tlv layout: how each tag is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TlvPartFile>,
    /// tlv layout: how each value length is written. Without it, each subfield
    /// carries its own length prefix (or is fixed) as a field would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_length: Option<TlvPartFile>,
    /// Subfields by id: "1", "2", ... (positional order / bitmap bit number) or
    /// the tag text ("01", "9F26") for tlv.
    pub subfields: BTreeMap<String, FieldFile>,
}

/// One compiled subfield: its id within the composite, its full dotted path
/// (`48.22`, `127.25.3`) for errors, and its layout as a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subfield {
    pub id: String,
    pub path: String,
    /// `field.number` is the top-level field the subfield belongs to.
    pub field: Field,
    /// The bit number (bitmap layout) or position (positional), 0 for tlv.
    pub number: usize,
}

/// A checked composite. Subfields are in wire order: by number for positional
/// and bitmap layouts, by tag text for tlv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompositeSpec {
    pub layout: CompositeLayout,
    pub bitmap: Option<SubBitmapFile>,
    pub tag: Option<TlvPartFile>,
    pub value_length: Option<TlvPartFile>,
    pub subfields: Vec<Subfield>,
}

impl CompositeSpec {
    /// The subfield with this id.
    pub fn subfield(&self, id: &str) -> Option<&Subfield> {
        self.subfields.iter().find(|s| s.id == id)
    }

    /// The subfield at bit (bitmap) or position (positional) `number`.
    pub fn numbered(&self, number: usize) -> Option<&Subfield> {
        self.subfields.iter().find(|s| s.number == number)
    }

    /// Whether bit 1 of the subfield bitmap announces its second half.
    pub fn has_second_bitmap(&self) -> bool {
        self.bitmap.is_some_and(|b| b.bytes == 16)
    }
}

/// A problem in a field or one of its subfields: the dotted subfield path below
/// the field ("" for the field itself) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    pub(crate) subfield: String,
    pub(crate) message: String,
}

impl From<String> for FieldProblem {
    fn from(message: String) -> Self {
        FieldProblem {
            subfield: String::new(),
            message,
        }
    }
}

/// Checks the composite of field `parent` (whose dotted path is `path`) and
/// compiles its subfields with `compile`, which compiles one field file.
pub(crate) fn compile_composite(
    parent: &Field,
    path: &str,
    file: &CompositeFile,
    compile: &dyn Fn(u8, &str, &FieldFile) -> Result<Field, FieldProblem>,
) -> Result<CompositeSpec, FieldProblem> {
    if !matches!(
        parent.encoding,
        Encoding::Ascii | Encoding::Ebcdic | Encoding::Binary
    ) {
        return Err(format!(
            "composite: its content is its subfields' own bytes, so its encoding must be ascii, ebcdic or binary, found {}",
            parent.encoding
        )
        .into());
    }
    if parent.class == ContentClass::XN {
        return Err("composite: class x+n cannot hold subfields; use ans or b"
            .to_string()
            .into());
    }
    if file.subfields.is_empty() {
        return Err("composite: expected at least one subfield"
            .to_string()
            .into());
    }
    let unused = |key: &str, present: bool| -> Result<(), FieldProblem> {
        match present {
            true => Err(format!(
                "composite: {key} does not apply to the {} layout",
                layout_name(file.layout)
            )
            .into()),
            false => Ok(()),
        }
    };
    let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
    match file.layout {
        CompositeLayout::Positional => {
            unused("bitmap", file.bitmap.is_some())?;
            unused("tag", file.tag.is_some())?;
            unused("value_length", file.value_length.is_some())?;
            for id in file.subfields.keys() {
                let n = parse_number(id, 1, file.subfields.len()).ok_or_else(|| {
                    sub_problem(
                        id,
                        format!(
                            "expected positional subfield ids 1..={} without gaps",
                            file.subfields.len()
                        ),
                    )
                })?;
                numbers.insert(id.clone(), n);
            }
        }
        CompositeLayout::Bitmap => {
            unused("tag", file.tag.is_some())?;
            unused("value_length", file.value_length.is_some())?;
            let bitmap = file.bitmap.ok_or_else(|| {
                FieldProblem::from(
                    "composite: the bitmap layout needs bitmap = { bytes = 8, encoding = \"binary\" }"
                        .to_string(),
                )
            })?;
            if !matches!(bitmap.bytes, 2 | 4 | 8 | 16) {
                return Err(format!(
                    "composite: bitmap.bytes: expected 2, 4, 8 or 16, found {}",
                    bitmap.bytes
                )
                .into());
            }
            if !matches!(
                bitmap.encoding,
                Encoding::Binary | Encoding::Hex | Encoding::EbcdicHex
            ) {
                return Err(format!(
                    "composite: bitmap.encoding: expected binary, hex or ebcdic-hex, found {}",
                    bitmap.encoding
                )
                .into());
            }
            let first = if bitmap.bytes == 16 { 2 } else { 1 };
            let bits = bitmap.bytes * 8;
            for id in file.subfields.keys() {
                let n = parse_number(id, first, bits).ok_or_else(|| {
                    let why = if first == 2 {
                        " (bit 1 of a 16-byte bitmap says whether its second half follows)"
                    } else {
                        ""
                    };
                    sub_problem(id, format!("expected a bit number {first}..={bits}{why}"))
                })?;
                numbers.insert(id.clone(), n);
            }
        }
        CompositeLayout::Tlv => {
            unused("bitmap", file.bitmap.is_some())?;
            let tag = file.tag.ok_or_else(|| {
                FieldProblem::from(
                    "composite: the tlv layout needs tag = { width = 2, encoding = \"ascii\" }"
                        .to_string(),
                )
            })?;
            check_part("tag", &tag)?;
            if let Some(part) = &file.value_length {
                check_part("value_length", part)?;
            }
            for id in file.subfields.keys() {
                if let Err(why) = check_tag_text(id, &tag) {
                    return Err(sub_problem(id, format!("tag {id:?}: {why}")));
                }
                numbers.insert(id.clone(), 0);
            }
        }
    }
    let mut subfields = Vec::with_capacity(file.subfields.len());
    for (id, def) in &file.subfields {
        let sub_path = format!("{path}.{id}");
        let field = compile(parent.number, &sub_path, def).map_err(|p| FieldProblem {
            subfield: match p.subfield.is_empty() {
                true => id.clone(),
                false => format!("{id}.{}", p.subfield),
            },
            message: p.message,
        })?;
        if let Some(part) = &file.value_length {
            if field.max > part.capacity() {
                return Err(sub_problem(
                    id,
                    format!(
                        "max {} does not fit the composite's value_length (at most {})",
                        field.max,
                        part.capacity()
                    ),
                ));
            }
        }
        let number = numbers.get(id).copied().unwrap_or_default();
        subfields.push(Subfield {
            id: id.clone(),
            path: sub_path,
            field,
            number,
        });
    }
    subfields.sort_by_key(|s| s.number);
    Ok(CompositeSpec {
        layout: file.layout,
        bitmap: file.bitmap,
        tag: file.tag,
        value_length: file.value_length,
        subfields,
    })
}

/// The file form of a compiled composite, subfields through `export`.
pub(crate) fn composite_to_file(
    spec: &CompositeSpec,
    export: &dyn Fn(&Field) -> FieldFile,
) -> CompositeFile {
    CompositeFile {
        layout: spec.layout,
        bitmap: spec.bitmap,
        tag: spec.tag,
        value_length: spec.value_length,
        subfields: spec
            .subfields
            .iter()
            .map(|s| (s.id.clone(), export(&s.field)))
            .collect(),
    }
}

fn layout_name(layout: CompositeLayout) -> &'static str {
    match layout {
        CompositeLayout::Positional => "positional",
        CompositeLayout::Bitmap => "bitmap",
        CompositeLayout::Tlv => "tlv",
    }
}

fn sub_problem(id: &str, message: String) -> FieldProblem {
    FieldProblem {
        subfield: id.to_string(),
        message,
    }
}

/// A decimal id in `low..=high` written without leading zeros.
fn parse_number(id: &str, low: usize, high: usize) -> Option<usize> {
    let n: usize = id.parse().ok()?;
    (n.to_string() == id && (low..=high).contains(&n)).then_some(n)
}

fn check_part(key: &str, part: &TlvPartFile) -> Result<(), FieldProblem> {
    let limit = match part.encoding {
        Encoding::Binary | Encoding::Bcd => 4,
        _ => 8,
    };
    if part.width == 0 || part.width > limit {
        return Err(format!(
            "composite: {key}.width: expected 1..={limit} for {}, found {}",
            part.encoding, part.width
        )
        .into());
    }
    Ok(())
}

/// Whether `id` is tag text a tag part of this shape can carry: `text_len`
/// characters, digits for bcd, uppercase hex for binary and both hexes, printable for
/// ascii and ebcdic.
pub(crate) fn check_tag_text(id: &str, tag: &TlvPartFile) -> Result<(), String> {
    let bytes = id.as_bytes();
    if bytes.len() != tag.text_len() {
        return Err(format!(
            "expected {} characters for a {}-wide {} tag",
            tag.text_len(),
            tag.width,
            tag.encoding
        ));
    }
    let ok = |b: &u8| match tag.encoding {
        Encoding::Bcd => b.is_ascii_digit(),
        Encoding::Binary | Encoding::Hex | Encoding::EbcdicHex => {
            b.is_ascii_digit() || (b'A'..=b'F').contains(b)
        }
        _ => b.is_ascii_graphic(),
    };
    match bytes.iter().find(|b| !ok(b)) {
        None => Ok(()),
        Some(_) => Err(match tag.encoding {
            Encoding::Bcd => "expected decimal digits for a bcd tag".to_string(),
            Encoding::Binary | Encoding::Hex | Encoding::EbcdicHex => {
                "expected uppercase hex digits 0-9/A-F".to_string()
            }
            _ => "expected printable ASCII characters".to_string(),
        }),
    }
}

/// A subfield's length kind read in a tlv composite with a value length: fixed
/// means the value is exactly `max` long.
pub(crate) fn tlv_length_ok(field: &Field, len: usize) -> bool {
    len <= field.max && (field.length != LengthKind::Fixed || len == field.max)
}
