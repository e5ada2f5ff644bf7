//! Every risk rule and every code it gives, through the public API: a
//! `[risk]` config compiled with fresh state, requests evaluated at a fixed time.

mod risk_common;

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::{Message, ResponseCode};
use isoswitch::risk::{RiskContext, RiskRules, RiskState, Timestamp};
use risk_common::{example_config_text, purchase};

const POS: RiskContext<'static> = RiskContext {
    channel: Channel::Pos,
    listener: "pos",
};
const ECOM: RiskContext<'static> = RiskContext {
    channel: Channel::VirtualTerminal,
    listener: "ecom",
};

fn rules(risk_toml: &str) -> RiskRules {
    let config = Config::from_toml_str(risk_toml, "test.toml")
        .unwrap_or_else(|e| panic!("config is valid: {e}"));
    RiskRules::compile(&config.risk, &RiskState::new())
        .unwrap_or_else(|e| panic!("rules compile: {e}"))
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_utc(text).expect("test time")
}

fn now() -> Timestamp {
    at("2026-11-23T18:41:05Z")
}

/// The code and the rule that declined, or None.
fn decide(rules: &RiskRules, ctx: RiskContext<'_>, msg: &Message) -> Option<(String, String)> {
    let decision = rules.evaluate(&ctx, msg, now());
    decision
        .decline
        .map(|hit| (hit.response_code.to_string(), hit.rule.to_owned()))
}

fn declined(code: &str, rule: &str) -> Option<(String, String)> {
    Some((code.to_owned(), rule.to_owned()))
}

#[test]
fn a_clean_purchase_passes_every_rule_of_the_example_config() {
    let rules = rules(&example_config_text());
    assert_eq!(rules.summaries().len(), 17);
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
    assert_eq!(decide(&rules, ECOM, &purchase(&[(11, "000002")])), None);
}

#[test]
fn embedded_default_turns_on_the_card_checks_and_the_virtual_terminal_rules_only() {
    let config = Config::embedded_default().expect("default config");
    let rules = RiskRules::compile(&config.risk, &RiskState::new()).expect("compiles");
    let kinds: Vec<&str> = rules.summaries().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["card-number", "expiry", "card-brand", "recurring"]);
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
    // UnionPay is refused on the virtual terminal only; a terminal takes it.
    let unionpay = purchase(&[(2, "6212345678901232")]);
    assert_eq!(decide(&rules, POS, &unionpay), None);
    assert_eq!(decide(&rules, ECOM, &unionpay), declined("57", "vt-brands"));
    // A merchant-initiated charge (field 60 "RM") needs a consent first.
    let mit = purchase(&[(60, "RM")]);
    assert_eq!(decide(&rules, ECOM, &mit), declined("57", "recurring"));
    assert_eq!(
        decide(&rules, POS, &purchase(&[(2, "4111111111111112")])),
        declined("14", "card-number")
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(14, "2510")])),
        declined("54", "expiry")
    );
}

#[test]
fn card_number_gives_14_for_luhn_and_length() {
    let rules = rules(
        "[[risk.rule]]\nname = \"pan\"\nkind = \"card-number\"\nmin_length = 16\nmax_length = 16\n",
    );
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
    assert_eq!(
        decide(&rules, POS, &purchase(&[(2, "4111111111111121")])),
        declined("14", "pan")
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(2, "4222222222222")])),
        declined("14", "pan"),
        "Luhn-valid but 13 digits"
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(2, "")])),
        declined("14", "pan")
    );
}

#[test]
fn expiry_before_the_transaction_month_gives_54() {
    let rules = rules("[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n");
    assert_eq!(decide(&rules, POS, &purchase(&[(14, "2611")])), None);
    assert_eq!(
        decide(&rules, POS, &purchase(&[(14, "2610")])),
        declined("54", "exp")
    );
    assert_eq!(decide(&rules, POS, &purchase(&[(14, "")])), None);
}

