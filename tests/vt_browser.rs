//! The virtual terminal in a real headless browser (Debian's chromium over
//! WebDriver): log in, a sale approved with its auth code, a hotlisted card's
//! decline with its plain-language reason, a UnionPay card refused, a sale
//! cancelled and its reversal seen at the issuer simulator, a receipt
//! reprinted, a double-submitted form charging once, a card saved and charged
//! on a schedule, the shift closed, and a bad login rate-limited. Screenshots of the main screens go to
//! target/vt-screenshots/. Skipped (saying how to run it) without chromium,
//! except under CI=true.

mod vt_common;

use std::time::Duration;

use vt_common::webdriver::{browser_available, Browser};
use vt_common::{TestVt, DEMO, HOTLISTED, UNIONPAY, VISA};

/// Waits (up to 10 s) until `probe` gives a value.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fills and submits the payment form (type sale, the default reason).
async fn pay(browser: &Browser, base: &str, card: &str, amount: &str) {
    browser.goto(&format!("{base}/pay")).await;
    browser.type_into("#card_number", card).await;
    browser.type_into("#expiry", "12/30").await;
    browser.type_into("#cvv", "123").await;
    browser.type_into("#amount", amount).await;
    browser.click("#submit").await;
    until("the outcome is shown", || async {
        browser.try_find("#outcome").await
    })
    .await;
}

