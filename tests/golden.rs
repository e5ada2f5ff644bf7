//! Golden vectors: wire bytes worked out from each file in `specs/` independently
//! of the encoder, each stored beside the JSON the codec must read from them, plus
//! one deliberately broken input per codec error kind. They catch an encoder and a
//! decoder that agree with each other but not with ISO 8583.
//!
//! A vector is `tests/vectors/<spec>/NAME.hex` (hex text; whitespace and `#`
//! comments allowed, one message part a line) next to `NAME.json`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use isoswitch::iso8583::emv;
use isoswitch::iso8583::error::Direction;
use isoswitch::iso8583::json::{from_json, to_json};
use isoswitch::iso8583::spec::{BcdFiller, ContentClass, Encoding, LengthKind};
use isoswitch::iso8583::{CodecError, ErrorKind, Message, Mti, Part, Spec};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn spec_path(name: &str) -> PathBuf {
    root().join("specs").join(format!("{name}.toml"))
}

fn load_spec(name: &str) -> Spec {
    let path = spec_path(name);
    Spec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `*.toml` in `specs/`, by file stem, sorted.
fn spec_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root().join("specs"))
        .expect("specs/ is readable")
        .map(|entry| entry.expect("specs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// Hex text to bytes: `#` starts a comment to the end of the line, whitespace is
/// ignored.
fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).unwrap_or_else(|e| panic!("bad hex {digits:?}: {e}"))
}

struct Vector {
    name: String,
    wire: Vec<u8>,
    json: Value,
}

/// The vectors of one spec, by name; a `.hex` without its `.json` (or the reverse)
/// is a broken fixture and fails loudly.
fn vectors(spec: &str) -> Vec<Vector> {
    let dir = root().join("tests/vectors").join(spec);
    let mut stems = BTreeSet::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("vector entry").path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("hex" | "json") => {
                let stem = path.file_stem().expect("file stem").to_string_lossy();
                stems.insert(stem.into_owned());
            }
            _ => panic!("{}: expected only .hex and .json files", path.display()),
        }
    }
    stems
        .into_iter()
        .map(|name| {
            let read = |ext: &str| {
                let path = dir.join(format!("{name}.{ext}"));
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            };
            let json = serde_json::from_str(&read("json"))
                .unwrap_or_else(|e| panic!("{spec}/{name}.json: {e}"));
            Vector {
                wire: parse_hex(&read("hex")),
                json,
                name,
            }
        })
        .collect()
}

/// The three golden checks on every vector of `spec`: the bytes decode to the
/// JSON, the JSON encodes to the bytes, and decode → encode gives the bytes back.
fn check_golden_vectors(spec_name: &str) {
    let spec = load_spec(spec_name);
    let all = vectors(spec_name);
    assert!(!all.is_empty(), "{spec_name}: no vectors");
    for v in &all {
        let at = format!("{spec_name}/{}", v.name);
        let decoded = Message::decode(&spec, Bytes::from(v.wire.clone()))
            .unwrap_or_else(|e| panic!("{at}: decode: {e}"));
        assert_eq!(to_json(&spec, &decoded), v.json, "{at}: decoded JSON");

        let built = from_json(&spec, &v.json).unwrap_or_else(|e| panic!("{at}: from_json: {e}"));
        assert_eq!(
            built, decoded,
            "{at}: JSON and wire give different messages"
        );
        let encoded = built
            .encode(&spec)
            .unwrap_or_else(|e| panic!("{at}: encode from JSON: {e}"));
        assert_eq!(
            hex::encode_upper(&encoded),
            hex::encode_upper(&v.wire),
            "{at}: JSON → wire"
        );

        let again = decoded
            .encode(&spec)
            .unwrap_or_else(|e| panic!("{at}: re-encode: {e}"));
        assert_eq!(
            hex::encode_upper(&again),
            hex::encode_upper(&v.wire),
            "{at}: decode → encode"
        );
    }
}

