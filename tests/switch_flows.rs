//! Whole-switch behaviour of single transactions: approvals, the issuer's
//! declines passed through, the switch's own refusals (12, 13, 15, 30), echo,
//! and a terminal reversal releasing the issuer's hold, sent to it once
//! however often the terminal repeats it.

mod common;

use common::{authorization, code, purchase, request, with, TestSwitch, TRANSMISSION_TIME};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::simulator::ReversalOutcome;

/// A POS and a virtual-terminal listener; cards starting 4 or 5 go to the
/// in-process simulator, which declines one card by rule and knows a few accounts.
const CONFIG: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[listener]]
name = "ecom"
bind = "127.0.0.1:0"
channel = "virtual-terminal"

[[issuer]]
name = "sim"
endpoints = ["sim"]

[[route]]
name = "cards"
bins = ["4", "5"]
issuer = "sim"

[simulator]
default_response = "00"

[[simulator.rule]]
pan_prefix = "4000000000000002"
respond = "05"

[[simulator.account]]
pan = "4111111111111111"
balance = 100000
expiry = "9912"

[[simulator.account]]
pan = "4222222222222222"
balance = 1000
expiry = "9912"

[[simulator.account]]
pan = "4333333333333333"
balance = 100000
expiry = "2001"

[[simulator.account]]
pan = "4444444444444444"
balance = 100000
status = "blocked"
expiry = "9912"
"#;

const RICH_CARD: &str = "4111111111111111";
const UNKNOWN_CARD: &str = "4761739001010010";

fn mti(text: &str) -> Mti {
    text.parse().expect("a valid MTI")
}

#[tokio::test]
async fn approval_carries_an_auth_code_and_echoes_stan_and_rrn() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let request = with(authorization(RICH_CARD, 2_500), 37, "123456789012");

    let response = terminal.exchange(&request).await;

    assert_eq!(response.mti(), mti("0110"));
    assert_eq!(code(&response), "00");
    let auth_code = response.get_str(38).expect("field 38 on an approval");
    assert_eq!(auth_code.len(), 6, "auth code {auth_code:?}");
    assert_eq!(
        response.get(11),
        request.get(11),
        "terminal's STAN restored"
    );
    assert_eq!(response.get_str(37), Some("123456789012"));
    assert_eq!(response.get(4), request.get(4));
    assert_eq!(response.get_str(41), Some("TERM0001"));
    assert_eq!(switch.simulator().balance(RICH_CARD), Some(97_500));
}

#[tokio::test]
async fn approval_without_an_rrn_gets_one_generated_by_the_switch() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let first = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    let second = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;

    for response in [&first, &second] {
        assert_eq!(response.mti(), mti("0210"));
        assert_eq!(code(response), "00");
        let rrn = response.get_str(37).expect("generated RRN");
        assert_eq!(rrn.len(), 12, "RRN {rrn:?}");
        assert!(rrn.bytes().all(|b| b.is_ascii_digit()), "RRN {rrn:?}");
    }
    assert_ne!(first.get(37), second.get(37), "each request its own RRN");
}

#[tokio::test]
async fn issuer_declines_reach_the_terminal_unchanged() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;

    let by_rule = terminal.exchange(&purchase("4000000000000002", 100)).await;
    assert_eq!(code(&by_rule), "05", "declined by rule");
    assert!(!by_rule.has(38), "no auth code on a decline");

    let first = terminal.exchange(&purchase("4222222222222222", 600)).await;
    assert_eq!(code(&first), "00", "within the balance");
    let second = terminal.exchange(&purchase("4222222222222222", 600)).await;
    assert_eq!(code(&second), "51", "balance has run out");

    let expired = terminal.exchange(&purchase("4333333333333333", 100)).await;
    assert_eq!(code(&expired), "54");

    let blocked = terminal.exchange(&purchase("4444444444444444", 100)).await;
    assert_eq!(code(&blocked), "62");
}

#[tokio::test]
async fn unknown_card_gets_the_simulator_default_response() {
    let config = CONFIG.replace("default_response = \"00\"", "default_response = \"14\"");
    let switch = TestSwitch::start(&config).await;
    let mut terminal = switch.terminal("pos").await;

    let unknown = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    assert_eq!(code(&unknown), "14");
    let known = terminal.exchange(&purchase(RICH_CARD, 100)).await;
    assert_eq!(code(&known), "00", "accounts still decide for known cards");
}

#[tokio::test]
async fn request_without_a_terminal_id_is_a_format_error() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let mut request = purchase(RICH_CARD, 100);
    request.remove(41);

    let response = terminal.exchange(&request).await;

    assert_eq!(response.mti(), mti("0210"));
    assert_eq!(code(&response), "30");
    assert_eq!(response.get(11), request.get(11));
    assert_eq!(switch.simulator().balance(RICH_CARD), Some(100_000));
}

#[tokio::test]
async fn unsupported_mti_is_an_invalid_transaction() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let request = request("0300", RICH_CARD, 100);

    let response = terminal.exchange(&request).await;

    assert_eq!(response.mti(), mti("0310"));
    assert_eq!(code(&response), "12");
    assert_eq!(response.get(11), request.get(11));
}

#[tokio::test]
async fn cash_on_a_virtual_terminal_is_an_invalid_transaction() {
    let switch = TestSwitch::start(CONFIG).await;
    let cash = || with(purchase(RICH_CARD, 100), 3, "010000");

    let mut ecom = switch.terminal("ecom").await;
    let refused = ecom.exchange(&cash()).await;
    assert_eq!(code(&refused), "12", "no cash on a virtual terminal");

    let mut pos = switch.terminal("pos").await;
    let allowed = pos.exchange(&cash()).await;
    assert_eq!(code(&allowed), "00", "cash is fine at a POS");
}

