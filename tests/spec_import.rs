//! Specs imported from jPOS and moov decode the bytes those libraries write:
//! each message below is built by hand from the other library's source (its
//! prefixer, interpreter and padder), decoded with the imported spec, compared
//! with the value the other library reads, and encoded back byte for byte.
//! Also: every problem of a file comes out in one run of `spec import`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use isoswitch::iso8583::import::{from_bytes, from_jpos_xml, from_moov_json, Imported};
use isoswitch::iso8583::spec::{ContentClass, Encoding, LengthKind};
use isoswitch::iso8583::{Message, Spec};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    let path = root().join("tests/fixtures/specs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn imported_jpos(name: &str) -> Imported {
    from_jpos_xml(&fixture(name), name).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn imported_moov(name: &str) -> Imported {
    from_moov_json(&fixture(name), name).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

/// A binary primary bitmap with `fields` (all 2..=64) set.
fn binary_bitmap(fields: &[u8]) -> [u8; 8] {
    let mut word = 0u64;
    for &n in fields {
        word |= 1 << (64 - u32::from(n));
    }
    word.to_be_bytes()
}

/// EBCDIC (code page 037) for digits and upper-case letters.
fn ebcdic(text: &str) -> Vec<u8> {
    text.bytes()
        .map(|b| match b {
            b'0'..=b'9' => 0xF0 + (b - b'0'),
            b'A'..=b'I' => 0xC1 + (b - b'A'),
            b'J'..=b'R' => 0xD1 + (b - b'J'),
            b'S'..=b'Z' => 0xE2 + (b - b'S'),
            other => panic!("no EBCDIC for {other:?} in this helper"),
        })
        .collect()
}

/// Decodes `wire`, checks it encodes back to the same bytes, returns it.
fn decode_both_ways(spec: &Spec, wire: &[u8]) -> Message {
    let msg = Message::decode_slice(spec, wire).unwrap_or_else(|e| panic!("decode: {e}"));
    let again = msg.encode(spec).unwrap_or_else(|e| panic!("encode: {e}"));
    assert_eq!(again, wire, "re-encodes byte for byte");
    msg
}

#[test]
fn jpos_classes_decode_the_bytes_jpos_writes() {
    let spec = imported_jpos("jpos-classes.xml").spec;
    let mut wire = b"0100".to_vec();
    wire.extend(binary_bitmap(&[2, 4, 44, 45, 46, 48, 49, 53, 60, 61]));
    // 2 IFEB_LLNUM: EBCDIC count of BCD bytes, odd digits end in an F nibble.
    wire.extend(ebcdic("08"));
    wire.extend([0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x01, 0x1F]);
    // 4 IFB_AMOUNT2003: 16 BCD digits (currency 840, exponent 2, amount 1000).
    wire.extend([0x84, 0x02, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00]);
    // 44 IFB_LLHECHAR: one binary length byte, EBCDIC text.
    wire.push(5);
    wire.extend(ebcdic("HELLO"));
    // 45 IFA_FLLCHAR length 10: ASCII LL with the real length, space-filled to 10.
    wire.extend(b"05ABCDE     ");
    // 46 IFA_FLLNUM length 6.
    wire.extend(b"03123   ");
    // 48 IFEP_LLCHAR: LL counts the 2-digit field number and the text.
    wire.extend(b"0548XYZ");
    // 49 IF_ECHAR: fixed EBCDIC.
    wire.extend(ebcdic("840"));
    // 53 IFE_LLBINARY: EBCDIC LL, raw bytes.
    wire.extend(ebcdic("03"));
    wire.extend([0x01, 0x02, 0x03]);
    // 60 IFA_LLLLLCHAR, 61 IFA_LLLLLLBINARY: 5 and 6 ASCII length digits.
    wire.extend(b"00003ABC");
    wire.extend(b"000002");
    wire.extend([0xFF, 0x00]);

    let msg = decode_both_ways(&spec, &wire);
    let bcd_pan = [0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x01, 0x1F];
    assert_eq!(msg.get(2), Some(&bcd_pan[..]), "jPOS: 476173900101011");
    assert_eq!(msg.get_str(4), Some("8402000000001000"));
    assert_eq!(msg.get_str(44), Some("HELLO"));
    assert_eq!(msg.get_str(45), Some("05ABCDE     "), "jPOS: ABCDE");
    assert_eq!(msg.get_str(46), Some("03123   "), "jPOS: 123");
    assert_eq!(msg.get_str(48), Some("48XYZ"), "jPOS: XYZ as field 48");
    assert_eq!(msg.get_str(49), Some("840"));
    assert_eq!(msg.get(53), Some(&[1u8, 2, 3][..]));
    assert_eq!(msg.get_str(60), Some("ABC"));
    assert_eq!(msg.get(61), Some(&[0xFFu8, 0x00][..]));
}

#[test]
fn jpos_ebcdic_hex_classes_decode_the_bytes_jpos_writes() {
    let spec = imported_jpos("jpos-ebcdic-hex.xml").spec;
    assert_eq!(spec.bitmap_encoding, Encoding::EbcdicHex);
    let layout = |n: u8| spec.field(n).map(|f| (f.class, f.encoding));
    assert_eq!(layout(52), Some((ContentClass::B, Encoding::EbcdicHex)));
    assert_eq!(layout(55), Some((ContentClass::B, Encoding::Binary)));
    // MTI, then IFE_BITMAP: both bitmaps (bits 1, 2, 4, 52, 55 | 96) as 32
    // EBCDIC hex digits, as ISOUtil.asciiToEbcdic(hexString(bitmap)) writes.
    let mut wire = ebcdic("0200");
    wire.extend(ebcdic("D000000000001200"));
    wire.extend(ebcdic("0000000100000000"));
    wire.extend(ebcdic("16"));
    wire.extend(ebcdic("4761739001010119"));
    wire.extend(ebcdic("000000001000"));
    // 52 IFE_BINARY 8: EbcdicHexInterpreter, two EBCDIC digits a byte.
    wire.extend(ebcdic("0123456789ABCDEF"));
    // 55 IFE_LLBINARY: EBCDIC LL, then the bytes as they are.
    wire.extend(ebcdic("03"));
    wire.extend([0x9F, 0x26, 0x00]);
    wire.extend(ebcdic("FEDCBA9876543210"));
    let msg = decode_both_ways(&spec, &wire);
    assert_eq!(msg.mti().as_str(), "0200");
    assert_eq!(msg.get(2), Some(&b"4761739001010119"[..]));
    assert_eq!(
        msg.get(52),
        Some(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF][..])
    );
    assert_eq!(msg.get(55), Some(&[0x9F, 0x26, 0x00][..]));
    assert_eq!(msg.get(96).map(<[u8]>::len), Some(8));

    // An ASCII digit where an EBCDIC hex digit belongs: named by field and byte.
    let at = wire.len() - 16 - 5 - 16 + 3;
    wire[at] = b'3';
    let err = Message::decode_slice(&spec, &wire).expect_err("ASCII is not EBCDIC hex");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "field 52 at byte {at}: expected an EBCDIC hex digit"
        )),
        "{text}"
    );
    assert!(text.contains("found 0x33"), "{text}");
}

