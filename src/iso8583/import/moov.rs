//! moov-io/iso8583 JSON specs in and out (also moov's first format, `Field000`
//! keys): String, Numeric, Binary, Hex, Track1/2 and Bitmap fields with their
//! `enc`, `prefix` and `padding` map onto our spec model, Composite fields onto
//! composites (`composite.rs`); every field we cannot express is reported by
//! name, all in one run.

mod composite;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::ser::PrettyFormatter;
use serde_json::{json, Map, Value};

use super::{compile, ImportError, ImportProblems, Imported, Report};
use crate::iso8583::spec::{
    BcdFiller, ContentClass, Encoding, Field, FieldFile, LengthKind, PadSide, Spec, MAX_FIELD,
};

const FIELD_KEYS: &[&str] = &[
    "type",
    "length",
    "description",
    "enc",
    "prefix",
    "padding",
    "tag",
    "subfields",
    "bitmap",
    "disableautoexpand",
    "class",
    "bcd_filler",
];

pub(super) const SUPPORTED_TYPES: &str =
    "supported: String, Numeric, Binary, Hex, Track1, Track2, Bitmap, Composite";
pub(super) const SUPPORTED_ENCODINGS: &str =
    "supported: ASCII, EBCDIC, BCD, LBCD, Binary, HexToASCII (also BytesToASCIIHex, Hex), \
     and the encoder names of moov's first JSON format (asciiEncoder, hexEncoder, ...)";
pub(super) const SUPPORTED_PREFIXES: &str =
    "supported: ASCII, EBCDIC or BCD with .Fixed, .LL, .LLL or \
     .LLLL (ASCII and EBCDIC also .LLLLL, .LLLLLL); Binary.Fixed, Binary.L, Binary.LL; \
     Hex.Fixed, Hex.L, Hex.LL; None.Fixed";

/// Imports a moov-io/iso8583 JSON spec; `origin` names it in errors.
///
/// - `String` imports as `ans` (or `n` when packed as BCD, `b` when its `enc` is
///   `Binary` or `HexToASCII`), `Numeric` as `n`, `Binary` as `b`; `Bitmap` is
///   only field 1 and sets `bitmap_encoding`; field 0 sets `mti_encoding`.
/// - `BCD` is right-justified (`bcd_filler = "left"`), `LBCD` left-justified
///   (`"right"`). `HexToASCII` is bytes written as hex text, length in bytes.
/// - `Binary.L` is our one-byte binary prefix (LL); `Binary.LL` our two-byte one
///   (LLL up to max 999, LLLL above).
/// - `padding` on a fixed field sets `pad`/`pad_char`; a fixed field without one
///   gets `pad = "none"`, as moov refuses short values. Variable fields ignore it.
/// - Two optional keys moov itself ignores carry what its types cannot: `class`
///   (e.g. `"z"`, `"x+n"`, whose moov `length` includes the sign) and
///   `bcd_filler` (`"right-f"`). [`to_moov_json`] writes them only when needed.
/// - Field 65 is skipped: here bit 65 always marks the tertiary bitmap.
pub fn from_moov_json(text: &str, origin: &str) -> Result<Imported, ImportProblems> {
    let document = |message: String| ImportError::Document {
        origin: origin.to_string(),
        message,
    };
    let json: Json = serde_json::from_str(text).map_err(|e| ImportError::Syntax {
        origin: origin.to_string(),
        format: "JSON",
        message: e.to_string(),
    })?;
    let Json::Object(top) = &json else {
        return Err(document(format!(
            "expected an object with \"name\" and \"fields\", found {}",
            json.describe()
        ))
        .into());
    };
    let mut report = Report::default();
    let (mut name, mut fields_json) = (None, None);
    for (key, value) in top {
        let slot = match key.as_str() {
            "name" => &mut name,
            "fields" => &mut fields_json,
            other => {
                report.problem(document(format!(
                    "unknown top-level key {other:?}; expected \"name\" and \"fields\""
                )));
                continue;
            }
        };
        if slot.replace(value).is_some() {
            report.problem(document(format!("key {key:?} appears twice")));
        }
    }
    let name = match name {
        Some(Json::String(s)) => s.clone(),
        Some(other) => {
            report.problem(document(format!(
                "name: expected a string, found {}",
                other.describe()
            )));
            String::new()
        }
        None => Path::new(origin)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "moov".into()),
    };
    let entries = match fields_json {
        Some(Json::Object(entries)) => entries.as_slice(),
        Some(other) => {
            report.problem(document(format!(
                "fields: expected an object keyed by field number, found {}",
                other.describe()
            )));
            return Err(report.fail());
        }
        None => {
            report.problem(document("no \"fields\" object".into()));
            return Err(report.fail());
        }
    };

    let mut seen = HashSet::new();
    let mut mti_encoding = None;
    let mut bitmap_encoding = None;
    let mut fields = BTreeMap::new();
    for (key, value) in entries {
        let at = At { origin, field: key };
        let Some(number) = report.keep(field_number(key, &at)) else {
            continue;
        };
        if !seen.insert(number) {
            report.problem(ImportError::Duplicate {
                origin: origin.to_string(),
                field: number.to_string(),
            });
            continue;
        }
        if number == 65 {
            continue;
        }
        if number > 1 && composite::is_composite(value) {
            let mut places = Vec::new();
            if let Some(field) = composite::read_composite(value, &at, &mut places, &mut report) {
                fields.insert(number.to_string(), field);
            }
            for (below, place) in places {
                report
                    .places
                    .insert(format!("{number} subfield {below}"), place);
            }
            continue;
        }
        let Some(def) = report.keep(MoovField::read(value, &at)) else {
            continue;
        };
        match number {
            0 => mti_encoding = report.keep(def.mti_encoding(&at)),
            1 => bitmap_encoding = report.keep(def.bitmap_encoding(&at)),
            n => {
                if let Some(field) = report.keep(def.data_field(&at)) {
                    fields.insert(n.to_string(), field);
                }
            }
        }
    }
    if !seen.contains(&0) {
        report.problem(document("no field \"0\" (the MTI)".into()));
    }
    if !seen.contains(&1) {
        report.problem(document("no field \"1\" (the bitmap)".into()));
    }
    let (Some(mti_encoding), Some(bitmap_encoding)) = (mti_encoding, bitmap_encoding) else {
        return Err(report.fail());
    };
    compile(
        name,
        String::new(),
        mti_encoding,
        bitmap_encoding,
        fields,
        origin,
        report,
    )
}

