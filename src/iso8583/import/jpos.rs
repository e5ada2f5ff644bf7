//! jPOS GenericPackager XML import: each `<isofield>`'s `org.jpos.iso.IF*` class is
//! mapped onto a length kind, content class and encodings (or the layout that
//! reads the same bytes, with a warning); subfield packagers, custom classes and
//! layouts the codec cannot read are reported by name, every one in one run.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use roxmltree::{Document, Node, NodeType, ParsingOptions};

mod subfields;

use super::{compile, ImportError, ImportProblems, Imported, Place, Report};
use crate::iso8583::spec::{BcdFiller, ContentClass, Encoding, FieldFile, LengthKind, MAX_FIELD};

// Short names for the class table; `Raw` is `Encoding::Binary`, `Binary` the kind.
use Encoding::{Ascii, Bcd, Binary as Raw, Ebcdic, EbcdicHex, Hex};
use Kind::{Amount, BcdBytes, Binary, Bitmap, Char, FieldNumbered, Filled, Nothing, Numeric};
use LengthKind::{Fixed, LL, LLL, LLLL, LLLLL, LLLLLL};

const PACKAGE: &str = "org.jpos.iso.";

/// Far more nodes than any real packager has; bounds memory on hostile input.
const NODES_LIMIT: u32 = 100_000;

/// What a jPOS field packager carries, which decides the content class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `*NUM*`: digits; `n` (or `z` on the track fields 35 and 36).
    Numeric,
    /// `*CHAR`: any characters; `ans`.
    Char,
    /// `*BINARY`: bytes; `b`, length in bytes.
    Binary,
    /// `*AMOUNT`: a C/D sign then digits; `x+n`, the jPOS length includes the sign.
    Amount,
    /// `*BITMAP`: field 1 only.
    Bitmap,
    /// `IF_NOP`: nothing on the wire; not imported.
    Nothing,
    /// `IFEP_LLCHAR`: an LL prefix counting a 2-digit field number and the text.
    FieldNumbered,
    /// `IFEB_LLNUM`: an EBCDIC LL prefix counting BCD bytes, `F` after odd digits.
    BcdBytes,
    /// `IFA_FLL*`: an LL prefix, then the value space-filled to its full length.
    Filled,
}

/// One supported jPOS class and the layout it implies.
#[derive(Debug, Clone, Copy)]
struct Class {
    name: &'static str,
    kind: Kind,
    length: LengthKind,
    encoding: Encoding,
    /// Length prefix encoding; ignored for fixed classes.
    prefix: Encoding,
}

const fn class(
    name: &'static str,
    kind: Kind,
    length: LengthKind,
    encoding: Encoding,
    prefix: Encoding,
) -> Class {
    Class {
        name,
        kind,
        length,
        encoding,
        prefix,
    }
}

/// The classes we map, checked against jPOS's sources: `IFA_*` write ASCII (binary
/// data as hex text for `IFA_BINARY`/`IFA_LLABINARY`, raw for `IFA_LL*BINARY`),
/// `IFB_*` pack numbers and length prefixes as BCD (the `H` variants use a binary
/// length byte or two), `IFE_*` write EBCDIC (`IFE_BINARY`/`IFE_BITMAP` as EBCDIC
/// hex digits, `IFE_LL*BINARY` raw bytes behind EBCDIC length digits).
/// The jPOS field classes the importer reads, for `spec import --help`.
pub fn class_names() -> String {
    let names: Vec<&str> = CLASSES.iter().map(|c| c.name).collect();
    format!("{PACKAGE}{{{}}}", names.join(", "))
}

const CLASSES: &[Class] = &[
    class("IFA_NUMERIC", Numeric, Fixed, Ascii, Ascii),
    class("IFA_LLNUM", Numeric, LL, Ascii, Ascii),
    class("IFA_LLLNUM", Numeric, LLL, Ascii, Ascii),
    class("IFA_AMOUNT", Amount, Fixed, Ascii, Ascii),
    class("IF_CHAR", Char, Fixed, Ascii, Ascii),
    class("IFA_LLCHAR", Char, LL, Ascii, Ascii),
    class("IFA_LLLCHAR", Char, LLL, Ascii, Ascii),
    class("IFA_LLLLCHAR", Char, LLLL, Ascii, Ascii),
    class("IFA_BINARY", Binary, Fixed, Hex, Ascii),
    class("IFA_LLABINARY", Binary, LL, Hex, Ascii),
    class("IFA_LLBINARY", Binary, LL, Raw, Ascii),
    class("IFA_LLLBINARY", Binary, LLL, Raw, Ascii),
    class("IFA_LLLLBINARY", Binary, LLLL, Raw, Ascii),
    class("IFA_BITMAP", Bitmap, Fixed, Hex, Hex),
    class("IFB_NUMERIC", Numeric, Fixed, Bcd, Bcd),
    class("IFB_LLNUM", Numeric, LL, Bcd, Bcd),
    class("IFB_LLLNUM", Numeric, LLL, Bcd, Bcd),
    class("IFB_LLHNUM", Numeric, LL, Bcd, Raw),
    class("IFB_LLLHNUM", Numeric, LLL, Bcd, Raw),
    class("IFB_AMOUNT", Amount, Fixed, Bcd, Bcd),
    class("IFB_LLCHAR", Char, LL, Ascii, Bcd),
    class("IFB_LLLCHAR", Char, LLL, Ascii, Bcd),
    class("IFB_LLLLCHAR", Char, LLLL, Ascii, Bcd),
    class("IFB_LLHCHAR", Char, LL, Ascii, Raw),
    class("IFB_LLLHCHAR", Char, LLL, Ascii, Raw),
    class("IFB_BINARY", Binary, Fixed, Raw, Raw),
    class("IFB_LLBINARY", Binary, LL, Raw, Bcd),
    class("IFB_LLLBINARY", Binary, LLL, Raw, Bcd),
    class("IFB_LLLLBINARY", Binary, LLLL, Raw, Bcd),
    class("IFB_LLHBINARY", Binary, LL, Raw, Raw),
    class("IFB_LLLHBINARY", Binary, LLL, Raw, Raw),
    class("IFB_BITMAP", Bitmap, Fixed, Raw, Raw),
    class("IFE_NUMERIC", Numeric, Fixed, Ebcdic, Ebcdic),
    class("IFE_LLNUM", Numeric, LL, Ebcdic, Ebcdic),
    class("IFE_LLLNUM", Numeric, LLL, Ebcdic, Ebcdic),
    class("IFE_AMOUNT", Amount, Fixed, Ebcdic, Ebcdic),
    class("IFE_CHAR", Char, Fixed, Ebcdic, Ebcdic),
    class("IFE_LLCHAR", Char, LL, Ebcdic, Ebcdic),
    class("IFE_LLLCHAR", Char, LLL, Ebcdic, Ebcdic),
    class("IFE_LLLBINARY", Binary, LLL, Raw, Ebcdic),
    class("IFB_LLHECHAR", Char, LL, Ebcdic, Raw),
    // jPOS makes an ISOAmount of it (currency, exponent, amount); the wire is
    // IFB_NUMERIC's.
    class("IFB_AMOUNT2003", Numeric, Fixed, Bcd, Bcd),
    class("IF_ECHAR", Char, Fixed, Ebcdic, Ebcdic),
    class("IFE_LLBINARY", Binary, LL, Raw, Ebcdic),
    class("IFA_LLLLLCHAR", Char, LLLLL, Ascii, Ascii),
    class("IFA_LLLLLLBINARY", Binary, LLLLLL, Raw, Ascii),
    class("IF_NOP", Nothing, Fixed, Ascii, Ascii),
    class("IFEP_LLCHAR", FieldNumbered, LL, Ascii, Ascii),
    class("IFEB_LLNUM", BcdBytes, LL, Raw, Ebcdic),
    class("IFA_FLLNUM", Filled, Fixed, Ascii, Ascii),
    class("IFA_FLLCHAR", Filled, Fixed, Ascii, Ascii),
    class("IFE_BINARY", Binary, Fixed, EbcdicHex, Ebcdic),
    class("IFE_BITMAP", Bitmap, Fixed, EbcdicHex, EbcdicHex),
];

