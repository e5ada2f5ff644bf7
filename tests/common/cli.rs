//! The `isoswitch` binary run once with arguments and stdin, for the CLI
//! tests. They include this file alone (`#[path]`), without the rest of
//! `common`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the real binary in `dir` (the test's own directory when None) with
/// `stdin` written to it and logging off; returns what it printed.
pub fn run_isoswitch(args: &[&str], stdin: &str, dir: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_isoswitch"));
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(args)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("isoswitch runs");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("stdin written");
    child.wait_with_output().expect("isoswitch finishes")
}