#[test]
fn a_two_byte_ebcdic_hex_subfield_bitmap_reads_and_writes_its_subfields() {
    // As iso93ebcdic-custom.xml's field 44: IFE_BITMAP length 2, bit 1 ordinary.
    let toml = r#"name = "short"
mti_encoding = "ascii"
bitmap_encoding = "binary"
[defaults]
numeric = "ascii"
text = "ebcdic"
binary = "binary"
prefix = "ascii"
[fields.48]
name = "x"
length = "LLL"
max = 99
class = "ans"
composite = { layout = "bitmap", bitmap = { bytes = 2, encoding = "ebcdic-hex" }, subfields = { "1" = { name = "a", max = 1, class = "ans" }, "16" = { name = "b", max = 2, class = "ans" } } }
"#;
    let spec = Spec::from_toml_str(toml, "short.toml").expect("valid spec");
    let mut wire = b"0100".to_vec();
    wire.extend(binary_bitmap(&[48]));
    wire.extend(b"007");
    wire.extend(ebcdic("8001")); // bits 1 and 16
    wire.extend(ebcdic("ABC"));
    let msg = decode_both_ways(&spec, &wire);
    let subs = msg.subfields(&spec, 48).expect("decodes").expect("present");
    assert!(subs.get("1") == Some(&"A".into()));
    assert!(subs.get("16") == Some(&"BC".into()));
    let mut built = Message::new(msg.mti());
    built.set_subfields(&spec, 48, &subs).expect("encodes");
    assert_eq!(built.encode(&spec).expect("encodes"), wire);
}

