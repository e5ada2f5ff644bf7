//! The switch over its journal and queue, in process (the in-memory store,
//! shared between two switches to play a restart): what is written when, a
//! journal that cannot be written, stand-in, and a terminal's reversal found
//! through the journal after a restart. The real binary under kill -9 and
//! SIGTERM is in tests/durability.rs.

mod common;

use std::sync::Arc;

use common::{
    answer, bank_config, code, poll_until, purchase, Act, FakeIssuer, HeldPort, Script, TestSwitch,
    TRANSMISSION_TIME, WAIT,
};
use isoswitch::iso8583::Message;
use isoswitch::journal::{
    DecidedBy, MemoryJournal, ReversalState, SafKind, SafState, Stores, TxnQuery, TxnRecord,
};

const CARD: &str = "4761739001010010";

/// The common one-issuer switch, its route given `stand_in` (a TOML line or "").
fn config(endpoints: &str, timeout_ms: u64, stand_in: &str) -> String {
    format!("{}{stand_in}\n", bank_config(endpoints, timeout_ms))
}

/// Approves everything but purchases of `held_from` or more, which it holds.
fn holds_from(held_from: u64) -> Script {
    Arc::new(move |m: &Message| {
        let amount: u64 = m.get_str(4).and_then(|a| a.parse().ok()).unwrap_or(0);
        if m.mti().class() == 2 && m.mti().function() == 0 && amount >= held_from {
            return Act::Hold;
        }
        match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        }
    })
}

fn memory() -> (Arc<MemoryJournal>, Stores) {
    let store = Arc::new(MemoryJournal::new());
    (store.clone(), Stores::new(store, false))
}

/// The journal's record of the request with this terminal STAN.
async fn record_of(stores: &Stores, request: &Message) -> TxnRecord {
    let stan = request.get_str(11).expect("STAN").to_string();
    let found = stores
        .journal
        .find(TxnQuery {
            terminal_stan: Some(("TERM0001".into(), stan)),
            ..TxnQuery::default()
        })
        .await
        .expect("find");
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().expect("one")
}

