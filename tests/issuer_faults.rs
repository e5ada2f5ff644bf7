//! Issuer-side faults, one test each, against a scripted issuer: after each,
//! every terminal has exactly one answer carrying its own STAN (11) and RRN
//! (37), whatever went out and was not answered is reversed exactly once,
//! nothing is left outstanding, and a link the issuer broke is redialled.
//!
//! Everything runs on 127.0.0.1 with port 0; the fake issuer faults only the
//! purchases (0200) and answers everything else, so reversals and the marker
//! authorization that ends each test go through.

mod common;

use std::sync::Arc;

use common::{
    answer, eventually, field_90_stan, framed_bytes, poll_until, Act, FakeIssuer, Script, Seen,
    Terminal, TestSwitch, TlsFiles, TRANSMISSION_TIME, WAIT,
};
use isoswitch::config::ListenerTls;
use isoswitch::iso8583::{Message, Mti};
use isoswitch::journal::Stores;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const CARD: &str = "4761739001010010";
const TIMEOUT_MS: u64 = 300;

fn mti(text: &str) -> Mti {
    text.parse().expect("a valid MTI")
}

fn config(endpoints: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = [{endpoints}]
timeout_ms = {TIMEOUT_MS}
echo_interval_s = 0
sign_on = false
{extra}

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"
"#
    )
}

/// A terminal's request: `mti_text` with its own STAN, RRN and terminal id.
fn request(mti_text: &str, stan: &str, rrn: &str, terminal: &str, amount: u64) -> Message {
    let mut m = Message::new(mti(mti_text));
    for (n, v) in [
        (2, CARD.to_string()),
        (3, "000000".to_string()),
        (4, format!("{amount:012}")),
        (7, TRANSMISSION_TIME.to_string()),
        (11, stan.to_string()),
        (32, "12345".to_string()),
        (37, rrn.to_string()),
        (41, terminal.to_string()),
        (42, "MERCHANT0000001".to_string()),
        (49, "840".to_string()),
    ] {
        m.set(n, v).expect("a data field");
    }
    m
}

fn purchase(stan: &str, rrn: &str, amount: u64) -> Message {
    request("0200", stan, rrn, "TERM0001", amount)
}

/// Faults purchases as `fault` says; answers every other request with 00.
fn faulting_purchases(fault: impl Fn(&Message) -> Act + Send + Sync + 'static) -> Script {
    Arc::new(move |m: &Message| {
        if m.mti() == mti("0200") {
            return fault(m);
        }
        match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        }
    })
}

/// `request`'s answer under another MTI.
fn answer_as(request: &Message, mti_text: &str, code: &str) -> Message {
    let right = answer(request, code);
    let mut wrong = Message::new(mti(mti_text));
    for field in 2..=128u8 {
        if let Some(value) = right.get(field) {
            wrong.set(field, value).expect("a data field");
        }
    }
    wrong
}

/// The STAN the issuer saw on `on_wire`.
fn stan_of(on_wire: &Message) -> String {
    on_wire
        .get_str(11)
        .expect("field 11 on the wire")
        .to_string()
}

/// A STAN no request of the test uses: the issuer's, moved half the range.
fn another_stan(stan: &str, by: u32) -> String {
    let n: u32 = stan.parse().expect("numeric STAN");
    format!("{:06}", (n + 500_000 + by) % 1_000_000)
}

/// The answer is `request`'s (response MTI, STAN 11, RRN 37, terminal 41)
/// and carries `code`.
fn assert_own_answer(response: &Message, request: &Message, code: &str) {
    let ids = |m: &Message| {
        (
            m.get_str(11).map(str::to_string),
            m.get_str(37).map(str::to_string),
            m.get_str(41).map(str::to_string),
        )
    };
    assert_eq!(Some(response.mti()), request.mti().response(), "MTI");
    assert_eq!(ids(response), ids(request), "STAN, RRN and terminal id");
    assert_eq!(response.get_str(39), Some(code), "response code");
}

