//! Composite fields against tests/fixtures/specs/composite-iso87ascii.toml: tlv
//! (48), positional with a nested tlv (60), BCD and binary inside a `b` field
//! (62), a subfield bitmap (126). Wire bytes are written out by hand here, not
//! produced by the encoder, and every error is checked for its path and offset.

use std::path::Path;

use bytes::Bytes;
use isoswitch::iso8583::json::{from_json_str, to_json};
use isoswitch::iso8583::{Composite, Message, Mti, Spec, SubValue};

fn spec() -> Spec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/specs/composite-iso87ascii.toml");
    Spec::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const MTI: &[u8] = b"0100";
/// Primary bitmaps with field 3 and one of 48, 60, 62.
const BITMAP_3_48: &[u8] = &[0x20, 0, 0, 0, 0, 0x01, 0, 0];
const BITMAP_3_60: &[u8] = &[0x20, 0, 0, 0, 0, 0, 0, 0x10];
const BITMAP_3_62: &[u8] = &[0x20, 0, 0, 0, 0, 0, 0, 0x04];
const FIELD_3: &[u8] = b"000000";

fn decode(spec: &Spec, wire: Vec<u8>) -> Message {
    Message::decode(spec, Bytes::from(wire)).unwrap_or_else(|e| panic!("{e}"))
}

fn subfields_error(spec: &Spec, wire: Vec<u8>, n: u8) -> String {
    let msg = decode(spec, wire);
    msg.subfields(spec, n)
        .expect_err("subfields must not decode")
        .to_string()
}

fn assert_starts(text: &str, start: &str) {
    assert!(
        text.starts_with(start),
        "expected {start:?}\n   found {text:?}"
    );
}

#[test]
fn a_tlv_field_keeps_its_bytes_and_decodes_its_subfields_when_asked() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_48,
        FIELD_3,
        b"020",
        b"2205ABCDE",
        b"42071234567",
    ]);
    let msg = decode(&spec, wire.clone());
    assert_eq!(msg.get(48), Some(&b"2205ABCDE42071234567"[..]));
    let subfields = msg.subfields(&spec, 48).expect("decodes").expect("present");
    let ids: Vec<&str> = subfields.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["22", "42"]);
    assert_eq!(subfields.value("22"), Some(&b"ABCDE"[..]));
    assert_eq!(subfields.value("42"), Some(&b"1234567"[..]));
    assert_eq!(msg.encode(&spec).expect("encodes"), wire);

    let mut built = Message::new(Mti::from_static("0100"));
    built.set(3, "000000").expect("field");
    let value = Composite::new().with("22", "ABCDE").with("42", "1234567");
    built
        .set_subfields(&spec, 48, &value)
        .expect("subfields encode");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);
}

#[test]
fn tlv_tags_decode_in_any_order_and_encode_in_the_order_given() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_48,
        FIELD_3,
        b"020",
        b"42071234567",
        b"2205ABCDE",
    ]);
    let msg = decode(&spec, wire.clone());
    let subfields = msg.subfields(&spec, 48).expect("decodes").expect("present");
    let ids: Vec<&str> = subfields.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["42", "22"]);
    let mut again = Message::new(Mti::from_static("0100"));
    again.set(3, "000000").expect("field");
    again
        .set_subfields(&spec, 48, &subfields)
        .expect("subfields encode");
    assert_eq!(again.encode(&spec).expect("encodes"), wire);
}

#[test]
fn an_unknown_tag_is_named_with_its_byte_offset() {
    let spec = spec();
    let wire = cat(&[MTI, BITMAP_3_48, FIELD_3, b"005", b"9901X"]);
    let text = subfields_error(&spec, wire, 48);
    assert_starts(
        &text,
        "field 48 at byte 21: unknown tag \"99\": expected one of 22, 33, 42",
    );
}

#[test]
fn a_fixed_tlv_subfield_with_another_length_is_refused_at_its_length() {
    let spec = spec();
    let wire = cat(&[MTI, BITMAP_3_48, FIELD_3, b"010", b"4206123456"]);
    let text = subfields_error(&spec, wire, 48);
    assert_starts(
        &text,
        "field 48.42 at byte 23: length 6 is not the fixed length 7",
    );
}

