//! moov `Composite` fields in and out: positional subfields (no tag
//! encoding), tagged ones (`tag: {length, enc, padding, sort}`, each value
//! with its own prefix), subfields behind a `bitmap`, nested composites.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{field_entry, parse_prefix, At, Json, MoovField, Prefix};
use crate::iso8583::import::{ImportError, Place, Report};
use crate::iso8583::spec::{
    CompositeFile, CompositeLayout, CompositeSpec, ContentClass, Encoding, FieldFile, LengthKind,
    PadSide, SubBitmapFile, TlvPartFile,
};

const COMPOSITE_KEYS: &str =
    "type, length, description, prefix, tag, subfields, bitmap, disableAutoExpand, enc, class";
const TAG_KEYS: &str = "length, enc, padding, sort, skipUnknownTLVTags, \
     storeUnknownTLVTags, prefUnknownTLV, value_length";

/// Whether a field definition is a composite: moov builds one from `type`
/// Composite, and reads `subfields`, `tag` and `bitmap` only for those.
pub(super) fn is_composite(value: &Json) -> bool {
    let Json::Object(entries) = value else {
        return false;
    };
    entries.iter().any(|(k, v)| match k.as_str() {
        "type" => matches!(v, Json::String(s) if s == "Composite"),
        key => ["subfields", "tag", "bitmap"].contains(&key),
    })
}

/// The value of `key` in `entries`, matched without case as Go's JSON does.
fn get<'j>(entries: &'j [(String, Json)], key: &str) -> Option<&'j Json> {
    entries
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn number(value: Option<&Json>, key: &str, at: &At) -> Result<Option<usize>, ImportError> {
    match value {
        None => Ok(None),
        Some(Json::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| at.invalid(key, "a whole number", &n.to_string())),
        Some(other) => Err(at.invalid(key, "a whole number", &other.describe())),
    }
}

fn text<'j>(value: Option<&'j Json>, key: &str, at: &At) -> Result<Option<&'j str>, ImportError> {
    match value {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(at.invalid(key, "a string", &other.describe())),
    }
}

fn flag(value: Option<&Json>, key: &str, at: &At) -> Result<bool, ImportError> {
    match value {
        None => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(other) => Err(at.invalid(key, "true or false", &other.describe())),
    }
}

