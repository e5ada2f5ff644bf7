//! Property tests of the codec against every spec in `specs/`: any valid message
//! survives encode → decode unchanged, and no input — random bytes or a valid
//! message with one byte changed — can make decoding or re-encoding panic.
//! Every message that decodes re-encodes byte for byte, hex in the case it was
//! read. The composite test spec (tests/fixtures/specs) runs the same
//! properties with its subfields decoded and encoded again.
//! Runs are seeded, so a failure reproduces on every run.

use std::path::Path;

use isoswitch::iso8583::json::to_json;
use isoswitch::iso8583::spec::{
    CompositeLayout, CompositeSpec, ContentClass, Encoding, Field, LengthKind,
};
use isoswitch::iso8583::{Composite, Message, Mti, Spec, SubValue};
use proptest::prelude::*;
use proptest::sample::{select, subsequence, Index};
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};

/// Cases per property per spec: enough to reach every field kind, small enough
/// for a debug build to run the whole file in seconds.
const CASES: u32 = 256;

/// A shipped spec, or a test spec from tests/fixtures/specs (`composite-…`).
fn load_spec(name: &str) -> Spec {
    let dir = match name.starts_with("composite-") || name == "ebcdic-hex" {
        true => "tests/fixtures/specs",
        false => "specs",
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(format!("{name}.toml"));
    Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `test` on `CASES` values of `strategy` with a fixed seed and no
/// regression files, naming the spec on failure.
fn check<S: Strategy>(
    spec: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{spec}: {e}");
    }
}

fn bytes_where(ok: impl Fn(u8) -> bool) -> Vec<u8> {
    (0u8..=255).filter(|&b| ok(b)).collect()
}

/// The bytes a value of `class` may hold (for `x+n` and `z`, the digits).
fn alphabet(class: ContentClass) -> Vec<u8> {
    let printable = |b: u8| b.is_ascii_graphic() || b == b' ';
    match class {
        ContentClass::N | ContentClass::Z | ContentClass::XN => bytes_where(|b| b.is_ascii_digit()),
        ContentClass::A => bytes_where(|b| b.is_ascii_alphabetic() || b == b' '),
        ContentClass::S => bytes_where(|b| b.is_ascii_punctuation() || b == b' '),
        ContentClass::An => bytes_where(|b| b.is_ascii_alphanumeric() || b == b' '),
        ContentClass::As => bytes_where(|b| printable(b) && !b.is_ascii_digit()),
        ContentClass::Ns => bytes_where(|b| printable(b) && !b.is_ascii_alphabetic()),
        ContentClass::Ans => bytes_where(printable),
        ContentClass::B => bytes_where(|_| true),
    }
}

/// Lengths for a field: exactly `max` when fixed; otherwise short ones, the
/// maximum itself, or anything up to it.
fn length(field: &Field) -> BoxedStrategy<usize> {
    let max = field.max;
    match field.length {
        LengthKind::Fixed => Just(max).boxed(),
        _ => prop_oneof![0..=max.min(24), Just(max), 0..=max].boxed(),
    }
}

/// A valid value of `field`: its class's characters and a length the field allows.
fn value(field: &Field) -> BoxedStrategy<Vec<u8>> {
    let class = field.class;
    let chars = alphabet(class);
    length(field)
        .prop_flat_map(move |len| {
            let digits = proptest::collection::vec(select(chars.clone()), len);
            (digits, any::<Index>(), any::<bool>())
        })
        .prop_map(move |(mut text, at, credit)| {
            match class {
                // Track data: digits with one field separator.
                ContentClass::Z if !text.is_empty() => {
                    let i = at.index(text.len());
                    text[i] = b'=';
                }
                ContentClass::XN => text.insert(0, if credit { b'C' } else { b'D' }),
                _ => {}
            }
            text
        })
        .boxed()
}

/// A value for a subfield: plain, or a nested composite.
fn sub_value(field: &Field) -> BoxedStrategy<SubValue> {
    match &field.composite {
        Some(nested) => composite((**nested).clone())
            .prop_map(SubValue::Composite)
            .boxed(),
        None => value(field).prop_map(SubValue::Value).boxed(),
    }
}

/// Valid subfields of a composite: the first k positional ones, or any set of
/// bitmap or tlv ones (tlv in random order).
fn composite(spec: CompositeSpec) -> BoxedStrategy<Composite> {
    let subs = spec.subfields.clone();
    let n = subs.len();
    let chosen = match spec.layout {
        CompositeLayout::Positional => (1..=n).prop_map(move |k| subs[..k].to_vec()).boxed(),
        CompositeLayout::Bitmap => subsequence(subs, 0..=n).boxed(),
        CompositeLayout::Tlv => subsequence(subs, 0..=n).prop_shuffle().boxed(),
    };
    chosen
        .prop_flat_map(|subs| {
            let values: Vec<_> = subs
                .iter()
                .map(|s| {
                    let id = s.id.clone();
                    sub_value(&s.field).prop_map(move |v| (id.clone(), v))
                })
                .collect();
            values.prop_map(|values| {
                let mut c = Composite::new();
                for (id, v) in values {
                    c.push(id, v);
                }
                c
            })
        })
        .boxed()
}

/// A field value to set: plain bytes, or subfields for a composite.
#[derive(Debug, Clone)]
enum FieldValue {
    Plain(Vec<u8>),
    Subfields(Composite),
}

fn field_value(field: &Field) -> BoxedStrategy<FieldValue> {
    match &field.composite {
        Some(c) => composite((**c).clone())
            .prop_map(FieldValue::Subfields)
            .boxed(),
        None => value(field).prop_map(FieldValue::Plain).boxed(),
    }
}

/// A valid message: any MTI and a random subset of the spec's fields (sometimes
/// primary-bitmap fields only, often some above 64 and above 128).
fn message(spec: &Spec) -> BoxedStrategy<Message> {
    let all: Vec<Field> = spec.fields().cloned().collect();
    let primary: Vec<Field> = all.iter().filter(|f| f.number <= 64).cloned().collect();
    let picks = prop_oneof![subsequence(primary, 0..=10), subsequence(all, 1..=14)];
    let mti = "[0-9]{4}".prop_map(|s| s.parse::<Mti>().expect("four digits"));
    let spec = spec.clone();
    (mti, picks)
        .prop_flat_map(move |(mti, fields)| {
            let values: Vec<_> = fields
                .iter()
                .map(|f| {
                    let n = f.number;
                    field_value(f).prop_map(move |v| (n, v))
                })
                .collect();
            let spec = spec.clone();
            values.prop_map(move |values| {
                let mut msg = Message::new(mti);
                for (n, v) in values {
                    match v {
                        FieldValue::Plain(v) => {
                            msg.set(n, v).expect("spec fields are data fields");
                        }
                        FieldValue::Subfields(c) => {
                            msg.set_subfields(&spec, n, &c)
                                .unwrap_or_else(|e| panic!("generated subfields encode: {e}"));
                        }
                    }
                }
                msg
            })
        })
        .boxed()
}

/// What a message reads back as: BCD packs a track separator (`=` or `D`) as
/// nibble D, which unpacks as `=`.
fn as_decoded(spec: &Spec, msg: &Message) -> Message {
    let mut out = Message::new(msg.mti());
    for (n, v) in msg.iter() {
        let field = spec.field(n).expect("generated from the spec");
        let value: Vec<u8> = if field.class == ContentClass::Z && field.encoding == Encoding::Bcd {
            v.iter()
                .map(|&b| if b == b'D' { b'=' } else { b })
                .collect()
        } else {
            v.to_vec()
        };
        out.set(n, value).expect("data field");
    }
    out
}

/// Fails with both messages as JSON: `Message`'s Debug shows field numbers only.
fn same(spec: &Spec, got: &Message, want: &Message) -> Result<(), TestCaseError> {
    if got == want {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "got {}, expected {}",
        to_json(spec, got),
        to_json(spec, want)
    )))
}

