//! Message specs as data: a TOML file describes how each field is laid out on the
//! wire, and [`Spec`] is its checked, compiled form that the codec reads on every
//! message. Everything a spec file can get wrong is refused here, once, at load.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::composite_spec::{compile_composite, composite_to_file, FieldProblem};
pub use super::composite_spec::{
    CompositeFile, CompositeLayout, CompositeSpec, SubBitmapFile, Subfield, TlvPartFile,
};

/// Highest field number: fields 129–192 exist only behind a tertiary bitmap.
pub const MAX_FIELD: u8 = 192;

/// How the bytes of a value (or a length prefix, MTI or bitmap) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Two decimal digits per byte (packed BCD).
    Bcd,
    /// Raw bytes as they are.
    Binary,
    /// Raw bytes written as two hex characters each: uppercase when the codec
    /// writes a value, and in the case it was read when a decoded message is
    /// encoded again (mixed case within one value is refused). As a length
    /// prefix (moov's `Hex.L`, `Hex.LL`): the binary prefix's bytes as hex text.
    Hex,
    /// [`Encoding::Hex`] with the digits in EBCDIC (jPOS's `IFE_BINARY`,
    /// `IFE_BITMAP`): 0-9 as 0xF0-0xF9, A-F as 0xC1-0xC6, the case kept the
    /// same way. Values of class `b` and bitmaps only; never a length prefix.
    #[serde(rename = "ebcdic-hex")]
    EbcdicHex,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Ascii => "ascii",
            Encoding::Ebcdic => "ebcdic",
            Encoding::Bcd => "bcd",
            Encoding::Binary => "binary",
            Encoding::Hex => "hex",
            Encoding::EbcdicHex => "ebcdic-hex",
        })
    }
}

/// Fixed length, or a variable length carried in a 2 to 6 digit prefix (5 and 6
/// digits are jPOS's `IFA_LLLLLCHAR`/`IFA_LLLLLLBINARY`; the 65 535 cap on `max`
/// still holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LengthKind {
    #[serde(rename = "fixed")]
    Fixed,
    #[serde(rename = "LL")]
    LL,
    #[serde(rename = "LLL")]
    LLL,
    #[serde(rename = "LLLL")]
    LLLL,
    #[serde(rename = "LLLLL")]
    LLLLL,
    #[serde(rename = "LLLLLL")]
    LLLLLL,
}

impl LengthKind {
    /// Digits in the length prefix (0 for fixed fields).
    pub fn prefix_digits(self) -> usize {
        match self {
            LengthKind::Fixed => 0,
            LengthKind::LL => 2,
            LengthKind::LLL => 3,
            LengthKind::LLLL => 4,
            LengthKind::LLLLL => 5,
            LengthKind::LLLLLL => 6,
        }
    }

    /// Largest length the prefix can carry in decimal digits.
    pub fn max_decimal(self) -> usize {
        match self {
            LengthKind::Fixed => usize::MAX,
            LengthKind::LL => 99,
            LengthKind::LLL => 999,
            LengthKind::LLLL => 9999,
            LengthKind::LLLLL => 99_999,
            LengthKind::LLLLLL => 999_999,
        }
    }
}

impl fmt::Display for LengthKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthKind::Fixed => "fixed",
            LengthKind::LL => "LL",
            LengthKind::LLL => "LLL",
            LengthKind::LLLL => "LLLL",
            LengthKind::LLLLL => "LLLLL",
            LengthKind::LLLLLL => "LLLLLL",
        })
    }
}

/// ISO 8583 content classes. Lengths count digits for `n`, `z` and `x+n` (the
/// sign of `x+n` is extra), characters for text classes and bytes for `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentClass {
    #[serde(rename = "a")]
    A,
    #[serde(rename = "n")]
    N,
    #[serde(rename = "s")]
    S,
    #[serde(rename = "an")]
    An,
    #[serde(rename = "as")]
    As,
    #[serde(rename = "ns")]
    Ns,
    #[serde(rename = "ans")]
    Ans,
    #[serde(rename = "b")]
    B,
    /// Track 2/3 code set: digits and a field separator, `=` or `D`. Packed as
    /// BCD the separator is nibble D, which decodes as `=`.
    #[serde(rename = "z")]
    Z,
    /// Amount with a `C` (credit) or `D` (debit) sign before the digits.
    #[serde(rename = "x+n")]
    XN,
}

