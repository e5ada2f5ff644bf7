//! Every `sh` block in README.md runs as written, as a new user would run it:
//! from a directory that sees the repository's files, with `isoswitch` on
//! PATH and `cargo run --release --` meaning the built binary. The `send`
//! block and the virtual terminal's curl session run against a real switch
//! this test starts on free ports; the
//! blocks in [`SKIPPED`] are left out, each for the reason given.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Blocks not run here, found by a command they contain, and why.
const SKIPPED: &[(&str, &str)] = &[
    (
        "cargo run --release -- serve",
        "runs the switch until it is stopped; the send block runs against one this test starts",
    ),
    ("cargo test --workspace", "this test is part of that run"),
    (
        "load/soak.sh",
        "the load block: loadgen for 30 s, load/bench.sh, load/soak.sh (10 minutes), \
         load/shapes.sh and load/multi.sh start their own switches (and servers) on fixed \
         ports and take minutes; run by hand",
    ),
];

/// The address the README's `send` example talks to.
const README_SWITCH: &str = "127.0.0.1:8583";
/// The virtual terminal the README's curl session talks to.
const README_VT: &str = "127.0.0.1:8080";

/// How long one block may take before the test gives up on it.
const BLOCK_LIMIT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced `sh` blocks of `markdown`, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim() == "```sh" => current = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(current.is_none(), "README.md has an unclosed ```sh block");
    blocks
}

/// A scratch directory that sees the repository's top-level entries through
/// symlinks, with `bin/isoswitch` for PATH; files a block writes land here.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("isoswitch-readme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("scratch dir");
        for entry in std::fs::read_dir(root()).expect("repository root") {
            let entry = entry.expect("root entry");
            let name = entry.file_name();
            if name != "target" && name != ".git" {
                std::os::unix::fs::symlink(entry.path(), work.join(&name)).expect("symlink");
            }
        }
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_isoswitch"), bin.join("isoswitch"))
            .expect("isoswitch symlink");
        Scratch { dir }
    }

    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Runs `block` with bash the way the README reader would.
    fn run(&self, block: &str) -> Output {
        let script = block.replace("cargo run --release --", "isoswitch");
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("bash")
            .args(["-eo", "pipefail", "-c", &script])
            .current_dir(self.work())
            .env("PATH", path)
            .env("RUST_LOG", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash runs");
        wait_bounded(child, block)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The child's output, or a failed test if it runs past [`BLOCK_LIMIT`].
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + BLOCK_LIMIT;
    while child.try_wait().expect("child status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {BLOCK_LIMIT:?}:\n{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The switch the `send` and virtual terminal examples talk to: the shipped
/// default config on free loopback ports. Killed when dropped.
struct Switch {
    child: Child,
    addr: String,
    vt: String,
}

impl Switch {
    fn start(scratch: &Scratch) -> Switch {
        let config = std::fs::read_to_string(root().join("config/default.toml"))
            .expect("config/default.toml")
            .replace(&format!("{README_SWITCH:?}"), "\"127.0.0.1:0\"")
            .replace("\"127.0.0.1:9583\"", "\"127.0.0.1:0\"")
            .replace(&format!("{README_VT:?}"), "\"127.0.0.1:0\"");
        let path = scratch.dir.join("switch.toml");
        std::fs::write(&path, config).expect("config written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            // As `serve` without a config would: the journal in the current
            // directory, where the README's `journal` examples look.
            .args(["--db", "isoswitch.db"])
            .current_dir(scratch.work())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("isoswitch serve runs");
        // The "listening" log line names the address the POS listener got,
        // the "virtual terminal on ..." line the virtual terminal's.
        let stderr = child.stderr.take().expect("stderr piped");
        let mut lines = BufReader::new(stderr).lines();
        let (mut addr, mut vt) = (None, None);
        while addr.is_none() || vt.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("the switch exited before it listened");
            };
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = entry["fields"]["message"].as_str().unwrap_or("");
            let found = entry["fields"]["addr"].as_str().map(str::to_owned);
            if message == "listening" {
                addr = found;
            } else if message.starts_with("virtual terminal on") {
                // What the README promises a new user sees at start-up.
                assert!(
                    message.contains("(demo login: demo / demo-password)"),
                    "{message}"
                );
                vt = found;
            }
        }
        // Keep reading stderr so the switch never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Switch {
            child,
            addr: addr.expect("the POS listener's address"),
            vt: vt.expect("the virtual terminal's address"),
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_readme_sh_block_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    let scratch = Scratch::new();
    let mut switch = None;
    let mut ran = 0;
    for block in &blocks {
        if SKIPPED.iter().any(|(command, _)| block.contains(command)) {
            continue;
        }
        let block = if block.contains(README_SWITCH) || block.contains(README_VT) {
            let running = switch.get_or_insert_with(|| Switch::start(&scratch));
            block
                .replace(README_SWITCH, &running.addr)
                .replace(README_VT, &running.vt)
        } else {
            block.clone()
        };
        let out = scratch.run(&block);
        assert!(
            out.status.success(),
            "README block failed ({:?}):\n{block}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        if block.contains(" send ") {
            assert!(
                text(&out.stdout).contains(r#""39":"00""#),
                "the README's authorization is approved: {}",
                text(&out.stdout)
            );
        }
        if block.contains("/api/v1/payments") {
            // The curl session logged in, was approved, and listed the sale masked.
            let out = text(&out.stdout);
            assert!(
                out.contains(r#""status":"approved""#) && out.contains("411111******1111"),
                "the README's virtual terminal sale is approved and listed: {out}"
            );
            assert!(
                !out.contains("4111111111111111"),
                "the list shows no full PAN: {out}"
            );
        }
        if block.contains("journal find") {
            // The authorization the send block made is in the journal, masked.
            let out = text(&out.stdout);
            assert!(
                out.contains("411111******1111") && !out.contains("4111111111111111"),
                "the README's journal look-ups find the authorization, masked: {out}"
            );
        }
        ran += 1;
    }
    for (command, why) in SKIPPED {
        assert!(
            blocks.iter().any(|b| b.contains(command)),
            "skip list names {command:?} ({why}), which no README block has any more"
        );
    }
    assert!(switch.is_some(), "the send example ran against a switch");
    assert_eq!(
        ran + SKIPPED.len(),
        blocks.len(),
        "one skip entry per block"
    );
}