#[test]
fn jpos_classes_get_the_layouts_that_read_those_bytes() {
    let imported = imported_jpos("jpos-classes.xml");
    let spec = &imported.spec;
    let layout = |n: u8| {
        let f = spec
            .field(n)
            .unwrap_or_else(|| panic!("field {n} imported"));
        (f.length, f.max, f.class, f.encoding, f.prefix_len())
    };
    use ContentClass::{Ans, B, N};
    use Encoding::{Ascii, Bcd, Binary, Ebcdic};
    use LengthKind::{Fixed, LL, LLLLL, LLLLLL};
    assert_eq!(layout(2), (LL, 10, B, Binary, 2));
    assert_eq!(layout(4), (Fixed, 16, N, Bcd, 0));
    assert_eq!(layout(44), (LL, 25, Ans, Ebcdic, 1));
    assert_eq!(layout(45), (Fixed, 12, Ans, Ascii, 0));
    assert_eq!(layout(48), (LL, 22, Ans, Ascii, 2));
    assert_eq!(layout(49), (Fixed, 3, Ans, Ebcdic, 0));
    assert_eq!(layout(53), (LL, 16, B, Binary, 2));
    assert_eq!(layout(60), (LLLLL, 65_535, Ans, Ascii, 5));
    assert_eq!(layout(61), (LLLLLL, 65_535, B, Binary, 6));
    assert!(spec.field(47).is_none(), "IF_NOP has nothing to import");
    assert_eq!(spec.field(44).map(|f| f.prefix), Some(Binary));
    assert_eq!(spec.field(53).map(|f| f.prefix), Some(Ebcdic));

    let warnings: Vec<String> = imported.warnings.iter().map(|w| w.to_string()).collect();
    let about = |needle: &str| warnings.iter().filter(|w| w.contains(needle)).count();
    assert_eq!(about("headerLength=\"5\""), 1, "{warnings:#?}");
    assert_eq!(about("<isofieldvalidator> ignored"), 1, "{warnings:#?}");
    for class in [
        "IFEB_LLNUM",
        "IFB_AMOUNT2003",
        "IFA_FLLCHAR",
        "IFA_FLLNUM",
        "IF_NOP",
        "IFEP_LLCHAR",
    ] {
        assert_eq!(about(&format!("org.jpos.iso.{class})")), 1, "{warnings:#?}");
    }
    assert_eq!(about("lowered to 65535"), 2, "{warnings:#?}");
    assert_eq!(warnings.len(), 10, "{warnings:#?}");
    assert!(warnings
        .iter()
        .all(|w| w.starts_with("jpos-classes.xml:") && !w.contains('\n')));
}