#[test]
fn every_spec_file_loads_and_defines_every_field_from_2_to_192() {
    let names = spec_names();
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
    for name in &names {
        let spec = load_spec(name);
        assert_eq!(&spec.name, name, "spec name matches its file");
        for n in (2..=192u8).filter(|&n| n != 65) {
            let field = spec.field(n);
            assert!(
                field.is_some_and(|f| !f.name.is_empty()),
                "{name}: field {n}"
            );
        }
        assert!(spec.field(65).is_none(), "{name}: 65 is a bitmap");
        assert!(spec.has_tertiary_bitmap(), "{name}: tertiary bitmap usable");
    }
}

#[test]
fn spec_files_lay_out_the_iso_fields_as_agreed() {
    let field = |spec: &Spec, n: u8| spec.field(n).cloned().expect("defined");
    for name in [
        "iso87ascii",
        "iso87ascii-hexbitmap",
        "iso87bcd",
        "iso87ebcdic",
    ] {
        let spec = load_spec(name);
        for (n, max) in [(52, 8), (64, 8), (96, 8), (128, 8)] {
            let f = field(&spec, n);
            assert_eq!(
                (f.class, f.length, f.max),
                (ContentClass::B, LengthKind::Fixed, max)
            );
        }
        let icc = field(&spec, 55);
        assert_eq!(
            (icc.class, icc.length, icc.max),
            (ContentClass::B, LengthKind::LLL, 255)
        );
        let f53 = field(&spec, 53);
        assert_eq!((f53.class, f53.max), (ContentClass::N, 16));
        assert_eq!(field(&spec, 90).max, 42);
        assert_eq!(field(&spec, 70).max, 3);
        assert_eq!(field(&spec, 35).class, ContentClass::Z);
        assert_eq!(field(&spec, 28).class, ContentClass::XN);
    }
    let ascii = load_spec("iso87ascii");
    assert_eq!(ascii.bitmap_encoding, Encoding::Binary);
    assert_eq!(field(&ascii, 53).encoding, Encoding::Ascii);
    assert_eq!(field(&ascii, 55).encoding, Encoding::Binary);

    let hexmap = load_spec("iso87ascii-hexbitmap");
    assert_eq!(hexmap.bitmap_encoding, Encoding::Hex);
    assert_eq!(field(&hexmap, 52).encoding, Encoding::Hex);

    let bcd = load_spec("iso87bcd");
    assert_eq!(bcd.mti_encoding, Encoding::Bcd);
    assert_eq!(field(&bcd, 2).bcd_filler, BcdFiller::Left);
    assert_eq!(field(&bcd, 35).bcd_filler, BcdFiller::RightF);
    assert_eq!(field(&bcd, 2).prefix, Encoding::Bcd);
    assert_eq!(field(&bcd, 43).encoding, Encoding::Ascii);

    let ebcdic = load_spec("iso87ebcdic");
    assert_eq!(ebcdic.mti_encoding, Encoding::Ebcdic);
    assert_eq!(field(&ebcdic, 2).prefix, Encoding::Ebcdic);
    assert_eq!(field(&ebcdic, 52).encoding, Encoding::Binary);

    let iso93 = load_spec("iso93ascii");
    for (n, class, length, max) in [
        (12, ContentClass::N, LengthKind::Fixed, 12),
        (22, ContentClass::An, LengthKind::Fixed, 12),
        (24, ContentClass::N, LengthKind::Fixed, 3),
        (25, ContentClass::N, LengthKind::Fixed, 4),
        (39, ContentClass::N, LengthKind::Fixed, 3),
        (43, ContentClass::Ans, LengthKind::LL, 99),
        (55, ContentClass::B, LengthKind::LLL, 255),
        (56, ContentClass::N, LengthKind::LL, 35),
    ] {
        let f = field(&iso93, n);
        assert_eq!(
            (f.class, f.length, f.max),
            (class, length, max),
            "iso93 field {n}"
        );
    }
}