#[tokio::test]
async fn zero_amount_purchase_is_an_invalid_amount() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;

    let purchase = terminal.exchange(&purchase(RICH_CARD, 0)).await;
    assert_eq!(code(&purchase), "13");

    let verification = terminal.exchange(&authorization(RICH_CARD, 0)).await;
    assert_eq!(
        code(&verification),
        "00",
        "an 0100 for zero is an account verification"
    );
}

#[tokio::test]
async fn card_without_a_route_gets_no_such_issuer() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let request = purchase("6011000990139424", 100);

    let response = terminal.exchange(&request).await;

    assert_eq!(response.mti(), mti("0210"));
    assert_eq!(code(&response), "15");
    assert_eq!(response.get(11), request.get(11));
    assert_eq!(
        switch.simulator().stats().responses.values().sum::<u64>(),
        0
    );
}

#[tokio::test]
async fn echo_is_answered_by_the_switch_itself() {
    let switch = TestSwitch::start(CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let mut echo = Message::new(mti("0800"));
    echo.set(7, TRANSMISSION_TIME).expect("data field");
    echo.set(11, "424242").expect("data field");
    echo.set(70, "301").expect("data field");

    let response = terminal.exchange(&echo).await;

    assert_eq!(response.mti(), mti("0810"));
    assert_eq!(code(&response), "00");
    assert_eq!(response.get_str(11), Some("424242"));
    assert_eq!(response.get_str(70), Some("301"));
    assert_eq!(
        switch.simulator().stats().responses.values().sum::<u64>(),
        0,
        "the issuer never saw it"
    );
}

#[tokio::test]
async fn terminal_reversal_is_acknowledged_and_releases_the_hold_at_the_issuer() {
    let switch = TestSwitch::start(CONFIG).await;
    let sim = switch.simulator();
    let mut terminal = switch.terminal("pos").await;
    let original = authorization(RICH_CARD, 2_500);
    let approved = terminal.exchange(&original).await;
    assert_eq!(code(&approved), "00");
    assert_eq!(sim.balance(RICH_CARD), Some(97_500), "held");

    let original_stan = original.get_str(11).expect("STAN");
    let field90 = format!("0100{original_stan}{TRANSMISSION_TIME}{}", "0".repeat(22));
    let reversal = with(request("0400", RICH_CARD, 2_500), 90, &field90);
    let acknowledged = terminal.exchange(&reversal).await;

    assert_eq!(acknowledged.mti(), mti("0410"));
    assert_eq!(code(&acknowledged), "00");
    assert_eq!(acknowledged.get(11), reversal.get(11));
    common::eventually("the issuer has credited the hold back", || {
        sim.balance(RICH_CARD) == Some(100_000)
    })
    .await;
    let reversals = sim.reversals();
    assert_eq!(reversals.len(), 1, "{reversals:?}");
    assert_eq!(reversals[0].outcome, ReversalOutcome::Released);
    assert_eq!(reversals[0].amount, Some(2_500));
}

/// Sends `reversal` and then its repeat (0401), each acknowledged with 00.
async fn reverse_twice(terminal: &mut common::Terminal, reversal: Message) {
    let mut repeat = reversal.clone();
    repeat.set_mti(mti("0401"));
    for message in [&reversal, &repeat] {
        let acknowledged = terminal.exchange(message).await;
        assert_eq!(acknowledged.mti(), mti("0410"));
        assert_eq!(code(&acknowledged), "00");
    }
}

#[tokio::test]
async fn a_repeated_terminal_reversal_reaches_the_issuer_once() {
    let switch = TestSwitch::start(CONFIG).await;
    let sim = switch.simulator();
    let mut terminal = switch.terminal("pos").await;
    let reversal_of = |original: &Message, amount: u64| {
        let stan = original.get_str(11).expect("STAN");
        let field90 = format!("0100{stan}{TRANSMISSION_TIME}{}", "0".repeat(22));
        with(request("0400", RICH_CARD, amount), 90, &field90)
    };
    // One the switch forwarded, and one it never saw (routed by its PAN).
    let original = authorization(RICH_CARD, 2_500);
    assert_eq!(code(&terminal.exchange(&original).await), "00");
    reverse_twice(&mut terminal, reversal_of(&original, 2_500)).await;
    let never_seen = authorization(RICH_CARD, 700);
    reverse_twice(&mut terminal, reversal_of(&never_seen, 700)).await;
    // The issuer's queue is first in, first out: once a last reversal is
    // there, any repeat sent before it would be too.
    let last = authorization(RICH_CARD, 1_000);
    assert_eq!(code(&terminal.exchange(&last).await), "00");
    let mut last_reversal = reversal_of(&last, 1_000);
    last_reversal.set(11, "777777").expect("field");
    let acknowledged = terminal.exchange(&last_reversal).await;
    assert_eq!(code(&acknowledged), "00");
    common::eventually("the last reversal reached the issuer", || {
        sim.reversals().iter().any(|r| r.amount == Some(1_000))
    })
    .await;
    let outcomes: Vec<_> = sim
        .reversals()
        .iter()
        .map(|r| (r.amount, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(2_500), ReversalOutcome::Released),
            (Some(700), ReversalOutcome::Unmatched),
            (Some(1_000), ReversalOutcome::Released),
        ]
    );
}
