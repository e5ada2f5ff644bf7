//! Whole-process durability: the real `isoswitch serve` under load, killed
//! with -9 or stopped with SIGTERM while purchases are held at a real
//! `isoswitch issuer-sim` process, then judged by what the simulator recorded
//! (every approval the terminal did not hear is reversed exactly once, none it
//! heard is), by the journal and by the store-and-forward queue; and storage
//! that goes away while serving, or cannot be opened at all.
//!
//! Every socket is on 127.0.0.1 with port 0; addresses come from the
//! processes' own output. Nothing waits by sleeping: conditions are polled
//! with deadlines.

#[path = "durability/evidence.rs"]
mod evidence;
#[path = "durability/judge.rs"]
mod judge;
#[path = "durability/load.rs"]
mod load;
#[path = "durability/processes.rs"]
mod processes;
#[path = "common/wait.rs"]
mod wait;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use evidence::{journal_codes, queue_drained, queue_states, read_record, Recorded};
use judge::{judge, Verdict};
use load::{Load, Sent, DROP_MAX, DROP_MIN, SLOW_MAX, SLOW_MIN};
use processes::{SimProcess, SwitchProcess, WAIT};
use wait::poll_until;

/// 8 terminals × 80 purchases, one every 25 ms each: ~320/s for ~2 s.
const LOAD: Load = Load {
    terminals: 8,
    per_terminal: 80,
    pace: Duration::from_millis(25),
};
/// The switch is stopped once the simulator has seen this many purchases,
/// about 1.3 s into the load: the first dropped ones have timed out (91),
/// the last second's are still held.
const STOP_AFTER_ORIGINALS: usize = 400;
const STOP_AFTER_DROPS: usize = 5;
/// Longest the queue may take to drain after a restart.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ set-up

/// The simulator's config: drops the drop range, approves the slow range
/// after 600 ms (within the switch's 1 s timeout) and the rest at once, for a
/// card with a large balance (so approvals hold, and reversals release
/// them); with `slow_reversal_acks`, answers 0400/0401 after 200 ms.
fn simulator_toml(slow_reversal_acks: bool) -> String {
    let slow = if slow_reversal_acks {
        "[[simulator.rule]]\nmti = \"0400\"\nrespond = \"00\"\ndelay_ms = 200\n"
    } else {
        ""
    };
    format!(
        r#"
[simulator]
default_response = "00"

{slow}
[[simulator.rule]]
amount_min = {DROP_MIN}
amount_max = {DROP_MAX}
respond = "drop"

[[simulator.rule]]
amount_min = {SLOW_MIN}
amount_max = {SLOW_MAX}
respond = "00"
delay_ms = 600

[[simulator.account]]
pan = "{card}"
balance = 100000000000
currency = "840"
status = "active"
expiry = "2812"
"#,
        card = load::CARD
    )
}

/// The switch's config: one listener, metrics, the simulator process as
/// issuer "bank" answering within 1 s, and the journal beside the file.
fn switch_toml(issuer: std::net::SocketAddr) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[metrics]
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = ["{issuer}"]
timeout_ms = 1000
echo_interval_s = 0

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"

[journal]
path = "journal.db"
"#
    )
}

/// A temp directory with a running simulator process and the switch's config.
/// When a test fails the directory (record, journal, configs) is kept and named.
struct Bench {
    dir: Option<tempfile::TempDir>,
    sim: SimProcess,
    switch_config: PathBuf,
}

impl Bench {
    async fn start(slow_reversal_acks: bool) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let sim_config = dir.path().join("sim.toml");
        std::fs::write(&sim_config, simulator_toml(slow_reversal_acks)).expect("sim config");
        let sim = SimProcess::start(&sim_config, &dir.path().join("sim.jsonl")).await;
        let switch_config = dir.path().join("switch.toml");
        std::fs::write(&switch_config, switch_toml(sim.addr)).expect("switch config");
        Bench {
            dir: Some(dir),
            sim,
            switch_config,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("kept until dropped").path()
    }

    fn db(&self) -> PathBuf {
        self.dir().join("journal.db")
    }

    fn record(&self) -> Vec<Recorded> {
        read_record(&self.sim.record)
    }

    /// Waits until the simulator has seen enough purchases, several of them
    /// dropped (held at the issuer until the switch times out).
    async fn wait_for_purchases_held(&self) {
        poll_until(
            "the simulator has seen enough purchases, some dropped",
            Duration::from_secs(30),
            || {
                let record = self.record();
                let originals = record.iter().filter(|r| r.mti == "0200");
                let (mut seen, mut dropped) = (0, 0);
                for original in originals {
                    seen += 1;
                    dropped += usize::from(original.answer == "drop");
                }
                std::future::ready(
                    (seen >= STOP_AFTER_ORIGINALS && dropped >= STOP_AFTER_DROPS).then_some(()),
                )
            },
        )
        .await
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept for inspection: {}", dir.keep().display());
            }
        }
    }
}

