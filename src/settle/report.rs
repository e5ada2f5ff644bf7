//! A day's settlement from the journal's records: approved sales and refunds
//! (and the terminal's cancellations of them) in lines per merchant, scheme,
//! operation type and currency, each with its fee; totals per merchant and
//! currency; and what is left out, with why.

use std::collections::BTreeMap;

use super::config::{SchemeTable, Tariffs};
use super::fee::fee;
use crate::journal::{ReversalState, TimeRange, TxnRecord};

/// The operations a merchant is paid or charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperationType {
    /// An approved sale (0200, processing code 00): the merchant is owed it.
    Sale,
    /// A sale its terminal reversed within its shift: paid back.
    Cancel,
    /// An approved refund (processing code 20): paid back.
    Refund,
    /// A refund its terminal reversed within its shift: owed again;
    /// charged at the cancellation rate.
    RefundCancel,
}

impl OperationType {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Sale => "sale",
            OperationType::Cancel => "cancel",
            OperationType::Refund => "refund",
            OperationType::RefundCancel => "refund-cancel",
        }
    }

    /// +1 for money owed to the merchant, −1 for money it pays back.
    fn sign(self) -> i128 {
        match self {
            OperationType::Sale | OperationType::RefundCancel => 1,
            OperationType::Cancel | OperationType::Refund => -1,
        }
    }
}

/// One merchant's operations of one scheme, type and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub merchant: String,
    pub scheme: String,
    pub operation: OperationType,
    /// ISO 4217 numeric, as field 49 was journaled.
    pub currency: Option<u16>,
    pub count: u64,
    /// Signed: positive is owed to the merchant.
    pub gross: i128,
    /// Always charged to the merchant (negative where a rate returns it).
    pub fee: i128,
    /// `gross − fee`.
    pub net: i128,
}

/// A merchant's lines of one currency, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub merchant: String,
    pub currency: Option<u16>,
    pub count: u64,
    pub gross: i128,
    pub fee: i128,
    pub net: i128,
}

/// An operation that is not paid, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excluded {
    pub merchant: String,
    pub operation: OperationType,
    pub reason: String,
    pub received_at_ms: i64,
    pub pan_masked: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<u16>,
    pub terminal: Option<String>,
    pub stan: Option<String>,
    pub rrn: Option<String>,
}

/// The settlement of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub date: String,
    pub lines: Vec<Line>,
    pub totals: Vec<Total>,
    pub excluded: Vec<Excluded>,
    /// Schemes with lines but no tariff: their fee is 0, which the caller warns of.
    pub untariffed: Vec<String>,
}

/// The name a card whose BIN no scheme claims is reported under.
pub const UNKNOWN_SCHEME: &str = "unknown";
/// The name a transaction without field 42 is reported under.
pub const NO_MERCHANT: &str = "-";

impl Report {
    /// The report of `date` (its UTC day is `day`) from `records` (those
    /// received or cancelled in it), for `merchant` only when given.
    pub fn build(
        date: &str,
        day: TimeRange,
        records: &[TxnRecord],
        schemes: &SchemeTable,
        tariffs: &Tariffs,
        merchant: Option<&str>,
    ) -> Report {
        let mut sums: BTreeMap<(String, String, OperationType, Option<u16>), Line> =
            BTreeMap::new();
        let mut excluded = Vec::new();
        let mut untariffed = Vec::new();
        for record in records {
            let operation = if record.is_financial("00") {
                OperationType::Sale
            } else if record.is_financial("20") {
                OperationType::Refund
            } else {
                continue;
            };
            let merchant_id = record
                .merchant_id
                .clone()
                .unwrap_or_else(|| NO_MERCHANT.to_owned());
            if merchant.is_some_and(|m| m != merchant_id) {
                continue;
            }
            let scheme = record
                .pan_masked
                .as_deref()
                .and_then(|pan| schemes.scheme_of(pan))
                .unwrap_or(UNKNOWN_SCHEME)
                .to_owned();
            let mut charge = |operation: OperationType| {
                let amount = record.amount.unwrap_or(0);
                let fee = match tariffs.of(&scheme) {
                    Some(tariff) => {
                        let (bp, fixed) = tariff.rate(operation);
                        fee(amount, bp, fixed)
                    }
                    None => {
                        if !untariffed.contains(&scheme) {
                            untariffed.push(scheme.clone());
                        }
                        0
                    }
                };
                let gross = operation.sign() * i128::from(amount);
                let key = (
                    merchant_id.clone(),
                    scheme.clone(),
                    operation,
                    record.currency,
                );
                let line = sums.entry(key).or_insert_with(|| Line {
                    merchant: merchant_id.clone(),
                    scheme: scheme.clone(),
                    operation,
                    currency: record.currency,
                    count: 0,
                    gross: 0,
                    fee: 0,
                    net: 0,
                });
                line.count += 1;
                line.gross += gross;
                line.fee += fee;
                line.net += gross - fee;
            };
            if day.contains(record.received_at_ms) {
                match exclusion(record) {
                    None => charge(operation),
                    Some(reason) => excluded.push(Excluded {
                        merchant: merchant_id.clone(),
                        operation,
                        reason,
                        received_at_ms: record.received_at_ms,
                        pan_masked: record.pan_masked.clone(),
                        amount: record.amount,
                        currency: record.currency,
                        terminal: record.terminal_id.clone(),
                        stan: record.terminal_stan.clone(),
                        rrn: record
                            .terminal_rrn
                            .clone()
                            .or_else(|| record.upstream_rrn.clone()),
                    }),
                }
            }
            if record.stands() && record.cancelled_at_ms.is_some_and(|at| day.contains(at)) {
                charge(match operation {
                    OperationType::Sale => OperationType::Cancel,
                    _ => OperationType::RefundCancel,
                });
            }
        }
        let lines: Vec<Line> = sums.into_values().collect();
        let totals = totals_of(&lines);
        untariffed.sort();
        Report {
            date: date.to_owned(),
            lines,
            totals,
            excluded,
            untariffed,
        }
    }
}

/// Why `record` is not paid; `None` when it is.
fn exclusion(record: &TxnRecord) -> Option<String> {
    let Some(outcome) = &record.outcome else {
        return Some(match record.reversal {
            ReversalState::None => "pending: no answer recorded".to_owned(),
            _ => "reversed by the switch: in doubt, no answer recorded".to_owned(),
        });
    };
    let code = outcome.response_code;
    if code.is_approval() {
        return record
            .reversed_by_switch()
            .then(|| "reversed by the switch: the approval did not reach the terminal".to_owned());
    }
    let why = outcome
        .reason
        .as_ref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Some(match code.as_str() {
        "91" => format!("failed: issuer timeout or unreachable (91){why}"),
        "96" => format!("failed: switch error (96){why}"),
        other => format!("declined {other} ({}){why}", code.meaning()),
    })
}

/// Per merchant and currency, the sum of its lines (never across currencies).
fn totals_of(lines: &[Line]) -> Vec<Total> {
    let mut totals: BTreeMap<(String, Option<u16>), Total> = BTreeMap::new();
    for line in lines {
        let total = totals
            .entry((line.merchant.clone(), line.currency))
            .or_insert_with(|| Total {
                merchant: line.merchant.clone(),
                currency: line.currency,
                count: 0,
                gross: 0,
                fee: 0,
                net: 0,
            });
        total.count += line.count;
        total.gross += line.gross;
        total.fee += line.fee;
        total.net += line.net;
    }
    totals.into_values().collect()
}
