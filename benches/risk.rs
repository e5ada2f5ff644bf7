//! Risk evaluation speed: one full evaluation of a POS purchase against 50
//! rules (card checks, a 10 000-entry hotlist, acceptor lists, MCC and amount
//! rules scoped by MCC and merchant, card-not-present rules, duplicate and three
//! velocity rules) with 100 000 distinct cards already in the velocity maps.
//! Target: 300 ns a transaction on two cores. Run by hand:
//! `cargo bench --bench risk -- --warm-up-time 1 --measurement-time 3`.
//! The other cases split that figure: the same rules over 1 000 cards (their
//! lines in cache, though not all their pages in the TLB), and the stateless
//! and stateful rules apart; and one runs it on both cores at once, for the
//! machine's cost per transaction.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, Criterion};
use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::{Message, Mti};
use isoswitch::risk::{RiskContext, RiskRules, RiskState, Timestamp};

const CARDS: usize = 100_000;
const TERMINALS: usize = 1_000;
const HOTLIST_PANS: usize = 9_000;
const HOTLIST_BINS: usize = 1_000;

/// `body` with its Luhn check digit appended.
fn with_check_digit(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d = d * 2;
                if d > 9 {
                    d - 9
                } else {
                    d
                }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// A fixed pseudo-random sequence, so every run measures the same cards.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 11
}

