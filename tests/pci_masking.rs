//! PCI DSS habits, proven: after a run with many cards through every outcome
//! (approvals, declines, timeouts with reversals, format and decode errors), no
//! full PAN, track 2 or ICC data appears in the logs (captured at TRACE) or in
//! the metrics. One test in its own binary, because it owns the global logger.

mod common;

use common::log_capture::Captured;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use isoswitch::config::Config;
use isoswitch::frame::{Frame, FrameCodec, FrameConfig};
use isoswitch::iso8583::fields::luhn_valid;
use isoswitch::iso8583::{Message, Mti};
use isoswitch::server::Listener;
use isoswitch::switch::Switch;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A Luhn-valid 16-digit PAN from a 15-digit body.
fn pan(body: u64) -> String {
    let body = format!("{body:015}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|p| luhn_valid(p.as_bytes()))
        .expect("one check digit fits")
}

const CONFIG: &str = r#"
[[listener]]
name = "pci"
bind = "127.0.0.1:0"
channel = "pos"
spec = "iso87ascii"
header = "2b"

[[issuer]]
name = "sim"
endpoints = ["sim"]
timeout_ms = 200

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

[[simulator.rule]]
amount_min = 99900
amount_max = 99999
respond = "drop"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pans_track_data_and_icc_data_never_reach_logs_or_metrics() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let metrics = isoswitch::metrics_http::recorder();

    let config = Config::from_toml_str(CONFIG, "pci").expect("valid config");
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
    let mut secrets = Vec::new();
    let cards = 300u64;
    // Dropped requests that reached the issuer: each times out and is reversed.
    let mut reversed = 0u64;
    for i in 0..cards {
        // Visa cards route; 5xxx cards get 15 (no route); every 7th has a bad check digit.
        let mut card = pan(411_111_000_000_000 + i * 7919);
        if i % 3 == 0 {
            card.replace_range(0..1, "5");
        }
        let amount = match i % 10 {
            0 => "000000000550".to_string(), // declined 05 by rule
            1 => "000000099950".to_string(), // dropped: timeout, 91, reversal
            _ => format!("{:012}", 100 + i),
        };
        let track2 = format!("{card}=30121010000000000000");
        let icc = format!("5A08{card}9F02060000000010009F260811223344556677885713{card}D3012101");
        let mut m = Message::new(Mti::from_static(if i % 2 == 0 { "0100" } else { "0200" }));
        let stan = format!("{:06}", i + 1);
        for (n, v) in [
            (2, card.as_str()),
            (3, "000000"),
            (4, amount.as_str()),
            (7, "1123184100"),
            (11, stan.as_str()),
            (14, "3012"),
            (35, track2.as_str()),
            (41, "PCI00001"),
            (49, "840"),
        ] {
            m.set(n, v).expect("field");
        }
        let mut icc_bytes = Vec::new();
        isoswitch::iso8583::encoding::hex::decode_into(icc.as_bytes(), &mut icc_bytes)
            .expect("hex");
        m.set(55, &icc_bytes).expect("field");
        if i % 11 == 0 {
            m.remove(41); // format error: 30
        } else if i % 10 == 1 && i % 3 != 0 {
            reversed += 1;
        }
        let wire = m.encode(&spec).expect("encodes");
        framed.send(Frame::new(wire.clone())).await.expect("sends");
        if i % 13 == 0 {
            // A corrupted copy: the PAN is in the bytes the decoder rejects.
            let mut bad = wire.clone();
            let last = bad.len() - 1;
            bad[last] = b'X';
            bad.push(b'!');
            framed.send(Frame::new(bad)).await.expect("sends");
        }
        secrets.push(card);
        secrets.push(track2);
        secrets.push(icc);
    }
    // Every request gets an answer (the dropped ones after the 200 ms timeout).
    let expected = cards + (0..cards).filter(|i| i % 13 == 0).count() as u64;
    for _ in 0..expected {
        let answer = tokio::time::timeout(Duration::from_secs(20), framed.next())
            .await
            .expect("answered in time")
            .expect("connection open")
            .expect("framing ok");
        assert!(!answer.payload.is_empty());
    }
    // The queued reversals must reach the simulator, and log, before the logs
    // are read: otherwise their log lines would go unchecked.
    let acknowledged =
        format!("isoswitch_reversals_acknowledged_total{{issuer=\"sim\"}} {reversed}");
    common::poll_until(
        &format!("the simulator has acknowledged {reversed} reversals"),
        Duration::from_secs(20),
        || {
            std::future::ready(
                metrics
                    .render()
                    .lines()
                    .any(|l| l == acknowledged)
                    .then_some(()),
            )
        },
    )
    .await;
    token.cancel();

    let logs = captured.text();
    let rendered = metrics.render();
    assert!(
        logs.contains("411111******"),
        "masked PANs are logged, so the check is live"
    );
    assert!(
        logs.len() > 10_000,
        "the run logged plenty: {} bytes",
        logs.len()
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "logs contain card data: {secret}"
        );
        assert!(
            !rendered.contains(secret.as_str()),
            "metrics contain card data: {secret}"
        );
    }
    // Field 55 as uppercase or lowercase hex, and track 2 with a D separator.
    let lower: Vec<String> = secrets.iter().map(|s| s.to_lowercase()).collect();
    for secret in &lower {
        assert!(!logs.contains(secret.as_str()));
    }
    assert!(
        !rendered.contains("PCI00001"),
        "no terminal id in metric labels"
    );
}
