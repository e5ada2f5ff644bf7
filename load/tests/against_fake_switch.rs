//! The load generator run against a fake switch on 127.0.0.1: exact counts in
//! closed and open loop, mismatches and timeouts counted as errors, and the
//! binary's exit status and JSON report.

mod fake_switch;
// The switch's tests' held ports; they need only tokio.
#[path = "../../tests/common/ports.rs"]
mod ports;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fake_switch::{Behaviour, FakeSwitch};
use isoswitch::frame::FrameConfig;
use loadgen::driver::{self, Mode, RunConfig};
use loadgen::report::Report;
use loadgen::scenario::Scenario;
use tokio_util::sync::CancellationToken;

const DECLINED: &str = "4000000000000002";

/// 50 generated cards expecting 00; one card in five is 4000000000000002, expecting 05.
const SCENARIO: &str = r#"
seed = 5
mti = [{ value = "0100", weight = 1 }, { value = "0200", weight = 1 }]
[cards]
count = 50
bins = [{ prefix = "4", weight = 7 }, { prefix = "51-55", weight = 3 }]
expect = ["00"]
[[special_card]]
pan = "4000000000000002"
percent = 20.0
expect = ["05"]
[amount]
min = 100
max = 10000
"#;

fn scenario() -> Arc<Scenario> {
    let s = Scenario::from_toml_str(
        SCENARIO,
        "test scenario",
        "test",
        time::OffsetDateTime::now_utc(),
    )
    .expect("test scenario is valid");
    Arc::new(s)
}

fn config(fake: &FakeSwitch, mode: Mode, connections: usize, requests: u64) -> RunConfig {
    RunConfig {
        addr: fake.addr,
        target: fake.addr.to_string(),
        tls: None,
        spec: Arc::new(fake_switch::spec()),
        frame: FrameConfig::default(),
        tpdu: None,
        connections,
        mode,
        requests: Some(requests),
        duration: None,
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(10),
        progress: false,
        check_codes: true,
    }
}

fn declines_correctly() -> Behaviour {
    Behaviour {
        codes: vec![(DECLINED, "05")],
        ..Behaviour::default()
    }
}

async fn run(config: RunConfig) -> Report {
    driver::run(config, scenario(), CancellationToken::new())
        .await
        .expect("the run starts")
}

fn assert_exact(report: &Report, fake: &FakeSwitch, requests: u64) {
    let declined = fake.seen.special[0].load(Ordering::Relaxed);
    assert_eq!(report.requests_sent, requests);
    assert_eq!(fake.seen.requests.load(Ordering::Relaxed), requests);
    assert_eq!(report.responses, requests);
    assert_eq!(report.responses_measured, requests);
    assert_eq!(report.latency_us.count, requests);
    assert!(declined > 0, "the mix includes the declined card");
    assert_eq!(report.response_codes.get("05").copied(), Some(declined));
    assert_eq!(
        report.response_codes.get("00").copied(),
        Some(requests - declined)
    );
    assert_eq!(report.errors.total, 0, "{report:?}");
    assert!(report.is_clean());
    assert!(
        fake.seen.reordered.load(Ordering::Relaxed) > 0,
        "the fake answered some batch out of order"
    );
}

#[tokio::test]
async fn closed_loop_matches_every_response_by_stan() {
    let fake = fake_switch::start(declines_correctly()).await;
    let report = run(config(&fake, Mode::Closed { window: 8 }, 3, 400)).await;
    assert_exact(&report, &fake, 400);
    assert!(report.throughput_per_s > 0.0);
}

#[tokio::test]
async fn open_loop_sends_at_the_rate_and_matches_every_response() {
    let fake = fake_switch::start(declines_correctly()).await;
    let mode = Mode::Open {
        rate: 4000.0,
        max_outstanding: 10_000,
    };
    let report = run(config(&fake, mode, 2, 300)).await;
    assert_exact(&report, &fake, 300);
    // 300 requests at 4000/s are due over 75 ms; the run cannot be shorter.
    assert!(report.elapsed_s >= 0.07, "{}", report.elapsed_s);
}

#[tokio::test]
async fn closed_loop_over_tls() {
    let pki = fake_switch::test_pki("closed-loop");
    let fake = fake_switch::start_with(declines_correctly(), Some(pki.acceptor.clone())).await;
    let mut cfg = config(&fake, Mode::Closed { window: 4 }, 2, 200);
    cfg.tls = Some(loadgen::tls::target(&pki.ca_file, "localhost").expect("TLS client config"));
    let report = run(cfg).await;
    assert_exact(&report, &fake, 200);
}