/// The attributes GenericPackager's DTD allows on `<isofield>`.
const FIELD_ATTRIBUTES: &str = "id, length, name, class, pad, token";

/// Imports a jPOS GenericPackager XML file; `origin` names it in errors. Every
/// problem in the file is reported, one per field or element.
///
/// - `length` counts digits for `*NUM*` classes, characters for `*CHAR` and bytes
///   for `*BINARY`; for `*AMOUNT` it includes the C/D sign, so `IFA_AMOUNT`
///   length 9 is `x+n` max 8.
/// - `*NUM*` imports as `n`, except on fields 35 and 36 where it is `z`: jPOS packs
///   the track separator through its numeric packagers. `*CHAR` imports as `ans`.
/// - `pad` only matters for BCD numbers and amounts. jPOS maps `pad="true"` to its
///   LEFT_PADDED interpreter (a `0` nibble before an odd number of digits, so the
///   value is right-justified: `bcd_filler = "left"`), and `pad="false"` or no `pad`
///   to RIGHT_PADDED (the `0` nibble after the digits: `bcd_filler = "right"`).
/// - Field 0's class sets `mti_encoding` and field 1's sets `bitmap_encoding`
///   (`IFB_BITMAP` binary, `IFA_BITMAP` hex). Field 65, usually a `b 1`
///   placeholder in jPOS 87 packagers, is not imported: here bit 65 always marks
///   the tertiary bitmap.
/// - Classes our codec has no exact layout for are imported as the layout that
///   reads the same bytes, with a warning saying how the value differs
///   (`IFEP_LLCHAR`, `IFEB_LLNUM`, `IFA_FLLNUM`, `IFA_FLLCHAR`); `IF_NOP` fields
///   are left out. Validators are ignored with a warning.
/// - `[defaults]` take the most common encodings among the imported fields.
pub fn from_jpos_xml(text: &str, origin: &str) -> Result<Imported, ImportProblems> {
    let options = ParsingOptions {
        allow_dtd: true,
        nodes_limit: NODES_LIMIT,
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| ImportError::Syntax {
        origin: format!("{origin}:{}:{}", e.pos().row, e.pos().col),
        format: "XML",
        message: e.to_string(),
    })?;
    let at = |node: Node| format!("{origin}:{}", doc.text_pos_at(node.range().start).row);
    let root = doc.root_element();
    if root.tag_name().name() != "isopackager" {
        return Err(ImportError::Document {
            origin: at(root),
            message: format!(
                "root element: expected <isopackager>, found <{}>",
                root.tag_name().name()
            ),
        }
        .into());
    }
    let mut report = Report::default();
    check_packager_attributes(root, &at(root), &mut report);

    let mut seen = HashMap::new();
    let mut mti_encoding = None;
    let mut bitmap_encoding = None;
    let mut fields = BTreeMap::new();
    for node in root.children() {
        let here = at(node);
        match node.node_type() {
            NodeType::Element => {}
            NodeType::Text if node.text().is_some_and(|t| !t.trim().is_empty()) => {
                report.problem(ImportError::Document {
                    origin: here,
                    message:
                        "unexpected text inside <isopackager>; expected only <isofield> elements"
                            .into(),
                });
                continue;
            }
            _ => continue,
        }
        match node.tag_name().name() {
            "isofield" => {}
            "isofieldpackager" => {
                let Some(subfields::Packager {
                    field,
                    file,
                    places,
                }) = subfields::read_packager(node, None, &at, &mut report)
                else {
                    continue;
                };
                for (below, place) in places {
                    let key = format!("{} subfield {below}", field.path);
                    report.places.insert(key, place);
                }
                if let Some(first) = seen.insert(field.id, here.clone()) {
                    report.warn(
                        &here,
                        format!(
                            "field {} is defined twice (first at {first}); jPOS uses this one, so does the import",
                            field.id
                        ),
                    );
                }
                let place = Place {
                    origin: here,
                    field: field.label(),
                };
                report.places.insert(field.path.clone(), place);
                fields.insert(field.path.clone(), file);
                continue;
            }
            name if is_validator(name) => {
                report.warn(
                    &here,
                    format!("<{name}> ignored: isoswitch does not run jPOS validators"),
                );
                continue;
            }
            other => {
                report.problem(ImportError::Document {
                    origin: here,
                    message: format!("unexpected element <{other}>; expected <isofield>"),
                });
                continue;
            }
        }
        let Some(field) = report.keep(IsoField::read(node, &here, None, FIELD_ATTRIBUTES)) else {
            continue;
        };
        // jPOS keeps the last definition of a field number; so does the import.
        if let Some(first) = seen.insert(field.id, here.clone()) {
            report.warn(
                &here,
                format!(
                    "field {} is defined twice (first at {first}); jPOS uses this one, so does the import",
                    field.id
                ),
            );
        }
        let mut clean = true;
        for child in node.children().filter(|c| c.is_element()) {
            let name = child.tag_name().name();
            if is_validator(name) {
                report.warn(
                    &at(child),
                    format!(
                        "field {}: <{name}> ignored: isoswitch does not run jPOS validators",
                        field.id
                    ),
                );
            } else {
                clean = false;
                report.problem(ImportError::Document {
                    origin: at(child),
                    message: format!(
                        "field {}: unexpected <{name}> inside <isofield>; expected nothing or a validator",
                        field.id
                    ),
                });
            }
        }
        if !clean {
            continue;
        }
        match field.id {
            65 => continue,
            0 => mti_encoding = report.keep(field.mti_encoding(&here)),
            1 => bitmap_encoding = report.keep(field.bitmap_encoding(&here)),
            id => {
                let result = field.data_field(&here, &mut report);
                if let Some(Some(f)) = report.keep(result) {
                    fields.insert(id.to_string(), f);
                    let place = Place {
                        origin: here,
                        field: field.label(),
                    };
                    report.places.insert(id.to_string(), place);
                }
            }
        }
    }
    let missing = |id: u8, role: &str| ImportError::Document {
        origin: origin.to_string(),
        message: format!("no <isofield id=\"{id}\"> ({role})"),
    };
    if !seen.contains_key(&0) {
        report.problem(missing(0, "the MTI"));
    }
    if !seen.contains_key(&1) {
        report.problem(missing(1, "the bitmap"));
    }
    let (Some(mti_encoding), Some(bitmap_encoding)) = (mti_encoding, bitmap_encoding) else {
        return Err(report.fail());
    };
    let name = Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "jpos".into());
    let description = format!("Imported from jPOS GenericPackager XML {origin}");
    compile(
        name,
        description,
        mti_encoding,
        bitmap_encoding,
        fields,
        origin,
        report,
    )
}