#[test]
fn every_spec_has_golden_vectors_for_the_messages_the_switch_handles() {
    for name in spec_names() {
        let spec = load_spec(&name);
        let messages: Vec<(String, Message)> = vectors(&name)
            .into_iter()
            .map(|v| {
                let msg = Message::decode_slice(&spec, &v.wire)
                    .unwrap_or_else(|e| panic!("{name}/{}: {e}", v.name));
                (v.name, msg)
            })
            .collect();
        let with = |mti: &str| messages.iter().find(|(_, m)| m.mti().as_str() == mti);
        // 1993 has its own MTIs; its original data elements are field 56 and
        // its network management code is the function code in field 24.
        let iso93 = name.starts_with("iso93");
        let (auth, financial, reversal, network) = if iso93 {
            (
                ["1100", "1110"],
                "1200",
                ("1420", 56, 30),
                ("1804", 24, "801"),
            )
        } else {
            (
                ["0100", "0110"],
                "0200",
                ("0400", 90, 42),
                ("0800", 70, "001"),
            )
        };
        for mti in auth {
            assert!(with(mti).is_some(), "{name}: no {mti} vector");
        }
        let (_, purchase) = with(financial).expect("a financial request vector");
        let icc = purchase.get(55).expect("the purchase carries field 55");
        let tlvs = emv::parse(icc).unwrap_or_else(|e| panic!("{name}: field 55: {e}"));
        assert!(tlvs.len() > 10, "{name}: a realistic EMV blob");

        let (mti, field, digits) = reversal;
        let (_, rev) = with(mti).unwrap_or_else(|| panic!("{name}: no {mti} vector"));
        assert_eq!(rev.get(field).map(<[u8]>::len), Some(digits), "{name}");

        let (mti, field, code) = network;
        let (_, net) = with(mti).unwrap_or_else(|| panic!("{name}: no {mti} vector"));
        assert_eq!(net.get_str(field), Some(code), "{name}");

        let fields = |m: &Message| m.iter().map(|(n, _)| n).collect::<Vec<u8>>();
        assert!(messages
            .iter()
            .any(|(_, m)| fields(m).iter().any(|&n| (66..=128).contains(&n))));
        assert!(messages
            .iter()
            .any(|(_, m)| fields(m).iter().any(|&n| n > 128)));
        assert!(
            messages
                .iter()
                .any(|(_, m)| fields(m).iter().all(|&n| n <= 64 || n > 128)
                    && fields(m).iter().any(|&n| n > 128)),
            "{name}: a tertiary bitmap behind a secondary that holds only bit 65"
        );
    }
}

#[test]
fn iso87ascii_vectors_decode_to_their_json_and_encode_back_byte_exact() {
    check_golden_vectors("iso87ascii");
}

#[test]
fn iso87ascii_hexbitmap_vectors_decode_to_their_json_and_encode_back_byte_exact() {
    check_golden_vectors("iso87ascii-hexbitmap");
}

#[test]
fn iso87bcd_vectors_decode_to_their_json_and_encode_back_byte_exact() {
    check_golden_vectors("iso87bcd");
}

#[test]
fn iso87ebcdic_vectors_decode_to_their_json_and_encode_back_byte_exact() {
    check_golden_vectors("iso87ebcdic");
}

#[test]
fn iso93ascii_vectors_decode_to_their_json_and_encode_back_byte_exact() {
    check_golden_vectors("iso93ascii");
}

#[test]
fn every_vector_directory_belongs_to_a_spec() {
    let specs = spec_names();
    for entry in fs::read_dir(root().join("tests/vectors")).expect("tests/vectors") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        assert!(
            specs.contains(&name),
            "tests/vectors/{name} has no specs/{name}.toml"
        );
    }
}

// ---- error vectors: one bad input per error kind --------------------------------

fn decode_error(spec: &Spec, wire: &str) -> CodecError {
    match Message::decode_slice(spec, &parse_hex(wire)) {
        Ok(msg) => panic!("expected a decode error, decoded {msg:?}"),
        Err(e) => e,
    }
}

/// Asserts kind, part and offset exactly, and that the message starts with the
/// part, the offset and the kind's text, e.g. `field 2 at byte 14: expected ...`.
fn assert_error(err: &CodecError, part: Part, offset: usize, kind: ErrorKind, text: &str) {
    assert_eq!(err.kind(), &kind, "{err}");
    assert_eq!(err.part(), part, "{err}");
    assert_eq!(err.offset(), offset, "{err}");
    let field = match part {
        Part::Field(n) => Some(n),
        _ => None,
    };
    assert_eq!(err.field(), field);
    let shown = err.to_string();
    assert!(
        shown.starts_with(text),
        "{shown:?} should start with {text:?}"
    );
}

