//! Cards on file and recurring schedules through the JSON API and the
//! switch's own runner (called with the time the test means, no sleeping):
//! a card saved from an approved sale, charged when due as a
//! merchant-initiated payment, soft declines retried after 24/48/72 hours,
//! a hard decline stopping the schedule, and no period charged twice across
//! a restart.

mod vt_common;

use isoswitch::journal::now_ms;
use isoswitch::vt::recurring::run_due;
use serde_json::{json, Value};
use vt_common::http::Client;
use vt_common::{sale, TestVt, CLERK, VISA};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

async fn logged_in(vt: &TestVt) -> Client {
    let mut client = Client::new(vt.addr);
    assert_eq!(client.login(CLERK.0, CLERK.1).await.status, 200);
    client
}

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// Midnight (UTC) today: when a schedule starting today is first due.
fn midnight() -> i64 {
    time::OffsetDateTime::now_utc()
        .date()
        .midnight()
        .assume_utc()
        .unix_timestamp()
        * 1000
}

/// An approved sale whose card is saved; the token.
async fn saved_card(client: &Client) -> String {
    let paid = client
        .post("/api/v1/payments", &sale(VISA, 100))
        .await
        .json();
    assert_eq!(paid["status"], "approved", "{paid}");
    let body = json!({ "payment_id": paid["id"], "consent": true }).to_string();
    let card = client.post("/api/v1/cards", &body).await;
    assert_eq!(card.status, 200, "{}", card.body);
    let card = card.json();
    assert_eq!(card["brand"], "Visa");
    assert_eq!(card["last4"], "1111");
    assert_eq!(card["expiry"], "12/30");
    card["token"].as_str().expect("a token").to_owned()
}

