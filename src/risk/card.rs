//! Card checks: the card number (length and Luhn check digit, 14) and the
//! expiry date (54). Both look at the request alone.

use super::{Facts, Timestamp};
use crate::iso8583::fields::luhn_valid;
use crate::iso8583::ResponseCode;

/// Field 2 must be all digits, of an accepted length, with a right check digit.
#[derive(Debug, Clone)]
pub(crate) struct CardNumber {
    pub min_length: usize,
    pub max_length: usize,
}

impl CardNumber {
    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let ok = facts.pan.is_some_and(|pan| {
            (self.min_length..=self.max_length).contains(&pan.len()) && luhn_valid(pan)
        });
        (!ok).then_some(ResponseCode::INVALID_CARD_NUMBER)
    }
}

/// Field 14 (YYMM) must not be before the transaction's month: a card is
/// valid through the last day of its expiry month, in the terminal's local
/// time. The switch does not know that time zone, so it judges the month
/// where the date is latest to change, UTC-12: a card is declined only once
/// its month has ended everywhere. Near a month's end a terminal east of
/// that may send a card its own date has just expired; the issuer, which
/// holds the card, has the last word on those.
#[derive(Debug, Clone)]
pub(crate) struct Expiry;

/// How far behind UTC the westernmost time zone (UTC-12) is.
const WESTERNMOST_OFFSET_MS: u64 = 12 * 3_600_000;

impl Expiry {
    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        // Absent: card-not-present and some host traffic carry no field 14.
        if !facts.msg.has(14) {
            return None;
        }
        let Ok(expiry) = facts.msg.expiry() else {
            // Present but not a date: it cannot be shown to be valid.
            return Some(ResponseCode::EXPIRED_CARD);
        };
        let local = facts.now.unix_ms().saturating_sub(WESTERNMOST_OFFSET_MS);
        let (year, month) = Timestamp::from_unix_ms(local).year_month();
        let expiry_year = full_year(expiry.year, year);
        ((expiry_year, expiry.month) < (year, month)).then_some(ResponseCode::EXPIRED_CARD)
    }
}

/// The four-digit year a two-digit expiry year means, seen from `now_year`:
/// the one within 50 years before to 49 after, so "01" read in 2095 is 2101.
fn full_year(yy: u8, now_year: i32) -> i32 {
    let century = now_year - now_year.rem_euclid(100);
    let candidate = century + i32::from(yy);
    if candidate < now_year - 50 {
        candidate + 100
    } else if candidate > now_year + 49 {
        candidate - 100
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti};
    use crate::risk::RiskContext;

    fn message(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0100"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    fn in_november_2026() -> Timestamp {
        Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("valid time")
    }

    fn check_number(pan: &str) -> Option<ResponseCode> {
        let msg = message(&[(2, pan)]);
        let facts = Facts::new(&RiskContext::pos(), &msg, in_november_2026());
        CardNumber {
            min_length: 13,
            max_length: 19,
        }
        .check(&facts)
    }

    fn check_expiry(yymm: Option<&str>) -> Option<ResponseCode> {
        check_expiry_at(yymm, in_november_2026())
    }

    fn check_expiry_at(yymm: Option<&str>, now: Timestamp) -> Option<ResponseCode> {
        let mut fields = vec![(2, "4111111111111111")];
        if let Some(v) = yymm {
            fields.push((14, v));
        }
        let msg = message(&fields);
        Expiry.check(&Facts::new(&RiskContext::pos(), &msg, now))
    }

    #[test]
    fn a_good_card_number_passes() {
        assert_eq!(check_number("4111111111111111"), None);
        assert_eq!(check_number("4222222222222"), None);
    }

    #[test]
    fn a_wrong_check_digit_gives_14() {
        assert_eq!(
            check_number("4111111111111112"),
            Some(ResponseCode::INVALID_CARD_NUMBER)
        );
    }

    #[test]
    fn a_card_number_of_the_wrong_length_gives_14() {
        // Luhn-valid, 12 digits: below this rule's 13.
        assert_eq!(
            check_number("411111111116"),
            Some(ResponseCode::INVALID_CARD_NUMBER)
        );
        assert_eq!(
            check_number("41111111111111111113"),
            Some(ResponseCode::INVALID_CARD_NUMBER)
        );
    }

    #[test]
    fn a_card_number_with_a_letter_gives_14() {
        assert_eq!(
            check_number("41111111111x1111"),
            Some(ResponseCode::INVALID_CARD_NUMBER)
        );
    }

    #[test]
    fn a_card_is_valid_through_its_expiry_month() {
        assert_eq!(check_expiry(Some("2611")), None);
        assert_eq!(check_expiry(Some("2812")), None);
        assert_eq!(check_expiry(None), None);
    }

    #[test]
    fn a_card_expired_before_this_month_gives_54() {
        assert_eq!(check_expiry(Some("2610")), Some(ResponseCode::EXPIRED_CARD));
        assert_eq!(check_expiry(Some("1912")), Some(ResponseCode::EXPIRED_CARD));
    }

    #[test]
    fn a_card_is_declined_only_once_its_month_has_ended_everywhere() {
        let at = |utc| Timestamp::parse_utc(utc).expect("valid time");
        // 05:00 UTC on 1 December is still 30 November in the Americas.
        assert_eq!(
            check_expiry_at(Some("2611"), at("2026-12-01T05:00:00Z")),
            None
        );
        assert_eq!(
            check_expiry_at(Some("2611"), at("2026-12-01T11:59:59Z")),
            None
        );
        // Midnight at UTC-12, the last time zone to leave November.
        let expired = Some(ResponseCode::EXPIRED_CARD);
        assert_eq!(
            check_expiry_at(Some("2611"), at("2026-12-01T12:00:00Z")),
            expired
        );
        // Across a year end, the same.
        assert_eq!(
            check_expiry_at(Some("2612"), at("2027-01-01T11:00:00Z")),
            None
        );
        assert_eq!(
            check_expiry_at(Some("2612"), at("2027-01-01T12:00:00Z")),
            expired
        );
    }

    #[test]
    fn an_expiry_that_is_not_a_date_gives_54() {
        assert_eq!(check_expiry(Some("2613")), Some(ResponseCode::EXPIRED_CARD));
        assert_eq!(check_expiry(Some("26")), Some(ResponseCode::EXPIRED_CARD));
    }

    #[test]
    fn two_digit_years_are_read_within_a_century_of_now() {
        assert_eq!(full_year(28, 2026), 2028);
        assert_eq!(full_year(1, 2095), 2101);
        assert_eq!(full_year(99, 2026), 1999);
        assert_eq!(full_year(75, 2026), 2075);
    }
}
