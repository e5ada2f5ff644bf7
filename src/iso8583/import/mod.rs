//! Spec import from, and export to, other ISO 8583 libraries: jPOS GenericPackager
//! XML and moov-io/iso8583 JSON. Each importer maps the foreign layout onto a
//! [`SpecFile`] and compiles it, refusing by name whatever our model cannot express.

mod jpos;
mod moov;

use std::collections::BTreeMap;
use std::fmt;

use crate::iso8583::spec::{DefaultsFile, Encoding, FieldFile, LengthKind, Spec, SpecFile};
use crate::iso8583::SpecError;

pub use jpos::from_jpos_xml;
pub use moov::{from_moov_json, to_moov_json, MoovExportError};

/// A spec imported, with what was imported only with a caveat (a validator
/// ignored, a header left to the link config, a class read as its nearest
/// exact equivalent).
#[derive(Debug)]
pub struct Imported {
    pub spec: Spec,
    pub warnings: Vec<ImportWarning>,
}

/// Something imported with a caveat: where, and what the caveat is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWarning {
    /// The file, with a line for XML.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for ImportWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: {}", self.origin, self.message)
    }
}

/// Every problem found in one file, so a user fixes them all in one pass.
/// Displays as one line per problem.
#[derive(Debug)]
pub struct ImportProblems {
    pub problems: Vec<ImportError>,
    /// The caveats found meanwhile, still worth printing.
    pub warnings: Vec<ImportWarning>,
}

impl fmt::Display for ImportProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ImportProblems {}

impl From<ImportError> for ImportProblems {
    fn from(problem: ImportError) -> Self {
        ImportProblems {
            problems: vec![problem],
            warnings: Vec::new(),
        }
    }
}

/// Imports a file's bytes, jPOS XML when `origin` ends in `.xml` or the text
/// starts with `<`, moov JSON otherwise. Bytes that are not UTF-8 are refused
/// naming the offset of the first bad byte.
pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Imported, ImportProblems> {
    let text = std::str::from_utf8(bytes).map_err(|e| ImportError::Syntax {
        origin: origin.to_string(),
        format: "UTF-8",
        message: format!(
            "byte 0x{:02X} at offset {} is not UTF-8; save the file as UTF-8",
            bytes.get(e.valid_up_to()).copied().unwrap_or_default(),
            e.valid_up_to()
        ),
    })?;
    let is_xml = std::path::Path::new(origin)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
        || text.trim_start().starts_with('<');
    if is_xml {
        from_jpos_xml(text, origin)
    } else {
        from_moov_json(text, origin)
    }
}

/// Problems and warnings as an importer finds them.
#[derive(Default)]
struct Report {
    problems: Vec<ImportError>,
    warnings: Vec<ImportWarning>,
    /// Where each field was defined, for the spec check's errors.
    places: BTreeMap<String, Place>,
}

impl Report {
    fn problem(&mut self, problem: ImportError) {
        self.problems.push(problem);
    }

    fn warn(&mut self, origin: &str, message: String) {
        self.warnings.push(ImportWarning {
            origin: origin.to_string(),
            message,
        });
    }

    /// Keeps `value`, or records its problem and gives `None`.
    fn keep<T>(&mut self, result: Result<T, ImportError>) -> Option<T> {
        result.map_err(|e| self.problem(e)).ok()
    }

    fn fail(self) -> ImportProblems {
        ImportProblems {
            problems: self.problems,
            warnings: self.warnings,
        }
    }
}

/// What `spec import` reads, for its `--help`.
pub fn supported_help() -> String {
    let supported = |list: &str| wrapped(list.trim_start_matches("supported: "));
    format!(
        "jPOS GenericPackager field classes:\n{}\n\nmoov-io JSON field types:\n{}\n\
         moov-io encodings:\n{}\nmoov-io prefixes:\n{}",
        wrapped(&jpos::class_names()),
        supported(moov::SUPPORTED_TYPES),
        supported(moov::SUPPORTED_ENCODINGS),
        supported(moov::SUPPORTED_PREFIXES),
    )
}

