//! Whole-switch behaviour on the terminal side of the wire: every length
//! header and the TPDU, many pipelined connections at once, TLS with and
//! without client certificates, and what broken frames do to a connection.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::{code, purchase, with, Framing, Terminal, TestSwitch, TlsFiles, WAIT};
use isoswitch::frame::Tpdu;
use isoswitch::iso8583::{Message, Mti};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SIM: &str = r#"
[[issuer]]
name = "sim"
endpoints = ["sim"]

[[route]]
name = "all"
bins = ["4", "5"]
issuer = "sim"

[simulator]
default_response = "00"
"#;

const CARD: &str = "4761739001010010";

fn config(listeners: &str) -> String {
    format!("{listeners}\n{SIM}")
}

/// One listener per framing variant the switch supports.
const FRAMINGS: [(&str, &str, bool, bool); 7] = [
    ("h2b", "2b", false, false),
    ("h4b", "4b", false, false),
    ("h2a", "2a", false, false),
    ("h4a", "4a", false, false),
    ("h2b-self", "2b", true, false),
    ("h4a-self", "4a", true, false),
    ("h2b-tpdu", "2b", false, true),
];

fn framing_listeners() -> String {
    FRAMINGS
        .iter()
        .map(|(name, header, includes_self, tpdu)| {
            format!(
                "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:0\"\nheader = \"{header}\"\n\
                 header_includes_self = {includes_self}\ntpdu = {tpdu}\n\n"
            )
        })
        .collect()
}

/// The length header as the spec of each kind writes it, built by hand so the
/// test does not share the switch's codec.
fn length_header(header: &str, length: usize) -> Vec<u8> {
    match header {
        "2b" => (length as u16).to_be_bytes().to_vec(),
        "4b" => (length as u32).to_be_bytes().to_vec(),
        "2a" => format!("{length:02}").into_bytes(),
        "4a" => format!("{length:04}").into_bytes(),
        other => panic!("unknown header {other}"),
    }
}

fn header_len(header: &str) -> usize {
    if header.starts_with('2') {
        2
    } else {
        4
    }
}

fn parse_length(header: &str, bytes: &[u8]) -> usize {
    match header {
        "2b" => usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
        "4b" => u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
        _ => std::str::from_utf8(bytes)
            .expect("ASCII length")
            .parse()
            .expect("decimal length"),
    }
}