/// The spec `name` with only the fields `keep` says yes to.
fn spec_without(name: &str, keep: impl Fn(u8) -> bool) -> Spec {
    let mut file = load_spec(name).to_file();
    file.fields
        .retain(|key, _| key.parse::<u8>().map(&keep).unwrap_or(true));
    Spec::compile(file, "trimmed").expect("a trimmed spec is still valid")
}

#[test]
fn a_message_cut_short_inside_the_pan_is_truncated_at_the_pan() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30313030                 # MTI 0100
         4000000000000000         # bitmap: field 2
         3136                     # LL = 16
         3437363137333930303130313031   # only 14 digits",
    );
    let kind = ErrorKind::Truncated {
        expected: 16,
        available: 14,
    };
    let text = "field 2 at byte 14: expected 16 more bytes, found 14";
    assert_error(&err, Part::Field(2), 14, kind, text);
}

#[test]
fn a_length_prefix_with_a_letter_is_a_bad_length_prefix() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30313030 4000000000000000
         3141                     # LL = '1A'
         34373631373339303031303130313139",
    );
    let kind = ErrorKind::BadLengthPrefix {
        digits: 2,
        found: "\"1A\"".into(),
    };
    let text = "field 2 at byte 12: expected a 2-digit length prefix, found \"1A\"";
    assert_error(&err, Part::Field(2), 12, kind, text);
}

#[test]
fn an_ebcdic_length_prefix_with_a_letter_is_a_bad_length_prefix() {
    let err = decode_error(
        &load_spec("iso87ebcdic"),
        "F0F1F0F0 4000000000000000
         F1C1                     # LL = '1A' in EBCDIC
         F4F7F6F1F7F3F9F0F0F1F0F1F0F1F1F9",
    );
    let kind = ErrorKind::BadLengthPrefix {
        digits: 2,
        found: "0xF1C1".into(),
    };
    let text = "field 2 at byte 12: expected a 2-digit length prefix, found 0xF1C1";
    assert_error(&err, Part::Field(2), 12, kind, text);
}

#[test]
fn a_pan_length_over_19_is_too_long_at_the_prefix() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30313030 4000000000000000
         3230                     # LL = 20, max 19
         3437363137333930303130313031313930303030",
    );
    let kind = ErrorKind::TooLong {
        length: 20,
        max: 19,
    };
    assert_error(
        &err,
        Part::Field(2),
        12,
        kind,
        "field 2 at byte 12: length 20 is over the maximum 19",
    );
}

#[test]
fn a_bcd_lll_prefix_over_the_icc_maximum_is_too_long() {
    let err = decode_error(
        &load_spec("iso87bcd"),
        "0200 0000000000000200     # MTI, bitmap: field 55
         0256                      # LLL = 256, max 255
         9F2701",
    );
    let kind = ErrorKind::TooLong {
        length: 256,
        max: 255,
    };
    assert_error(
        &err,
        Part::Field(55),
        10,
        kind,
        "field 55 at byte 10: length 256 is over the maximum 255",
    );
}

#[test]
fn encoding_a_value_longer_than_the_field_is_too_long() {
    let mut msg = Message::new(Mti::from_static("0100"));
    msg.set(3, "0000001").expect("data field");
    let err = msg
        .encode(&load_spec("iso87ascii"))
        .expect_err("7 digits in n 6");
    assert_eq!(err.direction(), Direction::Encode);
    let kind = ErrorKind::TooLong { length: 7, max: 6 };
    assert_error(
        &err,
        Part::Field(3),
        6,
        kind,
        "field 3 value byte 6: length 7 is over the maximum 6",
    );
}

#[test]
fn encoding_a_short_pin_block_is_the_wrong_length() {
    let mut msg = Message::new(Mti::from_static("0200"));
    msg.set(52, [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD])
        .expect("data field");
    for name in spec_names() {
        let err = msg.encode(&load_spec(&name)).expect_err("7 bytes in b 8");
        assert_eq!(err.direction(), Direction::Encode);
        let kind = ErrorKind::WrongLength {
            length: 7,
            expected: 8,
        };
        let text = "field 52 value byte 7: length 7 is not the fixed length 8";
        assert_error(&err, Part::Field(52), 7, kind, text);
    }
}