impl ContentClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentClass::A => "a",
            ContentClass::N => "n",
            ContentClass::S => "s",
            ContentClass::An => "an",
            ContentClass::As => "as",
            ContentClass::Ns => "ns",
            ContentClass::Ans => "ans",
            ContentClass::B => "b",
            ContentClass::Z => "z",
            ContentClass::XN => "x+n",
        }
    }

    /// Digit-like classes that may be packed as BCD.
    pub fn is_numeric(self) -> bool {
        matches!(self, ContentClass::N | ContentClass::Z | ContentClass::XN)
    }

    pub fn is_binary(self) -> bool {
        self == ContentClass::B
    }

    /// What an accepted byte looks like, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ContentClass::A => "a letter or space",
            ContentClass::N => "a digit 0-9",
            ContentClass::S => "a printable special character",
            ContentClass::An => "a letter, digit or space",
            ContentClass::As => "a letter, space or special character",
            ContentClass::Ns => "a digit or special character",
            ContentClass::Ans => "a printable ASCII character",
            ContentClass::B => "any byte",
            ContentClass::Z => "a digit, '=' or 'D'",
            ContentClass::XN => "'C' or 'D' then digits",
        }
    }
}

impl fmt::Display for ContentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the builder pads a value shorter than a fixed length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadSide {
    Left,
    Right,
    /// A short value is an error.
    None,
}

/// Which side of an odd number of BCD digits gets the filler nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BcdFiller {
    /// `0` before the digits: the value is right-justified (the usual case).
    Left,
    /// `0` after the digits.
    Right,
    /// `F` after the digits, common for track 2 and PANs on terminal links.
    #[serde(rename = "right-f")]
    RightF,
}

/// One field as written in a spec file. Unset encodings come from `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldFile {
    pub name: String,
    #[serde(default = "fixed")]
    pub length: LengthKind,
    /// The fixed length, or the maximum of a variable one.
    pub max: usize,
    pub class: ContentClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Encoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<PadSide>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_char: Option<char>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcd_filler: Option<BcdFiller>,
    /// Subfields: the field's content is made of them (see [`CompositeFile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite: Option<CompositeFile>,
}

fn fixed() -> LengthKind {
    LengthKind::Fixed
}

/// Encodings used where a field does not name its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsFile {
    /// For `n`, `z` and `x+n`.
    pub numeric: Encoding,
    /// For `a`, `an`, `ans` and the other text classes.
    pub text: Encoding,
    /// For `b`.
    pub binary: Encoding,
    /// For LL/LLL/LLLL length prefixes.
    pub prefix: Encoding,
}

/// A spec file as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub mti_encoding: Encoding,
    pub bitmap_encoding: Encoding,
    pub defaults: DefaultsFile,
    /// Keyed by field number ("2" … "192"). Fields 1 and 65 are the secondary and
    /// tertiary bitmaps and are not listed; fields 129–192 enable the tertiary bitmap.
    pub fields: BTreeMap<String, FieldFile>,
}

/// A field's compiled layout: every choice resolved, every limit checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub number: u8,
    pub name: String,
    pub length: LengthKind,
    pub max: usize,
    pub class: ContentClass,
    pub encoding: Encoding,
    pub prefix: Encoding,
    pub pad: PadSide,
    pub pad_char: u8,
    pub bcd_filler: BcdFiller,
    /// The subfields of a composite field. Its value is then kept as its wire
    /// bytes (never converted), and content is checked per subfield.
    pub composite: Option<Box<CompositeSpec>>,
}

impl Field {
    /// Bytes the length prefix takes on the wire.
    pub fn prefix_len(&self) -> usize {
        let digits = self.length.prefix_digits();
        match self.prefix {
            _ if digits == 0 => 0,
            Encoding::Bcd | Encoding::Binary => digits.div_ceil(2),
            Encoding::Hex => digits.div_ceil(2) * 2,
            _ => digits,
        }
    }

    /// Largest length the prefix can express in this prefix encoding.
    pub fn prefix_capacity(&self) -> usize {
        match self.prefix {
            Encoding::Binary | Encoding::Hex => match self.length.prefix_digits() {
                2 => 0xFF,
                _ => 0xFFFF,
            },
            _ => self.length.max_decimal(),
        }
    }

    /// Wire bytes taken by a value of `len` units (digits, characters or bytes).
    pub fn wire_len(&self, len: usize) -> usize {
        let sign = usize::from(self.class == ContentClass::XN);
        match self.encoding {
            Encoding::Bcd => sign + len.div_ceil(2),
            Encoding::Hex | Encoding::EbcdicHex => len * 2,
            _ => sign + len,
        }
    }

