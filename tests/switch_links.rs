//! Whole-switch behaviour towards issuers on TCP: timeouts and lost connections
//! answered 91 and reversed exactly once, reconnection, failover between
//! endpoints, and configuration reloads while traffic flows.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    bank_config, closed_port, code, eventually, parse_config, purchase, IssuerTap, TcpSimulator,
    Terminal, TestSwitch, TRANSMISSION_TIME,
};
use isoswitch::iso8583::{Message, Stan};
use tokio::net::TcpListener;

const UNKNOWN_CARD: &str = "4761739001010010";

/// The requests of one MTI class the issuer received (4 = reversals).
fn of_class(messages: &[Message], class: u8) -> Vec<Message> {
    messages
        .iter()
        .filter(|m| m.mti().class() == class)
        .cloned()
        .collect()
}

/// The issuer-side STAN of the request for `amount` the issuer received.
fn issuer_stan_of(messages: &[Message], amount: u64) -> String {
    let amount = format!("{amount:012}");
    let forwarded: Vec<_> = messages
        .iter()
        .filter(|m| m.mti().class() == 2 && m.get_str(4) == Some(amount.as_str()))
        .collect();
    assert_eq!(forwarded.len(), 1, "forwarded once: {forwarded:?}");
    forwarded[0].get_str(11).expect("STAN").to_string()
}

#[tokio::test]
async fn timeout_answers_91_and_reverses_the_original_once_at_the_issuer() {
    let sim = TcpSimulator::start(
        r#"
        [[rule]]
        amount_min = 99900
        amount_max = 99999
        respond = "drop"
        "#,
    )
    .await;
    let tap = IssuerTap::start(sim.addr).await;
    let switch = TestSwitch::start(&bank_config(&tap.endpoint(), 300)).await;

    let mut terminal = switch.terminal("pos").await;

    let request = purchase(UNKNOWN_CARD, 99_950);
    let response = terminal.exchange(&request).await;
    assert_eq!(code(&response), "91");
    assert_eq!(
        response.get(11),
        request.get(11),
        "terminal's STAN restored"
    );

    eventually("the issuer has acknowledged one reversal", || {
        sim.sim.reversals().len() == 1 && switch.switch.saf_depth("bank") == 0
    })
    .await;
    let seen = tap.sent_to_issuer();
    let issuer_stan = issuer_stan_of(&seen, 99_950);
    let reversals = of_class(&seen, 4);
    assert_eq!(reversals.len(), 1, "{reversals:?}");
    assert_eq!(reversals[0].mti().as_str(), "0400");
    let field90 = reversals[0].get_str(90).expect("field 90");
    assert_eq!(&field90[..4], "0200", "original MTI");
    assert_eq!(&field90[4..10], issuer_stan, "the STAN the issuer saw");
    assert_eq!(&field90[10..20], TRANSMISSION_TIME);
    assert_eq!(reversals[0].get(4), request.get(4));
    let parsed: u32 = issuer_stan.parse().expect("digits");
    assert_eq!(sim.sim.reversals()[0].original_stan, Some(Stan(parsed)));

    // A later request answered means anything queued before it went out too.
    let marker = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    assert_eq!(code(&marker), "00");
    assert_eq!(sim.sim.reversals().len(), 1, "no second reversal");
    assert_eq!(of_class(&tap.sent_to_issuer(), 4).len(), 1);
    assert_eq!(sim.sim.stats().reversals_received, 1);
    assert_eq!(switch.switch.saf_depth("bank"), 0);
}

