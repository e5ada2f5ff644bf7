//! What SREs see: exact counters after known traffic, readiness that follows the
//! issuer links, token-guarded admin endpoints, and dashboards and alerts that
//! only use metric names the switch really exports, in PromQL Prometheus parses. Every switch binds 127.0.0.1:0 and
//! uses its own listener name, so tests sharing the process recorder stay apart.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::config::Config;
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Mti, Spec};
use isoswitch::journal::{
    ClearPan, DataKey, Forward, Journal as _, ReversalFields, SqliteJournal, SqliteOptions, Stores,
    TxnStart,
};
use isoswitch::metrics_http::{self, OpsState};
use isoswitch::server::Listener;
use isoswitch::switch::Switch;
use isoswitch::upstream::SafSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    terminal: SocketAddr,
    ops: SocketAddr,
    switch: Arc<Switch>,
    token: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn config(listener: &str, issuer_endpoints: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "{listener}"
bind = "127.0.0.1:0"
channel = "pos"
spec = "iso87ascii"
header = "2b"

[[issuer]]
name = "{listener}-issuer"
endpoints = [{issuer_endpoints}]
timeout_ms = 300
echo_interval_s = 0

[[route]]
name = "all"
bins = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
issuer = "{listener}-issuer"

[metrics]
bind = "127.0.0.1:0"

[admin]
token = "s3cret"

[simulator]
bind = "127.0.0.1:0"
default_response = "00"

[[simulator.rule]]
pan_prefix = "4000000000000002"
respond = "05"

[[simulator.rule]]
amount_min = 99900
amount_max = 99999
respond = "drop"
{extra}
"#
    )
}

async fn start(text: &str) -> Running {
    start_with(text, Stores::in_memory()).await
}

async fn start_with(text: &str, stores: Stores) -> Running {
    metrics_http::recorder();
    let config = Config::from_toml_str(text, "test").expect("valid config");
    let token = CancellationToken::new();
    let listener = Listener::bind(&config.listeners[0]).await.expect("binds");
    let terminal = listener.local_addr().expect("addr");
    let switch =
        Switch::start_with(config, stores, SafSettings::default(), token.clone()).expect("starts");
    let ops = OpsState::new(switch.clone(), None, Some("s3cret".into()));
    ops.listeners_bound
        .store(true, std::sync::atomic::Ordering::Release);
    let http = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let ops_addr = http.local_addr().expect("addr");
    let router = metrics_http::metrics_routes(ops.clone()).merge(metrics_http::admin_routes(ops));
    tokio::spawn(metrics_http::serve(http, router, token.clone()));
    tokio::spawn(listener.run(switch.clone(), token.clone()));
    Running {
        terminal,
        ops: ops_addr,
        switch,
        token,
    }
}

fn spec() -> Spec {
    isoswitch::specs::builtin("iso87ascii")
        .expect("shipped")
        .expect("compiles")
}