#[test]
fn a_bad_character_in_a_subfield_is_named_by_path_and_message_offset() {
    let spec = spec();
    let wire = cat(&[MTI, BITMAP_3_48, FIELD_3, b"011", b"42071234X67"]);
    let text = subfields_error(&spec, wire, 48);
    assert_starts(
        &text,
        "field 48.42 at byte 29: expected a digit 0-9, found 0x58 'X'",
    );
}

#[test]
fn a_tlv_cut_short_is_truncated_in_its_subfield() {
    let spec = spec();
    let wire = cat(&[MTI, BITMAP_3_48, FIELD_3, b"007", b"2209ABC"]);
    let text = subfields_error(&spec, wire, 48);
    assert_starts(
        &text,
        "field 48.22 at byte 25: expected 9 more bytes, found 3",
    );
}

#[test]
fn a_positional_field_nests_a_tlv_composite() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_60,
        FIELD_3,
        b"019",
        b"21",
        b"5",
        b"14",
        b"0104ABCD0202V1",
    ]);
    let msg = decode(&spec, wire.clone());
    let subfields = msg.subfields(&spec, 60).expect("decodes").expect("present");
    assert_eq!(subfields.value("1"), Some(&b"21"[..]));
    assert_eq!(subfields.value("2"), Some(&b"5"[..]));
    let Some(SubValue::Composite(details)) = subfields.get("3") else {
        panic!("60.3 is a composite: {subfields:?}");
    };
    assert_eq!(details.value("01"), Some(&b"ABCD"[..]));
    assert_eq!(details.value("02"), Some(&b"V1"[..]));

    let mut built = Message::new(Mti::from_static("0100"));
    built.set(3, "000000").expect("field");
    let nested = Composite::new().with("01", "ABCD").with("02", "V1");
    let value = Composite::new()
        .with("1", "21")
        .with("2", "5")
        .with("3", nested);
    built.set_subfields(&spec, 60, &value).expect("encodes");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);
}

#[test]
fn a_nested_subfield_error_reads_as_a_three_part_path() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_60,
        FIELD_3,
        b"019",
        b"21",
        b"5",
        b"14",
        b"0104AB@D0202V1",
    ]);
    let text = subfields_error(&spec, wire, 60);
    assert_starts(
        &text,
        "field 60.3.01 at byte 32: expected a letter, digit or space, found 0x40 '@'",
    );
}

#[test]
fn positional_subfields_may_stop_early_but_not_skip_one() {
    let spec = spec();
    let wire = cat(&[MTI, BITMAP_3_60, FIELD_3, b"002", b"21"]);
    let msg = decode(&spec, wire);
    let subfields = msg.subfields(&spec, 60).expect("decodes").expect("present");
    assert_eq!(subfields.len(), 1);

    let mut built = Message::new(Mti::from_static("0100"));
    let gap = Composite::new().with("1", "21").with("3", "0202V1");
    let text = built
        .set_subfields(&spec, 60, &gap)
        .expect_err("a gap is refused")
        .to_string();
    assert_starts(
        &text,
        "field 60 value byte 0: positional subfields are written in order without gaps: expected 2, found 3",
    );
}

/// Field 62: BCD amount, binary key id, BCD track 2 with a binary LL prefix.
fn packed_62() -> Vec<u8> {
    cat(&[
        MTI,
        BITMAP_3_62,
        FIELD_3,
        b"022",
        &[0x00, 0x00, 0x00, 0x01, 0x23, 0x45],
        &[0xDE, 0xAD, 0xBE, 0xEF],
        &[
            0x15, 0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0xD2, 0x81, 0x2F,
        ],
    ])
}