#[test]
fn every_problem_of_a_jpos_file_is_reported_in_one_run() {
    let failed = from_jpos_xml(&fixture("jpos-problems.xml"), "p.xml")
        .map(|_| ())
        .expect_err("refused");
    let lines: Vec<String> = failed.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "p.xml:7: field 3: jPOS class \"org.jpos.iso.IFA_NUMBER\" is not supported \
             (`isoswitch spec import --help` lists the supported classes)",
            "p.xml:8: field 11: missing attribute `length`",
            "p.xml:9: field 28 (class org.jpos.iso.IFA_AMOUNT): length: expected at least 2 \
             (the C/D sign and one digit), found 1",
            "p.xml:16: field 48.1: jPOS class \"org.jpos.iso.IFA_NUMBER\" is not supported \
             (`isoswitch spec import --help` lists the supported classes)",
            "p.xml:18: field 52: jPOS class \"org.jpos.iso.IFE_LLLEBINARY\" is not supported \
             (`isoswitch spec import --help` lists the supported classes)",
        ]
    );
    assert_eq!(failed.warnings.len(), 2, "{:?}", failed.warnings);
}

#[test]
fn spec_check_problems_name_the_line_and_class_of_every_field() {
    let xml = fixture("jpos-iso87ascii.xml").replacen(
        "org.jpos.iso.IFA_LLNUM\"",
        "org.jpos.iso.IFA_LLNUM\" pad=\"x\"",
        1,
    );
    let failed = from_jpos_xml(&xml, "a.xml")
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(failed.problems.len(), 1, "{failed}");
    assert!(failed.to_string().contains("pad: expected true or false"));

    // Two fields the spec check refuses (an ASCII LLLLL prefix is fine, but
    // not a BCD one) are both named, with their lines and classes.
    let body = r#"<isopackager>
<isofield id="0" length="4" name="MTI" class="org.jpos.iso.IFA_NUMERIC"/>
<isofield id="1" length="16" name="BITMAP" class="org.jpos.iso.IFB_BITMAP"/>
<isofield id="3" length="0" name="ZERO" class="org.jpos.iso.IFA_NUMERIC"/>
<isofield id="4" length="0" name="ZERO TOO" class="org.jpos.iso.IF_CHAR"/>
</isopackager>"#;
    let failed = from_jpos_xml(body, "z.xml")
        .map(|_| ())
        .expect_err("refused");
    let lines: Vec<String> = failed.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "z.xml:4: field 3 (class org.jpos.iso.IFA_NUMERIC): max: expected a length of at least 1, found 0",
            "z.xml:5: field 4 (class org.jpos.iso.IF_CHAR): max: expected a length of at least 1, found 0",
        ]
    );
}

#[test]
fn moov_hex_encodings_hex_prefixes_and_track2_decode_the_bytes_moov_writes() {
    let imported = imported_moov("moov-hex-track2.json");
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let spec = imported.spec;
    assert_eq!(spec.bitmap_encoding, Encoding::Hex);
    assert_eq!(spec.field(35).map(|f| f.class), Some(ContentClass::Z));
    assert_eq!(
        spec.field(52).map(|f| (f.class, f.encoding)),
        Some((ContentClass::B, Encoding::Hex))
    );
    assert_eq!(
        spec.field(55).map(|f| (f.length, f.prefix_len())),
        Some((LengthKind::LLL, 4))
    );
    assert_eq!(
        spec.field(62).map(|f| (f.length, f.prefix_len())),
        Some((LengthKind::LL, 2))
    );

    let mut wire = b"0100".to_vec();
    let bitmap: String = binary_bitmap(&[2, 35, 52, 55, 62])
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    wire.extend(bitmap.as_bytes());
    wire.extend(b"164761739001010119");
    wire.extend(b"214000340000000506=2512");
    // Hex field, BytesToASCIIHex, Hex.Fixed 8: 8 bytes as 16 hex characters.
    wire.extend(b"0123456789ABCDEF");
    // Hex.LL: the two length bytes as four hex characters.
    wire.extend(b"0003");
    wire.extend([0x9F, 0x02, 0x01]);
    // Hex.L: one length byte as two hex characters (11 = 0B).
    wire.extend(b"0BHELLO WORLD");

    let msg = decode_both_ways(&spec, &wire);
    assert_eq!(msg.get_str(35), Some("4000340000000506=2512"));
    let pin = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
    assert_eq!(msg.get(52), Some(&pin[..]));
    assert_eq!(msg.get(55), Some(&[0x9Fu8, 0x02, 0x01][..]));
    assert_eq!(msg.get_str(62), Some("HELLO WORLD"));

    // A hex length prefix with a character that is not hex names the field.
    let mut bad = wire.clone();
    let at = bad.len() - 13;
    bad[at] = b'G';
    let err = Message::decode_slice(&spec, &bad).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("field 62"), "{text}");
    assert!(text.contains("\"GB\""), "the prefix as text: {text}");
}

