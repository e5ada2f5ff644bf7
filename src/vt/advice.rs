//! What an operator reads after a payment: every response code the switch or
//! an issuer can return, in plain language, with what to tell the customer and
//! whether trying again makes sense. Hard declines are never retried.

use serde::Serialize;

/// Whether a declined payment may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retry {
    /// Never, by hand or by a schedule: the card or the request is wrong.
    Never,
    /// After a while (minutes for an unreachable bank, a day for funds).
    Later,
    /// At once, after correcting what the reason names.
    AfterCorrection,
    /// Approved: nothing to retry.
    NotNeeded,
}

impl Retry {
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::Never => "never",
            Retry::Later => "later",
            Retry::AfterCorrection => "after-correction",
            Retry::NotNeeded => "not-needed",
        }
    }
}

/// The advice for one response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Why, in the operator's words.
    pub reason: &'static str,
    /// What to say to the customer.
    pub tell_customer: &'static str,
    pub retry: Retry,
}

/// Codes a schedule or an operator must never send again for the same card:
/// pick-up, lost, stolen, restricted, expired, invalid card, not permitted.
pub const HARD_DECLINES: [&str; 8] = ["04", "07", "14", "41", "43", "54", "57", "62"];

/// Whether `code` is a hard decline (never retried automatically).
pub fn is_hard_decline(code: &str) -> bool {
    HARD_DECLINES.contains(&code)
}

const fn advice(reason: &'static str, tell_customer: &'static str, retry: Retry) -> Advice {
    Advice {
        reason,
        tell_customer,
        retry,
    }
}

/// The advice for `code`; an unknown code is treated as a decline to refer.
pub fn advice_for(code: &str) -> Advice {
    use Retry::*;
    match code {
        "00" | "08" | "10" | "11" => advice("approved", "the payment went through", NotNeeded),
        "01" | "02" => advice(
            "the card's bank wants to speak to the cardholder",
            "ask the customer to call their bank, then try again",
            AfterCorrection,
        ),
        "03" => advice(
            "this merchant is not set up to take this card",
            "apologise and ask for another card; call the acquirer's help desk",
            Never,
        ),
        "04" | "07" => advice(
            "the card's bank asks to keep the card (pick up)",
            "do not take this card; ask for another means of payment",
            Never,
        ),
        "05" => advice(
            "the bank declined without saying why",
            "ask the customer to call their bank, or to use another card",
            AfterCorrection,
        ),
        "06" | "96" => advice(
            "a system error at the switch or the bank",
            "apologise; try again in a few minutes",
            Later,
        ),
        "12" => advice(
            "this kind of payment is not allowed here (or the shift is closed)",
            "apologise; the payment cannot be made this way",
            Never,
        ),
        "13" => advice(
            "the amount or currency is not accepted",
            "check the amount and currency with the customer",
            AfterCorrection,
        ),
        "14" => advice(
            "the card number is not valid",
            "read the card number back to the customer; ask for another card",
            Never,
        ),
        "15" => advice(
            "no bank is known for this card number",
            "check the card number, or ask for another card",
            Never,
        ),
        "19" | "21" | "25" => advice(
            "the bank could not complete it",
            "try again; if it fails again, ask for another card",
            AfterCorrection,
        ),
        "30" => advice(
            "the payment was not well formed (a switch or bank error)",
            "apologise; report it to support with the time of the payment",
            Later,
        ),
        "41" => advice(
            "the card is reported lost",
            "do not take this card; ask for another means of payment",
            Never,
        ),
        "43" => advice(
            "the card is reported stolen",
            "do not take this card; ask for another means of payment",
            Never,
        ),
        "51" => advice(
            "insufficient funds",
            "ask for another card; do not retry now",
            Later,
        ),
        "54" => advice(
            "the card has expired",
            "check the expiry date, or ask for another card",
            Never,
        ),
        "55" | "75" => advice(
            "PIN problem (not used on a virtual terminal)",
            "ask for another card",
            Never,
        ),
        "57" => advice(
            "the card may not be used for this (for instance UnionPay or Maestro on a virtual terminal, or a recurring charge without consent)",
            "ask for another card",
            Never,
        ),
        "58" => advice(
            "this terminal may not make this payment",
            "apologise; call the acquirer's help desk",
            Never,
        ),
        "59" | "63" => advice(
            "the bank suspects fraud",
            "ask the customer to call their bank; do not retry",
            Never,
        ),
        "61" => advice(
            "the amount is above the card's limit",
            "ask for a smaller amount or another card",
            AfterCorrection,
        ),
        "62" => advice(
            "the card is restricted",
            "ask for another card",
            Never,
        ),
        "65" => advice(
            "too many payments with this card in a short time",
            "try again later, or ask for another card",
            Later,
        ),
        "68" | "91" | "92" => advice(
            "the card's bank did not answer",
            "try again in a few minutes",
            Later,
        ),
        "76" => advice(
            "the card's account does not exist",
            "ask for another card",
            Never,
        ),
        "93" => advice(
            "the payment would break the law",
            "the payment cannot be made",
            Never,
        ),
        "94" => advice(
            "the same payment was sent twice; the first one counts",
            "check today's operations before trying again",
            Never,
        ),
        "95" => advice(
            "the shift totals disagree with the switch; the close is recorded",
            "nothing: report the difference to the acquirer",
            Never,
        ),
        _ => advice(
            "the bank declined",
            "ask the customer to call their bank, or to use another card",
            AfterCorrection,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_declines_are_never_retried() {
        for code in HARD_DECLINES {
            assert_eq!(advice_for(code).retry, Retry::Never, "{code}");
            assert!(is_hard_decline(code));
        }
        assert!(!is_hard_decline("51"));
    }

    #[test]
    fn soft_declines_say_when_to_try_again() {
        assert_eq!(advice_for("51").retry, Retry::Later);
        assert!(advice_for("51").tell_customer.contains("another card"));
        assert_eq!(advice_for("91").retry, Retry::Later);
        assert!(advice_for("91").tell_customer.contains("few minutes"));
        assert_eq!(advice_for("05").retry, Retry::AfterCorrection);
        assert!(advice_for("05").tell_customer.contains("call their bank"));
    }

    #[test]
    fn every_code_the_switch_decides_has_its_own_reason() {
        let fallback = advice_for("zz").reason;
        for code in [
            "03", "12", "13", "14", "15", "30", "41", "43", "54", "57", "58", "61", "62", "65",
            "91", "94", "95", "96",
        ] {
            assert_ne!(advice_for(code).reason, fallback, "{code}");
        }
    }
}