#[tokio::test]
async fn a_wrong_code_is_a_mismatch() {
    let fake = fake_switch::start(Behaviour::default()).await;
    let report = run(config(&fake, Mode::Closed { window: 4 }, 2, 200)).await;
    assert_eq!(report.responses, 200);
    let wrong = report.errors.mismatches;
    assert!(wrong > 0, "the declined card was approved and must count");
    assert_eq!(report.errors.total, wrong);
    assert!(!report.is_clean());
}

#[tokio::test]
async fn a_dropped_request_is_a_timeout() {
    let fake = fake_switch::start(Behaviour {
        codes: vec![(DECLINED, "05")],
        drop_request: Some(10),
        ..Behaviour::default()
    })
    .await;
    let mut cfg = config(&fake, Mode::Closed { window: 4 }, 1, 100);
    cfg.timeout = Duration::from_millis(300);
    let report = run(cfg).await;
    assert_eq!(report.requests_sent, 100);
    assert_eq!(report.responses, 99);
    assert_eq!(report.errors.timeouts, 1);
    assert_eq!(report.errors.total, 1);
    assert!(!report.is_clean());
}

#[tokio::test]
async fn an_answer_echoing_another_terminal_is_a_foreign_answer() {
    let fake = fake_switch::start(Behaviour {
        codes: vec![(DECLINED, "05")],
        foreign_request: Some(7),
        ..Behaviour::default()
    })
    .await;
    let report = run(config(&fake, Mode::Closed { window: 4 }, 1, 50)).await;
    assert_eq!(
        report.responses, 49,
        "the foreign answer is not counted as the request's"
    );
    assert_eq!(report.errors.foreign_answers, 1);
    assert_eq!(report.errors.mismatches, 0);
    assert_eq!(report.errors.total, 1);
    assert!(!report.is_clean());
}

#[tokio::test]
async fn a_duration_bound_run_stops_by_itself() {
    let fake = fake_switch::start(declines_correctly()).await;
    let mut cfg = config(&fake, Mode::Closed { window: 2 }, 2, 0);
    cfg.requests = None;
    cfg.duration = Some(Duration::from_millis(200));
    let report = run(cfg).await;
    assert!(report.requests_sent > 0);
    assert_eq!(report.responses, report.requests_sent);
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn a_run_against_a_closed_port_fails_to_start() {
    let fake = fake_switch::start(declines_correctly()).await;
    let closed = ports::HeldPort::new();
    let mut cfg = config(&fake, Mode::Closed { window: 1 }, 1, 1);
    cfg.addr = closed.addr();
    let e = driver::run(cfg, scenario(), CancellationToken::new())
        .await
        .expect_err("nothing listens");
    assert!(format!("{e:#}").contains("connection 1"), "{e:#}");
}

// ---------------------------------------------------- connect per request

/// Every request came on a connection of its own and got its own answer.
fn assert_one_connection_per_request(report: &Report, fake: &FakeSwitch, requests: u64) {
    assert_eq!(report.requests_sent, requests);
    assert_eq!(report.responses, requests);
    assert_eq!(report.connections_opened, requests);
    assert_eq!(fake.seen.accepted.load(Ordering::Relaxed), requests);
    assert_eq!(fake.seen.requests.load(Ordering::Relaxed), requests);
    assert_eq!(fake.seen.most_per_connection.load(Ordering::Relaxed), 1);
    let declined = fake.seen.special[0].load(Ordering::Relaxed);
    assert!(declined > 0, "the mix includes the declined card");
    assert_eq!(report.response_codes.get("05").copied(), Some(declined));
    assert_eq!(report.errors.total, 0, "{report:?}");
    assert!(report.is_clean());
}

#[tokio::test]
async fn connect_per_request_opens_a_connection_for_each_request() {
    let fake = fake_switch::start(declines_correctly()).await;
    let report = run(config(&fake, Mode::ConnectPerRequest, 4, 150)).await;
    assert_one_connection_per_request(&report, &fake, 150);
    assert_eq!(report.latency_us.count, 150);
    let summary = report.summary();
    assert!(summary.contains("new connections/s"), "{summary}");
    assert!(
        summary.contains("from the start of the connect"),
        "{summary}"
    );
}

#[tokio::test]
async fn connect_per_request_over_tls_shakes_hands_for_each_request() {
    let pki = fake_switch::test_pki("dial");
    let fake = fake_switch::start_with(declines_correctly(), Some(pki.acceptor.clone())).await;
    let mut cfg = config(&fake, Mode::ConnectPerRequest, 2, 40);
    cfg.tls = Some(loadgen::tls::target(&pki.ca_file, "localhost").expect("TLS client config"));
    let report = run(cfg).await;
    assert_one_connection_per_request(&report, &fake, 40);
}

#[tokio::test]
async fn connect_per_request_counts_a_refused_connect_with_its_reason() {
    let fake = fake_switch::start(declines_correctly()).await;
    let closed = ports::HeldPort::new();
    let mut cfg = config(&fake, Mode::ConnectPerRequest, 1, 3);
    cfg.addr = closed.addr();
    let report = run(cfg).await;
    assert_eq!(report.requests_sent, 0, "nothing could be sent");
    assert_eq!(report.connections_opened, 0);
    assert_eq!(report.errors.connection_errors, 3);
    assert_eq!(report.errors.total, 3);
    let reasons = &report.errors.connection_error_reasons;
    assert_eq!(reasons.values().sum::<u64>(), 3, "{reasons:?}");
    assert!(
        reasons.keys().all(|r| r.starts_with("connecting: ")),
        "{reasons:?}"
    );
    assert!(report.summary().contains("3 × connecting: "));
}

#[tokio::test]
async fn connect_per_request_times_out_an_unanswered_request_and_goes_on() {
    let fake = fake_switch::start(Behaviour {
        codes: vec![(DECLINED, "05")],
        drop_request: Some(3),
        ..Behaviour::default()
    })
    .await;
    let mut cfg = config(&fake, Mode::ConnectPerRequest, 1, 10);
    cfg.timeout = Duration::from_millis(300);
    let report = run(cfg).await;
    assert_eq!(report.requests_sent, 10);
    assert_eq!(report.responses, 9);
    assert_eq!(report.errors.timeouts, 1);
    assert_eq!(report.errors.total, 1, "{report:?}");
    assert_eq!(fake.seen.accepted.load(Ordering::Relaxed), 10);
}

// ------------------------------------------------------------- the binary

fn smoke_scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml")
}