/// A field key: `"35"`, or `"Field035"` as moov's first JSON format wrote it.
fn field_number(key: &str, at: &At) -> Result<u8, ImportError> {
    key.strip_prefix("Field")
        .unwrap_or(key)
        .parse::<u8>()
        .ok()
        .filter(|n| *n <= MAX_FIELD)
        .ok_or_else(|| {
            at.invalid(
                "key",
                &format!("a field number 0-{MAX_FIELD} (or Field000-Field{MAX_FIELD})"),
                &format!("{key:?}"),
            )
        })
}

/// Writes `spec` as moov-io/iso8583 JSON, fields in numeric order, so that
/// [`from_moov_json`] reads back the same layout (`class`/`bcd_filler` are added
/// only where moov's own names cannot say it). moov itself has no `x+n` packed
/// as BCD and no `F` filler; for those fields it would read the digits only.
/// moov has no EBCDIC hex either: a spec using `ebcdic-hex` anywhere is
/// refused, every place named.
pub fn to_moov_json(spec: &Spec) -> Result<String, MoovExportError> {
    let problems = unexportable(spec);
    if !problems.is_empty() {
        return Err(MoovExportError { problems });
    }
    let mut fields = Map::new();
    fields.insert("0".into(), mti_entry(spec.mti_encoding));
    fields.insert("1".into(), bitmap_entry(spec.bitmap_encoding));
    for f in spec.fields() {
        fields.insert(f.number.to_string(), field_entry(f));
    }
    let document = json!({ "name": spec.name, "fields": fields });
    // Tabs, as moov's own exporter indents.
    let mut out = Vec::new();
    let mut writer =
        serde_json::Serializer::with_formatter(&mut out, PrettyFormatter::with_indent(b"\t"));
    document
        .serialize(&mut writer)
        .expect("a JSON value serializes into memory");
    let mut out = String::from_utf8(out).expect("serde_json writes UTF-8");
    out.push('\n');
    Ok(out)
}

/// Why a spec cannot be written as moov JSON: one line per place it uses an
/// encoding moov has no name for.
#[derive(Debug, thiserror::Error)]
#[error("not exported as moov JSON:\n  {}", .problems.join("\n  "))]
pub struct MoovExportError {
    pub problems: Vec<String>,
}

/// Every place in `spec` moov cannot say: the bitmap, fields and subfields,
/// subfield bitmaps and tlv parts written as EBCDIC hex; short subfield bitmaps.
fn unexportable(spec: &Spec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.bitmap_encoding == Encoding::EbcdicHex {
        problems.push(no_ebcdic_hex("bitmap"));
    }
    for f in spec.fields() {
        unexportable_field(f, &format!("field {}", f.number), &mut problems);
    }
    problems
}

fn unexportable_field(f: &Field, place: &str, problems: &mut Vec<String>) {
    if f.encoding == Encoding::EbcdicHex {
        problems.push(no_ebcdic_hex(place));
    }
    let Some(c) = &f.composite else {
        return;
    };
    let parts = [
        ("subfield bitmap", c.bitmap.map(|b| b.encoding)),
        ("tag", c.tag.map(|t| t.encoding)),
        ("value_length", c.value_length.map(|v| v.encoding)),
    ];
    for (part, encoding) in parts {
        if encoding == Some(Encoding::EbcdicHex) {
            problems.push(no_ebcdic_hex(&format!("{place} {part}")));
        }
    }
    if let Some(bytes) = c.bitmap.map(|b| b.bytes).filter(|b| *b < 8) {
        problems.push(format!(
            "{place} subfield bitmap: {bytes} bytes has no moov equivalent (moov's are 8 or 16)"
        ));
    }
    for sub in &c.subfields {
        unexportable_field(&sub.field, &format!("field {}", sub.path), problems);
    }
}

fn no_ebcdic_hex(place: &str) -> String {
    format!(
        "{place}: encoding ebcdic-hex has no moov equivalent \
         (moov writes hex digits in ASCII only: HexToASCII)"
    )
}

fn mti_entry(encoding: Encoding) -> Value {
    json!({
        "type": "String",
        "length": 4,
        "description": "Message Type Indicator",
        "enc": moov_encoding(encoding, BcdFiller::Left),
        "prefix": format!("{}.Fixed", fixed_family(encoding)),
    })
}

fn bitmap_entry(encoding: Encoding) -> Value {
    json!({
        "type": "Bitmap",
        "length": 8,
        "description": "Bitmap",
        "enc": moov_encoding(encoding, BcdFiller::Left),
        "prefix": format!("{}.Fixed", fixed_family(encoding)),
    })
}

fn field_entry(f: &Field) -> Value {
    let kind = match f.class {
        ContentClass::N => "Numeric",
        ContentClass::B => "Binary",
        _ => "String",
    };
    let length = match f.class {
        ContentClass::XN => f.max + 1,
        _ => f.max,
    };
    let prefix = match (f.length, f.prefix) {
        (LengthKind::Fixed, _) => format!("{}.Fixed", fixed_family(f.encoding)),
        (LengthKind::LL, Encoding::Binary) => "Binary.L".into(),
        (_, Encoding::Binary) => "Binary.LL".into(),
        (LengthKind::LL, Encoding::Hex) => "Hex.L".into(),
        (_, Encoding::Hex) => "Hex.LL".into(),
        (kind, prefix) => format!("{}.{kind}", fixed_family(prefix)),
    };
    let mut entry = Map::new();
    entry.insert("type".into(), kind.into());
    entry.insert("length".into(), length.into());
    entry.insert("description".into(), f.name.clone().into());
    entry.insert("enc".into(), moov_encoding(f.encoding, f.bcd_filler).into());
    entry.insert("prefix".into(), prefix.into());
    if let Some(c) = &f.composite {
        if f.class != derived_class(kind, f.encoding) {
            entry.insert("class".into(), f.class.as_str().into());
        }
        return composite::composite_entry(c, entry);
    }
    if f.length == LengthKind::Fixed && f.pad != PadSide::None {
        let side = if f.pad == PadSide::Left {
            "Left"
        } else {
            "Right"
        };
        entry.insert(
            "padding".into(),
            json!({ "type": side, "pad": char::from(f.pad_char).to_string() }),
        );
    }
    if f.class != derived_class(kind, f.encoding) {
        entry.insert("class".into(), f.class.as_str().into());
    }
    if f.encoding == Encoding::Bcd && f.bcd_filler == BcdFiller::RightF {
        entry.insert("bcd_filler".into(), "right-f".into());
    }
    Value::Object(entry)
}

/// The class [`from_moov_json`] gives a type and encoding without a `class` key.
fn derived_class(kind: &str, encoding: Encoding) -> ContentClass {
    match (kind, encoding) {
        ("Numeric", _) | (_, Encoding::Bcd) => ContentClass::N,
        ("Binary", _) | (_, Encoding::Binary | Encoding::Hex) => ContentClass::B,
        _ => ContentClass::Ans,
    }
}