/// The issuer's `tls` line: trust the test CA, expect "localhost".
fn issuer_tls(pki: &TlsFiles) -> String {
    format!(
        "tls = {{ ca = {}, server_name = \"localhost\" }}",
        toml::Value::String(pki.ca.display().to_string())
    )
}

/// Nothing outstanding at the issuer and nothing left in its queue.
async fn settled(switch: &TestSwitch) {
    let bank = switch.issuer("bank");
    eventually("nothing outstanding", || bank.status().outstanding == 0).await;
    poll_until("the queue empties", WAIT, || async {
        (switch.switch.saf_depth_now("bank").await.ok() == Some(0)).then_some(())
    })
    .await;
}

/// What the fake issuer took in, from some point up to a marker.
#[derive(Default)]
struct Received {
    messages: Vec<Message>,
    connections: Vec<usize>,
}

impl Received {
    /// The MTIs of the reversals whose field 90 names `stan`.
    fn reversals_naming(&self, stan: &str) -> Vec<Mti> {
        self.messages
            .iter()
            .filter(|m| m.mti().class() == 4 && field_90_stan(m).as_deref() == Some(stan))
            .map(Message::mti)
            .collect()
    }

    fn any_reversal(&self) -> bool {
        self.messages.iter().any(|m| m.mti().class() == 4)
    }
}

/// Sends an authorization from `terminal` once everything else has settled
/// and collects what the fake receives until it arrives: whatever the switch
/// was still to send about earlier transactions has gone out before it.
async fn received_until_marker(fake: &mut FakeIssuer, terminal: &mut Terminal) -> Received {
    let marker = request("0100", "999999", "000000999999", "TERM0001", 1);
    terminal.send(&marker).await;
    let mut received = Received::default();
    loop {
        match fake.next().await {
            Seen::Connected(id) => received.connections.push(id),
            Seen::Message { message, .. } => {
                if message.mti() == mti("0100") {
                    break;
                }
                received.messages.push(message);
            }
        }
    }
    assert_own_answer(&terminal.recv().await, &marker, "00");
    received
}

/// One 0400 names `stan`; anything else naming it is a repeat of that one.
fn assert_reversed_once(received: &Received, stan: &str) {
    let reversals = received.reversals_naming(stan);
    assert_eq!(
        reversals.iter().filter(|m| **m == mti("0400")).count(),
        1,
        "reversals naming issuer STAN {stan}: {reversals:?}"
    );
    assert!(
        reversals
            .iter()
            .all(|m| *m == mti("0400") || *m == mti("0401")),
        "{reversals:?}"
    );
}

/// A purchase the fake faults: the terminal's answer must be a 91 of its
/// own, the purchase reversed once, and the issuer left with nothing
/// outstanding. Returns what the fake received after the purchase.
async fn purchase_refused_91_and_reversed_once(
    fake: &mut FakeIssuer,
    switch: &TestSwitch,
    terminal: &mut Terminal,
) -> Received {
    let sent = purchase("100001", "000000000101", 1_000);
    terminal.send(&sent).await;
    let (on_wire, _) = fake.next_of_class(2).await;
    assert_own_answer(&terminal.recv().await, &sent, "91");
    settled(switch).await;
    let received = received_until_marker(fake, terminal).await;
    assert_reversed_once(&received, &stan_of(&on_wire));
    received
}

// ---------------------------------------------------------------- the tests

/// An approval that comes after the timeout: the terminal already has its
/// 91, the reversal already went; the approval is counted as late and
/// reverses nothing a second time.
#[tokio::test]
async fn an_approval_later_than_the_timeout_is_counted_late_and_reversed_once() {
    let mut fake = FakeIssuer::start(faulting_purchases(|_| Act::Hold)).await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;

    let sent = purchase("100001", "000000000101", 1_000);
    terminal.send(&sent).await;
    let (on_wire, out) = fake.next_of_class(2).await;
    assert_own_answer(&terminal.recv().await, &sent, "91");
    out.send(answer(&on_wire, "00")).expect("connection open");
    eventually("the late approval is counted", || {
        bank.status().late_responses == 1
    })
    .await;

    settled(&switch).await;
    let received = received_until_marker(&mut fake, &mut terminal).await;
    assert_reversed_once(&received, &stan_of(&on_wire));
    assert_eq!(bank.status().unmatched_responses, 0);
    assert!(received.connections.is_empty(), "the link is kept");
}

