//! Terminals driving the switch: a few connections sending unique purchases
//! at a steady pace while reading answers as they come, and, after a crash,
//! the terminal's own reversals (0400, repeated as 0401) for what went
//! unanswered.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Spec};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::processes::WAIT;

/// A card the simulator has an account for, so approvals place holds and a
/// reversal of one shows as `released`.
pub const CARD: &str = "4111111111111111";
/// Field 7 of every purchase.
pub const TRANSMISSION: &str = "1207181500";
/// Purchases in this range the simulator never answers (its drop rule).
pub const DROP_MIN: u64 = 99_900;
pub const DROP_MAX: u64 = 99_999;
/// Purchases in this range the simulator approves late, but within the
/// switch's timeout: a crash meanwhile loses an approval the issuer gave.
pub const SLOW_MIN: u64 = 50_000;
pub const SLOW_MAX: u64 = 50_099;

/// How much load, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub terminals: usize,
    pub per_terminal: usize,
    /// Pause between two purchases of one terminal.
    pub pace: Duration,
}

/// One purchase a terminal sent, and what it heard back.
#[derive(Debug, Clone)]
pub struct Sent {
    pub terminal: String,
    pub stan: String,
    pub rrn: String,
    pub amount: u64,
    /// Field 39 of the answer; `None` when none came before the connection ended.
    pub answer: Option<String>,
}

impl Sent {
    pub fn approved(&self) -> bool {
        self.answer.as_deref() == Some("00")
    }
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        isoswitch::specs::builtin("iso87ascii")
            .expect("shipped spec")
            .expect("shipped spec compiles")
    })
}

static NEXT: AtomicU32 = AtomicU32::new(1);

/// A number no other message of this test process uses.
fn next_number() -> u32 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn terminal_id(n: usize) -> String {
    format!("TERM{n:04}")
}

fn message(mti: &str, fields: &[(u8, &str)]) -> Message {
    let mut message = Message::new(mti.parse().expect("a valid MTI"));
    for (n, value) in fields {
        message.set(*n, *value).expect("a data field");
    }
    message
}

/// Every tenth purchase falls in the simulator's drop range, another tenth
/// in its slow range; the rest are approved at once.
fn amount_for(n: u32) -> u64 {
    let n = u64::from(n);
    match n % 10 {
        5 => DROP_MIN + n % (DROP_MAX - DROP_MIN + 1),
        7 => SLOW_MIN + n % (SLOW_MAX - SLOW_MIN + 1),
        _ => 1_000 + n % 500,
    }
}

fn purchase(terminal: &str, n: u32) -> (Message, Sent) {
    let stan = format!("{:06}", n % 1_000_000);
    let rrn = format!("8{n:011}");
    let amount = amount_for(n);
    let request = message(
        "0200",
        &[
            (2, CARD),
            (3, "000000"),
            (4, &format!("{amount:012}")),
            (7, TRANSMISSION),
            (11, &stan),
            (37, &rrn),
            (41, terminal),
        ],
    );
    let sent = Sent {
        terminal: terminal.to_owned(),
        stan,
        rrn,
        amount,
        answer: None,
    };
    (request, sent)
}

type Connection = Framed<TcpStream, FrameCodec>;

async fn connect(addr: SocketAddr) -> Connection {
    let tcp = timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("the switch accepts in time")
        .expect("the switch accepts");
    tcp.set_nodelay(true).expect("nodelay");
    Framed::new(tcp, FrameCodec::new(FrameConfig::default()))
}

fn encode(request: &Message) -> Frame {
    Frame::new(request.encode(spec()).expect("request encodes"))
}

fn decode(frame: Frame) -> Message {
    Message::decode(spec(), frame.payload).expect("answer decodes")
}

/// Runs `load` against the switch at `addr` until every terminal has sent all
/// its purchases and heard every answer, or its connection ended (a crash, a
/// stop). Every purchase sent is returned, with its answer if one came.
pub async fn drive(addr: SocketAddr, load: Load) -> Vec<Sent> {
    drive_until(addr, load, CancellationToken::new()).await
}

