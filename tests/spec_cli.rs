//! The codec and spec commands as a new user meets them: the real binary, its
//! exit status and what it prints when output is cut short or input is wrong.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn isoswitch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("isoswitch runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `isoswitch … | head`: the reader is gone before the command writes.
fn run_with_reader_gone(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("isoswitch runs");
    // Closing the read end now (the child is still starting) makes its
    // first write to stdout fail with a broken pipe.
    drop(child.stdout.take());
    child.wait_with_output().expect("isoswitch finishes")
}

#[test]
fn output_cut_short_by_the_reader_exits_quietly() {
    for args in [
        &["spec", "show", "--spec", "iso87ascii"][..],
        &["spec", "export", "--spec", "iso87ascii"],
        &["spec", "export", "--spec", "iso87bcd", "--format", "moov"],
    ] {
        let out = run_with_reader_gone(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}");
    }
}

#[test]
fn a_missing_spec_file_names_the_os_error_once() {
    let out = isoswitch(&["spec", "show", "--spec", "no-such-dir/my.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("isoswitch: no-such-dir/my.toml: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

#[test]
fn an_unsupported_jpos_class_is_named_and_the_list_is_in_help() {
    let xml = std::fs::read_to_string(root().join("tests/fixtures/specs/jpos-iso87ascii.xml"))
        .expect("fixture")
        .replacen(
            "org.jpos.iso.IFA_NUMERIC\"",
            "org.jpos.iso.IFA_NUMERIX\"",
            1,
        );
    let dir = std::env::temp_dir().join(format!("isoswitch-spec-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("packager.xml");
    std::fs::write(&path, xml).expect("written");
    let out = isoswitch(&["spec", "import", path.to_str().expect("UTF-8 temp path")]);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("jPOS class \"org.jpos.iso.IFA_NUMERIX\" is not supported"),
        "{stderr}"
    );
    assert!(stderr.contains("spec import --help"), "{stderr}");
    // The problem, then the summary.
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.lines().all(|l| l.len() < 250),
        "short lines: {stderr}"
    );

    let help = isoswitch(&["spec", "import", "--help"]);
    let help = text(&help.stdout);
    for class in ["IFA_NUMERIC", "IFB_LLHNUM", "IFE_LLLBINARY", "HexToASCII"] {
        assert!(help.contains(class), "{class} in {help}");
    }
}

const COMPOSITE_SPEC: &str = "tests/fixtures/specs/composite-iso87ascii.toml";

/// `isoswitch <args>` with `input` on stdin.
fn isoswitch_with_input(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("isoswitch runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("stdin takes the input");
    drop(stdin);
    child.wait_with_output().expect("isoswitch finishes")
}

/// 0100 with field 3 and field 60: "21", "5", then a nested tlv 60.3.
const NESTED_60_HEX: &str =
    "30313030 2000000000000010 303030303030 303139 3231 35 3134 30313034414243443032303256 31";

#[test]
fn parse_build_and_explain_show_composites_as_nested_subfields() {
    let json = r#"{"mti":"0100","fields":{"3":"000000","60":{"1":"21","2":"5","3":{"01":"ABCD","02":"V1"}}}}"#;
    let built = isoswitch_with_input(
        &["build", "--spec", COMPOSITE_SPEC, "--hex"],
        json.as_bytes(),
    );
    assert!(built.status.success(), "{}", text(&built.stderr));
    let hex: String = NESTED_60_HEX.split_whitespace().collect();
    assert_eq!(text(&built.stdout).trim(), hex);

    let parsed = isoswitch_with_input(
        &["parse", "--spec", COMPOSITE_SPEC, "--hex"],
        hex.as_bytes(),
    );
    assert!(parsed.status.success(), "{}", text(&parsed.stderr));
    assert_eq!(text(&parsed.stdout).trim(), json);

    let explained = isoswitch_with_input(
        &["explain", "--spec", COMPOSITE_SPEC, "--hex"],
        hex.as_bytes(),
    );
    assert!(explained.status.success(), "{}", text(&explained.stderr));
    let table = text(&explained.stdout);
    assert!(table.contains("\n  60.2      Entry capability"), "{table}");
    assert!(
        table.contains("\n    60.3.02   Software version"),
        "{table}"
    );
}

#[test]
fn parse_refuses_a_composite_whose_subfields_do_not_decode() {
    // 60.3.01 holds '@', which class an refuses.
    let hex = NESTED_60_HEX.replace("41424344", "41424044");
    let hex: String = hex.split_whitespace().collect();
    for command in ["parse", "explain"] {
        let out = isoswitch_with_input(
            &[command, "--spec", COMPOSITE_SPEC, "--hex"],
            hex.as_bytes(),
        );
        assert!(!out.status.success(), "{command} must refuse");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("field 60.3.01 at byte 32: expected a letter, digit or space"),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn build_names_the_subfield_that_does_not_encode() {
    let json = r#"{"mti":"0100","fields":{"48":{"42":"12A"}}}"#;
    let out = isoswitch_with_input(
        &["build", "--spec", COMPOSITE_SPEC, "--hex"],
        json.as_bytes(),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("field 48.42 value byte 2: expected a digit 0-9"),
        "{stderr}"
    );
}
