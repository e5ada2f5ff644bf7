//! Velocity counts stay exact under parallel load on one card: the check and
//! the count are one step under the card's shard lock, and a decline by a
//! later rule takes its counts back, so no transaction slips past a limit and
//! none is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::Message;
use isoswitch::risk::{RiskContext, RiskRules, RiskState, Timestamp};

const POS: RiskContext<'static> = RiskContext {
    channel: Channel::Pos,
    listener: "pos",
};
const THREADS: usize = 8;
const PER_THREAD: usize = 2_000;

fn now() -> Timestamp {
    Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("test time")
}

fn compile(risk_toml: &str) -> RiskRules {
    let config = Config::from_toml_str(risk_toml, "test.toml").expect("valid config");
    RiskRules::compile(&config.risk, &RiskState::new()).expect("rules compile")
}

/// One card, a distinct STAN per request (so a duplicate rule never fires).
fn purchase(thread: usize, i: usize) -> Message {
    let mut m = Message::new("0200".parse().expect("mti"));
    for (n, v) in [
        (2, "4111111111111111".to_owned()),
        (3, "000000".to_owned()),
        (4, "000000001000".to_owned()),
        (7, "1123184105".to_owned()),
        (11, format!("{:06}", thread * PER_THREAD + i)),
        (41, "TERM0001".to_owned()),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

/// Runs every request from `THREADS` threads at once; returns how many passed.
fn hammer(rules: &RiskRules) -> usize {
    let passed = AtomicUsize::new(0);
    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (rules, passed, start) = (&rules, &passed, &start);
            scope.spawn(move || {
                let requests: Vec<Message> = (0..PER_THREAD).map(|i| purchase(thread, i)).collect();
                start.wait();
                for request in &requests {
                    if !rules.evaluate(&POS, request, now()).is_declined() {
                        passed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    passed.into_inner()
}

fn count_of(rules: &RiskRules, rule: &str) -> (u64, u64) {
    rules
        .velocity_of(rule, &POS, &purchase(0, 0), now())
        .expect("velocity rule")
}

#[test]
fn no_count_is_lost_under_parallel_load_on_one_card() {
    let rules = compile(
        "[[risk.rule]]\nname = \"v\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 60\nmax_count = 1000000\nmax_amount = 1000000000\n",
    );
    assert_eq!(hammer(&rules), THREADS * PER_THREAD);
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(count_of(&rules, "v"), (total, total * 1000));
}

#[test]
fn exactly_max_count_pass_under_parallel_load() {
    let rules = compile(
        "[[risk.rule]]\nname = \"v\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 60\nmax_count = 1234\n",
    );
    assert_eq!(hammer(&rules), 1234);
    assert_eq!(count_of(&rules, "v").0, 1234);
}

#[test]
fn exactly_max_amount_passes_under_parallel_load() {
    // 1 000 000 minor units at 1 000 a time: exactly 1 000 transactions.
    let rules = compile(
        "[[risk.rule]]\nname = \"v\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 86400\nmax_amount = 1000000\n",
    );
    assert_eq!(hammer(&rules), 1000);
    assert_eq!(count_of(&rules, "v"), (1000, 1_000_000));
}

#[test]
fn counts_taken_back_after_a_later_decline_stay_exact_under_parallel_load() {
    // "day" counts first; "minute" then declines all but 300, and the "day"
    // count each declined one made must be taken back.
    let rules = compile(
        r#"
[[risk.rule]]
name = "day"
kind = "velocity"
per = "card"
window_s = 86400
max_count = 100000
max_amount = 100000000
[[risk.rule]]
name = "minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 300
[[risk.rule]]
name = "dup"
kind = "duplicate"
"#,
    );
    assert_eq!(hammer(&rules), 300);
    assert_eq!(count_of(&rules, "day"), (300, 300_000));
    assert_eq!(count_of(&rules, "minute"), (300, 0));
}