/// `text` indented by two spaces, broken between words before 78 columns.
fn wrapped(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(" ");
    for word in text.split(' ') {
        if line.len() + 1 + word.len() > 78 {
            out.push_str(&line);
            out.push('\n');
            line = String::from(" ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

/// Why a foreign spec could not be imported: every variant names the origin (with a
/// line for XML), the field, and what was expected against what was found.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The text is not well-formed XML or JSON at all.
    #[error("{origin}: not valid {format}: {message}")]
    Syntax {
        origin: String,
        format: &'static str,
        message: String,
    },
    /// A problem with the document as a whole: the wrong root, no MTI or bitmap
    /// field, a packager-level setting we cannot honour.
    #[error("{origin}: {message}")]
    Document { origin: String, message: String },
    /// A required XML attribute or JSON key is absent.
    #[error("{origin}: field {field}: missing {place} `{attribute}`")]
    Missing {
        origin: String,
        field: String,
        /// "attribute" (XML) or "key" (JSON).
        place: &'static str,
        attribute: String,
    },
    /// An attribute or key has a value we do not accept.
    #[error("{origin}: field {field}: {attribute}: expected {expected}, found {found}")]
    Invalid {
        origin: String,
        field: String,
        attribute: String,
        expected: String,
        found: String,
    },
    /// Something the foreign format has but our spec model cannot express, such
    /// as a jPOS subfield packager or a moov Composite field.
    #[error("{origin}: field {field}: {what} is not supported ({why})")]
    Unsupported {
        origin: String,
        field: String,
        what: String,
        why: String,
    },
    /// The same field number appears twice.
    #[error("{origin}: field {field} is defined twice")]
    Duplicate { origin: String, field: String },
    /// The imported layout compiled to an invalid spec (a max the prefix cannot
    /// carry, a zero length, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Counts encodings in a fixed order so ties resolve the same way every time.
#[derive(Default)]
struct Tally([usize; 6]);

impl Tally {
    const ORDER: [Encoding; 6] = [
        Encoding::Ascii,
        Encoding::Ebcdic,
        Encoding::Bcd,
        Encoding::Binary,
        Encoding::Hex,
        Encoding::EbcdicHex,
    ];

    fn add(&mut self, encoding: Encoding) {
        if let Some(i) = Self::ORDER.iter().position(|e| *e == encoding) {
            self.0[i] += 1;
        }
    }

    /// The most frequent encoding; the earliest in `ORDER` on a tie.
    fn most(&self) -> Option<Encoding> {
        let mut best: Option<(usize, Encoding)> = None;
        for (count, encoding) in self.0.iter().zip(Self::ORDER) {
            let better = match best {
                None => true,
                Some((c, _)) => *count > c,
            };
            if *count > 0 && better {
                best = Some((*count, encoding));
            }
        }
        best.map(|(_, e)| e)
    }
}

/// `[defaults]` for an imported spec: the most common encoding in each group, so
/// the exported TOML lists overrides only for the odd fields out. A group with no
/// fields falls back to something valid for it (MTI encoding for numbers, the
/// bitmap encoding for binary fields).
fn choose_defaults(
    fields: &BTreeMap<String, FieldFile>,
    mti_encoding: Encoding,
    bitmap_encoding: Encoding,
) -> DefaultsFile {
    let (mut numeric, mut text, mut binary, mut prefix) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    for field in fields.values() {
        if let Some(encoding) = field.encoding {
            if field.class.is_binary() {
                binary.add(encoding);
            } else if field.class.is_numeric() {
                numeric.add(encoding);
            } else {
                text.add(encoding);
            }
        }
        if let (true, Some(p)) = (field.length != LengthKind::Fixed, field.prefix) {
            prefix.add(p);
        }
    }
    let numeric = numeric.most().unwrap_or(mti_encoding);
    let text_fallback = match mti_encoding {
        Encoding::Ebcdic => Encoding::Ebcdic,
        _ => Encoding::Ascii,
    };
    DefaultsFile {
        numeric,
        text: text.most().unwrap_or(text_fallback),
        binary: binary.most().unwrap_or(bitmap_encoding),
        prefix: prefix.most().unwrap_or(numeric),
    }
}

/// Where a field was defined, for the spec check's errors: the origin with a
/// line, and the field as the foreign format names it (`4 (class …)`).
struct Place {
    origin: String,
    field: String,
}

/// `error` naming the field's line and class where `places` knows them.
fn placed(error: SpecError, places: &BTreeMap<String, Place>) -> SpecError {
    match error {
        SpecError::Field {
            field,
            message,
            origin,
        } => match places.get(&field) {
            Some(place) => SpecError::Field {
                origin: place.origin.clone(),
                field: place.field.clone(),
                message,
            },
            None => SpecError::Field {
                origin,
                field,
                message,
            },
        },
        other => other,
    }
}

/// Builds the spec file from imported parts and compiles it, unless `report`
/// already holds problems. A spec that does not compile is checked field by
/// field, so every field the spec check refuses is reported, not the first.
fn compile(
    name: String,
    description: String,
    mti_encoding: Encoding,
    bitmap_encoding: Encoding,
    fields: BTreeMap<String, FieldFile>,
    origin: &str,
    mut report: Report,
) -> Result<Imported, ImportProblems> {
    let defaults = choose_defaults(&fields, mti_encoding, bitmap_encoding);
    let file = SpecFile {
        name,
        description,
        mti_encoding,
        bitmap_encoding,
        defaults,
        fields,
    };
    // With problems already found, the fields that were imported are still
    // checked, so one run names every problem.
    let first = match report.problems.is_empty() {
        true => match Spec::compile(file.clone(), origin) {
            Ok(spec) => {
                return Ok(Imported {
                    spec,
                    warnings: report.warnings,
                })
            }
            Err(first) => Some(first),
        },
        false => None,
    };
    let alone = |(key, field): (&String, &FieldFile)| SpecFile {
        fields: BTreeMap::from([(key.clone(), field.clone())]),
        ..file.clone()
    };
    let each: Vec<SpecError> = file
        .fields
        .iter()
        .filter_map(|f| Spec::compile(alone(f), origin).err())
        .collect();
    if let (Some(first), true) = (first, each.is_empty()) {
        report.problem(first.into());
    }
    for e in each {
        let e = placed(e, &report.places);
        report.problem(e.into());
    }
    Err(report.fail())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::spec::ContentClass;

    fn field(class: ContentClass, encoding: Encoding, prefix: Option<Encoding>) -> FieldFile {
        FieldFile {
            name: "x".into(),
            length: if prefix.is_some() {
                LengthKind::LL
            } else {
                LengthKind::Fixed
            },
            max: 4,
            class,
            encoding: Some(encoding),
            prefix,
            pad: None,
            pad_char: None,
            bcd_filler: None,
            composite: None,
        }
    }

    #[test]
    fn defaults_take_the_most_common_encoding_of_each_group() {
        let mut fields = BTreeMap::new();
        fields.insert(
            "2".into(),
            field(ContentClass::N, Encoding::Bcd, Some(Encoding::Bcd)),
        );
        fields.insert("3".into(), field(ContentClass::N, Encoding::Bcd, None));
        fields.insert("4".into(), field(ContentClass::N, Encoding::Ascii, None));
        fields.insert(
            "41".into(),
            field(ContentClass::Ans, Encoding::Ebcdic, None),
        );
        fields.insert("52".into(), field(ContentClass::B, Encoding::Hex, None));
        let d = choose_defaults(&fields, Encoding::Ascii, Encoding::Binary);
        assert_eq!(d.numeric, Encoding::Bcd);
        assert_eq!(d.text, Encoding::Ebcdic);
        assert_eq!(d.binary, Encoding::Hex);
        assert_eq!(d.prefix, Encoding::Bcd);
    }

    #[test]
    fn defaults_fall_back_to_the_mti_and_bitmap_encodings_for_empty_groups() {
        let d = choose_defaults(&BTreeMap::new(), Encoding::Ebcdic, Encoding::Hex);
        assert_eq!(d.numeric, Encoding::Ebcdic);
        assert_eq!(d.text, Encoding::Ebcdic);
        assert_eq!(d.binary, Encoding::Hex);
        assert_eq!(d.prefix, Encoding::Ebcdic);
    }

    #[test]
    fn tally_ties_resolve_in_a_fixed_order() {
        let mut t = Tally::default();
        t.add(Encoding::Hex);
        t.add(Encoding::Ascii);
        assert_eq!(t.most(), Some(Encoding::Ascii));
        assert_eq!(Tally::default().most(), None);
    }
}