/// As [`drive`], but every terminal stops sending once `stop` is cancelled
/// (at most `per_terminal` each), then waits for its last answers: load
/// that lasts as long as the test needs it, however long that is.
pub async fn drive_until(addr: SocketAddr, load: Load, stop: CancellationToken) -> Vec<Sent> {
    let mut terminals = tokio::task::JoinSet::new();
    for t in 1..=load.terminals {
        terminals.spawn(run_terminal(addr, terminal_id(t), load, stop.clone()));
    }
    let mut all = Vec::new();
    while let Some(done) = terminals.join_next().await {
        all.extend(done.expect("a terminal task does not panic"));
    }
    all
}

/// Longest a terminal waits for its last answers (the switch times out well before).
const LAST_ANSWERS: Duration = Duration::from_secs(20);

async fn run_terminal(
    addr: SocketAddr,
    terminal: String,
    load: Load,
    stop: CancellationToken,
) -> Vec<Sent> {
    let (mut sink, mut stream) = connect(addr).await.split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Sent>();
    let writer = {
        let terminal = terminal.clone();
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(load.pace);
            for _ in 0..load.per_terminal {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = pace.tick() => {}
                }
                let (request, sent) = purchase(&terminal, next_number());
                // Counted as sent before the write: a write that fails half
                // way may still have reached the switch.
                let _ = sent_tx.send(sent);
                if sink.send(encode(&request)).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut answered = 0;
    let mut writer_done = false;
    let reading = async {
        loop {
            while let Ok(s) = sent_rx.try_recv() {
                sent.insert(s.stan.clone(), s);
            }
            if writer_done && answered == sent.len() {
                return;
            }
            let frame = tokio::select! {
                frame = stream.next() => frame,
                more = sent_rx.recv() => {
                    match more {
                        Some(s) => { sent.insert(s.stan.clone(), s); }
                        None => writer_done = true,
                    }
                    continue;
                }
            };
            let Some(Ok(frame)) = frame else {
                return; // closed or broken: whatever is unanswered stays so
            };
            let answer = decode(frame);
            let stan = answer.get_str(11).expect("an answer carries field 11");
            // The writer notes a request before writing it, but the select
            // above may take its answer before that note: read the notes
            // waiting before deciding the STAN was never sent.
            while let Ok(s) = sent_rx.try_recv() {
                sent.insert(s.stan.clone(), s);
            }
            let Some(request) = sent.get_mut(stan) else {
                panic!("{terminal}: an answer for STAN {stan} it never sent");
            };
            assert!(
                request.answer.is_none(),
                "{terminal}: two answers for STAN {stan}"
            );
            request.answer = Some(answer.get_str(39).unwrap_or("(no field 39)").to_owned());
            answered += 1;
        }
    };
    // The sending itself, however long it is told to run, then the last answers.
    let sending = load
        .pace
        .saturating_mul(u32::try_from(load.per_terminal).unwrap_or(u32::MAX));
    let finished = timeout(sending + LAST_ANSWERS, reading).await;
    assert!(
        finished.is_ok(),
        "{terminal}: answers neither came nor the connection ended"
    );
    writer.abort();
    while let Ok(s) = sent_rx.try_recv() {
        sent.insert(s.stan.clone(), s);
    }
    sent.into_values().collect()
}

/// Field 90 naming a terminal's own purchase: MTI, its STAN, its field 7, zeros.
fn original_data(sent: &Sent) -> String {
    format!("0200{}{TRANSMISSION}{}", sent.stan, "0".repeat(22))
}

/// The terminal's reversal of `original`, as `mti` (0400, or 0401 for a repeat).
fn reversal(original: &Sent, mti: &str, stan: &str) -> Message {
    message(
        mti,
        &[
            (2, CARD),
            (3, "000000"),
            (4, &format!("{:012}", original.amount)),
            (7, TRANSMISSION),
            (11, stan),
            (41, &original.terminal),
            (90, &original_data(original)),
        ],
    )
}

/// What the switch answered to one terminal reversal.
#[derive(Debug)]
pub struct ReversalAnswer {
    pub mti: String,
    pub code: String,
}

/// Sends, from a fresh connection per terminal id, a reversal (0400) of each
/// of `unanswered`, then a repeat (0401, same STAN) of the first `repeats` of
/// them; every one must be answered.
pub async fn reverse_as_terminals(
    addr: SocketAddr,
    unanswered: &[&Sent],
    repeats: usize,
) -> Vec<ReversalAnswer> {
    let mut by_terminal: HashMap<&str, Vec<&Sent>> = HashMap::new();
    for sent in unanswered {
        by_terminal.entry(&sent.terminal).or_default().push(sent);
    }
    let repeated: Vec<&Sent> = unanswered.iter().take(repeats).copied().collect();
    let mut answers = Vec::new();
    for (terminal, originals) in by_terminal {
        let mut connection = connect(addr).await;
        let mut exchanges: Vec<(Message, &str)> = Vec::new();
        for original in originals {
            let stan = format!("{:06}", next_number() % 1_000_000);
            let first = reversal(original, "0400", &stan);
            exchanges.push((first, "0410"));
            if repeated.iter().any(|r| r.rrn == original.rrn) {
                exchanges.push((reversal(original, "0401", &stan), "0410"));
            }
        }
        for (request, expected) in exchanges {
            connection
                .send(encode(&request))
                .await
                .expect("reversal sent");
            let frame = match timeout(WAIT, connection.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => panic!("{terminal}: reading the answer to its reversal: {e}"),
                Ok(None) => {
                    panic!("{terminal}: the switch closed instead of answering its reversal")
                }
                Err(_) => panic!("{terminal}: no answer to its reversal within {WAIT:?}"),
            };
            let answer = decode(frame);
            assert_eq!(
                answer.mti().to_string(),
                expected,
                "{terminal}: field 39 {:?}",
                answer.get_str(39)
            );
            assert_eq!(
                answer.get_str(11),
                request.get_str(11),
                "{terminal}: its own answer"
            );
            answers.push(ReversalAnswer {
                mti: request.mti().to_string(),
                code: answer.get_str(39).unwrap_or("(none)").to_owned(),
            });
        }
    }
    answers
}

/// One purchase (an amount approved at once) from a fresh connection as
/// terminal `terminal`; field 39 of the answer.
pub async fn purchase_once(addr: SocketAddr, terminal: &str) -> String {
    let mut n = next_number();
    while amount_for(n) >= SLOW_MIN {
        n = next_number();
    }
    let (request, _) = purchase(terminal, n);
    let mut connection = connect(addr).await;
    connection
        .send(encode(&request))
        .await
        .expect("purchase sent");
    let frame = match timeout(WAIT, connection.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => panic!("reading the answer to a purchase: {e}"),
        Ok(None) => panic!("the switch closed instead of answering a purchase"),
        Err(_) => panic!("no answer to a purchase within {WAIT:?}"),
    };
    let answer = decode(frame);
    assert_eq!(answer.get_str(11), request.get_str(11), "its own answer");
    answer.get_str(39).unwrap_or("(no field 39)").to_owned()
}

/// A purchase in the drop range, sent and left waiting on its connection.
pub struct HeldPurchase {
    _connection: Connection,
    pub sent: Sent,
}

/// Sends one purchase the simulator will drop, as terminal `terminal`.
pub async fn send_dropped_purchase(addr: SocketAddr, terminal: &str) -> HeldPurchase {
    let mut n = next_number();
    while amount_for(n) < DROP_MIN {
        n = next_number();
    }
    let (request, sent) = purchase(terminal, n);
    let mut connection = connect(addr).await;
    connection
        .send(encode(&request))
        .await
        .expect("purchase sent");
    HeldPurchase {
        _connection: connection,
        sent,
    }
}
