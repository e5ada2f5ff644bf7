//! What the switch writes to the journal and the store-and-forward queue, and
//! when: the write-ahead record before a request is forwarded, the outcome
//! before the terminal hears it, reversals and advices before the answer that
//! promises them. Built from messages here, so the handler names only stages.

use std::time::Instant;

use super::Inbound;
use crate::iso8583::{Message, Mti, OriginalData, ResponseCode, Stan};
use crate::journal::{
    now_ms, ClearPan, DecidedBy, Forward, JournalError, Outcome, ReversalFields, SafId, SafKind,
    SafNew, Stores, TxnId, TxnStart,
};
use crate::upstream::REVERSAL_FIELDS;

/// The journal's view of a request as it arrived.
pub(super) fn txn_start(
    from: &Inbound,
    request: &Message,
    received_at_ms: i64,
    forward: Option<Forward>,
) -> TxnStart {
    let text = |n: u8| request.get_str(n).map(|s| s.trim_end().to_owned());
    TxnStart {
        received_at_ms,
        listener: from.listener.to_string(),
        channel: from.channel.as_str().to_owned(),
        mti: request.mti(),
        processing_code: text(3),
        pan: request.get_str(2).and_then(ClearPan::new),
        amount: request.amount().ok().and_then(|a| i64::try_from(a.0).ok()),
        currency: request.get_str(49).and_then(|c| c.parse().ok()),
        terminal_id: text(41),
        merchant_id: text(42),
        terminal_stan: text(11),
        terminal_rrn: text(37),
        forward,
        original_id: None,
    }
}

/// What the terminal is answered, for the journal.
pub(super) fn outcome_of(response: &Message, decided_by: DecidedBy, started: Instant) -> Outcome {
    Outcome {
        answered_at_ms: now_ms(),
        response_code: response
            .response_code()
            .unwrap_or(ResponseCode::SYSTEM_MALFUNCTION),
        decided_by,
        auth_code: response.get_str(38).map(|s| s.trim_end().to_owned()),
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        reason: None,
    }
}

/// The reversal of `request` as the issuer will see it, sent as `stan`: what
/// [`reversal_for`](crate::upstream::reversal_for) builds, straight into the
/// journal's encoding (no copy of the request).
pub(super) fn reversal_of(request: &Message, stan: Stan) -> ReversalFields {
    let mut reversal = ReversalFields::with_room();
    for n in REVERSAL_FIELDS {
        let value = if n == 11 {
            Some(&stan.to_digits()[..])
        } else {
            request.get(n)
        };
        if let Some(value) = value {
            reversal.set(n, value);
        }
    }
    let original = OriginalData {
        stan,
        ..OriginalData::from_request(request)
    };
    reversal.set(90, original.to_field());
    reversal
}

/// Records a transaction the switch answered itself, without asking an issuer.
pub(super) async fn record_answered(
    stores: &Stores,
    start: TxnStart,
    outcome: Outcome,
) -> Result<TxnId, JournalError> {
    let id = stores.journal.begin(start).await?;
    stores.journal.record_outcome(id, outcome).await?;
    Ok(id)
}

/// The reversal MTI for an original of `version`: x400.
pub(super) fn reversal_mti(fields: &ReversalFields) -> Mti {
    let version = fields.get(90).and_then(|f| f.first().copied());
    match version {
        Some(v @ b'0'..=b'9') => Mti::new([v, b'4', b'0', b'0']).unwrap_or(REVERSAL),
        _ => REVERSAL,
    }
}

const REVERSAL: Mti = Mti::from_static("0400");

/// Queues the reversal of transaction `txn` at `issuer`, built when it was
/// forwarded. The queue keeps one reversal per transaction: a second call
/// (a terminal's 0400 after the switch's own) adds nothing.
pub(super) async fn queue_reversal(
    stores: &Stores,
    issuer: &str,
    txn: TxnId,
    fields: ReversalFields,
    expiry_ms: i64,
) -> Result<SafId, JournalError> {
    let now = now_ms();
    stores
        .queue
        .enqueue(SafNew {
            issuer: issuer.to_owned(),
            kind: SafKind::Reversal,
            mti: reversal_mti(&fields),
            txn_id: Some(txn),
            fields,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(expiry_ms),
        })
        .await
}

/// Queues `message` (an advice, or a reversal the switch could not match)
/// as it is, for `issuer`.
pub(super) async fn queue_message(
    stores: &Stores,
    issuer: &str,
    kind: SafKind,
    txn: Option<TxnId>,
    message: &Message,
    expiry_ms: i64,
) -> Result<SafId, JournalError> {
    let now = now_ms();
    stores
        .queue
        .enqueue(SafNew {
            issuer: issuer.to_owned(),
            kind,
            mti: message.mti(),
            txn_id: txn,
            fields: ReversalFields::from_message(message),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(expiry_ms),
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::upstream::reversal_for;

    #[test]
    fn the_start_record_holds_the_request_as_the_terminal_sent_it() {
        let mut request = Message::new(Mti::from_static("0200"));
        for (n, v) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, "000000001234"),
            (11, "000042"),
            (35, "4111111111111111=2812"),
            (41, "TERM0001"),
            (42, "MERCHANT0000001"),
            (49, "978"),
        ] {
            request.set(n, v).expect("data field");
        }
        let start = txn_start(&Inbound::new("pos", Channel::Pos), &request, 7, None);
        assert_eq!(start.amount, Some(1234));
        assert_eq!(start.currency, Some(978));
        assert_eq!(start.terminal_id.as_deref(), Some("TERM0001"));
        assert_eq!(start.terminal_stan.as_deref(), Some("000042"));
        assert_eq!(
            start.pan.as_ref().map(ClearPan::masked).as_deref(),
            Some("411111******1111")
        );
        assert_eq!(start.channel, "pos");
    }

    #[test]
    fn the_reversal_built_for_the_journal_is_the_one_the_queue_would_build() {
        let mut request = Message::new(Mti::from_static("0200"));
        for (n, v) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, "000000001234"),
            (7, "1207181500"),
            (11, "000042"),
            (32, "12345"),
            (35, "4111111111111111=2812"),
            (37, "634118000001"),
            (41, "TERM0001"),
            (52, "PINBLOCK"),
        ] {
            request.set(n, v).expect("data field");
        }
        let stan = Stan(777);
        let mut as_sent = request.clone();
        as_sent.set(11, stan.to_digits()).expect("data field");
        let expected = ReversalFields::from_message(&reversal_for(&as_sent));
        assert_eq!(reversal_of(&request, stan), expected);
        assert_eq!(expected.get(11), Some(&b"000777"[..]));
        assert!(expected.get(35).is_none());
    }

    #[test]
    fn a_reversal_goes_out_in_the_version_of_its_original() {
        let mut original = Message::new(Mti::from_static("1100"));
        original.set(11, "000001").expect("data field");
        let fields = ReversalFields::from_message(&reversal_for(&original));
        assert_eq!(reversal_mti(&fields), Mti::from_static("1400"));
        assert_eq!(reversal_mti(&ReversalFields::default()), REVERSAL);
    }
}
