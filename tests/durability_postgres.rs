//! Two real `isoswitch serve` processes sharing one throw-away PostgreSQL
//! journal and one issuer simulator: one is killed with -9 under load while
//! dropped purchases are held at the issuer; the survivor takes over its
//! queued reversals once their leases end and reverses its in-doubt
//! purchases once its heartbeat is stale. Judged at the simulator's record:
//! every purchase a terminal did not hear approved is reversed, none twice,
//! and every approval a terminal heard is in the journal. Then the journal
//! tools read the shared database by URL. And PostgreSQL itself stopped and
//! started again under load, reversals waiting in the queue: 96s meanwhile,
//! never an unrecorded approval, approvals again without restarting the
//! switch, every queued or in-doubt reversal delivered once.
//!
//! Skipped, saying so, without PostgreSQL (`apt-get install postgresql`);
//! under `CI=true` that is a failure.

// Shared with tests/durability.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "durability/evidence.rs"]
mod evidence;
#[path = "durability/judge.rs"]
mod judge;
// Shared with tests/durability.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "durability/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "durability/processes.rs"]
mod processes;
#[path = "common/servers.rs"]
mod servers;
#[path = "common/wait.rs"]
mod wait;

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evidence::{journal_codes, read_record};
use judge::judge;
use load::{Load, DROP_MAX, DROP_MIN};
use processes::{SimProcess, SwitchProcess};
use servers::PgServer;
use wait::poll_until;

/// 4 terminals × 100 purchases, one every 25 ms each.
const LOAD: Load = Load {
    terminals: 4,
    per_terminal: 100,
    pace: Duration::from_millis(25),
};
/// The survivor's in-doubt sweep runs every 15 s; the dead one's heartbeat
/// is stale after 3 s and its leases end after the next attempt is due.
const TAKEOVER_WAIT: Duration = Duration::from_secs(60);

fn simulator_toml() -> String {
    format!(
        r#"
[simulator]
default_response = "00"

# Reversals are answered after 600 ms (within the switch's 1 s timeout), so
# switch-a dies with reversals sent and unanswered: switch-b repeats them.
[[simulator.rule]]
mti = "0400"
respond = "00"
delay_ms = 600

[[simulator.rule]]
amount_min = {DROP_MIN}
amount_max = {DROP_MAX}
respond = "drop"

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

fn switch_toml(issuer: std::net::SocketAddr, url: &str, id: &str, rrn_digit: u8) -> String {
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
url = "{url}"
key_file = "journal.key"

[instance]
id = "{id}"
rrn_digit = {rrn_digit}
heartbeat_s = 1
dead_after_s = 3
lease_s = 3
"#
    )
}

/// Queue items by state, read from the shared database.
async fn queue_states(url: &str) -> HashMap<String, i64> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects to the test database");
    tokio::spawn(connection);
    client
        .query("SELECT state, count(*) FROM saf GROUP BY state", &[])
        .await
        .expect("the saf table is there")
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect()
}

struct Bench {
    dir: tempfile::TempDir,
    sim: SimProcess,
    configs: [PathBuf; 2],
}

