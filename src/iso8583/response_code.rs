//! Field 39: the two-character response code, with the meanings the switch
//! produces (docs/ARCHITECTURE.md) and the common issuer codes a person meets in `explain`.

use std::fmt;
use std::str::FromStr;

/// A two-character response code (ISO 8583:1987 field 39).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseCode([u8; 2]);

/// Text that is not a response code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a response code of two letters or digits, found {0:?}")]
pub struct InvalidResponseCode(pub String);

impl ResponseCode {
    pub const APPROVED: ResponseCode = ResponseCode(*b"00");
    pub const REFER_TO_ISSUER: ResponseCode = ResponseCode(*b"01");
    pub const INVALID_MERCHANT: ResponseCode = ResponseCode(*b"03");
    pub const DO_NOT_HONOUR: ResponseCode = ResponseCode(*b"05");
    pub const INVALID_TRANSACTION: ResponseCode = ResponseCode(*b"12");
    pub const INVALID_AMOUNT: ResponseCode = ResponseCode(*b"13");
    pub const INVALID_CARD_NUMBER: ResponseCode = ResponseCode(*b"14");
    pub const NO_SUCH_ISSUER: ResponseCode = ResponseCode(*b"15");
    pub const FORMAT_ERROR: ResponseCode = ResponseCode(*b"30");
    pub const LOST_CARD: ResponseCode = ResponseCode(*b"41");
    pub const STOLEN_CARD: ResponseCode = ResponseCode(*b"43");
    pub const INSUFFICIENT_FUNDS: ResponseCode = ResponseCode(*b"51");
    pub const EXPIRED_CARD: ResponseCode = ResponseCode(*b"54");
    pub const NOT_PERMITTED_TO_CARDHOLDER: ResponseCode = ResponseCode(*b"57");
    pub const NOT_PERMITTED_TO_TERMINAL: ResponseCode = ResponseCode(*b"58");
    pub const SUSPECTED_FRAUD: ResponseCode = ResponseCode(*b"59");
    pub const EXCEEDS_AMOUNT_LIMIT: ResponseCode = ResponseCode(*b"61");
    pub const RESTRICTED_CARD: ResponseCode = ResponseCode(*b"62");
    pub const EXCEEDS_FREQUENCY_LIMIT: ResponseCode = ResponseCode(*b"65");
    pub const RESPONSE_TOO_LATE: ResponseCode = ResponseCode(*b"68");
    pub const ISSUER_INOPERATIVE: ResponseCode = ResponseCode(*b"91");
    pub const DUPLICATE_TRANSMISSION: ResponseCode = ResponseCode(*b"94");
    pub const SYSTEM_MALFUNCTION: ResponseCode = ResponseCode(*b"96");

    /// A code from two ASCII letters or digits.
    pub fn new(code: [u8; 2]) -> Option<ResponseCode> {
        code.iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(ResponseCode(code))
    }

    pub fn as_bytes(&self) -> &[u8; 2] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("response code bytes are ASCII by construction")
    }

    pub fn is_approval(&self) -> bool {
        matches!(&self.0, b"00" | b"08" | b"10" | b"11")
    }

    /// What the code means, for people reading `explain` output and logs.
    pub fn meaning(&self) -> &'static str {
        match &self.0 {
            b"00" => "approved",
            b"01" => "refer to card issuer",
            b"02" => "refer to card issuer, special condition",
            b"03" => "invalid merchant",
            b"04" => "pick up card",
            b"05" => "do not honour",
            b"06" => "error",
            b"07" => "pick up card, special condition",
            b"08" => "honour with identification",
            b"10" => "approved for partial amount",
            b"11" => "approved (VIP)",
            b"12" => "invalid transaction",
            b"13" => "invalid amount",
            b"14" => "invalid card number",
            b"15" => "no such issuer",
            b"19" => "re-enter transaction",
            b"21" => "no action taken",
            b"25" => "unable to locate record",
            b"30" => "format error",
            b"41" => "lost card",
            b"43" => "stolen card",
            b"51" => "insufficient funds",
            b"54" => "expired card",
            b"55" => "incorrect PIN",
            b"57" => "transaction not permitted to cardholder",
            b"58" => "transaction not permitted to terminal",
            b"59" => "suspected fraud",
            b"61" => "exceeds withdrawal amount limit",
            b"62" => "restricted card",
            b"63" => "security violation",
            b"65" => "exceeds withdrawal frequency limit",
            b"68" => "response received too late",
            b"75" => "allowable number of PIN tries exceeded",
            b"76" => "invalid or non-existent account",
            b"85" => "no reason to decline",
            b"91" => "issuer or switch inoperative",
            b"92" => "unable to route transaction",
            b"93" => "transaction cannot be completed, violation of law",
            b"94" => "duplicate transmission",
            b"96" => "system malfunction",
            _ => "unknown code",
        }
    }
}

impl FromStr for ResponseCode {
    type Err = InvalidResponseCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b] => ResponseCode::new([a, b]).ok_or_else(|| InvalidResponseCode(s.to_string())),
            _ => Err(InvalidResponseCode(s.to_string())),
        }
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseCode({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_alphanumerics_only() {
        assert_eq!(
            "05".parse::<ResponseCode>(),
            Ok(ResponseCode::DO_NOT_HONOUR)
        );
        assert!("N7".parse::<ResponseCode>().is_ok());
        for bad in ["", "5", "005", " 5", "0-"] {
            assert!(bad.parse::<ResponseCode>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_code_the_switch_produces_has_a_meaning() {
        for code in [
            ResponseCode::APPROVED,
            ResponseCode::INVALID_MERCHANT,
            ResponseCode::INVALID_TRANSACTION,
            ResponseCode::INVALID_AMOUNT,
            ResponseCode::INVALID_CARD_NUMBER,
            ResponseCode::NO_SUCH_ISSUER,
            ResponseCode::FORMAT_ERROR,
            ResponseCode::LOST_CARD,
            ResponseCode::STOLEN_CARD,
            ResponseCode::EXPIRED_CARD,
            ResponseCode::NOT_PERMITTED_TO_CARDHOLDER,
            ResponseCode::NOT_PERMITTED_TO_TERMINAL,
            ResponseCode::SUSPECTED_FRAUD,
            ResponseCode::EXCEEDS_AMOUNT_LIMIT,
            ResponseCode::RESTRICTED_CARD,
            ResponseCode::EXCEEDS_FREQUENCY_LIMIT,
            ResponseCode::RESPONSE_TOO_LATE,
            ResponseCode::ISSUER_INOPERATIVE,
            ResponseCode::DUPLICATE_TRANSMISSION,
            ResponseCode::SYSTEM_MALFUNCTION,
        ] {
            assert_ne!(code.meaning(), "unknown code", "{code}");
        }
        assert!(ResponseCode::APPROVED.is_approval());
        assert!(!ResponseCode::DO_NOT_HONOUR.is_approval());
    }
}
