//! CI's smoke run: the load generator against the real switch, started in
//! process from the embedded default config (every socket on 127.0.0.1:0), with
//! `scenarios/smoke.toml`. Asserts answers and codes, never timings.

// The switch's tests' one wait helper; it needs only tokio.
#[path = "../../tests/common/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use isoswitch::config::Config;
use isoswitch::frame::FrameConfig;
use isoswitch::server::Listener;
use isoswitch::switch::Switch;
use loadgen::driver::{self, Mode, RunConfig};
use loadgen::report::Report;
use loadgen::scenario::Scenario;
use tokio_util::sync::CancellationToken;

/// Longest any one step (start-up, a run, the binary) may take before the test
/// fails instead of hanging CI.
const LIMIT: Duration = Duration::from_secs(30);
/// A request unanswered this long is a timeout. The simulator answers the smoke
/// mix at once; the switch's own issuer timeout (5 s) is never reached.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The switch with its one listener, running until dropped.
struct RunningSwitch {
    addr: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for RunningSwitch {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the embedded default config with every bind moved to 127.0.0.1:0, and
/// returns once the in-process issuer can take requests, so the first request
/// does not race the link coming up (it would be answered 91).
async fn start_switch() -> RunningSwitch {
    let mut config = Config::embedded_default().expect("embedded default is valid");
    for listener in &mut config.listeners {
        listener.bind = loopback();
    }
    config.metrics.bind = loopback();
    if let Some(simulator) = &mut config.simulator {
        simulator.bind = loopback();
    }
    // The expected codes below hold because the default runs only the card
    // checks (Luhn and length, expiry) on POS traffic (its other rules are
    // the virtual terminal's: brands refused there, merchant-initiated
    // charges marked in field 60); velocity or duplicate rules would add
    // declines the scenario does not predict.
    let rules: Vec<&str> = config.risk.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        rules,
        ["card-number", "expiry", "vt-brands", "recurring"],
        "default risk rules changed"
    );

    let shutdown = CancellationToken::new();
    let listener = Listener::bind(&config.listeners[0])
        .await
        .expect("listener binds");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let switch = Switch::start(config, shutdown.clone()).expect("switch starts");
    tokio::spawn(listener.run(switch.clone(), shutdown.clone()));

    let snapshot = switch.snapshot();
    wait::poll_until("the simulator's link comes up", LIMIT, || {
        std::future::ready(
            snapshot
                .issuers
                .iter()
                .all(|e| e.issuer.is_available())
                .then_some(()),
        )
    })
    .await;
    RunningSwitch { addr, shutdown }
}

fn smoke_scenario_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml")
}

fn smoke_scenario() -> Arc<Scenario> {
    Arc::new(Scenario::load(&smoke_scenario_path()).expect("smoke scenario is valid"))
}

/// What `loadgen` builds from its defaults: iso87ascii, 2-byte binary header, no
/// TPDU, as the default listener expects.
fn run_config(switch: &RunningSwitch, connections: usize, mode: Mode, requests: u64) -> RunConfig {
    RunConfig {
        addr: switch.addr,
        target: switch.addr.to_string(),
        tls: None,
        spec: Arc::new(
            isoswitch::specs::builtin("iso87ascii")
                .expect("shipped spec")
                .expect("shipped spec compiles"),
        ),
        frame: FrameConfig::default(),
        tpdu: None,
        connections,
        mode,
        requests: Some(requests),
        duration: None,
        warmup: Duration::ZERO,
        timeout: REQUEST_TIMEOUT,
        progress: false,
        check_codes: true,
    }
}

async fn run(config: RunConfig) -> Report {
    tokio::time::timeout(
        LIMIT,
        driver::run(config, smoke_scenario(), CancellationToken::new()),
    )
    .await
    .expect("the run ends in time")
    .expect("the run starts")
}

/// Every request answered with the code the scenario expects: 00 for the
/// generated cards, 05 for 4000000000000002, nothing else.
fn assert_clean(report: &Report, requests: u64) {
    let e = &report.errors;
    assert_eq!(e.mismatches, 0, "{}", report.summary());
    assert_eq!(e.timeouts, 0, "{}", report.summary());
    assert_eq!(e.connection_errors, 0, "{}", report.summary());
    assert_eq!(e.decode_errors, 0, "{}", report.summary());
    assert_eq!(e.unknown_stan, 0, "{}", report.summary());
    assert_eq!(e.unsent, 0, "{}", report.summary());
    assert_eq!(e.lost, 0, "{}", report.summary());
    assert_eq!(e.total, 0, "{}", report.summary());
    assert!(report.is_clean());

    assert_eq!(report.requests_sent, requests);
    assert_eq!(report.responses, requests);
    assert_eq!(report.responses_without_code, 0);
    assert_eq!(report.late_responses, 0);

    let codes: Vec<&str> = report.response_codes.keys().map(String::as_str).collect();
    assert_eq!(codes, ["00", "05"], "{}", report.summary());
    assert_eq!(report.response_codes.values().sum::<u64>(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_smoke_run_gets_every_expected_code_from_the_switch() {
    let switch = start_switch().await;
    let config = run_config(&switch, 2, Mode::Closed { window: 4 }, 500);
    let report = run(config).await;
    assert_clean(&report, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_smoke_run_gets_every_expected_code_from_the_switch() {
    let switch = start_switch().await;
    // 300 requests due over 1.5 s: low enough for any CI machine.
    let mode = Mode::Open {
        rate: 200.0,
        max_outstanding: 10_000,
    };
    let report = run(run_config(&switch, 2, mode, 300)).await;
    assert_clean(&report, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_smoke_run_exits_zero_with_a_clean_json_report() {
    let switch = start_switch().await;
    let json = std::env::temp_dir().join(format!(
        "loadgen-smoke-against-switch-{}.json",
        std::process::id()
    ));
    let to = switch.addr.to_string();
    let scenario = smoke_scenario_path();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
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
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .expect("loadgen ends in time")
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");

    let text = std::fs::read_to_string(&json).expect("JSON report written");
    let _ = std::fs::remove_file(&json);
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(report["errors"]["total"], 0, "{text}");
    assert_eq!(report["requests_sent"], 300, "{text}");
    assert_eq!(report["responses"], 300, "{text}");
    let codes = report["response_codes"]
        .as_object()
        .expect("response_codes is an object");
    let names: Vec<&str> = codes.keys().map(String::as_str).collect();
    assert_eq!(names, ["00", "05"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_terminals_get_their_own_answers_or_a_close_and_the_switch_keeps_serving() {
    let switch = start_switch().await;
    let to = switch.addr.to_string();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hostile"))
        .args([
            "--to",
            &to,
            "--duration",
            "3s",
            "--idle",
            "5",
            "--flood",
            "4500",
            "--flood-every-s",
            "60",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(LIMIT, output)
        .await
        .expect("hostile ends in time")
        .expect("hostile runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    // One flood past the 4 096 in flight, every request answered once.
    assert!(
        stdout.contains("flood        1 floods, 4500 requests, 4500 answers"),
        "{stdout}"
    );
    assert!(stdout.contains("errors       0"), "{stdout}");

    // And the switch still serves well-behaved terminals.
    let report = run(run_config(&switch, 1, Mode::Closed { window: 4 }, 100)).await;
    assert_clean(&report, 100);
}
