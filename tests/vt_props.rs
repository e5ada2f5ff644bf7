//! Whatever JSON (or not-JSON) a script sends to the payment route, the
//! virtual terminal answers with a status below 500 and a JSON body: bad
//! input is a 400 naming the field, never a panic or a server error.

mod vt_common;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use vt_common::http::Client;
use vt_common::{TestVt, CLERK};

/// Field names the route reads, and some it does not.
const KEYS: [&str; 10] = [
    "type",
    "card_number",
    "expiry",
    "cvv",
    "amount",
    "currency",
    "reason",
    "original_rrn",
    "extra",
    "",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,24}".prop_map(Value::String),
        "[0-9 ./-]{0,22}".prop_map(Value::String),
        prop_oneof![
            Just("sale"),
            Just("refund"),
            Just("verification"),
            Just("gift-balance"),
            Just("4111111111111111"),
            Just("12/30"),
            Just("USD"),
            Just("mail-order"),
            Just("123")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let value = scalar().prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Value::Array)
    });
    let object = prop::collection::vec((prop::sample::select(KEYS.to_vec()), value), 0..9)
        .prop_map(|pairs| {
            let map: Map<String, Value> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
        });
    prop_oneof![
        8 => object,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn random_bodies_to_the_payment_route_never_get_a_server_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (vt, client) = runtime.block_on(async {
        let vt = TestVt::start().await;
        let mut client = Client::new(vt.addr);
        assert_eq!(client.login(CLERK.0, CLERK.1).await.status, 200);
        (vt, client)
    });
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&body(), |body| {
        let text = String::from_utf8_lossy(&body).into_owned();
        let reply = runtime.block_on(client.post("/api/v1/payments", &text));
        prop_assert!(
            reply.status < 500,
            "{} for {text}: {}",
            reply.status,
            reply.body
        );
        let json: Value = serde_json::from_str(&reply.body)
            .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {}", reply.body)))?;
        if reply.status == 400 {
            prop_assert!(json["error"].is_string(), "{json}");
        }
        Ok(())
    });
    drop(vt);
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
