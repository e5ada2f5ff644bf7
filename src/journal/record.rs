//! What the journal and the store-and-forward queue hold: one row per
//! transaction updated through its life, the queue's items, and the queries
//! over them. Closed sets are enums with one spelling each, shared by every backend.

use std::fmt;
use std::str::FromStr;

use crate::iso8583::{Message, Mti, ResponseCode};

/// A transaction's journal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId(pub i64);

/// A store-and-forward item's id; ascending ids are the queue's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SafId(pub i64);

/// A spelling the journal does not know, read back from storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} in the journal")]
pub struct UnknownSpelling {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a closed set with its one storage spelling per variant.
macro_rules! spelled_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in the journal and printed by the tools.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownSpelling;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownSpelling { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

spelled_enum!(
    /// Who decided the response code the terminal got.
    DecidedBy, "decider" {
        Issuer => "issuer",
        Risk => "risk",
        StandIn => "stand-in",
        Timeout => "timeout",
        Switch => "switch",
    }
);

spelled_enum!(
    /// Where the reversal of a transaction stands.
    ReversalState, "reversal state" {
        None => "none",
        Queued => "queued",
        Sent => "sent",
        Acknowledged => "acknowledged",
        Failed => "failed",
    }
);

spelled_enum!(
    /// What a store-and-forward item is.
    SafKind, "queue item kind" {
        Reversal => "reversal",
        Advice => "advice",
    }
);

spelled_enum!(
    /// Where a store-and-forward item stands: pending until the issuer answers
    /// or it expires.
    SafState, "queue item state" {
        Pending => "pending",
        Acknowledged => "acknowledged",
        Failed => "failed",
    }
);

/// A full card number on its way into the journal, which keeps only its mask
/// and keyed hash. `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClearPan(String);

impl ClearPan {
    /// Digits only, 12–19 of them.
    pub fn new(digits: &str) -> Option<ClearPan> {
        crate::iso8583::Pan::new(digits).map(|p| ClearPan(p.reveal().to_owned()))
    }

    /// The full number, for hashing only.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// First 6 / last 4, through the crate's one masker.
    pub fn masked(&self) -> String {
        crate::iso8583::fields::mask_pan(&self.0)
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }
}

impl fmt::Debug for ClearPan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClearPan({})", self.masked())
    }
}

/// The fields a reversal or advice is built from, kept encrypted at rest.
/// Nothing else of the message is kept: no track data, PIN block, CVV or field 55.
///
/// Held as its own storage encoding (field number, two-byte length, value;
/// ascending field numbers): one allocation, cloned with one copy, sealed as
/// it is. It is built once per forwarded request.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReversalFields(Vec<u8>);

impl ReversalFields {
    /// Fields 2, 3, 4, 7, 11, 12, 13, 14, 18, 22, 32, 37, 38, 39, 41, 42, 49
    /// and 90 (38 and 39: what an advice reports).
    pub const KEPT: [u8; 18] = [
        2, 3, 4, 7, 11, 12, 13, 14, 18, 22, 32, 37, 38, 39, 41, 42, 49, 90,
    ];

    /// None yet, with room for a reversal's usual fields.
    pub fn with_room() -> ReversalFields {
        ReversalFields(Vec::with_capacity(160))
    }

    /// The kept fields present in `message`.
    pub fn from_message(message: &Message) -> ReversalFields {
        let mut fields = ReversalFields::with_room();
        for n in Self::KEPT {
            if let Some(value) = message.get(n) {
                fields.push(n, value);
            }
        }
        fields
    }

