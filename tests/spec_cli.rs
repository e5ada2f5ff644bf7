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