/// Sends `payload` framed by hand and reads the response the same way:
/// (TPDU, message bytes).
async fn raw_exchange(
    addr: SocketAddr,
    header: &str,
    includes_self: bool,
    tpdu: Option<[u8; 5]>,
    payload: &[u8],
) -> (Option<[u8; 5]>, Vec<u8>) {
    let own = if includes_self { header_len(header) } else { 0 };
    let tpdu_len = if tpdu.is_some() { 5 } else { 0 };
    let mut wire = length_header(header, own + tpdu_len + payload.len());
    wire.extend_from_slice(tpdu.as_ref().map_or(&[][..], |t| &t[..]));
    wire.extend_from_slice(payload);
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(&wire).await.expect("writes");

    let read = async {
        let mut head = vec![0; header_len(header)];
        stream.read_exact(&mut head).await.expect("length header");
        let length = parse_length(header, &head) - own;
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.expect("frame body");
        match tpdu {
            Some(_) => {
                let echoed: [u8; 5] = body[..5].try_into().expect("five bytes");
                (Some(echoed), body[5..].to_vec())
            }
            None => (None, body),
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a response in time")
}

#[tokio::test]
async fn every_framing_variant_gets_an_approval() {
    let switch = TestSwitch::start(&config(&framing_listeners())).await;
    let spec = common::spec();
    let tpdu = Tpdu::new(0x60, 0x0003, 0x0007);

    for (name, header, includes_self, has_tpdu) in FRAMINGS {
        let framing = Framing {
            header,
            includes_self,
            tpdu: has_tpdu.then_some(tpdu),
        };
        let mut terminal = Terminal::connect(switch.addr(name), framing).await;
        let request = purchase(CARD, 1_234);
        terminal.send(&request).await;
        let frame = terminal.recv_frame().await;
        let response = Message::decode(&spec, frame.payload).expect("decodes");
        assert_eq!(code(&response), "00", "listener {name}");
        assert_eq!(response.get(11), request.get(11), "listener {name}");
        if has_tpdu {
            assert_eq!(
                frame.tpdu,
                Some(Tpdu::new(0x60, 0x0007, 0x0003)),
                "source and destination swapped"
            );
        }

        // The same exchange framed by hand, independent of the codec.
        let request = purchase(CARD, 4_321);
        let payload = request.encode(&spec).expect("encodes");
        let raw_tpdu = has_tpdu.then_some([0x60, 0x00, 0x11, 0x00, 0x22]);
        let (echoed, body) =
            raw_exchange(switch.addr(name), header, includes_self, raw_tpdu, &payload).await;
        let response = Message::decode_slice(&spec, &body).expect("decodes");
        assert_eq!(code(&response), "00", "listener {name}, by hand");
        assert_eq!(
            response.get(11),
            request.get(11),
            "listener {name}, by hand"
        );
        if has_tpdu {
            assert_eq!(echoed, Some([0x60, 0x00, 0x22, 0x00, 0x11]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_pipelining_connections_each_get_their_own_answers() {
    const CONNECTIONS: u64 = 100;
    const PER_CONNECTION: u64 = 20;
    let listener = "[[listener]]\nname = \"pos\"\nbind = \"127.0.0.1:0\"\n";
    let switch = TestSwitch::start(&config(listener)).await;
    let addr = switch.addr("pos");

    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..CONNECTIONS {
        tasks.spawn(async move {
            let mut terminal = Terminal::connect(addr, Framing::default()).await;
            let terminal_id = format!("T{connection:07}");
            let mut waiting = HashMap::new();
            for n in 0..PER_CONNECTION {
                let amount = connection * 1_000 + n + 1;
                let request = with(purchase(CARD, amount), 41, &terminal_id);
                terminal.feed(&request).await;
                waiting.insert(request.get_str(11).expect("STAN").to_string(), amount);
            }
            terminal.flush().await;
            for _ in 0..PER_CONNECTION {
                let response = terminal.recv().await;
                let stan = response.get_str(11).expect("STAN echoed");
                let amount = waiting
                    .remove(stan)
                    .unwrap_or_else(|| panic!("{terminal_id}: STAN {stan} is not ours"));
                assert_eq!(code(&response), "00");
                assert_eq!(
                    response.get_str(4),
                    Some(format!("{amount:012}").as_str()),
                    "{terminal_id}: amount echoed for STAN {stan}"
                );
                assert_eq!(response.get_str(41), Some(terminal_id.as_str()));
            }
            assert!(waiting.is_empty());
        });
    }
    let mut finished = 0;
    while let Some(done) = tasks.join_next().await {
        done.expect("connection task succeeds");
        finished += 1;
    }
    assert_eq!(finished, CONNECTIONS);
    let answered: u64 = switch.simulator().stats().responses.values().sum();
    assert_eq!(answered, CONNECTIONS * PER_CONNECTION);
}

#[tokio::test]
async fn a_slow_answer_does_not_hold_back_later_ones_on_the_same_connection() {
    // The simulator holds this terminal's answers for a second: far longer
    // than the fast request takes, so the order is not a race.
    let slow = format!(
        "[[listener]]\nname = \"pos\"\nbind = \"127.0.0.1:0\"\n\n{SIM}\n\
         [[simulator.rule]]\nfields = {{ 41 = \"SLOW0001\" }}\nrespond = \"00\"\ndelay_ms = 1000\n"
    );
    let switch = TestSwitch::start(&slow).await;
    let mut terminal = switch.terminal("pos").await;
    let held = with(purchase(CARD, 100), 41, "SLOW0001");
    let quick = with(purchase(CARD, 200), 41, "FAST0001");
    terminal.feed(&held).await;
    terminal.feed(&quick).await;
    terminal.flush().await;
    let first = terminal.recv().await;
    assert_eq!(first.get(11), quick.get(11), "the quick answer comes first");
    let second = terminal.recv().await;
    assert_eq!(second.get(11), held.get(11));
    assert_eq!((code(&first), code(&second)), ("00", "00"));
}

fn tls_config(files: &TlsFiles) -> String {
    config(&format!(
        "[[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\ntls = {}\n\n\
         [[listener]]\nname = \"mtls\"\nbind = \"127.0.0.1:0\"\ntls = {}\n",
        files.listener_tls(false),
        files.listener_tls(true)
    ))
}

#[tokio::test]
async fn tls_listener_serves_approvals() {
    let files = TlsFiles::generate();
    let switch = TestSwitch::start(&tls_config(&files)).await;

    let mut terminal = Terminal::connect_tls(
        switch.addr("tls"),
        Framing::default(),
        &files.connector(false),
    )
    .await
    .expect("TLS handshake");
    let request = purchase(CARD, 500);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "00");
    assert_eq!(response.get(11), request.get(11));
}

#[tokio::test]
async fn client_certificate_listener_refuses_anonymous_terminals_and_serves_signed_ones() {
    let files = TlsFiles::generate();
    let switch = TestSwitch::start(&tls_config(&files)).await;
    let addr = switch.addr("mtls");

    // With TLS 1.3 the client may finish its side before the server refuses,
    // so the refusal shows either in the handshake or on the first read.
    match Terminal::connect_tls(addr, Framing::default(), &files.connector(false)).await {
        Err(_) => {}
        Ok(mut anonymous) => {
            let sent = anonymous.try_send(&purchase(CARD, 500)).await;
            assert!(
                !sent || anonymous.is_closed().await,
                "a terminal without a certificate was served"
            );
        }
    }

    let mut signed = Terminal::connect_tls(addr, Framing::default(), &files.connector(true))
        .await
        .expect("TLS handshake with a client certificate");
    let response = signed.exchange(&purchase(CARD, 500)).await;
    assert_eq!(code(&response), "00");
    assert_eq!(
        switch.simulator().stats().responses.get("00"),
        Some(&1),
        "only the signed terminal reached the issuer"
    );
}

const GARBAGE_LISTENERS: &str = "[[listener]]\nname = \"pos\"\nbind = \"127.0.0.1:0\"\n\n\
     [[listener]]\nname = \"ascii\"\nbind = \"127.0.0.1:0\"\nheader = \"4a\"\n";

/// `payload` behind a 2-byte binary length.
fn framed_2b(payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    wire
}

#[tokio::test]
async fn undecodable_message_with_a_readable_mti_gets_30_and_the_connection_serves_on() {
    let switch = TestSwitch::start(&config(GARBAGE_LISTENERS)).await;
    let mut terminal = switch.terminal("pos").await;
    // An 0200 whose bitmap announces field 2, cut off inside its length prefix.
    let mut body = b"0200".to_vec();
    body.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(b"1");
    terminal.send_raw(&framed_2b(&body)).await;

    let refused = terminal.recv().await;
    assert_eq!(refused.mti(), Mti::from_static("0210"));
    assert_eq!(code(&refused), "30");

    let request = purchase(CARD, 700);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "00");
    assert_eq!(response.get(11), request.get(11));
}

#[tokio::test]
async fn frame_without_a_readable_mti_gets_no_answer_and_the_connection_serves_on() {
    let switch = TestSwitch::start(&config(GARBAGE_LISTENERS)).await;
    let mut terminal = switch.terminal("pos").await;
    terminal
        .send_raw(&framed_2b(b"\xff\xfenot ISO 8583 at all"))
        .await;

    let request = purchase(CARD, 800);
    let response = terminal.exchange(&request).await;
    assert_eq!(
        response.get(11),
        request.get(11),
        "the first answer is the valid request's: the garbage got none"
    );
    assert_eq!(code(&response), "00");
}

#[tokio::test]
async fn bad_length_header_closes_only_that_connection() {
    let switch = TestSwitch::start(&config(GARBAGE_LISTENERS)).await;
    let mut bystander = switch.terminal("pos").await;
    let warm = bystander.exchange(&purchase(CARD, 100)).await;
    assert_eq!(code(&warm), "00");

    let mut zero_length = switch.terminal("pos").await;
    zero_length.send_raw(b"\x00\x00").await;
    assert!(zero_length.is_closed().await, "zero length closes");

    let ascii = Framing {
        header: "4a",
        ..Framing::default()
    };
    let mut not_digits = Terminal::connect(switch.addr("ascii"), ascii).await;
    not_digits.send_raw(b"12x4").await;
    assert!(not_digits.is_closed().await, "non-digit length closes");

    let after = bystander.exchange(&purchase(CARD, 200)).await;
    assert_eq!(code(&after), "00", "the other connection is untouched");
    let mut fresh = Terminal::connect(switch.addr("ascii"), ascii).await;
    let response = fresh.exchange(&purchase(CARD, 300)).await;
    assert_eq!(code(&response), "00", "the listener still accepts");
}

/// A card number one digit too long does not decode, but its length prefix
/// still says where it ends: the refusal echoes what comes after it (STAN,
/// terminal id, RRN), so a terminal with several requests out can tell which
/// was refused — and never the card number.
#[tokio::test]
async fn a_refusal_of_a_20_digit_card_number_echoes_the_stan_terminal_and_rrn() {
    let switch = TestSwitch::start(&config(GARBAGE_LISTENERS)).await;
    let mut terminal = switch.terminal("pos").await;
    let mut request = purchase(CARD, 700);
    request.set(37, "000000000777").expect("field");
    let wire = request.encode(&common::spec()).expect("encodes");
    let pan_on_wire = format!("{}{CARD}", CARD.len());
    let at = wire
        .windows(pan_on_wire.len())
        .position(|w| w == pan_on_wire.as_bytes())
        .expect("field 2 on the wire");
    let mut body = wire[..at].to_vec();
    body.extend_from_slice(format!("20{CARD}0000").as_bytes());
    body.extend_from_slice(&wire[at + pan_on_wire.len()..]);
    terminal.send_raw(&framed_2b(&body)).await;

    let refused = terminal.recv().await;
    assert_eq!(refused.mti(), Mti::from_static("0210"));
    assert_eq!(code(&refused), "30");
    assert_eq!(refused.get(11), request.get(11));
    assert_eq!(refused.get(41), request.get(41));
    assert_eq!(refused.get_str(37), Some("000000000777"));
    assert!(!refused.has(2), "no card number in the answer");
}