fn moov_encoding(encoding: Encoding, filler: BcdFiller) -> &'static str {
    match (encoding, filler) {
        (Encoding::Ascii, _) => "ASCII",
        (Encoding::Ebcdic, _) => "EBCDIC",
        (Encoding::Bcd, BcdFiller::Left) => "BCD",
        (Encoding::Bcd, _) => "LBCD",
        (Encoding::Binary, _) => "Binary",
        (Encoding::Hex, _) => "HexToASCII",
        // Refused by `unexportable` before any entry is written.
        (Encoding::EbcdicHex, _) => "EBCDIC",
    }
}

/// The prefixer family named before `.Fixed` or `.LL`.
fn fixed_family(encoding: Encoding) -> &'static str {
    match encoding {
        // Hex text is ASCII on the wire; moov's ASCII.Fixed counts value bytes.
        Encoding::Ascii | Encoding::Hex => "ASCII",
        // EBCDIC hex is refused by `unexportable` before any entry is written.
        Encoding::Ebcdic | Encoding::EbcdicHex => "EBCDIC",
        Encoding::Bcd => "BCD",
        Encoding::Binary => "Binary",
    }
}

/// A parsed JSON value whose objects keep every key, duplicates included, so
/// that a field number given twice is refused rather than silently overwritten.
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array,
    Object(Vec<(String, Json)>),
}

impl Json {
    /// How a found value reads in an error message.
    fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Number(n) => n.to_string(),
            Json::String(s) => format!("{s:?}"),
            Json::Array => "an array".into(),
            Json::Object(_) => "an object".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        // Arrays only ever appear as wrong values; read and drop their elements.
        while seq.next_element::<Json>()?.is_some() {}
        Ok(Json::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Json>()? {
            entries.push(entry);
        }
        Ok(Json::Object(entries))
    }
}

/// Where a field-level error is: the origin and the field's key.
struct At<'a> {
    origin: &'a str,
    field: &'a str,
}

impl At<'_> {
    fn invalid(&self, attribute: &str, expected: &str, found: &str) -> ImportError {
        ImportError::Invalid {
            origin: self.origin.to_string(),
            field: self.field.to_string(),
            attribute: attribute.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    fn missing(&self, key: &str) -> ImportError {
        ImportError::Missing {
            origin: self.origin.to_string(),
            field: self.field.to_string(),
            place: "key",
            attribute: key.to_string(),
        }
    }

    fn unsupported(&self, what: String, why: &str) -> ImportError {
        ImportError::Unsupported {
            origin: self.origin.to_string(),
            field: self.field.to_string(),
            what,
            why: why.to_string(),
        }
    }
}

/// moov's `enc` names, with the two hex directions told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Ascii,
    Ebcdic,
    /// Right-justified BCD: a `0` nibble before an odd digit count.
    Bcd,
    /// Left-justified BCD: the `0` nibble after.
    Lbcd,
    Binary,
    /// Bytes written as hex text (`HexToASCII`).
    HexText,
}

/// moov's `prefix`, already mapped onto our length kinds.
enum Prefix {
    Fixed,
    Variable(LengthKind, Encoding),
    /// `Binary.LL` (two length bytes) or `Hex.LL` (the same as four hex
    /// characters): LLL or LLLL depending on the max.
    TwoBytes(Encoding),
}

/// One field object, each key checked for type.
struct MoovField<'j> {
    kind: &'j str,
    length: Option<usize>,
    description: Option<&'j str>,
    enc: Enc,
    enc_name: &'j str,
    prefix: Prefix,
    prefix_name: &'j str,
    padding: Option<(PadSide, Option<char>)>,
    class: Option<ContentClass>,
    bcd_filler: Option<BcdFiller>,
}