fn hotlist_rules() -> RiskRules {
    rules(&format!(
        "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = \"{}/tests/fixtures/risk/hotlist.txt\"\n",
        env!("CARGO_MANIFEST_DIR")
    ))
}

#[test]
fn hotlisted_cards_give_41_43_and_62_by_reason() {
    let rules = hotlist_rules();
    let pan = |p: &str| decide(&rules, POS, &purchase(&[(2, p)]));
    assert_eq!(pan("4000000000000010"), declined("41", "hot"));
    assert_eq!(pan("4000000000000028"), declined("43", "hot"));
    assert_eq!(pan("4000000000000036"), declined("62", "hot"));
    assert_eq!(pan("4123459999999995"), declined("62", "hot"), "BIN entry");
    assert_eq!(
        pan("4123450000000001"),
        declined("43", "hot"),
        "PAN beats BIN"
    );
    assert_eq!(pan("4511115555555551"), declined("41", "hot"), "BIN range");
    assert_eq!(pan("4111111111111111"), None);
}

#[test]
fn unknown_or_blocked_terminals_and_merchants_give_03() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "acceptors"
kind = "terminal"
known_terminals = ["TERM0001", "TERM0002"]
blocked_merchants = ["BADSHOP"]
"#,
    );
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
    assert_eq!(
        decide(&rules, POS, &purchase(&[(41, "TERM0003")])),
        declined("03", "acceptors")
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(42, "BADSHOP        ")])),
        declined("03", "acceptors")
    );
}

#[test]
fn mcc_rules_give_58_per_channel() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "gambling"
kind = "mcc"
block = ["7995"]
[[risk.rule]]
name = "ecom-mccs"
kind = "mcc"
allow = ["5411", "5812-5814"]
applies_to = { channels = ["virtual-terminal"] }
"#,
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(18, "7995")])),
        declined("58", "gambling")
    );
    assert_eq!(decide(&rules, POS, &purchase(&[(18, "5999")])), None);
    assert_eq!(
        decide(&rules, ECOM, &purchase(&[(18, "5999")])),
        declined("58", "ecom-mccs")
    );
    assert_eq!(decide(&rules, ECOM, &purchase(&[(18, "5813")])), None);
}

#[test]
fn mcc_rules_can_be_scoped_to_a_merchant() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "shop-mccs"
kind = "mcc"
allow = ["5411"]
applies_to = { merchants = ["MERCHANT0000001"] }
"#,
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(18, "5999")])),
        declined("58", "shop-mccs")
    );
    assert_eq!(
        decide(
            &rules,
            POS,
            &purchase(&[(18, "5999"), (42, "OTHERSHOP000001")])
        ),
        None
    );
}

#[test]
fn currency_off_the_allowlist_gives_13_or_57_as_configured() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "pos-currency"
kind = "currency"
allow = ["840"]
applies_to = { channels = ["pos"] }
[[risk.rule]]
name = "ecom-currency"
kind = "currency"
allow = ["840"]
response_code = "57"
applies_to = { channels = ["virtual-terminal"] }
"#,
    );
    let euro = purchase(&[(49, "978")]);
    assert_eq!(decide(&rules, POS, &euro), declined("13", "pos-currency"));
    assert_eq!(decide(&rules, ECOM, &euro), declined("57", "ecom-currency"));
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
}

#[test]
fn amount_limits_give_13_and_61_per_channel_and_mcc() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "pos-amount"
kind = "amount"
min = 100
max = 1000000
applies_to = { channels = ["pos"] }
[[risk.rule]]
name = "fuel"
kind = "amount"
max = 30000
applies_to = { mccs = ["5542"] }
"#,
    );
    let amount = |a: &str, mcc: &str| decide(&rules, POS, &purchase(&[(4, a), (18, mcc)]));
    assert_eq!(amount("000000000099", "5411"), declined("13", "pos-amount"));
    assert_eq!(amount("000001000001", "5411"), declined("61", "pos-amount"));
    assert_eq!(amount("000000030001", "5542"), declined("61", "fuel"));
    assert_eq!(amount("000000030001", "5411"), None);
    assert_eq!(amount("000000000000", "5411"), declined("13", "pos-amount"));
}