    /// A short "LL..19 n" style description of the layout.
    pub fn layout(&self) -> String {
        match self.length {
            LengthKind::Fixed => format!("{} {}", self.class, self.max),
            kind => format!("{} ..{} {}", self.class, self.max, kind),
        }
    }
}

/// Where a spec file is wrong: which field, which key, what was expected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{origin}: cannot read spec file: {source}")]
    Read {
        origin: String,
        source: std::io::Error,
    },
    /// TOML syntax or a key or value the spec format does not have.
    #[error("{origin}{}: {message}", position(line, column))]
    Syntax {
        origin: String,
        /// 1-based, where toml located it.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("{origin}: field {field}: {message}")]
    Field {
        origin: String,
        field: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// `:line:column` as config errors print it, or nothing when toml gave no place.
fn position(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// A compiled spec: the codec indexes `fields` by field number on every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub description: String,
    pub mti_encoding: Encoding,
    pub bitmap_encoding: Encoding,
    /// Kept so a spec can be exported with its defaults as written.
    pub defaults: DefaultsFile,
    fields: Vec<Option<Field>>,
    tertiary: bool,
}

impl Spec {
    /// Loads and checks a TOML spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<Spec, SpecError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            origin: origin.clone(),
            source,
        })?;
        Spec::from_toml_str(&text, &origin)
    }

    /// Parses and checks TOML spec text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Spec, SpecError> {
        let file: SpecFile = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            SpecError::Syntax {
                origin: origin.to_string(),
                line,
                column,
                // toml's own messages may span lines; keep ours on one.
                message: e.message().trim().replace('\n', "; "),
            }
        })?;
        Spec::compile(file, origin)
    }

    /// Checks a parsed spec file and resolves its defaults.
    pub fn compile(file: SpecFile, origin: &str) -> Result<Spec, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if !matches!(
            file.mti_encoding,
            Encoding::Ascii | Encoding::Ebcdic | Encoding::Bcd
        ) {
            return Err(invalid(format!(
                "mti_encoding: expected ascii, ebcdic or bcd, found {}",
                file.mti_encoding
            )));
        }
        if !matches!(
            file.bitmap_encoding,
            Encoding::Binary | Encoding::Hex | Encoding::EbcdicHex
        ) {
            return Err(invalid(format!(
                "bitmap_encoding: expected binary, hex or ebcdic-hex, found {}",
                file.bitmap_encoding
            )));
        }
        let mut fields: Vec<Option<Field>> = vec![None; usize::from(MAX_FIELD) + 1];
        for (key, def) in &file.fields {
            let field_error = |message: String| SpecError::Field {
                origin: origin.to_string(),
                field: key.clone(),
                message,
            };
            let number: u8 = key
                .parse()
                .ok()
                .filter(|n| (2..=MAX_FIELD).contains(n))
                .ok_or_else(|| field_error(format!("expected a field number 2..={MAX_FIELD}")))?;
            if number == 65 {
                return Err(field_error(
                    "field 65 is the tertiary bitmap; define fields 129-192 to use it".into(),
                ));
            }
            let field = compile_field(number, key, def, &file.defaults).map_err(|p| {
                match p.subfield.is_empty() {
                    true => field_error(p.message),
                    false => SpecError::Field {
                        origin: origin.to_string(),
                        field: format!("{key} subfield {}", p.subfield),
                        message: p.message,
                    },
                }
            })?;
            fields[usize::from(number)] = Some(field);
        }
        let tertiary = fields[129..].iter().any(Option::is_some);
        Ok(Spec {
            name: file.name,
            description: file.description,
            mti_encoding: file.mti_encoding,
            bitmap_encoding: file.bitmap_encoding,
            defaults: file.defaults,
            fields,
            tertiary,
        })
    }

    /// The layout of field `number`, if the spec defines it.
    #[inline]
    pub fn field(&self, number: u8) -> Option<&Field> {
        self.fields
            .get(usize::from(number))
            .and_then(Option::as_ref)
    }

    /// Every defined field in ascending order.
    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().flatten()
    }

    /// Whether fields 129–192 (and so a tertiary bitmap) exist in this spec.
    pub fn has_tertiary_bitmap(&self) -> bool {
        self.tertiary
    }

    /// Bytes one bitmap takes on the wire.
    pub fn bitmap_len(&self) -> usize {
        match self.bitmap_encoding {
            Encoding::Hex | Encoding::EbcdicHex => 16,
            _ => 8,
        }
    }

    /// The spec as a file, every field's encodings written out where they differ
    /// from the defaults, ready for `toml::to_string`.
    pub fn to_file(&self) -> SpecFile {
        let fields = self
            .fields()
            .map(|f| (f.number.to_string(), field_to_file(f, &self.defaults)))
            .collect();
        SpecFile {
            name: self.name.clone(),
            description: self.description.clone(),
            mti_encoding: self.mti_encoding,
            bitmap_encoding: self.bitmap_encoding,
            defaults: self.defaults.clone(),
            fields,
        }
    }

    /// The spec as TOML text, fields in numeric order.
    pub fn to_toml(&self) -> String {
        let file = self.to_file();
        let mut out = format!("name = {}\n", toml_string(&file.name));
        if !file.description.is_empty() {
            out.push_str(&format!(
                "description = {}\n",
                toml_string(&file.description)
            ));
        }
        out.push_str(&format!(
            "mti_encoding = \"{}\"\nbitmap_encoding = \"{}\"\n\n[defaults]\nnumeric = \"{}\"\ntext = \"{}\"\nbinary = \"{}\"\nprefix = \"{}\"\n",
            file.mti_encoding,
            file.bitmap_encoding,
            file.defaults.numeric,
            file.defaults.text,
            file.defaults.binary,
            file.defaults.prefix
        ));
        for f in self.fields() {
            let def = &file.fields[&f.number.to_string()];
            // BTreeMap keys sort as text ("10" < "2"), so walk the spec's own order.
            if def.composite.is_some() {
                // Nested tables need their full names ([fields.48.composite…]).
                let one =
                    BTreeMap::from([("fields", BTreeMap::from([(f.number.to_string(), def)]))]);
                out.push('\n');
                out.push_str(&toml::to_string(&one).unwrap_or_default());
                continue;
            }
            let body = toml::to_string(def).unwrap_or_default();
            out.push_str(&format!("\n[fields.{}]\n{}", f.number, body));
        }
        out
    }
}

