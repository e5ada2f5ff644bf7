//! Risk in the running switch: rules from the config snapshot run between the
//! channel check and routing, the switch records issuer approvals for the
//! recurring rule and gives velocity counts back for what is declined or
//! reversed, a repeat of a transaction still at the issuer gets 94, and
//! a reload swaps the rules while unchanged ones keep their counts.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::frame::{FrameCodec, FrameConfig};
use isoswitch::iso8583::Message;
use isoswitch::risk::Timestamp;
use isoswitch::switch::{Inbound, Switch};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const BASE: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"
[[listener]]
name = "ecom"
bind = "127.0.0.1:0"
channel = "virtual-terminal"

[[issuer]]
name = "sim"
endpoints = ["sim"]

# Only Visa routes: other cards get 15 unless a risk rule declines them first.
[[route]]
name = "visa"
bins = ["4"]
issuer = "sim"

[metrics]
bind = "127.0.0.1:0"

[simulator]
bind = "127.0.0.1:0"
default_response = "00"

# Amounts 555.00–555.99 the issuer declines.
[[simulator.rule]]
amount_min = 55500
amount_max = 55599
respond = "05"
"#;

/// A switch with `risk` rules whose issuer link is up, so the first request
/// does not race it.
async fn start(risk: &str) -> Arc<Switch> {
    start_config(&format!("{BASE}\n{risk}")).await
}

async fn start_config(text: &str) -> Arc<Switch> {
    let config =
        Config::from_toml_str(text, "test.toml").unwrap_or_else(|e| panic!("valid config: {e}"));
    let switch = Switch::start(config, CancellationToken::new()).expect("switch starts");
    let snapshot = switch.snapshot();
    common::eventually("the simulator link is up", || {
        snapshot.issuers.iter().all(|e| e.issuer.is_available())
    })
    .await;
    switch
}

fn inbound(listener: &str, channel: Channel) -> Inbound {
    Inbound::new(listener, channel)
}

fn pos() -> Inbound {
    inbound("pos", Channel::Pos)
}

fn ecom() -> Inbound {
    inbound("ecom", Channel::VirtualTerminal)
}

