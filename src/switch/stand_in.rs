//! Stand-in: whether the switch may approve a request itself, within its
//! route's limits, when the issuer cannot be reached; and the authorization
//! code such an approval carries. Pure: the caller keeps the per-card count
//! of today's stand-in approvals and says what it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::iso8583::fields::ProcessingCode;
use crate::iso8583::{FieldError, Message, MinorUnits, Mti};
use crate::route::StandInConfig;

/// One route's stand-in limits, ready to check requests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandIn {
    max_amount: MinorUnits,
    max_per_card_per_day: u32,
    /// Field 18 values as written (4 digits each), compared as text.
    mcc_deny: Vec<String>,
    /// Field 49 values as written (3 digits each); `None` allows any.
    currencies: Option<Vec<String>>,
}

/// Why a request may not be stood in for; the terminal then gets the
/// switch's usual answer for an unreachable issuer. `Display` is for log lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StandInRefusal {
    #[error("amount {amount} is above the stand-in limit {max}")]
    OverAmount { amount: MinorUnits, max: MinorUnits },
    #[error("the card has {count} stand-in approvals today, the limit is {max}")]
    CardCapReached { count: u32, max: u32 },
    #[error("merchant category {0} is never stood in for")]
    MccDenied(String),
    #[error("currency {0} is not stood in for")]
    Currency(String),
    #[error("not eligible for stand-in: {0}")]
    NotEligible(&'static str),
}

impl StandInRefusal {
    /// A metric label from a fixed set.
    pub fn kind(&self) -> &'static str {
        match self {
            StandInRefusal::OverAmount { .. } => "over_amount",
            StandInRefusal::CardCapReached { .. } => "card_cap",
            StandInRefusal::MccDenied(_) => "mcc",
            StandInRefusal::Currency(_) => "currency",
            StandInRefusal::NotEligible(_) => "not_eligible",
        }
    }
}

const AUTHORIZATION: Mti = Mti::from_static("0100");
const FINANCIAL: Mti = Mti::from_static("0200");

impl StandIn {
    pub fn new(config: &StandInConfig) -> StandIn {
        StandIn {
            max_amount: MinorUnits(config.max_amount),
            max_per_card_per_day: config.max_per_card_per_day,
            mcc_deny: config.mcc_deny.clone(),
            currencies: config.currencies.clone(),
        }
    }

    /// Whether `request` may be approved by the switch, given how many
    /// stand-in approvals its card has had today. Checked in this order:
    /// the kind of request, its currency (an amount limit means one
    /// currency's minor units), the amount, the merchant category, and last
    /// the card's count, the one input that changes between calls.
    ///
    /// Only purchases (0100/0200 and their repeats, processing code 00) with
    /// an amount qualify: a zero-amount account verification asks whether the
    /// card is good, which only the issuer knows. A field the check needs
    /// that is malformed refuses rather than guesses; an absent MCC is allowed.
    pub fn check(&self, request: &Message, approvals_today: u32) -> Result<(), StandInRefusal> {
        use StandInRefusal::NotEligible;

        let mti = request.mti().original();
        if mti != AUTHORIZATION && mti != FINANCIAL {
            return Err(NotEligible(
                "not an authorization or financial request (0100/0200)",
            ));
        }
        match request.processing_code() {
            Ok(code) if code.transaction_type == ProcessingCode::PURCHASE => {}
            _ => return Err(NotEligible("not a purchase (field 3 processing code 00)")),
        }
        let amount = match request.amount() {
            Ok(MinorUnits(0)) => {
                return Err(NotEligible(
                    "zero amount (an account verification needs the issuer)",
                ))
            }
            Ok(amount) => amount,
            Err(FieldError::Missing(_)) => return Err(NotEligible("no amount (field 4)")),
            Err(FieldError::Malformed { .. }) => {
                return Err(NotEligible("malformed amount (field 4)"))
            }
        };
        if let Some(currencies) = &self.currencies {
            let currency = match request.currency() {
                Ok(_) => request.get_str(49).unwrap_or_default(),
                Err(FieldError::Missing(_)) => return Err(NotEligible("no currency (field 49)")),
                Err(FieldError::Malformed { .. }) => {
                    return Err(NotEligible("malformed currency (field 49)"))
                }
            };
            if !currencies.iter().any(|allowed| allowed == currency) {
                return Err(StandInRefusal::Currency(currency.to_owned()));
            }
        }
        if amount > self.max_amount {
            return Err(StandInRefusal::OverAmount {
                amount,
                max: self.max_amount,
            });
        }
        match request.mcc() {
            Ok(_) => {
                let mcc = request.get_str(18).unwrap_or_default();
                if self.mcc_deny.iter().any(|denied| denied == mcc) {
                    return Err(StandInRefusal::MccDenied(mcc.to_owned()));
                }
            }
            Err(FieldError::Missing(_)) => {}
            Err(FieldError::Malformed { .. }) => {
                return Err(NotEligible("malformed merchant category code (field 18)"))
            }
        }
        if approvals_today >= self.max_per_card_per_day {
            return Err(StandInRefusal::CardCapReached {
                count: approvals_today,
                max: self.max_per_card_per_day,
            });
        }
        Ok(())
    }

