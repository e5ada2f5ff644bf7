//! jPOS `<isofieldpackager>` import: a field made of subfields, mapped onto a
//! composite by the rules of its subfield packager class — `GenericSubFieldPackager`
//! (positional, or behind a subfield bitmap) and `Base1SubFieldPackager` (BASE I
//! field 126: `Base1_BITMAP126`, an 8-byte binary bitmap, then the subfields).

use std::collections::BTreeMap;

use roxmltree::Node;

use super::{is_validator, IsoField, FIELD_ATTRIBUTES, PACKAGE};
use crate::iso8583::import::{ImportError, Place, Report};
use crate::iso8583::spec::{
    CompositeFile, CompositeLayout, Encoding, FieldFile, SubBitmapFile, MAX_FIELD,
};

/// The attributes GenericPackager's DTD allows on `<isofieldpackager>`; those
/// that change nothing on the wire are read and ignored.
const PACKAGER_ATTRIBUTES: &str = "id, length, name, class, pad, token, packager, emitBitmap, \
     bitmapField, firstField, maxValidField, headerLength, validator";

/// How a subfield packager lays out its subfields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubPackager {
    /// `GenericSubFieldPackager` (and `GenericPackager` used as one): a bitmap
    /// at `bitmapField` when `emitBitmap`, then subfields from `firstField`.
    Generic,
    /// `Base1SubFieldPackager`: subfield 0 is the bitmap when it is a bitmap
    /// class, else subfields from 0 one after another.
    Base1,
}

/// Why jPOS's other subfield packagers are not imported.
fn refused_packager(short: &str) -> Option<&'static str> {
    Some(match short {
        "EuroSubFieldPackager" => {
            "it reads each subfield's LL length before its 2-digit tag (IFEP_LLCHAR); \
             a tlv composite has the tag first"
        }
        "CTCSubElementPackager" => {
            "it writes a 2-digit subelement number before each subelement but does not \
             read it back, so its packed bytes do not unpack"
        }
        "CTCSubFieldPackager" => {
            "it is only used inside CTCSubElementPackager, which is not imported"
        }
        "DatasetPackager" | "ICCDataPackager" | "GenericTaggedFieldsPackager" => {
            "its datasets or BER-TLV entries have no composite layout yet; \
             import the field as b and read its value with `isoswitch explain`"
        }
        _ => return None,
    })
}

/// A subfield bitmap class and the bitmap it reads, or the attribute that
/// does not fit and what was expected.
fn bitmap_of(field: &IsoField) -> Option<Result<SubBitmapFile, (&'static str, &'static str)>> {
    let short = field.class.strip_prefix(PACKAGE)?;
    let bytes = field.length;
    Some(match short {
        // byte2BitSet without an extended bitmap: always 8 bytes, bit 1 ordinary.
        "packager.Base1_BITMAP126" => Ok(SubBitmapFile {
            bytes: 8,
            encoding: Encoding::Binary,
        }),
        // IFE_BITMAP packs 4 bytes or fewer at its full length, bit 1 ordinary.
        "IFE_BITMAP" if !matches!(bytes, 2 | 4 | 8 | 16) => {
            Err(("length", "2, 4, 8 or 16 (bytes of subfield bitmap)"))
        }
        "IFB_BITMAP" | "IFA_BITMAP" if bytes != 8 && bytes != 16 => {
            Err(("length", "8 or 16 (bytes of subfield bitmap)"))
        }
        "IFB_BITMAP" => Ok(SubBitmapFile {
            bytes,
            encoding: Encoding::Binary,
        }),
        "IFA_BITMAP" => Ok(SubBitmapFile {
            bytes,
            encoding: Encoding::Hex,
        }),
        "IFE_BITMAP" => Ok(SubBitmapFile {
            bytes,
            encoding: Encoding::EbcdicHex,
        }),
        _ => return None,
    })
}

/// One child of an `<isofieldpackager>`, as read.
struct Child<'a> {
    field: IsoField<'a>,
    origin: String,
    /// Set for a nested `<isofieldpackager>`: its layout, subfields included,
    /// and where its own subfields were defined.
    nested: Option<(FieldFile, Places)>,
}

/// Where each subfield was defined, by its path below the field as the
/// codec numbers it (`2`, `3.1`), for the spec check's errors.
pub(super) type Places = Vec<(String, Place)>;

/// An imported `<isofieldpackager>`: the field, its layout and its subfields' places.
pub(super) struct Packager<'a> {
    pub(super) field: IsoField<'a>,
    pub(super) file: FieldFile,
    pub(super) places: Places,
}