impl Bench {
    async fn start(url: &str) -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let sim_config = dir.path().join("sim.toml");
        std::fs::write(&sim_config, simulator_toml()).expect("sim config");
        let sim = SimProcess::start(&sim_config, &dir.path().join("sim.jsonl")).await;
        // Both instances read the one key: what one seals, the other opens.
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.path().join("journal.key"))
            .expect("key file");
        key.write_all("3c".repeat(32).as_bytes())
            .expect("key written");
        let config = |name: &str, id: &str, digit: u8| {
            let path = dir.path().join(name);
            std::fs::write(&path, switch_toml(sim.addr, url, id, digit)).expect("switch config");
            path
        };
        let configs = [
            config("a.toml", "switch-a", 1),
            config("b.toml", "switch-b", 2),
        ];
        Bench { dir, sim, configs }
    }

    fn record(&self) -> Vec<evidence::Recorded> {
        read_record(&self.sim.record)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_reverses_what_a_killed_instance_left_and_nothing_twice() {
    let test = "a_survivor_reverses_what_a_killed_instance_left_and_nothing_twice";
    let Some(server) = PgServer::start(test) else {
        return;
    };
    let url = server.url();
    let bench = Bench::start(&url).await;
    let a = SwitchProcess::start(&bench.configs[0]).await;
    let b = SwitchProcess::start(&bench.configs[1]).await;

    let load = tokio::spawn(load::drive(a.terminal_addr, LOAD));
    let reversals = || bench.record().iter().filter(|r| r.mti == "0400").count();
    let seen = poll_until(
        "switch-a has dropped purchases held",
        Duration::from_secs(30),
        || {
            let record = bench.record();
            let dropped = record
                .iter()
                .filter(|r| r.mti == "0200" && r.answer == "drop")
                .count();
            std::future::ready((dropped >= 3).then_some(reversals()))
        },
    )
    .await;
    // Killed as soon as a new reversal reaches the issuer: its answer comes
    // 600 ms later, so switch-a dies with it sent and unanswered.
    poll_until(
        "switch-a sends another reversal",
        Duration::from_secs(30),
        || std::future::ready((reversals() > seen).then_some(())),
    )
    .await;
    a.kill_9().await;
    let sent = load.await.expect("the load runs to its end");
    assert!(
        sent.iter().any(|s| s.answer.is_none()),
        "the kill interrupted nothing: every purchase was answered"
    );

    // switch-b alone, never restarted: it reverses the dead instance's
    // in-doubt purchases and delivers its queued reversals. Then the
    // terminals reverse what they never heard, as terminals do (an approval
    // switch-a journaled but could not deliver is theirs to reverse),
    // matched by switch-b in the shared journal: still one reversal each.
    poll_until(
        "switch-b reversed switch-a's in-doubt purchases",
        TAKEOVER_WAIT,
        || async {
            let (_, metrics) = b.get("/metrics").await;
            let recovered = metrics.contains("isoswitch_instances_recovered_total 1");
            let reversed = metrics.lines().any(|l| {
                l.starts_with("isoswitch_in_doubt_reversals_total ") && !l.ends_with(" 0")
            });
            (recovered && reversed).then_some(())
        },
    )
    .await;
    let unanswered: Vec<&load::Sent> = sent.iter().filter(|s| s.answer.is_none()).collect();
    load::reverse_as_terminals(b.terminal_addr, &unanswered, 2).await;
    let heard_approved: std::collections::HashSet<&str> = sent
        .iter()
        .filter(|s| s.approved())
        .map(|s| s.rrn.as_str())
        .collect();
    poll_until(
        "switch-b has reversed every purchase switch-a left unheard, its queue empty",
        TAKEOVER_WAIT,
        || {
            let record = bench.record();
            let reversed: std::collections::HashSet<String> = record
                .iter()
                .filter(|r| r.is_reversal())
                .filter_map(|r| r.rrn.clone())
                .collect();
            let all_reversed = record
                .iter()
                .filter(|r| r.mti == "0200")
                .filter_map(|r| r.rrn.as_deref())
                .filter(|rrn| !heard_approved.contains(rrn))
                .all(|rrn| reversed.contains(rrn));
            let url = url.clone();
            async move {
                if !all_reversed {
                    return None;
                }
                let states = queue_states(&url).await;
                (states.get("pending").copied().unwrap_or(0) == 0).then_some(())
            }
        },
    )
    .await;
    let verdict = judge(&sent, &bench.record(), &journal_codes(Path::new(&url)));
    let states = queue_states(&url).await;
    eprintln!("two instances, one killed:\n{verdict}\nqueue: {states:?}");
    assert_eq!(states.get("failed"), None, "queue items failed: {states:?}");
    assert!(
        verdict.reversed_originals > 0,
        "nothing was reversed:\n{verdict}"
    );
    assert!(
        bench.record().iter().any(|r| r.mti == "0401"),
        "switch-b repeated none of switch-a's unanswered reversals (no 0401 at the issuer)"
    );
    assert!(
        verdict.reversed_twice.is_empty(),
        "reversed twice (two 0400s at the issuer): {:?}",
        verdict.reversed_twice
    );
    // The survivor says it took the dead instance over.
    let (status, metrics) = b.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("isoswitch_instances_recovered_total 1"),
        "switch-b recovered switch-a once: {}",
        metrics
            .lines()
            .filter(|l| l.contains("recovered"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The tools read the shared journal by URL, as they read a file.
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(["journal", "stats", "--json", "--db", &url])
        .env("RUST_LOG", "off")
        .output()
        .expect("journal stats runs");
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("\"group\":\"response_code\""), "{text}");
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let settle = std::process::Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args([
            "journal", "settle", "--format", "csv", "--date", &today, "--db", &url,
        ])
        .current_dir(bench.dir())
        .env("RUST_LOG", "off")
        .output()
        .expect("journal settle runs");
    assert!(
        settle.status.success(),
        "{}",
        String::from_utf8_lossy(&settle.stderr)
    );
    let csv = String::from_utf8_lossy(&settle.stdout);
    assert!(
        csv.lines().count() > 1,
        "a settlement of the day's sales: {csv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_purchases_get_96_and_service_resumes_when_it_is_back() {
    let test = "while_postgres_is_down_purchases_get_96_and_service_resumes_when_it_is_back";
    let Some(mut server) = PgServer::start(test) else {
        return;
    };
    let url = server.url();
    let bench = Bench::start(&url).await;
    let switch = SwitchProcess::start(&bench.configs[0]).await;
    assert_eq!(
        load::purchase_once(switch.terminal_addr, "TERM0901").await,
        "00"
    );

    server.stop();
    // Nothing is approved that cannot be recorded; readiness says so.
    assert_eq!(
        load::purchase_once(switch.terminal_addr, "TERM0902").await,
        "96"
    );
    let (status, body) = switch.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    let approved_at_issuer_while_down = bench
        .record()
        .iter()
        .filter(|r| r.terminal.as_deref() == Some("TERM0902"))
        .count();
    assert_eq!(
        approved_at_issuer_while_down, 0,
        "forwarded without a journal record"
    );

    server.restart();
    poll_until(
        "purchases are approved again",
        Duration::from_secs(30),
        || async {
            (load::purchase_once(switch.terminal_addr, "TERM0903").await == "00").then_some(())
        },
    )
    .await;
    switch.wait_ready().await;
    let codes = journal_codes(Path::new(&url));
    let approved = codes
        .values()
        .filter(|c| c.as_deref() == Some("00"))
        .count();
    assert!(
        approved >= 2,
        "the approvals before and after are journaled: {codes:?}"
    );
}

/// Terminals sending until told to stop, however long the outage takes:
/// 4 × one purchase every 25 ms, at most 100 s.
const OPEN_LOAD: Load = Load {
    terminals: 4,
    per_terminal: 4_000,
    pace: Duration::from_millis(25),
};
/// 96s counted before PostgreSQL comes back: at 160 purchases a second,
/// over two seconds of outage, longer than the issuer timeout, so dropped
/// purchases forwarded before it time out while nothing can be queued.
const OUTAGE_96S: u64 = 400;
/// Approvals counted after the restart before the load stops.
const RESUMED_00S: u64 = 100;
/// Reversals of what the outage left in doubt wait for the in-doubt sweep:
/// every 15 s, for records older than twice the issuer timeout plus 30 s.
const SWEEP_WAIT: Duration = Duration::from_secs(90);

/// `isoswitch_transactions_total` answered with `code`, summed over labels.
fn answered_with(metrics: &str, code: &str) -> u64 {
    let label = format!("response_code=\"{code}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("isoswitch_transactions_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load_approves_nothing_unrecorded_and_loses_no_reversal() {
    let test = "postgres_restarted_mid_load_approves_nothing_unrecorded_and_loses_no_reversal";
    let Some(mut server) = PgServer::start(test) else {
        return;
    };
    let url = server.url();
    let bench = Bench::start(&url).await;
    let switch = SwitchProcess::start(&bench.configs[0]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let load = tokio::spawn(load::drive_until(
        switch.terminal_addr,
        OPEN_LOAD,
        stop.clone(),
    ));

    // Stopped while reversals of dropped purchases wait in the queue (each
    // is answered 600 ms after it is sent).
    poll_until(
        "reversals are queued in PostgreSQL",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let states = queue_states(&url).await;
                (states.get("pending").copied().unwrap_or(0) >= 2).then_some(())
            }
        },
    )
    .await;
    tokio::task::block_in_place(|| server.stop());
    let metrics = || async { switch.get("/metrics").await.1 };
    let (status, body) = poll_until(
        "the switch answers 96 and /readyz says 503",
        Duration::from_secs(30),
        || async {
            let (status, body) = switch.get("/readyz").await;
            let declined = answered_with(&metrics().await, "96");
            (status == 503 && declined >= OUTAGE_96S).then_some((status, body))
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");

    tokio::task::block_in_place(|| server.restart());
    let approved_at_restart = answered_with(&metrics().await, "00");
    // The same switch process, its terminals on their same connections.
    poll_until(
        "approvals resume without restarting the switch",
        Duration::from_secs(30),
        || async {
            let approved = answered_with(&metrics().await, "00");
            (approved >= approved_at_restart + RESUMED_00S).then_some(())
        },
    )
    .await;
    switch.wait_ready().await;
    stop.cancel();
    let sent = load.await.expect("the load runs to its end");

    let mut answers: HashMap<&str, usize> = HashMap::new();
    for s in &sent {
        *answers
            .entry(s.answer.as_deref().unwrap_or("none"))
            .or_default() += 1;
    }
    assert!(
        answers.keys().all(|code| ["00", "91", "96"].contains(code)),
        "only approvals, 91 (no issuer answer) and 96 (no journal): {answers:?}"
    );
    assert!(
        answers.get("96").copied().unwrap_or(0) as u64 >= OUTAGE_96S,
        "the terminals heard the outage: {answers:?}"
    );

    // Every purchase the issuer saw that no terminal heard approved —
    // dropped, or approved while the outcome could not be recorded — is
    // reversed: from the queue, or by the in-doubt sweep once the database
    // is back. And the queue ends with every item acknowledged.
    let heard_approved: std::collections::HashSet<&str> = sent
        .iter()
        .filter(|s| s.approved())
        .map(|s| s.rrn.as_str())
        .collect();
    let states = poll_until(
        "every purchase not heard approved is reversed and acknowledged",
        SWEEP_WAIT,
        || {
            let record = bench.record();
            let acknowledged: std::collections::HashSet<String> = record
                .iter()
                .filter(|r| r.is_reversal() && r.answer == "00")
                .filter_map(|r| r.rrn.clone())
                .collect();
            let all_reversed = record
                .iter()
                .filter(|r| r.mti == "0200")
                .filter_map(|r| r.rrn.as_deref())
                .filter(|rrn| !heard_approved.contains(rrn))
                .all(|rrn| acknowledged.contains(rrn));
            let url = url.clone();
            async move {
                if !all_reversed {
                    return None;
                }
                let states = queue_states(&url).await;
                (states.get("pending").copied().unwrap_or(0) == 0).then_some(states)
            }
        },
    )
    .await;
    let verdict = judge(&sent, &bench.record(), &journal_codes(Path::new(&url)));
    let in_doubt: Vec<String> = metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("isoswitch_in_doubt_reversals_total"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "PostgreSQL restarted mid-load:\n{verdict}\nanswers: {answers:?}\nqueue: {states:?}\n\
         in doubt: {in_doubt:?}"
    );
    assert_eq!(verdict.unanswered, 0, "{verdict}");
    assert!(
        verdict.dropped_at_issuer > 0 && verdict.reversed_originals >= verdict.dropped_at_issuer,
        "every dropped purchase reversed:\n{verdict}"
    );
    assert!(
        verdict.reversed_twice.is_empty(),
        "reversed twice (two 0400s at the issuer): {:?}",
        verdict.reversed_twice
    );
    assert!(
        states.keys().all(|state| state == "acknowledged"),
        "every queue item acknowledged: {states:?}"
    );
}