/// Reads a composite field (or subfield) at `at.field` (its dotted path).
/// Every problem goes to `report`; `None` when there was one. `places` gets
/// where each subfield was defined, by its path below the top-level field.
pub(super) fn read_composite(
    value: &Json,
    at: &At,
    places: &mut Vec<(String, Place)>,
    report: &mut Report,
) -> Option<FieldFile> {
    let before = report.problems.len();
    let Json::Object(entries) = value else {
        report.problem(at.invalid("definition", "an object", &value.describe()));
        return None;
    };
    for (key, _) in entries {
        if !COMPOSITE_KEYS
            .split(", ")
            .any(|k| k.eq_ignore_ascii_case(key))
        {
            report.problem(at.invalid(
                "key",
                &format!("one of {COMPOSITE_KEYS} for a Composite"),
                &format!("{key:?}"),
            ));
        }
    }
    let kind = report
        .keep(text(get(entries, "type"), "type", at))
        .flatten();
    if kind != Some("Composite") {
        report.problem(at.invalid(
            "type",
            "Composite for a field with subfields, tag or bitmap",
            &format!("{:?}", kind.unwrap_or("")),
        ));
    }
    let own = report.keep(own_layout(entries, at));
    let bitmap = match get(entries, "bitmap") {
        None => None,
        Some(def) => report.keep(read_bitmap(def, at)),
    };
    let tag = match get(entries, "tag") {
        None => None,
        Some(def) => {
            let tag = read_tag(def, at, report);
            report.keep(tag).flatten()
        }
    };
    let mut subfields = BTreeMap::new();
    match get(entries, "subfields") {
        Some(Json::Object(defs)) => {
            for (key, def) in defs {
                let id = match &tag {
                    Some((_, Some((side, pad)))) => padded(key, side, *pad),
                    _ => key.clone(),
                };
                let path = format!("{}.{id}", at.field);
                let sub_at = At {
                    origin: at.origin,
                    field: &path,
                };
                let file = if is_composite(def) {
                    read_composite(def, &sub_at, places, report)
                } else {
                    let read = MoovField::read(def, &sub_at).and_then(|f| f.data_field(&sub_at));
                    report.keep(read)
                };
                if let Some(file) = file {
                    let below = path.split_once('.').map_or("", |(_, b)| b).to_string();
                    let place = Place {
                        origin: at.origin.to_string(),
                        field: path.clone(),
                    };
                    places.push((below, place));
                    subfields.insert(id, file);
                }
            }
        }
        Some(other) => report.problem(at.invalid(
            "subfields",
            "an object keyed by subfield id",
            &other.describe(),
        )),
        None => report.problem(at.missing("subfields")),
    }
    if report.problems.len() > before {
        return None;
    }
    let (layout, tag, value_length) = match (&bitmap, tag) {
        (Some(_), Some(_)) => {
            report.problem(at.invalid(
                "tag",
                "no tag encoding on a composite with a bitmap",
                "both",
            ));
            return None;
        }
        (Some(_), None) => (CompositeLayout::Bitmap, None, None),
        (None, Some(((tag, value_length), _))) => (CompositeLayout::Tlv, Some(tag), value_length),
        (None, None) => (CompositeLayout::Positional, None, None),
    };
    let mut file = own?;
    file.composite = Some(CompositeFile {
        layout,
        bitmap,
        tag,
        value_length,
        subfields,
    });
    Some(file)
}

/// `key` padded to the tag's width as moov pads a tag before writing it.
fn padded(key: &str, side: &(PadSide, usize), pad: char) -> String {
    let (side, width) = side;
    let missing = width.saturating_sub(key.chars().count());
    let fill: String = std::iter::repeat(pad).take(missing).collect();
    match side {
        PadSide::Left => format!("{fill}{key}"),
        _ => format!("{key}{fill}"),
    }
}

/// The composite's own length and prefix. Its content is the subfields'
/// packed bytes, so it is `b` unless `enc` (which moov ignores on a
/// composite) or `class` say otherwise; its length counts bytes, as moov
/// counts `len(packed)`.
fn own_layout(entries: &[(String, Json)], at: &At) -> Result<FieldFile, ImportError> {
    let encoding = match text(get(entries, "enc"), "enc", at)? {
        None | Some("Binary") => Encoding::Binary,
        Some("ASCII") => Encoding::Ascii,
        Some("EBCDIC") => Encoding::Ebcdic,
        Some(other) => {
            return Err(at.invalid(
                "enc",
                "ASCII, EBCDIC or Binary (or none) for a Composite",
                &format!("{other:?}"),
            ))
        }
    };
    let class = match text(get(entries, "class"), "class", at)? {
        None if encoding == Encoding::Binary => ContentClass::B,
        None => ContentClass::Ans,
        Some(name) => super::class_named(name).ok_or_else(|| {
            at.invalid(
                "class",
                "an isoswitch class (ans, b, ...)",
                &format!("{name:?}"),
            )
        })?,
    };
    let length =
        number(get(entries, "length"), "length", at)?.ok_or_else(|| at.missing("length"))?;
    let prefix_name =
        text(get(entries, "prefix"), "prefix", at)?.ok_or_else(|| at.missing("prefix"))?;
    let (length_kind, prefix) = match parse_prefix(prefix_name, at)? {
        Prefix::Fixed => (LengthKind::Fixed, None),
        Prefix::Variable(kind, encoding) => (kind, Some(encoding)),
        Prefix::TwoBytes(e) if length <= 999 => (LengthKind::LLL, Some(e)),
        Prefix::TwoBytes(e) => (LengthKind::LLLL, Some(e)),
    };
    let description = text(get(entries, "description"), "description", at)?;
    Ok(FieldFile {
        name: description.map_or_else(|| format!("Field {}", at.field), str::to_string),
        length: length_kind,
        max: length,
        class,
        encoding: Some(encoding),
        prefix,
        pad: None,
        pad_char: None,
        bcd_filler: None,
        composite: None,
    })
}