#[test]
fn zero_amount_passes_only_for_account_verification() {
    let rules = rules("[[risk.rule]]\nname = \"amount\"\nkind = \"amount\"\nmin = 100\n");
    let mut verification = purchase(&[(4, "000000000000")]);
    verification.set_mti("0100".parse().expect("mti"));
    assert_eq!(decide(&rules, POS, &verification), None);
    assert_eq!(
        decide(&rules, POS, &purchase(&[(4, "000000000000")])),
        declined("13", "amount")
    );
}

#[test]
fn the_virtual_terminal_refuses_chip_and_contactless_with_58() {
    let rules = rules("[[risk.rule]]\nname = \"cnp-entry\"\nkind = \"entry-mode\"\n");
    assert_eq!(
        decide(&rules, ECOM, &purchase(&[(22, "051")])),
        declined("58", "cnp-entry")
    );
    assert_eq!(
        decide(&rules, ECOM, &purchase(&[(22, "071")])),
        declined("58", "cnp-entry")
    );
    assert_eq!(decide(&rules, ECOM, &purchase(&[(22, "010")])), None);
    assert_eq!(
        decide(&rules, POS, &purchase(&[(22, "051")])),
        None,
        "chip is fine at a POS"
    );
}

#[test]
fn the_virtual_terminal_refuses_unionpay_and_maestro_with_57() {
    let rules = rules("[[risk.rule]]\nname = \"cnp-brand\"\nkind = \"card-brand\"\n");
    for pan in ["6212345678901232", "6759649826438453", "5018000000000009"] {
        assert_eq!(
            decide(&rules, ECOM, &purchase(&[(2, pan)])),
            declined("57", "cnp-brand"),
            "{pan}"
        );
        assert_eq!(decide(&rules, POS, &purchase(&[(2, pan)])), None, "{pan}");
    }
    assert_eq!(decide(&rules, ECOM, &purchase(&[])), None);
}

#[test]
fn a_recurring_charge_needs_an_approved_cardholder_initiated_one_first() {
    let rules = rules("[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\n");
    assert!(rules.records_approvals());
    let mit = purchase(&[(25, "08")]);
    assert_eq!(decide(&rules, ECOM, &mit), declined("57", "mit"));
    // The cardholder pays once at the merchant, the issuer approves...
    let cit = purchase(&[]);
    assert_eq!(decide(&rules, ECOM, &cit), None);
    rules.record_approval(&cit, now());
    // ...and the merchant may charge the card again without them.
    assert_eq!(decide(&rules, ECOM, &mit), None);
    let other_card = purchase(&[(25, "08"), (2, "5555555555554444")]);
    assert_eq!(decide(&rules, ECOM, &other_card), declined("57", "mit"));
}

#[test]
fn an_approved_merchant_initiated_charge_is_not_a_mandate() {
    let rules = rules(
        "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\nmode = \"shadow\"\nresponse_code = \"12\"\n",
    );
    let mit = purchase(&[(25, "08")]);
    rules.record_approval(&mit, now());
    let decision = rules.evaluate(&ECOM, &mit, now());
    assert_eq!(
        decision.shadow[0].response_code,
        ResponseCode::INVALID_TRANSACTION
    );
}