/// An issuer that goes silent, echoes included: every terminal gets its own
/// 91, each purchase is queued for reversal once (its later attempts are
/// repeats, 0401), and the idle link's unanswered echo recycles it.
#[tokio::test]
async fn a_silent_issuer_gets_one_reversal_per_purchase_and_its_link_recycled() {
    let mut fake = FakeIssuer::start(Arc::new(|_: &Message| Act::Hold)).await;
    let switch = TestSwitch::start(
        &config(&fake.endpoint(), "").replace("echo_interval_s = 0", "echo_interval_s = 1"),
    )
    .await;
    assert_eq!(fake.next_connection().await, 0);

    let mut sent = Vec::new();
    for i in 1..=3u32 {
        let mut terminal = switch.terminal("pos").await;
        let request = request(
            "0200",
            &format!("10000{i}"),
            &format!("00000000010{i}"),
            &format!("TERM000{i}"),
            u64::from(i) * 1_000,
        );
        terminal.send(&request).await;
        sent.push((terminal, request));
    }
    for (terminal, request) in &mut sent {
        assert_own_answer(&terminal.recv().await, request, "91");
    }

    // Until the link is recycled, everything that reaches the issuer.
    let mut received = Received::default();
    loop {
        match fake.next().await {
            Seen::Connected(id) => {
                assert_eq!(id, 1);
                break;
            }
            Seen::Message { message, .. } => received.messages.push(message),
        }
    }
    let purchases: Vec<String> = received
        .messages
        .iter()
        .filter(|m| m.mti() == mti("0200"))
        .map(stan_of)
        .collect();
    assert_eq!(purchases.len(), 3, "each purchase went out once");
    for stan in &purchases {
        assert_reversed_once(&received, stan);
    }
    assert!(
        received
            .messages
            .iter()
            .any(|m| m.mti() == mti("0800") && m.get_str(70) == Some("301")),
        "an echo went before the link was recycled"
    );
    // Repeats go out on the new link too, each outstanding for a moment.
    let bank = switch.issuer("bank");
    eventually("nothing outstanding", || bank.status().outstanding == 0).await;
    assert_eq!(
        switch.switch.saf_depth_now("bank").await.ok(),
        Some(3),
        "one queued reversal per purchase, still owed"
    );
}

/// The issuer writes half of its answer and closes: the half is not an
/// answer, the link is redialled, and the reversal goes on the new one.
#[tokio::test]
async fn an_answer_cut_off_by_a_close_is_refused_91_reversed_once_and_redialled() {
    let mut fake = FakeIssuer::start(faulting_purchases(|m| {
        let whole = framed_bytes(&answer(m, "00"));
        Act::RawThenClose(whole[..whole.len() / 2].to_vec())
    }))
    .await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let mut terminal = switch.terminal("pos").await;

    let received = purchase_refused_91_and_reversed_once(&mut fake, &switch, &mut terminal).await;
    assert_eq!(received.connections, vec![1], "redialled once");
}

/// A whole frame that does not decode is counted and dropped; the stream is
/// still in step, so the link is kept and an answer behind it is delivered.
/// A purchase that gets only garbage times out into 91 and one reversal.
#[tokio::test]
async fn garbage_frames_are_dropped_and_counted_and_the_link_kept() {
    const GARBAGE: &[u8] = b"\x00\x0cNOT ISO 8583";
    let mut fake = FakeIssuer::start(faulting_purchases(|m| {
        let mut bytes = GARBAGE.to_vec();
        if m.get_str(4) == Some("000000001000") {
            bytes.extend(framed_bytes(&answer(m, "00")));
        }
        Act::Raw(bytes)
    }))
    .await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;

    let answered = purchase("100001", "000000000101", 1_000);
    assert_own_answer(&terminal.exchange(&answered).await, &answered, "00");
    let (answered_on_wire, _) = fake.next_of_class(2).await;

    let unanswered = purchase("100002", "000000000102", 2_000);
    terminal.send(&unanswered).await;
    let (unanswered_on_wire, _) = fake.next_of_class(2).await;
    assert_own_answer(&terminal.recv().await, &unanswered, "91");

    settled(&switch).await;
    let received = received_until_marker(&mut fake, &mut terminal).await;
    assert_reversed_once(&received, &stan_of(&unanswered_on_wire));
    assert!(received
        .reversals_naming(&stan_of(&answered_on_wire))
        .is_empty());
    assert_eq!(bank.status().unmatched_responses, 2);
    assert!(received.connections.is_empty(), "the link is kept");
}