    /// Appends a field numbered above every field already here.
    fn push(&mut self, field: u8, value: &[u8]) {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.0.push(field);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&value[..usize::from(len)]);
    }

    /// Sets one field; fields outside [`Self::KEPT`] are refused.
    pub fn set(&mut self, field: u8, value: impl AsRef<[u8]>) -> bool {
        if !Self::KEPT.contains(&field) {
            return false;
        }
        let value = value.as_ref();
        if self.iter().last().map_or(true, |(last, _)| last < field) {
            // Fields set in ascending order (as a reversal is built, once
            // per forwarded request) append in place.
            self.push(field, value);
            return true;
        }
        let mut rebuilt = ReversalFields(Vec::with_capacity(self.0.len() + value.len() + 3));
        let mut placed = false;
        for (n, existing) in self.iter() {
            if !placed && n >= field {
                rebuilt.push(field, value);
                placed = true;
            }
            if n != field {
                rebuilt.push(n, existing);
            }
        }
        if !placed {
            rebuilt.push(field, value);
        }
        *self = rebuilt;
        true
    }

    pub fn get(&self, field: u8) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == field).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let [n, hi, lo, tail @ ..] = rest else {
                return None;
            };
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let value = tail.get(..len)?;
            rest = &tail[len..];
            Some((*n, value))
        })
    }

    /// A message of type `mti` carrying these fields.
    pub fn to_message(&self, mti: Mti) -> Message {
        let mut message = Message::new(mti);
        for (n, value) in self.iter() {
            // KEPT holds only data field numbers, so `set` cannot refuse one.
            let _ = message.set(n, value);
        }
        message
    }

    /// The storage encoding: field number, two-byte length, value; repeated.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The inverse of [`Self::as_bytes`]; `None` when the bytes are cut short
    /// or not in ascending field order.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ReversalFields> {
        let mut rest = bytes;
        let mut last: Option<u8> = None;
        while let [n, hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            tail.get(..len)?;
            if last.is_some_and(|l| l >= *n) {
                return None;
            }
            last = Some(*n);
            rest = &tail[len..];
        }
        rest.is_empty().then(|| ReversalFields(bytes.to_vec()))
    }
}

impl fmt::Debug for ReversalFields {
    /// Field numbers only: the values include the PAN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|(n, _)| n)).finish()
    }
}

/// Where a request was sent: known before it is forwarded, with what its
/// reversal will need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub route: String,
    pub issuer: String,
    pub upstream_stan: String,
    pub upstream_rrn: Option<String>,
    pub reversal: ReversalFields,
}

/// The write-ahead record of a transaction, written when it arrives (and,
/// when it is forwarded, before it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnStart {
    pub received_at_ms: i64,
    pub listener: String,
    pub channel: String,
    pub mti: Mti,
    pub processing_code: Option<String>,
    pub pan: Option<ClearPan>,
    /// Minor units of `currency`.
    pub amount: Option<i64>,
    /// ISO 4217 numeric code.
    pub currency: Option<u16>,
    pub terminal_id: Option<String>,
    pub merchant_id: Option<String>,
    pub terminal_stan: Option<String>,
    pub terminal_rrn: Option<String>,
    /// `None` when the switch answered without asking an issuer.
    pub forward: Option<Forward>,
    /// The sale a refund refunds (found through field 37 or 90).
    pub original_id: Option<TxnId>,
}

/// What the terminal was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub answered_at_ms: i64,
    pub response_code: ResponseCode,
    pub decided_by: DecidedBy,
    pub auth_code: Option<String>,
    pub latency_us: u64,
    /// Why the switch refused it, when it says more than the code (a refund
    /// above what is left of its original, say).
    pub reason: Option<String>,
}

/// A store-and-forward item linked to a transaction, as its history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafLink {
    pub id: SafId,
    pub kind: SafKind,
    pub state: SafState,
    pub attempts: u32,
}

