//! Channel rules, for card-not-present traffic above all: entry modes a
//! virtual terminal cannot carry (chip, contactless: 58), card brands refused
//! there (UnionPay and Maestro by default: 57), and merchant-initiated recurring
//! charges without an earlier approved cardholder-initiated transaction for
//! the same card and merchant (57 unless configured otherwise).

use std::sync::Arc;

use super::bin_leads::LeadFiltered;
use super::config::EntryModeCode;
use super::state::{mix, CitLedger};
use super::Facts;
use crate::iso8583::{Message, ResponseCode};

/// PAN entry modes (field 22, first two digits) refused, as bits 0–99.
#[derive(Debug)]
pub(crate) struct EntryModes {
    refused: u128,
}

impl EntryModes {
    pub fn new(refuse: &[EntryModeCode]) -> EntryModes {
        EntryModes {
            refused: refuse
                .iter()
                .fold(0, |bits, m| bits | 1u128 << m.0.min(127)),
        }
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        // Without field 22 there is no entry mode to refuse.
        let mode = facts.msg.entry_mode().ok()?;
        (self.refused & (1u128 << mode.pan_entry.min(127)) != 0)
            .then_some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
    }
}

/// Card brands (BIN patterns) refused.
#[derive(Debug)]
pub(crate) struct CardBrands {
    pub table: LeadFiltered<&'static str>,
}

impl CardBrands {
    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        self.table
            .lookup(facts.pan?)
            .map(|_| ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
    }
}

/// Merchant-initiated transactions need a prior cardholder-initiated approval.
pub(crate) struct Recurring {
    mit_field: u8,
    mit_values: Vec<Box<[u8]>>,
    valid_ms: u64,
    code: ResponseCode,
    ledger: Arc<CitLedger>,
}

impl std::fmt::Debug for Recurring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recurring")
            .field("mit_field", &self.mit_field)
            .field("valid_ms", &self.valid_ms)
            .field("code", &self.code)
            .finish()
    }
}

/// The ledger key of a card at a merchant, from their keys.
pub(crate) fn cit_key(card: u64, merchant: u64) -> u64 {
    mix(card ^ mix(merchant ^ 0x6369_742d_6c65_6467))
}

impl Recurring {
    pub fn new(
        mit_field: u8,
        mit_values: &[String],
        valid_days: u32,
        code: ResponseCode,
        ledger: Arc<CitLedger>,
    ) -> Recurring {
        Recurring {
            mit_field,
            mit_values: mit_values
                .iter()
                .map(|v| v.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            valid_ms: u64::from(valid_days) * 86_400_000,
            code,
            ledger,
        }
    }

    pub fn valid_ms(&self) -> u64 {
        self.valid_ms
    }

    /// Whether `msg` is marked merchant-initiated.
    pub fn is_mit(&self, msg: &Message) -> bool {
        msg.get(self.mit_field)
            .is_some_and(|v| self.mit_values.iter().any(|m| **m == *v))
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        if !self.is_mit(facts.msg) {
            return None;
        }
        let (Some(card), Some(merchant)) = (facts.card_key(), facts.merchant_key()) else {
            // Card and merchant are the key: without them no mandate can be shown.
            return Some(self.code);
        };
        let approved_within = self
            .ledger
            .last(cit_key(card, merchant))
            .is_some_and(|at| facts.now.unix_ms().saturating_sub(at) <= self.valid_ms);
        (!approved_within).then_some(self.code)
    }

    pub fn describe(&self) -> String {
        let values: Vec<String> = self
            .mit_values
            .iter()
            .map(|v| format!("{:?}", String::from_utf8_lossy(v)))
            .collect();
        format!(
            "merchant-initiated when field {} is {}; needs an approved cardholder-initiated transaction within {} days",
            self.mit_field,
            values.join(" or "),
            self.valid_ms / 86_400_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;
    use crate::risk::config::Brand;
    use crate::risk::{RiskContext, Timestamp};

    fn message(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0100"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    fn run(
        check: impl Fn(&Facts<'_>) -> Option<ResponseCode>,
        msg: &Message,
        now: u64,
    ) -> Option<ResponseCode> {
        check(&Facts::new(
            &RiskContext::virtual_terminal(),
            msg,
            Timestamp::from_unix_ms(now),
        ))
    }

    #[test]
    fn chip_and_contactless_entry_give_58() {
        let rule = EntryModes::new(&[EntryModeCode(5), EntryModeCode(7)]);
        let check = |f: &Facts<'_>| rule.check(f);
        for mode in ["051", "071", "072"] {
            assert_eq!(
                run(check, &message(&[(22, mode)]), 0),
                Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL),
                "{mode}"
            );
        }
        for mode in ["010", "811", "021"] {
            assert_eq!(run(check, &message(&[(22, mode)]), 0), None, "{mode}");
        }
        assert_eq!(run(check, &message(&[]), 0), None);
    }

    #[test]
    fn unionpay_and_maestro_cards_give_57() {
        let check = crate::risk::config::Check::CardBrand {
            brands: vec![Brand::Unionpay, Brand::Maestro],
            bins: vec![],
        };
        let rule = CardBrands {
            table: LeadFiltered::new(
                crate::risk::config::brand_table(&check).expect("brand table"),
            ),
        };
        let run_pan = |pan: &str| run(|f: &Facts<'_>| rule.check(f), &message(&[(2, pan)]), 0);
        assert_eq!(
            run_pan("6212345678901232"),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
        assert_eq!(
            run_pan("6759649826438453"),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
        assert_eq!(
            run_pan("5018000000000009"),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
        assert_eq!(run_pan("4111111111111111"), None);
        assert_eq!(run_pan("5500000000000004"), None);
    }

    #[test]
    fn a_merchant_initiated_charge_needs_a_prior_approval_for_card_and_merchant() {
        let ledger = Arc::new(CitLedger::new());
        let _policy = ledger.register(u64::MAX, 100);
        let rule = Recurring::new(
            25,
            &["08".to_owned()],
            30,
            ResponseCode::NOT_PERMITTED_TO_CARDHOLDER,
            ledger.clone(),
        );
        let check = |f: &Facts<'_>| rule.check(f);
        let mit = message(&[(2, "4111111111111111"), (25, "08"), (42, "SHOP1          ")]);
        let cit = message(&[(2, "4111111111111111"), (25, "00"), (42, "SHOP1")]);
        assert!(rule.is_mit(&mit) && !rule.is_mit(&cit));
        assert_eq!(
            run(check, &cit, 0),
            None,
            "a cardholder-initiated one passes"
        );
        assert_eq!(
            run(check, &mit, 0),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
        let key = cit_key(
            crate::risk::state::card_key(b"4111111111111111"),
            crate::risk::state::id_key(b"SHOP1"),
        );
        ledger.record(key, Timestamp::from_unix_ms(1000));
        assert_eq!(run(check, &mit, 2000), None);
        let day = 86_400_000;
        assert_eq!(run(check, &mit, 1000 + 30 * day), None);
        assert_eq!(
            run(check, &mit, 1001 + 30 * day),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER),
            "the approval is too old"
        );
        let elsewhere = message(&[(2, "4111111111111111"), (25, "08"), (42, "SHOP2")]);
        assert_eq!(
            run(check, &elsewhere, 2000),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
        let no_merchant = message(&[(2, "4111111111111111"), (25, "08")]);
        assert_eq!(
            run(check, &no_merchant, 2000),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
    }
}