fn auth(pan: &str, amount: &str, stan: u32) -> Message {
    let mut m = Message::new(Mti::from_static("0100"));
    let stan = format!("{stan:06}");
    for (n, v) in [
        (2, pan),
        (3, "000000"),
        (4, amount),
        (7, "1123184100"),
        (11, stan.as_str()),
        (14, "3012"),
        (41, "TERM0001"),
        (49, "840"),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

/// Sends each message on one connection and returns the responses in order.
async fn exchange(addr: SocketAddr, requests: &[Message]) -> Vec<Message> {
    let spec = spec();
    let stream = TcpStream::connect(addr).await.expect("connects");
    let mut framed = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
    let mut out = Vec::new();
    for request in requests {
        let wire = request.encode(&spec).expect("encodes");
        framed.send(Frame::new(wire)).await.expect("sends");
        let frame = tokio::time::timeout(WAIT, framed.next())
            .await
            .expect("answered in time")
            .expect("connection open")
            .expect("framing ok");
        out.push(Message::decode(&spec, frame.payload).expect("response decodes"));
    }
    out
}

/// A plain HTTP/1.1 request; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("answered in time")
        .expect("reads");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// Parsed exposition lines: (name, labels) → value.
fn samples(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once("=\"") {
                map.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
        }
        if let Ok(v) = value.parse() {
            out.insert((name.to_string(), map), v);
        }
    }
    out
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn transaction_counters_match_known_traffic_exactly() {
    let running = start(&config("obs-exact", "\"sim\"", "")).await;
    let mut requests = Vec::new();
    for i in 0..3 {
        requests.push(auth("4111111111111111", "000000000100", i + 1));
    }
    for i in 0..2 {
        requests.push(auth("4000000000000002", "000000000100", i + 10));
    }
    let mut missing_terminal = auth("4111111111111111", "000000000100", 20);
    missing_terminal.remove(41);
    requests.push(missing_terminal);
    let responses = exchange(running.terminal, &requests).await;
    let codes: Vec<_> = responses
        .iter()
        .map(|r| r.get_str(39).unwrap_or("").to_string())
        .collect();
    assert_eq!(codes, ["00", "00", "00", "05", "05", "30"]);

    let (status, body) = http(running.ops, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let listener = ("listener", "obs-exact");
    let by_code = |code| {
        value(
            &body,
            "isoswitch_transactions_total",
            &[listener, ("mti", "0100"), ("response_code", code)],
        )
    };
    assert_eq!(by_code("00"), 3.0);
    assert_eq!(by_code("05"), 2.0);
    assert_eq!(by_code("30"), 1.0);
    assert_eq!(
        value(
            &body,
            "isoswitch_transactions_total",
            &[listener, ("route", "all")]
        ),
        5.0,
        "the format error never reached routing"
    );
    assert_eq!(
        value(&body, "isoswitch_connections_accepted_total", &[listener]),
        1.0
    );
    assert_eq!(
        value(
            &body,
            "isoswitch_transaction_duration_seconds_count",
            &[listener]
        ),
        6.0
    );
    assert_eq!(
        value(
            &body,
            "isoswitch_issuer_requests_total",
            &[("issuer", "obs-exact-issuer")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &body,
            "isoswitch_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_timeout_is_counted_and_reversed_once() {
    let running = start(&config("obs-timeout", "\"sim\"", "")).await;
    let responses = exchange(
        running.terminal,
        &[auth("4111111111111111", "000000099950", 1)],
    )
    .await;
    assert_eq!(responses[0].get_str(39), Some("91"));
    let issuer = ("issuer", "obs-timeout-issuer");
    let ops = running.ops;
    let body = common::poll_until(
        "the issuer has acknowledged the reversal",
        WAIT,
        || async move {
            let body = http(ops, "GET", "/metrics", None).await.1;
            let acknowledged = value(&body, "isoswitch_reversals_acknowledged_total", &[issuer]);
            (acknowledged >= 1.0).then_some(body)
        },
    )
    .await;
    assert_eq!(
        value(&body, "isoswitch_issuer_timeouts_total", &[issuer]),
        1.0
    );
    assert_eq!(
        value(&body, "isoswitch_reversals_sent_total", &[issuer]),
        1.0
    );
    assert_eq!(
        value(&body, "isoswitch_reversals_acknowledged_total", &[issuer]),
        1.0
    );
    assert_eq!(value(&body, "isoswitch_saf_depth", &[issuer]), 0.0);
}

#[tokio::test]
async fn admin_endpoints_need_the_bearer_token() {
    let running = start(&config("obs-admin", "\"sim\"", "")).await;
    assert_eq!(http(running.ops, "GET", "/admin/routes", None).await.0, 401);
    assert_eq!(
        http(running.ops, "GET", "/admin/routes", Some("wrong"))
            .await
            .0,
        401
    );
    let (status, body) = http(running.ops, "GET", "/admin/routes", Some("s3cret")).await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(routes["routes"][0]["name"], "all");
    assert_eq!(routes["routes"][0]["issuer_available"], true);
    let (status, body) = http(running.ops, "GET", "/admin/issuers", Some("s3cret")).await;
    assert_eq!(status, 200);
    let issuers: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(issuers["issuers"][0]["name"], "obs-admin-issuer");
    // The embedded default is what a reload without a file re-reads.
    let (status, body) = http(running.ops, "POST", "/admin/reload", Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(running.switch.snapshot().generation, 2);
    assert_eq!(http(running.ops, "GET", "/healthz", None).await.0, 200);
}

// The simulator's port is held for the whole test, so while it is down no
// other process can take the port the switch keeps redialling.
#[tokio::test]
async fn readiness_follows_the_only_issuer_going_down_and_back() {
    let sim_config = Config::from_toml_str(&config("obs-ready-sim", "\"sim\"", ""), "sim")
        .expect("valid")
        .simulator
        .expect("has a simulator");
    let sim = Arc::new(isoswitch::simulator::Simulator::new(&sim_config).expect("simulator"));
    let port = common::HeldPort::new();
    let serve_simulator = |shutdown: CancellationToken| {
        tokio::spawn(isoswitch::simulator::serve(
            sim.clone(),
            port.listen(),
            Arc::new(spec()),
            FrameConfig::default(),
            shutdown,
        ))
    };
    let sim_token = CancellationToken::new();
    serve_simulator(sim_token.clone());
    let running = start(&config("obs-ready", &format!("\"{port}\""), "")).await;

    let readiness_is = |want: u16, what: &'static str| {
        let ops = running.ops;
        common::poll_until(what, WAIT, move || async move {
            (http(ops, "GET", "/readyz", None).await.0 == want).then_some(())
        })
    };
    readiness_is(200, "ready once the link is up").await;
    sim_token.cancel();
    readiness_is(503, "not ready with the only issuer down").await;
    let again = CancellationToken::new();
    serve_simulator(again.clone());
    readiness_is(200, "ready again after reconnecting").await;
    again.cancel();
}

/// Metric names in PromQL expressions, histogram suffixes folded onto their base.
fn names_in(expr: &str, exported: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("isoswitch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| exported.contains(*b)))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}

fn collect_json_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_json_exprs(v, out)),
        _ => {}
    }
}

/// Metrics only an event this test cannot stage exports (an approval whose
/// connection broke before its answer was written); each must still be a
/// metric name written in `src/`.
const NOT_STAGED: &[&str] = &["isoswitch_undelivered_approvals_total"];

/// The route may approve in the issuer's place: the dropped request is stood in for.
const STAND_IN: &str = "[route.stand_in]\nmax_amount = 100000\nmax_per_card_per_day = 5\n";

/// A risk rule that passes every test card, so its decision counters exist
/// without another test's reload having compiled some.
const RISK_RULE: &str =
    "[[risk.rule]]\nname = \"card-number\"\nkind = \"card-number\"\nmin_length = 12\nmax_length = 19\n";

/// A request forwarded to `issuer` that the journal never saw answered, as a
/// crash leaves it: in-doubt recovery reverses it.
fn forwarded_never_answered(issuer: &str) -> TxnStart {
    let request = auth("4111111111111111", "000000000100", 77);
    TxnStart {
        received_at_ms: isoswitch::journal::now_ms(),
        listener: "obs-names".into(),
        channel: "pos".into(),
        mti: Mti::from_static("0100"),
        processing_code: Some("000000".into()),
        pan: ClearPan::new("4111111111111111"),
        amount: Some(100),
        currency: Some(840),
        terminal_id: Some("TERM0001".into()),
        merchant_id: None,
        terminal_stan: Some("000077".into()),
        terminal_rrn: None,
        forward: Some(Forward {
            route: "all".into(),
            issuer: issuer.into(),
            upstream_stan: "900077".into(),
            upstream_rrn: None,
            reversal: ReversalFields::from_message(&request),
        }),
        original_id: None,
    }
}

/// Every `"isoswitch_…"` string literal under `src/`: the names the code can emit.
fn metric_names_in_src() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for literal in text.split("\"isoswitch_").skip(1) {
                    if let Some((rest, _)) = literal.split_once('"') {
                        out.insert(format!("isoswitch_{rest}"));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut out,
    );
    out
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    // A SQLite journal, so its writer's metrics are exported too: it takes
    // its metric handles when it opens, so the recorder goes first.
    metrics_http::recorder();
    let dir = tempfile::tempdir().expect("a temp dir");
    let journal = SqliteJournal::open(SqliteOptions::new(
        dir.path().join("journal.db"),
        DataKey::from_bytes([7; 32]),
    ))
    .expect("the journal opens");
    journal
        .begin(forwarded_never_answered("obs-names-issuer"))
        .await
        .expect("journaled");
    let stores = Stores::new(Arc::new(journal), true);
    let running = start_with(
        &config("obs-names", "\"sim\"", &format!("{RISK_RULE}{STAND_IN}")),
        stores,
    )
    .await;
    assert_eq!(
        running.switch.reverse_in_doubt(i64::MAX).await.ok(),
        Some(1),
        "recovery reverses the request left in doubt"
    );
    let mut advice = auth("4111111111111111", "000000000100", 9);
    advice.set_mti(Mti::from_static("0120"));
    let stood_in = exchange(
        running.terminal,
        &[
            auth("4111111111111111", "000000000100", 1),
            auth("4111111111111112", "000000000100", 2),
            auth("4111111111111111", "000000099950", 3),
            advice,
        ],
    )
    .await;
    assert_eq!(
        stood_in[2].get_str(39),
        Some("00"),
        "the dropped request is approved in stand-in"
    );
    // An undecodable body behind a valid length header: answered 30, counted.
    let stream = TcpStream::connect(running.terminal)
        .await
        .expect("connects");
    let mut framed = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
    framed
        .send(Frame::new(&b"0100garbage"[..]))
        .await
        .expect("sends");
    let answer = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("answered")
        .expect("open")
        .expect("frame");
    let answer = Message::decode(&spec(), answer.payload).expect("decodes");
    assert_eq!(answer.get_str(39), Some("30"));
    // A length header over the frame limit: that connection is closed, counted.
    let mut bad = TcpStream::connect(running.terminal)
        .await
        .expect("connects");
    bad.write_all(&[0xFF, 0xFF]).await.expect("writes");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, bad.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || rest.is_empty(),
        "no answer to a broken frame"
    );
    let reloaded = running
        .switch
        .reload(Config::from_toml_str(&config("obs-names", "\"sim\"", ""), "again").expect("valid"))
        .await;
    assert!(reloaded.is_ok());
    let refused = running
        .switch
        .reload_from(Some(std::path::Path::new("/nonexistent/isoswitch.toml")))
        .await;
    assert!(refused.is_err());
    let body = http(running.ops, "GET", "/metrics", None).await.1;
    let exported: BTreeSet<String> = samples(&body)
        .into_keys()
        .map(|(name, _)| name)
        .flat_map(|n| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).map(str::to_string));
            [Some(n), base].into_iter().flatten()
        })
        .collect();

    let root = env!("CARGO_MANIFEST_DIR");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/dashboards/isoswitch.json"))
            .expect("dashboard file"),
    )
    .expect("dashboard is JSON");
    let mut exprs = Vec::new();
    collect_json_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "dashboard has its panels");

    let alerts_text =
        std::fs::read_to_string(format!("{root}/dashboards/alerts.yml")).expect("alerts file");
    let docs = yaml_rust2::YamlLoader::load_from_str(&alerts_text).expect("alerts are YAML");
    let rules = docs[0]["groups"][0]["rules"].as_vec().expect("a rule list");
    assert!(rules.len() >= 5);
    for rule in rules {
        exprs.push(
            rule["expr"]
                .as_str()
                .expect("every rule has an expr")
                .to_string(),
        );
    }

    let used: BTreeSet<String> = exprs.iter().flat_map(|e| names_in(e, &exported)).collect();
    let missing: Vec<_> = used
        .difference(&exported)
        .filter(|name| !NOT_STAGED.contains(&name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported by the switch: {missing:?}"
    );
    let in_src = metric_names_in_src();
    for name in NOT_STAGED {
        assert!(used.contains(*name), "{name} is no longer used: drop it");
        assert!(in_src.contains(*name), "{name} is not a metric in src/");
    }
}

