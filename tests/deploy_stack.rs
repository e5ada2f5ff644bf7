//! The whole deployment on one machine, as the README describes it: two real
//! `isoswitch serve` processes on one throw-away PostgreSQL and one Redis,
//! behind HAProxy running the shipped `deploy/haproxy.cfg` (its ports
//! moved to free ones), with the issuer simulator. Terminals only ever talk
//! to HAProxy:
//!
//! - a card limited to 3 authorizations a minute gets 65 on its fourth,
//!   though both instances served it;
//! - one instance is killed with -9 under load: new connections are served
//!   by the other at once, every purchase a terminal did not hear approved
//!   is reversed (by the survivor), none twice, and every approval a
//!   terminal heard is in the journal.
//!
//! Skipped, saying so, without PostgreSQL, Redis or HAProxy; under `CI=true`
//! a missing one is a failure.

// Shared with tests/durability.rs, which uses the rest of them.
#[allow(dead_code)]
#[path = "durability/evidence.rs"]
mod evidence;
#[path = "durability/judge.rs"]
mod judge;
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

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::Message;
use load::{Load, DROP_MAX, DROP_MIN};
use processes::{SimProcess, SwitchProcess};
use servers::{PgServer, RedisServer};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use wait::poll_until;

const LOAD: Load = Load {
    terminals: 4,
    per_terminal: 100,
    pace: Duration::from_millis(25),
};