fn temp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("loadgen-test-{}-{name}.json", std::process::id()))
}

async fn loadgen(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("loadgen runs")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("JSON report written");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("valid JSON")
}

#[tokio::test]
async fn binary_exits_zero_on_a_clean_run_and_writes_the_json_report() {
    let fake = fake_switch::start(declines_correctly()).await;
    let json = temp_json("clean");
    let to = fake.addr.to_string();
    let scenario = smoke_scenario();
    let out = loadgen(&[
        "--to",
        &to,
        "--scenario",
        scenario.to_str().expect("UTF-8 path"),
        "--connections",
        "2",
        "--window",
        "4",
        "--requests",
        "300",
        "--quiet",
        "--json",
        json.to_str().expect("UTF-8 path"),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("throughput"), "{stdout}");
    let report = read_json(&json);
    assert_eq!(report["requests_sent"], 300);
    assert_eq!(report["responses"], 300);
    assert_eq!(report["errors"]["total"], 0);
    let declined = fake.seen.special[0].load(Ordering::Relaxed);
    assert_eq!(report["response_codes"]["05"], declined);
    assert!(report["latency_us"]["p99"].as_u64().is_some_and(|p| p > 0));
}

#[tokio::test]
async fn binary_exits_non_zero_when_a_code_mismatches() {
    // Approves 4000000000000002, which the smoke scenario expects declined (05).
    let fake = fake_switch::start(Behaviour::default()).await;
    let json = temp_json("mismatch");
    let to = fake.addr.to_string();
    let scenario = smoke_scenario();
    let out = loadgen(&[
        "--to",
        &to,
        "--scenario",
        scenario.to_str().expect("UTF-8 path"),
        "--connections",
        "1",
        "--rate",
        "5000",
        "--requests",
        "200",
        "--quiet",
        "--json",
        json.to_str().expect("UTF-8 path"),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mismatch"), "{stderr}");
    assert!(
        stderr.contains("400000******0002"),
        "PANs are masked: {stderr}"
    );
    assert!(!stderr.contains(DECLINED), "never a full PAN: {stderr}");
    let report = read_json(&json);
    assert!(report["errors"]["mismatches"]
        .as_u64()
        .is_some_and(|m| m > 0));
    assert_eq!(report["responses"], 200);
}

#[tokio::test]
async fn binary_refuses_a_remote_target_without_allow_remote() {
    let out = loadgen(&["--to", "192.0.2.1:8583", "--requests", "1", "--quiet"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}