impl<'j> MoovField<'j> {
    fn read(value: &'j Json, at: &At) -> Result<MoovField<'j>, ImportError> {
        let Json::Object(entries) = value else {
            return Err(at.invalid("definition", "an object", &value.describe()));
        };
        let mut keys = HashSet::new();
        for (key, _) in entries {
            // Go's JSON matches keys without case; moov writes `disableAutoExpand`.
            if !FIELD_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                return Err(at.invalid("key", &FIELD_KEYS.join(", "), &format!("{key:?}")));
            }
            if !keys.insert(key.as_str()) {
                return Err(at.invalid(key, "the key once", "it twice"));
            }
        }
        let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let text = |key: &str| -> Result<Option<&'j str>, ImportError> {
            match entries.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
                None => Ok(None),
                Some(Json::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(at.invalid(key, "a string", &other.describe())),
            }
        };
        let kind = text("type")?.ok_or_else(|| at.missing("type"))?;
        let composite = ["subfields", "tag", "bitmap"]
            .into_iter()
            .find(|k| get(k).is_some());
        if kind == "Composite" || composite.is_some() {
            return Err(at.invalid(
                "type",
                "a field with bytes of its own (a Composite is only a data field)",
                &format!("{kind:?}"),
            ));
        }
        if !matches!(
            kind,
            "String" | "Numeric" | "Binary" | "Hex" | "Track1" | "Track2" | "Bitmap"
        ) {
            return Err(at.unsupported(format!("moov type {kind}"), SUPPORTED_TYPES));
        }
        let length = match get("length") {
            None => None,
            Some(Json::Number(n)) => {
                let whole = n.as_u64().and_then(|n| usize::try_from(n).ok());
                Some(whole.ok_or_else(|| at.invalid("length", "a whole number", &n.to_string()))?)
            }
            Some(other) => return Err(at.invalid("length", "a whole number", &other.describe())),
        };
        let enc_name = text("enc")?.ok_or_else(|| at.missing("enc"))?;
        let prefix_name = text("prefix")?.ok_or_else(|| at.missing("prefix"))?;
        let padding = match get("padding") {
            None => None,
            Some(p) => Some(read_padding(p, at)?),
        };
        let class = match text("class")? {
            None => None,
            Some(name) => Some(class_named(name).ok_or_else(|| {
                at.invalid(
                    "class",
                    "an isoswitch class (a, n, s, an, as, ns, ans, b, z, x+n)",
                    &format!("{name:?}"),
                )
            })?),
        };
        let bcd_filler = match text("bcd_filler")? {
            None => None,
            Some("left") => Some(BcdFiller::Left),
            Some("right") => Some(BcdFiller::Right),
            Some("right-f") => Some(BcdFiller::RightF),
            Some(other) => {
                return Err(at.invalid(
                    "bcd_filler",
                    "left, right or right-f",
                    &format!("{other:?}"),
                ));
            }
        };
        Ok(MoovField {
            kind,
            length,
            description: text("description")?,
            enc: parse_encoding(enc_name, at)?,
            enc_name,
            prefix: parse_prefix(prefix_name, at)?,
            prefix_name,
            padding,
            class,
            bcd_filler,
        })
    }

    fn require_fixed(&self, at: &At, role: &str) -> Result<(), ImportError> {
        match self.prefix {
            Prefix::Fixed => Ok(()),
            _ => Err(at.invalid(
                "prefix",
                &format!("a .Fixed prefix for {role}"),
                &format!("{:?}", self.prefix_name),
            )),
        }
    }

    fn mti_encoding(&self, at: &At) -> Result<Encoding, ImportError> {
        if !matches!(self.kind, "String" | "Numeric") {
            return Err(at.invalid(
                "type",
                "String or Numeric for the MTI",
                &format!("{:?}", self.kind),
            ));
        }
        let encoding = match self.enc {
            Enc::Ascii => Encoding::Ascii,
            Enc::Ebcdic => Encoding::Ebcdic,
            Enc::Bcd | Enc::Lbcd => Encoding::Bcd,
            _ => {
                return Err(at.invalid(
                    "enc",
                    "ASCII, EBCDIC or BCD for the MTI",
                    &format!("{:?}", self.enc_name),
                ));
            }
        };
        self.require_fixed(at, "the MTI")?;
        match self.length {
            Some(4) => Ok(encoding),
            Some(n) => Err(at.invalid("length", "4", &n.to_string())),
            None => Err(at.missing("length")),
        }
    }

    /// moov bitmaps give a length of 8, 16 or none; only the encoding matters here.
    fn bitmap_encoding(&self, at: &At) -> Result<Encoding, ImportError> {
        if self.kind != "Bitmap" {
            return Err(at.invalid("type", "Bitmap for field 1", &format!("{:?}", self.kind)));
        }
        let encoding = match self.enc {
            Enc::Binary => Encoding::Binary,
            Enc::HexText => Encoding::Hex,
            _ => {
                return Err(at.invalid(
                    "enc",
                    "Binary or HexToASCII for the bitmap",
                    &format!("{:?}", self.enc_name),
                ));
            }
        };
        self.require_fixed(at, "the bitmap")?;
        Ok(encoding)
    }

    fn data_field(&self, at: &At) -> Result<FieldFile, ImportError> {
        let enc_error =
            |expected: &str| at.invalid("enc", expected, &format!("{:?}", self.enc_name));
        // Hex fields are bytes shown as hex; track data is text.
        let kind = match self.kind {
            "Hex" => "Binary",
            "Track1" | "Track2" => "String",
            other => other,
        };
        let (derived, encoding, mut filler) = match (kind, self.enc) {
            ("Bitmap", _) => {
                return Err(at.invalid(
                    "type",
                    "String, Numeric or Binary (Bitmap is field 1 only)",
                    "\"Bitmap\"",
                ));
            }
            ("Numeric" | "String", Enc::Bcd) => {
                (ContentClass::N, Encoding::Bcd, Some(BcdFiller::Left))
            }
            ("Numeric" | "String", Enc::Lbcd) => {
                (ContentClass::N, Encoding::Bcd, Some(BcdFiller::Right))
            }
            ("Numeric", Enc::Ascii) => (ContentClass::N, Encoding::Ascii, None),
            ("Numeric", Enc::Ebcdic) => (ContentClass::N, Encoding::Ebcdic, None),
            ("Numeric", _) => {
                return Err(enc_error("ASCII, EBCDIC, BCD or LBCD for a Numeric field"))
            }
            ("String", Enc::Ascii) => (ContentClass::Ans, Encoding::Ascii, None),
            ("String", Enc::Ebcdic) => (ContentClass::Ans, Encoding::Ebcdic, None),
            (_, Enc::Binary) => (ContentClass::B, Encoding::Binary, None),
            (_, Enc::HexText) => (ContentClass::B, Encoding::Hex, None),
            _ => return Err(enc_error("Binary or HexToASCII for a Binary field")),
        };
        let derived = match (self.kind, derived) {
            ("Track2", ContentClass::Ans | ContentClass::N) => ContentClass::Z,
            _ => derived,
        };
        let class = match self.class {
            None => derived,
            Some(c) => {
                let fits = match derived {
                    ContentClass::B => c == ContentClass::B,
                    d if d.is_numeric() => c.is_numeric(),
                    _ => c != ContentClass::B,
                };
                if !fits {
                    let expected =
                        format!("a class that fits {} with enc {}", self.kind, self.enc_name);
                    return Err(at.invalid("class", &expected, &format!("{:?}", c.as_str())));
                }
                c
            }
        };
        if let Some(f) = self.bcd_filler {
            if encoding != Encoding::Bcd {
                return Err(at.invalid(
                    "bcd_filler",
                    "no bcd_filler unless enc is BCD or LBCD",
                    &format!("{:?}", self.enc_name),
                ));
            }
            filler = Some(f);
        }
        let length = self.length.ok_or_else(|| at.missing("length"))?;
        let max = match class {
            ContentClass::XN => length.checked_sub(1).filter(|m| *m > 0).ok_or_else(|| {
                at.invalid(
                    "length",
                    "at least 2 for x+n (the sign and one digit)",
                    &length.to_string(),
                )
            })?,
            _ => length,
        };
        let (length_kind, prefix) = match self.prefix {
            Prefix::Fixed => (LengthKind::Fixed, None),
            Prefix::Variable(kind, encoding) => (kind, Some(encoding)),
            Prefix::TwoBytes(e) if max <= 999 => (LengthKind::LLL, Some(e)),
            Prefix::TwoBytes(e) => (LengthKind::LLLL, Some(e)),
        };
        let (pad, pad_char) = match (length_kind, self.padding) {
            (LengthKind::Fixed, Some((side, c))) => (Some(side), c),
            // moov refuses a short value for a fixed field it does not pad.
            (LengthKind::Fixed, None) => (Some(PadSide::None), None),
            _ => (None, None),
        };
        Ok(FieldFile {
            name: self
                .description
                .map_or_else(|| format!("Field {}", at.field), str::to_string),
            length: length_kind,
            max,
            class,
            encoding: Some(encoding),
            prefix,
            pad,
            pad_char,
            bcd_filler: filler,
            composite: None,
        })
    }
}