/// Subfields that decode encode back to the same bytes (tlv in the order read,
/// bitmap and positional in number order, as they were on the wire).
fn subfields_reencode(spec: &Spec, msg: &Message) -> Result<(), TestCaseError> {
    for (n, value) in msg.iter() {
        if !spec.field(n).is_some_and(|f| f.composite.is_some()) {
            continue;
        }
        let Ok(Some(subfields)) = msg.subfields(spec, n) else {
            continue;
        };
        let mut again = Message::new(msg.mti());
        again
            .set_subfields(spec, n, &subfields)
            .map_err(|e| TestCaseError::fail(format!("decoded subfields fail to encode: {e}")))?;
        prop_assert_eq!(again.get(n), Some(value), "field {}", n);
    }
    Ok(())
}

/// Re-encoding whatever decoded must work and give a canonical form that decodes
/// to the same message.
fn reencodes(spec: &Spec, decoded: &Message) -> Result<(), TestCaseError> {
    subfields_reencode(spec, decoded)?;
    let wire = decoded
        .encode(spec)
        .map_err(|e| TestCaseError::fail(format!("a decoded message fails to encode: {e}")))?;
    let again = Message::decode_slice(spec, &wire)
        .map_err(|e| TestCaseError::fail(format!("re-encoded bytes fail to decode: {e}")))?;
    same(spec, &again, decoded)
}

