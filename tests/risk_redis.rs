//! Risk state shared by several switch instances through a throw-away Redis
//! (`[risk] state`): two in-process switches, each with its own issuer
//! simulator and journal, count one card's velocity together and see each
//! other's transmissions; when Redis goes away each rule declines (96) or
//! counts locally as its `on_state_error` says, and both recover by
//! themselves when it is back.
//!
//! Skipped, saying so, without `redis-server` (`apt-get install
//! redis-server`); under `CI=true` that is a failure.

mod common;
#[path = "common/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::Message;
use isoswitch::switch::{Inbound, Switch};
use servers::RedisServer;
use tokio_util::sync::CancellationToken;

const BASE: &str = r#"
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

[metrics]
bind = "127.0.0.1:0"

[simulator]
bind = "127.0.0.1:0"
default_response = "00"
"#;

/// A key file both instances read, and the `[risk]` head naming Redis.
struct Shared {
    _dir: tempfile::TempDir,
    head: String,
}

fn shared(redis: &RedisServer) -> Shared {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("risk.key");
    std::fs::write(&key, "5d".repeat(32)).expect("key file");
    let head = format!(
        "[risk]\nstate = \"{}\"\nstate_key_file = \"{}\"\n",
        redis.url(),
        key.display()
    );
    Shared { _dir: dir, head }
}

async fn start(shared: &Shared, rules: &str) -> Arc<Switch> {
    let text = format!("{BASE}\n{}\n{rules}", shared.head);
    let config =
        Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("valid config: {e}"));
    let switch = Switch::start(config, CancellationToken::new()).expect("switch starts");
    let snapshot = switch.snapshot();
    common::eventually("the simulator link is up", || {
        snapshot.issuers.iter().all(|e| e.issuer.is_available())
    })
    .await;
    switch
}

fn request(stan: &str, time: &str) -> Message {
    let mut m = Message::new("0200".parse().expect("mti"));
    for (n, v) in [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000001000"),
        (7, time),
        (11, stan),
        (14, "3012"),
        (22, "010"),
        (25, "00"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (49, "840"),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

async fn code(switch: &Switch, stan: u32) -> String {
    // Field 7 (MMDDhhmmss) a valid time that differs with the STAN.
    let time = format!("120710{:02}{:02}", (stan / 60) % 60, stan % 60);
    let msg = request(&format!("{stan:06}"), &time);
    let response = switch
        .handle(&Inbound::new("pos", Channel::Pos), msg)
        .await
        .expect("an answer");
    response.get_str(39).expect("field 39").to_owned()
}

const VELOCITY: &str = r#"
[[risk.rule]]
name = "card-3-a-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_limited_to_3_a_minute_gets_65_on_its_fourth_whichever_instance_served_it() {
    let test = "a_card_limited_to_3_a_minute_gets_65_on_its_fourth_whichever_instance_served_it";
    let Some(redis) = RedisServer::start(test) else {
        return;
    };
    let shared = shared(&redis);
    let a = start(&shared, VELOCITY).await;
    let b = start(&shared, VELOCITY).await;
    assert_eq!(code(&a, 1).await, "00");
    assert_eq!(code(&b, 2).await, "00");
    assert_eq!(code(&a, 3).await, "00");
    assert_eq!(code(&b, 4).await, "65", "the fourth, at the other instance");
    assert_eq!(code(&a, 5).await, "65");

    // Redis holds a keyed hash of the card, never the card, and forgets it.
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects to the test Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connection)
        .await
        .expect("keys listed");
    assert_eq!(keys.len(), 1, "one window for one card and rule: {keys:?}");
    assert!(
        keys[0].starts_with("isoswitch:card-3-a-minute:card:"),
        "{keys:?}"
    );
    assert!(!keys[0].contains("411111"), "{keys:?}");
    let ttl_ms: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut connection)
        .await
        .expect("ttl read");
    assert!(
        ttl_ms > 0 && ttl_ms <= 60_000,
        "expires with its window: {ttl_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_transmission_sent_to_the_other_instance_gets_94() {
    let Some(redis) =
        RedisServer::start("a_duplicate_transmission_sent_to_the_other_instance_gets_94")
    else {
        return;
    };
    let shared = shared(&redis);
    let rule = "[[risk.rule]]\nname = \"dup\"\nkind = \"duplicate\"\nwindow_s = 300\n";
    let a = start(&shared, rule).await;
    let b = start(&shared, rule).await;
    assert_eq!(code(&a, 777).await, "00");
    assert_eq!(
        code(&b, 777).await,
        "94",
        "the same transmission at the other instance"
    );
    assert_eq!(code(&b, 778).await, "00", "another STAN is no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_rule_declines_or_counts_locally_and_both_recover() {
    let test = "without_redis_each_rule_declines_or_counts_locally_and_both_recover";
    let Some(mut redis) = RedisServer::start(test) else {
        return;
    };
    let shared = shared(&redis);
    let decline = start(
        &shared,
        &format!("{VELOCITY}on_state_error = \"decline\"\n"),
    )
    .await;
    let local = start(&shared, &format!("{VELOCITY}on_state_error = \"local\"\n")).await;
    assert_eq!(code(&decline, 1).await, "00");
    redis.stop();
    assert_eq!(
        code(&decline, 2).await,
        "96",
        "declined: nothing passes unchecked"
    );
    // Local counting: three pass, the fourth is over the limit in this process.
    for stan in 3..6 {
        assert_eq!(code(&local, stan).await, "00");
    }
    assert_eq!(code(&local, 6).await, "65");

    redis.restart();
    // The empty Redis counts afresh: approvals again, at both, by themselves.
    common::poll_until(
        "the decline rule reaches Redis again",
        Duration::from_secs(20),
        || {
            let decline = decline.clone();
            async move { (code(&decline, 7).await == "00").then_some(()) }
        },
    )
    .await;
    assert_eq!(
        code(&local, 8).await,
        "00",
        "shared again: the local counts are not Redis's"
    );
}