/// Reads an `<isofieldpackager>` (a subfield of `parent`, its jPOS path, when
/// given): the field's own layout from its class, its subfields as a composite.
/// Every problem goes to `report`; `None` when there was one.
pub(super) fn read_packager<'a>(
    node: Node<'a, '_>,
    parent: Option<&str>,
    at: &dyn Fn(Node) -> String,
    report: &mut Report,
) -> Option<Packager<'a>> {
    let here = at(node);
    let field = report.keep(IsoField::read(node, &here, parent, PACKAGER_ATTRIBUTES))?;
    let packager = report.keep(sub_packager(node, &field, &here));
    let before = report.problems.len();
    let mut children: BTreeMap<u8, Child> = BTreeMap::new();
    for child in node.children().filter(|c| c.is_element()) {
        let origin = at(child);
        let name = child.tag_name().name();
        let read = match name {
            "isofield" => report
                .keep(IsoField::read(
                    child,
                    &origin,
                    Some(&field.path),
                    FIELD_ATTRIBUTES,
                ))
                .map(|f| (f, None)),
            "isofieldpackager" => read_packager(child, Some(&field.path), at, report)
                .map(|p| (p.field, Some((p.file, p.places)))),
            _ if is_validator(name) => {
                report.warn(
                    &origin,
                    format!(
                        "field {}: <{name}> ignored: isoswitch does not run jPOS validators",
                        field.path
                    ),
                );
                continue;
            }
            other => {
                report.problem(ImportError::Document {
                    origin,
                    message: format!(
                        "field {}: unexpected <{other}> inside <isofieldpackager>; \
                         expected <isofield> or <isofieldpackager>",
                        field.path
                    ),
                });
                continue;
            }
        };
        let Some((sub, nested)) = read else { continue };
        if name == "isofield" {
            warn_validators(child, &sub, at, report);
        }
        children.insert(
            sub.id,
            Child {
                field: sub,
                origin,
                nested,
            },
        );
    }
    let own = field.data_field(&here, report);
    let own = report.keep(own);
    if let Some(None) = own {
        report.problem(field.invalid(
            &here,
            "class",
            "a class with bytes on the wire to hold the subfields",
            field.class.to_string(),
        ));
    }
    let (composite, places) = composite(packager?, node, &field, &here, children, report)?;
    if report.problems.len() > before {
        return None;
    }
    let mut file = own.flatten()?;
    file.composite = Some(composite);
    Some(Packager {
        field,
        file,
        places,
    })
}

/// Validators inside a subfield's `<isofield>` are ignored with a warning.
fn warn_validators(node: Node, sub: &IsoField, at: &dyn Fn(Node) -> String, report: &mut Report) {
    for inner in node.children().filter(|c| c.is_element()) {
        let name = inner.tag_name().name();
        if is_validator(name) {
            report.warn(
                &at(inner),
                format!(
                    "field {}: <{name}> ignored: isoswitch does not run jPOS validators",
                    sub.path
                ),
            );
        } else {
            report.problem(ImportError::Document {
                origin: at(inner),
                message: format!(
                    "field {}: unexpected <{name}> inside <isofield>; expected nothing or a validator",
                    sub.path
                ),
            });
        }
    }
}

fn sub_packager(node: Node, field: &IsoField, origin: &str) -> Result<SubPackager, ImportError> {
    let class = node
        .attribute("packager")
        .ok_or_else(|| ImportError::Missing {
            origin: origin.to_string(),
            field: field.path.clone(),
            place: "attribute",
            attribute: "packager".into(),
        })?
        .trim();
    let short = class
        .strip_prefix("org.jpos.iso.packager.")
        .unwrap_or(class);
    match short {
        "GenericSubFieldPackager" | "GenericPackager" => Ok(SubPackager::Generic),
        "Base1SubFieldPackager" => Ok(SubPackager::Base1),
        _ => Err(ImportError::Unsupported {
            origin: origin.to_string(),
            field: field.label(),
            what: format!("subfield packager {class:?}"),
            why: refused_packager(short)
                .unwrap_or(
                    "GenericSubFieldPackager and Base1SubFieldPackager are imported; \
                     a custom packager's wire format is unknown",
                )
                .to_string(),
        }),
    }
}

/// A whole-number attribute of the packager element, or `default`.
fn number_attribute(
    node: Node,
    name: &str,
    default: u8,
    field: &IsoField,
    origin: &str,
) -> Result<u8, ImportError> {
    match node.attribute(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= MAX_FIELD)
            .ok_or_else(|| field.invalid(origin, name, "a subfield number", format!("{raw:?}"))),
    }
}