#[test]
fn bcd_and_binary_subfields_inside_a_binary_field_use_their_own_encodings() {
    let spec = spec();
    let wire = packed_62();
    let msg = decode(&spec, wire.clone());
    let subfields = msg.subfields(&spec, 62).expect("decodes").expect("present");
    assert_eq!(subfields.value("1"), Some(&b"000000012345"[..]));
    assert_eq!(subfields.value("2"), Some(&[0xDE, 0xAD, 0xBE, 0xEF][..]));
    assert_eq!(subfields.value("3"), Some(&b"4111111111111111=2812"[..]));
    assert_eq!(msg.encode(&spec).expect("encodes"), wire);

    // `D` as the separator packs the same; the amount is zero-padded.
    let mut built = Message::new(Mti::from_static("0100"));
    built.set(3, "000000").expect("field");
    let value = Composite::new()
        .with("1", "12345")
        .with("2", vec![0xDE, 0xAD, 0xBE, 0xEF])
        .with("3", "4111111111111111D2812");
    built.set_subfields(&spec, 62, &value).expect("encodes");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);
}

#[test]
fn a_bad_bcd_nibble_in_a_subfield_is_named_at_its_byte() {
    let spec = spec();
    let mut wire = packed_62();
    wire[21] = 0x0A;
    let text = subfields_error(&spec, wire, 62);
    assert_starts(
        &text,
        "field 62.1 at byte 21: expected a BCD digit, found nibble A",
    );
}

/// Field 126 behind the secondary bitmap, with field 3.
fn bitmapped_126(sub_bitmap: [u8; 8], content: &[u8]) -> Vec<u8> {
    let len = format!("{:03}", sub_bitmap.len() + content.len());
    cat(&[
        MTI,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0],
        &[0, 0, 0, 0, 0, 0, 0, 0x04],
        FIELD_3,
        len.as_bytes(),
        &sub_bitmap,
        content,
    ])
}

#[test]
fn a_subfield_bitmap_says_which_subfields_follow() {
    let spec = spec();
    let wire = bitmapped_126([0x00, 0x48, 0, 0, 0, 0, 0, 0], b"11 123C");
    let msg = decode(&spec, wire.clone());
    let subfields = msg
        .subfields(&spec, 126)
        .expect("decodes")
        .expect("present");
    let ids: Vec<&str> = subfields.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["10", "13"]);
    assert_eq!(subfields.value("10"), Some(&b"11 123"[..]));

    // Bits are written by number whatever the order given.
    let mut built = Message::new(Mti::from_static("0100"));
    built.set(3, "000000").expect("field");
    let value = Composite::new().with("13", "C").with("10", "11 123");
    built.set_subfields(&spec, 126, &value).expect("encodes");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);
}

#[test]
fn a_subfield_bit_the_spec_does_not_define_is_named() {
    let spec = spec();
    let wire = bitmapped_126([0x02, 0, 0, 0, 0, 0, 0, 0], b"");
    let text = subfields_error(&spec, wire, 126);
    assert_starts(
        &text,
        "field 126.7 at byte 29: bit is set but the spec defines no such field",
    );
}

#[test]
fn encoding_checks_each_subfield_as_a_field_with_its_path() {
    let spec = spec();
    let mut msg = Message::new(Mti::from_static("0100"));
    let cases = [
        (
            48,
            Composite::new().with("22", "X".repeat(27).as_str()),
            "field 48.22 value byte 26: length 27 is over the maximum 26",
        ),
        (
            48,
            Composite::new().with("42", "12A"),
            "field 48.42 value byte 2: expected a digit 0-9, found 0x41 'A'",
        ),
        (
            48,
            Composite::new().with("77", "x"),
            "field 48.77 value byte 0: the spec defines no such subfield: expected one of 22, 33, 42",
        ),
        (
            126,
            Composite::new().with("9", vec![1, 2, 3]),
            "field 126.9 value byte 3: length 3 is not the fixed length 20",
        ),
        (
            60,
            Composite::new()
                .with("1", "21")
                .with("2", "5")
                .with("3", Composite::new().with("01", "AB@")),
            "field 60.3.01 value byte 2: expected a letter, digit or space",
        ),
        (
            3,
            Composite::new().with("1", "0"),
            "field 3 value byte 0: the spec does not define this field as a composite",
        ),
    ];
    for (n, value, expected) in cases {
        let text = msg
            .set_subfields(&spec, n, &value)
            .expect_err(expected)
            .to_string();
        assert_starts(&text, expected);
    }
    assert!(msg.is_empty(), "a refused composite sets nothing");
}

