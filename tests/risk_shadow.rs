//! Shadow mode, and what every firing rule leaves behind: a shadow rule is
//! evaluated, counted and logged as "would decline with NN" but never
//! declines; an enforcing one declines, and both are counted in
//! `isoswitch_risk_decisions_total{rule, response_code, mode}` and named in
//! a log line that never holds a full PAN.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::{Message, ResponseCode};
use isoswitch::risk::{Mode, RiskContext, RiskRules, RiskState, Timestamp};

const POS: RiskContext<'static> = RiskContext {
    channel: Channel::Pos,
    listener: "pos",
};

fn now() -> Timestamp {
    Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("test time")
}

fn rules(risk_toml: &str) -> RiskRules {
    install_log_capture();
    // Metric handles are taken when rules compile: the recorder comes first.
    isoswitch::metrics_http::recorder();
    let config = Config::from_toml_str(risk_toml, "test.toml").expect("valid config");
    RiskRules::compile(&config.risk, &RiskState::new()).expect("rules compile")
}

fn purchase(pan: &str, expiry: &str, stan: &str) -> Message {
    let mut m = Message::new("0200".parse().expect("mti"));
    for (n, v) in [
        (2, pan),
        (3, "000000"),
        (4, "000000001000"),
        (7, "1123184105"),
        (11, stan),
        (14, expiry),
        (41, "TERM0001"),
        (49, "840"),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

/// The value of `isoswitch_risk_decisions_total` for these labels, 0 if absent.
fn decisions(rule: &str, code: &str, mode: &str) -> u64 {
    let text = isoswitch::metrics_http::recorder().render();
    text.lines()
        .filter(|l| l.starts_with("isoswitch_risk_decisions_total{"))
        .filter(|l| {
            l.contains(&format!("rule=\"{rule}\""))
                && l.contains(&format!("response_code=\"{code}\""))
                && l.contains(&format!("mode=\"{mode}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

thread_local! {
    /// Where this thread's log lines go while `logs_of` runs on it.
    static CAPTURE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

struct ThreadBuffer;

impl Write for ThreadBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with_borrow_mut(|buffer| {
            if let Some(buffer) = buffer {
                buffer.extend_from_slice(data);
            }
        });
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One subscriber, the process-wide default, writing into a buffer owned by
/// the thread that emitted the event. A thread-scoped subscriber
/// (`with_default`) would race: tracing caches each callsite's interest
/// process-wide, and a parallel test reaching the same `info!` first, with
/// no subscriber on its thread, would cache "never" and silence it here.
/// Every test calls this (through `rules`) before it evaluates anything, and
/// `Once` holds the others back until it is in, so no callsite is ever
/// registered without it.
fn install_log_capture() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        tracing_subscriber::fmt()
            .with_writer(|| ThreadBuffer)
            .with_ansi(false)
            .init();
    });
}

/// Log lines written on this thread while `f` runs.
fn logs_of(f: impl FnOnce()) -> String {
    install_log_capture();
    CAPTURE.set(Some(Vec::new()));
    f();
    let bytes = CAPTURE.take().expect("capture buffer set above");
    String::from_utf8(bytes).expect("utf-8 logs")
}

#[test]
fn a_shadow_rule_fires_but_does_not_decline() {
    let rules = rules("[[risk.rule]]\nname = \"exp-s1\"\nkind = \"expiry\"\nmode = \"shadow\"\n");
    let decision = rules.evaluate(&POS, &purchase("4111111111111111", "2001", "000001"), now());
    assert!(!decision.is_declined());
    assert_eq!(decision.response_code(), None);
    assert_eq!(decision.shadow.len(), 1);
    let hit = decision.shadow[0];
    assert_eq!(
        (hit.rule, hit.kind, hit.response_code, hit.mode),
        ("exp-s1", "expiry", ResponseCode::EXPIRED_CARD, Mode::Shadow)
    );
}

#[test]
fn shadow_and_enforce_firings_are_counted_by_rule_code_and_mode() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "exp-s2"
kind = "expiry"
mode = "shadow"
[[risk.rule]]
name = "pan-e2"
kind = "card-number"
"#,
    );
    rules.evaluate(&POS, &purchase("4111111111111111", "2001", "000001"), now());
    rules.evaluate(&POS, &purchase("4111111111111111", "2001", "000002"), now());
    rules.evaluate(&POS, &purchase("4111111111111112", "2812", "000003"), now());
    rules.evaluate(&POS, &purchase("4111111111111111", "2812", "000004"), now());
    assert_eq!(decisions("exp-s2", "54", "shadow"), 2);
    assert_eq!(decisions("pan-e2", "14", "enforce"), 1);
    assert_eq!(decisions("exp-s2", "54", "enforce"), 0);
}

#[test]
fn a_shadow_rule_is_logged_as_would_decline_with_its_code() {
    let rules = rules("[[risk.rule]]\nname = \"exp-s3\"\nkind = \"expiry\"\nmode = \"shadow\"\n");
    let logs = logs_of(|| {
        rules.evaluate(&POS, &purchase("4111111111111111", "2001", "000001"), now());
    });
    assert!(
        logs.contains("risk rule exp-s3 would decline with 54"),
        "{logs}"
    );
    assert!(logs.contains("mode=\"shadow\""), "{logs}");
    assert!(logs.contains("411111******1111"), "{logs}");
    assert!(!logs.contains("4111111111111111"), "full PAN in {logs}");
}

#[test]
fn an_enforcing_decline_names_its_rule_in_the_log_line() {
    let rules = rules("[[risk.rule]]\nname = \"pan-e4\"\nkind = \"card-number\"\n");
    let logs = logs_of(|| {
        rules.evaluate(&POS, &purchase("4111111111111112", "2812", "000001"), now());
    });
    assert!(logs.contains("risk rule pan-e4 declined with 14"), "{logs}");
    assert!(logs.contains("rule=\"pan-e4\""), "{logs}");
    assert!(logs.contains("mode=\"enforce\""), "{logs}");
    assert!(!logs.contains("4111111111111112"), "full PAN in {logs}");
}

#[test]
fn shadow_hits_before_an_enforcing_decline_are_reported_with_it() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "exp-s5"
kind = "expiry"
mode = "shadow"
[[risk.rule]]
name = "brand-e5"
kind = "card-brand"
applies_to = { channels = ["pos"] }
"#,
    );
    let decision = rules.evaluate(&POS, &purchase("6212345678901232", "2001", "000001"), now());
    let hit = decision.decline.expect("declined");
    assert_eq!((hit.rule, hit.response_code.as_str()), ("brand-e5", "57"));
    assert_eq!(decision.shadow.len(), 1);
    assert_eq!(decision.shadow[0].rule, "exp-s5");
}

#[test]
fn a_shadow_velocity_rule_counts_what_it_would_decline() {
    let rules = rules(
        "[[risk.rule]]\nname = \"v-s6\"\nkind = \"velocity\"\nmode = \"shadow\"\nper = \"card\"\nwindow_s = 60\nmax_count = 2\n",
    );
    let msg = purchase("4111111111111111", "2812", "000001");
    let shadowed: Vec<bool> = (0..4)
        .map(|_| {
            let d = rules.evaluate(&POS, &msg, now());
            assert!(!d.is_declined());
            !d.shadow.is_empty()
        })
        .collect();
    assert_eq!(shadowed, [false, false, true, true]);
    // Each went on to the issuer, so each is counted.
    assert_eq!(rules.velocity_of("v-s6", &POS, &msg, now()), Some((4, 0)));
    assert_eq!(decisions("v-s6", "65", "shadow"), 2);
}

#[test]
fn a_shadow_duplicate_rule_lets_the_repeat_through() {
    let rules =
        rules("[[risk.rule]]\nname = \"dup-s7\"\nkind = \"duplicate\"\nmode = \"shadow\"\n");
    let msg = purchase("4111111111111111", "2812", "000001");
    assert!(rules.evaluate(&POS, &msg, now()).shadow.is_empty());
    let repeat = rules.evaluate(&POS, &msg, now());
    assert!(!repeat.is_declined());
    assert_eq!(
        repeat.shadow[0].response_code,
        ResponseCode::DUPLICATE_TRANSMISSION
    );
}