/// A compiled field as a file writes it: encodings only where they differ from
/// the defaults.
fn field_to_file(f: &Field, d: &DefaultsFile) -> FieldFile {
    let default_encoding = default_encoding(f.class, d);
    let (default_pad, default_char) = default_padding(f.class);
    FieldFile {
        name: f.name.clone(),
        length: f.length,
        max: f.max,
        class: f.class,
        encoding: (f.encoding != default_encoding).then_some(f.encoding),
        prefix: (f.length != LengthKind::Fixed && f.prefix != d.prefix).then_some(f.prefix),
        pad: (f.pad != default_pad).then_some(f.pad),
        pad_char: (f.pad_char != default_char).then_some(char::from(f.pad_char)),
        bcd_filler: (f.bcd_filler != BcdFiller::Left).then_some(f.bcd_filler),
        composite: f
            .composite
            .as_deref()
            .map(|c| composite_to_file(c, &|sub| field_to_file(sub, d))),
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn default_encoding(class: ContentClass, d: &DefaultsFile) -> Encoding {
    if class.is_binary() {
        d.binary
    } else if class.is_numeric() {
        d.numeric
    } else {
        d.text
    }
}

fn default_padding(class: ContentClass) -> (PadSide, u8) {
    match class {
        ContentClass::N => (PadSide::Left, b'0'),
        ContentClass::B | ContentClass::Z | ContentClass::XN => (PadSide::None, b' '),
        _ => (PadSide::Right, b' '),
    }
}

/// Compiles field (or subfield) `def`; `path` is its dotted id (`48`, `48.22`)
/// and `number` the top-level field it belongs to.
fn compile_field(
    number: u8,
    path: &str,
    def: &FieldFile,
    d: &DefaultsFile,
) -> Result<Field, FieldProblem> {
    let mut field = compile_layout(number, def, d)?;
    if let Some(file) = &def.composite {
        let compile = |n: u8, sub_path: &str, sub: &FieldFile| compile_field(n, sub_path, sub, d);
        field.composite = Some(Box::new(compile_composite(&field, path, file, &compile)?));
    }
    Ok(field)
}

/// A field's own layout, without its subfields.
fn compile_layout(number: u8, def: &FieldFile, d: &DefaultsFile) -> Result<Field, String> {
    let encoding = def
        .encoding
        .unwrap_or_else(|| default_encoding(def.class, d));
    let prefix = def.prefix.unwrap_or(d.prefix);
    let allowed: &[Encoding] = match def.class {
        ContentClass::B => &[Encoding::Binary, Encoding::Hex, Encoding::EbcdicHex],
        c if c.is_numeric() => &[Encoding::Ascii, Encoding::Ebcdic, Encoding::Bcd],
        _ => &[Encoding::Ascii, Encoding::Ebcdic],
    };
    if !allowed.contains(&encoding) {
        let names: Vec<String> = allowed.iter().map(Encoding::to_string).collect();
        return Err(format!(
            "class {} cannot use encoding {encoding}; expected one of {}",
            def.class,
            names.join(", ")
        ));
    }
    if matches!(def.length, LengthKind::LLLLL | LengthKind::LLLLLL)
        && !matches!(prefix, Encoding::Ascii | Encoding::Ebcdic)
    {
        return Err(format!(
            "prefix: a {} prefix must be ascii or ebcdic digits, found {prefix}",
            def.length
        ));
    }
    if def.length != LengthKind::Fixed && prefix == Encoding::EbcdicHex {
        return Err(
            "prefix: ebcdic-hex is for binary values and bitmaps, not length prefixes; \
             expected ascii, ebcdic, bcd, binary or hex"
                .into(),
        );
    }
    if def.max == 0 {
        return Err("max: expected a length of at least 1, found 0".into());
    }
    let (default_pad, default_char) = default_padding(def.class);
    let pad_char = match def.pad_char {
        None => default_char,
        Some(c) if c.is_ascii() && !c.is_ascii_control() => c as u8,
        Some(c) => {
            return Err(format!(
                "pad_char: expected a printable ASCII character, found {c:?}"
            ))
        }
    };
    let field = Field {
        number,
        name: def.name.clone(),
        length: def.length,
        max: def.max,
        class: def.class,
        encoding,
        prefix,
        pad: def.pad.unwrap_or(default_pad),
        pad_char,
        bcd_filler: def.bcd_filler.unwrap_or(BcdFiller::Left),
        composite: None,
    };
    if field.length != LengthKind::Fixed && field.max > field.prefix_capacity() {
        return Err(format!(
            "max {} does not fit a {} {} length prefix (at most {})",
            field.max,
            field.length,
            field.prefix,
            field.prefix_capacity()
        ));
    }
    if field.max > 65_535 {
        return Err(format!("max: expected at most 65535, found {}", field.max));
    }
    Ok(field)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "test"
mti_encoding = "ascii"
bitmap_encoding = "binary"
[defaults]
numeric = "ascii"
text = "ascii"
binary = "binary"
prefix = "ascii"
[fields.2]
name = "PAN"
length = "LL"
max = 19
class = "n"
[fields.4]
name = "Amount"
max = 12
class = "n"
"#;

    fn with_field(extra: &str) -> Result<Spec, SpecError> {
        Spec::from_toml_str(&format!("{MINIMAL}\n{extra}"), "t.toml")
    }

    #[test]
    fn loads_a_minimal_spec_and_resolves_defaults() {
        let spec = Spec::from_toml_str(MINIMAL, "t.toml").expect("valid spec");
        let pan = spec.field(2).expect("field 2");
        assert_eq!(pan.length, LengthKind::LL);
        assert_eq!(pan.prefix_len(), 2);
        assert_eq!(spec.field(4).map(|f| f.pad), Some(PadSide::Left));
        assert!(spec.field(3).is_none());
        assert!(!spec.has_tertiary_bitmap());
    }

    #[test]
    fn refuses_unknown_keys_by_name() {
        let err = with_field("[fields.3]\nname=\"x\"\nmax=6\nclass=\"n\"\ncolour=1").unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        assert_eq!(line_and_column("ab\ncé\nx", 0), (1, 1));
        assert_eq!(line_and_column("ab\ncé\nx", 3), (2, 1));
        assert_eq!(line_and_column("ab\ncé\nx", 7), (3, 1));
        assert_eq!(line_and_column("ab", 99), (1, 3));
    }

    #[test]
    fn toml_errors_name_file_line_and_column_on_one_line() {
        let lines_before = MINIMAL.lines().count() + 1;
        let err = with_field("[fields.3]\nname = \"x\nmax = 6").unwrap_err();
        let text = err.to_string();
        let place = format!("t.toml:{}:", lines_before + 2);
        assert!(text.starts_with(&place), "{place} in {text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(!text.contains('^'), "no caret diagram: {text}");
    }

    #[test]
    fn refuses_bcd_for_text_fields() {
        let err = with_field("[fields.41]\nname=\"TID\"\nmax=8\nclass=\"ans\"\nencoding=\"bcd\"")
            .unwrap_err();
        assert!(err.to_string().contains("field 41"), "{err}");
        assert!(err.to_string().contains("cannot use encoding bcd"), "{err}");
    }

    #[test]
    fn refuses_a_max_the_prefix_cannot_carry() {
        let err = with_field("[fields.48]\nname=\"x\"\nlength=\"LL\"\nmax=120\nclass=\"ans\"")
            .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn refuses_bitmap_and_out_of_range_field_numbers() {
        for key in ["1", "65", "193", "0", "x"] {
            let err =
                with_field(&format!("[fields.{key}]\nname=\"x\"\nmax=1\nclass=\"n\"")).unwrap_err();
            assert!(err.to_string().contains(&format!("field {key}")), "{err}");
        }
    }

    #[test]
    fn five_and_six_digit_prefixes_are_ascii_or_ebcdic_digits() {
        let spec =
            with_field("[fields.60]\nname=\"x\"\nlength=\"LLLLL\"\nmax=65535\nclass=\"ans\"")
                .expect("valid");
        assert_eq!(spec.field(60).map(|f| f.prefix_len()), Some(5));
        let err = with_field(
            "[fields.60]\nname=\"x\"\nlength=\"LLLLLL\"\nmax=9\nclass=\"ans\"\nprefix=\"bcd\"",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field 60: prefix: a LLLLLL prefix must be ascii or ebcdic"),
            "{err}"
        );
    }

    #[test]
    fn hex_prefixes_take_two_characters_per_length_byte() {
        let spec = with_field(
            "[fields.62]\nname=\"x\"\nlength=\"LL\"\nmax=255\nclass=\"ans\"\nprefix=\"hex\"\n\
             [fields.63]\nname=\"y\"\nlength=\"LLLL\"\nmax=65535\nclass=\"ans\"\nprefix=\"hex\"",
        )
        .expect("valid");
        assert_eq!(
            spec.field(62)
                .map(|f| (f.prefix_len(), f.prefix_capacity())),
            Some((2, 255))
        );
        assert_eq!(
            spec.field(63)
                .map(|f| (f.prefix_len(), f.prefix_capacity())),
            Some((4, 65_535))
        );
        let err = with_field(
            "[fields.62]\nname=\"x\"\nlength=\"LL\"\nmax=256\nclass=\"ans\"\nprefix=\"hex\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn ebcdic_hex_is_for_binary_values_not_text_or_prefixes() {
        let spec =
            with_field("[fields.52]\nname=\"PIN\"\nmax=8\nclass=\"b\"\nencoding=\"ebcdic-hex\"")
                .expect("valid");
        assert_eq!(
            spec.field(52).map(|f| (f.encoding, f.wire_len(8))),
            Some((Encoding::EbcdicHex, 16))
        );
        let err =
            with_field("[fields.48]\nname=\"x\"\nmax=8\nclass=\"ans\"\nencoding=\"ebcdic-hex\"")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("field 48: class ans cannot use encoding ebcdic-hex"),
            "{err}"
        );
        let err = with_field(
            "[fields.55]\nname=\"x\"\nlength=\"LL\"\nmax=8\nclass=\"b\"\nprefix=\"ebcdic-hex\"",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field 55: prefix: ebcdic-hex is for binary values and bitmaps"),
            "{err}"
        );
    }

    #[test]
    fn tertiary_bitmap_follows_fields_above_128() {
        let spec = with_field("[fields.130]\nname=\"x\"\nmax=3\nclass=\"n\"").expect("valid");
        assert!(spec.has_tertiary_bitmap());
    }

    #[test]
    fn toml_export_loads_back_to_the_same_spec() {
        let spec = with_field(
            "[fields.35]\nname=\"Track 2\"\nlength=\"LL\"\nmax=37\nclass=\"z\"\nencoding=\"bcd\"\nbcd_filler=\"right-f\"\nprefix=\"binary\"",
        )
        .expect("valid");
        let again = Spec::from_toml_str(&spec.to_toml(), "export").expect("export loads");
        assert_eq!(spec, again);
    }
}