// ------------------------------------------------------------------- tests

/// The kill -9 scenario: load, kill while dropped purchases are held at the
/// issuer, restart on the same journal, terminals reverse what they did not
/// hear (a few repeated as 0401), the queue drains; the verdict.
async fn kill_9_mid_load() -> Verdict {
    let started = Instant::now();
    let bench = Bench::start(false).await;
    let switch = SwitchProcess::start(&bench.switch_config).await;
    let load = tokio::spawn(load::drive(switch.terminal_addr, LOAD));
    bench.wait_for_purchases_held().await;
    switch.kill_9().await;
    let sent = load.await.expect("the load runs to its end");
    let unanswered: Vec<&Sent> = sent.iter().filter(|s| s.answer.is_none()).collect();
    assert!(
        !unanswered.is_empty(),
        "the kill interrupted nothing: every purchase was answered"
    );

    // Restarted on the same journal: in-doubt recovery runs before it serves.
    let switch = SwitchProcess::start(&bench.switch_config).await;
    let answers = load::reverse_as_terminals(switch.terminal_addr, &unanswered, 3).await;
    let states = queue_drained(&bench.db(), DRAIN_WAIT).await;
    assert_eq!(states.get("failed"), None, "queue items failed: {states:?}");

    let verdict = judge(&sent, &bench.record(), &journal_codes(&bench.db()));
    let mut answered: HashMap<String, usize> = HashMap::new();
    for answer in &answers {
        *answered
            .entry(format!("{} -> {}", answer.mti, answer.code))
            .or_default() += 1;
    }
    eprintln!(
        "kill -9 mid-load:\n{verdict}\nterminal reversals answered: {answered:?}\nqueue: {states:?}\ntook {:?}",
        started.elapsed()
    );
    assert!(
        verdict.reversed_originals > 0,
        "nothing was reversed:\n{verdict}"
    );
    verdict
}

#[tokio::test]
async fn kill_9_mid_load_loses_no_reversal_and_reverses_no_delivered_approval() {
    let verdict = kill_9_mid_load().await;
    assert!(
        verdict.reversed_twice.is_empty(),
        "more than one reversal item (two 0400s at the issuer) for RRNs {:?}",
        verdict.reversed_twice
    );
}

#[tokio::test]
async fn a_second_restart_does_not_reverse_an_in_doubt_purchase_again() {
    let bench = Bench::start(false).await;
    let switch = SwitchProcess::start(&bench.switch_config).await;
    let held = load::send_dropped_purchase(switch.terminal_addr, "TERM0201").await;
    let rrn = held.sent.rrn.clone();
    poll_until("the issuer holds the purchase", WAIT, || {
        let seen = bench
            .record()
            .iter()
            .any(|r| r.rrn.as_deref() == Some(&rrn));
        std::future::ready(seen.then_some(()))
    })
    .await;
    switch.kill_9().await;

    let reversals_of_it = || {
        bench
            .record()
            .iter()
            .filter(|r| r.is_reversal() && r.rrn.as_deref() == Some(&rrn))
            .map(|r| r.mti.clone())
            .collect::<Vec<_>>()
    };
    let switch = SwitchProcess::start(&bench.switch_config).await;
    queue_drained(&bench.db(), DRAIN_WAIT).await;
    assert_eq!(
        reversals_of_it(),
        ["0400"],
        "in-doubt recovery reversed it once"
    );
    let (status, log) = switch.terminate().await;
    assert!(status.success(), "exit status {status}; log: {log:#?}");

    // Recovery runs before the listener binds: once it serves, any item is queued.
    let _switch = SwitchProcess::start(&bench.switch_config).await;
    let states = queue_drained(&bench.db(), DRAIN_WAIT).await;
    assert_eq!(
        states.values().sum::<i64>(),
        1,
        "one reversal item for one purchase: {states:?}"
    );
    assert_eq!(
        reversals_of_it(),
        ["0400"],
        "no second reversal at the issuer"
    );
}