    /// The authorization code (field 38) for a stand-in approval: see [`next_auth_code`].
    pub fn auth_code(&self) -> [u8; 6] {
        next_auth_code()
    }
}

/// The first character of every stand-in authorization code.
pub const AUTH_CODE_PREFIX: u8 = b'S';

/// How many codes there are before they repeat: five base-36 characters.
pub const AUTH_CODE_CYCLE: u64 = 36u64.pow(5);

/// One process-wide sequence, so two routes never hand out the same code at
/// once. It starts at the Unix time in seconds: after a restart it starts
/// past the codes given before, unless they averaged more than one a second
/// since the previous start.
static AUTH_SEQUENCE: LazyLock<AtomicU64> = LazyLock::new(|| {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    AtomicU64::new(seconds)
});

/// The next stand-in authorization code: `S` and five characters of `0-9A-Z`.
///
/// Issuers' codes are usually six digits, so the leading letter shows
/// anyone reading a receipt, a log or the journal that the switch approved,
/// not the issuer. The five characters count up one process-wide sequence,
/// so a code repeats only after [`AUTH_CODE_CYCLE`] (60 466 176) stand-ins.
pub fn next_auth_code() -> [u8; 6] {
    auth_code_for(AUTH_SEQUENCE.fetch_add(1, Ordering::Relaxed))
}