#[test]
fn only_an_approved_purchase_is_a_mandate() {
    let rules = rules("[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\n");
    let mit = purchase(&[(25, "08")]);
    // A refund the merchant pushes to the card, a balance inquiry: no consent.
    for (code, amount) in [("200000", "000000000001"), ("310000", "000000000000")] {
        rules.record_approval(&purchase(&[(3, code), (4, amount)]), now());
        assert_eq!(decide(&rules, ECOM, &mit), declined("57", "mit"), "{code}");
    }
    // An account verification (a purchase of zero) is one.
    let mut verification = purchase(&[(4, "000000000000")]);
    verification.set_mti("0100".parse().expect("mti"));
    rules.record_approval(&verification, now());
    assert_eq!(decide(&rules, ECOM, &mit), None);
}

#[test]
fn the_recurring_marker_field_and_values_are_configurable() {
    let rules = rules(
        "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\nmit_field = 60\nmit_values = [\"R\", \"I\"]\n",
    );
    assert_eq!(decide(&rules, ECOM, &purchase(&[(25, "08")])), None);
    assert_eq!(
        decide(&rules, ECOM, &purchase(&[(60, "R")])),
        declined("57", "mit")
    );
}

#[test]
fn a_repeat_of_the_same_transmission_gives_94_even_in_flight() {
    let rules = rules("[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\nwindow_s = 300\n");
    let original = purchase(&[]);
    // Evaluated, not yet answered: the original is "at the issuer".
    assert_eq!(decide(&rules, POS, &original), None);
    let mut repeat = original.clone();
    repeat.set_mti("0201".parse().expect("mti"));
    assert_eq!(decide(&rules, POS, &repeat), declined("94", "dup"));
    assert_eq!(
        decide(&rules, POS, &purchase(&[(11, "000002")])),
        None,
        "another STAN"
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(41, "TERM0002")])),
        None,
        "another terminal"
    );
    assert_eq!(
        decide(&rules, POS, &purchase(&[(7, "1123184106")])),
        None,
        "another transmission time"
    );
    let later = at("2026-11-23T18:46:05Z");
    assert!(
        !rules.evaluate(&POS, &original, later).is_declined(),
        "outside the window"
    );
}

#[test]
fn card_velocity_gives_65_past_the_count_and_61_past_the_amount() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "per-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 5
[[risk.rule]]
name = "per-day"
kind = "velocity"
per = "card"
window_s = 86400
max_amount = 2000000
"#,
    );
    let start = now();
    let pay = |amount: &str, seconds: u64| {
        rules
            .evaluate(
                &POS,
                &purchase(&[(4, amount)]),
                start.plus_ms(seconds * 1000),
            )
            .decline
            .map(|h| (h.response_code.to_string(), h.rule.to_owned()))
    };
    for i in 0..5 {
        assert_eq!(pay("000000001000", i), None, "transaction {i}");
    }
    assert_eq!(pay("000000001000", 5), declined("65", "per-minute"));
    // 70 s on the minute window has moved past all five.
    assert_eq!(pay("000001990000", 70), None);
    assert_eq!(
        pay("000000005001", 71),
        declined("61", "per-day"),
        "5 000 + 1 990 000 + 5 001 > 2 000 000"
    );
    assert_eq!(pay("000000005000", 72), None, "exactly the limit");
}

#[test]
fn a_declined_transaction_is_not_counted() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "per-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 2
[[risk.rule]]
name = "per-day"
kind = "velocity"
per = "card"
window_s = 86400
max_count = 100
"#,
    );
    let msg = purchase(&[]);
    for _ in 0..5 {
        rules.evaluate(&POS, &msg, now());
    }
    // Two passed; three were declined by "per-minute" and the count "per-day"
    // made for them before that was taken back.
    assert_eq!(
        rules.velocity_of("per-day", &POS, &msg, now()),
        Some((2, 0))
    );
    assert_eq!(
        rules.velocity_of("per-minute", &POS, &msg, now()),
        Some((2, 0))
    );
}

