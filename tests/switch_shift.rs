//! A terminal closing its shift (0500/0501) through the switch and the
//! in-process simulator: totals that agree (00) and one that does not (95)
//! are both recorded and both close the shift, the next shift starts empty,
//! a 0501 repeat is answered as recorded, and a reversal after the close is
//! refused (12): money goes back only as a refund then.

mod common;

use std::sync::Arc;

use common::{code, next_stan, purchase, request, with, TestSwitch, TRANSMISSION_TIME};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::journal::{MemoryJournal, Stores, Tally};
use isoswitch::switch::reconcile::net_amount_field;

const CARD: &str = "4111111111111111";
const MERCHANT: &str = "MERCHANT0000001";

fn config() -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

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
"#
    )
}

fn sale(amount: u64, rrn: &str) -> Message {
    let m = with(purchase(CARD, amount), 37, rrn);
    let m = with(m, 42, MERCHANT);
    with(m, 49, "840")
}

fn refund(amount: u64, original_rrn: &str) -> Message {
    let m = with(request("0200", CARD, amount), 3, "200000");
    let m = with(m, 37, original_rrn);
    let m = with(m, 42, MERCHANT);
    with(m, 49, "840")
}

/// The terminal's reversal (cancel) of `original`, naming it in field 90.
fn cancel(original: &Message) -> Message {
    let stan = original.get_str(11).expect("STAN");
    let amount: u64 = original
        .get_str(4)
        .and_then(|a| a.parse().ok())
        .expect("amount");
    let m = with(request("0400", CARD, amount), 42, MERCHANT);
    let field90 = format!("0200{stan}{TRANSMISSION_TIME}{:011}{:011}", 0, 0);
    with(m, 90, &field90)
}

/// What a terminal counts for its shift.
#[derive(Clone, Copy)]
struct Counted {
    debits: Tally,
    debit_reversals: Tally,
    credits: Tally,
}

/// A 0500 (or `mti`) with batch `batch` and the totals `counted`.
fn close(mti: &str, batch: &str, counted: Counted) -> Message {
    let mut m = Message::new(mti.parse::<Mti>().expect("MTI"));
    let net = counted.debits.amount - counted.debit_reversals.amount - counted.credits.amount;
    let fields = [
        (11, next_stan()),
        (41, "TERM0001".to_owned()),
        (42, MERCHANT.to_owned()),
        (60, batch.to_owned()),
        (74, format!("{:010}", counted.credits.count)),
        (75, format!("{:010}", 0)),
        (76, format!("{:010}", counted.debits.count)),
        (77, format!("{:010}", counted.debit_reversals.count)),
        (86, format!("{:016}", counted.credits.amount)),
        (87, format!("{:016}", 0)),
        (88, format!("{:016}", counted.debits.amount)),
        (89, format!("{:016}", counted.debit_reversals.amount)),
        (97, net_amount_field(net)),
    ];
    for (n, v) in fields {
        m.set(n, v).expect("data field");
    }
    m
}

fn tally(count: u64, amount: i64) -> Tally {
    Tally { count, amount }
}

const EMPTY: Counted = Counted {
    debits: Tally {
        count: 0,
        amount: 0,
    },
    debit_reversals: Tally {
        count: 0,
        amount: 0,
    },
    credits: Tally {
        count: 0,
        amount: 0,
    },
};

fn memory() -> Stores {
    Stores::new(Arc::new(MemoryJournal::new()), false)
}