fn read_padding(value: &Json, at: &At) -> Result<(PadSide, Option<char>), ImportError> {
    let Json::Object(entries) = value else {
        return Err(at.invalid(
            "padding",
            "an object with \"type\" and \"pad\"",
            &value.describe(),
        ));
    };
    let (mut side, mut pad) = (None, None);
    for (key, v) in entries {
        let slot = match key.as_str() {
            "type" => &mut side,
            "pad" => &mut pad,
            other => {
                return Err(at.invalid(
                    "padding",
                    "only the keys \"type\" and \"pad\"",
                    &format!("{other:?}"),
                ));
            }
        };
        *slot = Some(match v {
            Json::String(s) => s.clone(),
            // moov's first JSON format wrote the pad character as its code: 48 is '0'.
            Json::Number(n) if key == "pad" => n
                .as_u64()
                .and_then(|code| u32::try_from(code).ok())
                .and_then(char::from_u32)
                .map(String::from)
                .ok_or_else(|| at.invalid("padding.pad", "a character code", &n.to_string()))?,
            _ => {
                return Err(at.invalid(&format!("padding.{key}"), "a string", &v.describe()));
            }
        });
    }
    let (side, pad) = (side.as_deref(), pad.as_deref());
    let side = match side {
        Some("Left" | "leftPadder") => PadSide::Left,
        Some("Right" | "rightPadder") => PadSide::Right,
        Some("None" | "nonePadder") => return Ok((PadSide::None, None)),
        Some(other) => {
            return Err(at.invalid("padding.type", "Left, Right or None", &format!("{other:?}")))
        }
        None => return Err(at.missing("padding.type")),
    };
    let mut chars = pad.ok_or_else(|| at.missing("padding.pad"))?.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok((side, Some(c))),
        _ => Err(at.invalid(
            "padding.pad",
            "a single character",
            &format!("{:?}", pad.unwrap_or("")),
        )),
    }
}

fn class_named(name: &str) -> Option<ContentClass> {
    use ContentClass::*;
    [A, N, S, An, As, Ns, Ans, B, Z, XN]
        .into_iter()
        .find(|c| c.as_str() == name)
}

fn parse_encoding(name: &str, at: &At) -> Result<Enc, ImportError> {
    Ok(match name {
        // The names moov's JSON uses, its Go variable names, and the encoder
        // type names its first JSON format wrote.
        "ASCII" | "asciiEncoder" => Enc::Ascii,
        "EBCDIC" | "ebcdicEncoder" => Enc::Ebcdic,
        "BCD" | "bcdEncoder" => Enc::Bcd,
        "LBCD" | "lBCDEncoder" => Enc::Lbcd,
        "Binary" | "binaryEncoder" => Enc::Binary,
        "HexToASCII" | "Hex" | "BytesToASCIIHex" | "hexToASCIIEncoder" | "hexEncoder" => {
            Enc::HexText
        }
        "ASCIIToHex" | "ASCIIHexToBytes" | "asciiToHexEncoder" => {
            return Err(at.unsupported(
                "moov encoding ASCIIToHex".into(),
                "moov counts its length in hex characters when packing but in bytes when \
                 unpacking; use Binary",
            ));
        }
        other => return Err(at.unsupported(format!("moov encoding {other}"), SUPPORTED_ENCODINGS)),
    })
}