#[tokio::test]
async fn lost_issuer_connection_answers_91_reverses_and_reconnects() {
    let sim = TcpSimulator::start(
        r#"
        [[rule]]
        pan_prefix = "4000000000000119"
        respond = "close"
        "#,
    )
    .await;
    let tap = IssuerTap::start(sim.addr).await;
    let switch = TestSwitch::start(&bank_config(&tap.endpoint(), 2_000)).await;
    let bank = switch.issuer("bank");
    let mut terminal = switch.terminal("pos").await;

    let lost = terminal
        .exchange(&purchase("4000000000000119", 4_200))
        .await;
    assert_eq!(code(&lost), "91");
    assert_eq!(sim.sim.stats().closes, 1);

    eventually(
        "the reversal reached the issuer over a new connection",
        || sim.sim.reversals().len() == 1 && switch.switch.saf_depth("bank") == 0,
    )
    .await;
    let seen = tap.sent_to_issuer();
    let issuer_stan = issuer_stan_of(&seen, 4_200);
    let reversals = of_class(&seen, 4);
    assert_eq!(reversals.len(), 1, "{reversals:?}");
    let field90 = reversals[0].get_str(90).expect("field 90");
    assert_eq!(&field90[..10], format!("0200{issuer_stan}"));

    let next = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    assert_eq!(code(&next), "00", "served after reconnecting");
    assert!(bank.status().endpoints[0].up);
    assert_eq!(sim.sim.reversals().len(), 1, "reversed once");
}

#[tokio::test]
async fn dead_first_endpoint_fails_over_to_the_next() {
    let sim = TcpSimulator::start("").await;
    let dead = closed_port().await;
    let endpoints = format!("\"{dead}\", {}", sim.endpoint());
    let switch = TestSwitch::start(&bank_config(&endpoints, 2_000)).await;
    let mut terminal = switch.terminal("pos").await;

    for amount in 1..=5 {
        let response = terminal.exchange(&purchase(UNKNOWN_CARD, amount)).await;
        assert_eq!(code(&response), "00", "amount {amount}");
    }
    let status = switch.issuer("bank").status();
    assert!(!status.endpoints[0].up, "{status:?}");
    assert!(status.endpoints[1].up, "{status:?}");
}

/// Cards starting 4 go to the in-process simulator; with `second`, cards
/// starting 5 go to the issuer at that endpoint.
fn reload_config(second: Option<&str>) -> String {
    let mut config = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "sim"
endpoints = ["sim"]

[[route]]
name = "visa"
bins = ["4"]
issuer = "sim"

[simulator]
default_response = "00"
"#
    .to_string();
    if let Some(endpoint) = second {
        config.push_str(&format!(
            r#"
[[issuer]]
name = "second"
endpoints = [{endpoint}]
echo_interval_s = 0

[[route]]
name = "mastercard"
bins = ["5"]
issuer = "second"
"#
        ));
    }
    config
}