#[test]
fn a_request_not_approved_in_the_end_gives_its_counts_back() {
    let rules = rules(
        "[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\n\
         [[risk.rule]]\nname = \"day\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 86400\nmax_count = 2\nmax_amount = 100000\n\
         [[risk.rule]]\nname = \"watch\"\nkind = \"velocity\"\nmode = \"shadow\"\nper = \"terminal\"\nwindow_s = 60\nmax_count = 1\n",
    );
    let held_by = |stan: &str| {
        let request = purchase(&[(11, stan)]);
        let decision = rules.evaluate(&POS, &request, now());
        assert_eq!(decision.decline, None, "{stan}");
        assert!(decision.held.counts_anything());
        (request, decision.held)
    };
    let velocity = |rule: &str| {
        rules
            .velocity_of(rule, &POS, &purchase(&[]), now())
            .expect("a velocity rule")
    };
    let (declined_by_issuer, held) = held_by("000001");
    assert_eq!(velocity("day"), (1, 1000));
    assert_eq!(velocity("watch"), (1, 0));
    rules.release(&held);
    assert_eq!(velocity("day"), (0, 0));
    assert_eq!(velocity("watch"), (0, 0), "shadow counts go back too");
    // The transmission is still known: a repeat of it is a duplicate.
    assert_eq!(
        decide(&rules, POS, &declined_by_issuer),
        declined("94", "dup")
    );
    // Two more fit in the day's count, as if the first had never been.
    held_by("000002");
    held_by("000003");
    assert_eq!(velocity("day"), (2, 2000));
    assert_eq!(
        decide(&rules, POS, &purchase(&[(11, "000004")])),
        declined("65", "day")
    );
}

#[test]
fn a_declined_request_holds_nothing() {
    let rules = rules(
        "[[risk.rule]]\nname = \"day\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 86400\nmax_count = 5\n\
         [[risk.rule]]\nname = \"tiny\"\nkind = \"velocity\"\nper = \"terminal\"\nwindow_s = 60\nmax_amount = 1\n",
    );
    let decision = rules.evaluate(&POS, &purchase(&[]), now());
    assert_eq!(
        decision.response_code().map(|c| c.to_string()),
        Some("61".into())
    );
    assert!(!decision.held.counts_anything());
    // Releasing it anyway takes nothing that is not there.
    rules.release(&decision.held);
    let counted = rules.velocity_of("day", &POS, &purchase(&[]), now());
    assert_eq!(counted, Some((0, 0)));
}

#[test]
fn a_decline_by_a_later_velocity_rule_takes_back_the_earlier_counts() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "card-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 5
[[risk.rule]]
name = "terminal"
kind = "velocity"
per = "terminal"
window_s = 60
max_count = 1
[[risk.rule]]
name = "card-day"
kind = "velocity"
per = "card"
window_s = 86400
max_count = 100
"#,
    );
    let stan = |stan| purchase(&[(11, stan)]);
    assert_eq!(decide(&rules, POS, &stan("000001")), None);
    assert_eq!(
        decide(&rules, POS, &stan("000002")),
        declined("65", "terminal")
    );
    let count = |rule: &str| rules.velocity_of(rule, &POS, &stan("000003"), now());
    assert_eq!(count("card-minute"), Some((1, 0)));
    assert_eq!(count("terminal"), Some((1, 0)));
    assert_eq!(count("card-day"), Some((1, 0)), "not reached");
}

#[test]
fn terminal_velocity_counts_every_card_at_the_terminal() {
    let rules = rules(
        "[[risk.rule]]\nname = \"term\"\nkind = \"velocity\"\nper = \"terminal\"\nwindow_s = 60\nmax_count = 3\n",
    );
    let pans = [
        "4111111111111111",
        "5555555555554444",
        "4000000000000010",
        "2221000000000009",
    ];
    let results: Vec<_> = pans
        .iter()
        .map(|pan| decide(&rules, POS, &purchase(&[(2, pan)])))
        .collect();
    assert_eq!(results[..3], [None, None, None]);
    assert_eq!(results[3], declined("65", "term"));
    assert_eq!(
        decide(&rules, POS, &purchase(&[(41, "TERM0002")])),
        None,
        "another terminal"
    );
}

