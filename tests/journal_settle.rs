//! `isoswitch journal settle` on a small journal written through the public
//! API, compared with a report worked out by hand: sales, a same-shift
//! cancel, a refund, two schemes, two currencies, a scheme without a tariff,
//! a declined, a timed-out and a switch-reversed sale, and fees that round
//! half-up on both sides of half a minor unit.

use std::str::FromStr;

use isoswitch::iso8583::{Mti, ResponseCode};
use isoswitch::journal::{
    ClearPan, DataKey, DecidedBy, Journal, Outcome, ReversalState, SqliteJournal, SqliteOptions,
    TxnId, TxnStart,
};
use serde_json::Value;

#[path = "common/cli.rs"]
mod cli;
use cli::run_isoswitch;

const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5500000000000004";
const AMEX: &str = "371449635398431";
/// 2026-12-07T00:00:00Z.
const DEC7: i64 = 1_796_601_600_000;
const HOUR: i64 = 3_600_000;

/// Visa 1.3 % / 1.2 % / 1.3 %; Mastercard 1.5 % plus 10 on sales, cancels
/// free; no tariff for amex.
const TARIFFS: &str = r#"
[[tariff]]
scheme = "visa"
sale_bp = 130
cancel_bp = 120
refund_bp = 130

[[tariff]]
scheme = "mastercard"
sale_bp = 150
cancel_bp = 0
refund_bp = 150
sale_fixed = 10
"#;

struct Op {
    at: i64,
    pan: &'static str,
    pc: &'static str,
    amount: i64,
    currency: u16,
    merchant: &'static str,
    code: &'static str,
    decided_by: DecidedBy,
    original: Option<i64>,
}

fn op(at: i64, pan: &'static str, amount: i64, currency: u16, code: &'static str) -> Op {
    Op {
        at,
        pan,
        pc: "000000",
        amount,
        currency,
        merchant: "M1",
        code,
        decided_by: DecidedBy::Issuer,
        original: None,
    }
}

async fn write(journal: &SqliteJournal, n: usize, op: &Op) -> TxnId {
    let id = journal
        .begin(TxnStart {
            received_at_ms: op.at,
            listener: "pos".into(),
            channel: "pos".into(),
            mti: Mti::from_str("0200").expect("mti"),
            processing_code: Some(op.pc.into()),
            pan: ClearPan::new(op.pan),
            amount: Some(op.amount),
            currency: Some(op.currency),
            terminal_id: Some("TERM0001".into()),
            merchant_id: Some(op.merchant.into()),
            terminal_stan: Some(format!("{n:06}")),
            terminal_rrn: Some(format!("RRN{n:09}")),
            forward: None,
            original_id: op.original.map(TxnId),
        })
        .await
        .expect("begin");
    journal
        .record_outcome(
            id,
            Outcome {
                answered_at_ms: op.at + 1,
                response_code: ResponseCode::from_str(op.code).expect("code"),
                decided_by: op.decided_by,
                auth_code: None,
                latency_us: 1,
                reason: None,
            },
        )
        .await
        .expect("outcome");
    id
}

fn journal() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, _) = DataKey::load_or_create(&dir.path().join("journal.key")).expect("key");
    let journal =
        SqliteJournal::open(SqliteOptions::new(dir.path().join("journal.db"), key)).expect("open");
    std::fs::write(dir.path().join("tariffs.toml"), TARIFFS).expect("config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let t = |h: i64| DEC7 + h * HOUR;
        // Visa sale of 125: 1.625 → fee 2.
        let first = write(&journal, 1, &op(t(1), VISA, 125, 840, "00")).await;
        // Visa sale of 375 (4.875 → 5), cancelled in its shift: 1.2 % is
        // exactly 4.5 → 5.
        let cancelled = write(&journal, 2, &op(t(2), VISA, 375, 840, "00")).await;
        journal.cancel(cancelled, t(3)).await.expect("cancel");
        journal
            .set_reversal(cancelled, ReversalState::Queued)
            .await
            .expect("its reversal");
        // A refund of 124 of the first: 1.612 → 2.
        let refund = Op {
            pc: "200000",
            original: Some(first.0),
            ..op(t(4), VISA, 124, 840, "00")
        };
        write(&journal, 3, &refund).await;
        // Mastercard in EUR: 1000 → 15 + 10; 50 → 0.75 → 1, + 10.
        write(&journal, 4, &op(t(5), MASTERCARD, 1_000, 978, "00")).await;
        write(&journal, 5, &op(t(6), MASTERCARD, 50, 978, "00")).await;
        // Amex has no tariff: fee 0, and a warning.
        write(&journal, 6, &op(t(7), AMEX, 300, 840, "00")).await;
        // Another merchant: 2.6 → 3.
        let other = Op {
            merchant: "M2",
            ..op(t(8), VISA, 200, 840, "00")
        };
        write(&journal, 7, &other).await;
        // Left out: declined, timed out (reversed), and an approval the
        // switch reversed because the terminal never got it.
        write(&journal, 8, &op(t(9), VISA, 1_000, 840, "05")).await;
        let timeout = Op {
            decided_by: DecidedBy::Timeout,
            ..op(t(10), VISA, 99_900, 840, "91")
        };
        let timed_out = write(&journal, 9, &timeout).await;
        journal
            .set_reversal(timed_out, ReversalState::Queued)
            .await
            .expect("reversal");
        let undelivered = write(&journal, 10, &op(t(11), VISA, 700, 840, "00")).await;
        journal
            .set_reversal(undelivered, ReversalState::Queued)
            .await
            .expect("reversal");
        // The day before: not in this report.
        write(&journal, 11, &op(DEC7 - HOUR, VISA, 5_000, 840, "00")).await;
    });
    journal.close();
    dir
}