/// A transaction as the journal holds it. The PAN is only there masked and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub id: TxnId,
    pub received_at_ms: i64,
    pub listener: String,
    pub channel: String,
    pub mti: Mti,
    pub processing_code: Option<String>,
    pub pan_masked: Option<String>,
    pub pan_hash: Option<[u8; 32]>,
    pub amount: Option<i64>,
    pub currency: Option<u16>,
    pub terminal_id: Option<String>,
    pub merchant_id: Option<String>,
    pub terminal_stan: Option<String>,
    pub terminal_rrn: Option<String>,
    pub route: Option<String>,
    pub issuer: Option<String>,
    pub upstream_stan: Option<String>,
    pub upstream_rrn: Option<String>,
    pub outcome: Option<Outcome>,
    pub reversal: ReversalState,
    /// Reversals and advices queued for it, oldest first.
    pub links: Vec<SafLink>,
    /// The sale a refund refunds.
    pub original_id: Option<TxnId>,
    /// When its terminal reversed it within its shift (a cancellation); a
    /// reversal the switch made on its own leaves this unset.
    pub cancelled_at_ms: Option<i64>,
}

impl TxnRecord {
    /// Whether `query`'s conditions on the answer hold: who decided it and
    /// whether it was an approval. The other conditions are the backend's.
    pub(crate) fn answer_matches(&self, query: &TxnQuery) -> bool {
        let decided_by = query.decided_by.map_or(true, |by| {
            self.outcome.as_ref().is_some_and(|o| o.decided_by == by)
        });
        let approved = !query.approved_only
            || self
                .outcome
                .as_ref()
                .is_some_and(|o| o.response_code.is_approval());
        let terminal = query
            .terminal
            .as_ref()
            .map_or(true, |t| self.terminal_id.as_ref() == Some(t));
        let after = query.after.map_or(true, |after| self.id > after);
        let original = query.original.map_or(true, |o| self.original_id == Some(o));
        decided_by && approved && terminal && after && original
    }

    /// Whether the terminal was answered with an approval.
    pub fn approved(&self) -> bool {
        self.outcome
            .as_ref()
            .is_some_and(|o| o.response_code.is_approval())
    }

    /// Whether this is a financial request (0200, 0201) with processing code
    /// `transaction_type` (00 a sale, 20 a refund): the operations that move
    /// a merchant's money.
    pub fn is_financial(&self, transaction_type: &str) -> bool {
        self.mti.class() == 2
            && self.mti.function() == 0
            && self.mti.is_request()
            && self
                .processing_code
                .as_deref()
                .is_some_and(|pc| pc.starts_with(transaction_type))
    }

    /// An approval its terminal did not keep: reversed by the switch
    /// (an approval not delivered, a request in doubt), not cancelled by the
    /// terminal. A stand-in approval keeps the reversal of its timed-out
    /// request and is still an approval.
    pub fn reversed_by_switch(&self) -> bool {
        self.reversal != ReversalState::None
            && self.cancelled_at_ms.is_none()
            && !self
                .outcome
                .as_ref()
                .is_some_and(|o| o.decided_by == DecidedBy::StandIn)
    }

    /// An approval that stands for its terminal: approved and not reversed
    /// by the switch (a later cancellation by the terminal does not change it).
    pub fn stands(&self) -> bool {
        self.approved() && !self.reversed_by_switch()
    }

    /// What `start` is journaled as under `id` (the PAN kept only masked and
    /// hashed by `pan_hash`, nothing answered yet) and the fields its reversal
    /// needs. Every backend builds its first row here.
    pub(crate) fn begun(
        id: TxnId,
        start: TxnStart,
        pan_hash: impl FnOnce(&str) -> [u8; 32],
    ) -> (TxnRecord, Option<ReversalFields>) {
        let (route, issuer, upstream_stan, upstream_rrn, reversal) = match start.forward {
            Some(f) => (
                Some(f.route),
                Some(f.issuer),
                Some(f.upstream_stan),
                f.upstream_rrn,
                Some(f.reversal),
            ),
            None => (None, None, None, None, None),
        };
        let record = TxnRecord {
            id,
            received_at_ms: start.received_at_ms,
            listener: start.listener,
            channel: start.channel,
            mti: start.mti,
            processing_code: start.processing_code,
            pan_masked: start.pan.as_ref().map(ClearPan::masked),
            pan_hash: start.pan.as_ref().map(|p| pan_hash(p.reveal())),
            amount: start.amount,
            currency: start.currency,
            terminal_id: start.terminal_id,
            merchant_id: start.merchant_id,
            terminal_stan: start.terminal_stan,
            terminal_rrn: start.terminal_rrn,
            route,
            issuer,
            upstream_stan,
            upstream_rrn,
            outcome: None,
            reversal: ReversalState::None,
            links: Vec::new(),
            original_id: start.original_id,
            cancelled_at_ms: None,
        };
        (record, reversal)
    }
}

