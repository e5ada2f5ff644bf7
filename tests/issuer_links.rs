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
    answer, approve_everything, closed_port, eventually, parse_config, poll_until, spec, Act,
    FakeIssuer, HeldPort, Script, TestSwitch, TlsFiles, TRANSMISSION_TIME, WAIT,
};
use isoswitch::config::{Endpoint, IssuerConfig, IssuerTls, ListenerTls};
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
    poll_until("the reversal is queued", WAIT, || async {
        (switch.switch.saf_depth_now("bank").await.ok() == Some(1)).then_some(())
    })
    .await;

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
         the reload (reversals seen: {delivered:?}; queue depth now {:?})",
        switch.switch.saf_depth_now("bank").await
    );
    drop(bank);
}

/// An issuer (or a load balancer in front of a dead one) that accepts and
/// closes at once is redialled with the capped exponential backoff
/// docs/ARCHITECTURE.md asks for, not every 50–100 ms: the backoff restarts only after a session
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

// ------------------------------------------------------------ an issuer alone

/// Timeout for tests that wait for one: short, yet long enough for a busy
/// machine to answer the requests that are meant to be answered.
const QUICK_TIMEOUT_MS: u64 = 300;

fn issuer_config(endpoints: Vec<Endpoint>) -> IssuerConfig {
    IssuerConfig {
        name: "test".into(),
        endpoints,
        spec: "iso87ascii".into(),
        header: "2b".into(),
        header_includes_self: false,
        connections: 1,
        timeout_ms: 5_000,
        echo_interval_s: 0,
        sign_on: false,
        tls: None,
    }
}

fn start_issuer(config: &IssuerConfig) -> (Issuer, CancellationToken) {
    let shutdown = CancellationToken::new();
    let issuer = Issuer::start(config, spec(), None, shutdown.clone()).expect("issuer starts");
    (issuer, shutdown)
}

impl FakeIssuer {
    fn address(&self) -> Endpoint {
        Endpoint::Address(self.addr)
    }
}

/// An 0100 as the switch would forward it, track data included.
fn authorization(stan: &str) -> Message {
    let mut m = request("0100", stan, 1000);
    for (field, value) in [(22, "051"), (35, "4761739001010010=2812")] {
        m.set(field, value).expect("data field");
    }
    m
}

/// Approves everything but `mtis`, which it holds.
fn unanswered(mtis: &'static [&'static str]) -> Script {
    let approve = approve_everything();
    Arc::new(move |m: &Message| {
        if mtis.contains(&m.mti().as_str()) {
            Act::Hold
        } else {
            approve(m)
        }
    })
}

/// Messages the fake receives up to and including the next `mti`.
async fn messages_until(fake: &mut FakeIssuer, mti: Mti) -> Vec<Message> {
    let mut seen = Vec::new();
    loop {
        let (_, message, _) = fake.next_message().await;
        let done = message.mti() == mti;
        seen.push(message);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn request_goes_out_with_the_link_stan_and_comes_back_with_the_callers() {
    let mut fake = FakeIssuer::start(approve_everything()).await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![fake.address()]));
    eventually("link up", || issuer.is_available()).await;

    let (response, issuer_stan) = issuer
        .request_traced(authorization("123456"))
        .await
        .expect("answered");
    let (_, on_wire, _) = fake.next_message().await;
    assert_eq!(on_wire.mti(), mti("0100"));
    assert_eq!(on_wire.get_str(11), Some(issuer_stan.to_string().as_str()));
    assert_ne!(issuer_stan.to_string(), "123456", "the issuer's own STAN");
    assert_eq!(response.mti(), mti("0110"));
    assert_eq!(response.get_str(11), Some("123456"));
    assert_eq!(response.get_str(39), Some("00"));
    let status = issuer.status();
    assert_eq!(status.outstanding, 0);
    assert_eq!(status.endpoints[0].address, fake.address().to_string());
    assert!(status.endpoints[0].up);
    assert!(!status.endpoints[0].signed_on, "sign-on is off");
    shutdown.cancel();
}

