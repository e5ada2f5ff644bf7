//! How the switch ends a message it answers itself: an approval, or a refusal
//! with its reason. [`Outcome::response_code`] is the one place that turns a
//! reason into field 39 (docs/ARCHITECTURE.md, "Where each response code is
//! decided"); handler and connection only name the reason.

use super::refund::RefundRefusal;
use crate::iso8583::{CodecError, FieldError, ResponseCode};
use crate::journal::{DecidedBy, JournalError};
use crate::upstream::UpstreamError;

/// Why the switch refuses a message itself rather than pass on an issuer's answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The message did not decode; only the MTI and what could be read of it
    /// are answered.
    #[error("message does not decode: {0}")]
    Decode(CodecError),
    /// A field the switch needs is missing or malformed.
    #[error("format error: {0}")]
    Format(#[from] FieldError),
    /// A message type or network function the switch does not handle.
    #[error("transaction type not supported")]
    Unsupported,
    /// The listener's channel does not carry this transaction.
    #[error("channel refuses: {0}")]
    Channel(ChannelRefusal),
    /// An enforcing risk rule fired; it carries its configured code. The
    /// rule has logged and counted itself by name, so no copy of the name is
    /// made per decline.
    #[error("a risk rule declined with {code}")]
    Risk { code: ResponseCode },
    /// No route for the card number.
    #[error("no route for the card number")]
    NoRoute,
    /// The issuer exchange failed.
    #[error("issuer exchange failed: {0}")]
    Upstream(#[from] UpstreamError),
    /// The issuer answered without a usable field 39.
    #[error("issuer response without a valid field 39")]
    IssuerResponse,
    /// The response does not encode with the listener's spec.
    #[error("response does not encode: {0}")]
    Encode(CodecError),
    /// The journal cannot record the transaction: the switch approves
    /// nothing it cannot record.
    #[error("the journal cannot record it: {0}")]
    Storage(JournalError),
    /// A refund its original does not allow, or with no original.
    #[error("refund refused: {0}")]
    Refund(#[from] RefundRefusal),
    /// A terminal's reversal of a transaction whose shift is closed: money
    /// goes back only as a refund now.
    #[error("reversal of a transaction in a closed shift")]
    ClosedShift,
}

/// What a channel refuses, for a request whose fields are well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelRefusal {
    /// Digits, but not as many as card numbers have.
    #[error("card number of the wrong length")]
    CardNumberLength,
    /// This MTI and processing code, or this channel, do not go together.
    #[error("transaction not allowed on this channel")]
    Transaction,
    /// Missing, or zero where only verification and inquiries may be.
    #[error("amount missing or zero")]
    Amount,
}

/// How the switch answers a message itself.
#[derive(Debug)]
pub enum Outcome {
    /// Sign-on and echo, or an advice or reversal taken for delivery; a
    /// shift close whose totals agree.
    Approved,
    /// A shift close whose totals do not agree with the journal's (95); the
    /// shift is closed all the same.
    OutOfBalance,
    Refused(Refusal),
}

/// 95: the terminal's reconciliation totals disagree with the acquirer's.
pub const RECONCILIATION_ERROR: &[u8; 2] = b"95";

impl From<Refusal> for Outcome {
    fn from(refusal: Refusal) -> Outcome {
        Outcome::Refused(refusal)
    }
}

impl Outcome {
    /// Field 39 for this outcome. Every code the switch puts in field 39 of
    /// its own answers comes from here.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Outcome::Approved => ResponseCode::APPROVED,
            Outcome::OutOfBalance => {
                ResponseCode::new(*RECONCILIATION_ERROR).expect("95 is two digits")
            }
            Outcome::Refused(refusal) => refusal.response_code(),
        }
    }
}