/// `<isovalidator>`, `<isofieldvalidator>` and whatever else names itself a
/// validator: checks jPOS runs after unpacking, not part of the layout.
fn is_validator(element: &str) -> bool {
    element.to_ascii_lowercase().contains("validator")
}

/// Packager-level settings: each one we cannot honour is a problem; a message
/// header is a warning, as it belongs to the link.
fn check_packager_attributes(root: Node, origin: &str, report: &mut Report) {
    for attr in root.attributes() {
        let value = attr.value();
        let expected = match attr.name() {
            // Only a validation limit in jPOS; the fields listed are what count.
            "maxValidField" => continue,
            "emitBitmap" if value.eq_ignore_ascii_case("true") => continue,
            "emitBitmap" => "true (isoswitch always writes the bitmap)",
            "bitmapField" if value == "1" => continue,
            "bitmapField" => "1",
            "firstField" if value == "2" => continue,
            "firstField" => "2 (the first field after the bitmap)",
            "headerLength" if value == "0" => continue,
            "headerLength" => {
                report.warn(
                    origin,
                    format!(
                        "headerLength={value:?}: jPOS reads a message header before the MTI; \
                         a header belongs to the link config ([[listener]]/[[issuer]] header \
                         settings), so the imported spec starts at the MTI"
                    ),
                );
                continue;
            }
            other => {
                report.problem(ImportError::Document {
                    origin: origin.to_string(),
                    message: format!(
                        "<isopackager> attribute `{other}` is not supported \
                         (known: maxValidField, emitBitmap, bitmapField, firstField, headerLength)"
                    ),
                });
                continue;
            }
        };
        report.problem(ImportError::Document {
            origin: origin.to_string(),
            message: format!(
                "<isopackager> {}: expected {expected}, found {value:?}",
                attr.name()
            ),
        });
    }
}

/// One `<isofield>`'s (or `<isofieldpackager>`'s) attributes, checked for
/// presence and syntax.
struct IsoField<'a> {
    id: u8,
    /// How jPOS numbers it: `48`, or `127.25` for a subfield.
    path: String,
    length: usize,
    name: &'a str,
    class: &'a str,
    pad: bool,
}