#[tokio::test]
async fn concurrent_requests_on_one_link_are_matched_when_answered_out_of_order() {
    let mut fake = FakeIssuer::start(Arc::new(|_: &Message| Act::Hold)).await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![fake.address()]));
    eventually("link up", || issuer.is_available()).await;

    const CALLERS: u32 = 50;
    let mut callers = JoinSet::new();
    for i in 0..CALLERS {
        let issuer = issuer.clone();
        callers.spawn(async move {
            let mut request = authorization(&format!("{:06}", 700 + i));
            request
                .set(4, format!("{:012}", 1000 + i))
                .expect("data field");
            (i, issuer.request(request).await)
        });
    }
    let mut held = Vec::new();
    for _ in 0..CALLERS {
        held.push(fake.next_message().await);
    }
    let mut stans: Vec<_> = held
        .iter()
        .map(|(_, m, _)| m.get_str(11).map(String::from))
        .collect();
    stans.sort();
    stans.dedup();
    assert_eq!(
        stans.len(),
        CALLERS as usize,
        "one STAN per outstanding request"
    );
    assert!(held.iter().all(|(connection, _, _)| *connection == 0));
    assert_eq!(issuer.status().outstanding, CALLERS as usize);

    for (_, request, out) in held.into_iter().rev() {
        out.send(answer(&request, "00")).expect("connection open");
    }
    while let Some(joined) = callers.join_next().await {
        let (i, result) = joined.expect("caller task");
        let response = result.expect("answered");
        assert_eq!(
            response.get_str(11),
            Some(format!("{:06}", 700 + i).as_str())
        );
        assert_eq!(
            response.get_str(4),
            Some(format!("{:012}", 1000 + i).as_str())
        );
    }
    assert_eq!(issuer.status().outstanding, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn sign_on_is_sent_first_and_the_link_is_up_only_after_its_0810() {
    let mut fake = FakeIssuer::start(unanswered(&["0800"])).await;
    let (issuer, shutdown) = start_issuer(&IssuerConfig {
        sign_on: true,
        ..issuer_config(vec![fake.address()])
    });

    let (_, sign_on, out) = fake.next_message().await;
    assert_eq!(sign_on.mti(), mti("0800"));
    assert_eq!(sign_on.get_str(70), Some("001"));
    assert!(sign_on.transmission_time().is_ok(), "field 7 is MMDDhhmmss");
    assert!(sign_on.stan().is_ok(), "field 11 is set");
    assert!(!issuer.is_available());
    assert!(matches!(
        issuer.request(authorization("000009")).await,
        Err(UpstreamError::Unavailable)
    ));

    out.send(answer(&sign_on, "00")).expect("connection open");
    eventually("signed on", || issuer.is_available()).await;
    assert!(issuer.status().endpoints[0].signed_on);
    let response = issuer
        .request(authorization("000009"))
        .await
        .expect("answered");
    assert_eq!(response.get_str(39), Some("00"));
    shutdown.cancel();
}

#[tokio::test]
async fn refused_sign_on_closes_the_link_and_signs_on_again() {
    let refuse = Arc::new(|m: &Message| Act::Answer(vec![answer(m, "91")]));
    let mut fake = FakeIssuer::start(refuse).await;
    let (issuer, shutdown) = start_issuer(&IssuerConfig {
        sign_on: true,
        ..issuer_config(vec![fake.address()])
    });
    let (first, sign_on, _) = fake.next_message().await;
    assert_eq!(sign_on.get_str(70), Some("001"));
    let (second, again, _) = fake.next_message().await;
    assert_eq!(again.get_str(70), Some("001"));
    assert_ne!(first, second, "a new connection after the refusal");
    assert!(!issuer.is_available());
    shutdown.cancel();
}

/// The switch over the fake issuer with a short timeout, and a terminal.
async fn switch_with_quick_timeout(fake: &FakeIssuer) -> (TestSwitch, common::Terminal) {
    let switch = TestSwitch::start(&one_issuer_config(&fake.endpoint(), QUICK_TIMEOUT_MS)).await;
    let terminal = switch.terminal("pos").await;
    (switch, terminal)
}

async fn queue_empties(switch: &TestSwitch) {
    poll_until("the queue empties", WAIT, || async {
        (switch.switch.saf_depth_now("bank").await.ok() == Some(0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn timed_out_request_is_reversed_once_and_repeated_until_acknowledged() {
    let mut fake = FakeIssuer::start(unanswered(&["0200", "0400"])).await;
    let (switch, mut terminal) = switch_with_quick_timeout(&fake).await;

    let started = Instant::now();
    terminal.send(&request("0200", "123456", 1_000)).await;
    let refused = terminal.recv().await;
    assert_eq!(refused.get_str(39), Some("91"));
    assert!(started.elapsed() >= Duration::from_millis(QUICK_TIMEOUT_MS));

    let (_, original, _) = fake.next_message().await;
    assert_eq!(original.mti(), mti("0200"));
    let issuer_stan = original.get_str(11).expect("STAN").to_string();
    let (_, reversal, _) = fake.next_message().await;
    assert_eq!(reversal.mti(), mti("0400"));
    let expected_90 = format!(
        "0200{issuer_stan}{TRANSMISSION_TIME}00000012345{}",
        "0".repeat(11)
    );
    assert_eq!(reversal.get_str(90), Some(expected_90.as_str()));
    for field in [2, 3, 4, 7, 32, 37, 41, 42, 49] {
        assert_eq!(reversal.get(field), original.get(field), "field {field}");
    }
    assert!(!reversal.has(35), "no track data in a reversal");

    // Unanswered, it comes again as a repeat, which the fake acknowledges.
    let (_, repeat, _) = fake.next_message().await;
    assert_eq!(repeat.mti(), mti("0401"));
    assert_eq!(repeat.get(90), reversal.get(90));
    queue_empties(&switch).await;

    // The queue sends nothing more of it: the next message is a new purchase.
    terminal.send(&request("0200", "123457", 1_000)).await;
    for message in messages_until(&mut fake, mti("0200")).await {
        assert_ne!(message.mti(), mti("0400"), "no second reversal");
        if message.mti() == mti("0401") {
            // A repeat already on its way when the 0410 arrived.
            assert_eq!(message.get(90), reversal.get(90));
        }
    }
}

#[tokio::test]
async fn late_approval_is_counted_and_not_reversed_twice() {
    let mut fake = FakeIssuer::start(unanswered(&["0200"])).await;
    let (switch, mut terminal) = switch_with_quick_timeout(&fake).await;
    let bank = switch.issuer("bank");

    terminal.send(&request("0200", "123456", 1_000)).await;
    assert_eq!(terminal.recv().await.get_str(39), Some("91"));
    let (_, original, out) = fake.next_message().await;
    let (_, reversal, _) = fake.next_message().await;
    assert_eq!(reversal.mti(), mti("0400"));
    queue_empties(&switch).await;

    out.send(answer(&original, "00")).expect("connection open");
    eventually("late response", || bank.status().late_responses >= 1).await;

    terminal.send(&request("0200", "123457", 1_000)).await;
    for message in messages_until(&mut fake, mti("0200")).await {
        assert_ne!(message.mti(), mti("0400"), "no second reversal");
    }
    assert_eq!(bank.status().unmatched_responses, 0);
}

#[tokio::test]
async fn lost_connection_fails_the_caller_and_reverses_the_request() {
    let close_on_purchase = Arc::new(|m: &Message| match m.mti().as_str() {
        "0200" => Act::Close,
        _ => Act::Answer(vec![answer(m, "00")]),
    });
    let mut fake = FakeIssuer::start(close_on_purchase).await;
    let (switch, mut terminal) = switch_with_quick_timeout(&fake).await;

    terminal.send(&request("0200", "123456", 1_000)).await;
    assert_eq!(terminal.recv().await.get_str(39), Some("91"));
    let (first, original, _) = fake.next_message().await;
    assert_eq!(original.mti(), mti("0200"));
    let issuer_stan = original.get_str(11).expect("STAN").to_string();
    let (second, reversal, _) = fake.next_message().await;
    assert_ne!(first, second, "sent after reconnecting");
    assert_eq!(reversal.mti(), mti("0400"));
    assert_eq!(
        reversal.get_str(90).map(|f| &f[4..10]),
        Some(issuer_stan.as_str())
    );
    queue_empties(&switch).await;
}

#[tokio::test]
async fn requests_fail_over_to_the_second_endpoint_when_the_first_refuses() {
    let refused = closed_port().await;
    let mut fake = FakeIssuer::start(approve_everything()).await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![
        Endpoint::Address(refused.addr()),
        fake.address(),
    ]));
    eventually("second endpoint up", || issuer.is_available()).await;

    let response = issuer
        .request(authorization("000001"))
        .await
        .expect("answered");
    assert_eq!(response.get_str(39), Some("00"));
    let (_, on_wire, _) = fake.next_message().await;
    assert_eq!(on_wire.mti(), mti("0100"));
    let status = issuer.status();
    assert!(!status.endpoints[0].up);
    assert!(status.endpoints[1].up);
    shutdown.cancel();
}

#[tokio::test]
async fn no_live_link_means_unavailable() {
    let refused = closed_port().await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![Endpoint::Address(refused.addr())]));
    assert!(!issuer.is_available());
    let error = issuer
        .request(authorization("000001"))
        .await
        .expect_err("no link");
    assert!(matches!(error, UpstreamError::Unavailable));
    assert!(error.is_upstream_fault());
    shutdown.cancel();
}

#[tokio::test]
async fn link_reconnects_after_the_issuer_restarts() {
    // The port stays ours while the issuer is down, so its restart cannot
    // find it taken.
    let port = HeldPort::new();
    let fake = FakeIssuer::serve(port.listen(), approve_everything(), None);
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![fake.address()]));
    eventually("link up", || issuer.is_available()).await;
    issuer
        .request(authorization("000001"))
        .await
        .expect("answered");

    fake.stop().await;
    eventually("link down", || !issuer.is_available()).await;
    let _fake = FakeIssuer::serve(port.listen(), approve_everything(), None);
    eventually("link up again", || issuer.is_available()).await;
    let response = issuer
        .request(authorization("000002"))
        .await
        .expect("answered");
    assert_eq!(response.get_str(11), Some("000002"));
    shutdown.cancel();
}

