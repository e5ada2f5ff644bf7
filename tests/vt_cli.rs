//! `isoswitch vt hash-password`: reads a password from stdin and prints an
//! argon2 hash as its last line, one the virtual terminal accepts for it.

use std::io::Write;
use std::process::{Command, Stdio};

fn hash_password(stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(["vt", "hash-password"])
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
        .expect("password written");
    child.wait_with_output().expect("output")
}

#[test]
fn the_last_line_is_a_hash_of_the_password() {
    let out = hash_password("correct horse battery\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let hash = stdout.lines().last().expect("a line");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(isoswitch::vt::auth::verify_password(
        "correct horse battery",
        hash
    ));
    assert!(!isoswitch::vt::auth::verify_password(
        "correct horse battery\n",
        hash
    ));
    // Salted: the same password hashes differently each time.
    let again = hash_password("correct horse battery\n");
    assert_ne!(
        String::from_utf8_lossy(&again.stdout).lines().last(),
        Some(hash)
    );
}

#[test]
fn an_empty_password_is_refused_saying_so() {
    let out = hash_password("\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin: expected a password"), "{stderr}");
}
