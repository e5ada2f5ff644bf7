//! The virtual terminal's JSON API against the real server: the shipped
//! default config's switch with its in-process issuer simulator, the
//! virtual terminal on 127.0.0.1:0, the journal in SQLite.

mod vt_common;

use std::time::Duration;

use vt_common::http::{request, Client};
use vt_common::{sale, TestVt, CLERK, DECLINED, DEMO, HOTLISTED, UNIONPAY, VISA};

/// Waits (up to 10 s) until `condition` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn logged_in(vt: &TestVt, who: (&str, &str)) -> Client {
    let mut client = Client::new(vt.addr);
    let reply = client.login(who.0, who.1).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_strict_http_only_cookie_and_returns_a_csrf_token() {
    let vt = TestVt::start().await;
    let mut client = Client::new(vt.addr);
    let wrong = client.login(DEMO.0, "not the password").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "wrong username or password");
    let reply = client.login(DEMO.0, DEMO.1).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let cookie = reply.header("set-cookie").expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(client.csrf.as_deref().is_some_and(|t| t.len() == 64));
    // Without a session nothing is shown.
    let anonymous = Client::new(vt.addr).get("/api/v1/payments").await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.json()["error"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_needs_the_csrf_token() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, DEMO).await;
    let without = Client {
        csrf: None,
        ..client.clone()
    };
    let forged = Client {
        csrf: Some("0".repeat(64)),
        ..client.clone()
    };
    for attempt in [&without, &forged] {
        let reply = attempt.post("/api/v1/payments", &sale(VISA, 100)).await;
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(reply.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("X-CSRF-Token"));
        let close = attempt.post("/api/v1/shift/close", "").await;
        assert_eq!(close.status, 403);
    }
    assert_eq!(vt.approvals(), 0, "nothing reached the issuer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_username_and_say_so_for_unknown_names_too() {
    let vt = TestVt::start().await;
    let mut client = Client::new(vt.addr);
    for _ in 0..5 {
        assert_eq!(client.login(DEMO.0, "guess").await.status, 401);
    }
    let locked = client.login(DEMO.0, DEMO.1).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    let message = locked.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("locked"), "{message}");
    // The address is locked now too: an unknown username gets the same words.
    let unknown = client.login("nobody-here", "x").await;
    assert_eq!(unknown.status, 429);
    assert_eq!(unknown.json()["error"].as_str(), Some(message.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_is_approved_with_an_auth_code_and_listed_masked() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let reply = client.post("/api/v1/payments", &sale(VISA, 1050)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let result = reply.json();
    assert_eq!(result["status"], "approved");
    assert_eq!(result["response_code"], "00");
    assert_eq!(
        result["auth_code"].as_str().map(str::len),
        Some(6),
        "{result}"
    );
    assert_eq!(result["rrn"].as_str().map(str::len), Some(12), "{result}");
    assert_eq!(result["advice"]["retry"], "not-needed");
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 - 1050));
    let id = result["id"].as_i64().expect("an id");
    let one = client.get(&format!("/api/v1/payments/{id}")).await.json();
    assert_eq!(one["card"], "411111******1111");
    assert_eq!(one["amount"], 1050);
    assert_eq!(one["terminal"], "VT000001");
    let today = client.get("/api/v1/payments").await;
    assert!(today.body.contains("411111******1111"), "{}", today.body);
    assert!(!today.body.contains(VISA), "the full PAN is never shown");
    let other_day = client.get("/api/v1/payments?date=2001-01-01").await.json();
    assert_eq!(other_day["payments"].as_array().map(Vec::len), Some(0));
    let bad_date = client.get("/api/v1/payments?date=yesterday").await;
    assert_eq!(bad_date.status, 400);
    assert!(bad_date.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("date:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_come_with_a_plain_reason_and_what_to_tell_the_customer() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let hotlisted = client
        .post("/api/v1/payments", &sale(HOTLISTED, 500))
        .await
        .json();
    assert_eq!(hotlisted["status"], "declined");
    assert_eq!(hotlisted["response_code"], "41");
    assert_eq!(hotlisted["advice"]["reason"], "the card is reported lost");
    assert_eq!(hotlisted["advice"]["retry"], "never");
    assert!(hotlisted["auth_code"].is_null());
    let declined = client
        .post("/api/v1/payments", &sale(DECLINED, 500))
        .await
        .json();
    assert_eq!(declined["response_code"], "05");
    assert!(declined["advice"]["tell_customer"]
        .as_str()
        .unwrap_or("")
        .contains("call their bank"));
    let broke = client
        .post("/api/v1/payments", &sale(VISA, 500_000))
        .await
        .json();
    assert_eq!(broke["response_code"], "51");
    assert_eq!(broke["advice"]["retry"], "later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unionpay_is_refused_by_the_channel_rule_before_any_issuer() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let reply = client
        .post("/api/v1/payments", &sale(UNIONPAY, 500))
        .await
        .json();
    assert_eq!(reply["response_code"], "57", "{reply}");
    assert_eq!(reply["status"], "declined");
    assert!(reply["advice"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("UnionPay"));
    assert!(
        vt.simulator().stats().responses.is_empty(),
        "the issuer never saw it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_issuer_as_a_reversal() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let sale = client
        .post("/api/v1/payments", &sale(VISA, 2000))
        .await
        .json();
    let id = sale["id"].as_i64().expect("id");
    let cancel = client
        .post(&format!("/api/v1/payments/{id}/cancel"), "")
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.body);
    assert_eq!(cancel.json()["status"], "cancelled");
    let simulator = vt.simulator().clone();
    eventually("the simulator received the reversal", || {
        simulator
            .reversals()
            .iter()
            .any(|r| r.masked_pan.as_deref() == Some("411111******1111"))
    })
    .await;
    eventually("the hold is released", || {
        simulator.balance(VISA) == Some(100_000)
    })
    .await;
    let listed = client.get(&format!("/api/v1/payments/{id}")).await.json();
    assert_eq!(listed["status"], "cancelled");
    assert_eq!(listed["cancellable"], false);
    let again = client
        .post(&format!("/api/v1/payments/{id}/cancel"), "")
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_for_supervisors_and_within_what_the_sale_left() {
    let vt = TestVt::start().await;
    let clerk = logged_in(&vt, CLERK).await;
    let supervisor = logged_in(&vt, DEMO).await;
    let sale = clerk
        .post("/api/v1/payments", &sale(VISA, 3000))
        .await
        .json();
    let id = sale["id"].as_i64().expect("id");
    let path = format!("/api/v1/payments/{id}/refund");
    let refused = clerk.post(&path, r#"{"amount":1000}"#).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("supervisor"));
    let refund = supervisor.post(&path, r#"{"amount":1000}"#).await.json();
    assert_eq!(refund["status"], "approved", "{refund}");
    assert_eq!(refund["type"], "refund");
    let too_much = supervisor.post(&path, r#"{"amount":2500}"#).await.json();
    assert_eq!(too_much["response_code"], "13", "{too_much}");
    let decimal = supervisor.post(&path, r#"{"amount":10.5}"#).await;
    assert_eq!(decimal.status, 400);
    assert!(decimal.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("amount:"));
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 - 3000 + 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_submit_with_one_key_charges_once() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let body = sale(VISA, 700);
    let key = [("Idempotency-Key", "order-1234")];
    let (first, second) = tokio::join!(
        client.send("POST", "/api/v1/payments", &key, &body),
        client.send("POST", "/api/v1/payments", &key, &body),
    );
    assert_eq!(first.json(), second.json());
    assert_eq!(first.json()["status"], "approved");
    let third = client.send("POST", "/api/v1/payments", &key, &body).await;
    assert_eq!(third.json(), first.json());
    assert_eq!(vt.approvals(), 1, "the issuer approved one charge");
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 - 700));
    // Another key is another payment.
    let other = client
        .send(
            "POST",
            "/api/v1/payments",
            &[("Idempotency-Key", "order-1235")],
            &body,
        )
        .await;
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(vt.approvals(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_outlives_a_restart() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let key = [("Idempotency-Key", "survives")];
    let first = client
        .send("POST", "/api/v1/payments", &key, &sale(VISA, 900))
        .await
        .json();
    assert_eq!(first["status"], "approved");
    let dir = vt.stop().await;
    let vt = TestVt::start_in(dir).await;
    let client = logged_in(&vt, CLERK).await;
    let again = client
        .send("POST", "/api/v1/payments", &key, &sale(VISA, 900))
        .await
        .json();
    assert_eq!(again, first);
    assert_eq!(
        vt.approvals(),
        0,
        "the restarted issuer was not charged again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shift_close_is_for_supervisors_and_agrees_with_the_journal() {
    let vt = TestVt::start().await;
    let clerk = logged_in(&vt, CLERK).await;
    let supervisor = logged_in(&vt, DEMO).await;
    for amount in [1000, 2500] {
        let sale = clerk
            .post("/api/v1/payments", &sale(VISA, amount))
            .await
            .json();
        assert_eq!(sale["status"], "approved");
    }
    assert_eq!(clerk.post("/api/v1/shift/close", "").await.status, 403);
    let close = supervisor.post("/api/v1/shift/close", "").await;
    assert_eq!(close.status, 200, "{}", close.body);
    let close = close.json();
    assert_eq!(close["status"], "closed", "{close}");
    assert_eq!(close["response_code"], "00");
    assert_eq!(close["totals"]["debits"]["count"], 2);
    assert_eq!(close["totals"]["debits"]["amount"], 3500);
    assert_eq!(close["batch"], "000001");
    let next = supervisor.post("/api/v1/shift/close", "").await.json();
    assert_eq!(next["batch"], "000002");
    assert_eq!(next["totals"]["debits"]["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_naming_the_field() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let cases = [
        (sale("4111111111111112", 100), "card_number:"),
        (sale(VISA, 100).replace("100", "1.00"), "amount:"),
        (sale(VISA, 100).replace("USD", "XXX"), "currency:"),
        ("[1,2]".to_owned(), "body:"),
        ("{".to_owned(), "body:"),
    ];
    for (body, field) in cases {
        let reply = client.post("/api/v1/payments", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let error = reply.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(error.starts_with(field), "{body}: {error}");
    }
    let missing = client.get("/api/v1/payments/999999").await;
    assert_eq!(missing.status, 404);
    let nonsense = client.get("/api/v1/payments/abc").await;
    assert_eq!(nonsense.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_file_holds_neither_the_cvv_nor_the_full_card_number() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let body = sale(VISA, 1234).replace("\"123\"", "\"7391\"");
    let reply = client.post("/api/v1/payments", &body).await.json();
    assert_eq!(reply["status"], "approved", "{reply}");
    let id = reply["id"].as_i64().expect("id");
    let cancel = client
        .post(&format!("/api/v1/payments/{id}/cancel"), "")
        .await;
    assert_eq!(cancel.status, 200);
    let db = vt.db.clone();
    let dir = vt.stop().await;
    // The database and its write-ahead log, as they are on disk.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("journal dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().starts_with(&*db.to_string_lossy()) {
            bytes.extend(std::fs::read(&path).expect("journal file"));
        }
    }
    assert!(bytes.len() > 4096, "the journal was written");
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(VISA.as_bytes()), "the full PAN is in the journal");
    // Field 48 as sent upstream: C2, its length, the CVV2.
    assert!(!contains(b"C2047391"), "the CVV2 is in the journal");
    assert!(contains(b"411111******1111"), "the masked PAN is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_other_methods_and_paths_cleanly() {
    let vt = TestVt::start().await;
    let reply = request(vt.addr, "DELETE", "/api/v1/payments", &[], b"").await;
    assert_eq!(reply.status, 405);
    let reply = request(vt.addr, "GET", "/api/v1/nothing", &[], b"").await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_and_gift_card_operations_reach_the_issuer_and_are_answered() {
    let vt = TestVt::start().await;
    let client = logged_in(&vt, CLERK).await;
    let body = |kind: &str, card: &str, amount: u64| {
        serde_json::json!({
            "type": kind, "card_number": card, "expiry": "12/30", "cvv": "123",
            "amount": amount, "currency": "USD", "reason": "mail-order"
        })
        .to_string()
    };
    let verified = client
        .post("/api/v1/payments", &body("verification", VISA, 0))
        .await
        .json();
    assert_eq!(verified["status"], "approved", "{verified}");
    assert_eq!(
        vt.simulator().balance(VISA),
        Some(100_000),
        "a verification holds nothing"
    );
    let gift = "6011000990139424";
    let activated = client
        .post("/api/v1/payments", &body("gift-activation", gift, 5000))
        .await
        .json();
    assert_eq!(activated["status"], "approved", "{activated}");
    // A top-up credits the account the simulator keeps.
    let topped = client
        .post("/api/v1/payments", &body("gift-top-up", VISA, 2500))
        .await
        .json();
    assert_eq!(topped["status"], "approved", "{topped}");
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 + 2500));
    let balance = client
        .post("/api/v1/payments", &body("gift-balance", VISA, 0))
        .await
        .json();
    assert_eq!(balance["status"], "approved", "{balance}");
    let listed = client.get("/api/v1/payments").await.json();
    let kinds: Vec<&str> = listed["payments"]
        .as_array()
        .map(|p| p.iter().filter_map(|op| op["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        [
            "gift-balance",
            "gift-top-up",
            "gift-activation",
            "verification"
        ]
    );
    let nonzero = client
        .post("/api/v1/payments", &body("verification", VISA, 100))
        .await;
    assert_eq!(nonzero.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_in_a_closed_shift_is_not_cancelled_but_can_be_refunded() {
    let vt = TestVt::start().await;
    let supervisor = logged_in(&vt, DEMO).await;
    let sale = supervisor
        .post("/api/v1/payments", &sale(VISA, 4000))
        .await
        .json();
    let id = sale["id"].as_i64().expect("id");
    let close = supervisor.post("/api/v1/shift/close", "").await.json();
    assert_eq!(close["status"], "closed", "{close}");
    let cancel = supervisor
        .post(&format!("/api/v1/payments/{id}/cancel"), "")
        .await
        .json();
    assert_eq!(cancel["response_code"], "12", "{cancel}");
    assert!(cancel["advice"]["reason"]
        .as_str()
        .unwrap_or("")
        .contains("shift is closed"));
    assert!(
        vt.simulator().reversals().is_empty(),
        "no reversal went to the issuer"
    );
    let refund = supervisor
        .post(&format!("/api/v1/payments/{id}/refund"), "")
        .await
        .json();
    assert_eq!(refund["status"], "approved", "{refund}");
    assert_eq!(vt.simulator().balance(VISA), Some(100_000));
}