fn simulator_toml() -> String {
    format!(
        r#"
[simulator]
default_response = "00"

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

/// An instance: PostgreSQL journal, Redis risk state, a velocity rule on
/// one merchant's cards (so the load, which names no merchant, is not limited).
fn switch_toml(issuer: SocketAddr, pg: &str, redis: &str, id: &str, digit: u8) -> String {
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
url = "{pg}"
key_file = "journal.key"

[instance]
id = "{id}"
rrn_digit = {digit}
heartbeat_s = 1
dead_after_s = 3
lease_s = 3

[risk]
state = "{redis}"
state_key_file = "risk.key"

[[risk.rule]]
name = "card-3-a-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 3
applies_to.merchants = ["VELOCITYSHOP001"]
"#
    )
}

/// HAProxy on the shipped config, its ports moved; killed when dropped.
struct Haproxy {
    child: Child,
    front: SocketAddr,
    log: PathBuf,
}

impl Haproxy {
    fn start(program: &Path, dir: &Path, switches: [(&str, &SwitchProcess); 2]) -> Haproxy {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg"),
        )
        .expect("the shipped config");
        let front = SocketAddr::from(([127, 0, 0, 1], servers::free_port()));
        let mut config = shipped
            .replace("bind :8583", &format!("bind {front}"))
            .replace(
                "stats socket /run/haproxy/admin.sock",
                &format!("stats socket {}", dir.join("admin.sock").display()),
            );
        for ((name, switch), (port, metrics)) in
            switches.iter().zip([("8584", "9184"), ("8585", "9185")])
        {
            let shipped_line = format!("server {name} 127.0.0.1:{port} check port {metrics}");
            assert!(
                config.contains(&shipped_line),
                "{shipped_line} in the shipped config"
            );
            config = config.replace(
                &shipped_line,
                &format!(
                    "server {name} {} check port {}",
                    switch.terminal_addr,
                    switch.metrics_addr.port()
                ),
            );
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).expect("haproxy config");
        let log = std::fs::File::create(dir.join("haproxy.log")).expect("log file");
        let child = Command::new(program)
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy starts");
        Haproxy {
            child,
            front,
            log: dir.join("haproxy.log"),
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spec() -> isoswitch::iso8583::Spec {
    isoswitch::specs::builtin("iso87ascii")
        .expect("shipped spec")
        .expect("shipped spec compiles")
}

/// One purchase of `card` at the velocity-limited merchant, on a fresh
/// connection through `addr`; field 39 of the answer.
async fn purchase_at_the_shop(addr: SocketAddr, card: &str, stan: u32) -> String {
    let spec = spec();
    let mut request = Message::new("0200".parse().expect("mti"));
    for (n, v) in [
        (2, card.to_owned()),
        (3, "000000".to_owned()),
        (4, "000000001000".to_owned()),
        (7, load::TRANSMISSION.to_owned()),
        (11, format!("{stan:06}")),
        (37, format!("9{stan:011}")),
        (41, "SHOPTERM".to_owned()),
        (42, "VELOCITYSHOP001".to_owned()),
    ] {
        request.set(n, v).expect("field");
    }
    let tcp = TcpStream::connect(addr).await.expect("HAProxy accepts");
    let mut connection = Framed::new(tcp, FrameCodec::new(FrameConfig::default()));
    connection
        .send(Frame::new(request.encode(&spec).expect("encodes")))
        .await
        .expect("sent");
    let frame = tokio::time::timeout(Duration::from_secs(10), connection.next())
        .await
        .expect("an answer in time")
        .expect("an answer, not a close")
        .expect("a frame");
    let answer = Message::decode(&spec, frame.payload).expect("answer decodes");
    answer.get_str(39).unwrap_or("(none)").to_owned()
}

async fn sql(url: &str, query: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects to the test database");
    tokio::spawn(connection);
    client.query(query, &[]).await.expect("query runs")
}

fn write_key(path: PathBuf, hex_byte: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("key file");
    file.write_all(hex_byte.repeat(32).as_bytes())
        .expect("key written");
}

/// The stack a test runs on; stopped in this order when dropped.
struct Stack {
    proxy: Haproxy,
    a: Option<SwitchProcess>,
    b: SwitchProcess,
    sim: SimProcess,
    redis: RedisServer,
    pg: PgServer,
    _dir: tempfile::TempDir,
}

impl Stack {
    /// None (skipped) without PostgreSQL, Redis or HAProxy.
    async fn start(test: &str) -> Option<Stack> {
        let haproxy = servers::required("haproxy", "haproxy", test)?;
        let pg = PgServer::start(test)?;
        let redis = RedisServer::start(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        write_key(dir.path().join("journal.key"), "3c");
        write_key(dir.path().join("risk.key"), "5d");
        std::fs::write(dir.path().join("sim.toml"), simulator_toml()).expect("sim config");
        let sim =
            SimProcess::start(&dir.path().join("sim.toml"), &dir.path().join("sim.jsonl")).await;
        let config = |name: &str, id: &str, digit: u8| {
            let path = dir.path().join(name);
            let text = switch_toml(sim.addr, &pg.url(), &redis.url(), id, digit);
            std::fs::write(&path, text).expect("switch config");
            path
        };
        let a = SwitchProcess::start(&config("a.toml", "switch-a", 1)).await;
        let b = SwitchProcess::start(&config("b.toml", "switch-b", 2)).await;
        let proxy = Haproxy::start(&haproxy, dir.path(), [("switch-a", &a), ("switch-b", &b)]);
        poll_until("HAProxy listens", Duration::from_secs(15), || {
            let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
            assert!(!log.contains("[ALERT]"), "HAProxy refused to start: {log}");
            async { TcpStream::connect(proxy.front).await.is_ok().then_some(()) }
        })
        .await;
        Some(Stack {
            proxy,
            a: Some(a),
            b,
            sim,
            redis,
            pg,
            _dir: dir,
        })
    }

    fn record(&self) -> Vec<evidence::Recorded> {
        evidence::read_record(&self.sim.record)
    }

    /// Load through HAProxy until the issuer holds a few dropped purchases.
    async fn load_until_drops_are_held(&self) -> tokio::task::JoinHandle<Vec<load::Sent>> {
        let load = tokio::spawn(load::drive(self.proxy.front, LOAD));
        poll_until(
            "the issuer holds dropped purchases",
            Duration::from_secs(30),
            || {
                let dropped = self
                    .record()
                    .iter()
                    .filter(|r| r.mti == "0200" && r.answer == "drop")
                    .count();
                std::future::ready((dropped >= 4).then_some(()))
            },
        )
        .await;
        load
    }

    /// Waits until every purchase of `sent` not heard approved is reversed
    /// at the issuer and the queue is empty; then judges the load's purchases.
    async fn judge(&self, sent: &[load::Sent]) -> judge::Verdict {
        let heard_approved: HashSet<&str> = sent
            .iter()
            .filter(|s| s.approved())
            .map(|s| s.rrn.as_str())
            .collect();
        let loaded: HashSet<&str> = sent.iter().map(|s| s.rrn.as_str()).collect();
        let url = self.pg.url();
        let unreversed = || {
            let record = self.record();
            let reversed: HashSet<String> = record
                .iter()
                .filter(|r| r.is_reversal())
                .filter_map(|r| r.rrn.clone())
                .collect();
            record
                .iter()
                .filter(|r| r.mti == "0200")
                .filter_map(|r| r.rrn.clone())
                .filter(|rrn| {
                    loaded.contains(rrn.as_str()) && !heard_approved.contains(rrn.as_str())
                })
                .filter(|rrn| !reversed.contains(rrn))
                .collect::<Vec<String>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = unreversed();
            let pending = sql(&url, "SELECT count(*) FROM saf WHERE state = 'pending'").await;
            if left.is_empty() && pending[0].get::<_, i64>(0) == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let rows = sql(
                    &url,
                    "SELECT terminal_rrn, instance_id, coalesce(response_code, '-'), reversal,
                        coalesce(recovered_from, '-')
                     FROM txn WHERE response_code IS NULL OR reversal != 'none' ORDER BY id",
                )
                .await;
                let txns: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{:?} {} {} {} {}",
                            r.get::<_, Option<String>>(0),
                            r.get::<_, String>(1),
                            r.get::<_, String>(2),
                            r.get::<_, String>(3),
                            r.get::<_, String>(4)
                        )
                    })
                    .collect();
                let instances = sql(
                    &url,
                    "SELECT id, heartbeat_at_ms, coalesce(recovered_by, '-') FROM instance",
                )
                .await;
                let instances: Vec<String> = instances
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} {}",
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, String>(2)
                        )
                    })
                    .collect();
                panic!(
                    "after 60 s, not reversed: {left:?}; pending items: {}; unanswered or reversed \
                     transactions: {txns:#?}; instances: {instances:#?}",
                    pending[0].get::<_, i64>(0)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The load's purchases only: the others are checked where they are sent.
        let record: Vec<evidence::Recorded> = self
            .record()
            .into_iter()
            .filter(|r| r.rrn.as_deref().is_some_and(|rrn| loaded.contains(rrn)))
            .collect();
        let verdict = judge::judge(sent, &record, &evidence::journal_codes(Path::new(&url)));
        assert!(
            verdict.reversed_twice.is_empty(),
            "reversed twice: {:?}",
            verdict.reversed_twice
        );
        verdict
    }
}

