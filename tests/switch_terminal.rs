//! The terminal side at its edges: what a request that does not decode, or
//! lacks a field, is answered; a TLS peer that never handshakes; what a
//! forwarded reversal may carry; when a connection is idle.

mod common;

use common::{
    bank_config, code, eventually, purchase, request, with, IssuerTap, TcpSimulator, TestSwitch,
    TlsFiles, TRANSMISSION_TIME, WAIT,
};
use isoswitch::iso8583::{Message, Mti};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const CARD: &str = "4761739001010010";

/// One POS listener; cards starting 4 or 5 go to the in-process simulator,
/// which approves everything.
const SIM_CONFIG: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "sim"
endpoints = ["sim"]

[[route]]
name = "cards"
bins = ["4", "5"]
issuer = "sim"

[simulator]
default_response = "00"
"#;

fn mti(text: &str) -> Mti {
    text.parse().expect("a valid MTI")
}

/// `payload` behind a 2-byte binary length header.
fn framed_2b(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

/// `message` encoded with field 48 (LLL ans) as its last field, then that
/// field's length prefix corrupted: everything before field 48 (MTI, bitmap,
/// 2, 3, 4, 7, 11, 41 ...) decodes, field 48 does not.
fn with_broken_field_48(message: &Message) -> Vec<u8> {
    let message = with(message.clone(), 48, "ABC");
    let mut wire = message.encode(&common::spec()).expect("encodes");
    let at = wire.len() - b"003ABC".len();
    assert_eq!(&wire[at..], b"003ABC", "field 48 is the last field");
    wire[at + 1] = b'Z';
    wire
}

/// The first reversal the issuer behind `tap` received, once one has.
async fn first_reversal_at(tap: &IssuerTap) -> Message {
    let first = || {
        tap.sent_to_issuer()
            .into_iter()
            .find(|m| m.mti().class() == 4)
    };
    eventually("a reversal reached the issuer", || first().is_some()).await;
    first().expect("a reversal")
}

/// Field 90 naming an original by MTI, STAN and the common field 7.
fn field90(original_mti: &str, stan: &str) -> String {
    format!("{original_mti}{stan}{TRANSMISSION_TIME}{}", "0".repeat(22))
}

// ------------------------------------------------------------------ format

/// A request whose field 48 does not decode is answered 30, echoing what
/// could be read before it (STAN 11, terminal 41): with several requests
/// outstanding on one connection, the terminal can tell which was refused.
/// (It once got a bare "0210, 39=30".)
#[tokio::test]
async fn format_error_answer_echoes_the_stan_and_terminal_id_it_could_read() {
    let switch = TestSwitch::start(SIM_CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let request = purchase(CARD, 1_000);
    terminal
        .send_raw(&framed_2b(&with_broken_field_48(&request)))
        .await;

    let refused = terminal.recv().await;
    assert_eq!(refused.mti(), mti("0210"));
    assert_eq!(code(&refused), "30");
    assert_eq!(
        refused.get_str(11),
        request.get_str(11),
        "the refusal names the request it refuses (STAN)"
    );
    assert_eq!(
        refused.get_str(41),
        request.get_str(41),
        "terminal id echoed"
    );
}

/// A response (0110) that does not decode gets no answer, like one that does:
/// a "0110, 39=30" back could pass for the answer to one of the peer's own
/// requests. The next frame back answers the next request.
#[tokio::test]
async fn undecodable_unsolicited_response_gets_no_answer() {
    let switch = TestSwitch::start(SIM_CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let mut stray = Message::new(mti("0110"));
    for (n, v) in [(11, "123456"), (39, "00"), (41, "TERM0001")] {
        stray.set(n, v).expect("data field");
    }
    terminal
        .send_raw(&framed_2b(&with_broken_field_48(&stray)))
        .await;

    let request = purchase(CARD, 1_100);
    terminal.send(&request).await;
    let first = terminal.recv().await;
    assert_eq!(
        (first.mti(), first.get_str(11)),
        (mti("0210"), request.get_str(11)),
        "the first frame back must answer the purchase; got {first:?} with 39={}",
        code(&first)
    );
}

/// docs/ARCHITECTURE.md: a missing amount is 13, not a format error (30).
#[tokio::test]
async fn purchase_without_an_amount_is_an_invalid_amount() {
    let switch = TestSwitch::start(SIM_CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let mut request = purchase(CARD, 1);
    request.remove(4);
    let response = terminal.exchange(&request).await;
    assert_eq!(response.mti(), mti("0210"));
    assert_eq!(
        code(&response),
        "13",
        "docs/ARCHITECTURE.md: 13 = amount missing"
    );
    assert_eq!(response.get(11), request.get(11));
}

/// An 11-digit field 2 decodes (LLVAR n..19), so it is not a format error:
/// docs/ARCHITECTURE.md gives 14 for a PAN of the wrong length.
#[tokio::test]
async fn card_number_of_the_wrong_length_is_an_invalid_card_number() {
    let switch = TestSwitch::start(SIM_CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let request = purchase("47617390010", 1_000);
    let response = terminal.exchange(&request).await;
    assert_eq!(
        code(&response),
        "14",
        "docs/ARCHITECTURE.md: 14 = PAN length wrong"
    );
}

/// An 0800 is allowed; one without field 70 lacks a required field: 30, not
/// 12 ("not allowed on this channel").
#[tokio::test]
async fn network_management_without_field_70_is_a_format_error() {
    let switch = TestSwitch::start(SIM_CONFIG).await;
    let mut terminal = switch.terminal("pos").await;
    let mut echo = Message::new(mti("0800"));
    for (n, v) in [(7, TRANSMISSION_TIME), (11, "424243")] {
        echo.set(n, v).expect("data field");
    }
    let response = terminal.exchange(&echo).await;
    assert_eq!(response.mti(), mti("0810"));
    assert_eq!(response.get_str(11), Some("424243"));
    assert_eq!(code(&response), "30");
}

// --------------------------------------------------------------------- TLS

/// A peer that opens TCP and never starts its TLS handshake is closed after
/// the idle timeout, freeing its connection slot: a few silent sockets must
/// not lock every terminal out (`max_connections = 1` here).
#[tokio::test]
async fn tls_listener_closes_a_connection_that_never_starts_its_handshake() {
    let files = TlsFiles::generate();
    let config = format!(
        "[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\nmax_connections = 1\n\
         idle_timeout_s = 1\ntls = {}\n\n[[issuer]]\nname = \"sim\"\nendpoints = [\"sim\"]\n\n\
         [[route]]\nname = \"cards\"\nbins = [\"4\"]\nissuer = \"sim\"\n\n\
         [simulator]\ndefault_response = \"00\"\n",
        files.listener_tls(false)
    );
    let switch = TestSwitch::start(&config).await;
    let mut silent = TcpStream::connect(switch.addr("tls"))
        .await
        .expect("connects");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(WAIT, silent.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a connection that never sent a ClientHello was still open after {WAIT:?} \
         (idle_timeout_s = 1), holding the listener's only connection slot: {closed:?}"
    );
}

// --------------------------------------------------------------- reversals

/// A terminal's reversal that arrives while its original is still at the
/// issuer (the usual case: the terminal's own timer fired) is acknowledged at
/// once, and once the issuer approves, the reversal it receives names the
/// STAN the issuer saw. (It was once forwarded at once with the terminal's
/// field 90, naming a STAN the issuer never saw, so the approval stood.)
#[tokio::test]
async fn reversal_sent_while_the_original_is_at_the_issuer_names_the_stan_the_issuer_saw() {
    // The issuer holds this one purchase for 3 s: the reversal is sent and
    // handled long before it answers.
    let sim = TcpSimulator::start(
        r#"
        [[rule]]
        mti = "0200"
        amount_min = 77700
        amount_max = 77700
        respond = "00"
        delay_ms = 3000
        "#,
    )
    .await;
    let tap = IssuerTap::start(sim.addr).await;
    let switch = TestSwitch::start(&bank_config(&tap.endpoint(), 10_000)).await;
    let mut terminal = switch.terminal("pos").await;

    let original = purchase(CARD, 77_700);
    terminal.send(&original).await;
    let amount = format!("{:012}", 77_700);
    eventually("the purchase is at the issuer", || {
        tap.sent_to_issuer()
            .iter()
            .any(|m| m.mti() == mti("0200") && m.get_str(4) == Some(amount.as_str()))
    })
    .await;
    let issuer_stan = tap
        .sent_to_issuer()
        .iter()
        .find(|m| m.mti() == mti("0200") && m.get_str(4) == Some(amount.as_str()))
        .and_then(|m| m.get_str(11).map(str::to_string))
        .expect("issuer-side STAN");

    let terminal_stan = original.get_str(11).expect("STAN");
    let reversal = with(
        request("0400", CARD, 77_700),
        90,
        &field90("0200", terminal_stan),
    );
    terminal.send(&reversal).await;
    // Both answers: the 0410 (at once) and the 0210 (after the delay).
    let mut answers = [terminal.recv().await, terminal.recv().await];
    answers.sort_by_key(|m| m.mti());
    assert_eq!(answers[0].mti(), mti("0210"));
    assert_eq!(answers[1].mti(), mti("0410"));

    let forwarded = first_reversal_at(&tap).await;
    let f90 = forwarded.get_str(90).expect("field 90");
    assert_eq!(
        &f90[4..10],
        issuer_stan,
        "field 90 must name the STAN the issuer saw ({issuer_stan}), not the terminal's \
         ({terminal_stan}); the issuer cannot match this reversal"
    );
}

/// A terminal's reversal is forwarded without the track 2 (35) and PIN block
/// (52) it carried: sensitive authentication data is not sent again nor kept
/// in the store-and-forward queue (PCI DSS 3.2), as the switch's own
/// reversals never carry it.
#[tokio::test]
async fn forwarded_terminal_reversal_carries_no_track_data_or_pin_block() {
    let sim = TcpSimulator::start("").await;
    let tap = IssuerTap::start(sim.addr).await;
    let switch = TestSwitch::start(&bank_config(&tap.endpoint(), 5_000)).await;
    let mut terminal = switch.terminal("pos").await;

    let original = purchase(CARD, 4_400);
    assert_eq!(code(&terminal.exchange(&original).await), "00");
    let mut reversal = with(
        request("0400", CARD, 4_400),
        90,
        &field90("0200", original.get_str(11).expect("STAN")),
    );
    reversal
        .set(35, "4761739001010010D25121011234567890")
        .and_then(|m| m.set(52, [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0]))
        .expect("data fields");
    let ack = terminal.exchange(&reversal).await;
    assert_eq!((ack.mti(), code(&ack)), (mti("0410"), "00"));

    let forwarded = first_reversal_at(&tap).await;
    let leaked: Vec<u8> = [35u8, 45, 52, 55]
        .into_iter()
        .filter(|&n| forwarded.has(n))
        .collect();
    assert!(
        leaked.is_empty(),
        "the reversal sent to the issuer carries sensitive fields {leaked:?}"
    );
}

/// A connection with a request outstanding is not idle: with an issuer slower
/// than `idle_timeout_s`, the terminal that waited for its answer can send
/// its next request on the same connection.
#[tokio::test]
async fn connection_waiting_for_its_answer_is_not_idle() {
    let sim = TcpSimulator::start(
        r#"
        [[rule]]
        amount_min = 66600
        amount_max = 66600
        respond = "00"
        delay_ms = 2500
        "#,
    )
    .await;
    let config = bank_config(&sim.endpoint(), 10_000).replace(
        "bind = \"127.0.0.1:0\"\n",
        "bind = \"127.0.0.1:0\"\nidle_timeout_s = 1\n",
    );
    let switch = TestSwitch::start(&config).await;
    let mut terminal = switch.terminal("pos").await;

    let slow = terminal.exchange(&purchase(CARD, 66_600)).await;
    assert_eq!(code(&slow), "00");
    // Straight after the answer: the connection has not been idle at all.
    let request = purchase(CARD, 100);
    assert!(
        terminal.try_send(&request).await && !terminal.is_closed().await,
        "the switch closed the connection right after answering its outstanding request"
    );
}