#[test]
fn moovs_first_json_format_imports_like_the_current_one() {
    let old = imported_moov("moov-field000.json").spec;
    let current = r#"{"name": "x", "fields": {
        "0": {"type": "String", "length": 4, "enc": "ASCII", "prefix": "ASCII.Fixed"},
        "1": {"type": "Bitmap", "length": 16, "enc": "HexToASCII", "prefix": "Hex.Fixed"},
        "2": {"type": "String", "length": 19, "enc": "ASCII", "prefix": "ASCII.LL"},
        "3": {"type": "Numeric", "length": 6, "enc": "ASCII", "prefix": "ASCII.Fixed",
              "padding": {"type": "Left", "pad": "0"}},
        "52": {"type": "String", "length": 8, "enc": "HexToASCII", "prefix": "Hex.Fixed"}}}"#;
    let current = from_moov_json(current, "c.json").expect("imports").spec;
    assert_eq!(old.bitmap_encoding, current.bitmap_encoding);
    let fields = |s: &Spec| {
        s.fields()
            .map(|f| {
                (
                    f.number, f.length, f.max, f.class, f.encoding, f.pad, f.pad_char,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fields(&old), fields(&current));
    assert_eq!(
        old.field(3).map(|f| f.pad_char),
        Some(b'0'),
        "pad 48 is '0'"
    );
}

#[test]
fn bytes_that_are_not_utf8_are_refused_at_their_offset() {
    let mut bytes = br#"{"name": "caf"#.to_vec();
    bytes.push(0x96);
    bytes.extend(br#"", "fields": {}}"#);
    let err = from_bytes(&bytes, "latin1.json")
        .map(|_| ())
        .expect_err("refused");
    let text = err.to_string();
    assert_eq!(
        text,
        "latin1.json: not valid UTF-8: byte 0x96 at offset 13 is not UTF-8; save the file as UTF-8"
    );
}

fn isoswitch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("isoswitch runs")
}

#[test]
fn spec_import_prints_every_problem_and_warning_and_fails() {
    let out = isoswitch(&["spec", "import", "tests/fixtures/specs/jpos-problems.xml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing imported");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2 + 5 + 1,
        "warnings, problems, summary:\n{stderr}"
    );
    let origin = "tests/fixtures/specs/jpos-problems.xml";
    assert!(lines[..2]
        .iter()
        .all(|l| l.starts_with(origin) && l.contains(": warning: ")));
    for field in [
        "field 3:",
        "field 11:",
        "field 28 (",
        "field 48.1:",
        "field 52:",
    ] {
        assert_eq!(
            lines[2..7].iter().filter(|l| l.contains(field)).count(),
            1,
            "{field} in\n{stderr}"
        );
    }
    assert_eq!(
        lines[7],
        format!("isoswitch: {origin}: not imported: 5 problems (listed above)")
    );
}

#[test]
fn spec_import_prints_warnings_to_stderr_and_the_spec_to_stdout() {
    let out = isoswitch(&["spec", "import", "tests/fixtures/specs/jpos-classes.xml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stderr.lines().count(), 10, "{stderr}");
    assert!(
        stderr.lines().all(|l| l.contains(": warning: ")),
        "{stderr}"
    );
    let toml = String::from_utf8_lossy(&out.stdout);
    let spec = Spec::from_toml_str(&toml, "stdout").expect("the TOML loads");
    assert_eq!(spec.field(60).map(|f| f.length), Some(LengthKind::LLLLL));
}

/// Imports jpos-composite.xml, whose field 113, 126 and 127 are subfield packagers.
fn jpos_composite() -> Spec {
    imported_jpos("jpos-composite.xml").spec
}

/// 0100 with field 3 and the secondary-bitmap `fields` (all 65..=128) set.
fn message_with(secondary: &[u8], data: &[&[u8]]) -> Vec<u8> {
    let mut bits = [0u8; 16];
    for &n in [1u8, 3].iter().chain(secondary) {
        let i = usize::from(n - 1);
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    let mut wire = b"0100".to_vec();
    wire.extend_from_slice(&bits);
    wire.extend_from_slice(b"000000");
    for part in data {
        wire.extend_from_slice(part);
    }
    wire
}

#[test]
fn jpos_base1_subfield_packager_reads_its_bitmap_then_the_subfields_set() {
    let spec = jpos_composite();
    // Base1_BITMAP126: 8 bytes, bits 6 and 10 set; 6 is IFB_LLNUM pad="true"
    // (a BCD length byte, a 0 nibble before odd digits), 10 IFE_CHAR.
    let content: &[u8] = &[
        0x04, 0x40, 0, 0, 0, 0, 0, 0, // bitmap
        0x05, 0x01, 0x23, 0x45, // 6: "12345"
        0xC1, 0xC2, 0xC3, 0xF1, 0xF2, 0xF3, // 10: "ABC123"
    ];
    let wire = message_with(&[126], &[&[18], content]);
    let msg = decode_both_ways(&spec, &wire);
    let sub = msg
        .subfields(&spec, 126)
        .expect("decodes")
        .expect("present");
    assert_eq!(sub.value("6"), Some(&b"12345"[..]));
    assert_eq!(sub.value("10"), Some(&b"ABC123"[..]));
    assert_eq!(sub.len(), 2);
}

#[test]
fn jpos_generic_subfield_packager_without_a_bitmap_reads_subfields_in_order() {
    let spec = jpos_composite();
    // emitBitmap false, firstField 0: IFE_CHAR 1, IFB_LLHNUM (binary length
    // byte counting digits), IFB_NUMERIC 4; jPOS's 0, 1, 2 are our 1, 2, 3.
    let content: &[u8] = &[
        0xF2, // 0: "2"
        0x10, 0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, // 1: 16 digits
        0x25, 0x12, // 2: "2512"
    ];
    let wire = message_with(&[127], &[&[12], content]);
    let msg = decode_both_ways(&spec, &wire);
    let sub = msg
        .subfields(&spec, 127)
        .expect("decodes")
        .expect("present");
    assert_eq!(sub.value("1"), Some(&b"2"[..]));
    assert_eq!(sub.value("2"), Some(&b"4111111111111111"[..]));
    assert_eq!(sub.value("3"), Some(&b"2512"[..]));
}

#[test]
fn jpos_generic_subfield_packager_with_its_default_bitmap_at_1_reads_from_2() {
    let spec = jpos_composite();
    // IFB_LLLBINARY's BCD length, then IFB_BITMAP (8 bytes: bits 2 and 3),
    // IFB_LLCHAR (BCD length byte, ASCII), IFA_NUMERIC 3.
    let content: &[u8] = &[
        0x60, 0, 0, 0, 0, 0, 0, 0, // bitmap
        0x04, b'C', b'M', b'F', b'1', // 2
        b'8', b'4', b'0', // 3
    ];
    let wire = message_with(&[113], &[&[0x00, 0x16], content]);
    let msg = decode_both_ways(&spec, &wire);
    let sub = msg
        .subfields(&spec, 113)
        .expect("decodes")
        .expect("present");
    assert_eq!(sub.value("2"), Some(&b"CMF1"[..]));
    assert_eq!(sub.value("3"), Some(&b"840"[..]));
}

#[test]
fn spec_import_writes_jpos_subfields_as_composites_in_the_toml() {
    let out = isoswitch(&["spec", "import", "tests/fixtures/specs/jpos-composite.xml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("field 127 (class org.jpos.iso.IFB_LLHBINARY): positional subfields 0..=2 imported as 1..=3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("field 113.0 (class org.jpos.iso.IF_NOP): not imported"),
        "{stderr}"
    );
    let toml = String::from_utf8_lossy(&out.stdout);
    let spec = Spec::from_toml_str(&toml, "stdout").expect("the TOML loads");
    assert!(
        spec.fields().eq(jpos_composite().fields()),
        "the TOML holds the imported fields"
    );
    let layout = |n: u8| {
        spec.field(n)
            .and_then(|f| f.composite.as_ref())
            .map(|c| c.layout)
    };
    use isoswitch::iso8583::spec::CompositeLayout;
    assert_eq!(layout(113), Some(CompositeLayout::Bitmap));
    assert_eq!(layout(126), Some(CompositeLayout::Bitmap));
    assert_eq!(layout(127), Some(CompositeLayout::Positional));
}

#[test]
fn moov_composites_decode_the_bytes_moov_writes() {
    let imported = imported_moov("moov-composite.json");
    let spec = imported.spec;
    // 48: tag "01" (moov pads "1" to 2 with its tag padding), ASCII.LL value;
    //     tag "02", fixed numeric.
    let f48: &[u8] = b"0140105HELLO02840";
    // 60: subfield 1 fixed, then 2 (a nested tagged composite, ASCII.LL).
    let f60: &[u8] = b"10XY06AAABCD";
    // 126: Binary.L length; an 8-byte bitmap that never expands (bits 1, 10).
    let f126: &[u8] = &[12, 0x80, 0x40, 0, 0, 0, 0, 0, 0, b'O', b'K', 0xBE, 0xEF];
    // 127: an expanding hex bitmap: bit 1 announces the second 8 bytes (bit 70).
    let f127 = [
        &b"035"[..],
        b"8000000000000000",
        b"0400000000000000",
        b"ABC",
    ]
    .concat();
    let wire = message_with(&[48, 60, 126, 127], &[f48, f60, f126, &f127]);
    let msg = decode_both_ways(&spec, &wire);
    let sub = |n: u8| msg.subfields(&spec, n).expect("decodes").expect("present");
    assert_eq!(sub(48).value("01"), Some(&b"HELLO"[..]));
    assert_eq!(sub(48).value("02"), Some(&b"840"[..]));
    assert_eq!(sub(60).value("1"), Some(&b"XY"[..]));
    assert!(sub(60).get("2").is_some(), "the nested composite is there");
    assert_eq!(sub(126).value("1"), Some(&b"OK"[..]));
    assert_eq!(sub(126).value("10"), Some(&[0xBE, 0xEF][..]));
    assert_eq!(sub(127).value("70"), Some(&b"ABC"[..]));
}

#[test]
fn spec_import_writes_moov_composites_in_the_toml_and_export_writes_them_back() {
    let out = isoswitch(&["spec", "import", "tests/fixtures/specs/moov-composite.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let toml = String::from_utf8_lossy(&out.stdout);
    let spec = Spec::from_toml_str(&toml, "stdout").expect("the TOML loads");
    assert!(spec
        .fields()
        .eq(imported_moov("moov-composite.json").spec.fields()));
    let json = exported_as_moov(&toml);
    assert!(json.contains("\"type\": \"Composite\""), "{json}");
    assert!(json.contains("\"disableAutoExpand\": true"), "{json}");
}

/// `spec export --format moov` of a TOML spec given as text.
fn exported_as_moov(toml: &str) -> String {
    let dir = std::env::temp_dir().join(format!("spec-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("spec.toml");
    std::fs::write(&path, toml).expect("writes the spec");
    let path = path.to_string_lossy().into_owned();
    let out = isoswitch(&["spec", "export", "--format", "moov", "--spec", &path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