#[tokio::test]
async fn agreeing_totals_close_with_00_and_the_next_shift_starts_empty() {
    let stores = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;
    let first = sale(1_000, "RRN000000101");
    let second = sale(2_500, "RRN000000102");
    assert_eq!(code(&terminal.exchange(&first).await), "00");
    assert_eq!(code(&terminal.exchange(&second).await), "00");
    assert_eq!(code(&terminal.exchange(&cancel(&first)).await), "00");
    assert_eq!(
        code(&terminal.exchange(&refund(500, "RRN000000102")).await),
        "00"
    );

    let counted = Counted {
        debits: tally(2, 3_500),
        debit_reversals: tally(1, 1_000),
        credits: tally(1, 500),
    };
    let answer = terminal.exchange(&close("0500", "000001", counted)).await;
    assert_eq!(answer.mti(), Mti::from_static("0510"));
    assert_eq!(code(&answer), "00");
    assert_eq!(answer.get_str(60), Some("000001"));
    let recorded = stores
        .journal
        .last_close("TERM0001", None)
        .await
        .expect("read")
        .expect("the close is recorded");
    assert_eq!(recorded.close.batch, "000001");
    assert_eq!(recorded.close.switch_totals.debits, tally(2, 3_500));
    assert_eq!(recorded.close.switch_totals.net(), 2_000);

    // The next shift holds nothing yet: zero totals agree.
    let next = terminal.exchange(&close("0500", "000002", EMPTY)).await;
    assert_eq!(code(&next), "00");
}

#[tokio::test]
async fn one_wrong_amount_closes_with_95_and_a_repeat_is_answered_as_recorded() {
    let stores = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;
    assert_eq!(
        code(&terminal.exchange(&sale(1_000, "RRN000000201")).await),
        "00"
    );

    let wrong = Counted {
        debits: tally(1, 1_001),
        ..EMPTY
    };
    let answer = terminal.exchange(&close("0500", "000007", wrong)).await;
    assert_eq!(code(&answer), "95");
    let recorded = stores
        .journal
        .last_close("TERM0001", Some("000007"))
        .await
        .expect("read")
        .expect("a 95 close is recorded too");
    assert_eq!(recorded.close.response_code.as_str(), "95");
    assert_eq!(recorded.close.terminal_totals.debits_amount, Some(1_001));

    // The repeat gets the same answer and closes nothing again.
    let repeat = terminal.exchange(&close("0501", "000007", wrong)).await;
    assert_eq!(code(&repeat), "95");
    let still = stores
        .journal
        .last_close("TERM0001", None)
        .await
        .expect("read")
        .expect("close");
    assert_eq!(still.id, recorded.id, "no second close");

    // A 95 close still closed the shift: the next one is empty.
    let next = terminal.exchange(&close("0500", "000008", EMPTY)).await;
    assert_eq!(code(&next), "00");
}

#[tokio::test]
async fn a_close_without_its_debit_totals_is_a_format_error() {
    let switch = TestSwitch::start_with(&config(), memory()).await;
    let mut terminal = switch.terminal("pos").await;
    let mut incomplete = close("0500", "000001", EMPTY);
    incomplete.remove(88);
    assert_eq!(code(&terminal.exchange(&incomplete).await), "30");
}

#[tokio::test]
async fn a_reversal_after_the_close_is_refused_and_not_forwarded() {
    let stores = memory();
    let switch = TestSwitch::start_with(&config(), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;
    let original = sale(1_000, "RRN000000301");
    assert_eq!(code(&terminal.exchange(&original).await), "00");
    let counted = Counted {
        debits: tally(1, 1_000),
        ..EMPTY
    };
    assert_eq!(
        code(&terminal.exchange(&close("0500", "000001", counted)).await),
        "00"
    );

    let late = terminal.exchange(&cancel(&original)).await;
    assert_eq!(code(&late), "12");
    // Nothing was queued for the issuer (a reversal is queued before its answer).
    let record = stores
        .journal
        .find(isoswitch::journal::TxnQuery {
            rrn: Some("RRN000000301".into()),
            ..Default::default()
        })
        .await
        .expect("find")
        .remove(0);
    assert_eq!(record.reversal, isoswitch::journal::ReversalState::None);
    assert_eq!(record.cancelled_at_ms, None);
    assert_eq!(stores.queue.depth("sim").await.expect("depth"), 0);
    // A refund is how the money goes back now.
    assert_eq!(
        code(&terminal.exchange(&refund(1_000, "RRN000000301")).await),
        "00"
    );
}