#[tokio::test]
async fn idle_link_sends_an_echo_and_recycles_when_it_is_not_answered() {
    let mut fake = FakeIssuer::start(unanswered(&["0800"])).await;
    let idle = Duration::from_secs(1);
    let started = Instant::now();
    let (issuer, shutdown) = start_issuer(&IssuerConfig {
        timeout_ms: QUICK_TIMEOUT_MS,
        echo_interval_s: 1,
        ..issuer_config(vec![fake.address()])
    });
    assert_eq!(fake.next_connection().await, 0);

    let (connection, echo, _) = fake.next_message().await;
    assert_eq!(connection, 0);
    assert_eq!(echo.mti(), mti("0800"));
    assert_eq!(echo.get_str(70), Some("301"));
    assert!(started.elapsed() >= idle, "sent only once idle");

    assert_eq!(
        fake.next_connection().await,
        1,
        "recycled after the echo timed out"
    );
    assert!(started.elapsed() >= idle + Duration::from_millis(QUICK_TIMEOUT_MS));
    eventually("link up again", || issuer.is_available()).await;
    shutdown.cancel();
}

#[tokio::test]
async fn answered_echoes_keep_the_link() {
    let mut fake = FakeIssuer::start(approve_everything()).await;
    let (issuer, shutdown) = start_issuer(&IssuerConfig {
        timeout_ms: QUICK_TIMEOUT_MS,
        echo_interval_s: 1,
        ..issuer_config(vec![fake.address()])
    });
    for _ in 0..3 {
        let (connection, echo, _) = fake.next_message().await;
        assert_eq!((connection, echo.get_str(70)), (0, Some("301")));
    }
    assert!(issuer.is_available());
    shutdown.cancel();
}