impl<'a> IsoField<'a> {
    /// Reads `node`, a subfield of `parent` (its jPOS path) when given;
    /// `allowed` lists the attributes it may carry.
    fn read(
        node: Node<'a, '_>,
        origin: &str,
        parent: Option<&str>,
        allowed: &str,
    ) -> Result<IsoField<'a>, ImportError> {
        let raw_id = node.attribute("id");
        let label = match parent {
            Some(p) => format!("{p}.{}", raw_id.unwrap_or("?")),
            None => raw_id.unwrap_or("?").to_string(),
        };
        let missing = |attribute: &str| ImportError::Missing {
            origin: origin.to_string(),
            field: label.clone(),
            place: "attribute",
            attribute: attribute.to_string(),
        };
        let invalid = |attribute: &str, expected: &str, found: &str| ImportError::Invalid {
            origin: origin.to_string(),
            field: label.clone(),
            attribute: attribute.to_string(),
            expected: expected.to_string(),
            found: format!("{found:?}"),
        };
        for attr in node.attributes() {
            if !allowed.split(", ").any(|known| known == attr.name()) {
                return Err(ImportError::Unsupported {
                    origin: origin.to_string(),
                    field: label.clone(),
                    what: format!("attribute `{}`", attr.name()),
                    why: format!("an <{}> takes {allowed}", node.tag_name().name()),
                });
            }
        }
        let raw_id = raw_id.ok_or_else(|| missing("id"))?;
        let id = raw_id
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= MAX_FIELD)
            .ok_or_else(|| invalid("id", &format!("a field number 0-{MAX_FIELD}"), raw_id))?;
        let raw_length = node.attribute("length").ok_or_else(|| missing("length"))?;
        let length = raw_length
            .parse::<usize>()
            .map_err(|_| invalid("length", "a whole number", raw_length))?;
        let name = node.attribute("name").ok_or_else(|| missing("name"))?;
        // jPOS reads the class name trimmed; packagers wrap it across lines.
        let class = node
            .attribute("class")
            .ok_or_else(|| missing("class"))?
            .trim();
        let pad = match node.attribute("pad") {
            None => false,
            Some(p) if p.eq_ignore_ascii_case("true") => true,
            Some(p) if p.eq_ignore_ascii_case("false") => false,
            Some(p) => return Err(invalid("pad", "true or false", p)),
        };
        Ok(IsoField {
            id,
            path: label,
            length,
            name,
            class,
            pad,
        })
    }

    /// How problem lines name the field: `35 (class org.jpos.iso.IFB_LLHNUM)`.
    fn label(&self) -> String {
        format!("{} (class {})", self.path, self.class)
    }

    fn invalid(&self, origin: &str, attribute: &str, expected: &str, found: String) -> ImportError {
        ImportError::Invalid {
            origin: origin.to_string(),
            field: self.label(),
            attribute: attribute.to_string(),
            expected: expected.to_string(),
            found,
        }
    }

    /// The supported class this field names, or a refusal naming it (quoted,
    /// so stray spaces show) and pointing to the list in `spec import --help`.
    fn class(&self, origin: &str) -> Result<&'static Class, ImportError> {
        let short = self.class.strip_prefix(PACKAGE);
        let found = short.and_then(|s| CLASSES.iter().find(|c| c.name == s));
        let why = match found {
            Some(class) => return Ok(class),
            None if self.class.ends_with(".Base1_BITMAP126") => {
                "it is the subfield bitmap of BASE I field 126; it belongs first inside an \
                 <isofieldpackager> with packager Base1SubFieldPackager"
                    .to_string()
            }
            None if short == Some("IFA_LLHBINARY") => {
                "jPOS has no such class (jPOS itself would not load this packager); \
                 IFB_LLHBINARY is a binary length byte then bytes"
                    .to_string()
            }
            None => "`isoswitch spec import --help` lists the supported classes".to_string(),
        };
        Err(ImportError::Unsupported {
            origin: origin.to_string(),
            field: self.path.clone(),
            what: format!("jPOS class {:?}", self.class),
            why,
        })
    }

    fn mti_encoding(&self, origin: &str) -> Result<Encoding, ImportError> {
        let class = self.class(origin)?;
        let fits = matches!(class.kind, Numeric | Char)
            && class.length == Fixed
            && matches!(class.encoding, Ascii | Ebcdic | Bcd);
        if !fits {
            return Err(self.invalid(
                origin,
                "class",
                "a fixed numeric or character class for the MTI \
                 (IFA_NUMERIC, IFB_NUMERIC, IFE_NUMERIC, IF_CHAR, IFE_CHAR)",
                self.class.to_string(),
            ));
        }
        if self.length != 4 {
            return Err(self.invalid(origin, "length", "4", self.length.to_string()));
        }
        Ok(class.encoding)
    }

    fn bitmap_encoding(&self, origin: &str) -> Result<Encoding, ImportError> {
        let class = self.class(origin)?;
        if class.kind != Bitmap {
            return Err(self.invalid(
                origin,
                "class",
                "a bitmap class for field 1 (IFB_BITMAP, IFA_BITMAP or IFE_BITMAP)",
                self.class.to_string(),
            ));
        }
        if !matches!(self.length, 8 | 16) {
            return Err(self.invalid(
                origin,
                "length",
                "8 or 16 (bytes of bitmap; a tertiary bitmap inside field 1 is not supported)",
                self.length.to_string(),
            ));
        }
        Ok(class.encoding)
    }

    /// The field's layout, `None` for a field with nothing on the wire. Where
    /// our codec reads the same bytes only under another layout, `report` gets
    /// a warning saying how the value differs from what jPOS gives.
    fn data_field(
        &self,
        origin: &str,
        report: &mut Report,
    ) -> Result<Option<FieldFile>, ImportError> {
        let class = self.class(origin)?;
        let mut warn =
            |message: String| report.warn(origin, format!("field {}: {message}", self.label()));
        let (content, max) = match class.kind {
            Bitmap => {
                return Err(self.invalid(
                    origin,
                    "class",
                    "a data field class (bitmap classes belong to field 1)",
                    self.class.to_string(),
                ));
            }
            Nothing => {
                warn(
                    "not imported: IF_NOP puts nothing on the wire; a message with this bit set \
                     is refused as an undefined field"
                        .into(),
                );
                return Ok(None);
            }
            Numeric if matches!(self.path.as_str(), "35" | "36") => (ContentClass::Z, self.length),
            Numeric => (ContentClass::N, self.length),
            Char => (ContentClass::Ans, self.length),
            Binary => (ContentClass::B, self.length),
            Amount => {
                let digits = self.length.checked_sub(1).filter(|d| *d > 0);
                let digits = digits.ok_or_else(|| {
                    self.invalid(
                        origin,
                        "length",
                        "at least 2 (the C/D sign and one digit)",
                        self.length.to_string(),
                    )
                })?;
                (ContentClass::XN, digits)
            }
            FieldNumbered => {
                warn(
                    "imported as ans LL with the 2-digit field number jPOS writes first \
                     kept as the value's first two characters"
                        .into(),
                );
                (ContentClass::Ans, (self.length + 2).min(99))
            }
            BcdBytes => {
                warn(
                    "imported as b LL (the prefix counts bytes): the digits show as hex, \
                     an odd count ending in an F nibble"
                        .into(),
                );
                (ContentClass::B, self.length.div_ceil(2))
            }
            Filled => {
                warn(format!(
                    "imported as ans {} fixed: the value starts with the 2 length digits \
                     and is space-filled to {} characters",
                    self.length + 2,
                    self.length
                ));
                (ContentClass::Ans, self.length + 2)
            }
        };
        if class.name == "IFB_AMOUNT2003" {
            warn(
                "imported as its digits (n): jPOS reads them as currency code, \
                 minor-unit digit and amount"
                    .into(),
            );
        }
        let capacity = match (class.length, class.prefix) {
            (Fixed, _) => usize::MAX,
            (LL, Raw) => 0xFF,
            (_, Raw) => 0xFFFF,
            (kind, _) => kind.max_decimal(),
        };
        let max = if max > capacity.min(MAX_LENGTH) {
            let limit = capacity.min(MAX_LENGTH);
            let why = if capacity <= MAX_LENGTH {
                format!("the most its {} prefix can say, as in jPOS", class.length)
            } else {
                "the longest value isoswitch reads; a longer one is refused".to_string()
            };
            warn(format!("length {max} lowered to {limit}, {why}"));
            limit
        } else {
            max
        };
        let bcd_filler = (class.encoding == Bcd).then_some(if self.pad {
            BcdFiller::Left
        } else {
            BcdFiller::Right
        });
        Ok(Some(FieldFile {
            name: self.name.to_string(),
            length: class.length,
            max,
            class: content,
            encoding: Some(class.encoding),
            prefix: (class.length != Fixed).then_some(class.prefix),
            pad: None,
            pad_char: None,
            bcd_filler,
            composite: None,
        }))
    }
}