/// moov's subfield bitmap: 8 bytes that grow by 8 while bit 1 of the last is
/// set, unless `disableAutoExpand` (then bit 1 is an ordinary subfield).
fn read_bitmap(def: &Json, at: &At) -> Result<SubBitmapFile, ImportError> {
    let field = MoovField::read(def, at)?;
    let encoding = field.bitmap_encoding(at)?;
    let fixed = match def {
        Json::Object(entries) => flag(
            get(entries, "disableAutoExpand"),
            "bitmap.disableAutoExpand",
            at,
        )?,
        _ => false,
    };
    match (field.length.unwrap_or(8), fixed) {
        (8, true) => Ok(SubBitmapFile { bytes: 8, encoding }),
        (8, false) => Ok(SubBitmapFile {
            bytes: 16,
            encoding,
        }),
        (n, _) => Err(at.invalid(
            "bitmap.length",
            "8 (bytes of one subfield bitmap)",
            &n.to_string(),
        )),
    }
}

/// A tag, its value length (our extension key) and how moov pads tag text.
type Tag = (
    (TlvPartFile, Option<TlvPartFile>),
    Option<((PadSide, usize), char)>,
);

/// `tag`: `None` when it has no `enc` (moov then packs subfields one after
/// another in `sort` order: positional).
fn read_tag(def: &Json, at: &At, report: &mut Report) -> Result<Option<Tag>, ImportError> {
    let Json::Object(entries) = def else {
        return Err(at.invalid("tag", "an object", &def.describe()));
    };
    for (key, _) in entries {
        if !TAG_KEYS.split(", ").any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(at.invalid(
                "tag",
                &format!("only the keys {TAG_KEYS}"),
                &format!("{key:?}"),
            ));
        }
    }
    match text(get(entries, "sort"), "tag.sort", at)? {
        None | Some("StringsByInt" | "StringsByHex") => {}
        Some(other) => {
            return Err(at.invalid(
                "tag.sort",
                "StringsByInt or StringsByHex",
                &format!("{other:?}"),
            ))
        }
    }
    let Some(enc) = text(get(entries, "enc"), "tag.enc", at)? else {
        return Ok(None);
    };
    let length = number(get(entries, "length"), "tag.length", at)?
        .ok_or_else(|| at.missing("tag.length"))?;
    let tag = part(enc, length, "tag", at)?;
    if flag(
        get(entries, "skipUnknownTLVTags"),
        "tag.skipUnknownTLVTags",
        at,
    )? {
        report.warn(
            at.origin,
            format!(
                "field {}: tag.skipUnknownTLVTags: an unknown tag is an error here, \
                 where moov skips it",
                at.field
            ),
        );
    }
    let value_length = match get(entries, "value_length") {
        None => None,
        Some(Json::Object(parts)) => {
            let width = number(get(parts, "length"), "tag.value_length.length", at)?
                .ok_or_else(|| at.missing("tag.value_length.length"))?;
            let enc = text(get(parts, "enc"), "tag.value_length.enc", at)?
                .ok_or_else(|| at.missing("tag.value_length.enc"))?;
            Some(part(enc, width, "tag.value_length", at)?)
        }
        Some(other) => return Err(at.invalid("tag.value_length", "an object", &other.describe())),
    };
    let padding = match get(entries, "padding") {
        None => None,
        Some(p) => match super::read_padding(p, at)? {
            (PadSide::None, _) | (_, None) => None,
            (side, Some(c)) => Some(((side, tag.text_len()), c)),
        },
    };
    Ok(Some(((tag, value_length), padding)))
}