#[tokio::test]
async fn unmatched_response_is_dropped_and_counted() {
    let stray_then_answer = Arc::new(|m: &Message| {
        let mut stray = answer(m, "00");
        stray.set(11, "999999").expect("data field");
        Act::Answer(vec![stray, answer(m, "00")])
    });
    let fake = FakeIssuer::start(stray_then_answer).await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![fake.address()]));
    eventually("link up", || issuer.is_available()).await;

    let response = issuer
        .request(authorization("123456"))
        .await
        .expect("answered");
    assert_eq!(response.get_str(11), Some("123456"));
    // The stray came first on the same stream, so it has been counted.
    assert_eq!(issuer.status().unmatched_responses, 1);
    assert_eq!(issuer.status().late_responses, 0);
    shutdown.cancel();
}

#[tokio::test]
async fn shutdown_refuses_new_requests_but_lets_outstanding_ones_finish() {
    let mut fake = FakeIssuer::start(Arc::new(|_: &Message| Act::Hold)).await;
    let (issuer, shutdown) = start_issuer(&issuer_config(vec![fake.address()]));
    eventually("link up", || issuer.is_available()).await;

    let in_flight = tokio::spawn({
        let issuer = issuer.clone();
        async move { issuer.request(authorization("123456")).await }
    });
    let (_, request, out) = fake.next_message().await;
    shutdown.cancel();
    eventually("draining", || !issuer.is_available()).await;
    assert!(matches!(
        issuer.request(authorization("000002")).await,
        Err(UpstreamError::Unavailable)
    ));
    out.send(answer(&request, "00")).expect("still connected");
    let response = in_flight
        .await
        .expect("task")
        .expect("answered while draining");
    assert_eq!(response.get_str(39), Some("00"));
}