#[test]
fn a_merchant_takes_cancels_refunds_and_closes_in_the_browser() {
    if !browser_available() {
        return;
    }
    // One long script of awaits: unoptimised, its poll frames outgrow a test
    // thread's 2 MiB stack, so it runs on a thread with room.
    let script = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let vt = TestVt::start().await;
                let base = format!("http://{}", vt.addr);
                let browser = Browser::start().await;
                Box::pin(flows(&vt, &browser, &base)).await;
            });
        })
        .expect("test thread");
    if let Err(panic) = script.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn flows(vt: &TestVt, browser: &Browser, base: &str) {
    let base = base.to_owned();

    // Log in.
    browser.goto(&format!("{base}/")).await;
    assert!(browser.current_url().await.ends_with("/login"));
    browser.screenshot("01-login").await;
    browser.type_into("#username", DEMO.0).await;
    browser.type_into("#password", DEMO.1).await;
    browser.click("#login").await;
    until("the payment form", || async {
        browser.try_find("#payment").await
    })
    .await;

    // The card number is checked as it is typed.
    browser
        .type_into("#card_number", "4111 1111 1111 1112")
        .await;
    assert!(browser.text("#card_hint").await.contains("does not add up"));
    browser.type_into("#card_number", VISA).await;
    let hint = browser.text("#card_hint").await;
    assert!(
        hint.contains("Visa") && hint.contains("looks right"),
        "{hint}"
    );
    browser.type_into("#expiry", "12/30").await;
    browser.type_into("#amount", "10.50").await;
    browser.screenshot("02-payment-form").await;

    // A sale approved with its auth code.
    Box::pin(pay(browser, &base, VISA, "10.50")).await;
    let outcome = browser.text("#outcome").await;
    assert!(outcome.contains("Approved"), "{outcome}");
    let auth = browser.text("dd[data-field='auth-code']").await;
    assert_eq!(auth.len(), 6, "{outcome}");
    assert!(outcome.contains("411111******1111") && !outcome.contains(VISA));
    assert_eq!(vt.simulator().balance(VISA), Some(100_000 - 1050));
    browser.screenshot("03-approved").await;
    let receipt = browser
        .attribute("#receipt_link", "href")
        .await
        .expect("receipt link");
    let sale_id: i64 = receipt
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .expect("id");

    // A hotlisted card: declined, with what it means and what to say.
    Box::pin(pay(browser, &base, HOTLISTED, "5.00")).await;
    assert!(browser.text("#outcome h2").await.contains("Declined (41)"));
    assert_eq!(browser.text("#reason").await, "the card is reported lost");
    assert!(browser
        .text("#tell")
        .await
        .contains("another means of payment"));
    assert_eq!(
        browser.text("#retry").await,
        "Do not try again with this card."
    );
    browser.screenshot("04-declined-hotlisted").await;

    // UnionPay: shown as not accepted while typing, refused by the channel rule.
    browser.goto(&format!("{base}/pay")).await;
    browser.type_into("#card_number", UNIONPAY).await;
    assert!(browser
        .text("#card_hint")
        .await
        .contains("UnionPay (not accepted here)"));
    Box::pin(pay(browser, &base, UNIONPAY, "5.00")).await;
    assert!(browser.text("#outcome h2").await.contains("Declined (57)"));
    assert!(browser.text("#reason").await.contains("UnionPay"));

    // Cancel the sale: the reversal reaches the issuer simulator.
    browser.goto(&format!("{base}/operations")).await;
    browser.screenshot("05-operations").await;
    browser.click(&format!("#cancel_{sale_id}")).await;
    until("the cancel outcome", || async {
        let text = browser.text("main").await;
        text.contains("Cancelled").then_some(())
    })
    .await;
    let simulator = vt.simulator().clone();
    until("the simulator received the reversal", || {
        let found = simulator
            .reversals()
            .iter()
            .any(|r| r.masked_pan.as_deref() == Some("411111******1111"));
        async move { found.then_some(()) }
    })
    .await;
    assert!(browser
        .text(&format!("#op_{sale_id}"))
        .await
        .contains("cancelled"));
    browser.screenshot("06-cancelled").await;

    // Another sale, its receipt reprinted from the operations list.
    Box::pin(pay(browser, &base, VISA, "25.00")).await;
    let auth = browser.text("dd[data-field='auth-code']").await;
    let rrn = browser.text("dd[data-field='rrn']").await;
    let receipt = browser
        .attribute("#receipt_link", "href")
        .await
        .expect("receipt link");
    browser.goto(&format!("{base}/operations")).await;
    browser.goto(&format!("{base}{receipt}")).await;
    let printed = browser.text("#receipts").await;
    for expected in [
        "MERCHANT COPY",
        "CUSTOMER COPY",
        "411111******1111",
        "25.00 USD",
        "VT000001",
        "DEMOMERCHANT001",
    ] {
        assert!(
            printed.contains(expected),
            "{expected} on the receipt: {printed}"
        );
    }
    assert!(
        printed.contains(&auth) && printed.contains(&rrn),
        "{printed}"
    );
    assert!(!printed.contains(VISA));
    browser.screenshot("07-receipt").await;

    // The same form submitted twice (a double click): one charge.
    let approvals = vt.approvals();
    browser.goto(&format!("{base}/pay")).await;
    browser.type_into("#card_number", VISA).await;
    browser.type_into("#expiry", "12/30").await;
    browser.type_into("#cvv", "123").await;
    browser.type_into("#amount", "3.00").await;
    let statuses = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams(new FormData(document.getElementById('payment')));
             const send = () => fetch('/pay', {method: 'POST', body: body.toString(),
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'}}).then(r => r.status);
             Promise.all([send(), send()]).then(done);",
        )
        .await;
    assert_eq!(statuses, serde_json::json!([200, 200]));
    assert_eq!(
        vt.approvals(),
        approvals + 1,
        "the double submit charged once"
    );

    // Save a card (the customer consents) and charge it on a schedule.
    Box::pin(pay(browser, &base, VISA, "9.99")).await;
    browser.click("#consent").await;
    browser.click("#save_card_button").await;
    until("the card is saved", || async {
        browser.try_find("#schedule_form").await
    })
    .await;
    assert!(browser.text("#outcome").await.contains("Visa ****1111"));
    browser.type_into("#s_amount", "9.99").await;
    browser.type_into("#end_after", "12").await;
    browser.click("#create_schedule").await;
    let created = until("the schedule is created", || async {
        let text = browser.text("main").await;
        text.contains("Schedule created").then_some(text)
    })
    .await;
    assert!(created.contains("9.99 USD"), "{created}");
    let approvals = vt.approvals();
    let ran = isoswitch::vt::recurring::run_due(&vt.state, isoswitch::journal::now_ms())
        .await
        .expect("recurring run");
    assert_eq!(ran, 1);
    assert_eq!(
        vt.approvals(),
        approvals + 1,
        "the merchant-initiated charge was approved"
    );
    browser.goto(&format!("{base}/schedules")).await;
    let row = browser.text("#schedules tbody tr").await;
    assert!(
        row.contains("approved (00)") && row.contains("active"),
        "{row}"
    );
    browser.screenshot("10-recurring").await;

    // Close the shift: the journal's totals, agreed.
    browser.goto(&format!("{base}/shift")).await;
    browser.screenshot("08-shift").await;
    browser.click("#close_shift").await;
    let closed = until("the shift close outcome", || async {
        browser.try_find("#outcome").await?;
        Some(browser.text("#outcome").await)
    })
    .await;
    assert!(closed.contains("Shift closed — batch 000001"), "{closed}");
    browser.screenshot("09-shift-closed").await;

    // Log out, then a bad login is rate-limited.
    browser.click("header button.link").await;
    until("the login page", || async {
        browser.try_find("#login").await
    })
    .await;
    for _ in 0..5 {
        browser.type_into("#username", DEMO.0).await;
        browser.type_into("#password", "wrong").await;
        browser.click_to_new_page("#login").await;
        assert_eq!(
            browser.text("#login_error").await,
            "wrong username or password"
        );
    }
    browser.type_into("#username", DEMO.0).await;
    browser.type_into("#password", DEMO.1).await;
    browser.click_to_new_page("#login").await;
    let error = browser.text("#login_error").await;
    assert!(error.contains("too many failed logins"), "{error}");
    browser.screenshot("11-locked").await;
}