/// A forwarded request whose terminal was never answered: after a crash,
/// its reversal must be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    pub id: TxnId,
    pub received_at_ms: i64,
    pub route: String,
    pub issuer: String,
    pub upstream_stan: String,
    pub upstream_rrn: Option<String>,
    pub terminal_id: Option<String>,
    pub terminal_stan: Option<String>,
    pub reversal: ReversalFields,
}

/// Which transactions `find` returns: every given condition must hold.
/// `rrn` matches the terminal's or the upstream RRN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnQuery {
    pub rrn: Option<String>,
    /// Terminal id and the terminal's STAN.
    pub terminal_stan: Option<(String, String)>,
    pub last4: Option<String>,
    pub pan: Option<ClearPan>,
    pub range: TimeRange,
    /// Only transactions whose answer was decided by this.
    pub decided_by: Option<DecidedBy>,
    /// Only transactions answered with an approval
    /// ([`ResponseCode::is_approval`]).
    pub approved_only: bool,
    /// Only this terminal's (field 41).
    pub terminal: Option<String>,
    /// Only those journaled after this one (a shift: after its terminal's last close).
    pub after: Option<TxnId>,
    /// Only those naming this original (the refunds of a sale).
    pub original: Option<TxnId>,
    /// At most this many, oldest first; `None` for all.
    pub limit: Option<usize>,
}

/// Received-at bounds in unix ms: `since` inclusive, `until` exclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl TimeRange {
    pub fn contains(&self, at_ms: i64) -> bool {
        self.since_ms.map_or(true, |s| at_ms >= s) && self.until_ms.map_or(true, |u| at_ms < u)
    }
}

/// Count and summed amount of one group of transactions, per currency.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatsRow {
    /// The response code, route or decider; `pending` for unanswered ones,
    /// `-` for no route.
    pub key: String,
    pub currency: Option<u16>,
    pub count: u64,
    pub amount: i64,
}

/// Counts and amounts by response code, route and decider, each sorted by key
/// then currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub by_response_code: Vec<StatsRow>,
    pub by_route: Vec<StatsRow>,
    pub by_decider: Vec<StatsRow>,
}

/// The key `stats` shows for a transaction without an answer yet.
pub const PENDING: &str = "pending";
/// The key `stats` shows for a transaction without a route.
pub const NO_ROUTE: &str = "-";

/// What one `purge` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub transactions: u64,
    pub queue_items: u64,
}

impl Purged {
    pub(crate) fn add(&mut self, other: Purged) {
        self.transactions += other.transactions;
        self.queue_items += other.queue_items;
    }
}

/// A reversal or advice to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafNew {
    pub issuer: String,
    pub kind: SafKind,
    /// As first sent; repeats go out as its xxx1.
    pub mti: Mti,
    pub txn_id: Option<TxnId>,
    pub fields: ReversalFields,
    pub created_at_ms: i64,
    /// After this it is marked failed rather than sent.
    pub expires_at_ms: i64,
}

/// A pending store-and-forward item, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafItem {
    pub id: SafId,
    pub issuer: String,
    pub kind: SafKind,
    pub mti: Mti,
    pub txn_id: Option<TxnId>,
    pub fields: ReversalFields,
    /// Sends so far; past the first, it goes out as a repeat (xxx1).
    pub attempts: u32,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub expires_at_ms: i64,
}