#[test]
fn json_nests_composites_and_builds_them_back() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_60,
        FIELD_3,
        b"019",
        b"21",
        b"5",
        b"14",
        b"0104ABCD0202V1",
    ]);
    let msg = decode(&spec, wire.clone());
    let json = to_json(&spec, &msg).to_string();
    assert_eq!(
        json,
        r#"{"mti":"0100","fields":{"3":"000000","60":{"1":"21","2":"5","3":{"01":"ABCD","02":"V1"}}}}"#
    );
    let built = from_json_str(&spec, &json).expect("builds");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);

    // A plain string is the composite's raw content.
    let raw = r#"{"mti":"0100","fields":{"3":"000000","60":"215140104ABCD0202V1"}}"#;
    let built = from_json_str(&spec, raw).expect("builds");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);

    let bad = r#"{"mti":"0100","fields":{"60":{"1":"21","4":"x"}}}"#;
    let text = from_json_str(&spec, bad)
        .expect_err("no subfield 4")
        .to_string();
    assert_starts(
        &text,
        "field 60.4: no such subfield: expected one of 1, 2, 3",
    );
}

#[test]
fn binary_subfields_are_hex_in_json() {
    let spec = spec();
    let msg = decode(&spec, packed_62());
    let json = to_json(&spec, &msg);
    assert_eq!(json["fields"]["62"]["2"], "DEADBEEF");
    assert_eq!(json["fields"]["62"]["3"], "4111111111111111=2812");
    let built = from_json_str(&spec, &json.to_string()).expect("builds");
    assert_eq!(built.encode(&spec).expect("encodes"), packed_62());
}

#[test]
fn explain_indents_subfields_under_their_field() {
    let spec = spec();
    let wire = cat(&[
        MTI,
        BITMAP_3_60,
        FIELD_3,
        b"019",
        b"21",
        b"5",
        b"14",
        b"0104ABCD0202V1",
    ]);
    let table = isoswitch::iso8583::explain::explain(&spec, &decode(&spec, wire));
    assert!(table.contains("\n  60.1      Terminal type"), "{table}");
    assert!(table.contains("\n  60.3      Terminal details"), "{table}");
    assert!(table.contains("\n    60.3.01   Chip capability"), "{table}");
    assert!(table.contains("ABCD"), "{table}");
    // A card number inside a subfield is masked like field 2.
    let table = isoswitch::iso8583::explain::explain(&spec, &decode(&spec, packed_62()));
    assert!(!table.contains("4111111111111111"), "{table}");
    assert!(table.contains("411111******1111*****"), "{table}");
}

#[test]
fn the_spec_exports_its_composites_and_loads_back_the_same() {
    let spec = spec();
    let again = Spec::from_toml_str(&spec.to_toml(), "export").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec, again);
}

const BASE: &str = r#"
name = "t"
mti_encoding = "ascii"
bitmap_encoding = "binary"
[defaults]
numeric = "ascii"
text = "ascii"
binary = "binary"
prefix = "ascii"
"#;

fn load_error(fields: &str) -> String {
    Spec::from_toml_str(&format!("{BASE}{fields}"), "t.toml")
        .expect_err("invalid spec")
        .to_string()
}

