//! The issuer simulator's answers where money moves: which hold a reversal
//! releases, when a card is expired, when zero is an amount, and that answers
//! already decided are written before the simulator closes a connection.
//! Money tests call `Simulator::decide` (the same entry point the TCP server and
//! the in-process `"sim"` endpoint use); connection tests run the real server on
//! 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use isoswitch::frame::{FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Mti, Spec};
use isoswitch::simulator::SimulatorConfig;
use isoswitch::simulator::{bind_and_serve_with, Decision, ReversalOutcome, Simulator};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Longest any test waits on the network.
const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
bind = "127.0.0.1:0"
spec = "iso87ascii"
header = "2b"
default_response = "00"

[[rule]]
fields = { 41 = "CLOSE001" }
respond = "close"

[[account]]
pan = "4111111111111111"
balance = 100000
expiry = "9912"

[[account]]
pan = "4012888888881881"
balance = 100000
expiry = "9912"

[[account]]
pan = "4222222222222220"
balance = 2500
expiry = "2001"
"#;

const CARD_A: &str = "4111111111111111";
const CARD_B: &str = "4012888888881881";
/// Configured with expiry 2001: expired.
const EXPIRED_CARD: &str = "4222222222222220";

fn config() -> SimulatorConfig {
    toml::from_str(CONFIG).expect("valid simulator config")
}

fn simulator() -> Simulator {
    Simulator::new(&config()).expect("simulator builds")
}

fn message(mti: &str, fields: &[(u8, &str)]) -> Message {
    let mut message = Message::new(mti.parse().expect("valid MTI"));
    for (n, v) in fields {
        message.set(*n, v).expect("data field");
    }
    message
}

/// A 0200 purchase of `amount` minor units.
fn purchase(pan: &str, amount: u64, stan: &str, time: &str, terminal: &str) -> Message {
    let amount = format!("{amount:012}");
    message(
        "0200",
        &[
            (2, pan),
            (3, "000000"),
            (4, &amount),
            (7, time),
            (11, stan),
            (37, "000000000001"),
            (41, terminal),
            (49, "840"),
        ],
    )
}

/// A 0400 naming its original by field 90 (original MTI 0200, STAN, time).
fn reversal_by_field_90(pan: &str, amount: u64, stan: &str, time: &str, terminal: &str) -> Message {
    let amount = format!("{amount:012}");
    let field90 = format!("0200{stan}{time}0000000000000000000000");
    assert_eq!(field90.len(), 42);
    message(
        "0400",
        &[
            (2, pan),
            (3, "000000"),
            (4, &amount),
            (7, "0102999999"),
            (11, "900001"),
            (41, terminal),
            (90, &field90),
        ],
    )
}

fn code_of(decision: Decision) -> String {
    match decision {
        Decision::Respond { response, .. } => response.get_str(39).expect("field 39").to_owned(),
        other => panic!("expected a response, got {other:?}"),
    }
}

/// Two terminals with their own STAN counters may send the same STAN in the
/// same second (routine in a load test of many virtual terminals). A reversal
/// from terminal A releases A's hold only: A gets its 10.00 back, B's 90.00
/// stays held. (The key once ignored the terminal, and B was credited.)
#[test]
fn reversal_releases_the_hold_of_its_own_terminal_not_another_terminals_with_the_same_stan_and_time(
) {
    let sim = simulator();
    let time = "0102030405";
    let on_a = purchase(CARD_A, 1_000, "000123", time, "TERMAAAA");
    let on_b = purchase(CARD_B, 9_000, "000123", time, "TERMBBBB");
    assert_eq!(code_of(sim.decide(&on_a)), "00");
    assert_eq!(code_of(sim.decide(&on_b)), "00");
    assert_eq!(sim.balance(CARD_A), Some(99_000));
    assert_eq!(sim.balance(CARD_B), Some(91_000));

    let reversal = reversal_by_field_90(CARD_A, 1_000, "000123", time, "TERMAAAA");
    assert_eq!(code_of(sim.decide(&reversal)), "00");

    assert_eq!(
        (sim.balance(CARD_A), sim.balance(CARD_B)),
        (Some(100_000), Some(91_000)),
        "terminal A's reversal must restore card A and leave card B's purchase alone"
    );
}

/// A reversal whose field 90 names an original (STAN + transmission time) that
/// the simulator never approved (here it declined it 51) changes no balance,
/// even when the terminal reused that STAN for an earlier approved purchase
/// (a daily reset, a wrap past 999999): with the original's time given, only
/// an exact match counts, and the reversal is recorded as unmatched.
#[test]
fn reversal_of_a_declined_original_named_by_field_90_leaves_earlier_purchases_held() {
    let sim = simulator();
    // Day 1: STAN 000005 approved, 600.00 held.
    let day1 = purchase(CARD_A, 60_000, "000005", "0101100000", "TERM0001");
    assert_eq!(code_of(sim.decide(&day1)), "00");
    assert_eq!(sim.balance(CARD_A), Some(40_000));
    // Day 2: the terminal's STAN counter is back at 000005; declined 51.
    let day2 = purchase(CARD_A, 50_000, "000005", "0102100000", "TERM0001");
    assert_eq!(code_of(sim.decide(&day2)), "51");
    assert_eq!(sim.balance(CARD_A), Some(40_000));
    // The terminal did not see the 51 in time and reverses the day-2 purchase.
    let reversal = reversal_by_field_90(CARD_A, 50_000, "000005", "0102100000", "TERM0001");
    assert_eq!(code_of(sim.decide(&reversal)), "00");

    assert_eq!(
        sim.balance(CARD_A),
        Some(40_000),
        "the day-1 purchase must stay held"
    );
    assert_eq!(
        sim.reversals().last().map(|r| r.outcome),
        Some(ReversalOutcome::Unmatched)
    );
}