fn request(mti: &str, changes: &[(u8, &str)]) -> Message {
    let mut m = Message::new(mti.parse().expect("mti"));
    for (n, v) in [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000001000"),
        (7, "1123184100"),
        (11, "000001"),
        (14, "3012"),
        (22, "010"),
        (25, "00"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (49, "840"),
    ] {
        m.set(n, v).expect("field");
    }
    for &(n, v) in changes {
        m.set(n, v).expect("field");
    }
    m
}

async fn code(switch: &Switch, from: &Inbound, msg: Message) -> String {
    let response = switch.handle(from, msg).await.expect("an answer");
    response.get_str(39).expect("field 39").to_owned()
}

#[tokio::test]
async fn risk_runs_before_routing() {
    let switch = start("[[risk.rule]]\nname = \"pan\"\nkind = \"card-number\"\n").await;
    let bad_check_digit = request("0200", &[(2, "5555555555554445")]);
    assert_eq!(code(&switch, &pos(), bad_check_digit).await, "14");
    let no_route = request("0200", &[(2, "5555555555554444")]);
    assert_eq!(code(&switch, &pos(), no_route).await, "15");
    assert_eq!(code(&switch, &pos(), request("0200", &[])).await, "00");
}

#[tokio::test]
async fn a_risk_decline_echoes_the_request() {
    let switch = start("[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n").await;
    let response = switch
        .handle(&pos(), request("0100", &[(14, "2001")]))
        .await
        .expect("an answer");
    assert_eq!(response.mti().to_string(), "0110");
    assert_eq!(response.get_str(39), Some("54"));
    assert_eq!(response.get_str(11), Some("000001"));
    assert_eq!(response.get_str(41), Some("TERM0001"));
}

#[tokio::test]
async fn a_malformed_expiry_date_is_a_format_error_before_any_rule() {
    let switch = start("[[risk.rule]]\nname = \"exp\"\nkind = \"expiry\"\n").await;
    for expiry in ["2913", "2900"] {
        let malformed = request("0200", &[(14, expiry)]);
        assert_eq!(code(&switch, &pos(), malformed).await, "30", "{expiry}");
    }
    let expired = request("0200", &[(14, "2001")]);
    assert_eq!(code(&switch, &pos(), expired).await, "54");
}

#[tokio::test]
async fn the_switch_records_approvals_for_the_recurring_rule() {
    let switch = start(
        "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\napplies_to = { channels = [\"virtual-terminal\"] }\n",
    ).await;
    let mit = |stan: &str| request("0200", &[(25, "08"), (11, stan)]);
    assert_eq!(code(&switch, &ecom(), mit("000001")).await, "57");
    // The cardholder buys once; the issuer approves and the switch remembers.
    assert_eq!(
        code(&switch, &ecom(), request("0200", &[(11, "000002")])).await,
        "00"
    );
    assert_eq!(code(&switch, &ecom(), mit("000003")).await, "00");
    let elsewhere = request(
        "0200",
        &[(25, "08"), (11, "000004"), (42, "OTHERSHOP000001")],
    );
    assert_eq!(code(&switch, &ecom(), elsewhere).await, "57");
}

#[tokio::test]
async fn a_refused_reload_keeps_the_running_rules_mandates() {
    let recurring = "[[risk.rule]]\nname = \"mit\"\nkind = \"recurring\"\n";
    let switch = start(recurring).await;
    assert_eq!(
        code(&switch, &ecom(), request("0200", &[(11, "000001")])).await,
        "00"
    );
    // Its risk rules compile (it has none), then the issuer's CA is missing.
    let refused = Config::from_toml_str(
        &format!(
            "{BASE}\n[[issuer]]\nname = \"tls-bank\"\nendpoints = [\"127.0.0.1:9\"]\ntls = {{ ca = \"/nonexistent/ca.pem\" }}\n"
        ),
        "test.toml",
    )
    .expect("valid config: the CA is read when the issuer starts");
    switch.reload(refused).await.expect_err("refused");
    // The next sweep, as the switch runs every few seconds.
    switch
        .snapshot()
        .risk
        .state()
        .expire(Timestamp::now().plus_ms(1_000));
    let mit = request("0200", &[(25, "08"), (11, "000002")]);
    assert_eq!(code(&switch, &ecom(), mit).await, "00");
}

#[tokio::test]
async fn what_the_issuer_declines_does_not_count_towards_velocity() {
    let switch = start(
        "[[risk.rule]]\nname = \"per-day\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 86400\nmax_count = 2\nmax_amount = 100000\n",
    )
    .await;
    // Two tries the issuer turns down (55 500 each would pass the amount
    // once, not twice, were they counted).
    for stan in ["000001", "000002"] {
        let declined = request("0200", &[(11, stan), (4, "000000055500")]);
        assert_eq!(code(&switch, &pos(), declined).await, "05");
    }
    for stan in ["000003", "000004"] {
        let good = request("0200", &[(11, stan)]);
        assert_eq!(code(&switch, &pos(), good).await, "00", "{stan}");
    }
    let third = request("0200", &[(11, "000005")]);
    assert_eq!(code(&switch, &pos(), third).await, "65");
}

#[tokio::test]
async fn a_reversed_purchase_gives_its_velocity_counts_back_once() {
    let switch = start(
        "[[risk.rule]]\nname = \"per-day\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 86400\nmax_count = 2\n",
    )
    .await;
    for stan in ["000001", "000002"] {
        let good = request("0200", &[(11, stan)]);
        assert_eq!(code(&switch, &pos(), good).await, "00", "{stan}");
    }
    // The terminal reverses the first, and repeats the reversal.
    let field90 = format!("0200000001{}{}", "1123184100", "0".repeat(22));
    for (mti, stan) in [("0400", "000003"), ("0401", "000003")] {
        let reversal = request(mti, &[(11, stan), (90, &field90)]);
        assert_eq!(code(&switch, &pos(), reversal).await, "00", "{mti}");
    }
    // One place is free again, not two.
    let again = request("0200", &[(11, "000004")]);
    assert_eq!(code(&switch, &pos(), again).await, "00");
    let over = request("0200", &[(11, "000005")]);
    assert_eq!(code(&switch, &pos(), over).await, "65");
}

#[tokio::test]
async fn a_repeat_of_a_transaction_still_at_the_issuer_gets_94() {
    let mut issuer = HoldingIssuer::start().await;
    let text = format!("{BASE}\n[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\n").replace(
        "endpoints = [\"sim\"]",
        &format!("endpoints = [\"{}\"]", issuer.addr),
    );
    let switch = start_config(&text).await;
    let original = request("0200", &[]);
    let repeat = request("0201", &[]);
    let from = pos();
    let first = code(&switch, &from, original);
    let second = async {
        issuer.wait_for_a_request().await;
        let second = code(&switch, &from, repeat).await;
        issuer.release.notify_one();
        second
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.as_str(), second.as_str()), ("00", "94"));
}