/// The composite the packager's rules give, subfields renumbered where our
/// layouts number them differently (positional ids start at 1).
fn composite(
    packager: SubPackager,
    node: Node,
    field: &IsoField,
    origin: &str,
    mut children: BTreeMap<u8, Child>,
    report: &mut Report,
) -> Option<(CompositeFile, Places)> {
    let before = report.problems.len();
    let is_bitmap = |c: Option<&Child>| c.is_some_and(|c| bitmap_of(&c.field).is_some());
    // Where the bitmap is, the first subfield read, and whether a bitmap is read.
    let (bitmap_field, first, with_bitmap) = match packager {
        SubPackager::Base1 => {
            let with_bitmap = is_bitmap(children.get(&0));
            (0, u8::from(with_bitmap), with_bitmap)
        }
        SubPackager::Generic => {
            let emit = match node.attribute("emitBitmap").map(str::trim) {
                None => None,
                Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
                Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
                Some(v) => {
                    report.problem(field.invalid(
                        origin,
                        "emitBitmap",
                        "true or false",
                        format!("{v:?}"),
                    ));
                    return None;
                }
            };
            let bitmap_field =
                report.keep(number_attribute(node, "bitmapField", 1, field, origin))?;
            // ISOBasePackager.getFirstField: 0 when subfield 0 is itself a
            // packager, else 2 after a bitmap at 1, else 1.
            let nested_zero = children.get(&0).is_some_and(|c| c.nested.is_some());
            let default_first = match nested_zero {
                true => 0,
                false if is_bitmap(children.get(&1)) => 2,
                false => 1,
            };
            let first = report.keep(number_attribute(
                node,
                "firstField",
                default_first,
                field,
                origin,
            ))?;
            let has_bitmap = is_bitmap(children.get(&bitmap_field));
            match emit {
                Some(true) if !has_bitmap => {
                    report.problem(field.invalid(
                        origin,
                        "emitBitmap",
                        &format!("false, or a bitmap class (IFB_BITMAP, IFA_BITMAP) at subfield {bitmap_field}"),
                        "\"true\"".into(),
                    ));
                    return None;
                }
                None if !has_bitmap => report.warn(
                    origin,
                    format!(
                        "field {}: read as positional subfields: jPOS's emitBitmap defaults to true, \
                         but subfield {bitmap_field} is no bitmap class",
                        field.label()
                    ),
                ),
                _ => {}
            }
            (bitmap_field, first, emit != Some(false) && has_bitmap)
        }
    };
    let bitmap = match with_bitmap {
        true => {
            let child = children.remove(&bitmap_field)?;
            match bitmap_of(&child.field)? {
                Ok(b) => Some(b),
                Err((attribute, expected)) => {
                    let found = match attribute {
                        "length" => child.field.length.to_string(),
                        _ => child.field.class.to_string(),
                    };
                    report.problem(
                        child
                            .field
                            .invalid(&child.origin, attribute, expected, found),
                    );
                    return None;
                }
            }
        }
        false => None,
    };
    let mut subfields = BTreeMap::new();
    let mut places = Places::new();
    let mut next = 1usize;
    for (id, child) in children {
        if id < first {
            report.warn(
                &child.origin,
                format!(
                    "field {}: not imported: jPOS reads this packager's subfields from {first}",
                    child.field.label()
                ),
            );
            continue;
        }
        let ours = match bitmap {
            Some(_) => usize::from(id),
            None => {
                let expected = usize::from(first) + next - 1;
                if usize::from(id) != expected {
                    report.problem(child.field.invalid(
                        &child.origin,
                        "id",
                        &format!(
                            "{expected} (positional subfields follow one another without gaps)"
                        ),
                        format!("\"{id}\""),
                    ));
                    return None;
                }
                next += 1;
                next - 1
            }
        };
        let file = match child.nested {
            Some((file, inner)) => {
                let below = inner
                    .into_iter()
                    .map(|(p, place)| (format!("{ours}.{p}"), place));
                places.extend(below);
                Some(file)
            }
            None => match child.field.data_field(&child.origin, report) {
                Ok(file) => file,
                Err(problem) => {
                    report.problem(problem);
                    continue;
                }
            },
        };
        let Some(file) = file else {
            report.problem(child.field.invalid(
                &child.origin,
                "class",
                "a class with bytes on the wire (an IF_NOP subfield has no place among positional subfields)",
                child.field.class.to_string(),
            ));
            continue;
        };
        places.push((
            ours.to_string(),
            Place {
                origin: child.origin.clone(),
                field: child.field.label(),
            },
        ));
        subfields.insert(ours.to_string(), file);
    }
    let clean = report.problems.len() == before;
    if clean && bitmap.is_none() && first != 1 && !subfields.is_empty() {
        report.warn(
            origin,
            format!(
                "field {}: positional subfields {first}..={} imported as 1..={}",
                field.label(),
                usize::from(first) + subfields.len() - 1,
                subfields.len()
            ),
        );
    }
    let file = CompositeFile {
        layout: match bitmap {
            Some(_) => CompositeLayout::Bitmap,
            None => CompositeLayout::Positional,
        },
        bitmap,
        tag: None,
        value_length: None,
        subfields,
    };
    Some((file, places))
}
