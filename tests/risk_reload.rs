//! Reload: rules compiled again from a new config share the running state, so
//! a velocity or duplicate rule keeps its counts while it is unchanged (same
//! name, kind, key, window, scope) and starts afresh when it changes.

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::Message;
use isoswitch::risk::{RiskContext, RiskRules, RiskState, Timestamp};
use std::sync::Arc;

const POS: RiskContext<'static> = RiskContext {
    channel: Channel::Pos,
    listener: "pos",
};

fn now() -> Timestamp {
    Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("test time")
}

fn compile(risk_toml: &str, state: &Arc<RiskState>) -> RiskRules {
    let config = Config::from_toml_str(risk_toml, "test.toml").expect("valid config");
    RiskRules::compile(&config.risk, state).expect("rules compile")
}

fn purchase(stan: &str) -> Message {
    let mut m = Message::new("0200".parse().expect("mti"));
    for (n, v) in [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000001000"),
        (7, "1123184105"),
        (11, stan),
        (41, "TERM0001"),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

const PER_MINUTE_5: &str = r#"
[[risk.rule]]
name = "per-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 5
"#;

fn count(rules: &RiskRules) -> u64 {
    rules
        .velocity_of("per-minute", &POS, &purchase("000000"), now())
        .expect("velocity rule")
        .0
}

fn pay(rules: &RiskRules, times: usize) {
    for i in 0..times {
        rules.evaluate(&POS, &purchase(&format!("{i:06}")), now());
    }
}

#[test]
fn an_unchanged_velocity_rule_keeps_its_counts() {
    let state = RiskState::new();
    let before = compile(PER_MINUTE_5, &state);
    pay(&before, 3);
    let after = compile(
        &format!("{PER_MINUTE_5}\n[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n"),
        &state,
    );
    assert_eq!(count(&after), 3);
    pay(&after, 2);
    let sixth = after.evaluate(&POS, &purchase("000099"), now());
    assert_eq!(
        sixth.response_code().map(|c| c.to_string()),
        Some("65".to_owned()),
        "3 before the reload + 2 after reach the limit of 5"
    );
    // The old snapshot is still being read by in-flight transactions: same counts.
    assert_eq!(count(&before), 5);
}

#[test]
fn a_new_limit_or_mode_keeps_the_counts() {
    let state = RiskState::new();
    let before = compile(PER_MINUTE_5, &state);
    pay(&before, 4);
    let raised = compile(
        &PER_MINUTE_5.replace("max_count = 5", "max_count = 10\nmode = \"shadow\""),
        &state,
    );
    assert_eq!(count(&raised), 4);
}

#[test]
fn a_changed_window_or_name_starts_afresh() {
    let state = RiskState::new();
    let before = compile(PER_MINUTE_5, &state);
    pay(&before, 4);
    let wider = compile(
        &PER_MINUTE_5.replace("window_s = 60", "window_s = 120"),
        &state,
    );
    assert_eq!(count(&wider), 0);
    let renamed = compile(
        &PER_MINUTE_5.replace("name = \"per-minute\"", "name = \"per-min\""),
        &state,
    );
    assert_eq!(
        renamed.velocity_of("per-min", &POS, &purchase("000000"), now()),
        Some((0, 0))
    );
    let rescoped = compile(
        &format!("{PER_MINUTE_5}applies_to = {{ channels = [\"pos\"] }}\n"),
        &state,
    );
    assert_eq!(count(&rescoped), 0);
}

#[test]
fn a_reload_changing_one_velocity_rule_keeps_the_others_counts() {
    let config = |day_window: u64| {
        format!(
            "{PER_MINUTE_5}[[risk.rule]]\nname = \"day\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = {day_window}\nmax_count = 100\n"
        )
    };
    let state = RiskState::new();
    let before = compile(&config(86_400), &state);
    pay(&before, 3);
    let after = compile(&config(3_600), &state);
    let day = |rules: &RiskRules| rules.velocity_of("day", &POS, &purchase("000099"), now());
    assert_eq!(count(&after), 3);
    assert_eq!(day(&after), Some((0, 0)));
    after.evaluate(&POS, &purchase("000098"), now());
    assert_eq!(count(&before), 4, "one window for both snapshots");
    assert_eq!(day(&before), Some((3, 0)));
}

#[test]
fn a_removed_rule_frees_its_state_with_the_last_snapshot_using_it() {
    let state = RiskState::new();
    let before = compile(PER_MINUTE_5, &state);
    pay(&before, 3);
    assert_eq!(state.tracked_keys(), 1);
    let without = compile("[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n", &state);
    assert_eq!(state.tracked_keys(), 1, "the old snapshot still holds it");
    drop(before);
    assert_eq!(state.tracked_keys(), 0);
    let back = compile(PER_MINUTE_5, &state);
    assert_eq!(count(&back), 0);
    drop(without);
}

#[test]
fn duplicate_records_survive_a_reload() {
    let state = RiskState::new();
    let dup = "[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\n";
    let before = compile(dup, &state);
    assert!(!before
        .evaluate(&POS, &purchase("000001"), now())
        .is_declined());
    let after = compile(dup, &state);
    assert!(after
        .evaluate(&POS, &purchase("000001"), now())
        .is_declined());
}

const RECURRING: &str = "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\n";

/// A cardholder's purchase at a shop and a merchant-initiated charge there.
fn cit_and_mit() -> (Message, Message) {
    let mut cit = purchase("000001");
    cit.set(42, "SHOP1").expect("field");
    let mut mit = cit.clone();
    mit.set(25, "08").expect("field");
    (cit, mit)
}

#[test]
fn cardholder_initiated_approvals_survive_any_reload() {
    let state = RiskState::new();
    let (cit, mit) = cit_and_mit();
    let before = compile(RECURRING, &state);
    before.record_approval(&cit, now());
    let after = compile(
        "[[risk.rule]]\nname = \"mit-renamed\"\nkind = \"recurring\"\ncit_valid_days = 30\n",
        &state,
    );
    assert!(!after.evaluate(&POS, &mit, now()).is_declined());
}

#[test]
fn rules_compiled_but_never_installed_cut_nothing_the_running_rules_keep() {
    let state = RiskState::new();
    let (cit, mit) = cit_and_mit();
    let running = compile(RECURRING, &state);
    running.record_approval(&cit, now());
    // A reload is refused after its rules compiled (an issuer's TLS file is
    // missing, say): one without a recurring rule, one keeping approvals a day.
    for refused in [
        "[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n",
        "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\ncit_valid_days = 1\n",
    ] {
        drop(compile(refused, &state));
    }
    // The sweeps of the next days keep the 400-day approval.
    let three_days_on = now().plus_ms(3 * 86_400_000);
    state.expire(three_days_on);
    assert_eq!(state.tracked_keys(), 1);
    assert!(!running.evaluate(&POS, &mit, three_days_on).is_declined());
}

#[test]
fn approvals_go_once_no_live_rules_have_a_recurring_rule() {
    let state = RiskState::new();
    let (cit, _) = cit_and_mit();
    let before = compile(RECURRING, &state);
    before.record_approval(&cit, now());
    let _after = compile("[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n", &state);
    state.expire(now().plus_ms(1_000));
    assert_eq!(
        state.tracked_keys(),
        1,
        "the old snapshot may still be serving"
    );
    drop(before);
    state.expire(now().plus_ms(2_000));
    assert_eq!(state.tracked_keys(), 0);
}

#[test]
fn a_reload_reads_the_hotlist_file_again() {
    let dir = std::env::temp_dir().join(format!("isoswitch-risk-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("hotlist.txt");
    std::fs::write(&file, "4000000000000010 lost\n").expect("write hotlist");
    let config = format!(
        "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = \"{}\"\n",
        file.display()
    );
    let state = RiskState::new();
    let before = compile(&config, &state);
    assert!(!before
        .evaluate(&POS, &purchase("000001"), now())
        .is_declined());
    std::fs::write(&file, "4111111111111111 stolen\n").expect("write hotlist");
    let after = compile(&config, &state);
    let decision = after.evaluate(&POS, &purchase("000001"), now());
    assert_eq!(
        decision.response_code().map(|c| c.to_string()),
        Some("43".into())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_keys_expire_so_memory_stays_bounded() {
    let state = RiskState::new();
    let rules = compile(
        &format!(
            "{PER_MINUTE_5}\n[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\nwindow_s = 60\n"
        ),
        &state,
    );
    let mut msg = purchase("000001");
    for i in 0..1000u64 {
        // Distinct Luhn-irrelevant cards: velocity keys on the PAN only.
        msg.set(2, format!("4{i:015}")).expect("field");
        msg.set(11, format!("{:06}", i % 1_000_000)).expect("field");
        rules.evaluate(&POS, &msg, now());
    }
    assert_eq!(state.tracked_keys(), 2000);
    state.expire(now().plus_ms(30_000));
    assert_eq!(state.tracked_keys(), 2000, "still within the windows");
    state.expire(now().plus_ms(120_000));
    assert_eq!(state.tracked_keys(), 0);
}

#[test]
fn new_keys_beyond_the_cap_pass_untracked() {
    let state = RiskState::new();
    let rules = compile(
        &format!("[risk]\nmax_keys_per_rule = 10\n{PER_MINUTE_5}"),
        &state,
    );
    let mut msg = purchase("000001");
    for i in 0..20u64 {
        msg.set(2, format!("4{i:015}")).expect("field");
        assert!(!rules.evaluate(&POS, &msg, now()).is_declined());
    }
    assert_eq!(state.tracked_keys(), 10);
}