#[test]
fn spec_errors_name_the_subfield_path() {
    let cases = [
        (
            r#"[fields.48]
name = "x"
length = "LLL"
max = 999
class = "ans"
composite = { layout = "tlv", tag = { width = 2, encoding = "ascii" }, subfields = { "22" = { name = "y", max = 3, class = "ans", encoding = "bcd" } } }"#,
            "t.toml: field 48 subfield 22: class ans cannot use encoding bcd",
        ),
        (
            r#"[fields.127]
name = "x"
length = "LLL"
max = 999
class = "ans"
composite = { layout = "positional", subfields = { "1" = { name = "y", length = "LL", max = 40, class = "ans", composite = { layout = "positional", subfields = { "1" = { name = "z", max = 0, class = "n" } } } } } }"#,
            "t.toml: field 127 subfield 1.1: max: expected a length of at least 1, found 0",
        ),
        (
            r#"[fields.126]
name = "x"
length = "LLL"
max = 999
class = "b"
composite = { layout = "bitmap", bitmap = { bytes = 16, encoding = "binary" }, subfields = { "1" = { name = "y", max = 1, class = "ans" } } }"#,
            "t.toml: field 126 subfield 1: expected a bit number 2..=128 (bit 1 of a 16-byte bitmap",
        ),
        (
            r#"[fields.60]
name = "x"
length = "LLL"
max = 999
class = "ans"
composite = { layout = "positional", subfields = { "1" = { name = "y", max = 1, class = "n" }, "3" = { name = "z", max = 1, class = "n" } } }"#,
            "t.toml: field 60 subfield 3: expected positional subfield ids 1..=2 without gaps",
        ),
        (
            r#"[fields.48]
name = "x"
length = "LLL"
max = 999
class = "ans"
composite = { layout = "tlv", tag = { width = 2, encoding = "ascii" }, subfields = { "123" = { name = "y", max = 3, class = "ans" } } }"#,
            "t.toml: field 48 subfield 123: tag \"123\": expected 2 characters",
        ),
        (
            r#"[fields.48]
name = "x"
length = "LLL"
max = 999
class = "ans"
encoding = "ebcdic"
composite = { layout = "bitmap", subfields = { "2" = { name = "y", max = 3, class = "ans" } } }"#,
            "t.toml: field 48: composite: the bitmap layout needs bitmap",
        ),
        (
            r#"[fields.48]
name = "x"
length = "LLL"
max = 999
class = "ans"
composite = { layout = "tlv", tag = { width = 2, encoding = "ascii" }, value_length = { width = 1, encoding = "ascii" }, subfields = { "22" = { name = "y", length = "LL", max = 20, class = "ans" } } }"#,
            "t.toml: field 48 subfield 22: max 20 does not fit the composite's value_length (at most 9)",
        ),
    ];
    for (fields, expected) in cases {
        assert_starts(&load_error(fields), expected);
    }
}

#[test]
fn a_sixteen_byte_subfield_bitmap_uses_bit_one_for_its_second_half() {
    let spec = Spec::from_toml_str(
        &format!(
            r#"{BASE}
[fields.127]
name = "x"
length = "LLL"
max = 999
class = "b"
composite = {{ layout = "bitmap", bitmap = {{ bytes = 16, encoding = "hex" }}, subfields = {{ "2" = {{ name = "a", max = 1, class = "ans" }}, "70" = {{ name = "b", max = 2, class = "ans" }} }} }}
"#
        ),
        "t.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut msg = Message::new(Mti::from_static("0100"));
    msg.set_subfields(&spec, 127, &Composite::new().with("2", "A"))
        .expect("encodes");
    assert_eq!(msg.get(127), Some(&b"4000000000000000A"[..]));
    let both = Composite::new().with("70", "BB").with("2", "A");
    msg.set_subfields(&spec, 127, &both).expect("encodes");
    assert_eq!(
        msg.get(127),
        Some(&b"C0000000000000000400000000000000ABB"[..])
    );
    let wire = msg.encode(&spec).expect("encodes");
    let decoded = Message::decode(&spec, Bytes::from(wire)).expect("decodes");
    let subfields = decoded
        .subfields(&spec, 127)
        .expect("decodes")
        .expect("present");
    assert_eq!(subfields.value("70"), Some(&b"BB"[..]));
    assert_eq!(subfields.len(), 2);
}

#[test]
fn whole_message_checks_decode_every_composite() {
    let spec = spec();
    let good = decode(&spec, packed_62());
    good.check_subfields(&spec).expect("subfields decode");
    let bad = decode(&spec, cat(&[MTI, BITMAP_3_48, FIELD_3, b"005", b"9901X"]));
    let err = bad.check_subfields(&spec).expect_err("unknown tag");
    assert_eq!(err.field(), Some(48));
    assert_eq!(err.offset(), 21);
}
