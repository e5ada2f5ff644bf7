//! `isoswitch serve` start-up as a new user meets it: the real binary with a
//! config whose ports the test holds, checking what it says before it exits.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A config file in a directory of its own, removed when dropped.
struct ScratchConfig {
    path: PathBuf,
}

impl std::ops::Deref for ScratchConfig {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchConfig {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The shipped default config with its listener and metrics addresses (and
/// the listener's spec) replaced, written where only this test looks.
fn config(test: &str, listener: &str, metrics: &str, spec: &str) -> ScratchConfig {
    let text = std::fs::read_to_string(root().join("config/default.toml"))
        .expect("config/default.toml is in the repository")
        .replace("\"127.0.0.1:8583\"", &format!("{listener:?}"))
        .replace("\"127.0.0.1:9583\"", &format!("{metrics:?}"))
        // The virtual terminal on a free port, so tests never contend for 8080.
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        // The first spec is the listener's; the simulator's comes later.
        .replacen(
            "spec = \"specs/iso87ascii.toml\"",
            &format!("spec = {spec:?}"),
            1,
        );
    let dir =
        std::env::temp_dir().join(format!("isoswitch-serve-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("switch.toml");
    std::fs::write(&path, text).expect("config written");
    ScratchConfig { path }
}

/// Runs `serve` expecting it to give up at start-up; a switch that starts
/// anyway is killed after a bound and fails the test.
fn serve_expecting_failure(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(root())
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("isoswitch runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("child status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running although it could not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn held() -> (TcpListener, String) {
    let socket = TcpListener::bind("127.0.0.1:0").expect("loopback port");
    let addr = socket.local_addr().expect("bound").to_string();
    (socket, addr)
}

#[test]
fn a_busy_listener_port_is_named_with_its_os_error_once() {
    let (_socket, busy) = held();
    let path = config(
        "busy-listener",
        &busy,
        "127.0.0.1:0",
        "specs/iso87ascii.toml",
    );
    let out = serve_expecting_failure(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("listener \"pos\": cannot bind {busy}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 98").count(), 1, "{stderr}");
}

#[test]
fn every_busy_address_is_named() {
    let (_listener_socket, listener) = held();
    let (_metrics_socket, metrics) = held();
    let path = config("busy-both", &listener, &metrics, "specs/iso87ascii.toml");
    let out = serve_expecting_failure(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("metrics: cannot bind {metrics}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("listener \"pos\": cannot bind {listener}")),
        "{stderr}"
    );
}

#[test]
fn a_bad_listener_spec_is_reported_before_any_port_is_bound() {
    let (_metrics_socket, metrics) = held();
    let path = config("bad-spec", "127.0.0.1:0", &metrics, "no-such-spec.toml");
    let out = serve_expecting_failure(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Relative to the config file, so the message names the path it tried.
    let tried = path.with_file_name("no-such-spec.toml");
    assert!(
        stderr.contains(&format!("listener \"pos\": {}", tried.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot bind"), "{stderr}");
}

#[test]
fn a_missing_config_file_names_the_os_error_once() {
    let out = serve_expecting_failure(Path::new("no-such-dir/switch.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("isoswitch: no-such-dir/switch.toml: cannot read the config file"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}