#[tokio::test]
async fn sigterm_mid_load_answers_what_it_took_and_reverses_every_unheard_approval() {
    let started = Instant::now();
    let bench = Bench::start(true).await;
    let switch = SwitchProcess::start(&bench.switch_config).await;
    let load = tokio::spawn(load::drive(switch.terminal_addr, LOAD));
    bench.wait_for_purchases_held().await;
    let (status, log) = switch.terminate().await;
    assert!(status.success(), "exit status {status}; log: {log:#?}");
    let sent = load.await.expect("the load runs to its end");
    assert!(
        sent.iter().any(|s| s.answer.as_deref() == Some("91")),
        "the stop held no dropped purchase: nothing was in doubt"
    );

    // A graceful stop forwards nothing it does not answer.
    let record = bench.record();
    let at_issuer: HashMap<&str, &Recorded> = record
        .iter()
        .filter_map(|r| Some((r.rrn.as_deref()?, r)))
        .collect();
    for s in sent.iter().filter(|s| s.answer.is_none()) {
        assert!(
            !at_issuer.contains_key(s.rrn.as_str()),
            "RRN {}: forwarded to the issuer but never answered to the terminal",
            s.rrn
        );
    }
    // The stop flushes the queue; only if its drain ran out is a restart needed.
    let mut restarted = false;
    let states = queue_states(&bench.db());
    let states = if states.get("pending").copied().unwrap_or(0) > 0 {
        restarted = true;
        let _switch = SwitchProcess::start(&bench.switch_config).await;
        queue_drained(&bench.db(), DRAIN_WAIT).await
    } else {
        states
    };
    assert_eq!(states.get("failed"), None, "queue items failed: {states:?}");

    let verdict = judge(&sent, &bench.record(), &journal_codes(&bench.db()));
    eprintln!(
        "SIGTERM mid-load:\n{verdict}\nqueue: {states:?}, restarted to drain: {restarted}\ntook {:?}",
        started.elapsed()
    );
    assert!(
        verdict.reversed_originals > 0,
        "nothing was reversed:\n{verdict}"
    );
    assert!(
        verdict.reversed_twice.is_empty(),
        "more than one reversal item for RRNs {:?}",
        verdict.reversed_twice
    );
}

/// A switch whose journal lives in `store/` under `dir`, with the issuer
/// simulator in process.
fn in_process_config(journal: &str) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[metrics]
bind = "127.0.0.1:0"

[[issuer]]
name = "sim"
endpoints = ["sim"]
timeout_ms = 2000

[[route]]
name = "all"
bins = ["4"]
issuer = "sim"

[journal]
path = "{journal}"

[simulator]
default_response = "00"
"#
    )
}

#[tokio::test]
async fn storage_removed_while_serving_answers_96_and_503_then_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("store dir");
    let config = dir.path().join("switch.toml");
    std::fs::write(&config, in_process_config("store/journal.db")).expect("config written");
    let switch = SwitchProcess::start(&config).await;
    let addr = switch.terminal_addr;
    assert_eq!(load::purchase_once(addr, "TERM0101").await, "00");

    let away = dir.path().join("store-away");
    std::fs::rename(&store, &away).expect("journal directory moved away");
    assert_eq!(
        load::purchase_once(addr, "TERM0101").await,
        "96",
        "a purchase that cannot be journaled is refused"
    );
    let (status, body) = switch.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("journal"),
        "/readyz names the journal: {body}"
    );

    std::fs::rename(&away, &store).expect("journal directory back");
    poll_until(
        "purchases are approved again",
        Duration::from_secs(10),
        || async move { (load::purchase_once(addr, "TERM0101").await == "00").then_some(()) },
    )
    .await;
    let (status, body) = switch.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

/// Starts `serve` on a database under a regular file; its exit status and stderr.
async fn serve_unopenable(
    dir: &Path,
    key_env: Option<&str>,
) -> (std::process::ExitStatus, String, String) {
    let not_a_dir = dir.join("file.txt");
    std::fs::write(&not_a_dir, "a regular file\n").expect("file written");
    let db = not_a_dir.join("x.db");
    let config = dir.join("switch.toml");
    std::fs::write(&config, in_process_config("journal.db")).expect("config written");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_isoswitch"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--db")
        .arg(&db)
        .env("RUST_LOG", "error")
        .env_remove("ISOSWITCH_JOURNAL_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(key) = key_env {
        command.env("ISOSWITCH_JOURNAL_KEY", key);
    }
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("serve exits at start-up")
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stderr, db.display().to_string())
}

#[tokio::test]
async fn a_journal_that_cannot_be_opened_is_exit_1_and_one_error_naming_it() {
    // With the key from the environment the database itself is opened (and fails).
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, stderr, db) = serve_unopenable(dir.path(), Some(&"11".repeat(32))).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {stderr}");
    assert!(lines[0].contains("cannot open the journal"), "{stderr}");
    assert!(lines[0].contains(&db), "names {db}: {stderr}");

    // Without it the key file beside the database is the first thing to fail.
    let dir = tempfile::tempdir().expect("temp dir");
    let (status, stderr, db) = serve_unopenable(dir.path(), None).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {stderr}");
    assert!(
        lines[0].contains(&format!("{db}.key")),
        "names the key file: {stderr}"
    );
}
