//! The issuer side against scripted fake issuers: which STAN a reversal
//! names, store-and-forward across a reload, and how an issuer that drops
//! every connection is redialled.
//!
//! Everything runs on 127.0.0.1 with port 0. Fake issuers here are scripted in
//! this file, so the tests depend only on the library's public API.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{
    answer, approve_everything, eventually, parse_config, spec, Act, FakeIssuer, Script,
    TestSwitch, TRANSMISSION_TIME, WAIT,
};
use isoswitch::config::{Endpoint, IssuerConfig};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::simulator::Simulator;
use isoswitch::upstream::{Issuer, UpstreamError};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

const CARD: &str = "4761739001010010";

fn mti(text: &str) -> Mti {
    text.parse().expect("a valid MTI")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A terminal request with the given MTI, STAN and amount.
fn request(mti_text: &str, stan: &str, amount: u64) -> Message {
    let mut m = Message::new(mti(mti_text));
    for (n, v) in [
        (2, CARD.to_string()),
        (3, "000000".to_string()),
        (4, format!("{amount:012}")),
        (7, TRANSMISSION_TIME.to_string()),
        (11, stan.to_string()),
        (32, "12345".to_string()),
        (37, "000000000001".to_string()),
        (41, "TERM0001".to_string()),
        (42, "MERCHANT0000001".to_string()),
        (49, "840".to_string()),
    ] {
        m.set(n, v).expect("a data field");
    }
    m
}

// ------------------------------------------------------ the switch and a POS

fn one_issuer_config(endpoints: &str, timeout_ms: u64) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = [{endpoints}]
timeout_ms = {timeout_ms}
echo_interval_s = 0
sign_on = false

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"
"#
    )
}

// ---------------------------------------------------------------- the tests

/// A terminal reversal (0400) that arrives while its original 0200 is still
/// at the issuer is held until the issuer answers; the reversal the issuer
/// then gets names, in field 90, the STAN it saw on the original (the link
/// rewrote field 11), so the approval it made is taken back.
#[tokio::test]
async fn terminal_reversal_racing_its_original_names_the_issuer_stan_at_the_issuer() {
    let script: Script = Arc::new(|m: &Message| match m.mti().as_str() {
        "0200" => Act::Hold,
        _ => match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        },
    });
    let mut fake = FakeIssuer::start(script).await;
    let switch = TestSwitch::start(&one_issuer_config(&fake.endpoint(), 30_000)).await;
    let mut terminal = switch.terminal("pos").await;

    let original = request("0200", "777001", 4_200);
    terminal.send(&original).await;
    let (on_wire, out) = fake.next_of_class(2).await;
    let issuer_stan = on_wire.get_str(11).expect("STAN").to_string();
    assert_ne!(issuer_stan, "777001", "the link rewrites field 11");

    // The terminal gives up on the original and reverses it.
    let mut reversal = request("0400", "777002", 4_200);
    let field90 = format!("0200777001{TRANSMISSION_TIME}{}", "0".repeat(22));
    reversal.set(90, field90).expect("field 90");
    terminal.send(&reversal).await;
    let acknowledged = terminal.recv().await;
    assert_eq!(acknowledged.mti(), mti("0410"));
    assert_eq!(acknowledged.get_str(39), Some("00"));

    // Now the issuer approves the original.
    out.send(answer(&on_wire, "00")).expect("connection open");
    let approved = terminal.recv().await;
    assert_eq!(approved.mti(), mti("0210"));

    // Some reversal reaching the issuer must name the STAN it knows.
    let found = fake
        .reversal_naming(&issuer_stan, Duration::from_secs(5))
        .await;
    assert!(
        found.is_ok(),
        "no reversal named issuer STAN {issuer_stan}; reversals named {found:?}"
    );
}

/// An issuer that stops reading (a hung host, a full TCP window) must not
/// hang the link task in a write: while it waits for the socket no timer
/// fires and no command is answered. A write that does not finish within
/// the issuer's timeout ends the session, so every request ends (timeout,
/// lost connection or unavailable) and what was out is reversed.
#[tokio::test]
async fn requests_to_an_issuer_that_stops_reading_still_end_within_the_timeout() {
    // A listener with a tiny receive buffer whose connection is never read.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    socket.bind(loopback()).expect("bind");
    let listener = socket.listen(8).expect("listen");
    let addr = listener.local_addr().expect("address");
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    let stalled = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
            let _ = accepted_tx.send(());
        }
    });

    let config = IssuerConfig {
        name: "stalled".into(),
        endpoints: vec![Endpoint::Address(addr)],
        spec: "iso87ascii".into(),
        header: "2b".into(),
        header_includes_self: false,
        connections: 1,
        timeout_ms: 300,
        echo_interval_s: 0,
        sign_on: false,
        tls: None,
    };
    let shutdown = CancellationToken::new();
    let issuer = Issuer::start(&config, spec(), None, shutdown.clone()).expect("issuer starts");
    timeout(WAIT, accepted.recv())
        .await
        .expect("the link connects")
        .expect("accepted");
    eventually("the link is up", || issuer.is_available()).await;

    // About 7 KB a request: a few thousand fill any loopback buffer.
    let filler = "X".repeat(999);
    let mut requests = JoinSet::new();
    for i in 0..2_000u32 {
        let mut m = request("0200", &format!("{:06}", i + 1), 100);
        for field in [46, 47, 48, 56, 57, 58, 59] {
            m.set(field, &filler).expect("field");
        }
        let issuer = issuer.clone();
        requests.spawn(async move { issuer.request(m).await });
    }

    let mut ended = 0usize;
    let mut timed_out = 0usize;
    let all_ended = timeout(Duration::from_secs(8), async {
        while let Some(result) = requests.join_next().await {
            ended += 1;
            if matches!(
                result.expect("request task"),
                Err(UpstreamError::Timeout { .. })
            ) {
                timed_out += 1;
            }
        }
    })
    .await;
    let still_waiting = requests.len();
    shutdown.cancel();
    stalled.abort();
    assert!(
        all_ended.is_ok(),
        "{still_waiting} requests still waiting 8 s after a 300 ms timeout \
         ({ended} ended, {timed_out} of them as timeouts)"
    );
}