/// Waits until `survivor` has claimed the dead instance and queued the
/// reversal of at least one of its in-doubt purchases.
async fn after_recovery(survivor: &SwitchProcess) {
    poll_until(
        "the survivor reversed the dead instance's in-doubt purchases",
        Duration::from_secs(40),
        || async {
            let (_, metrics) = survivor.get("/metrics").await;
            let recovered = metrics.contains("isoswitch_instances_recovered_total 1");
            let reversed = metrics.lines().any(|l| {
                l.starts_with("isoswitch_in_doubt_reversals_total ") && !l.ends_with(" 0")
            });
            (recovered && reversed).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy_share_limits_and_survive_a_kill_9() {
    let test = "two_instances_behind_haproxy_share_limits_and_survive_a_kill_9";
    let Some(mut stack) = Stack::start(test).await else {
        return;
    };
    // One card, four purchases, each on a new connection: HAProxy spreads
    // them over both instances, and the fourth is over the shared limit.
    let card = "4000000000000002";
    let mut codes = Vec::new();
    for stan in 1..=4 {
        codes.push(purchase_at_the_shop(stack.proxy.front, card, stan).await);
    }
    assert_eq!(codes, ["00", "00", "00", "65"]);
    let served_by: HashSet<String> = sql(
        &stack.pg.url(),
        "SELECT instance_id FROM txn WHERE merchant_id = 'VELOCITYSHOP001'",
    )
    .await
    .iter()
    .map(|row| row.get(0))
    .collect();
    assert_eq!(
        served_by.len(),
        2,
        "both instances served the card: {served_by:?}"
    );

    // Load through HAProxy; switch-a killed while dropped purchases are held.
    let load = stack.load_until_drops_are_held().await;
    if let Some(a) = stack.a.take() {
        a.kill_9().await;
    }
    // New connections reach the survivor at once (a refused connection is
    // redispatched), before any health check has marked switch-a down.
    assert_eq!(
        load::purchase_once(stack.proxy.front, "TERM0999").await,
        "00"
    );
    let sent = load.await.expect("the load runs to its end");
    // switch-b takes over switch-a's in-doubt purchases once its heartbeat
    // is stale; then the terminals reverse what they never heard (an
    // approval switch-a journaled but could not deliver is theirs to
    // reverse), through HAProxy, matched in the shared journal.
    after_recovery(&stack.b).await;
    let unanswered: Vec<&load::Sent> = sent.iter().filter(|s| s.answer.is_none()).collect();
    load::reverse_as_terminals(stack.proxy.front, &unanswered, 0).await;
    let verdict = stack.judge(&sent).await;
    eprintln!("behind HAProxy, one instance killed:\n{verdict}");
    assert!(
        verdict.unanswered > 0,
        "the kill interrupted nothing:\n{verdict}"
    );
    assert!(
        verdict.reversed_originals > 0,
        "nothing was reversed:\n{verdict}"
    );
    let _ = &stack.redis;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_behind_haproxy_loses_no_transaction_and_new_terminals_reach_the_other() {
    let test =
        "a_graceful_stop_behind_haproxy_loses_no_transaction_and_new_terminals_reach_the_other";
    let Some(mut stack) = Stack::start(test).await else {
        return;
    };
    let load = stack.load_until_drops_are_held().await;
    if let Some(a) = stack.a.take() {
        let (status, log) = a.terminate().await;
        assert!(status.success(), "exit status {status}; log: {log:#?}");
    }
    assert_eq!(
        load::purchase_once(stack.proxy.front, "TERM0998").await,
        "00"
    );
    let sent = load.await.expect("the load runs to its end");
    // A graceful stop forwards nothing it does not answer.
    let at_issuer: HashSet<String> = stack
        .record()
        .iter()
        .filter_map(|r| r.rrn.clone())
        .collect();
    for s in sent.iter().filter(|s| s.answer.is_none()) {
        assert!(
            !at_issuer.contains(&s.rrn),
            "RRN {}: forwarded by the stopping instance but never answered",
            s.rrn
        );
    }
    let verdict = stack.judge(&sent).await;
    eprintln!("behind HAProxy, one instance stopped:\n{verdict}");
    assert!(
        verdict.reversed_originals > 0,
        "nothing was reversed:\n{verdict}"
    );
    assert!(stack.b.get("/readyz").await.0 == 200);
}