/// The longest value a spec allows (`Spec::compile` refuses more).
const MAX_LENGTH: usize = 65_535;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::spec::PadSide;
    use crate::iso8583::spec::Spec;
    use proptest::prelude::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/specs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// A packager with an ASCII MTI, a binary bitmap and `body` as further fields.
    fn packager(body: &str) -> String {
        format!(
            "<isopackager>\n\
             <isofield id=\"0\" length=\"4\" name=\"MTI\" class=\"org.jpos.iso.IFA_NUMERIC\"/>\n\
             <isofield id=\"1\" length=\"16\" name=\"BITMAP\" class=\"org.jpos.iso.IFB_BITMAP\"/>\n\
             {body}\n</isopackager>"
        )
    }

    fn import(body: &str) -> Result<Spec, ImportProblems> {
        from_jpos_xml(&packager(body), "t.xml").map(|i| i.spec)
    }

    fn refusal(body: &str) -> String {
        match import(body) {
            Ok(_) => panic!("expected {body} to be refused"),
            Err(e) => e.to_string(),
        }
    }

    /// (length kind, max, class, encoding, prefix) of a field, prefix only if variable.
    type Layout = (LengthKind, usize, ContentClass, Encoding, Option<Encoding>);

    fn layout(spec: &Spec, number: u8) -> Layout {
        let f = spec
            .field(number)
            .unwrap_or_else(|| panic!("field {number} missing"));
        let prefix = (f.length != Fixed).then_some(f.prefix);
        (f.length, f.max, f.class, f.encoding, prefix)
    }

    #[test]
    fn the_ascii_fixture_imports_with_jpos_layouts() {
        let spec = from_jpos_xml(&fixture("jpos-iso87ascii.xml"), "jpos-iso87ascii.xml")
            .expect("imports")
            .spec;
        assert_eq!(spec.name, "jpos-iso87ascii");
        assert_eq!(spec.mti_encoding, Ascii);
        assert_eq!(spec.bitmap_encoding, Raw);
        let n = ContentClass::N;
        assert_eq!(layout(&spec, 2), (LL, 19, n, Ascii, Some(Ascii)));
        assert_eq!(layout(&spec, 4), (Fixed, 12, n, Ascii, None));
        assert_eq!(layout(&spec, 28), (Fixed, 8, ContentClass::XN, Ascii, None));
        assert_eq!(
            layout(&spec, 35),
            (LL, 37, ContentClass::Z, Ascii, Some(Ascii))
        );
        assert_eq!(
            layout(&spec, 36),
            (LLL, 104, ContentClass::Z, Ascii, Some(Ascii))
        );
        assert_eq!(
            layout(&spec, 41),
            (Fixed, 8, ContentClass::Ans, Ascii, None)
        );
        assert_eq!(
            layout(&spec, 48),
            (LLL, 999, ContentClass::Ans, Ascii, Some(Ascii))
        );
        assert_eq!(layout(&spec, 52), (Fixed, 8, ContentClass::B, Raw, None));
        assert_eq!(
            layout(&spec, 55),
            (LLL, 255, ContentClass::B, Raw, Some(Ascii))
        );
        assert_eq!(
            layout(&spec, 97),
            (Fixed, 16, ContentClass::XN, Ascii, None)
        );
        assert_eq!(layout(&spec, 128), (Fixed, 8, ContentClass::B, Raw, None));
        assert_eq!(
            spec.field(4).map(|f| (f.pad, f.pad_char)),
            Some((PadSide::Left, b'0'))
        );
        assert_eq!(spec.field(41).map(|f| f.pad), Some(PadSide::Right));
        assert_eq!(spec.fields().count(), 126, "2-128 without 65");
        assert!(spec.field(65).is_none());
        assert!(!spec.has_tertiary_bitmap());
        assert_eq!(spec.defaults.numeric, Ascii);
        assert_eq!(spec.defaults.text, Ascii);
        assert_eq!(spec.defaults.binary, Raw);
        assert_eq!(spec.defaults.prefix, Ascii);
    }

    #[test]
    fn the_bcd_fixture_imports_with_bcd_numbers_and_prefixes() {
        let spec = from_jpos_xml(&fixture("jpos-iso87bcd.xml"), "jpos-iso87bcd.xml")
            .expect("imports")
            .spec;
        assert_eq!(spec.mti_encoding, Bcd);
        assert_eq!(spec.bitmap_encoding, Raw);
        let n = ContentClass::N;
        let ans = ContentClass::Ans;
        let b = ContentClass::B;
        assert_eq!(layout(&spec, 2), (LL, 19, n, Bcd, Some(Bcd)));
        assert_eq!(layout(&spec, 3), (Fixed, 6, n, Bcd, None));
        assert_eq!(layout(&spec, 28), (Fixed, 8, ContentClass::XN, Bcd, None));
        assert_eq!(layout(&spec, 35), (LL, 37, ContentClass::Z, Bcd, Some(Bcd)));
        assert_eq!(layout(&spec, 45), (LL, 76, ans, Ascii, Some(Bcd)));
        assert_eq!(layout(&spec, 55), (LLL, 255, b, Raw, Some(Bcd)));
        assert_eq!(layout(&spec, 121), (LL, 255, ans, Ascii, Some(Raw)));
        assert_eq!(layout(&spec, 122), (LL, 255, b, Raw, Some(Raw)));
        assert_eq!(layout(&spec, 123), (LL, 99, n, Bcd, Some(Raw)));
        assert_eq!(layout(&spec, 124), (LL, 99, b, Raw, Some(Bcd)));
        assert_eq!(layout(&spec, 125), (LLLL, 9999, ans, Ascii, Some(Bcd)));
        assert_eq!(layout(&spec, 126), (LLL, 999, ans, Ascii, Some(Raw)));
        assert_eq!(layout(&spec, 127), (LLL, 999, b, Raw, Some(Raw)));
        let filler = |n: u8| spec.field(n).map(|f| f.bcd_filler);
        assert_eq!(filler(3), Some(BcdFiller::Left), "pad=\"true\"");
        assert_eq!(filler(35), Some(BcdFiller::Right), "pad=\"false\"");
        assert_eq!(filler(123), Some(BcdFiller::Right), "pad=\"false\"");
        assert_eq!(spec.field(122).map(|f| f.prefix_len()), Some(1));
        assert_eq!(spec.field(127).map(|f| f.prefix_len()), Some(2));
        assert_eq!(spec.defaults.numeric, Bcd);
        assert_eq!(spec.defaults.text, Ascii);
        assert_eq!(spec.defaults.prefix, Bcd);
    }

    #[test]
    fn an_imported_spec_survives_the_toml_round_trip() {
        let spec = from_jpos_xml(&fixture("jpos-iso87bcd.xml"), "bcd.xml")
            .expect("imports")
            .spec;
        let again = Spec::from_toml_str(&spec.to_toml(), "export").expect("export loads");
        assert_eq!(spec, again);
    }

    #[test]
    fn pad_on_bcd_numbers_picks_the_filler_side() {
        let spec = import(
            r#"<isofield id="3" length="5" name="a" pad="true" class="org.jpos.iso.IFB_NUMERIC"/>
               <isofield id="4" length="5" name="b" pad="false" class="org.jpos.iso.IFB_NUMERIC"/>
               <isofield id="5" length="5" name="c" class="org.jpos.iso.IFB_NUMERIC"/>
               <isofield id="28" length="9" name="d" pad="TRUE" class="org.jpos.iso.IFB_AMOUNT"/>"#,
        )
        .expect("imports");
        let filler = |n: u8| spec.field(n).map(|f| f.bcd_filler);
        assert_eq!(filler(3), Some(BcdFiller::Left));
        assert_eq!(filler(4), Some(BcdFiller::Right));
        assert_eq!(
            filler(5),
            Some(BcdFiller::Right),
            "no pad is pad=\"false\" in jPOS"
        );
        assert_eq!(filler(28), Some(BcdFiller::Left));
    }

    #[test]
    fn ebcdic_classes_write_ebcdic_values_and_prefixes() {
        let xml = r#"<!DOCTYPE isopackager SYSTEM "genericpackager.dtd">
            <isopackager>
              <isofield id="0" length="4" name="MTI" class="org.jpos.iso.IFE_NUMERIC"/>
              <isofield id="1" length="16" name="BITMAP" class="org.jpos.iso.IFA_BITMAP"/>
              <isofield id="2" length="19" name="PAN" class="org.jpos.iso.IFE_LLNUM"/>
              <isofield id="28" length="9" name="FEE" class="org.jpos.iso.IFE_AMOUNT"/>
              <isofield id="41" length="8" name="TID" class="org.jpos.iso.IFE_CHAR"/>
              <isofield id="48" length="999" name="PRIVATE" class="org.jpos.iso.IFE_LLLCHAR"/>
              <isofield id="52" length="8" name="PIN" class="org.jpos.iso.IFA_BINARY"/>
              <isofield id="55" length="255" name="ICC" class="org.jpos.iso.IFE_LLLBINARY"/>
            </isopackager>"#;
        let spec = from_jpos_xml(xml, "e.xml").expect("imports").spec;
        assert_eq!(spec.mti_encoding, Ebcdic);
        assert_eq!(spec.bitmap_encoding, Hex);
        let n = ContentClass::N;
        assert_eq!(layout(&spec, 2), (LL, 19, n, Ebcdic, Some(Ebcdic)));
        assert_eq!(
            layout(&spec, 28),
            (Fixed, 8, ContentClass::XN, Ebcdic, None)
        );
        assert_eq!(
            layout(&spec, 41),
            (Fixed, 8, ContentClass::Ans, Ebcdic, None)
        );
        assert_eq!(
            layout(&spec, 48),
            (LLL, 999, ContentClass::Ans, Ebcdic, Some(Ebcdic))
        );
        assert_eq!(layout(&spec, 52), (Fixed, 8, ContentClass::B, Hex, None));
        assert_eq!(
            layout(&spec, 55),
            (LLL, 255, ContentClass::B, Raw, Some(Ebcdic))
        );
        assert_eq!(spec.defaults.text, Ebcdic);
    }

    #[test]
    fn field_65_is_the_tertiary_bitmap_marker_and_is_not_imported() {
        let spec = import(
            r#"<isofield id="64" length="8" name="MAC" class="org.jpos.iso.IFB_BINARY"/>
               <isofield id="65" length="1" name="BITMAP, EXTENDED" class="org.jpos.iso.IFB_BINARY"/>
               <isofield id="66" length="1" name="SETTLEMENT CODE" class="org.jpos.iso.IFA_NUMERIC"/>"#,
        )
        .expect("imports");
        assert!(spec.field(64).is_some());
        assert!(spec.field(65).is_none());
        assert!(spec.field(66).is_some());
    }

    #[test]
    fn an_unknown_class_is_refused_by_name_with_the_supported_list() {
        let err = refusal(
            r#"<isofield id="48" length="999" name="x" class="org.jpos.iso.IFA_LLLSOMETHING"/>"#,
        );
        assert!(
            err.contains(
                "t.xml:4: field 48: jPOS class \"org.jpos.iso.IFA_LLLSOMETHING\" is not supported"
            ),
            "{err}"
        );
        assert!(
            err.contains("`isoswitch spec import --help` lists"),
            "{err}"
        );
        assert!(err.len() < 200, "short: {err}");
        let err = refusal(r#"<isofield id="48" length="9" name="x" class="com.acme.IFX_MAGIC"/>"#);
        assert!(
            err.contains("\"com.acme.IFX_MAGIC\" is not supported"),
            "{err}"
        );
        let spec = import(
            "<isofield id=\"48\" length=\"9\" name=\"x\" class=\"\n  org.jpos.iso.IFA_NUMERIC \"/>",
        )
        .expect("jPOS trims class names; so does the import");
        assert_eq!(spec.field(48).map(|f| f.class), Some(ContentClass::N));
    }

    #[test]
    fn the_class_list_names_every_supported_class() {
        let list = class_names();
        assert!(
            list.starts_with("org.jpos.iso.{IFA_NUMERIC, IFA_LLNUM"),
            "{list}"
        );
        for class in CLASSES {
            let listed = list.contains(&format!(" {},", class.name))
                || list.contains(&format!("{{{},", class.name))
                || list.contains(&format!(" {}}}", class.name));
            assert!(listed, "{}", class.name);
        }
    }

    #[test]
    fn ebcdic_hex_classes_import_as_ebcdic_hex_and_ebcdic_ll_binary_stays_raw() {
        let xml = r#"<isopackager>
            <isofield id="0" length="4" name="MTI" class="org.jpos.iso.IFE_NUMERIC"/>
            <isofield id="1" length="16" name="BITMAP" class="org.jpos.iso.IFE_BITMAP"/>
            <isofield id="52" length="8" name="PIN" class="org.jpos.iso.IFE_BINARY"/>
            <isofield id="55" length="99" name="ICC" class="org.jpos.iso.IFE_LLBINARY"/>
            </isopackager>"#;
        let spec = from_jpos_xml(xml, "e.xml").expect("imports").spec;
        assert_eq!(spec.bitmap_encoding, EbcdicHex);
        assert_eq!(spec.bitmap_len(), 16);
        assert_eq!(
            layout(&spec, 52),
            (Fixed, 8, ContentClass::B, EbcdicHex, None)
        );
        // jPOS's LiteralBinaryInterpreter behind an EbcdicPrefixer: raw bytes.
        assert_eq!(
            layout(&spec, 55),
            (LL, 99, ContentClass::B, Raw, Some(Ebcdic))
        );
    }

    #[test]
    fn a_subfield_packager_without_a_known_wire_format_is_refused_by_name() {
        let err = refusal(
            r#"<isofieldpackager id="48" length="999" name="x" class="org.jpos.iso.IFA_LLLCHAR"
                   packager="org.jpos.iso.packager.EuroSubFieldPackager">
                 <isofield id="0" length="2" name="sub" class="org.jpos.iso.IF_CHAR"/>
               </isofieldpackager>"#,
        );
        assert!(
            err.contains(
                "t.xml:4: field 48 (class org.jpos.iso.IFA_LLLCHAR): subfield packager \
                 \"org.jpos.iso.packager.EuroSubFieldPackager\" is not supported (it reads each \
                 subfield's LL length before its 2-digit tag"
            ),
            "{err}"
        );
    }

    #[test]
    fn subfield_problems_name_the_subfield_by_its_jpos_path_all_in_one_run() {
        let err = refusal(
            r#"<isofieldpackager id="127" length="255" name="x" class="org.jpos.iso.IFB_LLHBINARY"
                   packager="org.jpos.iso.packager.GenericSubFieldPackager" emitBitmap="false">
                 <isofield id="1" length="2" name="a" class="org.jpos.iso.IFA_NUMBER"/>
                 <isofield id="2" length="0" name="b" class="org.jpos.iso.IF_CHAR"/>
                 <isofield id="4" length="2" name="c" class="org.jpos.iso.IF_CHAR"/>
               </isofieldpackager>
               <isofieldpackager id="126" length="255" name="y" class="org.jpos.iso.IFB_LLHBINARY"
                   packager="org.jpos.iso.packager.Base1SubFieldPackager">
                 <isofield id="0" length="8" name="bitmap" class="org.jpos.iso.IFA_BITMAP"/>
                 <isofield id="25" length="0" name="z" class="org.jpos.iso.IF_CHAR"/>
               </isofieldpackager>"#,
        );
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "t.xml:6: field 127.1: jPOS class \"org.jpos.iso.IFA_NUMBER\" is not supported \
                 (`isoswitch spec import --help` lists the supported classes)",
                "t.xml:8: field 127.4 (class org.jpos.iso.IF_CHAR): id: expected 3 \
                 (positional subfields follow one another without gaps), found \"4\"",
                "t.xml:13: field 126.25 (class org.jpos.iso.IF_CHAR): max: expected a length of \
                 at least 1, found 0",
            ],
            "{err}"
        );
    }

    #[test]
    fn malformed_xml_is_refused_with_its_position() {
        let err = from_jpos_xml("<isopackager>\n  <isofield id=2/>", "bad.xml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.xml:2:"), "{err}");
        assert!(err.contains("not valid XML"), "{err}");
        let err = from_jpos_xml("<isopackager><isofield id=\"2\"", "cut.xml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cut.xml:1:"), "{err}");
    }

    #[test]
    fn a_missing_attribute_is_refused_by_name() {
        let err = refusal(r#"<isofield id="2" name="PAN" class="org.jpos.iso.IFA_LLNUM"/>"#);
        assert!(err.contains("field 2: missing attribute `length`"), "{err}");
        let err = refusal(r#"<isofield length="6" name="x" class="org.jpos.iso.IFA_NUMERIC"/>"#);
        assert!(err.contains("field ?: missing attribute `id`"), "{err}");
        let err = refusal(r#"<isofield id="3" length="6" name="x"/>"#);
        assert!(err.contains("field 3: missing attribute `class`"), "{err}");
    }

    #[test]
    fn a_non_numeric_length_is_refused_with_expected_and_found() {
        let err =
            refusal(r#"<isofield id="2" length="19x" name="PAN" class="org.jpos.iso.IFA_LLNUM"/>"#);
        assert!(
            err.contains("field 2: length: expected a whole number, found \"19x\""),
            "{err}"
        );
    }

    #[test]
    fn bad_ids_and_pads_are_refused_with_expected_and_found() {
        let err =
            refusal(r#"<isofield id="200" length="3" name="x" class="org.jpos.iso.IF_CHAR"/>"#);
        assert!(
            err.contains("id: expected a field number 0-192, found \"200\""),
            "{err}"
        );
        let err = refusal(
            r#"<isofield id="3" length="6" name="x" pad="yes" class="org.jpos.iso.IFB_NUMERIC"/>"#,
        );
        assert!(
            err.contains("field 3: pad: expected true or false, found \"yes\""),
            "{err}"
        );
    }

    #[test]
    fn a_duplicate_field_id_keeps_the_last_definition_as_jpos_does() {
        let xml = packager(
            r#"<isofield id="3" length="6" name="a" class="org.jpos.iso.IFA_NUMERIC"/>
               <isofield id="3" length="4" name="b" class="org.jpos.iso.IFA_NUMERIC"/>"#,
        );
        let imported = from_jpos_xml(&xml, "t.xml").expect("imports");
        assert_eq!(imported.spec.field(3).map(|f| f.max), Some(4));
        let warnings: Vec<String> = imported.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "t.xml:5: warning: field 3 is defined twice (first at t.xml:4); \
              jPOS uses this one, so does the import"
            ]
        );
    }

    #[test]
    fn an_unknown_attribute_is_refused_by_name() {
        let err = refusal(
            r#"<isofield id="3" length="6" name="a" colour="red" class="org.jpos.iso.IFA_NUMERIC"/>"#,
        );
        assert!(
            err.contains("field 3: attribute `colour` is not supported"),
            "{err}"
        );
    }

    #[test]
    fn mti_and_bitmap_fields_must_fit_their_roles() {
        let xml = |mti: &str, bitmap: &str| {
            format!(
                "<isopackager><isofield id=\"0\" {mti} name=\"MTI\"/>\
                 <isofield id=\"1\" {bitmap} name=\"BITMAP\"/></isopackager>"
            )
        };
        let good_bitmap = r#"length="16" class="org.jpos.iso.IFB_BITMAP""#;
        let err = from_jpos_xml(
            &xml(r#"length="4" class="org.jpos.iso.IFA_LLNUM""#, good_bitmap),
            "m.xml",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field 0 (class org.jpos.iso.IFA_LLNUM): class: expected a fixed numeric or character class"),
            "{err}"
        );
        let err = from_jpos_xml(
            &xml(
                r#"length="6" class="org.jpos.iso.IFA_NUMERIC""#,
                good_bitmap,
            ),
            "m.xml",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field 0 (class org.jpos.iso.IFA_NUMERIC): length: expected 4, found 6"),
            "{err}"
        );
        let err = from_jpos_xml(
            &xml(
                r#"length="4" class="org.jpos.iso.IFA_NUMERIC""#,
                r#"length="24" class="org.jpos.iso.IFB_BITMAP""#,
            ),
            "m.xml",
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field 1 (class org.jpos.iso.IFB_BITMAP): length: expected 8 or 16"),
            "{err}"
        );
        let err =
            refusal(r#"<isofield id="2" length="16" name="x" class="org.jpos.iso.IFB_BITMAP"/>"#);
        assert!(
            err.contains(
                "field 2 (class org.jpos.iso.IFB_BITMAP): class: expected a data field class"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_packager_without_mti_or_bitmap_is_refused() {
        let err = from_jpos_xml("<isopackager/>", "e.xml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e.xml: no <isofield id=\"0\"> (the MTI)"),
            "{err}"
        );
    }

    #[test]
    fn a_foreign_root_element_is_refused() {
        let err = from_jpos_xml("<packager/>", "e.xml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("root element: expected <isopackager>, found <packager>"),
            "{err}"
        );
    }

    #[test]
    fn packager_settings_the_codec_cannot_honour_are_refused_and_a_header_is_a_warning() {
        let xml = |attributes: &str| {
            format!(
                "<isopackager {attributes}>\n\
                 <isofield id=\"0\" length=\"4\" name=\"MTI\" class=\"org.jpos.iso.IFA_NUMERIC\"/>\n\
                 <isofield id=\"1\" length=\"16\" name=\"BITMAP\" class=\"org.jpos.iso.IFB_BITMAP\"/>\n\
                 </isopackager>"
            )
        };
        let err = from_jpos_xml(&xml(r#"emitBitmap="false" firstField="3""#), "h.xml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("h.xml:1: <isopackager> emitBitmap: expected true"),
            "{err}"
        );
        assert!(
            err.contains("\nh.xml:1: <isopackager> firstField: expected 2"),
            "{err}"
        );
        let imported = from_jpos_xml(&xml(r#"headerLength="2""#), "h.xml").expect("imports");
        let warning = imported.warnings[0].to_string();
        assert!(
            warning.starts_with("h.xml:1: warning: headerLength=\"2\""),
            "{warning}"
        );
        assert!(warning.contains("[[listener]]/[[issuer]]"), "{warning}");
    }

    #[test]
    fn an_amount_too_short_for_its_sign_is_refused() {
        let err =
            refusal(r#"<isofield id="28" length="1" name="x" class="org.jpos.iso.IFA_AMOUNT"/>"#);
        assert!(
            err.contains("field 28 (class org.jpos.iso.IFA_AMOUNT): length: expected at least 2"),
            "{err}"
        );
    }

    #[test]
    fn a_length_the_prefix_cannot_say_is_lowered_with_a_warning() {
        let xml = packager(
            r#"<isofield id="44" length="120" name="x" class="org.jpos.iso.IFA_LLCHAR"/>
               <isofield id="45" length="300" name="y" class="org.jpos.iso.IFB_LLHCHAR"/>"#,
        );
        let imported = from_jpos_xml(&xml, "t.xml").expect("imports");
        assert_eq!(imported.spec.field(44).map(|f| f.max), Some(99));
        assert_eq!(imported.spec.field(45).map(|f| f.max), Some(255));
        let first = imported.warnings[0].to_string();
        assert!(
            first.contains("t.xml:4: warning: field 44 (class org.jpos.iso.IFA_LLCHAR): length 120 lowered to 99"),
            "{first}"
        );
    }

    #[test]
    fn every_supported_class_imports_on_a_data_field() {
        let layouts = CLASSES
            .iter()
            .filter(|c| !matches!(c.kind, Bitmap | Nothing));
        for c in layouts {
            let body = format!(
                r#"<isofield id="60" length="9" name="x" class="org.jpos.iso.{}"/>"#,
                c.name
            );
            let spec = import(&body).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(
                spec.field(60).map(|f| f.encoding),
                Some(c.encoding),
                "{}",
                c.name
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
            let _ = from_jpos_xml(&text, "fuzz.xml");
        }

        #[test]
        fn arbitrary_isofields_never_panic(
            id in "[0-9]{1,4}|x",
            length in "[0-9]{1,6}|-1|x",
            class_index in 0..CLASSES.len() + 1,
            pad in "true|false|maybe",
        ) {
            let class = CLASSES.get(class_index).map_or("IFX_NONE", |c| c.name);
            let body = format!(
                r#"<isofield id="{id}" length="{length}" name="f" pad="{pad}" class="org.jpos.iso.{class}"/>"#
            );
            let _ = import(&body);
        }
    }
}