/// An issuer on a socket that signals each request it receives and approves
/// it only when the test releases it, so a transaction stays "at the issuer"
/// exactly as long as the test needs. Network messages (0800) it answers at once.
struct HoldingIssuer {
    addr: SocketAddr,
    arrived: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

impl HoldingIssuer {
    async fn start() -> HoldingIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let released = release.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(hold_and_approve(stream, arrived.clone(), released.clone()));
            }
        });
        HoldingIssuer {
            addr,
            arrived: arrivals,
            release,
        }
    }

    async fn wait_for_a_request(&mut self) {
        tokio::time::timeout(common::WAIT, self.arrived.recv())
            .await
            .expect("the issuer received a request in time")
            .expect("the issuer is running");
    }
}

async fn hold_and_approve(
    stream: TcpStream,
    arrived: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
) {
    let spec = common::spec();
    let mut framed = Framed::new(stream, FrameCodec::new(FrameConfig::default()));
    while let Some(Ok(frame)) = framed.next().await {
        let Ok(request) = Message::decode(&spec, frame.payload.clone()) else {
            return;
        };
        let Some(mti) = request.mti().response() else {
            continue;
        };
        if request.mti().class() != 8 {
            let _ = arrived.send(());
            release.notified().await;
        }
        let mut response = request;
        response.set_mti(mti);
        response.set(39, "00").expect("a data field");
        let payload = response.encode(&spec).expect("response encodes");
        if framed.send(frame.response(payload)).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_an_unchanged_rule() {
    let per_minute = "[[risk.rule]]\nname = \"per-minute\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 60\nmax_count = 2\n";
    let switch = start(per_minute).await;
    for stan in ["000001", "000002"] {
        assert_eq!(
            code(&switch, &pos(), request("0200", &[(11, stan)])).await,
            "00"
        );
    }
    let same = Config::from_toml_str(&format!("{BASE}\n{per_minute}"), "test.toml").expect("valid");
    switch.reload(same).await.expect("reloads");
    assert_eq!(
        code(&switch, &pos(), request("0200", &[(11, "000003")])).await,
        "65"
    );
    let wider = Config::from_toml_str(
        &format!(
            "{BASE}\n{}",
            per_minute.replace("window_s = 60", "window_s = 61")
        ),
        "test.toml",
    )
    .expect("valid");
    switch.reload(wider).await.expect("reloads");
    assert_eq!(
        code(&switch, &pos(), request("0200", &[(11, "000004")])).await,
        "00"
    );
}

#[tokio::test]
async fn a_reload_with_a_broken_hotlist_is_refused_and_the_old_rules_stay() {
    let switch = start("[[risk.rule]]\nname = \"pan\"\nkind = \"card-number\"\n").await;
    let broken = Config::from_toml_str(
        &format!(
            "{BASE}\n[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = \"/nonexistent/hotlist.txt\"\n"
        ),
        "test.toml",
    )
    .expect("valid config: the file is read when rules compile");
    let error = switch
        .reload(broken)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("risk rule \"hot\": file: cannot read /nonexistent/hotlist.txt"),
        "{error}"
    );
    let bad = request("0200", &[(2, "4111111111111112")]);
    assert_eq!(code(&switch, &pos(), bad).await, "14");
}