/// A tag (or value length) `length` characters long in moov encoding `enc`.
fn part(enc: &str, length: usize, key: &str, at: &At) -> Result<TlvPartFile, ImportError> {
    let (width, encoding) = match enc {
        // moov writes the tag text's bytes as they are: ASCII on the wire.
        "ASCII" | "Binary" => (length, Encoding::Ascii),
        "EBCDIC" => (length, Encoding::Ebcdic),
        "BCD" if length % 2 == 0 => (length / 2, Encoding::Bcd),
        "BCD" => {
            return Err(at.invalid(
                &format!("{key}.length"),
                "an even number of digits for a BCD tag",
                &length.to_string(),
            ))
        }
        // Hex text in, its bytes on the wire: `length` bytes.
        "ASCIIToHex" => (length, Encoding::Binary),
        other => {
            return Err(at.unsupported(
                format!("moov {key} encoding {other}"),
                "ASCII, EBCDIC, BCD, Binary or ASCIIToHex tags (BerTLVTag tags vary in \
                 length; a composite's tags here all have one width)",
            ))
        }
    };
    Ok(TlvPartFile { width, encoding })
}

/// A composite's moov JSON: its length and prefix as a field's, then its
/// subfields; a value length (no moov equivalent) rides in `tag.value_length`,
/// which moov ignores.
/// moov ignores `enc` on a composite; it is kept so the import gives the
/// field back its own encoding.
pub(super) fn composite_entry(composite: &CompositeSpec, mut entry: Map<String, Value>) -> Value {
    for key in ["padding", "bcd_filler"] {
        entry.remove(key);
    }
    entry.insert("type".into(), "Composite".into());
    let mut subfields = Map::new();
    for sub in &composite.subfields {
        subfields.insert(sub.id.clone(), field_entry(&sub.field));
    }
    entry.insert("subfields".into(), Value::Object(subfields));
    match composite.layout {
        CompositeLayout::Positional => {
            entry.insert("tag".into(), json!({ "sort": "StringsByInt" }));
        }
        CompositeLayout::Bitmap => {
            if let Some(bitmap) = composite.bitmap {
                let (enc, prefix) = match bitmap.encoding {
                    Encoding::Hex => ("HexToASCII", "ASCII.Fixed"),
                    _ => ("Binary", "Binary.Fixed"),
                };
                entry.insert(
                    "bitmap".into(),
                    json!({
                        "type": "Bitmap",
                        "length": 8,
                        "description": "Bitmap",
                        "enc": enc,
                        "prefix": prefix,
                        "disableAutoExpand": bitmap.bytes == 8,
                    }),
                );
            }
        }
        CompositeLayout::Tlv => {
            if let Some(tag) = composite.tag {
                let mut object = tag_part(&tag);
                object.insert("sort".into(), "StringsByHex".into());
                if let Some(v) = composite.value_length {
                    object.insert("value_length".into(), Value::Object(tag_part(&v)));
                }
                entry.insert("tag".into(), Value::Object(object));
            }
        }
    }
    Value::Object(entry)
}

/// `{length, enc}` as moov names a tag of this shape.
fn tag_part(part: &TlvPartFile) -> Map<String, Value> {
    let (length, enc) = match part.encoding {
        // EBCDIC hex is refused by `unexportable` before any entry is written.
        Encoding::Ebcdic | Encoding::EbcdicHex => (part.width, "EBCDIC"),
        Encoding::Bcd => (part.width * 2, "BCD"),
        Encoding::Binary => (part.width, "ASCIIToHex"),
        // Hex text is ASCII characters on the wire.
        Encoding::Ascii | Encoding::Hex => (part.width, "ASCII"),
    };
    let mut object = Map::new();
    object.insert("length".into(), length.into());
    object.insert("enc".into(), enc.into());
    object
}
