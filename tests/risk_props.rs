//! Fuzz-style properties of the risk rules: whatever a request carries, an
//! evaluation answers with a rule that is configured and a code that rule can
//! give; whatever a rule table says, compiling it succeeds or says what is
//! wrong. Neither ever panics.

mod risk_common;

use std::sync::OnceLock;

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::Message;
use isoswitch::risk::{Hit, Mode, RiskContext, RiskRules, RiskState, RuleSummary, Timestamp};
use proptest::prelude::*;
use risk_common::{example_config_text, purchase, PURCHASE};

/// The example config (one rule of every kind) with two shadow rules added,
/// its hotlist path made absolute, compiled with fresh state. The config is
/// read and parsed once; each case compiles its own rules.
fn example_rules() -> RiskRules {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let text = example_config_text()
            + r#"
[[risk.rule]]
name = "watch-amount"
kind = "amount"
mode = "shadow"
max = 500
[[risk.rule]]
name = "watch-terminal"
kind = "velocity"
mode = "shadow"
per = "terminal"
window_s = 60
max_count = 2
"#;
        Config::from_toml_str(&text, "example").expect("example config is valid")
    });
    RiskRules::compile(&config.risk, &RiskState::new()).expect("example rules compile")
}

/// What one field of a request becomes: removed, digits of any length, or
/// any bytes at all.
fn field_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        "[0-9]{0,24}".prop_map(|s| Some(s.into_bytes())),
        "[0-9A-Za-z ]{1,20}".prop_map(|s| Some(s.into_bytes())),
        proptest::collection::vec(any::<u8>(), 1..24).prop_map(Some),
    ]
}

/// Values some rule of the example config reacts to: a hotlisted card, a
/// UnionPay card, a blocked terminal and merchant, gambling and fuel MCCs,
/// chip and contactless entry, the recurring marker, another currency; and
/// new STANs and amounts, so requests are not all one transmission.
fn meaningful() -> impl Strategy<Value = (u8, Option<Vec<u8>>)> {
    let known = proptest::sample::select(vec![
        (2, "4000000000000010"),
        (2, "6212345678901232"),
        (2, "4111111111111111"),
        (18, "7995"),
        (18, "5542"),
        (18, "4829"),
        (22, "051"),
        (22, "071"),
        (25, "08"),
        (41, "TERM6666"),
        (41, "TERM0002"),
        (42, "FRAUDSHOP000001"),
        (49, "978"),
        (49, "124"),
    ])
    .prop_map(|(n, v): (u8, &str)| (n, Some(v.as_bytes().to_vec())));
    prop_oneof![
        known,
        "[0-9]{6}".prop_map(|v| (11, Some(v.into_bytes()))),
        "[0-9]{12}".prop_map(|v| (4, Some(v.into_bytes()))),
    ]
}

/// The purchase with some of its fields (and field 90 or 126) changed.
fn request() -> impl Strategy<Value = Message> {
    let fields = prop_oneof![
        proptest::sample::select(PURCHASE.map(|(n, _)| n).to_vec()),
        Just(90u8),
        Just(126u8),
    ];
    let change = prop_oneof![(fields, field_value()), meaningful()];
    (
        proptest::sample::select(vec!["0100", "0101", "0200", "0220", "0400"]),
        proptest::collection::vec(change, 0..6),
    )
        .prop_map(|(mti, changes)| {
            let mut msg = purchase(&[]);
            msg.set_mti(mti.parse().expect("mti"));
            for (n, value) in changes {
                match value {
                    Some(v) => {
                        msg.set(n, v).expect("a data field takes any bytes");
                    }
                    None => {
                        msg.remove(n);
                    }
                }
            }
            msg
        })
}

/// Mostly 2023-2028, when the purchase's card (expiring 12/28) is valid and
/// every rule gets to look; sometimes any time a `u64` holds.
fn time() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        3 => 1_672_531_200_000u64..1_861_920_000_000,
        1 => any::<u64>(),
    ]
    .prop_map(Timestamp::from_unix_ms)
}

fn channel() -> impl Strategy<Value = Channel> {
    proptest::sample::select(vec![Channel::Pos, Channel::VirtualTerminal, Channel::Host])
}

