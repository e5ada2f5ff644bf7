//! What the log gets per transaction at the default level (INFO): a line for
//! every decline and refusal, none for approvals (the journal and the
//! metrics have every transaction; at full load approval lines were most of
//! the log's volume and cost). One test in its own binary: it owns the global
//! logger.

mod common;

use common::log_capture::Captured;
use futures_util::{SinkExt, StreamExt};
use isoswitch::config::Config;
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::server::Listener;
use isoswitch::switch::Switch;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"
channel = "pos"
spec = "iso87ascii"
header = "2b"

[[issuer]]
name = "sim"
endpoints = ["sim"]

[[route]]
name = "visa"
bins = ["4"]
issuer = "sim"

[metrics]
bind = "127.0.0.1:0"

[simulator]
bind = "127.0.0.1:0"
default_response = "00"

[[simulator.rule]]
amount_min = 500
amount_max = 599
respond = "05"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_info_declines_get_a_transaction_line_and_approvals_do_not() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let config = Config::from_toml_str(CONFIG, "log-levels").expect("valid config");
    let token = CancellationToken::new();
    let listener = Listener::bind(&config.listeners[0]).await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let switch = Switch::start(config, token.clone()).expect("starts");
    tokio::spawn(listener.run(switch, token.clone()));

    let spec = isoswitch::specs::builtin("iso87ascii")
        .expect("shipped")
        .expect("compiles");
    let stream = TcpStream::connect(addr).await.expect("connects");
    let mut framed = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
    // Ten approvals (amount 100), four issuer declines (amount 550), three
    // switch refusals (a 5xxx card has no route: 15).
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..17u32 {
        let (card, amount, code) = match i % 17 {
            0..=9 => ("4111111111111111", "000000000100", "00"),
            10..=13 => ("4111111111111111", "000000000550", "05"),
            _ => ("5500000000000004", "000000000100", "15"),
        };
        *expected.entry(code).or_insert(0) += 1;
        let mut m = Message::new(Mti::from_static("0100"));
        let stan = format!("{:06}", i + 1);
        for (n, v) in [
            (2, card),
            (3, "000000"),
            (4, amount),
            (7, "1207184100"),
            (11, stan.as_str()),
            (14, "3012"),
            (41, "LOGS0001"),
            (49, "840"),
        ] {
            m.set(n, v).expect("field");
        }
        let payload = m.encode(&spec).expect("encodes");
        framed
            .send(Frame {
                tpdu: None,
                payload: payload.into(),
            })
            .await
            .expect("sent");
        let answer = framed.next().await.expect("answer").expect("frame");
        let answer = Message::decode(&spec, answer.payload).expect("decodes");
        assert_eq!(answer.get_str(39), Some(code), "request {i}");
    }
    token.cancel();

    let log = captured.text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" transaction "))
        .collect();
    let with_code = |code: &str| {
        lines
            .iter()
            .filter(|l| l.contains(&format!("response_code={code}")))
            .count()
    };
    assert_eq!(with_code("00"), 0, "approvals are DEBUG:\n{log}");
    assert_eq!(with_code("05"), expected["05"], "{log}");
    assert_eq!(with_code("15"), expected["15"], "{log}");
    assert_eq!(lines.len(), expected["05"] + expected["15"], "{log}");
}