/// A YAML file of `dashboards/`.
fn dashboards_yaml(name: &str) -> yaml_rust2::Yaml {
    let path = format!("{}/dashboards/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{path} holds one document");
    docs.remove(0)
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let rules = dashboards_yaml("alerts.yml");
    let alerts: BTreeSet<&str> = rules["groups"]
        .as_vec()
        .expect("a group list")
        .iter()
        .flat_map(|group| group["rules"].as_vec().expect("a rule list"))
        .filter_map(|rule| rule["alert"].as_str())
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");

    let unit_tests = dashboards_yaml("alerts.test.yml");
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for test in unit_tests["tests"].as_vec().expect("a test list") {
        for case in test["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("a case names its alert");
            let expected = case["exp_alerts"].as_vec().map_or(0, Vec::len);
            if expected == 0 {
                silent.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    let never_fired: Vec<_> = alerts.difference(&fires).collect();
    assert!(never_fired.is_empty(), "no case fires {never_fired:?}");
    let never_silent: Vec<_> = alerts.difference(&silent).collect();
    assert!(
        never_silent.is_empty(),
        "no healthy case for {never_silent:?}"
    );
    let unknown: Vec<_> = fires
        .union(&silent)
        .filter(|n| !alerts.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "cases for alerts that do not exist: {unknown:?}"
    );
}

/// Every dashboard query as a recording rule, so promtool parses the PromQL.
fn dashboard_queries_as_rules() -> String {
    let path = format!("{}/dashboards/isoswitch.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    let mut exprs = Vec::new();
    collect_json_exprs(&dashboard, &mut exprs);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(expr).expect("a string serializes");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    rules
}

/// Prometheus's own checker and rule unit tests, and its parser over every
/// dashboard query; skipped without promtool, except under CI=true, where a
/// missing promtool fails.
#[test]
fn prometheus_accepts_the_alert_rules_and_passes_their_unit_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let promtool = |args: &[&str]| {
        std::process::Command::new("promtool")
            .args(args)
            .current_dir(root)
            .output()
    };
    match promtool(&["--version"]) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "promtool is missing under CI=true: install prometheus"
            );
            println!("skipped: install prometheus (promtool) to run");
            return;
        }
        Err(e) => panic!("promtool --version: {e}"),
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let queries = dir.path().join("dashboard_queries.yml");
    std::fs::write(&queries, dashboard_queries_as_rules()).expect("writes the queries");
    let queries = queries.to_str().expect("a UTF-8 temp path");
    for args in [
        ["check", "rules", "dashboards/alerts.yml"],
        ["test", "rules", "dashboards/alerts.test.yml"],
        ["check", "rules", queries],
    ] {
        let out = promtool(&args).unwrap_or_else(|e| panic!("promtool {}: {e}", args.join(" ")));
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