/// A length header of 0 cannot start a frame: the stream is out of step,
/// so the link is closed, the purchase failed and reversed, and redialled.
#[tokio::test]
async fn a_frame_of_length_zero_recycles_the_link_and_reverses_once() {
    let mut fake = FakeIssuer::start(faulting_purchases(|_| Act::Raw(vec![0, 0]))).await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let mut terminal = switch.terminal("pos").await;

    let received = purchase_refused_91_and_reversed_once(&mut fake, &switch, &mut terminal).await;
    assert_eq!(received.connections, vec![1], "redialled once");
}

/// An answer under a STAN nobody used is counted and dropped; the purchase
/// waits for its own, times out and is reversed. A stray is not a broken
/// stream: the link is kept.
#[tokio::test]
async fn an_answer_with_an_unknown_stan_is_dropped_and_the_purchase_reversed() {
    let mut fake = FakeIssuer::start(faulting_purchases(|m| {
        let mut stray = answer(m, "00");
        stray
            .set(11, another_stan(&stan_of(m), 0))
            .expect("a data field");
        Act::Answer(vec![stray])
    }))
    .await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let mut terminal = switch.terminal("pos").await;

    let received = purchase_refused_91_and_reversed_once(&mut fake, &switch, &mut terminal).await;
    let status = switch.issuer("bank").status();
    assert_eq!((status.unmatched_responses, status.late_responses), (1, 0));
    assert!(received.connections.is_empty(), "the link is kept");
    // The stray was an approval nobody got: it is reversed too, from what
    // it echoes, naming the STAN it came under.
    let named: std::collections::BTreeSet<String> = received
        .messages
        .iter()
        .filter(|m| m.mti().class() == 4 && m.get_str(37) == Some("000000000101"))
        .filter_map(field_90_stan)
        .collect();
    assert_eq!(named.len(), 2, "the purchase's and the stray's: {named:?}");
}

/// An 0110 under the STAN of an 0200 answers something else: it is not
/// delivered, and the purchase times out and is reversed.
#[tokio::test]
async fn an_answer_to_the_wrong_mti_is_dropped_and_the_purchase_reversed() {
    let mut fake = FakeIssuer::start(faulting_purchases(|m| {
        Act::Answer(vec![answer_as(m, "0110", "00")])
    }))
    .await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let mut terminal = switch.terminal("pos").await;

    let received = purchase_refused_91_and_reversed_once(&mut fake, &switch, &mut terminal).await;
    assert_eq!(switch.issuer("bank").status().unmatched_responses, 1);
    assert!(received.connections.is_empty(), "the link is kept");
}

/// Thousands of answers to nothing, then the real one: each stray is
/// counted and dropped, the terminal gets its own approval and nothing is
/// reversed.
#[tokio::test]
async fn a_flood_of_unsolicited_answers_does_not_hide_the_real_one() {
    const FLOOD: u32 = 5_000;
    let mut fake = FakeIssuer::start(faulting_purchases(|m| {
        let stan = stan_of(m);
        let mut answers: Vec<Message> = (0..FLOOD)
            .map(|i| {
                let mut stray = answer(m, "05");
                stray.set(11, another_stan(&stan, i)).expect("a data field");
                stray
            })
            .collect();
        answers.push(answer(m, "00"));
        Act::Answer(answers)
    }))
    .await;
    let switch = TestSwitch::start(&config(&fake.endpoint(), "")).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;

    let sent = purchase("100001", "000000000101", 1_000);
    assert_own_answer(&terminal.exchange(&sent).await, &sent, "00");
    fake.next_of_class(2).await;
    assert_eq!(bank.status().unmatched_responses, u64::from(FLOOD));

    settled(&switch).await;
    let received = received_until_marker(&mut fake, &mut terminal).await;
    assert!(!received.any_reversal(), "nothing to reverse");
    assert!(received.connections.is_empty(), "the link is kept");
}