impl Refusal {
    /// Field 39 for this refusal.
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Refusal::Decode(_) | Refusal::Format(_) => ResponseCode::FORMAT_ERROR,
            Refusal::Unsupported | Refusal::ClosedShift => ResponseCode::INVALID_TRANSACTION,
            Refusal::Refund(RefundRefusal::NoOriginal) => ResponseCode::INVALID_TRANSACTION,
            Refusal::Refund(_) => ResponseCode::INVALID_AMOUNT,
            Refusal::Channel(ChannelRefusal::CardNumberLength) => ResponseCode::INVALID_CARD_NUMBER,
            Refusal::Channel(ChannelRefusal::Transaction) => ResponseCode::INVALID_TRANSACTION,
            Refusal::Channel(ChannelRefusal::Amount) => ResponseCode::INVALID_AMOUNT,
            Refusal::Risk { code } => *code,
            Refusal::NoRoute => ResponseCode::NO_SUCH_ISSUER,
            // The issuer or the network to it failed: 91; ours to fix: 96.
            Refusal::Upstream(e) if e.is_upstream_fault() => ResponseCode::ISSUER_INOPERATIVE,
            Refusal::Upstream(_)
            | Refusal::IssuerResponse
            | Refusal::Encode(_)
            | Refusal::Storage(_) => ResponseCode::SYSTEM_MALFUNCTION,
        }
    }

    /// Who the journal says decided it.
    pub fn decided_by(&self) -> DecidedBy {
        match self {
            Refusal::Risk { .. } => DecidedBy::Risk,
            Refusal::Upstream(
                UpstreamError::Timeout { .. } | UpstreamError::ConnectionLost { .. },
            ) => DecidedBy::Timeout,
            _ => DecidedBy::Switch,
        }
    }

    /// What the journal keeps beside the code, where the code alone does
    /// not say why.
    pub fn reason(&self) -> Option<String> {
        match self {
            Refusal::Refund(_) | Refusal::ClosedShift => Some(self.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti, Stan};

    fn code(outcome: impl Into<Outcome>) -> String {
        outcome.into().response_code().to_string()
    }

    /// A real codec error: field 2 of the built-in ASCII spec takes digits.
    fn codec_error() -> CodecError {
        let spec = crate::specs::builtin("iso87ascii")
            .expect("a built-in spec")
            .expect("it loads");
        let mut message = Message::new(Mti::from_static("0200"));
        message.set(2, "not digits").expect("data field");
        message.encode(&spec).expect_err("field 2 takes digits")
    }

    #[test]
    fn approvals_are_00() {
        assert_eq!(Outcome::Approved.response_code(), ResponseCode::APPROVED);
    }

    #[test]
    fn message_problems_are_30_and_unsupported_ones_12() {
        assert_eq!(code(Refusal::Decode(codec_error())), "30");
        assert_eq!(code(Refusal::Format(FieldError::Missing(41))), "30");
        assert_eq!(code(Refusal::Unsupported), "12");
    }

    #[test]
    fn channel_refusals_are_12_13_and_14() {
        assert_eq!(code(Refusal::Channel(ChannelRefusal::Transaction)), "12");
        assert_eq!(code(Refusal::Channel(ChannelRefusal::Amount)), "13");
        assert_eq!(
            code(Refusal::Channel(ChannelRefusal::CardNumberLength)),
            "14"
        );
    }

    #[test]
    fn a_risk_rule_answers_with_its_configured_code() {
        let refusal = Refusal::Risk {
            code: ResponseCode::STOLEN_CARD,
        };
        assert_eq!(code(refusal), "43");
    }

    #[test]
    fn a_refund_without_an_original_is_12_and_any_other_refusal_13() {
        assert_eq!(code(Refusal::Refund(RefundRefusal::NoOriginal)), "12");
        assert_eq!(code(Refusal::Refund(RefundRefusal::OtherCard)), "13");
        assert_eq!(
            code(Refusal::Refund(RefundRefusal::AboveRemaining {
                remaining: 5
            })),
            "13"
        );
        assert_eq!(code(Refusal::ClosedShift), "12");
        assert_eq!(Outcome::OutOfBalance.response_code().as_str(), "95");
    }

    #[test]
    fn no_route_is_15() {
        assert_eq!(code(Refusal::NoRoute), "15");
    }

    #[test]
    fn issuer_failures_are_91_and_ours_96() {
        let stan = Stan(7);
        let upstream = |e: UpstreamError| code(Refusal::Upstream(e));
        assert_eq!(upstream(UpstreamError::Timeout { issuer_stan: stan }), "91");
        assert_eq!(
            upstream(UpstreamError::ConnectionLost { issuer_stan: stan }),
            "91"
        );
        assert_eq!(upstream(UpstreamError::Unavailable), "91");
        assert_eq!(upstream(UpstreamError::Encode(codec_error())), "96");
        assert_eq!(code(Refusal::IssuerResponse), "96");
        assert_eq!(code(Refusal::Encode(codec_error())), "96");
    }
}