#[tokio::test]
async fn tls_link_talks_to_a_tls_issuer() {
    let pki = TlsFiles::generate();
    let acceptor = isoswitch::tls::acceptor(&ListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    })
    .expect("server TLS");
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let mut fake = FakeIssuer::serve(listener, approve_everything(), Some(acceptor));

    let (issuer, shutdown) = start_issuer(&IssuerConfig {
        tls: Some(IssuerTls {
            ca: pki.ca.clone(),
            cert: None,
            key: None,
            server_name: Some("localhost".into()),
        }),
        ..issuer_config(vec![fake.address()])
    });
    eventually("TLS link up", || issuer.is_available()).await;
    let response = issuer
        .request(authorization("123456"))
        .await
        .expect("answered");
    assert_eq!(response.get_str(39), Some("00"));
    assert_eq!(fake.next_message().await.1.mti(), mti("0100"));
    shutdown.cancel();
}

/// An issuer answers one transaction under another outstanding one's STAN:
/// the answer names a different terminal, RRN and amount, so it is nobody's.
/// Each terminal gets only its own answer, and the misdirected one is counted.
#[tokio::test]
async fn an_answer_under_another_requests_stan_is_not_delivered_to_it() {
    let holds_purchases: Script = Arc::new(|m: &Message| match m.mti().as_str() {
        "0200" => Act::Hold,
        _ => match m.mti().response() {
            Some(_) => Act::Answer(vec![answer(m, "00")]),
            None => Act::Hold,
        },
    });
    let mut fake = FakeIssuer::start(holds_purchases).await;
    let switch = TestSwitch::start(&one_issuer_config(&fake.endpoint(), 30_000)).await;
    let bank = switch.issuer("bank");
    let mut first = switch.terminal("pos").await;
    let mut second = switch.terminal("pos").await;

    let mut a = request("0200", "100001", 1_000);
    a.set(37, "000000000101").expect("field");
    let mut b = request("0200", "100002", 2_000);
    b.set(37, "000000000102").expect("field");
    b.set(41, "TERM0002").expect("field");
    first.send(&a).await;
    let (a_on_wire, out) = fake.next_of_class(2).await;
    second.send(&b).await;
    let (b_on_wire, _) = fake.next_of_class(2).await;

    // B's answer, declined, under A's STAN.
    let mut misdirected = answer(&b_on_wire, "05");
    misdirected
        .set(11, a_on_wire.get_str(11).expect("STAN"))
        .expect("field");
    out.send(misdirected).expect("connection open");
    eventually("the misdirected answer is counted", || {
        bank.status().unmatched_responses == 1
    })
    .await;

    // The real answers.
    out.send(answer(&b_on_wire, "05")).expect("connection open");
    out.send(answer(&a_on_wire, "00")).expect("connection open");
    let to_first = first.recv().await;
    let to_second = second.recv().await;
    assert_eq!(
        (
            to_first.get_str(11),
            to_first.get_str(37),
            to_first.get_str(39)
        ),
        (Some("100001"), Some("000000000101"), Some("00"))
    );
    assert_eq!(
        (
            to_second.get_str(11),
            to_second.get_str(37),
            to_second.get_str(39)
        ),
        (Some("100002"), Some("000000000102"), Some("05"))
    );
}