fn valid_messages_survive_encode_then_decode(name: &str) {
    let spec = load_spec(name);
    check(name, message(&spec), |msg| {
        let wire = msg
            .encode(&spec)
            .map_err(|e| TestCaseError::fail(format!("valid message fails to encode: {e}")))?;
        let decoded = Message::decode_slice(&spec, &wire)
            .map_err(|e| TestCaseError::fail(format!("encoded bytes fail to decode: {e}")))?;
        same(&spec, &decoded, &as_decoded(&spec, &msg))?;
        decoded
            .check_subfields(&spec)
            .map_err(|e| TestCaseError::fail(format!("generated subfields fail to decode: {e}")))?;
        subfields_reencode(&spec, &decoded)?;
        let again = decoded
            .encode(&spec)
            .map_err(|e| TestCaseError::fail(format!("decoded message fails to encode: {e}")))?;
        prop_assert_eq!(again, wire);
        Ok(())
    });
}

fn arbitrary_bytes_never_panic_the_decoder(name: &str) {
    let spec = load_spec(name);
    // A valid MTI in front gets random bytes past the first check and into the
    // bitmaps and fields.
    let mti_len = if spec.mti_encoding == Encoding::Bcd {
        2
    } else {
        4
    };
    let empty = Message::new(Mti::from_static("0200"));
    let mut mti = empty.encode(&spec).expect("an empty message encodes");
    mti.truncate(mti_len);
    let noise = proptest::collection::vec(any::<u8>(), 0..600);
    let input = prop_oneof![
        noise.clone(),
        noise.prop_map(move |tail| [mti.clone(), tail].concat()),
    ];
    check(name, input, |bytes| {
        if let Ok(msg) = Message::decode_slice(&spec, &bytes) {
            reencodes(&spec, &msg)?;
        }
        Ok(())
    });
}

fn one_changed_byte_never_panics_decode_or_reencode(name: &str) {
    let spec = load_spec(name);
    let mutated = (message(&spec), any::<Index>(), 1u8..=255);
    check(name, mutated, |(msg, at, flip)| {
        let mut wire = msg.encode(&spec).expect("a generated message encodes");
        let i = at.index(wire.len());
        wire[i] ^= flip;
        let decoded = Message::decode_slice(&spec, &wire);
        if let Ok(decoded) = &decoded {
            reencodes(&spec, decoded)?;
        }
        // What a refusal echoes: all of a message that decodes, else the
        // fields before the bad one, which must encode again too.
        match (decoded, Message::decode_readable_part(&spec, wire.into())) {
            (Ok(decoded), Some(readable)) => same(&spec, &readable, &decoded)?,
            (Ok(_), None) => {
                return Err(TestCaseError::fail(
                    "a message that decodes has no readable part",
                ))
            }
            (Err(_), Some(readable)) => reencodes(&spec, &readable)?,
            (Err(_), None) => {}
        }
        Ok(())
    });
}

macro_rules! spec_properties {
    ($($module:ident => $spec:literal),* $(,)?) => {$(
        mod $module {
            #[test]
            fn valid_messages_survive_encode_then_decode() {
                super::valid_messages_survive_encode_then_decode($spec);
            }

            #[test]
            fn arbitrary_bytes_never_panic_the_decoder() {
                super::arbitrary_bytes_never_panic_the_decoder($spec);
            }

            #[test]
            fn one_changed_byte_never_panics_decode_or_reencode() {
                super::one_changed_byte_never_panics_decode_or_reencode($spec);
            }
        }
    )*};
}