/// The code for position `sequence` of the cycle (taken modulo [`AUTH_CODE_CYCLE`]).
pub fn auth_code_for(sequence: u64) -> [u8; 6] {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut code = [AUTH_CODE_PREFIX; 6];
    let mut n = sequence % AUTH_CODE_CYCLE;
    for slot in code[1..].iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    code
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn limits() -> StandIn {
        StandIn::new(&StandInConfig {
            max_amount: 5000,
            max_per_card_per_day: 3,
            mcc_deny: vec!["7995".into()],
            currencies: None,
        })
    }

    fn in_currencies(currencies: &[&str]) -> StandIn {
        StandIn::new(&StandInConfig {
            max_amount: 5000,
            max_per_card_per_day: 3,
            mcc_deny: Vec::new(),
            currencies: Some(currencies.iter().map(|c| (*c).to_owned()).collect()),
        })
    }

    /// A purchase of `amount` minor units at a grocery (MCC 5411) in dollars.
    fn purchase(mti: &'static str, amount: &str) -> Message {
        let mut m = Message::new(Mti::from_static(mti));
        for (n, v) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, amount),
            (11, "000123"),
            (18, "5411"),
            (41, "TERM0001"),
            (49, "840"),
        ] {
            m.set(n, v).expect("data field");
        }
        m
    }

    fn without(mut m: Message, field: u8) -> Message {
        assert!(m.remove(field), "field {field} was there");
        m
    }

    fn with(mut m: Message, field: u8, value: &str) -> Message {
        m.set(field, value).expect("data field");
        m
    }

    #[test]
    fn a_purchase_within_every_limit_is_stood_in_for() {
        for mti in ["0100", "0200", "0101", "0201"] {
            assert_eq!(
                limits().check(&purchase(mti, "000000001000"), 0),
                Ok(()),
                "{mti}"
            );
        }
    }

    #[test]
    fn an_amount_equal_to_the_limit_is_allowed_and_one_more_is_refused() {
        assert_eq!(limits().check(&purchase("0200", "000000005000"), 0), Ok(()));
        assert_eq!(
            limits().check(&purchase("0200", "000000005001"), 0),
            Err(StandInRefusal::OverAmount {
                amount: MinorUnits(5001),
                max: MinorUnits(5000)
            })
        );
    }

    #[test]
    fn the_card_s_last_allowed_approval_passes_and_the_one_after_is_refused() {
        let request = purchase("0200", "000000001000");
        assert_eq!(limits().check(&request, 2), Ok(()));
        assert_eq!(
            limits().check(&request, 3),
            Err(StandInRefusal::CardCapReached { count: 3, max: 3 })
        );
        assert_eq!(
            limits().check(&request, 7),
            Err(StandInRefusal::CardCapReached { count: 7, max: 3 })
        );
    }

    #[test]
    fn a_denied_mcc_is_refused_an_absent_one_allowed_and_a_malformed_one_not_guessed() {
        let casino = with(purchase("0200", "000000001000"), 18, "7995");
        assert_eq!(
            limits().check(&casino, 0),
            Err(StandInRefusal::MccDenied("7995".into()))
        );
        let no_mcc = without(purchase("0200", "000000001000"), 18);
        assert_eq!(limits().check(&no_mcc, 0), Ok(()));
        let bad = with(purchase("0200", "000000001000"), 18, "79X5");
        assert_eq!(
            limits().check(&bad, 0),
            Err(StandInRefusal::NotEligible(
                "malformed merchant category code (field 18)"
            ))
        );
    }

    #[test]
    fn only_listed_currencies_are_stood_in_for_when_a_list_is_given() {
        let dollars = purchase("0200", "000000001000");
        let euros = with(purchase("0200", "000000001000"), 49, "978");
        assert_eq!(in_currencies(&["840"]).check(&dollars, 0), Ok(()));
        assert_eq!(
            in_currencies(&["840"]).check(&euros, 0),
            Err(StandInRefusal::Currency("978".into()))
        );
        assert_eq!(in_currencies(&["840", "978"]).check(&euros, 0), Ok(()));
        assert_eq!(
            in_currencies(&["840"]).check(&without(dollars.clone(), 49), 0),
            Err(StandInRefusal::NotEligible("no currency (field 49)"))
        );
        assert_eq!(
            in_currencies(&["840"]).check(&with(dollars.clone(), 49, "84"), 0),
            Err(StandInRefusal::NotEligible("malformed currency (field 49)"))
        );
        // Without a list, any currency (or none) is allowed.
        assert_eq!(limits().check(&euros, 0), Ok(()));
        assert_eq!(limits().check(&without(dollars, 49), 0), Ok(()));
    }

    #[test]
    fn the_currency_is_checked_before_the_amount_it_gives_meaning_to() {
        let yen = with(purchase("0200", "000000900000"), 49, "392");
        assert_eq!(
            in_currencies(&["840"]).check(&yen, 0),
            Err(StandInRefusal::Currency("392".into()))
        );
    }

    #[test]
    fn requests_other_than_purchases_with_an_amount_are_not_eligible() {
        let not_eligible = |request: Message, reason: &'static str| {
            assert_eq!(
                limits().check(&request, 0),
                Err(StandInRefusal::NotEligible(reason)),
                "{reason}"
            );
        };
        let request_kind = "not an authorization or financial request (0100/0200)";
        for mti in ["0400", "0420", "0120", "0220", "0800", "0110"] {
            not_eligible(purchase(mti, "000000001000"), request_kind);
        }
        let purchase_only = "not a purchase (field 3 processing code 00)";
        not_eligible(
            with(purchase("0200", "000000001000"), 3, "200000"),
            purchase_only,
        );
        not_eligible(
            with(purchase("0200", "000000001000"), 3, "010000"),
            purchase_only,
        );
        not_eligible(without(purchase("0200", "000000001000"), 3), purchase_only);
        not_eligible(
            without(purchase("0200", "000000001000"), 4),
            "no amount (field 4)",
        );
        not_eligible(
            purchase("0200", "00000000A000"),
            "malformed amount (field 4)",
        );
        not_eligible(
            purchase("0100", "000000000000"),
            "zero amount (an account verification needs the issuer)",
        );
    }

    #[test]
    fn refusals_read_as_log_lines_with_fixed_labels() {
        let cases = [
            (
                StandInRefusal::OverAmount {
                    amount: MinorUnits(5001),
                    max: MinorUnits(5000),
                },
                "amount 5001 is above the stand-in limit 5000",
                "over_amount",
            ),
            (
                StandInRefusal::CardCapReached { count: 3, max: 3 },
                "the card has 3 stand-in approvals today, the limit is 3",
                "card_cap",
            ),
            (
                StandInRefusal::MccDenied("7995".into()),
                "merchant category 7995 is never stood in for",
                "mcc",
            ),
            (
                StandInRefusal::Currency("978".into()),
                "currency 978 is not stood in for",
                "currency",
            ),
            (
                StandInRefusal::NotEligible("no amount (field 4)"),
                "not eligible for stand-in: no amount (field 4)",
                "not_eligible",
            ),
        ];
        for (refusal, line, kind) in cases {
            assert_eq!(refusal.to_string(), line);
            assert_eq!(refusal.kind(), kind);
        }
    }

    #[test]
    fn auth_codes_are_s_and_five_base_36_characters_cycling_after_36_to_the_fifth() {
        assert_eq!(&auth_code_for(0), b"S00000");
        assert_eq!(&auth_code_for(35), b"S0000Z");
        assert_eq!(&auth_code_for(36), b"S00010");
        assert_eq!(&auth_code_for(AUTH_CODE_CYCLE - 1), b"SZZZZZ");
        assert_eq!(auth_code_for(AUTH_CODE_CYCLE), auth_code_for(0));
        assert_eq!(auth_code_for(AUTH_CODE_CYCLE + 7), auth_code_for(7));
    }

    #[test]
    fn successive_auth_codes_differ_and_are_marked_as_the_switch_s() {
        let codes: Vec<[u8; 6]> = (0..1000).map(|_| limits().auth_code()).collect();
        let distinct: HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len());
        for code in &codes {
            assert_eq!(code[0], b'S');
            assert!(
                code[1..]
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{code:?}"
            );
        }
    }
}