async fn queue_empties(stores: &Stores) {
    poll_until("the queue empties", WAIT, || async {
        (stores.queue.depth("bank").await.ok() == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_approval_is_in_the_journal_with_its_issuer_stan_when_the_terminal_hears_it() {
    let mut fake = FakeIssuer::start(holds_from(u64::MAX)).await;
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(&fake.endpoint(), 2_000, ""), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    let request = purchase(CARD, 1_234);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "00");
    let (on_wire, _) = fake.next_of_class(2).await;

    let record = record_of(&stores, &request).await;
    let outcome = record
        .outcome
        .expect("the outcome is recorded before the answer");
    assert_eq!(outcome.response_code.as_str(), "00");
    assert_eq!(outcome.decided_by, DecidedBy::Issuer);
    assert_eq!(record.upstream_stan.as_deref(), on_wire.get_str(11));
    assert_eq!(record.pan_masked.as_deref(), Some("476173******0010"));
    assert_eq!(record.amount, Some(1_234));
    assert_eq!(record.reversal, ReversalState::None);
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_forwards_nothing_and_answers_96_until_it_recovers() {
    let mut fake = FakeIssuer::start(holds_from(u64::MAX)).await;
    let (store, stores) = memory();
    let switch = TestSwitch::start_with(&config(&fake.endpoint(), 2_000, ""), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    store.set_broken(Some("disk full"));
    let refused = terminal.exchange(&purchase(CARD, 100)).await;
    assert_eq!(code(&refused), "96");
    assert!(!stores.journal.health().ready, "/readyz reports it");

    store.set_broken(None);
    let approved = terminal.exchange(&purchase(CARD, 100)).await;
    assert_eq!(code(&approved), "00");
    // Only the second purchase reached the issuer.
    let (first_seen, _) = fake.next_of_class(2).await;
    assert_eq!(first_seen.get_str(4), Some("000000000100"));
    assert!(fake.try_next().is_none(), "nothing else reached the issuer");
}

#[tokio::test]
async fn a_timeout_answers_91_only_once_its_reversal_is_queued_then_delivers_it() {
    let mut fake = FakeIssuer::start(holds_from(50_000)).await;
    let (_, stores) = memory();
    let switch = TestSwitch::start_with(&config(&fake.endpoint(), 300, ""), stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    let request = purchase(CARD, 60_000);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "91");
    // When the terminal hears 91, the journal holds the reversal.
    let record = record_of(&stores, &request).await;
    assert_ne!(record.reversal, ReversalState::None);
    assert_eq!(record.links.len(), 1);
    assert_eq!(record.links[0].kind, SafKind::Reversal);
    assert_eq!(
        record.outcome.as_ref().map(|o| o.decided_by),
        Some(DecidedBy::Timeout)
    );

    let stan = record.upstream_stan.clone().expect("forwarded");
    fake.reversal_naming(&stan, WAIT)
        .await
        .expect("the reversal reaches the issuer");
    queue_empties(&stores).await;
    let record = record_of(&stores, &request).await;
    assert_eq!(record.links[0].state, SafState::Acknowledged);
}

#[tokio::test]
async fn after_a_restart_a_terminal_reversal_is_matched_through_the_journal_once() {
    let mut fake = FakeIssuer::start(holds_from(u64::MAX)).await;
    let (_, stores) = memory();
    let toml = config(&fake.endpoint(), 2_000, "");
    let first = TestSwitch::start_with(&toml, stores.clone()).await;
    let mut terminal = first.terminal("pos").await;
    let original = purchase(CARD, 4_200);
    assert_eq!(code(&terminal.exchange(&original).await), "00");
    let (on_wire, _) = fake.next_of_class(2).await;
    let issuer_stan = on_wire.get_str(11).expect("STAN").to_string();
    first.shutdown.cancel();
    drop(first);

    // A new switch over the same journal: the terminal reverses its purchase.
    let second = TestSwitch::start_with(&toml, stores.clone()).await;
    let mut terminal = second.terminal("pos").await;
    let terminal_stan = original.get_str(11).expect("STAN");
    let field_90 = format!("0200{terminal_stan}{TRANSMISSION_TIME}{}", "0".repeat(22));
    let mut reversal = purchase(CARD, 4_200);
    reversal.set_mti("0400".parse().expect("mti"));
    reversal.set(90, field_90.as_str()).expect("field 90");
    assert_eq!(code(&terminal.exchange(&reversal).await), "00");
    let mut repeat = reversal.clone();
    repeat.set_mti("0401".parse().expect("mti"));
    assert_eq!(code(&terminal.exchange(&repeat).await), "00");

    fake.reversal_naming(&issuer_stan, WAIT)
        .await
        .expect("the reversal names the STAN the issuer saw, not the terminal's");
    queue_empties(&stores).await;
    let record = record_of(&stores, &original).await;
    let reversals = record
        .links
        .iter()
        .filter(|l| l.kind == SafKind::Reversal)
        .count();
    assert_eq!(reversals, 1, "one reversal item for the transaction");
    // Nothing more goes out: the next purchase is the next thing the issuer sees.
    assert_eq!(code(&terminal.exchange(&purchase(CARD, 1)).await), "00");
    loop {
        let (_, message, _) = fake.next_message().await;
        match message.mti().as_str() {
            "0200" => break,
            "0401" => assert_eq!(
                common::field_90_stan(&message).as_deref(),
                Some(issuer_stan.as_str())
            ),
            other => panic!("unexpected {other} after the reversal"),
        }
    }
}

#[tokio::test]
async fn forwarded_requests_left_unanswered_are_reversed_by_in_doubt_recovery() {
    let mut fake = FakeIssuer::start(holds_from(50_000)).await;
    let (_, stores) = memory();
    // A long timeout: the request is still at the issuer when the switch "dies".
    let toml = config(&fake.endpoint(), 30_000, "");
    let first = TestSwitch::start_with(&toml, stores.clone()).await;
    let mut terminal = first.terminal("pos").await;
    terminal.send(&purchase(CARD, 70_000)).await;
    let (on_wire, _) = fake.next_of_class(2).await;
    let issuer_stan = on_wire.get_str(11).expect("STAN").to_string();
    first.shutdown.cancel();
    drop(first);

    let second = TestSwitch::start_with(&toml, stores.clone()).await;
    let queued = second
        .switch
        .reverse_in_doubt(i64::MAX)
        .await
        .expect("recovery reads the journal");
    assert_eq!(queued, 1);
    assert_eq!(
        second.switch.reverse_in_doubt(i64::MAX).await.ok(),
        Some(0),
        "a second pass finds nothing left in doubt"
    );
    fake.reversal_naming(&issuer_stan, WAIT)
        .await
        .expect("the in-doubt request is reversed at the issuer");
    queue_empties(&stores).await;
}

const STAND_IN: &str = "stand_in = { max_amount = 5000, max_per_card_per_day = 2 }";

#[tokio::test]
async fn stand_in_approves_under_the_limit_answers_91_over_it_and_caps_each_card() {
    let issuer_port = HeldPort::new();
    let (_, stores) = memory();
    let toml = config(&format!("\"{issuer_port}\""), 300, STAND_IN);
    let switch = TestSwitch::start_with_issuers_down(&toml, stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    let first = terminal.exchange(&purchase(CARD, 5_000)).await;
    assert_eq!(code(&first), "00", "at the limit: stood in");
    let auth_code = first.get_str(38).expect("an auth code").to_string();
    assert!(auth_code.starts_with('S'), "{auth_code}");
    assert_eq!(code(&terminal.exchange(&purchase(CARD, 5_001)).await), "91");
    assert_eq!(code(&terminal.exchange(&purchase(CARD, 10)).await), "00");
    assert_eq!(
        code(&terminal.exchange(&purchase(CARD, 10)).await),
        "91",
        "the card's two stand-ins today are used"
    );
    assert_eq!(
        code(&terminal.exchange(&purchase("4111111111111111", 10)).await),
        "00",
        "another card has its own count"
    );

    // The issuer comes back: each stand-in approval reaches it once, as an advice.
    let mut fake = FakeIssuer::serve(issuer_port.listen(), holds_from(u64::MAX), None);
    let mut advices = Vec::new();
    while advices.len() < 3 {
        let (message, _) = fake.next_of_class(2).await;
        if message.mti().function() == 2 {
            advices.push(message);
        }
    }
    queue_empties(&stores).await;
    assert!(advices.iter().all(|a| a.mti().as_str() == "0220"));
    assert!(advices.iter().all(|a| a.get_str(39) == Some("00")));
    assert_eq!(advices[0].get_str(38), Some(auth_code.as_str()));
    assert!(fake.try_next().is_none(), "no advice twice");
}

#[tokio::test]
async fn a_timed_out_request_stood_in_is_reversed_then_advised() {
    let mut fake = FakeIssuer::start(holds_from(1_000)).await;
    let (_, stores) = memory();
    let toml = config(&fake.endpoint(), 300, STAND_IN);
    let switch = TestSwitch::start_with(&toml, stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    let request = purchase(CARD, 2_000);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "00", "stood in after the timeout");
    let (original, _) = fake.next_of_class(2).await;
    let stan = original.get_str(11).expect("STAN").to_string();
    let mut after = Vec::new();
    while after.len() < 2 {
        let (_, message, _) = fake.next_message().await;
        if message.mti().class() != 8 {
            after.push(message.mti().as_str().to_string());
        }
    }
    assert_eq!(
        after,
        ["0400", "0220"],
        "the reversal first, then the advice"
    );
    queue_empties(&stores).await;
    let record = record_of(&stores, &request).await;
    assert_eq!(
        record.outcome.as_ref().map(|o| o.decided_by),
        Some(DecidedBy::StandIn)
    );
    assert_eq!(record.upstream_stan.as_deref(), Some(stan.as_str()));
}

#[tokio::test]
async fn an_approval_that_does_not_encode_for_the_terminal_is_answered_96_and_reversed() {
    // The terminal's spec takes at most 10 characters in field 42; the issuer
    // approves, echoing 12.
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = include_str!("../specs/iso87ascii.toml");
    let narrow = shipped.replace(
        "42 = { name = \"Card acceptor identification code\", max = 15,",
        "42 = { name = \"Card acceptor identification code\", max = 10,",
    );
    assert_ne!(narrow, shipped, "the spec line to narrow is there");
    let spec = dir.path().join("narrow.toml");
    std::fs::write(&spec, narrow).expect("spec written");
    let long_42: Script = Arc::new(|m: &Message| match m.mti().response() {
        Some(_) if m.mti().class() == 2 && m.mti().function() == 0 => {
            let mut response = answer(m, "00");
            response.set(42, "MERCHANT0001").expect("data field");
            Act::Answer(vec![response])
        }
        Some(_) => Act::Answer(vec![answer(m, "00")]),
        None => Act::Hold,
    });
    let mut fake = FakeIssuer::start(long_42).await;
    let (_, stores) = memory();
    let toml = config(&fake.endpoint(), 2_000, "").replace(
        "bind = \"127.0.0.1:0\"\n",
        &format!(
            "bind = \"127.0.0.1:0\"\nspec = {:?}\n",
            spec.display().to_string()
        ),
    );
    let switch = TestSwitch::start_with(&toml, stores.clone()).await;
    let mut terminal = switch.terminal("pos").await;

    let request = purchase(CARD, 700);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "96");
    assert_eq!(response.get_str(11), request.get_str(11), "its own answer");
    let (original, _) = fake.next_of_class(2).await;
    let stan = original.get_str(11).expect("STAN").to_string();
    fake.reversal_naming(&stan, WAIT)
        .await
        .expect("the approval the terminal never got is reversed");
    queue_empties(&stores).await;
    // The journal says what the terminal got.
    let record = record_of(&stores, &request).await;
    let outcome = record.outcome.expect("recorded");
    assert_eq!(
        (outcome.response_code.as_str(), outcome.decided_by),
        ("96", DecidedBy::Switch)
    );
    assert_eq!(record.reversal, ReversalState::Acknowledged);
}