/// `hit` names a configured rule, in the mode it runs in, with a code it can give.
fn check_hit(summaries: &[RuleSummary], hit: &Hit<'_>, mode: Mode) -> Result<(), TestCaseError> {
    let rule = summaries.iter().find(|s| s.name == hit.rule);
    let Some(rule) = rule else {
        return Err(TestCaseError::fail(format!(
            "{} is not configured",
            hit.rule
        )));
    };
    prop_assert_eq!(rule.mode, mode, "{}", hit.rule);
    prop_assert_eq!(hit.mode, mode, "{}", hit.rule);
    prop_assert_eq!(hit.kind, rule.kind, "{}", hit.rule);
    prop_assert!(
        rule.codes.contains(&hit.response_code),
        "{} gave {}, not one of {:?}",
        hit.rule,
        hit.response_code,
        rule.codes
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_decision_names_a_configured_rule_and_one_of_its_codes(
        requests in proptest::collection::vec((request(), channel(), time()), 1..8),
    ) {
        // One rule set across the requests, so stateful rules see a history.
        let rules = example_rules();
        for (msg, channel, at) in &requests {
            let ctx = RiskContext { channel: *channel, listener: "pos" };
            let decision = rules.evaluate(&ctx, msg, *at);
            if let Some(hit) = &decision.decline {
                check_hit(rules.summaries(), hit, Mode::Enforce)?;
            }
            for hit in &decision.shadow {
                check_hit(rules.summaries(), hit, Mode::Shadow)?;
            }
            prop_assert_eq!(decision.is_declined(), decision.response_code().is_some());
        }
    }

    #[test]
    fn the_rules_without_state_decide_a_request_the_same_every_time(
        msg in request(),
        channel in channel(),
        at in time(),
    ) {
        let rules = example_rules();
        let ctx = RiskContext { channel, listener: "pos" };
        let first = rules.evaluate(&ctx, &msg, at);
        let again = rules.evaluate(&ctx, &msg, at);
        let stateless = |hit: &Hit<'_>| !matches!(hit.kind, "velocity" | "duplicate");
        // A stateless decline comes before any stateful rule runs.
        if let Some(hit) = first.decline.as_ref().filter(|h| stateless(h)) {
            prop_assert_eq!(again.decline.map(|h| (h.rule, h.response_code)), Some((hit.rule, hit.response_code)));
        }
        let shadows = |d: &isoswitch::risk::Decision<'_>| -> Vec<(String, String)> {
            d.shadow.iter().filter(|h| stateless(h)).map(|h| (h.rule.to_owned(), h.response_code.to_string())).collect()
        };
        prop_assert_eq!(shadows(&first), shadows(&again));
    }
}

/// One `[[risk.rule]]` table of a known kind with keys drawn from every kind's
/// keys, valid or not, and values of any TOML type.
fn rule_table() -> impl Strategy<Value = String> {
    let kinds = vec![
        "card-number",
        "expiry",
        "hotlist",
        "terminal",
        "mcc",
        "currency",
        "amount",
        "velocity",
        "entry-mode",
        "card-brand",
        "recurring",
        "duplicate",
        "luhn",
    ];
    let keys = vec![
        "min_length",
        "max_length",
        "file",
        "known_terminals",
        "known_merchants",
        "blocked_terminals",
        "blocked_merchants",
        "allow",
        "block",
        "response_code",
        "min",
        "max",
        "per",
        "window_s",
        "max_count",
        "max_amount",
        "refuse",
        "brands",
        "bins",
        "mit_field",
        "mit_values",
        "cit_valid_days",
        "mode",
        "applies_to",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        proptest::sample::select(vec![
            "\"card\"",
            "\"terminal\"",
            "\"shadow\"",
            "\"enforce\"",
            "\"57\"",
            "\"13\"",
            "\"5411\"",
            "\"5960-5969\"",
            "\"9999-0001\"",
            "\"\"",
            "\"unionpay\"",
            "\"05\"",
            "\"no/such/file\"",
            "true",
            "1.5",
            "[]",
            "[\"840\", \"x\"]",
            "[\"5411\", \"7995\"]",
            "[\"T1\", \"T1\"]",
            "[\"2200-2204\"]",
            "[\"62\"]",
            "{ channels = [\"pos\"] }",
            "{ listeners = [\"nowhere\"] }",
            "{ mccs = [\"60\"] }",
            "{ merchants = [] }",
        ])
        .prop_map(str::to_owned),
    ];
    (
        proptest::sample::select(kinds),
        proptest::collection::btree_map(proptest::sample::select(keys), value, 0..5),
    )
        .prop_map(|(kind, keys)| {
            let mut table = format!("[[risk.rule]]\nname = \"r\"\nkind = \"{kind}\"\n");
            for (key, value) in keys {
                table += &format!("{key} = {value}\n");
            }
            table
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_rule_table_compiles_or_the_error_says_where(table in rule_table()) {
        let text = format!("[risk]\n{table}");
        let compiled = Config::from_toml_str(&text, "prop.toml").map_err(|e| e.to_string()).and_then(|config| {
            RiskRules::compile(&config.risk, &RiskState::new()).map_err(|e| e.to_string())
        });
        match compiled {
            Ok(rules) => prop_assert_eq!(rules.summaries().len(), 1),
            Err(message) => {
                // Parse errors give the file, line and column; rule errors the rule.
                prop_assert!(
                    message.starts_with("prop.toml:") || message.contains("risk rule \"r\""),
                    "the error names neither the place nor the rule: {message}"
                );
                prop_assert_eq!(message.lines().count(), 1, "{}", message);
            }
        }
    }
}