/// An issuer that accepts TCP and never answers the TLS handshake: the link
/// never comes up and is redialled; the terminal is refused 91 at once and
/// nothing is queued, since nothing was sent.
#[tokio::test]
async fn an_issuer_that_never_completes_the_tls_handshake_is_redialled_and_nothing_sent() {
    let pki = TlsFiles::generate();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let mute = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
            let _ = accepted_tx.send(());
        }
    });
    let switch = TestSwitch::start_with_issuers_down(
        &config(&format!("\"{addr}\""), &issuer_tls(&pki)),
        Stores::in_memory(),
    )
    .await;
    for _ in 0..2 {
        tokio::time::timeout(WAIT, accepted.recv())
            .await
            .expect("the switch dials (again)")
            .expect("accepted");
    }
    let bank = switch.issuer("bank");
    assert!(!bank.is_available());

    let mut terminal = switch.terminal("pos").await;
    let sent = purchase("100001", "000000000101", 1_000);
    assert_own_answer(&terminal.exchange(&sent).await, &sent, "91");
    assert_eq!(bank.status().outstanding, 0);
    assert_eq!(switch.switch.saf_depth_now("bank").await.ok(), Some(0));
    mute.abort();
}

/// The issuer's certificate expires while the link is up. TLS checks a
/// certificate at the handshake only, so the established session goes on
/// answering; once it closes, no handshake succeeds again: the link is
/// redialled and never comes up, and terminals are refused 91 at once. The
/// purchase the close cut off stays queued for reversal until the issuer
/// presents a valid certificate.
#[tokio::test]
async fn a_certificate_expiring_while_the_link_is_up_stops_the_next_handshake() {
    let expires = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let pki = TlsFiles::generate_server_expiring(expires);
    let acceptor = isoswitch::tls::acceptor(&ListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    })
    .expect("server TLS");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closes_on_3000 = faulting_purchases(|m| match m.get_str(4) {
        Some("000000003000") => Act::Close,
        _ => Act::Answer(vec![answer(m, "00")]),
    });
    let mut fake = FakeIssuer::serve(listener, closes_on_3000, Some(acceptor));
    let switch = TestSwitch::start(&config(&fake.endpoint(), &issuer_tls(&pki))).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;
    assert_eq!(fake.next_connection().await, 0);

    let before = purchase("100001", "000000000101", 1_000);
    assert_own_answer(&terminal.exchange(&before).await, &before, "00");

    // X.509 times have whole seconds: wait until the second after expiry.
    let past_expiry = expires + time::Duration::seconds(1);
    poll_until("the server certificate expires", WAIT, || {
        std::future::ready((OffsetDateTime::now_utc() > past_expiry).then_some(()))
    })
    .await;
    let after = purchase("100002", "000000000102", 2_000);
    assert_own_answer(&terminal.exchange(&after).await, &after, "00");

    let cut_off = purchase("100003", "000000000103", 3_000);
    assert_own_answer(&terminal.exchange(&cut_off).await, &cut_off, "91");
    // A redial whose handshake succeeded would stay up, not dial again.
    assert_eq!(fake.next_connection().await, 1);
    assert_eq!(fake.next_connection().await, 2);
    assert!(!bank.is_available());
    assert_eq!(bank.status().outstanding, 0);
    assert_eq!(
        switch.switch.saf_depth_now("bank").await.ok(),
        Some(1),
        "the cut-off purchase's reversal is owed"
    );

    let refused = purchase("100004", "000000000104", 4_000);
    assert_own_answer(&terminal.exchange(&refused).await, &refused, "91");
}
