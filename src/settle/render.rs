//! The report as `journal settle` prints it: CSV (the lines, then each
//! merchant's totals per currency as `scheme = all, type = total`), text
//! (also the excluded operations) and one JSON document. Amounts are integers
//! in minor units; the currency is field 49's numeric code.

use serde_json::{json, Value};

use super::report::{Excluded, Report};

/// The CSV header, exactly.
pub const CSV_HEADER: &str = "date,merchant,scheme,type,count,gross,fee,net,currency";

/// The scheme and type columns of a total row.
pub const TOTAL_SCHEME: &str = "all";
pub const TOTAL_TYPE: &str = "total";

fn currency_text(currency: Option<u16>) -> String {
    currency.map_or_else(|| "-".to_owned(), |c| format!("{c:03}"))
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

pub fn csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for merchant in merchants(report) {
        for line in report.lines.iter().filter(|l| l.merchant == merchant) {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                report.date,
                csv_field(&line.merchant),
                csv_field(&line.scheme),
                line.operation.as_str(),
                line.count,
                line.gross,
                line.fee,
                line.net,
                currency_text(line.currency)
            ));
        }
        for total in report.totals.iter().filter(|t| t.merchant == merchant) {
            out.push_str(&format!(
                "{},{},{TOTAL_SCHEME},{TOTAL_TYPE},{},{},{},{},{}\n",
                report.date,
                csv_field(&total.merchant),
                total.count,
                total.gross,
                total.fee,
                total.net,
                currency_text(total.currency)
            ));
        }
    }
    out
}

/// The merchants with lines, in the lines' order (sorted by merchant).
fn merchants(report: &Report) -> Vec<&str> {
    let mut merchants: Vec<&str> = report.lines.iter().map(|l| l.merchant.as_str()).collect();
    merchants.dedup();
    merchants
}

pub fn text(report: &Report) -> String {
    let mut out = format!("settlement of {} (UTC day of receipt)\n", report.date);
    let merchants = merchants(report);
    if merchants.is_empty() {
        out.push_str("\nno approved operations\n");
    }
    for merchant in merchants {
        out.push_str(&format!("\nmerchant {merchant}\n"));
        out.push_str(&format!(
            "  {:<12} {:<14} {:>6} {:>14} {:>10} {:>14}  currency\n",
            "scheme", "type", "count", "gross", "fee", "net"
        ));
        for line in report.lines.iter().filter(|l| l.merchant == merchant) {
            out.push_str(&format!(
                "  {:<12} {:<14} {:>6} {:>14} {:>10} {:>14}  {}\n",
                line.scheme,
                line.operation.as_str(),
                line.count,
                line.gross,
                line.fee,
                line.net,
                currency_text(line.currency)
            ));
        }
        for total in report.totals.iter().filter(|t| t.merchant == merchant) {
            out.push_str(&format!(
                "  {:<12} {:<14} {:>6} {:>14} {:>10} {:>14}  {}\n",
                TOTAL_SCHEME,
                TOTAL_TYPE,
                total.count,
                total.gross,
                total.fee,
                total.net,
                currency_text(total.currency)
            ));
        }
    }
    out.push_str(&format!("\nexcluded ({})\n", report.excluded.len()));
    for excluded in &report.excluded {
        out.push_str(&format!("  {}\n", excluded_text(excluded)));
    }
    out
}

fn excluded_text(e: &Excluded) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    format!(
        "merchant {}  {}  {}  amount {} {}  terminal {}  stan {}  rrn {}  — {}",
        e.merchant,
        e.operation.as_str(),
        or_dash(&e.pan_masked),
        e.amount.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        currency_text(e.currency),
        or_dash(&e.terminal),
        or_dash(&e.stan),
        or_dash(&e.rrn),
        e.reason
    )
}

/// Integers wider than JSON readers take exactly are written as strings.
fn amount_json(value: i128) -> Value {
    match i64::try_from(value) {
        Ok(v) => Value::from(v),
        Err(_) => Value::String(value.to_string()),
    }
}

pub fn json(report: &Report) -> Value {
    let lines: Vec<Value> = report
        .lines
        .iter()
        .map(|l| {
            json!({
                "merchant": l.merchant,
                "scheme": l.scheme,
                "type": l.operation.as_str(),
                "count": l.count,
                "gross": amount_json(l.gross),
                "fee": amount_json(l.fee),
                "net": amount_json(l.net),
                "currency": currency_text(l.currency),
            })
        })
        .collect();
    let totals: Vec<Value> = report
        .totals
        .iter()
        .map(|t| {
            json!({
                "merchant": t.merchant,
                "count": t.count,
                "gross": amount_json(t.gross),
                "fee": amount_json(t.fee),
                "net": amount_json(t.net),
                "currency": currency_text(t.currency),
            })
        })
        .collect();
    let excluded: Vec<Value> = report
        .excluded
        .iter()
        .map(|e| {
            json!({
                "merchant": e.merchant,
                "type": e.operation.as_str(),
                "reason": e.reason,
                "received_at_ms": e.received_at_ms,
                "pan": e.pan_masked,
                "amount": e.amount,
                "currency": currency_text(e.currency),
                "terminal": e.terminal,
                "stan": e.stan,
                "rrn": e.rrn,
            })
        })
        .collect();
    json!({
        "date": report.date,
        "lines": lines,
        "totals": totals,
        "excluded": excluded,
        "untariffed_schemes": report.untariffed,
    })
}