#[test]
fn a_letter_in_the_processing_code_is_invalid_content_at_that_byte() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30313030 2000000000000000 # field 3
         303041303030             # '00A000'",
    );
    let kind = ErrorKind::InvalidContent {
        class: ContentClass::N,
        found: b'A',
    };
    let text = "field 3 at byte 14: expected a digit 0-9, found 0x41 'A'";
    assert_error(&err, Part::Field(3), 14, kind, text);
}

#[test]
fn an_x_plus_n_amount_without_its_sign_is_invalid_content() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30313030 0000001000000000 # field 28
         303030303030313530        # '000000150': no C/D sign",
    );
    let kind = ErrorKind::InvalidContent {
        class: ContentClass::XN,
        found: b'0',
    };
    let text = "field 28 at byte 12: expected 'C' or 'D' then digits, found 0x30 '0'";
    assert_error(&err, Part::Field(28), 12, kind, text);
}

#[test]
fn encoding_an_empty_x_plus_n_amount_is_invalid_content_not_a_panic() {
    let mut msg = Message::new(Mti::from_static("0200"));
    msg.set(28, "").expect("data field");
    // Field 28 is x+n 8 in 1987; in 1993 it is a date.
    for name in [
        "iso87ascii",
        "iso87ascii-hexbitmap",
        "iso87bcd",
        "iso87ebcdic",
    ] {
        let err = msg
            .encode(&load_spec(name))
            .expect_err("no sign, no digits");
        let kind = ErrorKind::InvalidContent {
            class: ContentClass::XN,
            found: 0,
        };
        let text = "field 28 value byte 0: expected 'C' or 'D' then digits, found 0x00";
        assert_error(&err, Part::Field(28), 0, kind, text);
    }
}

#[test]
fn a_non_digit_nibble_in_a_bcd_field_is_invalid_bcd() {
    let err = decode_error(
        &load_spec("iso87bcd"),
        "0100 2000000000000000     # MTI, bitmap: field 3
         000A00                    # nibble A in byte 1",
    );
    let kind = ErrorKind::InvalidBcd { nibble: 0xA };
    let text = "field 3 at byte 11: expected a BCD digit, found nibble A";
    assert_error(&err, Part::Field(3), 11, kind, text);
}

#[test]
fn an_odd_bcd_pan_with_a_nonzero_left_nibble_is_a_bad_filler() {
    let err = decode_error(
        &load_spec("iso87bcd"),
        "0100 4000000000000000
         19                        # LL = 19 digits
         16799990100000000019      # left filler nibble 1, not 0",
    );
    let kind = ErrorKind::BadFiller {
        expected: 0,
        found: 1,
    };
    let text = "field 2 at byte 11: expected filler nibble 0, found 1";
    assert_error(&err, Part::Field(2), 11, kind, text);
}

#[test]
fn an_odd_bcd_track2_without_its_f_filler_is_a_bad_filler() {
    let err = decode_error(
        &load_spec("iso87bcd"),
        "0100 0000000020000000     # field 35
         33                        # LL = 33 digits
         4761739001010119D251220111438044 10   # right filler 0, not F",
    );
    let kind = ErrorKind::BadFiller {
        expected: 0xF,
        found: 0,
    };
    let text = "field 35 at byte 27: expected filler nibble F, found 0";
    assert_error(&err, Part::Field(35), 27, kind, text);
}

#[test]
fn a_non_hex_character_in_a_hex_bitmap_is_invalid_hex() {
    let err = decode_error(
        &load_spec("iso87ascii-hexbitmap"),
        "30313030
         3247303030303030 3030303030303030   # '2G00000000000000'",
    );
    let kind = ErrorKind::InvalidHex { found: b'G' };
    let text = "primary bitmap at byte 5: expected a hex character 0-9/A-F, found 0x47 'G'";
    assert_error(&err, Part::Bitmap(1), 5, kind, text);
}

#[test]
fn a_non_hex_character_in_a_hex_pin_block_is_invalid_hex() {
    let err = decode_error(
        &load_spec("iso87ascii-hexbitmap"),
        "30313030
         3030303030303030 3030303031303030   # '0000000000001000': field 52
         30313233343536373839414243444547    # '0123456789ABCDEG'",
    );
    let kind = ErrorKind::InvalidHex { found: b'G' };
    let text = "field 52 at byte 35: expected a hex character 0-9/A-F, found 0x47 'G'";
    assert_error(&err, Part::Field(52), 35, kind, text);
}