#[test]
fn rules_run_in_order_and_the_first_enforcing_decline_wins() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "pan"
kind = "card-number"
[[risk.rule]]
name = "exp"
kind = "expiry"
"#,
    );
    assert_eq!(
        decide(
            &rules,
            POS,
            &purchase(&[(2, "4111111111111112"), (14, "2001")])
        ),
        declined("14", "pan")
    );
}

#[test]
fn velocity_and_duplicate_rules_run_after_the_others_whatever_the_order() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "count"
kind = "velocity"
per = "card"
window_s = 60
max_count = 1
[[risk.rule]]
name = "dup"
kind = "duplicate"
[[risk.rule]]
name = "pan"
kind = "card-number"
"#,
    );
    let names: Vec<&str> = rules.summaries().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["pan", "dup", "count"]);
    // A bad card number is declined before it is recorded or counted...
    let bad = purchase(&[(2, "4111111111111112")]);
    assert_eq!(decide(&rules, POS, &bad), declined("14", "pan"));
    assert_eq!(rules.velocity_of("count", &POS, &bad, now()), Some((0, 0)));
    // ...so its repeat meets the same rule, not 94.
    assert_eq!(decide(&rules, POS, &bad), declined("14", "pan"));
    // A repeat is caught before velocity counts it twice.
    let good = purchase(&[]);
    assert_eq!(decide(&rules, POS, &good), None);
    assert_eq!(decide(&rules, POS, &good), declined("94", "dup"));
    assert_eq!(rules.velocity_of("count", &POS, &good, now()), Some((1, 0)));
}

#[test]
fn a_velocity_decline_takes_back_the_duplicate_record() {
    let rules = rules(
        r#"
[[risk.rule]]
name = "dup"
kind = "duplicate"
[[risk.rule]]
name = "count"
kind = "velocity"
per = "card"
window_s = 60
max_count = 1
"#,
    );
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
    let second = purchase(&[(11, "000002")]);
    assert_eq!(decide(&rules, POS, &second), declined("65", "count"));
    // The terminal's repeat of the declined one meets velocity again, not 94.
    assert_eq!(decide(&rules, POS, &second), declined("65", "count"));
}

#[test]
fn scoped_rules_skip_other_listeners() {
    let config = Config::from_toml_str(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"
[[listener]]
name = "ecom"
bind = "127.0.0.1:0"
channel = "virtual-terminal"
[[risk.rule]]
name = "ecom-max"
kind = "amount"
max = 500
applies_to = { listeners = ["ecom"] }
"#,
        "test.toml",
    )
    .expect("valid");
    let rules = RiskRules::compile(&config.risk, &RiskState::new()).expect("compiles");
    assert_eq!(
        decide(&rules, ECOM, &purchase(&[])),
        declined("61", "ecom-max")
    );
    assert_eq!(decide(&rules, POS, &purchase(&[])), None);
}

#[test]
fn garbage_requests_never_panic() {
    let rules = rules(&example_config_text());
    let values = [
        "",
        "x",
        "0",
        "9999999999999999999999",
        "\u{ff}\u{fe}",
        "    ",
    ];
    for n in [2u8, 3, 4, 7, 11, 14, 18, 22, 25, 41, 42, 49] {
        for v in values {
            let mut msg = purchase(&[]);
            if v.is_empty() {
                msg.remove(n);
            } else {
                msg.set(n, v.as_bytes()).expect("field");
            }
            for ctx in [POS, ECOM] {
                let _ = rules.evaluate(&ctx, &msg, now());
            }
        }
    }
    let empty = Message::new("0100".parse().expect("mti"));
    let decision = rules.evaluate(&POS, &empty, Timestamp::from_unix_ms(0));
    assert_eq!(
        decision.response_code(),
        Some(ResponseCode::INVALID_CARD_NUMBER)
    );
}