async fn schedule(client: &Client, token: &str, amount: u64, extra: Value) -> Value {
    let mut body = json!({
        "token": token, "amount": amount, "currency": "USD",
        "period": "daily", "start": today()
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let reply = client.post("/api/v1/schedules", &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

async fn only_schedule(client: &Client) -> Value {
    let list = client.get("/api/v1/schedules").await.json();
    let schedules = list["schedules"].as_array().cloned().unwrap_or_default();
    assert_eq!(schedules.len(), 1, "{list}");
    schedules[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_is_saved_only_with_consent_and_shown_without_its_number() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt).await;
    let paid = client
        .post("/api/v1/payments", &sale(VISA, 100))
        .await
        .json();
    let without = json!({ "payment_id": paid["id"], "consent": false }).to_string();
    let refused = client.post("/api/v1/cards", &without).await;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("consent:"));
    let declined = client
        .post("/api/v1/payments", &sale("4000000000000002", 100))
        .await
        .json();
    let body = json!({ "payment_id": declined["id"], "consent": true }).to_string();
    assert_eq!(client.post("/api/v1/cards", &body).await.status, 409);
    let token = saved_card(&client).await;
    let cards = client.get("/api/v1/cards").await;
    assert!(cards.body.contains(&token), "{}", cards.body);
    assert!(!cards.body.contains(VISA), "the card number is never shown");
    let unknown = json!({"token": "card_nope", "amount": 100, "currency": "USD",
        "period": "daily", "start": today()});
    let reply = client.post("/api/v1/schedules", &unknown.to_string()).await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("token:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_run_when_due_once_per_period_until_the_end() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt).await;
    let token = saved_card(&client).await;
    let approvals = vt.approvals();
    let created = schedule(&client, &token, 1500, json!({ "end_after": 2 })).await;
    assert_eq!(created["state"], "active");
    assert_eq!(created["next_due_ms"], midnight());

    assert_eq!(run_due(&vt.state, now_ms()).await.expect("run"), 1);
    assert_eq!(vt.approvals(), approvals + 1);
    let after_one = only_schedule(&client).await;
    assert_eq!(after_one["charges_made"], 1, "{after_one}");
    assert_eq!(after_one["last_result"]["status"], "approved");
    assert_eq!(after_one["next_due_ms"], midnight() + DAY_MS);
    // Due again only tomorrow.
    assert_eq!(run_due(&vt.state, now_ms()).await.expect("run"), 0);
    assert_eq!(vt.approvals(), approvals + 1);

    assert_eq!(
        run_due(&vt.state, midnight() + DAY_MS).await.expect("run"),
        1
    );
    let finished = only_schedule(&client).await;
    assert_eq!(finished["state"], "finished", "{finished}");
    assert_eq!(finished["charges_made"], 2);
    assert_eq!(
        run_due(&vt.state, midnight() + 5 * DAY_MS)
            .await
            .expect("run"),
        0
    );
    assert_eq!(vt.approvals(), approvals + 2);
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 - 100 - 3000));
    // The charges are in the day's operations like any payment.
    let today = client.get("/api/v1/payments").await.json();
    let sales = today["payments"].as_array().map_or(0, |p| p.len());
    assert_eq!(sales, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_declines_are_retried_after_24_48_and_72_hours_then_flagged() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt).await;
    let token = saved_card(&client).await;
    // More than the card's balance: 51 each time.
    schedule(&client, &token, 500_000, json!({})).await;
    let due = midnight();
    let mut tries = vec![due];
    tries.extend([24, 48, 72].map(|h| due + h * HOUR_MS));
    for (attempt, at) in tries.iter().enumerate() {
        // Not a moment early.
        if attempt > 0 {
            assert_eq!(run_due(&vt.state, at - 1).await.expect("run"), 0);
        }
        assert_eq!(
            run_due(&vt.state, (*at).max(now_ms())).await.expect("run"),
            1,
            "try {attempt}"
        );
    }
    let stopped = only_schedule(&client).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(
        stopped["flag"]
            .as_str()
            .unwrap_or("")
            .contains("after 3 retries"),
        "{stopped}"
    );
    assert_eq!(stopped["last_result"]["response_code"], "51");
    assert_eq!(vt.simulator().stats().responses.get("51").copied(), Some(4));
    assert_eq!(run_due(&vt.state, due + 30 * DAY_MS).await.expect("run"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_decline_stops_the_schedule_at_once() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt).await;
    let token = saved_card(&client).await;
    schedule(&client, &token, 1000, json!({})).await;
    // The card is reported lost after it was saved.
    let config = vt_common::config(vt.dir.path());
    std::fs::write(vt.dir.path().join("hotlist.txt"), format!("{VISA} lost\n")).expect("hotlist");
    vt.switch.reload(config).await.expect("reload");
    assert_eq!(run_due(&vt.state, now_ms()).await.expect("run"), 1);
    let stopped = only_schedule(&client).await;
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert_eq!(stopped["last_result"]["response_code"], "41");
    assert!(stopped["flag"]
        .as_str()
        .unwrap_or("")
        .contains("never retried"));
    assert_eq!(
        run_due(&vt.state, now_ms() + 3 * DAY_MS)
            .await
            .expect("run"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_charges_a_period_twice_nor_forgets_the_consent() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt).await;
    let token = saved_card(&client).await;
    schedule(&client, &token, 1200, json!({})).await;
    assert_eq!(run_due(&vt.state, now_ms()).await.expect("run"), 1);
    let dir = vt.stop().await;

    let vt = TestVt::start_in(dir).await;
    let client = logged_in(&vt).await;
    assert_eq!(run_due(&vt.state, now_ms()).await.expect("run"), 0);
    assert_eq!(vt.approvals(), 0, "today's charge is not made again");
    // Tomorrow's is merchant-initiated after a restart: the consent still counts.
    assert_eq!(
        run_due(&vt.state, midnight() + DAY_MS).await.expect("run"),
        1
    );
    let after = only_schedule(&client).await;
    assert_eq!(after["last_result"]["status"], "approved", "{after}");
    assert_eq!(after["charges_made"], 2);
    assert_eq!(vt.approvals(), 1);
}
