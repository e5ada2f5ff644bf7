//! Refunds through the switch and the in-process simulator: each refusal the
//! switch decides before any issuer (no original 12; another card, another
//! merchant, too old, above what is left, two at once above it, another
//! currency 13), and the accepted path, counted at the simulator.

mod common;

use std::sync::Arc;

use common::{code, next_stan, purchase, request, with, TestSwitch, TRANSMISSION_TIME};
use isoswitch::iso8583::{Message, Mti, ResponseCode};
use isoswitch::journal::{ClearPan, DecidedBy, MemoryJournal, Outcome, Stores, TxnQuery, TxnStart};

const CARD: &str = "4111111111111111";
const OTHER_CARD: &str = "4222222222222222";
const MERCHANT: &str = "MERCHANT0000001";

fn config() -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[listener]]
name = "pos90"
bind = "127.0.0.1:0"
refund_original = "field90"

[[issuer]]
name = "sim"
endpoints = ["sim"]
timeout_ms = 2000
echo_interval_s = 0

[[route]]
name = "all"
bins = ["4"]
issuer = "sim"

[simulator]
bind = "127.0.0.1:0"
default_response = "00"

[[simulator.account]]
pan = "{CARD}"
balance = 1000000
currency = "840"
status = "active"
expiry = "2812"

[[simulator.account]]
pan = "{OTHER_CARD}"
balance = 1000000
currency = "840"
status = "active"
expiry = "2812"
"#
    )
}

fn memory() -> (Arc<MemoryJournal>, Stores) {
    let store = Arc::new(MemoryJournal::new());
    (store.clone(), Stores::new(store, false))
}

/// A sale with its own RRN, at `MERCHANT`, in USD.
fn sale(pan: &str, amount: u64, rrn: &str) -> Message {
    let m = with(purchase(pan, amount), 37, rrn);
    let m = with(m, 42, MERCHANT);
    with(m, 49, "840")
}

/// A refund naming its original by RRN.
fn refund(pan: &str, amount: u64, original_rrn: &str) -> Message {
    let m = with(request("0200", pan, amount), 3, "200000");
    let m = with(m, 37, original_rrn);
    let m = with(m, 42, MERCHANT);
    with(m, 49, "840")
}

/// Requests the simulator has answered so far.
fn answered(switch: &TestSwitch) -> u64 {
    switch.simulator().stats().responses.values().sum()
}

#[tokio::test]
async fn an_accepted_refund_reaches_the_issuer_and_credits_the_card() {
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;
    assert_eq!(
        code(&terminal.exchange(&sale(CARD, 5_000, "RRN000000001")).await),
        "00"
    );
    let before = switch.simulator().balance(CARD).expect("account");

    let response = terminal
        .exchange(&refund(CARD, 2_000, "RRN000000001"))
        .await;
    assert_eq!(code(&response), "00");
    assert_eq!(switch.simulator().balance(CARD), Some(before + 2_000));
    // What is left can still be refunded, exactly.
    let rest = terminal
        .exchange(&refund(CARD, 3_000, "RRN000000001"))
        .await;
    assert_eq!(code(&rest), "00");
    assert_eq!(answered(&switch), 3);

    let refunds = stores
        .journal
        .find(TxnQuery {
            rrn: Some("RRN000000001".into()),
            ..TxnQuery::default()
        })
        .await
        .expect("find");
    let sale_id = refunds[0].id;
    assert!(refunds[1..].iter().all(|r| r.original_id == Some(sale_id)));
}