#[test]
fn an_unmapped_byte_in_ebcdic_text_is_invalid_ebcdic() {
    let err = decode_error(
        &load_spec("iso87ebcdic"),
        "F0F1F0F0 0000000000800000 # field 41
         E3C5D9D400F0F0F1          # 'TERM' then 0x00",
    );
    let kind = ErrorKind::InvalidEbcdic { found: 0x00 };
    let text = "field 41 at byte 16: expected an EBCDIC character that maps to printable ASCII, found 0x00";
    assert_error(&err, Part::Field(41), 16, kind, text);
}

#[test]
fn an_mti_with_a_letter_is_a_bad_mti() {
    let err = decode_error(&load_spec("iso87ascii"), "30314130 0000000000000000");
    let kind = ErrorKind::BadMti {
        found: "30314130".into(),
    };
    assert_error(
        &err,
        Part::Mti,
        0,
        kind,
        "MTI at byte 0: expected four digits, found 30314130",
    );
}

#[test]
fn a_bcd_mti_with_a_non_digit_nibble_is_a_bad_mti() {
    let err = decode_error(&load_spec("iso87bcd"), "0A00 0000000000000000");
    let kind = ErrorKind::BadMti {
        found: "0A00".into(),
    };
    assert_error(
        &err,
        Part::Mti,
        0,
        kind,
        "MTI at byte 0: expected four digits, found 0A00",
    );
}

#[test]
fn a_bit_for_a_field_the_spec_lacks_is_an_undefined_field_at_its_bitmap_byte() {
    let spec = spec_without("iso87ascii", |n| n != 100);
    let err = decode_error(
        &spec,
        "30313030 8000000000000000 # MTI, primary: secondary present
         0000000010000000          # secondary: field 100 (byte 4 of it)
         3036343132333435          # field 100 would be LL 06 '412345'",
    );
    let text = "field 100 at byte 16: bit is set but the spec defines no such field";
    assert_error(&err, Part::Field(100), 16, ErrorKind::UndefinedField, text);

    let spec = spec_without("iso87ascii-hexbitmap", |n| n != 100);
    let err = decode_error(
        &spec,
        "30313030 38303030303030303030303030303030
         30303030303030303130303030303030   # '0000000010000000'
         3036343132333435",
    );
    let text = "field 100 at byte 28: bit is set but the spec defines no such field";
    assert_error(&err, Part::Field(100), 28, ErrorKind::UndefinedField, text);
}

#[test]
fn encoding_a_field_the_spec_lacks_is_an_undefined_field() {
    let spec = spec_without("iso87ascii", |n| n != 48);
    let mut msg = Message::new(Mti::from_static("0100"));
    msg.set(48, "PRIVATE").expect("data field");
    let err = msg.encode(&spec).expect_err("no field 48");
    let text = "field 48 value byte 0: bit is set but the spec defines no such field";
    assert_error(&err, Part::Field(48), 0, ErrorKind::UndefinedField, text);
}

#[test]
fn bit_65_without_fields_above_128_is_no_tertiary_bitmap() {
    let spec = spec_without("iso87ascii", |n| n <= 128);
    assert!(!spec.has_tertiary_bitmap());
    let err = decode_error(
        &spec,
        "30313030 8000000000000000
         8000000000000000          # secondary: only bit 65
         0000040000000000",
    );
    let text = "secondary bitmap at byte 12: bit 65 is set but the spec has no tertiary bitmap";
    assert_error(&err, Part::Bitmap(2), 12, ErrorKind::NoTertiaryBitmap, text);
}

#[test]
fn bytes_after_the_last_field_are_trailing_bytes() {
    let err = decode_error(
        &load_spec("iso87ascii"),
        "30383030 0020000000000000 # 0800, field 11
         303030303031              # STAN 000001
         0D0A                      # two stray bytes",
    );
    let kind = ErrorKind::TrailingBytes { count: 2 };
    let text = "message at byte 18: 2 bytes left over after the last field";
    assert_error(&err, Part::Message, 18, kind, text);
}
