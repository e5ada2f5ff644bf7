//! 0500/0501 from a terminal closing its shift: its totals (fields 74–89
//! and 97, 1987 layout) are compared with what the journal holds for its
//! shift, the close is recorded either way, and 0510 answers 00 when they
//! agree or 95 when they do not. Answered by the switch, never forwarded.

use super::handler::response_to;
use super::outcome::{Outcome, Refusal};
use super::Switch;
use crate::iso8583::{FieldError, Message};
use crate::journal::{
    now_ms, JournalError, ReportedTotals, ShiftCloseNew, ShiftTotals, TxnId, TxnQuery,
};

/// The batch field when the listener's config does not say (or is unknown).
const DEFAULT_BATCH_FIELD: u8 = 60;

/// Answers a terminal's 0500 (or its repeat, 0501).
pub(super) async fn reconcile(sw: &Switch, listener: &str, request: &Message) -> Message {
    let batch_field = sw
        .snapshot
        .load()
        .config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .map_or(DEFAULT_BATCH_FIELD, |l| l.batch_field);
    let outcome = match close_shift(sw, request, batch_field).await {
        Ok(outcome) => outcome,
        Err(refusal) => Outcome::Refused(refusal),
    };
    let mut response = response_to(request, outcome);
    if let Some(batch) = request.get(batch_field) {
        // batch_field is checked to be a data field when the config loads.
        let _ = response.set(batch_field, batch);
    }
    response
}

async fn close_shift(sw: &Switch, request: &Message, batch_field: u8) -> Result<Outcome, Refusal> {
    let terminal = request.terminal_id()?.trim_end().to_owned();
    let batch = request
        .get_str(batch_field)
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty())
        .ok_or(FieldError::Missing(batch_field))?;
    let reported = reported_totals(request)?;
    let journal = &sw.stores.journal;
    let last = journal
        .last_close(&terminal, None)
        .await
        .map_err(Refusal::Storage)?;
    let after = last.as_ref().map(|c| c.close.last_txn);
    let shift = journal
        .find(TxnQuery {
            terminal: Some(terminal.clone()),
            after,
            ..TxnQuery::default()
        })
        .await
        .map_err(Refusal::Storage)?;
    // A repeat of the last close (0501, or a 0500 sent again with nothing
    // done since) gets that close's answer; nothing is closed twice.
    if let Some(last) = last.filter(|c| c.close.batch == batch) {
        if request.mti().is_repeat() || shift.is_empty() {
            tracing::info!(
                terminal,
                batch,
                "shift close repeated; answering as recorded"
            );
            return Ok(outcome_of_code(last.close.response_code.is_approval()));
        }
    }
    let totals = ShiftTotals::of(&shift);
    let differences = reported.differences(&totals);
    let agreed = differences.is_empty();
    let close = ShiftCloseNew {
        terminal_id: terminal.clone(),
        merchant_id: request.get_str(42).map(|m| m.trim_end().to_owned()),
        batch: batch.clone(),
        closed_at_ms: now_ms(),
        last_txn: shift
            .iter()
            .map(|r| r.id)
            .max()
            .or(after)
            .unwrap_or(TxnId(0)),
        terminal_totals: reported,
        switch_totals: totals,
        response_code: outcome_of_code(agreed).response_code(),
    };
    journal
        .record_close(close)
        .await
        .map_err(|e: JournalError| Refusal::Storage(e))?;
    if agreed {
        tracing::info!(terminal, batch, "shift closed; totals agree");
    } else {
        tracing::warn!(
            terminal,
            batch,
            fields = ?differences,
            "shift closed with totals that disagree with the journal (95); the close is recorded for investigation"
        );
    }
    metrics::counter!("isoswitch_shift_closes_total", "result" => if agreed { "agreed" } else { "out-of-balance" })
        .increment(1);
    Ok(outcome_of_code(agreed))
}

fn outcome_of_code(agreed: bool) -> Outcome {
    if agreed {
        Outcome::Approved
    } else {
        Outcome::OutOfBalance
    }
}

/// Fields 74–77 (n 10), 86–89 (n 16) and 97 (x+n 16: `D` or `C` and the
/// amount). The debit count and amount (76, 88) must be there; the others
/// are compared only when sent.
fn reported_totals(request: &Message) -> Result<ReportedTotals, FieldError> {
    let count = |n: u8| -> Result<Option<u64>, FieldError> {
        request
            .get(n)
            .map(|v| {
                digits(v).ok_or(FieldError::Malformed {
                    field: n,
                    expected: "digits",
                })
            })
            .transpose()
    };
    let amount = |n: u8| -> Result<Option<i64>, FieldError> {
        Ok(count(n)?.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    };
    let net = match request.get(97) {
        None => None,
        Some(value) => Some(signed_amount(value).ok_or(FieldError::Malformed {
            field: 97,
            expected: "C or D followed by digits",
        })?),
    };
    let totals = ReportedTotals {
        credits_count: count(74)?,
        credit_reversals_count: count(75)?,
        debits_count: count(76)?,
        debit_reversals_count: count(77)?,
        credits_amount: amount(86)?,
        credit_reversals_amount: amount(87)?,
        debits_amount: amount(88)?,
        debit_reversals_amount: amount(89)?,
        net_amount: net,
    };
    if totals.debits_count.is_none() {
        return Err(FieldError::Missing(76));
    }
    if totals.debits_amount.is_none() {
        return Err(FieldError::Missing(88));
    }
    Ok(totals)
}

fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Field 97: `D` is a net debit of cardholders (owed to the merchant,
/// positive), `C` a net credit (negative).
fn signed_amount(value: &[u8]) -> Option<i64> {
    let (sign, rest) = value.split_first()?;
    let magnitude = i64::try_from(digits(rest)?).ok()?;
    match sign {
        b'D' => Some(magnitude),
        b'C' => Some(-magnitude),
        _ => None,
    }
}

/// Field 97 for `net` as [`signed_amount`] reads it: for tests and tools
/// that build a 0500.
pub fn net_amount_field(net: i64) -> String {
    let sign = if net < 0 { 'C' } else { 'D' };
    format!("{sign}{:016}", net.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    fn close(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0500"));
        for (n, v) in fields {
            m.set(*n, *v).expect("data field");
        }
        m
    }

    #[test]
    fn the_debit_count_and_amount_must_be_there_and_the_rest_is_optional() {
        let only_debits = close(&[(76, "0000000002"), (88, "0000000000005000")]);
        let totals = reported_totals(&only_debits).expect("enough");
        assert_eq!(
            (totals.debits_count, totals.debits_amount),
            (Some(2), Some(5000))
        );
        assert_eq!(totals.credits_count, None);
        let no_amount = close(&[(76, "0000000002")]);
        assert_eq!(reported_totals(&no_amount), Err(FieldError::Missing(88)));
        let bad = close(&[(76, "000000000x"), (88, "0000000000005000")]);
        assert_eq!(reported_totals(&bad).map_err(|e| e.field()), Err(76));
    }

    #[test]
    fn field_97_reads_d_as_owed_to_the_merchant_and_c_as_owed_by_it() {
        assert_eq!(signed_amount(b"D0000000000001234"), Some(1234));
        assert_eq!(signed_amount(b"C0000000000001234"), Some(-1234));
        assert_eq!(signed_amount(b"X0000000000001234"), None);
        assert_eq!(signed_amount(net_amount_field(-77).as_bytes()), Some(-77));
        assert_eq!(net_amount_field(5), "D0000000000000005");
    }
}