fn settle(dir: &tempfile::TempDir, format: &str) -> (String, String) {
    let db = dir.path().join("journal.db");
    let config = dir.path().join("tariffs.toml");
    let out = run_isoswitch(
        &[
            "journal",
            "settle",
            "--db",
            db.to_str().expect("path"),
            "--date",
            "2026-12-07",
            "--format",
            format,
            "--config",
            config.to_str().expect("path"),
        ],
        "",
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).expect("utf-8"), stderr)
}

#[test]
fn the_csv_is_the_report_worked_out_by_hand() {
    let dir = journal();
    let (csv, stderr) = settle(&dir, "csv");
    let expected = "\
date,merchant,scheme,type,count,gross,fee,net,currency
2026-12-07,M1,amex,sale,1,300,0,300,840
2026-12-07,M1,mastercard,sale,2,1050,36,1014,978
2026-12-07,M1,visa,sale,2,500,7,493,840
2026-12-07,M1,visa,cancel,1,-375,5,-380,840
2026-12-07,M1,visa,refund,1,-124,2,-126,840
2026-12-07,M1,all,total,5,301,14,287,840
2026-12-07,M1,all,total,2,1050,36,1014,978
2026-12-07,M2,visa,sale,1,200,3,197,840
2026-12-07,M2,all,total,1,200,3,197,840
";
    assert_eq!(csv, expected);
    assert!(
        stderr.contains("no [[tariff]] for scheme \"amex\""),
        "{stderr}"
    );
}

#[test]
fn the_text_and_json_forms_carry_the_same_numbers_and_what_was_left_out() {
    let dir = journal();
    let (text, _) = settle(&dir, "text");
    assert!(text.contains("merchant M1"), "{text}");
    assert!(text.contains("excluded (3)"), "{text}");
    assert!(text.contains("declined 05 (do not honour)"), "{text}");
    assert!(text.contains("failed: issuer timeout"), "{text}");
    assert!(
        text.contains("reversed by the switch: the approval did not reach the terminal"),
        "{text}"
    );
    assert!(text.contains("411111******1111"), "{text}");
    assert!(!text.contains(VISA), "no full card number");

    let (json, _) = settle(&dir, "json");
    let report: Value = serde_json::from_str(&json).expect("one JSON document");
    let lines = report["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 6);
    let cancel = lines
        .iter()
        .find(|l| l["type"] == "cancel")
        .expect("cancel line");
    assert_eq!(
        (&cancel["gross"], &cancel["fee"], &cancel["net"]),
        (&Value::from(-375), &Value::from(5), &Value::from(-380))
    );
    let totals = report["totals"].as_array().expect("totals");
    assert_eq!(totals.len(), 3);
    assert_eq!(report["excluded"].as_array().map(Vec::len), Some(3));
    assert_eq!(report["excluded"][1]["rrn"], "RRN000000009");
    assert_eq!(report["untariffed_schemes"][0], "amex");
}

#[test]
fn one_merchant_only() {
    let dir = journal();
    let db = dir.path().join("journal.db");
    let out = run_isoswitch(
        &[
            "journal",
            "settle",
            "--db",
            db.to_str().expect("path"),
            "--date",
            "2026-12-07",
            "--format",
            "csv",
            "--merchant",
            "M2",
        ],
        "",
        None,
    );
    assert!(out.status.success());
    // The embedded default's tariffs: visa 1.3 % of 200 is 2.6 → 3.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "date,merchant,scheme,type,count,gross,fee,net,currency\n\
         2026-12-07,M2,visa,sale,1,200,3,197,840\n\
         2026-12-07,M2,all,total,1,200,3,197,840\n"
    );
}