/// 9 000 PANs and 1 000 disjoint 8-digit BIN ranges, none of them the
/// benchmark's cards (those start with 4, these with 5 and 36).
fn hotlist_file() -> std::path::PathBuf {
    let mut text = String::new();
    let mut seed = 8583;
    for i in 0..HOTLIST_PANS {
        let reason = ["lost", "stolen", "restricted"][i % 3];
        let pan = with_check_digit(&format!("5{:014}", next(&mut seed) % 100_000_000_000_000));
        let _ = writeln!(text, "{pan} {reason}");
    }
    for i in 0..HOTLIST_BINS {
        let low = 36_000_000 + i * 100;
        let _ = writeln!(text, "{low}-{} restricted", low + 49);
    }
    let path = std::env::temp_dir().join(format!(
        "isoswitch-bench-hotlist-{}.txt",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("temp dir is writable");
    path
}

/// 50 rules in the shape an acquirer runs.
fn fifty_rules(hotlist: &std::path::Path) -> String {
    let mut t = String::new();
    let terminals: Vec<String> = (0..TERMINALS).map(|i| format!("\"T{i:07}\"")).collect();
    let _ = write!(
        t,
        r#"
[[risk.rule]]
name = "card-number"
kind = "card-number"
[[risk.rule]]
name = "expiry"
kind = "expiry"
[[risk.rule]]
name = "hotlist"
kind = "hotlist"
file = "{}"
[[risk.rule]]
name = "terminals"
kind = "terminal"
known_terminals = [{}]
blocked_merchants = ["BAD0", "BAD1", "BAD2", "BAD3", "BAD4", "BAD5", "BAD6", "BAD7", "BAD8", "BAD9"]
[[risk.rule]]
name = "gambling"
kind = "mcc"
block = ["7995", "5966-5967", "7273"]
[[risk.rule]]
name = "vt-mccs"
kind = "mcc"
allow = ["5411", "5812-5814", "5999"]
applies_to = {{ channels = ["virtual-terminal"] }}
[[risk.rule]]
name = "currencies"
kind = "currency"
allow = ["840", "978", "826"]
[[risk.rule]]
name = "pos-amount"
kind = "amount"
min = 1
max = 1000000
applies_to = {{ channels = ["pos"] }}
[[risk.rule]]
name = "vt-amount"
kind = "amount"
max = 500000
applies_to = {{ channels = ["virtual-terminal"] }}
[[risk.rule]]
name = "vt-entry-mode"
kind = "entry-mode"
[[risk.rule]]
name = "vt-card-brand"
kind = "card-brand"
[[risk.rule]]
name = "pos-mir"
kind = "card-brand"
bins = ["2200-2204"]
applies_to = {{ channels = ["pos"] }}
[[risk.rule]]
name = "recurring"
kind = "recurring"
applies_to = {{ channels = ["virtual-terminal"] }}
[[risk.rule]]
name = "watch-wires"
kind = "mcc"
mode = "shadow"
block = ["4829"]
[[risk.rule]]
name = "watch-currency"
kind = "currency"
mode = "shadow"
allow = ["840"]
[[risk.rule]]
name = "watch-amount"
kind = "amount"
mode = "shadow"
max = 900000
[[risk.rule]]
name = "duplicate"
kind = "duplicate"
window_s = 60
[[risk.rule]]
name = "card-per-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 5
[[risk.rule]]
name = "card-per-day"
kind = "velocity"
per = "card"
window_s = 86400
max_count = 1000
max_amount = 2000000
[[risk.rule]]
name = "terminal-per-minute"
kind = "velocity"
per = "terminal"
window_s = 60
max_count = 120
"#,
        hotlist.display(),
        terminals.join(", ")
    );
    // 20 per-MCC ceilings and 10 per-merchant MCC allowlists: 50 in all.
    for i in 0..20 {
        let _ = write!(
            t,
            "[[risk.rule]]\nname = \"mcc-{i}\"\nkind = \"amount\"\nmax = {}\napplies_to = {{ mccs = [\"{}\"] }}\n",
            10_000 * (i + 1),
            5500 + i
        );
    }
    for i in 0..10 {
        let _ = write!(
            t,
            "[[risk.rule]]\nname = \"merchant-{i}\"\nkind = \"mcc\"\nallow = [\"5411\", \"5999\"]\napplies_to = {{ merchants = [\"M{i:014}\"] }}\n"
        );
    }
    t
}

/// One POS purchase per card, terminals and merchants spread across them.
fn requests() -> Vec<Message> {
    let mut seed = 7;
    (0..CARDS)
        .map(|i| {
            let pan = with_check_digit(&format!("4{:014}", next(&mut seed) % 100_000_000_000_000));
            let mut m = Message::new(Mti::from_static("0200"));
            let fields: [(u8, String); 12] = [
                (2, pan),
                (3, "000000".into()),
                (4, "000000000100".into()),
                (7, "1123184100".into()),
                (11, format!("{:06}", i % 1_000_000)),
                (14, "3012".into()),
                (18, "5411".into()),
                (22, "051".into()),
                (25, "00".into()),
                (41, format!("T{:07}", i % TERMINALS)),
                (42, format!("M{:014}", i % 20)),
                (49, "840".into()),
            ];
            for (n, v) in fields {
                m.set(n, v).expect("data field");
            }
            m
        })
        .collect()
}

/// The rules of `text` (as [`fifty_rules`] writes them) that `keep` accepts.
fn rules_where(text: &str, keep: impl Fn(&str) -> bool) -> String {
    text.split("[[risk.rule]]")
        .skip(1)
        .filter(|rule| keep(rule))
        .map(|rule| format!("[[risk.rule]]{rule}"))
        .collect()
}

fn is_stateful(rule: &str) -> bool {
    rule.contains("kind = \"velocity\"") || rule.contains("kind = \"duplicate\"")
}

fn risk(c: &mut Criterion) {
    let hotlist = hotlist_file();
    let config = Config::from_toml_str(&fifty_rules(&hotlist), "bench").expect("valid config");
    let state = RiskState::new();
    let rules = RiskRules::compile(&config.risk, &state).expect("rules compile");
    assert_eq!(rules.summaries().len(), 50);
    let requests = requests();
    let ctx = RiskContext {
        channel: Channel::Pos,
        listener: "pos",
    };
    let start = Timestamp::parse_utc("2026-11-23T00:00:00Z").expect("time");
    // Every card in the velocity maps before measuring.
    for (i, request) in requests.iter().enumerate() {
        let decision = rules.evaluate(&ctx, request, start.plus_ms(i as u64));
        assert!(!decision.is_declined(), "{:?}", decision.decline);
    }
    assert!(state.tracked_keys() >= 3 * CARDS);

    // A decline returns early and skips rules, which would flatter the
    // figures: every case counts them, and the run fails if any was measured.
    let declined = AtomicU64::new(0);
    let first_decline = OnceLock::new();
    // One measured evaluation: `rules` on the `index`th request at `at` ms.
    let measure = |case: &str, rules: &RiskRules, index: u64, at: u64| {
        let request = &requests[(index % CARDS as u64) as usize];
        let decision = rules.evaluate(black_box(&ctx), black_box(request), start.plus_ms(at));
        if let Some(hit) = decision.decline {
            declined.fetch_add(1, Ordering::Relaxed);
            let _ = first_decline.set(format!("{case}: {} ({})", hit.rule, hit.response_code));
        }
        black_box(decision.is_declined())
    };

    let mut group = c.benchmark_group("risk");
    // One clock, in ms after `start`, for every case on this shared state, so
    // no card's time ever goes back. A millisecond per transaction: each card
    // comes back every 100 s, after its duplicate record and minute window
    // have passed, as in real traffic.
    let mut clock = CARDS as u64;
    group.bench_function("evaluate_50_rules_100k_cards", |b| {
        b.iter(|| {
            clock += 1;
            measure("100k cards", &rules, clock, clock)
        })
    });
    // The same with both cores evaluating at once, as the switch runs on a
    // 2-core machine: one shared state, each thread its own half of the cards
    // and terminals (even and odd), so each card's time still only moves on.
    // The figure is wall time over transactions, the machine's cost per
    // transaction; criterion's slope leaves out the threads' start.
    group.bench_function("evaluate_50_rules_100k_cards_two_threads", |b| {
        b.iter_custom(|iters| {
            let base = clock;
            let began = std::time::Instant::now();
            std::thread::scope(|scope| {
                for parity in 0..2 {
                    let (rules, measure) = (&rules, &measure);
                    // Thread 0 takes base + 1, base + 3, ...; thread 1 the rest.
                    let count = (iters + 1 - parity) / 2;
                    scope.spawn(move || {
                        for n in 0..count {
                            let at = base + 2 * n + parity + 1;
                            measure("two threads", rules, at, at);
                        }
                    });
                }
            });
            let elapsed = began.elapsed();
            clock = base + iters;
            elapsed
        })
    });
    // Where the time goes: the same rules over 1 000 cards (their lines in cache),
    // and the stateless and stateful rules apart over all 100 000. These
    // cards were last seen up to 100 s ago in the order above: let 100 s go
    // by, or the first of them would come back as duplicates.
    clock += 100_000;
    group.bench_function("evaluate_50_rules_1k_cards", |b| {
        b.iter(|| {
            // 100 ms apart, so each card comes back every 100 s here too.
            clock += 100;
            measure("1k cards", &rules, clock / 100 % 1_000, clock)
        })
    });
    let text = fifty_rules(&hotlist);
    for (name, part) in [
        (
            "stateless_46_rules_100k_cards",
            rules_where(&text, |r| !is_stateful(r)),
        ),
        (
            "stateful_4_rules_100k_cards",
            rules_where(&text, is_stateful),
        ),
    ] {
        let config = Config::from_toml_str(&part, "bench").expect("valid config");
        let part = RiskRules::compile(&config.risk, &RiskState::new()).expect("rules compile");
        for (i, request) in requests.iter().enumerate() {
            part.evaluate(&ctx, request, start.plus_ms(i as u64));
        }
        let mut j = CARDS as u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                j += 1;
                measure(name, &part, j, j)
            })
        });
    }
    let default = Config::embedded_default().expect("default config");
    let card_checks = RiskRules::compile(&default.risk, &RiskState::new()).expect("compiles");
    let mut i = 0u64;
    group.bench_function("evaluate_default_card_checks", |b| {
        b.iter(|| {
            i += 1;
            measure("default card checks", &card_checks, i, i)
        })
    });
    group.finish();
    let _ = std::fs::remove_file(hotlist);
    let declined = declined.into_inner();
    assert_eq!(
        declined,
        0,
        "{declined} measured evaluations declined, the first in {}",
        first_decline.get().map_or("?", String::as_str)
    );
}

criterion_group!(benches, risk);
criterion_main!(benches);