/// A card whose account is configured expired (2001) is declined 54 even when
/// the request claims a future expiry in field 14: the card on file decides.
/// Through the switch POS requests carry field 14, so an expired test account
/// must still give 54 there. Nothing is debited.
#[test]
fn expired_account_is_declined_54_even_when_field_14_claims_a_future_expiry() {
    let sim = simulator();
    let mut request = purchase(EXPIRED_CARD, 100, "000001", "0102030405", "TERM0001");
    request.set(14, "9912").expect("data field");
    assert_eq!(code_of(sim.decide(&request)), "54");
    assert_eq!(sim.balance(EXPIRED_CARD), Some(2_500));
}

/// A 0200 financial purchase of zero is not an account verification (that is
/// an 0100 of zero, as docs/ARCHITECTURE.md and the switch's own amount rule have it): it
/// gets 0210 with 13, "zero where not allowed", and no auth code.
#[test]
fn zero_amount_financial_purchase_0200_is_declined_13_not_approved() {
    let sim = simulator();
    let request = purchase(CARD_A, 0, "000001", "0102030405", "TERM0001");
    let Decision::Respond { response, .. } = sim.decide(&request) else {
        panic!("expected a response");
    };
    assert_eq!(response.mti(), Mti::from_static("0210"));
    assert_eq!(response.get_str(39), Some("13"));
    assert!(!response.has(38), "no auth code for a decline");
}

// ---- on a socket ----

struct Running {
    sim: Arc<Simulator>,
    addr: SocketAddr,
    spec: Spec,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

impl Running {
    /// A new connection that has sent `bytes` in one write, so the server
    /// reads them together.
    async fn send_in_one_write(&self, bytes: &[u8]) -> TcpStream {
        let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(self.addr))
            .await
            .expect("connects in time")
            .expect("connects");
        tokio::time::timeout(WAIT, stream.write_all(bytes))
            .await
            .expect("writes in time")
            .expect("writes");
        stream
    }
}

async fn start() -> Running {
    let config = config();
    let sim = Arc::new(Simulator::new(&config).expect("simulator builds"));
    let shutdown = CancellationToken::new();
    let (addr, task) = bind_and_serve_with(sim.clone(), &config, shutdown.clone())
        .await
        .expect("binds 127.0.0.1:0");
    let spec = isoswitch::specs::resolve(&config.spec).expect("built-in spec");
    Running {
        sim,
        addr,
        spec,
        shutdown,
        task,
    }
}

/// `message` framed with the simulator's 2-byte binary length header.
fn framed(spec: &Spec, message: &Message) -> Vec<u8> {
    let payload = message.encode(spec).expect("encodes");
    let mut out = u16::try_from(payload.len())
        .expect("short message")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Every message the server sends until it closes the connection.
async fn read_until_closed(stream: TcpStream, spec: &Spec) -> Vec<Message> {
    let mut frames = FramedRead::new(stream, FrameCodec::new(FrameConfig::default()));
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, frames.next()).await {
            Err(_) => panic!("the server neither answered nor closed within {WAIT:?}"),
            Ok(None) | Ok(Some(Err(_))) => return out,
            Ok(Some(Ok(frame))) => {
                out.push(Message::decode(spec, frame.payload).expect("response decodes"))
            }
        }
    }
}

/// A purchase and a broken frame (a length header declaring 65535 bytes, over
/// the 8192 limit) arrive in one TCP segment. The purchase is decided (10.00
/// debited and held) before the framing error closes the connection, so its
/// 0210 is written first: otherwise the acquirer times out on an approval
/// whose money is held.
#[tokio::test]
async fn framing_error_still_delivers_the_answers_already_decided_on_that_connection() {
    let running = start().await;
    let spec = &running.spec;
    let mut bytes = framed(
        spec,
        &purchase(CARD_A, 1_000, "000001", "0102030405", "TERM0001"),
    );
    bytes.extend_from_slice(b"\xff\xffjunk");
    let stream = running.send_in_one_write(&bytes).await;

    let answers = read_until_closed(stream, spec).await;
    assert_eq!(
        running.sim.balance(CARD_A),
        Some(99_000),
        "the purchase was approved and held"
    );
    assert_eq!(
        answers.iter().map(|m| m.get_str(11)).collect::<Vec<_>>(),
        vec![Some("000001")],
        "the approved purchase's 0210 must reach the acquirer before the close"
    );
    assert_eq!(answers[0].get_str(39), Some("00"));
}

/// Fault injection hits only the request it matches: a purchase from TERM0001
/// and then a request matching the `close` rule arrive together. The purchase
/// is approved, debited and answered; then the connection closes, and the
/// close-rule request itself gets no answer.
#[tokio::test]
async fn close_rule_does_not_swallow_the_answer_to_an_earlier_request_on_the_connection() {
    let running = start().await;
    let spec = &running.spec;
    let mut bytes = framed(
        spec,
        &purchase(CARD_A, 1_000, "000001", "0102030405", "TERM0001"),
    );
    bytes.extend(framed(
        spec,
        &purchase(CARD_B, 500, "000002", "0102030405", "CLOSE001"),
    ));
    let stream = running.send_in_one_write(&bytes).await;

    let answers = read_until_closed(stream, spec).await;
    assert_eq!(running.sim.stats().closes, 1, "the close rule fired");
    assert_eq!(
        running.sim.balance(CARD_A),
        Some(99_000),
        "the purchase was approved and held"
    );
    assert_eq!(
        answers.iter().map(|m| m.get_str(11)).collect::<Vec<_>>(),
        vec![Some("000001")],
        "the earlier purchase's 0210 must be sent before closing"
    );
}
