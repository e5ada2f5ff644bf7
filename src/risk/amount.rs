//! Per-transaction amount limits: below the minimum 13, above the maximum 61,
//! and zero only where nothing is being paid (account verification, balance
//! inquiry). Scope the rule (`applies_to`) for limits per channel, MCC or merchant.

use super::Facts;
use crate::iso8583::ResponseCode;

/// Inclusive bounds on field 4, in minor units.
#[derive(Debug, Clone)]
pub(crate) struct Amounts {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl Amounts {
    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let Some(amount) = facts.amount() else {
            return Some(ResponseCode::INVALID_AMOUNT);
        };
        if amount == 0 {
            // A verification carries no amount, so no minimum applies to it.
            return (!facts.is_verification()).then_some(ResponseCode::INVALID_AMOUNT);
        }
        if self.min.is_some_and(|min| amount < min) {
            return Some(ResponseCode::INVALID_AMOUNT);
        }
        if self.max.is_some_and(|max| amount > max) {
            return Some(ResponseCode::EXCEEDS_AMOUNT_LIMIT);
        }
        None
    }

    pub fn describe(&self) -> String {
        let bound = |b: Option<u64>| b.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "min {} max {} (minor units); zero only for verification",
            bound(self.min),
            bound(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti};
    use crate::risk::{RiskContext, Timestamp};

    fn check(rule: &Amounts, mti: &str, pc: &str, amount: Option<&str>) -> Option<ResponseCode> {
        let mut msg = Message::new(mti.parse::<Mti>().expect("mti"));
        msg.set(3, pc).expect("field 3");
        if let Some(a) = amount {
            msg.set(4, a).expect("field 4");
        }
        rule.check(&Facts::new(
            &RiskContext::pos(),
            &msg,
            Timestamp::from_unix_ms(0),
        ))
    }

    const LIMITS: Amounts = Amounts {
        min: Some(100),
        max: Some(50_000),
    };

    #[test]
    fn amounts_within_the_bounds_pass() {
        assert_eq!(check(&LIMITS, "0200", "000000", Some("000000000100")), None);
        assert_eq!(check(&LIMITS, "0200", "000000", Some("000000050000")), None);
    }

    #[test]
    fn an_amount_below_the_minimum_gives_13() {
        assert_eq!(
            check(&LIMITS, "0200", "000000", Some("000000000099")),
            Some(ResponseCode::INVALID_AMOUNT)
        );
    }

    #[test]
    fn an_amount_above_the_maximum_gives_61() {
        assert_eq!(
            check(&LIMITS, "0200", "000000", Some("000000050001")),
            Some(ResponseCode::EXCEEDS_AMOUNT_LIMIT)
        );
    }

    #[test]
    fn zero_passes_only_for_account_verification_and_balance_inquiry() {
        let zero = Some("000000000000");
        assert_eq!(check(&LIMITS, "0100", "000000", zero), None);
        assert_eq!(check(&LIMITS, "0200", "310000", zero), None);
        assert_eq!(
            check(&LIMITS, "0200", "000000", zero),
            Some(ResponseCode::INVALID_AMOUNT)
        );
        assert_eq!(
            check(&LIMITS, "0100", "010000", zero),
            Some(ResponseCode::INVALID_AMOUNT)
        );
    }

    #[test]
    fn a_missing_or_malformed_amount_gives_13() {
        assert_eq!(
            check(&LIMITS, "0200", "000000", None),
            Some(ResponseCode::INVALID_AMOUNT)
        );
        assert_eq!(
            check(&LIMITS, "0200", "000000", Some("12x")),
            Some(ResponseCode::INVALID_AMOUNT)
        );
    }
}
