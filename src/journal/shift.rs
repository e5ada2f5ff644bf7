//! A terminal's shift: its transactions since its last close, the totals the
//! switch counts over them (the 1987 reconciliation fields 74–89 and 97), and
//! the close the journal records when the terminal sends 0500.

use serde::{Deserialize, Serialize};

use super::record::{TxnId, TxnRecord};
use crate::iso8583::ResponseCode;

/// A count and the amount it sums to, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    pub amount: i64,
}

impl Tally {
    fn add(&mut self, amount: i64) {
        self.count += 1;
        self.amount = self.amount.saturating_add(amount);
    }
}

/// What a shift adds up to, as the switch counts it from its journal.
///
/// Debits are approved sales (0200, processing code 00), debit reversals the
/// sales of the shift its terminal cancelled; credits are approved refunds
/// (processing code 20), credit reversals the refunds it cancelled. An
/// approval the switch itself reversed (not delivered, in doubt) is in none:
/// the terminal never counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftTotals {
    pub credits: Tally,
    pub credit_reversals: Tally,
    pub debits: Tally,
    pub debit_reversals: Tally,
}

impl ShiftTotals {
    /// The totals of `shift` (one terminal's transactions since its last close).
    pub fn of<'a>(shift: impl IntoIterator<Item = &'a TxnRecord>) -> ShiftTotals {
        let mut totals = ShiftTotals::default();
        for record in shift {
            if !record.stands() {
                continue;
            }
            let amount = record.amount.unwrap_or(0);
            let (done, undone) = if record.is_financial("00") {
                (&mut totals.debits, &mut totals.debit_reversals)
            } else if record.is_financial("20") {
                (&mut totals.credits, &mut totals.credit_reversals)
            } else {
                continue;
            };
            done.add(amount);
            if record.cancelled_at_ms.is_some() {
                undone.add(amount);
            }
        }
        totals
    }

    /// Field 97's value: debits less their reversals, less credits net of
    /// theirs. Positive is money owed to the merchant (`D`, a net debit of
    /// cardholders), negative money owed by it (`C`).
    pub fn net(&self) -> i64 {
        let debits = self
            .debits
            .amount
            .saturating_sub(self.debit_reversals.amount);
        let credits = self
            .credits
            .amount
            .saturating_sub(self.credit_reversals.amount);
        debits.saturating_sub(credits)
    }
}

/// The totals a terminal reported in its 0500: a field it left out is `None`
/// and not compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedTotals {
    pub credits_count: Option<u64>,
    pub credit_reversals_count: Option<u64>,
    pub debits_count: Option<u64>,
    pub debit_reversals_count: Option<u64>,
    pub credits_amount: Option<i64>,
    pub credit_reversals_amount: Option<i64>,
    pub debits_amount: Option<i64>,
    pub debit_reversals_amount: Option<i64>,
    /// Field 97, signed as [`ShiftTotals::net`].
    pub net_amount: Option<i64>,
}

impl ReportedTotals {
    /// The fields of `self` that differ from the switch's `totals`, by field
    /// number; empty when they agree.
    pub fn differences(&self, totals: &ShiftTotals) -> Vec<u8> {
        let counts = [
            (74, self.credits_count, totals.credits.count),
            (
                75,
                self.credit_reversals_count,
                totals.credit_reversals.count,
            ),
            (76, self.debits_count, totals.debits.count),
            (77, self.debit_reversals_count, totals.debit_reversals.count),
        ];
        let amounts = [
            (86, self.credits_amount, totals.credits.amount),
            (
                87,
                self.credit_reversals_amount,
                totals.credit_reversals.amount,
            ),
            (88, self.debits_amount, totals.debits.amount),
            (
                89,
                self.debit_reversals_amount,
                totals.debit_reversals.amount,
            ),
            (97, self.net_amount, totals.net()),
        ];
        let count_fields = counts
            .into_iter()
            .filter(|(_, sent, ours)| sent.is_some_and(|s| s != *ours))
            .map(|(n, _, _)| n);
        let amount_fields = amounts
            .into_iter()
            .filter(|(_, sent, ours)| sent.is_some_and(|s| s != *ours))
            .map(|(n, _, _)| n);
        count_fields.chain(amount_fields).collect()
    }
}

/// A shift close to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftCloseNew {
    pub terminal_id: String,
    pub merchant_id: Option<String>,
    /// The batch (shift) number the terminal sent.
    pub batch: String,
    pub closed_at_ms: i64,
    /// The newest transaction of the closed shift; the next shift is what
    /// the terminal does after it. The previous close's when the shift was empty.
    pub last_txn: TxnId,
    pub terminal_totals: ReportedTotals,
    pub switch_totals: ShiftTotals,
    /// 00 when the totals agreed, 95 when not: a 95 close still closes the shift.
    pub response_code: ResponseCode,
}

/// A shift close as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftClose {
    pub id: i64,
    pub close: ShiftCloseNew,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_net_amount_is_debits_less_credits_each_net_of_reversals() {
        let totals = ShiftTotals {
            credits: Tally {
                count: 1,
                amount: 300,
            },
            credit_reversals: Tally {
                count: 1,
                amount: 100,
            },
            debits: Tally {
                count: 2,
                amount: 5000,
            },
            debit_reversals: Tally {
                count: 1,
                amount: 1000,
            },
        };
        assert_eq!(totals.net(), 5000 - 1000 - (300 - 100));
    }

    #[test]
    fn only_the_fields_a_terminal_sent_are_compared() {
        let totals = ShiftTotals {
            debits: Tally {
                count: 2,
                amount: 5000,
            },
            ..ShiftTotals::default()
        };
        let sent = ReportedTotals {
            debits_count: Some(2),
            debits_amount: Some(5000),
            ..ReportedTotals::default()
        };
        assert!(sent.differences(&totals).is_empty());
        let wrong = ReportedTotals {
            debits_amount: Some(5001),
            net_amount: Some(5000),
            credits_count: Some(1),
            ..sent
        };
        assert_eq!(wrong.differences(&totals), vec![74, 88]);
    }
}