/// A reload that changes an issuer's configuration (say, adds the failover
/// endpoint an operator reaches for during an outage) starts a new `Issuer`
/// and retires the old one. A reversal still waiting in the old one's
/// store-and-forward queue is handed over and delivered through the new
/// links, not dropped with the old queue.
#[tokio::test]
async fn reversals_queued_for_an_issuer_survive_a_reload_that_changes_it() {
    // The first endpoint drops the link on the purchase and then stays down.
    let die_on_purchase: Script = Arc::new(|m: &Message| match m.mti().as_str() {
        "0200" => Act::CloseAndDie,
        _ => match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        },
    });
    let mut first = FakeIssuer::start(die_on_purchase).await;
    let mut second = FakeIssuer::start(approve_everything()).await;
    let switch = TestSwitch::start(&one_issuer_config(&first.endpoint(), 2_000)).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;

    terminal.send(&request("0200", "555001", 3_300)).await;
    let (on_wire, _) = first.next_of_class(2).await;
    let issuer_stan = on_wire.get_str(11).expect("STAN").to_string();
    let lost = terminal.recv().await;
    assert_eq!(lost.get_str(39), Some("91"), "link lost before the answer");
    eventually("the reversal is queued", || bank.status().saf_depth == 1).await;

    // The operator adds a second endpoint (and so changes the issuer's config).
    let endpoints = format!("{}, {}", first.endpoint(), second.endpoint());
    let generation = switch
        .switch
        .reload(parse_config(&one_issuer_config(&endpoints, 2_000)))
        .await
        .expect("valid reload");
    assert!(generation > 1);

    let delivered = second
        .reversal_naming(&issuer_stan, Duration::from_secs(8))
        .await;
    assert!(
        delivered.is_ok(),
        "the reversal of issuer STAN {issuer_stan} never reached the issuer after \
         the reload (reversals seen: {delivered:?}; old queue depth now {})",
        bank.status().saf_depth
    );
}

/// An issuer (or a load balancer in front of a dead one) that accepts and
/// closes at once is redialled with the capped exponential backoff DESIGN.md
/// asks for, not every 50–100 ms: the backoff restarts only after a session
/// that lasted. Six connections with delays doubling from 100 ms (each at
/// least half its base) span at least 1.55 s.
#[tokio::test]
async fn an_issuer_that_drops_every_connection_at_once_is_redialled_with_growing_delays() {
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (report, mut connections) = mpsc::unbounded_channel();
    let dropper = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = report.send(Instant::now());
            drop(tcp);
        }
    });
    let config = IssuerConfig {
        name: "flapping".into(),
        endpoints: vec![Endpoint::Address(addr)],
        spec: "iso87ascii".into(),
        header: "2b".into(),
        header_includes_self: false,
        connections: 1,
        timeout_ms: 1_000,
        echo_interval_s: 0,
        sign_on: false,
        tls: None,
    };
    let shutdown = CancellationToken::new();
    let _issuer = Issuer::start(&config, spec(), None, shutdown.clone()).expect("issuer starts");

    let mut at = Vec::new();
    for _ in 0..6 {
        let when = timeout(WAIT, connections.recv())
            .await
            .expect("the link keeps redialling")
            .expect("dropper runs");
        at.push(when);
    }
    shutdown.cancel();
    dropper.abort();
    let span = at[5] - at[0];
    let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        span >= Duration::from_millis(1_550),
        "six connections in {span:?} (gaps {gaps:?}): the backoff never grows"
    );
}

/// The fake issuer and switch wiring used above work, and a plain approval
/// goes through with the terminal's STAN restored.
#[tokio::test]
async fn supporting_an_approval_goes_through_the_fake_issuer() {
    let mut fake = FakeIssuer::start(approve_everything()).await;
    let switch = TestSwitch::start(&one_issuer_config(&fake.endpoint(), 5_000)).await;
    let mut terminal = switch.terminal("pos").await;
    terminal.send(&request("0200", "123456", 100)).await;
    let response = terminal.recv().await;
    assert_eq!(response.get_str(39), Some("00"));
    assert_eq!(response.get_str(11), Some("123456"));
    let (on_wire, _) = fake.next_of_class(2).await;
    assert_ne!(on_wire.get_str(11), Some("123456"));
}

/// `"sim"` endpoints are served by the real simulator in process when the
/// caller hands it to the issuer: upstream knows only `InProcessIssuer`.
#[tokio::test]
async fn start_serves_sim_endpoints_with_the_real_simulator_in_process() {
    let defaults = isoswitch::config::Config::embedded_default().expect("default config");
    let simulator = defaults
        .simulator
        .as_ref()
        .expect("default has a simulator");
    let simulator = Arc::new(Simulator::new(simulator).expect("simulator builds"));
    let issuer_config = defaults.issuer("sim").expect("default issuer");
    let shutdown = CancellationToken::new();
    let issuer =
        Issuer::start(issuer_config, spec(), Some(simulator), shutdown.clone()).expect("starts");
    eventually("simulator link up", || issuer.is_available()).await;
    let response = timeout(WAIT, issuer.request(request("0100", "123456", 100)))
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.mti(), mti("0110"));
    assert_eq!(response.get_str(11), Some("123456"));
    assert!(response.has(39));
    shutdown.cancel();
}