impl SafItem {
    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversal_fields_keep_only_what_a_reversal_needs() {
        let mut m = Message::new(Mti::from_str("0100").expect("mti"));
        for (n, v) in [
            (2, "4111111111111111"),
            (35, "4111111111111111=2812"),
            (52, "PINBLOCK"),
            (55, "9F02"),
            (4, "000000001000"),
        ] {
            m.set(n, v).expect("field");
        }
        let fields = ReversalFields::from_message(&m);
        assert_eq!(
            fields.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert_eq!(format!("{fields:?}"), "{2, 4}");
    }

    #[test]
    fn reversal_fields_encode_round_trips_and_refuse_short_input() {
        let mut fields = ReversalFields::default();
        assert!(fields.set(2, "4111111111111111"));
        assert!(fields.set(90, vec![b'0'; 42]));
        assert!(!fields.set(35, "track"));
        // Set out of order and replaced: kept in field order, once each.
        assert!(fields.set(4, "000000000100"));
        assert!(fields.set(2, "5500000000000004"));
        assert_eq!(
            fields.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            vec![2, 4, 90]
        );
        assert_eq!(fields.get(2), Some(&b"5500000000000004"[..]));
        let bytes = fields.as_bytes().to_vec();
        assert_eq!(ReversalFields::decode(&bytes), Some(fields));
        assert_eq!(ReversalFields::decode(&bytes[..bytes.len() - 1]), None);
        // Out of order is not ours: refused.
        let swapped = [&bytes[19..], &bytes[..19]].concat();
        assert_eq!(ReversalFields::decode(&swapped), None);
    }

    #[test]
    fn every_spelling_reads_back() {
        for d in DecidedBy::ALL {
            assert_eq!(d.as_str().parse::<DecidedBy>(), Ok(*d));
        }
        for r in ReversalState::ALL {
            assert_eq!(r.as_str().parse::<ReversalState>(), Ok(*r));
        }
        assert!("nobody".parse::<DecidedBy>().is_err());
    }

    #[test]
    fn a_begun_record_keeps_the_pan_masked_and_hashed_and_the_reversal_apart() {
        let mut reversal = ReversalFields::default();
        reversal.set(2, "4111111111111111");
        let start = TxnStart {
            received_at_ms: 5,
            listener: "pos".into(),
            channel: "pos".into(),
            mti: Mti::from_str("0100").expect("mti"),
            processing_code: None,
            pan: ClearPan::new("4111111111111111"),
            amount: Some(1000),
            currency: Some(978),
            terminal_id: None,
            merchant_id: None,
            terminal_stan: None,
            terminal_rrn: None,
            forward: Some(Forward {
                route: "visa".into(),
                issuer: "bank-a".into(),
                upstream_stan: "000001".into(),
                upstream_rrn: None,
                reversal: reversal.clone(),
            }),
            original_id: None,
        };
        let (record, fields) = TxnRecord::begun(TxnId(7), start, |pan| {
            assert_eq!(pan, "4111111111111111");
            [9; 32]
        });
        assert_eq!(record.id, TxnId(7));
        assert_eq!(record.pan_masked.as_deref(), Some("411111******1111"));
        assert_eq!(record.pan_hash, Some([9; 32]));
        assert_eq!(record.issuer.as_deref(), Some("bank-a"));
        assert_eq!(
            (record.outcome, record.reversal),
            (None, ReversalState::None)
        );
        assert_eq!(fields, Some(reversal));
    }

    #[test]
    fn clear_pan_debug_is_masked() {
        let pan = ClearPan::new("4111111111111111").expect("pan");
        assert_eq!(format!("{pan:?}"), "ClearPan(411111******1111)");
        assert_eq!(pan.last4(), "1111");
        assert!(ClearPan::new("41111x").is_none());
    }
}