/// Keeps `connections` terminals busy, five requests in flight on each, until
/// `stop`; every response must be an approval for a request of its own
/// connection. Returns how many requests were answered.
fn keep_busy(
    addr: std::net::SocketAddr,
    connections: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> tokio::task::JoinSet<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (stop, answered) = (stop.clone(), answered.clone());
        tasks.spawn(async move {
            let mut terminal = Terminal::connect(addr, common::Framing::default()).await;
            let mut total = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut waiting = HashMap::new();
                for _ in 0..5 {
                    let request = purchase(UNKNOWN_CARD, 100);
                    terminal.feed(&request).await;
                    waiting.insert(request.get_str(11).expect("STAN").to_string(), request);
                }
                terminal.flush().await;
                for _ in 0..5 {
                    let response = terminal.recv().await;
                    let stan = response.get_str(11).expect("STAN echoed");
                    assert!(waiting.remove(stan).is_some(), "unexpected STAN {stan}");
                    assert_eq!(code(&response), "00", "during reloads");
                    answered.fetch_add(1, Ordering::Relaxed);
                    total += 1;
                }
            }
            total
        });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_traffic_lose_nothing_and_switch_routes() {
    let second = TcpSimulator::start(
        r#"
        [[account]]
        pan = "5500000000000004"
        balance = 10000
        expiry = "9912"
        "#,
    )
    .await;
    let without = parse_config(&reload_config(None));
    let with_second = parse_config(&reload_config(Some(&second.endpoint())));
    let switch = TestSwitch::start(&reload_config(None)).await;
    let mut terminal = switch.terminal("pos").await;
    let before = terminal.exchange(&purchase("5500000000000004", 100)).await;
    assert_eq!(code(&before), "15", "no route for 5 yet");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut traffic = keep_busy(switch.addr("pos"), 4, stop.clone(), answered.clone());
    let first_generation = switch.switch.snapshot().generation;
    for round in 0..6u64 {
        let config = if round % 2 == 0 {
            &with_second
        } else {
            &without
        };
        let generation = switch
            .switch
            .reload(config.clone())
            .await
            .expect("valid reload");
        assert_eq!(generation, first_generation + round + 1);
        let seen = answered.load(Ordering::Relaxed);
        eventually("traffic flows on the new snapshot", || {
            answered.load(Ordering::Relaxed) >= seen + 20
        })
        .await;
    }
    let last = switch
        .switch
        .reload(with_second.clone())
        .await
        .expect("valid reload");
    assert_eq!(last, first_generation + 7);
    let seen = answered.load(Ordering::Relaxed);
    eventually("traffic flows after the last reload", || {
        answered.load(Ordering::Relaxed) >= seen + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    while let Some(done) = traffic.join_next().await {
        total += done.expect("traffic task ends cleanly");
    }
    assert_eq!(total, answered.load(Ordering::Relaxed));
    assert!(total >= 140, "only {total} answered");

    switch.wait_for_issuers().await;
    let routed = terminal.exchange(&purchase("5500000000000004", 100)).await;
    assert_eq!(code(&routed), "00", "the new route is used");
    assert_eq!(second.sim.balance("5500000000000004"), Some(9_900));
}

#[tokio::test]
async fn invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let switch = TestSwitch::start(&reload_config(None)).await;
    let mut terminal = switch.terminal("pos").await;
    let generation = switch.switch.snapshot().generation;

    let mut to_missing_issuer = parse_config(&reload_config(None));
    to_missing_issuer.routes[0].bins = vec!["5".parse().expect("a BIN")];
    to_missing_issuer.routes[0].issuer = "missing".into();
    let refused = switch.switch.reload(to_missing_issuer).await;
    let error = refused.expect_err("a route to a missing issuer is refused");
    assert!(error.to_string().contains("missing"), "{error}");

    let unparsable = reload_config(None).replace("bins = [\"4\"]", "bins = [4");
    assert!(isoswitch::config::Config::from_toml_str(&unparsable, "reload").is_err());

    assert_eq!(switch.switch.snapshot().generation, generation);
    let still = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    assert_eq!(code(&still), "00", "the old routes still serve");
    let not_routed = terminal.exchange(&purchase("5500000000000004", 100)).await;
    assert_eq!(code(&not_routed), "15", "the refused route was not applied");
}

#[tokio::test]
async fn refused_reload_leaves_no_new_issuer_links_running() {
    let switch = TestSwitch::start(&reload_config(None)).await;
    let would_be_issuer = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let endpoint = format!("\"{}\"", would_be_issuer.local_addr().expect("address"));
    let mut config = parse_config(&reload_config(Some(&endpoint)));
    // A second new issuer whose spec cannot be loaded makes the build fail
    // after "second" has been started.
    let mut broken = config.issuers[1].clone();
    broken.name = "broken".into();
    broken.spec = "no-such-spec".into();
    config.issuers.push(broken);

    let refused = switch.switch.reload(config).await;
    assert!(refused.is_err(), "a spec that cannot load is refused");

    let connected =
        tokio::time::timeout(Duration::from_millis(500), would_be_issuer.accept()).await;
    assert!(
        connected.is_err(),
        "an issuer of the refused config connected anyway"
    );
    let mut terminal = switch.terminal("pos").await;
    let still = terminal.exchange(&purchase(UNKNOWN_CARD, 100)).await;
    assert_eq!(code(&still), "00");
}