spec_properties! {
    iso87ascii => "iso87ascii",
    iso87ascii_hexbitmap => "iso87ascii-hexbitmap",
    iso87bcd => "iso87bcd",
    iso87ebcdic => "iso87ebcdic",
    iso93ascii => "iso93ascii",
    composite_iso87ascii => "composite-iso87ascii",
    ebcdic_hex => "ebcdic-hex",
}

/// The hex regions of an encoded message (bitmaps, and fields whose encoding
/// is hex), found by walking the spec's layout over `msg`'s values.
fn hex_regions(spec: &Spec, msg: &Message) -> Vec<std::ops::Range<usize>> {
    let mut regions = Vec::new();
    let mut pos = if spec.mti_encoding == Encoding::Bcd {
        2
    } else {
        4
    };
    let words = msg.bitmap().0;
    let bitmaps = 1 + usize::from(words[1] != 0 || words[2] != 0) + usize::from(words[2] != 0);
    let bitmap_len = spec.bitmap_len();
    if spec.bitmap_encoding == Encoding::Hex {
        regions.push(pos..pos + bitmaps * bitmap_len);
    }
    pos += bitmaps * bitmap_len;
    for (n, v) in msg.iter() {
        let field = spec.field(n).expect("generated from the spec");
        let len = match field.length {
            LengthKind::Fixed => field.max,
            _ => v.len(),
        };
        pos += field.prefix_len();
        let wire = field.wire_len(len);
        if field.encoding == Encoding::Hex {
            regions.push(pos..pos + wire);
        }
        pos += wire;
    }
    regions
}

#[test]
fn hex_read_in_lowercase_reencodes_in_lowercase() {
    let name = "iso87ascii-hexbitmap";
    let spec = load_spec(name);
    check(name, message(&spec), |msg| {
        let mut wire = msg.encode(&spec).expect("a generated message encodes");
        for range in hex_regions(&spec, &msg) {
            wire[range].make_ascii_lowercase();
        }
        let decoded = Message::decode_slice(&spec, &wire)
            .map_err(|e| TestCaseError::fail(format!("lowercase hex fails to decode: {e}")))?;
        same(&spec, &decoded, &msg)?;
        prop_assert_eq!(decoded.encode(&spec).expect("re-encodes"), wire);
        Ok(())
    });
}

#[test]
fn mixed_case_hex_in_one_value_is_refused_at_its_letter() {
    let spec = load_spec("iso87ascii-hexbitmap");
    let mut msg = Message::new(Mti::from_static("0800"));
    msg.set(52, [0xAB, 0xCD, 0, 0, 0, 0, 0, 0]).expect("field");
    let mut wire = msg.encode(&spec).expect("encodes");
    // MTI, bitmap (16), then the PIN block "ABCD000000000000".
    assert_eq!(&wire[20..24], b"ABCD");
    wire[21] = b'b';
    let err = Message::decode_slice(&spec, &wire).expect_err("mixed case");
    assert!(
        err.to_string()
            .starts_with("field 52 at byte 21: expected hex letters all in one case"),
        "{err}"
    );
}

#[test]
fn every_spec_file_is_covered_by_the_properties() {
    let mut names: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"))
            .expect("specs/ is readable")
            .filter_map(|e| {
                e.ok()?
                    .path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "iso87ascii",
            "iso87ascii-hexbitmap",
            "iso87bcd",
            "iso87ebcdic",
            "iso93ascii"
        ]
    );
}

#[test]
fn random_bytes_as_composite_content_never_panic_and_errors_name_the_field() {
    let spec = load_spec("composite-iso87ascii");
    let composites: Vec<u8> = spec
        .fields()
        .filter(|f| f.composite.is_some())
        .map(|f| f.number)
        .collect();
    let input = (
        select(composites),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    check("composite-iso87ascii", input, |(n, bytes)| {
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(n, &bytes).expect("data field");
        match msg.subfields(&spec, n) {
            Ok(_) => subfields_reencode(&spec, &msg)?,
            Err(e) => {
                prop_assert_eq!(e.field(), Some(n));
                let path = e.subfield().unwrap_or_default().to_string();
                prop_assert!(path.starts_with(&n.to_string()), "{}", e);
                prop_assert!(e.offset() <= bytes.len(), "{}", e);
            }
        }
        Ok(())
    });
}