#[tokio::test]
async fn each_refusal_is_decided_before_the_issuer_hears_of_it() {
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;
    assert_eq!(
        code(&terminal.exchange(&sale(CARD, 5_000, "RRN000000002")).await),
        "00"
    );
    let seen = answered(&switch);

    let cases = [
        ("no original", refund(CARD, 100, "RRN999999999"), "12"),
        (
            "another card",
            refund(OTHER_CARD, 100, "RRN000000002"),
            "13",
        ),
        (
            "another merchant",
            with(refund(CARD, 100, "RRN000000002"), 42, "MERCHANT0000002"),
            "13",
        ),
        (
            "another currency",
            with(refund(CARD, 100, "RRN000000002"), 49, "978"),
            "13",
        ),
        (
            "above the original",
            refund(CARD, 5_001, "RRN000000002"),
            "13",
        ),
        (
            "no RRN at all",
            {
                let mut m = refund(CARD, 100, "RRN000000002");
                m.remove(37);
                m
            },
            "12",
        ),
    ];
    for (what, request, expected) in cases {
        let response = terminal.exchange(&request).await;
        assert_eq!(code(&response), expected, "{what}");
    }
    assert_eq!(
        answered(&switch),
        seen,
        "no refused refund reached the issuer"
    );

    let refused = stores
        .journal
        .find(TxnQuery {
            decided_by: Some(DecidedBy::Switch),
            ..TxnQuery::default()
        })
        .await
        .expect("find");
    let reasons: Vec<_> = refused
        .iter()
        .filter_map(|r| r.outcome.as_ref().and_then(|o| o.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 6, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("another card")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn an_original_older_than_max_age_days_is_not_refunded() {
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let day_ms = 24 * 3600 * 1000;
    let old = stores
        .journal
        .begin(TxnStart {
            received_at_ms: isoswitch::journal::now_ms() - 91 * day_ms,
            listener: "pos".into(),
            channel: "pos".into(),
            mti: Mti::from_static("0200"),
            processing_code: Some("000000".into()),
            pan: ClearPan::new(CARD),
            amount: Some(5_000),
            currency: Some(840),
            terminal_id: Some("TERM0001".into()),
            merchant_id: Some(MERCHANT.into()),
            terminal_stan: Some(next_stan()),
            terminal_rrn: Some("RRN000000004".into()),
            forward: None,
            original_id: None,
        })
        .await
        .expect("begin");
    stores
        .journal
        .record_outcome(
            old,
            Outcome {
                answered_at_ms: 0,
                response_code: ResponseCode::APPROVED,
                decided_by: DecidedBy::Issuer,
                auth_code: None,
                latency_us: 0,
                reason: None,
            },
        )
        .await
        .expect("outcome");
    let mut terminal = switch.terminal("pos").await;
    let response = terminal.exchange(&refund(CARD, 100, "RRN000000004")).await;
    assert_eq!(code(&response), "13");
    assert_eq!(answered(&switch), 0);
}

#[tokio::test]
async fn two_refunds_at_once_cannot_both_take_what_is_left() {
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut first = switch.terminal("pos").await;
    let mut second = switch.terminal("pos").await;
    assert_eq!(
        code(&first.exchange(&sale(CARD, 1_000, "RRN000000005")).await),
        "00"
    );

    let (one, two) = (
        refund(CARD, 600, "RRN000000005"),
        refund(CARD, 600, "RRN000000005"),
    );
    let (a, b) = tokio::join!(first.exchange(&one), second.exchange(&two));
    let mut codes = vec![code(&a).to_owned(), code(&b).to_owned()];
    codes.sort();
    assert_eq!(codes, ["00", "13"]);
    assert_eq!(answered(&switch), 2, "the sale and one refund");
}

#[tokio::test]
async fn a_listener_may_name_the_original_by_field_90() {
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos90").await;
    let original = sale(CARD, 5_000, "RRN000000006");
    assert_eq!(code(&terminal.exchange(&original).await), "00");
    let stan = original.get_str(11).expect("STAN");
    let field90 = format!("0200{stan}{TRANSMISSION_TIME}{:011}{:011}", 0, 0);

    let mut by_90 = refund(CARD, 1_000, "RRN000000007");
    by_90.set(90, field90.as_str()).expect("field 90");
    assert_eq!(code(&terminal.exchange(&by_90).await), "00");
    let mut unknown = refund(CARD, 1_000, "RRN000000007");
    let other = format!("0200999999{TRANSMISSION_TIME}{:011}{:011}", 0, 0);
    unknown.set(90, other.as_str()).expect("field 90");
    assert_eq!(code(&terminal.exchange(&unknown).await), "12");
}