fn parse_prefix(name: &str, at: &At) -> Result<Prefix, ImportError> {
    let unsupported = |why: &str| Err(at.unsupported(format!("moov prefix {name}"), why));
    let Some((family, kind)) = name.split_once('.') else {
        return unsupported(SUPPORTED_PREFIXES);
    };
    if !matches!(
        family,
        "ASCII" | "BCD" | "EBCDIC" | "Binary" | "Hex" | "None"
    ) {
        return unsupported(SUPPORTED_PREFIXES);
    }
    let length = match kind {
        // moov's first JSON format wrote `.fixed`.
        "Fixed" | "fixed" => return Ok(Prefix::Fixed),
        _ if family == "None" => return unsupported(SUPPORTED_PREFIXES),
        "L" => None,
        "LL" => Some(LengthKind::LL),
        "LLL" => Some(LengthKind::LLL),
        "LLLL" => Some(LengthKind::LLLL),
        // moov's prefixers have them, though its JSON builder does not list them.
        "LLLLL" => Some(LengthKind::LLLLL),
        "LLLLLL" => Some(LengthKind::LLLLLL),
        _ => return unsupported(SUPPORTED_PREFIXES),
    };
    match (family, length) {
        ("Binary", None) => Ok(Prefix::Variable(LengthKind::LL, Encoding::Binary)),
        ("Binary", Some(LengthKind::LL)) => Ok(Prefix::TwoBytes(Encoding::Binary)),
        ("Hex", None) => Ok(Prefix::Variable(LengthKind::LL, Encoding::Hex)),
        ("Hex", Some(LengthKind::LL)) => Ok(Prefix::TwoBytes(Encoding::Hex)),
        ("Binary" | "Hex", _) => unsupported(
            "length prefixes of three or more bytes; use .L or .LL (one or two length bytes)",
        ),
        (_, None) => unsupported("one-digit length prefixes; use .LL or longer"),
        (family, Some(kind)) => {
            let encoding = match family {
                "ASCII" => Encoding::Ascii,
                "EBCDIC" => Encoding::Ebcdic,
                _ => Encoding::Bcd,
            };
            Ok(Prefix::Variable(kind, encoding))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/specs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// A moov spec with an ASCII MTI, a binary bitmap and `extra` as field 2.
    fn with_field_2(extra: &str) -> Result<Spec, ImportProblems> {
        let json = format!(
            r#"{{"name": "t", "fields": {{
                "0": {{"type": "String", "length": 4, "enc": "ASCII", "prefix": "ASCII.Fixed"}},
                "1": {{"type": "Bitmap", "length": 8, "enc": "Binary", "prefix": "Binary.Fixed"}},
                "2": {extra}
            }}}}"#
        );
        from_moov_json(&json, "t.json").map(|i| i.spec)
    }

    fn refusal(extra: &str) -> String {
        match with_field_2(extra) {
            Ok(_) => panic!("expected {extra} to be refused"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ebcdic_hex_is_refused_on_export_naming_every_place() {
        let toml = "name = \"e\"\nmti_encoding = \"ebcdic\"\nbitmap_encoding = \"ebcdic-hex\"\n\
                    [defaults]\nnumeric = \"ebcdic\"\ntext = \"ebcdic\"\nbinary = \"binary\"\nprefix = \"ebcdic\"\n\
                    [fields.52]\nname = \"PIN\"\nmax = 8\nclass = \"b\"\nencoding = \"ebcdic-hex\"\n\
                    [fields.53]\nname = \"x\"\nmax = 8\nclass = \"b\"\nencoding = \"hex\"\n";
        let spec = Spec::from_toml_str(toml, "e.toml").expect("valid spec");
        let err = to_moov_json(&spec).expect_err("moov has no EBCDIC hex");
        assert_eq!(err.problems.len(), 2, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("bitmap: encoding ebcdic-hex has no moov equivalent"),
            "{text}"
        );
        assert!(text.contains("field 52: encoding ebcdic-hex"), "{text}");
    }

    type Layout = (LengthKind, usize, ContentClass, Encoding, Option<Encoding>);

    fn layout(spec: &Spec, number: u8) -> Layout {
        let f = spec
            .field(number)
            .unwrap_or_else(|| panic!("field {number} missing"));
        let prefix = (f.length != LengthKind::Fixed).then_some(f.prefix);
        (f.length, f.max, f.class, f.encoding, prefix)
    }

    fn load_toml(text: &str) -> Spec {
        Spec::from_toml_str(text, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Field layouts, MTI and bitmap encodings: what a round trip must keep.
    fn wire(spec: &Spec) -> (String, Encoding, Encoding, Vec<Field>) {
        (
            spec.name.clone(),
            spec.mti_encoding,
            spec.bitmap_encoding,
            spec.fields().cloned().collect(),
        )
    }

    #[test]
    fn the_moov_fixture_imports_each_type_encoding_and_prefix() {
        use ContentClass::{Ans, B, N};
        use Encoding::{Ascii, Bcd, Binary, Ebcdic, Hex};
        use LengthKind::{Fixed, LL, LLL, LLLL};
        let spec = from_moov_json(&fixture("moov-spec87.json"), "moov-spec87.json")
            .expect("imports")
            .spec;
        assert_eq!(spec.name, "ISO 8583 v1987 mixed encodings (moov-io style)");
        assert_eq!(spec.mti_encoding, Ascii);
        assert_eq!(spec.bitmap_encoding, Binary);
        assert_eq!(layout(&spec, 2), (LL, 19, Ans, Ascii, Some(Ascii)));
        assert_eq!(layout(&spec, 3), (Fixed, 6, N, Ascii, None));
        assert_eq!(layout(&spec, 11), (Fixed, 6, N, Bcd, None));
        assert_eq!(layout(&spec, 12), (Fixed, 6, N, Bcd, None));
        assert_eq!(layout(&spec, 22), (Fixed, 3, N, Ebcdic, None));
        assert_eq!(layout(&spec, 32), (LL, 11, N, Bcd, Some(Bcd)));
        assert_eq!(layout(&spec, 43), (Fixed, 40, Ans, Ebcdic, None));
        assert_eq!(layout(&spec, 45), (LL, 76, Ans, Ebcdic, Some(Ebcdic)));
        assert_eq!(layout(&spec, 48), (LLL, 999, Ans, Ascii, Some(Ascii)));
        assert_eq!(layout(&spec, 52), (Fixed, 8, B, Hex, None));
        assert_eq!(layout(&spec, 53), (Fixed, 8, B, Binary, None));
        assert_eq!(layout(&spec, 55), (LLL, 255, B, Binary, Some(Binary)));
        assert_eq!(layout(&spec, 63), (LL, 255, B, Binary, Some(Binary)));
        assert_eq!(layout(&spec, 64), (Fixed, 8, B, Hex, None));
        assert_eq!(layout(&spec, 120), (LLLL, 9999, Ans, Ascii, Some(Ascii)));
        let f = |n: u8| spec.field(n).map(|f| (f.pad, f.pad_char, f.bcd_filler));
        assert_eq!(f(3), Some((PadSide::Left, b'0', BcdFiller::Left)));
        assert_eq!(f(4), Some((PadSide::Left, b'0', BcdFiller::Left)));
        assert_eq!(f(11).map(|x| x.2), Some(BcdFiller::Left), "BCD");
        assert_eq!(f(12).map(|x| x.2), Some(BcdFiller::Right), "LBCD");
        assert_eq!(f(37).map(|x| (x.0, x.1)), Some((PadSide::Right, b' ')));
        assert_eq!(
            f(41).map(|x| x.0),
            Some(PadSide::None),
            "no padding: moov refuses short values"
        );
        assert_eq!(spec.field(55).map(|f| f.prefix_len()), Some(2), "Binary.LL");
        assert_eq!(spec.field(63).map(|f| f.prefix_len()), Some(1), "Binary.L");
        assert_eq!(
            spec.field(2).map(|f| f.name.as_str()),
            Some("Primary Account Number")
        );
    }

    #[test]
    fn export_then_import_keeps_every_field_of_the_jpos_fixtures() {
        for name in [
            "jpos-iso87ascii.xml",
            "jpos-iso87bcd.xml",
            "jpos-composite.xml",
        ] {
            let spec = super::super::from_jpos_xml(&fixture(name), name)
                .expect("imports")
                .spec;
            let again = from_moov_json(&to_moov_json(&spec).expect("exports"), "export.json")
                .expect("re-imports")
                .spec;
            assert_eq!(wire(&spec), wire(&again), "{name}");
        }
    }

    #[test]
    fn export_then_import_keeps_classes_fillers_and_padding_moov_cannot_name() {
        let spec = load_toml(
            r#"name = "odd"
mti_encoding = "ebcdic"
bitmap_encoding = "hex"
[defaults]
numeric = "bcd"
text = "ebcdic"
binary = "hex"
prefix = "binary"
[fields.2]
name = "PAN"
length = "LL"
max = 19
class = "n"
bcd_filler = "right"
[fields.28]
name = "Fee"
max = 8
class = "x+n"
[fields.35]
name = "Track 2"
length = "LL"
max = 37
class = "z"
bcd_filler = "right-f"
[fields.39]
name = "Response code"
max = 2
class = "an"
pad = "left"
pad_char = "X"
[fields.41]
name = "TID"
max = 8
class = "ans"
pad = "none"
[fields.54]
name = "Amounts"
length = "LLL"
max = 120
class = "an"
[fields.55]
name = "ICC"
length = "LLLL"
max = 1024
class = "b"
[fields.130]
name = "Private"
length = "LLL"
max = 999
class = "ans"
prefix = "ascii"
"#,
        );
        let json = to_moov_json(&spec).expect("exports");
        let again = from_moov_json(&json, "export.json")
            .expect("re-imports")
            .spec;
        assert_eq!(wire(&spec), wire(&again), "{json}");
        assert!(again.has_tertiary_bitmap());
    }

    #[test]
    fn export_writes_fields_in_numeric_order_with_moov_names() {
        let spec = super::super::from_jpos_xml(&fixture("jpos-iso87ascii.xml"), "a.xml")
            .expect("imports")
            .spec;
        let json = to_moov_json(&spec).expect("exports");
        let at = |key: &str| json.find(&format!("\"{key}\": {{")).unwrap_or(usize::MAX);
        assert!(
            at("0") < at("1") && at("1") < at("2") && at("2") < at("10") && at("10") < at("100")
        );
        assert!(json.contains("\"prefix\": \"Binary.Fixed\""), "{json}");
        assert!(json.contains("\"type\": \"Bitmap\""), "{json}");
        assert!(json.contains("\"enc\": \"ASCII\""), "{json}");
        assert!(json.contains("\"prefix\": \"ASCII.LLL\""), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let pan = &parsed["fields"]["2"];
        assert_eq!(pan["type"], "Numeric");
        assert_eq!(pan["length"], 19);
        assert_eq!(pan["prefix"], "ASCII.LL");
        assert_eq!(parsed["fields"]["3"]["padding"]["pad"], "0");
        assert_eq!(parsed["fields"]["28"]["class"], "x+n");
        assert_eq!(parsed["fields"]["28"]["length"], 9, "moov counts the sign");
        assert!(
            parsed["fields"]["2"].get("class").is_none(),
            "Numeric already says n"
        );
    }

    #[test]
    fn export_then_import_keeps_composites_of_every_layout() {
        let spec = load_toml(&fixture("composite-iso87ascii.toml"));
        let json = to_moov_json(&spec).expect("exports");
        let again = from_moov_json(&json, "export.json")
            .unwrap_or_else(|e| panic!("{e}\n{json}"))
            .spec;
        assert_eq!(wire(&spec), wire(&again));
        let moov = fixture("moov-composite.json");
        let spec = from_moov_json(&moov, "moov-composite.json")
            .expect("imports")
            .spec;
        let again = from_moov_json(&to_moov_json(&spec).expect("exports"), "export.json")
            .expect("re-imports")
            .spec;
        assert_eq!(wire(&spec), wire(&again));
    }

    #[test]
    fn composite_problems_name_the_subfield_every_one_in_one_run() {
        let err = refusal(
            r#"{"type": "Composite", "length": 99, "prefix": "ASCII.LL", "tag": {"length": 2, "enc": "BerTLVTag", "sort": "StringsByHex"},
                "subfields": {"01": {"type": "String", "length": 2, "enc": "EBCDIC", "prefix": "ASCII.Fixed"}}}"#,
        );
        assert!(
            err.contains("t.json: field 2: moov tag encoding BerTLVTag is not supported"),
            "{err}"
        );
        let err = refusal(
            r#"{"type": "Composite", "length": 99, "prefix": "ASCII.LL", "tag": {"sort": "StringsByInt"},
                "subfields": {"1": {"type": "Sting", "length": 2, "enc": "ASCII", "prefix": "ASCII.Fixed"},
                              "2": {"type": "String", "length": 2, "enc": "ASCII", "prefix": "ASCII.LX"}}}"#,
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with("t.json: field 2.1: moov type Sting is not supported"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("t.json: field 2.2: moov prefix ASCII.LX is not supported"),
            "{err}"
        );
        let err = refusal(
            r#"{"type": "String", "length": 9, "enc": "ASCII", "prefix": "ASCII.LL", "subfields": {}}"#,
        );
        assert!(
            err.contains("t.json: field 2: type: expected Composite for a field with subfields, tag or bitmap, found \"String\""),
            "{err}"
        );
    }
    #[test]
    fn unknown_types_encodings_and_prefixes_are_refused_with_the_supported_names() {
        let err =
            refusal(r#"{"type": "Track3", "length": 104, "enc": "ASCII", "prefix": "ASCII.LLL"}"#);
        assert!(
            err.contains("moov type Track3 is not supported (supported: String"),
            "{err}"
        );
        let err =
            refusal(r#"{"type": "String", "length": 19, "enc": "UTF8", "prefix": "ASCII.LL"}"#);
        assert!(
            err.contains("moov encoding UTF8 is not supported (supported: ASCII"),
            "{err}"
        );
        let err =
            refusal(r#"{"type": "String", "length": 19, "enc": "ASCII", "prefix": "ASCII.L"}"#);
        assert!(
            err.contains("moov prefix ASCII.L is not supported (one-digit"),
            "{err}"
        );
        let err =
            refusal(r#"{"type": "String", "length": 19, "enc": "ASCII", "prefix": "Hex.LLL"}"#);
        assert!(
            err.contains("moov prefix Hex.LLL is not supported"),
            "{err}"
        );
        let err =
            refusal(r#"{"type": "Binary", "length": 19, "enc": "Binary", "prefix": "Binary.LLL"}"#);
        assert!(
            err.contains("moov prefix Binary.LLL is not supported"),
            "{err}"
        );
        let err = refusal(
            r#"{"type": "Numeric", "length": 6, "enc": "Binary", "prefix": "ASCII.Fixed"}"#,
        );
        assert!(
            err.contains("field 2: enc: expected ASCII, EBCDIC, BCD or LBCD"),
            "{err}"
        );
    }

    #[test]
    fn malformed_json_is_refused_with_its_position() {
        let err = from_moov_json("{\"fields\": {", "bad.json")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.json: not valid JSON:"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_missing_key_is_refused_by_name() {
        let err = refusal(r#"{"type": "String", "enc": "ASCII", "prefix": "ASCII.LL"}"#);
        assert!(err.contains("field 2: missing key `length`"), "{err}");
        let err = refusal(r#"{"type": "String", "length": 19, "enc": "ASCII"}"#);
        assert!(err.contains("field 2: missing key `prefix`"), "{err}");
    }

    #[test]
    fn a_non_numeric_length_is_refused_with_expected_and_found() {
        let err =
            refusal(r#"{"type": "String", "length": "19", "enc": "ASCII", "prefix": "ASCII.LL"}"#);
        assert!(
            err.contains("field 2: length: expected a whole number, found \"19\""),
            "{err}"
        );
        let err =
            refusal(r#"{"type": "String", "length": -1, "enc": "ASCII", "prefix": "ASCII.LL"}"#);
        assert!(err.contains("found -1"), "{err}");
    }

    #[test]
    fn a_duplicate_field_is_refused_even_under_another_spelling() {
        let field = r#"{"type": "String", "length": 19, "enc": "ASCII", "prefix": "ASCII.LL"}"#;
        let err = refusal(&format!("{field}, \"2\": {field}"));
        assert!(err.contains("t.json: field 2 is defined twice"), "{err}");
        let err = refusal(&format!("{field}, \"02\": {field}"));
        assert!(err.contains("field 2 is defined twice"), "{err}");
    }

    #[test]
    fn unknown_and_repeated_keys_are_refused() {
        let err = refusal(
            r#"{"type": "String", "length": 19, "enc": "ASCII", "prefix": "ASCII.LL", "colour": 1}"#,
        );
        assert!(err.contains("field 2: key: expected type, length"), "{err}");
        assert!(err.contains("found \"colour\""), "{err}");
        let err = refusal(
            r#"{"type": "String", "length": 19, "length": 20, "enc": "ASCII", "prefix": "ASCII.LL"}"#,
        );
        assert!(
            err.contains("field 2: length: expected the key once"),
            "{err}"
        );
    }

    #[test]
    fn padding_must_be_a_known_side_and_one_character() {
        let err = refusal(
            r#"{"type": "Numeric", "length": 6, "enc": "ASCII", "prefix": "ASCII.Fixed", "padding": {"type": "Middle", "pad": "0"}}"#,
        );
        assert!(
            err.contains("padding.type: expected Left, Right or None, found \"Middle\""),
            "{err}"
        );
        let err = refusal(
            r#"{"type": "Numeric", "length": 6, "enc": "ASCII", "prefix": "ASCII.Fixed", "padding": {"type": "Left", "pad": "00"}}"#,
        );
        assert!(
            err.contains("padding.pad: expected a single character, found \"00\""),
            "{err}"
        );
    }

    #[test]
    fn extension_class_must_fit_the_moov_type() {
        let err = refusal(
            r#"{"type": "Binary", "length": 8, "enc": "Binary", "prefix": "Binary.Fixed", "class": "n"}"#,
        );
        assert!(
            err.contains(
                "field 2: class: expected a class that fits Binary with enc Binary, found \"n\""
            ),
            "{err}"
        );
        let spec = with_field_2(
            r#"{"type": "String", "length": 37, "enc": "LBCD", "prefix": "BCD.LL", "class": "z", "bcd_filler": "right-f"}"#,
        )
        .expect("imports");
        let f = spec.field(2).map(|f| (f.class, f.encoding, f.bcd_filler));
        assert_eq!(f, Some((ContentClass::Z, Encoding::Bcd, BcdFiller::RightF)));
    }

    #[test]
    fn mti_and_bitmap_must_fit_their_roles() {
        let spec = |mti: &str, bitmap: &str| {
            from_moov_json(
                &format!(r#"{{"fields": {{"0": {mti}, "1": {bitmap}}}}}"#),
                "r.json",
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let bitmap = r#"{"type": "Bitmap", "enc": "HexToASCII", "prefix": "Hex.Fixed"}"#;
        let mti = r#"{"type": "String", "length": 4, "enc": "ASCII", "prefix": "ASCII.Fixed"}"#;
        assert_eq!(spec(mti, bitmap), Ok(()));
        let err = spec(
            r#"{"type": "String", "length": 4, "enc": "HexToASCII", "prefix": "Hex.Fixed"}"#,
            bitmap,
        )
        .unwrap_err();
        assert!(
            err.contains("field 0: enc: expected ASCII, EBCDIC or BCD for the MTI"),
            "{err}"
        );
        let err = spec(
            r#"{"type": "String", "length": 2, "enc": "ASCII", "prefix": "ASCII.Fixed"}"#,
            bitmap,
        )
        .unwrap_err();
        assert!(
            err.contains("field 0: length: expected 4, found 2"),
            "{err}"
        );
        let err = spec(
            mti,
            r#"{"type": "String", "length": 8, "enc": "Binary", "prefix": "Binary.Fixed"}"#,
        )
        .unwrap_err();
        assert!(err.contains("field 1: type: expected Bitmap"), "{err}");
        let err = from_moov_json(&format!(r#"{{"fields": {{"0": {mti}}}}}"#), "r.json")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("r.json: no field \"1\" (the bitmap)"), "{err}");
    }

    #[test]
    fn field_65_is_skipped_as_the_tertiary_bitmap_marker() {
        let json = r#"{"fields": {
            "0": {"type": "String", "length": 4, "enc": "ASCII", "prefix": "ASCII.Fixed"},
            "1": {"type": "Bitmap", "length": 8, "enc": "Binary", "prefix": "Binary.Fixed"},
            "65": {"type": "Binary", "length": 1, "enc": "Binary", "prefix": "Binary.Fixed"}}}"#;
        let spec = from_moov_json(json, "m.json").expect("imports").spec;
        assert_eq!(spec.fields().count(), 0);
        assert_eq!(spec.name, "m");
    }

    #[test]
    fn a_max_the_prefix_cannot_carry_is_refused_by_the_spec_check() {
        let err =
            refusal(r#"{"type": "String", "length": 300, "enc": "ASCII", "prefix": "Binary.L"}"#);
        assert!(
            err.contains("t.json: field 2: max 300 does not fit"),
            "{err}"
        );
    }

    const TYPES: &[&str] = &[
        "String",
        "Numeric",
        "Binary",
        "Hex",
        "Track2",
        "Bitmap",
        "Composite",
        "X",
    ];
    const ENCODINGS: &[&str] = &[
        "ASCII",
        "EBCDIC",
        "BCD",
        "LBCD",
        "Binary",
        "HexToASCII",
        "Hex",
        "ASCIIToHex",
        "BytesToASCIIHex",
        "asciiEncoder",
        "?",
    ];
    const PREFIXES: &[&str] = &[
        "ASCII.Fixed",
        "ASCII.L",
        "ASCII.LL",
        "ASCII.LLL",
        "ASCII.LLLL",
        "BCD.LL",
        "BCD.LLL",
        "EBCDIC.LLL",
        "Binary.Fixed",
        "Binary.L",
        "Binary.LL",
        "Binary.LLLL",
        "Hex.L",
        "Hex.LL",
        "ASCII.LLLLL",
        "ASCII.fixed",
        "Hex.Fixed",
        "Hex.LL",
        "BerTLV",
        ".",
    ];
    const CLASSES: &[&str] = &["", "n", "z", "x+n", "ans", "an", "b", "q"];

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = from_moov_json(&text, "fuzz.json");
        }

        #[test]
        fn arbitrary_field_definitions_never_panic(
            number in "[0-9]{1,3}",
            kind in 0..TYPES.len(),
            enc in 0..ENCODINGS.len(),
            prefix in 0..PREFIXES.len(),
            length in prop_oneof![Just("0".to_string()), Just("-3".to_string()), Just("1.5".to_string()), (0u64..100_000).prop_map(|n| n.to_string())],
            class in 0..CLASSES.len(),
        ) {
            let class = match CLASSES[class] {
                "" => String::new(),
                c => format!(r#", "class": "{c}""#),
            };
            let json = format!(
                r#"{{"fields": {{
                    "0": {{"type": "String", "length": 4, "enc": "ASCII", "prefix": "ASCII.Fixed"}},
                    "1": {{"type": "Bitmap", "enc": "Binary", "prefix": "Binary.Fixed"}},
                    "{number}": {{"type": "{}", "length": {length}, "enc": "{}", "prefix": "{}"{class}}}}}}}"#,
                TYPES[kind], ENCODINGS[enc], PREFIXES[prefix]
            );
            if let Ok(imported) = from_moov_json(&json, "fuzz.json") {
                let again = from_moov_json(&to_moov_json(&imported.spec).expect("exports"), "again.json");
                prop_assert!(again.is_ok(), "{:?}", again.err().map(|e| e.to_string()));
            }
        }
    }
}
