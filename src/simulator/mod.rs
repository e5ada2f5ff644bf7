//! The issuer simulator: answers requests by configured rules first, then from
//! cardholder accounts whose balances and holds it keeps, so QA and load tests have
//! an issuer that approves, declines, goes silent and honours reversals.

mod accounts;
mod advices;
pub mod config;
mod recent;
mod record;
mod rules;
mod server;

pub use crate::upstream::Decision;
pub use advices::{AdviceOutcome, AdviceRecord, SEEN_ADVICE_CAPACITY};
pub use config::SimulatorConfig;
pub use record::RecordError;
pub use server::{bind_and_serve, bind_and_serve_with, serve};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use thiserror::Error;

use crate::frame::ParseLengthHeaderError;
use crate::iso8583::fields::{mask_pan, FieldError, ProcessingCode};
use crate::iso8583::{Message, Mti, ResponseCode, SpecError, Stan};

use accounts::{Accounts, HoldKeys, Holds, Release, TerminalKey, TransmissionKey};
use advices::SeenAdvices;
use config::AccountStatus;
use recent::RecentLog;
use rules::{Action, Rules};

/// Holds kept for reversals to find; placing one more evicts the oldest.
pub const HOLD_CAPACITY: u64 = 1_000_000;

/// Reversals remembered for [`Simulator::reversals`].
pub const REVERSAL_LOG_CAPACITY: usize = 10_000;

/// Advices remembered for [`Simulator::advices`].
pub const ADVICE_LOG_CAPACITY: usize = 10_000;

/// Fields a response copies from its request when present. Never 14, 35, 52 or 55:
/// card secrets do not travel back.
const ECHO_FIELDS: [u8; 13] = [2, 3, 4, 7, 11, 12, 13, 22, 32, 37, 41, 42, 49];
/// A reversal response also names the original it acknowledges.
const REVERSAL_ECHO_FIELDS: [u8; 14] = [2, 3, 4, 7, 11, 12, 13, 22, 32, 37, 41, 42, 49, 90];
const NETWORK_ECHO_FIELDS: [u8; 3] = [7, 11, 70];

/// A simulator that cannot be built or started.
#[derive(Debug, Error)]
pub enum SimulatorError {
    #[error("simulator rule #{rule}: {problem}")]
    Rule { rule: usize, problem: String },
    #[error("simulator default_response: {0}")]
    DefaultResponse(String),
    /// `pan` is masked.
    #[error("simulator account {pan}: {problem}")]
    Account { pan: String, problem: String },
    #[error("simulator spec: {0}")]
    Spec(#[from] SpecError),
    #[error("simulator header: {0}")]
    Header(#[from] ParseLengthHeaderError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("simulator cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What became of a reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Its original's hold was released (credited back).
    Released,
    /// Its original had already been reversed; nothing was credited.
    Duplicate,
    /// No original was found; acknowledged anyway, as issuers do.
    Unmatched,
    /// A rule decided the answer; no hold was touched.
    ByRule,
}

impl ReversalOutcome {
    /// As the record file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReversalOutcome::Released => "released",
            ReversalOutcome::Duplicate => "duplicate",
            ReversalOutcome::Unmatched => "unmatched",
            ReversalOutcome::ByRule => "by-rule",
        }
    }
}

/// What deciding a request did besides answering it, for the record file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    Reversal(ReversalOutcome),
    Advice(AdviceOutcome),
}

/// One reversal the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRecord {
    pub mti: Mti,
    /// From field 90, else field 11.
    pub original_stan: Option<Stan>,
    pub masked_pan: Option<String>,
    /// Field 4 of the reversal, else the amount of the hold it released.
    pub amount: Option<u64>,
    pub outcome: ReversalOutcome,
}

impl ReversalRecord {
    /// Whether it found its original (now or by an earlier reversal).
    pub fn matched(&self) -> bool {
        matches!(
            self.outcome,
            ReversalOutcome::Released | ReversalOutcome::Duplicate
        )
    }
}

/// Counts since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Responses sent (or scheduled), by field 39.
    pub responses: BTreeMap<String, u64>,
    pub drops: u64,
    pub closes: u64,
    pub reversals_received: u64,
    /// Reversals that released a hold.
    pub reversals_matched: u64,
    /// Reversals whose original had already been reversed.
    pub reversals_duplicate: u64,
    pub reversals_unmatched: u64,
    /// Advices received, repeats included.
    pub advices: u64,
    /// Advices that repeated one already received.
    pub advices_duplicate: u64,
    /// Frames that did not decode as a message of the spec.
    pub undecodable: u64,
}

/// The simulator. Share it behind an `Arc`; `decide` takes `&self` and no lock
/// shared by all requests.
pub struct Simulator {
    rules: Rules,
    default: Action,
    accounts: Accounts,
    holds: Holds,
    auth_codes: AtomicU32,
    counters: Counters,
    reversals: RecentLog<ReversalRecord>,
    advices: RecentLog<AdviceRecord>,
    seen_advices: SeenAdvices,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("rules", &self.rules)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// How the simulator treats an MTI.
enum Kind {
    Authorization,
    Advice,
    Reversal,
    NetworkManagement,
    Other,
}

fn kind(mti: Mti) -> Kind {
    // Only ISO 8583:1987 (version 0) MTIs get the full treatment.
    if mti.as_bytes()[0] != b'0' {
        return Kind::Other;
    }
    match (mti.class(), mti.function()) {
        (1 | 2, 0) => Kind::Authorization,
        (1 | 2, 2) => Kind::Advice,
        (4, 0 | 2) => Kind::Reversal,
        (8, 0) => Kind::NetworkManagement,
        _ => Kind::Other,
    }
}

/// 0100/0101/0200/0201: the requests rules without an MTI apply to.
pub(crate) fn is_authorization(mti: Mti) -> bool {
    matches!(kind(mti), Kind::Authorization)
}

impl Simulator {
    pub fn new(config: &SimulatorConfig) -> Result<Simulator, SimulatorError> {
        Simulator::with_hold_capacity(config, HOLD_CAPACITY)
    }

    /// As [`Simulator::new`], keeping at most `capacity` holds.
    pub fn with_hold_capacity(
        config: &SimulatorConfig,
        capacity: u64,
    ) -> Result<Simulator, SimulatorError> {
        Ok(Simulator {
            rules: Rules::compile(&config.rules)?,
            default: Action::compile(&config.default_response, 0, 0)?,
            accounts: Accounts::new(&config.accounts)?,
            holds: Holds::new(capacity),
            auth_codes: AtomicU32::new(1),
            counters: Counters::new(),
            reversals: RecentLog::new(REVERSAL_LOG_CAPACITY),
            advices: RecentLog::new(ADVICE_LOG_CAPACITY),
            seen_advices: SeenAdvices::new(SEEN_ADVICE_CAPACITY),
        })
    }

    /// Decides the answer to `request` and applies its effects (holds, credits,
    /// counters). Never panics on any message content.
    pub fn decide(&self, request: &Message) -> Decision {
        self.decide_with_effect(request).0
    }

    /// As [`Simulator::decide`], also saying what became of a reversal or an
    /// advice (the TCP server records it).
    pub(crate) fn decide_with_effect(&self, request: &Message) -> (Decision, Effect) {
        let (decision, effect) = self.decide_uncounted(request);
        self.counters.count(&decision);
        (decision, effect)
    }

    fn decide_uncounted(&self, request: &Message) -> (Decision, Effect) {
        let mti = request.mti();
        if !mti.is_request() {
            // Unsolicited responses get no answer.
            return (Decision::Drop, Effect::None);
        }
        let ruled = self.rules.first_match(request);
        let decision = match kind(mti) {
            Kind::Authorization => match ruled {
                Some(action) => self.act(request, action, &ECHO_FIELDS, true),
                None => self.authorize(request),
            },
            Kind::Reversal => {
                let (decision, outcome) = self.reverse(request, ruled);
                return (decision, Effect::Reversal(outcome));
            }
            Kind::Advice => {
                let outcome = self.note_advice(request);
                let action = ruled.unwrap_or(APPROVE);
                let decision = self.act(request, action, &ECHO_FIELDS, false);
                return (decision, Effect::Advice(outcome));
            }
            Kind::NetworkManagement => match ruled {
                Some(action) => self.act(request, action, &NETWORK_ECHO_FIELDS, false),
                None => self.network_management(request),
            },
            Kind::Other => {
                let action = ruled.unwrap_or(respond(ResponseCode::INVALID_TRANSACTION));
                self.act(request, action, &ECHO_FIELDS, false)
            }
        };
        (decision, Effect::None)
    }

    /// Counts and logs an advice; a repeat of one already received is logged
    /// as a duplicate. Advices move no money here: the simulator holds nothing
    /// for them.
    fn note_advice(&self, advice: &Message) -> AdviceOutcome {
        self.counters.advices.fetch_add(1, Ordering::Relaxed);
        let outcome = self.seen_advices.note(advice);
        if outcome == AdviceOutcome::Duplicate {
            self.counters
                .advices_duplicate
                .fetch_add(1, Ordering::Relaxed);
        }
        self.advices.push(AdviceRecord {
            mti: advice.mti(),
            stan: advice.stan().ok(),
            masked_pan: advice.get_str(2).map(mask_pan),
            amount: advice.amount().ok().map(|a| a.0),
            auth_code: advice.get_str(38).map(str::to_owned),
            response_code: advice.get_str(39).map(str::to_owned),
            outcome,
        });
        outcome
    }

    /// Account checks for an authorization no rule decided.
    fn authorize(&self, request: &Message) -> Decision {
        let pan = match request.pan() {
            Ok(pan) => pan,
            Err(e) => return self.format_error(request, &e),
        };
        let processing_code = match request.processing_code() {
            Ok(pc) => pc,
            Err(e) => return self.format_error(request, &e),
        };
        let balance_inquiry = matches!(processing_code.transaction_type, 30 | 31);
        let amount = match request.amount().map(|a| i64::try_from(a.0)) {
            Ok(Ok(amount)) => amount,
            Ok(Err(_)) => {
                let e = FieldError::Malformed {
                    field: 4,
                    expected: "an amount below 2^63",
                };
                return self.format_error(request, &e);
            }
            Err(FieldError::Missing(_)) if balance_inquiry => 0,
            Err(e) => return self.format_error(request, &e),
        };
        let Some(id) = self.accounts.find(pan.reveal()) else {
            return self.act(request, self.default, &ECHO_FIELDS, true);
        };
        let account = self.accounts.get(id);
        if account.status == AccountStatus::Blocked {
            return self.answer(request, ResponseCode::RESTRICTED_CARD);
        }
        // The card on file decides; a field 14 already past is expired too,
        // whatever the file says. (A field 14 that merely differs from the
        // file is not checked: QA requests often carry any future date.)
        let claimed = if request.has(14) {
            match request.expiry() {
                Ok(expiry) => Some(expiry),
                Err(e) => return self.format_error(request, &e),
            }
        } else {
            None
        };
        let (yy, mm) = current_yymm();
        if std::iter::once(account.expiry)
            .chain(claimed)
            .any(|expiry| expiry.is_expired_at(yy, mm))
        {
            return self.answer(request, ResponseCode::EXPIRED_CARD);
        }

        let keys = hold_keys(request);
        // A repeat (0101/0201) of an approved request is approved again, not held twice.
        let repeat_of_live = || request.mti().is_repeat() && self.holds.is_live(&keys);
        match processing_code.transaction_type {
            // A refund and a prepaid load (gift card top-up, 28) credit the account.
            ProcessingCode::REFUND | 28 => {
                if amount == 0 {
                    return self.answer(request, ResponseCode::INVALID_AMOUNT);
                }
                if !repeat_of_live() {
                    if account.credit(amount).is_err() {
                        return self.answer(request, ResponseCode::INVALID_AMOUNT);
                    }
                    self.place_hold(id, -amount, keys);
                }
                self.answer(request, ResponseCode::APPROVED)
            }
            30 | 31 => {
                let mut decision = self.answer(request, ResponseCode::APPROVED);
                if let Decision::Respond { response, .. } = &mut decision {
                    let field54 = additional_amount(account.currency, account.balance());
                    response.set(54, field54).expect("54 is a data field");
                }
                decision
            }
            // Account verification (an 0100 of zero): approve, hold nothing.
            // A financial 0200 of zero falls through to 13 below.
            ProcessingCode::PURCHASE if amount == 0 && request.mti().class() == 1 => {
                self.answer(request, ResponseCode::APPROVED)
            }
            ProcessingCode::PURCHASE | ProcessingCode::CASH | 9 => {
                if amount == 0 {
                    return self.answer(request, ResponseCode::INVALID_AMOUNT);
                }
                if !repeat_of_live() {
                    if account.debit(amount).is_err() {
                        return self.answer(request, ResponseCode::INSUFFICIENT_FUNDS);
                    }
                    self.place_hold(id, amount, keys);
                }
                self.answer(request, ResponseCode::APPROVED)
            }
            // Prepaid activation (72): the card on file becomes usable.
            72 => self.answer(request, ResponseCode::APPROVED),
            _ => self.answer(request, ResponseCode::INVALID_TRANSACTION),
        }
    }

    fn place_hold(&self, account: accounts::AccountId, amount: i64, keys: HoldKeys) {
        // Without a STAN no reversal could find it; the balance change stands.
        if !keys.is_empty() {
            self.holds.place(account, amount, keys);
        }
    }

    fn reverse(&self, request: &Message, ruled: Option<Action>) -> (Decision, ReversalOutcome) {
        self.counters
            .reversals_received
            .fetch_add(1, Ordering::Relaxed);
        let original = request.original_data().ok();
        let mut record = ReversalRecord {
            mti: request.mti(),
            original_stan: original.map(|o| o.stan).or_else(|| request.stan().ok()),
            masked_pan: request.get_str(2).map(mask_pan),
            amount: request.amount().ok().map(|a| a.0),
            outcome: ReversalOutcome::ByRule,
        };
        if let Some(action) = ruled {
            self.reversals.push(record);
            let decision = self.act(request, action, &REVERSAL_ECHO_FIELDS, false);
            return (decision, ReversalOutcome::ByRule);
        }
        let terminal = request.get(41).unwrap_or_default();
        let keys = match original {
            Some(original) => {
                let stan = original.stan.to_digits();
                HoldKeys {
                    transmission: TransmissionKey::new(
                        &stan,
                        original.transmission_time.as_bytes(),
                        terminal,
                    ),
                    terminal: TerminalKey::new(&stan, terminal),
                }
            }
            None => HoldKeys {
                transmission: None,
                terminal: TerminalKey::new(request.get(11).unwrap_or_default(), terminal),
            },
        };
        let (outcome, counter) = match self.holds.release(&keys) {
            Release::Released { account, amount } => {
                if self.accounts.get(account).credit(amount).is_err() {
                    tracing::warn!(
                        stan = ?record.original_stan,
                        "reversal would overflow the account balance; not credited"
                    );
                }
                record.amount = record.amount.or(Some(amount.unsigned_abs()));
                (ReversalOutcome::Released, &self.counters.reversals_matched)
            }
            Release::AlreadyReleased { amount } => {
                record.amount = record.amount.or(Some(amount.unsigned_abs()));
                (
                    ReversalOutcome::Duplicate,
                    &self.counters.reversals_duplicate,
                )
            }
            Release::NotFound => (
                ReversalOutcome::Unmatched,
                &self.counters.reversals_unmatched,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        record.outcome = outcome;
        self.reversals.push(record);
        let decision = self.act(request, APPROVE, &REVERSAL_ECHO_FIELDS, false);
        (decision, outcome)
    }

    fn network_management(&self, request: &Message) -> Decision {
        let code = match request.get(70) {
            // Sign-on, sign-off, echo.
            Some(b"001" | b"002" | b"301") => ResponseCode::APPROVED,
            Some(_) => ResponseCode::INVALID_TRANSACTION,
            None => ResponseCode::FORMAT_ERROR,
        };
        self.act(request, respond(code), &NETWORK_ECHO_FIELDS, false)
    }

    fn format_error(&self, request: &Message, error: &FieldError) -> Decision {
        // FieldError names the field and the expected shape, never the value.
        tracing::warn!(mti = %request.mti(), error = %error, "format error, answering 30");
        self.answer(request, ResponseCode::FORMAT_ERROR)
    }

    /// An authorization response with `code`.
    fn answer(&self, request: &Message, code: ResponseCode) -> Decision {
        self.act(request, respond(code), &ECHO_FIELDS, true)
    }

    /// Carries out `action`; `auth_code` puts field 38 on approvals.
    fn act(&self, request: &Message, action: Action, echo: &[u8], auth_code: bool) -> Decision {
        match action {
            Action::Respond { code, delay } => {
                let Some(mti) = request.mti().response() else {
                    return Decision::Drop;
                };
                let mut response = Message::new(mti);
                for &n in echo {
                    if let Some(value) = request.get(n) {
                        response.set(n, value).expect("echo fields are data fields");
                    }
                }
                if auth_code && code.is_approval() {
                    response
                        .set(38, self.next_auth_code())
                        .expect("38 is a data field");
                }
                response
                    .set(39, code.as_bytes())
                    .expect("39 is a data field");
                Decision::Respond { response, delay }
            }
            Action::Drop => Decision::Drop,
            Action::Close => Decision::Close,
        }
    }

    /// Six digits from a counter: unique among the last million approvals.
    fn next_auth_code(&self) -> [u8; 6] {
        let n = self.auth_codes.fetch_add(1, Ordering::Relaxed);
        Stan(n % 1_000_000).to_digits()
    }

    /// Counts so far.
    pub fn stats(&self) -> SimStats {
        self.counters.snapshot()
    }

    /// The last [`REVERSAL_LOG_CAPACITY`] reversals received, oldest first.
    pub fn reversals(&self) -> Vec<ReversalRecord> {
        self.reversals.list()
    }

    /// The last [`ADVICE_LOG_CAPACITY`] advices received, oldest first,
    /// repeats included (as [`AdviceOutcome::Duplicate`]).
    pub fn advices(&self) -> Vec<AdviceRecord> {
        self.advices.list()
    }

    /// The available balance of the configured account `pan`.
    pub fn balance(&self, pan: &str) -> Option<i64> {
        self.accounts.balance(pan)
    }

    /// Counts a frame that did not decode (the server calls this).
    pub(crate) fn count_undecodable(&self) {
        self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("isoswitch_simulator_decode_errors_total").increment(1);
    }
}

const APPROVE: Action = respond(ResponseCode::APPROVED);

const fn respond(code: ResponseCode) -> Action {
    Action::Respond { code, delay: None }
}

/// The keys a later reversal may use to find this request's hold.
fn hold_keys(request: &Message) -> HoldKeys {
    let stan = request.get(11).unwrap_or_default();
    let terminal = request.get(41).unwrap_or_default();
    HoldKeys {
        transmission: request
            .get(7)
            .and_then(|time| TransmissionKey::new(stan, time, terminal)),
        terminal: TerminalKey::new(stan, terminal),
    }
}

/// Field 54 (ISO 8583:1987) for the available balance: account type "00", amount
/// type "02", currency, C/D sign, 12 digits.
fn additional_amount(currency: [u8; 3], balance: i64) -> [u8; 20] {
    let mut out = *b"0002000C000000000000";
    out[4..7].copy_from_slice(&currency);
    if balance < 0 {
        out[7] = b'D';
    }
    // Twelve digits is the field's limit; larger balances show as all nines.
    let mut value = balance.unsigned_abs().min(999_999_999_999);
    for digit in out[8..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out
}

/// The current UTC year (two digits) and month, as field 14 counts them.
fn current_yymm() -> (u8, u8) {
    let now = time::OffsetDateTime::now_utc();
    (now.year().rem_euclid(100) as u8, u8::from(now.month()))
}

/// Response codes are two ASCII alphanumerics: 62 × 62 counter slots.
const CODE_SYMBOLS: usize = 62;
const CODE_SLOTS: usize = CODE_SYMBOLS * CODE_SYMBOLS;

fn symbol_index(byte: u8) -> Option<usize> {
    match byte {
        b'0'..=b'9' => Some(usize::from(byte - b'0')),
        b'A'..=b'Z' => Some(usize::from(byte - b'A') + 10),
        b'a'..=b'z' => Some(usize::from(byte - b'a') + 36),
        _ => None,
    }
}

fn symbol(index: usize) -> char {
    let byte = match index {
        0..=9 => b'0' + index as u8,
        10..=35 => b'A' + (index - 10) as u8,
        _ => b'a' + (index - 36) as u8,
    };
    char::from(byte)
}

fn code_slot(code: &[u8]) -> Option<usize> {
    match code {
        &[a, b] => Some(symbol_index(a)? * CODE_SYMBOLS + symbol_index(b)?),
        _ => None,
    }
}

fn slot_code(slot: usize) -> String {
    [symbol(slot / CODE_SYMBOLS), symbol(slot % CODE_SYMBOLS)]
        .into_iter()
        .collect()
}

/// Lock-free counters; the per-code metric handles are registered on first use
/// so the hot path never builds a label.
struct Counters {
    responses: Box<[AtomicU64]>,
    response_metrics: Box<[OnceLock<metrics::Counter>]>,
    drops: AtomicU64,
    closes: AtomicU64,
    reversals_received: AtomicU64,
    reversals_matched: AtomicU64,
    reversals_duplicate: AtomicU64,
    reversals_unmatched: AtomicU64,
    advices: AtomicU64,
    advices_duplicate: AtomicU64,
    undecodable: AtomicU64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            responses: (0..CODE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            response_metrics: (0..CODE_SLOTS).map(|_| OnceLock::new()).collect(),
            drops: AtomicU64::new(0),
            closes: AtomicU64::new(0),
            reversals_received: AtomicU64::new(0),
            reversals_matched: AtomicU64::new(0),
            reversals_duplicate: AtomicU64::new(0),
            reversals_unmatched: AtomicU64::new(0),
            advices: AtomicU64::new(0),
            advices_duplicate: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
        }
    }

    fn count(&self, decision: &Decision) {
        match decision {
            Decision::Respond { response, .. } => {
                let Some(slot) = response.get(39).and_then(code_slot) else {
                    return;
                };
                self.responses[slot].fetch_add(1, Ordering::Relaxed);
                self.response_metrics[slot]
                    .get_or_init(|| {
                        metrics::counter!(
                            "isoswitch_simulator_responses_total",
                            "response_code" => slot_code(slot)
                        )
                    })
                    .increment(1);
            }
            Decision::Drop => {
                self.drops.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("isoswitch_simulator_unanswered_total", "reason" => "drop")
                    .increment(1);
            }
            Decision::Close => {
                self.closes.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("isoswitch_simulator_unanswered_total", "reason" => "close")
                    .increment(1);
            }
        }
    }

    fn snapshot(&self) -> SimStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SimStats {
            responses: self
                .responses
                .iter()
                .enumerate()
                .filter_map(|(slot, n)| match load(n) {
                    0 => None,
                    n => Some((slot_code(slot), n)),
                })
                .collect(),
            drops: load(&self.drops),
            closes: load(&self.closes),
            reversals_received: load(&self.reversals_received),
            reversals_matched: load(&self.reversals_matched),
            reversals_duplicate: load(&self.reversals_duplicate),
            reversals_unmatched: load(&self.reversals_unmatched),
            advices: load(&self.advices),
            advices_duplicate: load(&self.advices_duplicate),
            undecodable: load(&self.undecodable),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CONFIG: &str = r#"
        default_response = "00"

        [[rule]]
        pan_prefix = "4000000000000002"
        respond = "05"

        [[rule]]
        amount_min = 99900
        amount_max = 99999
        respond = "drop"

        [[rule]]
        fields = { 41 = "CLOSE001" }
        respond = "close"

        [[rule]]
        fields = { 41 = "SLOW0001" }
        respond = "00"
        delay_ms = 1500

        [[account]]
        pan = "4111111111111111"
        balance = 100000
        currency = "978"
        expiry = "9912"

        [[account]]
        pan = "5500000000000004"
        balance = 2500
        status = "blocked"
        expiry = "9912"

        [[account]]
        pan = "4222222222222220"
        balance = 2500
        expiry = "2001"

        [[account]]
        pan = "4333333333333333"
        balance = -250
        expiry = "9912"
    "#;

    const CARD: &str = "4111111111111111";

    fn simulator(text: &str) -> Simulator {
        let config: SimulatorConfig = toml::from_str(text).expect("valid simulator config");
        Simulator::new(&config).expect("simulator builds")
    }

    fn message(mti: &str, fields: &[(u8, &str)]) -> Message {
        let mut message = Message::new(mti.parse().expect("valid MTI"));
        for (n, v) in fields {
            message.set(*n, v).expect("data field");
        }
        message
    }

    /// A purchase of `amount` minor units on `pan` from terminal TERM0001.
    fn purchase(pan: &str, amount: u64, stan: u32) -> Message {
        let amount = format!("{amount:012}");
        let stan = format!("{stan:06}");
        message(
            "0200",
            &[
                (2, pan),
                (3, "000000"),
                (4, &amount),
                (7, "0102030405"),
                (11, &stan),
                (41, "TERM0001"),
                (49, "978"),
            ],
        )
    }

    fn respond(decision: Decision) -> (Message, Option<Duration>) {
        match decision {
            Decision::Respond { response, delay } => (response, delay),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    fn code_of(decision: Decision) -> String {
        let (response, _) = respond(decision);
        response.get_str(39).expect("field 39").to_owned()
    }

    #[test]
    fn approval_carries_a_six_character_auth_code_and_echoes_the_request() {
        let sim = simulator(CONFIG);
        let mut request = purchase(CARD, 1000, 1);
        request.set(14, "9912").expect("data field");
        request.set(52, [0u8; 8]).expect("data field");
        let (response, delay) = respond(sim.decide(&request));
        assert_eq!(response.mti(), Mti::from_static("0210"));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(response.get(38).map(<[u8]>::len), Some(6));
        assert_eq!(delay, None);
        for n in [2, 3, 4, 7, 11, 41, 49] {
            assert_eq!(response.get(n), request.get(n), "field {n}");
        }
        assert!(
            !response.has(14) && !response.has(52),
            "secrets are not echoed"
        );
        let (second, _) = respond(sim.decide(&purchase(CARD, 1000, 2)));
        assert_ne!(second.get(38), response.get(38), "auth codes differ");
        assert_eq!(sim.balance(CARD), Some(98_000));
    }

    #[test]
    fn rule_declines_with_its_code_and_no_auth_code() {
        let sim = simulator(CONFIG);
        let (response, _) = respond(sim.decide(&purchase("4000000000000002", 100, 1)));
        assert_eq!(response.get_str(39), Some("05"));
        assert!(!response.has(38));
        assert_eq!(sim.stats().responses.get("05"), Some(&1));
    }

    #[test]
    fn rule_drops_amounts_in_its_range_inclusive() {
        let sim = simulator(CONFIG);
        assert_eq!(sim.decide(&purchase(CARD, 99_900, 1)), Decision::Drop);
        assert_eq!(sim.decide(&purchase(CARD, 99_999, 2)), Decision::Drop);
        assert_eq!(code_of(sim.decide(&purchase(CARD, 99_899, 3))), "00");
        assert_eq!(sim.stats().drops, 2);
    }

    #[test]
    fn rule_closes_the_connection() {
        let sim = simulator(CONFIG);
        let mut request = purchase(CARD, 100, 1);
        request.set(41, "CLOSE001").expect("data field");
        assert_eq!(sim.decide(&request), Decision::Close);
        assert_eq!(sim.stats().closes, 1);
        assert_eq!(sim.balance(CARD), Some(100_000), "nothing held");
    }

    #[test]
    fn rule_delay_is_carried_on_the_decision() {
        let sim = simulator(CONFIG);
        let mut request = purchase(CARD, 100, 1);
        request.set(41, "SLOW0001").expect("data field");
        let (response, delay) = respond(sim.decide(&request));
        assert_eq!(delay, Some(Duration::from_millis(1500)));
        assert_eq!(response.get_str(39), Some("00"));
        assert!(response.has(38), "a rule approval has an auth code too");
    }

    #[test]
    fn repeat_request_matches_a_rule_on_the_original_mti() {
        let sim = simulator(
            r#"
            [[rule]]
            mti = "0100"
            respond = "57"
            "#,
        );
        let repeat = message("0101", &[(2, CARD), (3, "000000"), (4, "000000000100")]);
        let (response, _) = respond(sim.decide(&repeat));
        assert_eq!(response.mti(), Mti::from_static("0110"));
        assert_eq!(response.get_str(39), Some("57"));
    }

    #[test]
    fn amount_above_the_available_balance_is_declined_51() {
        let sim = simulator(CONFIG);
        assert_eq!(code_of(sim.decide(&purchase(CARD, 100_001, 1))), "51");
        assert_eq!(code_of(sim.decide(&purchase(CARD, 100_000, 2))), "00");
        assert_eq!(code_of(sim.decide(&purchase(CARD, 1, 3))), "51");
        assert_eq!(sim.balance(CARD), Some(0));
        let overdrawn = "4333333333333333";
        assert_eq!(code_of(sim.decide(&purchase(overdrawn, 1, 4))), "51");
    }

    #[test]
    fn expired_card_is_declined_54_by_account_or_field_14() {
        let sim = simulator(CONFIG);
        assert_eq!(
            code_of(sim.decide(&purchase("4222222222222220", 100, 1))),
            "54"
        );
        let mut request = purchase(CARD, 100, 2);
        request.set(14, "2001").expect("data field");
        assert_eq!(code_of(sim.decide(&request)), "54");
        request.set(14, "2013").expect("data field");
        assert_eq!(code_of(sim.decide(&request)), "30", "month 13");
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn blocked_account_is_declined_62() {
        let sim = simulator(CONFIG);
        assert_eq!(
            code_of(sim.decide(&purchase("5500000000000004", 100, 1))),
            "62"
        );
        assert_eq!(sim.balance("5500000000000004"), Some(2500));
    }

    #[test]
    fn missing_pan_or_bad_amount_is_a_format_error() {
        let sim = simulator(CONFIG);
        let mut no_pan = purchase(CARD, 100, 1);
        no_pan.remove(2);
        assert_eq!(code_of(sim.decide(&no_pan)), "30");
        let mut bad_amount = purchase(CARD, 100, 2);
        bad_amount.set(4, "00000000x100").expect("data field");
        assert_eq!(code_of(sim.decide(&bad_amount)), "30");
        let mut huge = purchase(CARD, 100, 3);
        huge.set(4, "9999999999999999999").expect("data field");
        assert_eq!(code_of(sim.decide(&huge)), "30");
        let mut no_amount = purchase(CARD, 100, 4);
        no_amount.remove(4);
        assert_eq!(code_of(sim.decide(&no_amount)), "30");
        let mut short_pan = purchase(CARD, 100, 5);
        short_pan.set(2, "41111").expect("data field");
        assert_eq!(code_of(sim.decide(&short_pan)), "30");
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn unsupported_mti_gets_12_and_an_unsolicited_response_is_dropped() {
        let sim = simulator(CONFIG);
        let (response, _) = respond(sim.decide(&message("0300", &[(11, "000001")])));
        assert_eq!(response.mti(), Mti::from_static("0310"));
        assert_eq!(response.get_str(39), Some("12"));
        assert_eq!(response.get_str(11), Some("000001"));
        assert_eq!(code_of(sim.decide(&message("1100", &[]))), "12");
        assert_eq!(sim.decide(&message("0110", &[(39, "00")])), Decision::Drop);
        let unknown_type = message("0200", &[(2, CARD), (3, "400000"), (4, "000000000100")]);
        assert_eq!(code_of(sim.decide(&unknown_type)), "12");
    }

    #[test]
    fn unknown_card_gets_the_default_response() {
        let sim = simulator(
            &format!("default_response = \"14\"\n{CONFIG}")
                .replace("        default_response = \"00\"\n", ""),
        );
        let (response, _) = respond(sim.decide(&purchase("6011000000000004", 100, 1)));
        assert_eq!(response.get_str(39), Some("14"));
        assert!(!response.has(38));
        let approving = simulator(CONFIG);
        let (response, _) = respond(approving.decide(&purchase("6011000000000004", 100, 1)));
        assert_eq!(response.get_str(39), Some("00"));
        assert!(response.has(38));
        let dropping = simulator("default_response = \"drop\"");
        assert_eq!(
            dropping.decide(&purchase("6011000000000004", 100, 1)),
            Decision::Drop
        );
    }

    #[test]
    fn refund_credits_the_balance() {
        let sim = simulator(CONFIG);
        let mut refund = purchase(CARD, 2_500, 1);
        refund.set(3, "200000").expect("data field");
        assert_eq!(code_of(sim.decide(&refund)), "00");
        assert_eq!(sim.balance(CARD), Some(102_500));
        refund.set(4, "000000000000").expect("data field");
        assert_eq!(code_of(sim.decide(&refund)), "13");
    }

    #[test]
    fn balance_inquiry_answers_the_available_balance_in_field_54() {
        let sim = simulator(CONFIG);
        let inquiry = message(
            "0100",
            &[(2, CARD), (3, "310000"), (11, "000001"), (41, "TERM0001")],
        );
        let (response, _) = respond(sim.decide(&inquiry));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(response.get_str(54), Some("0002978C000000100000"));
        let overdrawn = message("0100", &[(2, "4333333333333333"), (3, "310000")]);
        let (response, _) = respond(sim.decide(&overdrawn));
        assert_eq!(response.get_str(54), Some("0002840D000000000250"));
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn zero_amount_purchase_is_an_approved_verification_without_a_hold() {
        let sim = simulator(CONFIG);
        let verification = message(
            "0100",
            &[
                (2, CARD),
                (3, "000000"),
                (4, "000000000000"),
                (11, "000001"),
            ],
        );
        let (response, _) = respond(sim.decide(&verification));
        assert_eq!(response.get_str(39), Some("00"));
        assert!(response.has(38));
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn repeat_of_an_approved_request_is_not_held_twice() {
        let sim = simulator(CONFIG);
        let original = purchase(CARD, 700, 1);
        assert_eq!(code_of(sim.decide(&original)), "00");
        let mut repeat = original.clone();
        repeat.set_mti(Mti::from_static("0201"));
        assert_eq!(code_of(sim.decide(&repeat)), "00");
        assert_eq!(sim.balance(CARD), Some(99_300));
    }

    fn reversal_by_field_90(stan: &str) -> Message {
        let original = format!("0200{stan}01020304050000000000000000000000");
        message(
            "0400",
            &[
                (2, CARD),
                (4, "000000001000"),
                (11, "000999"),
                (41, "TERM0001"),
                (90, &original),
            ],
        )
    }

    #[test]
    fn reversal_releases_the_hold_exactly_once() {
        let sim = simulator(CONFIG);
        assert_eq!(code_of(sim.decide(&purchase(CARD, 1000, 42))), "00");
        assert_eq!(sim.balance(CARD), Some(99_000));
        let reversal = reversal_by_field_90("000042");
        let (response, _) = respond(sim.decide(&reversal));
        assert_eq!(response.mti(), Mti::from_static("0410"));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(response.get(90), reversal.get(90));
        assert!(!response.has(38));
        assert_eq!(sim.balance(CARD), Some(100_000));

        let mut repeat = reversal.clone();
        repeat.set_mti(Mti::from_static("0401"));
        assert_eq!(code_of(sim.decide(&repeat)), "00");
        assert_eq!(sim.balance(CARD), Some(100_000), "released only once");

        let records = sim.reversals();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].outcome, ReversalOutcome::Released);
        assert_eq!(records[0].original_stan, Some(Stan(42)));
        assert_eq!(records[0].masked_pan.as_deref(), Some("411111******1111"));
        assert_eq!(records[0].amount, Some(1000));
        assert_eq!(records[1].outcome, ReversalOutcome::Duplicate);
        let stats = sim.stats();
        assert_eq!(
            (
                stats.reversals_received,
                stats.reversals_matched,
                stats.reversals_duplicate,
                stats.reversals_unmatched
            ),
            (2, 1, 1, 0)
        );
    }

    #[test]
    fn reversal_without_field_90_finds_the_hold_by_stan_and_terminal() {
        let sim = simulator(CONFIG);
        assert_eq!(code_of(sim.decide(&purchase(CARD, 1000, 7))), "00");
        let advice = message("0420", &[(2, CARD), (11, "000007"), (41, "TERM0001")]);
        let (response, _) = respond(sim.decide(&advice));
        assert_eq!(response.mti(), Mti::from_static("0430"));
        assert_eq!(response.get_str(39), Some("00"));
        assert_eq!(sim.balance(CARD), Some(100_000));
        let records = sim.reversals();
        assert!(records[0].matched());
        assert_eq!(records[0].amount, Some(1000), "the hold's amount");
    }

    #[test]
    fn reversal_of_a_refund_takes_the_credit_back() {
        let sim = simulator(CONFIG);
        let mut refund = purchase(CARD, 500, 3);
        refund.set(3, "200000").expect("data field");
        assert_eq!(code_of(sim.decide(&refund)), "00");
        assert_eq!(sim.balance(CARD), Some(100_500));
        assert_eq!(code_of(sim.decide(&reversal_by_field_90("000003"))), "00");
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn unmatched_reversal_is_acknowledged_and_recorded() {
        let sim = simulator(CONFIG);
        assert_eq!(code_of(sim.decide(&reversal_by_field_90("123456"))), "00");
        let records = sim.reversals();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].outcome, ReversalOutcome::Unmatched);
        assert!(!records[0].matched());
        assert_eq!(records[0].original_stan, Some(Stan(123456)));
        assert_eq!(sim.stats().reversals_unmatched, 1);
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn reversal_rule_drops_without_releasing() {
        let sim = simulator(&format!(
            "[[rule]]\nmti = \"0400\"\nrespond = \"drop\"\n{}",
            CONFIG.replace("        default_response = \"00\"\n", "")
        ));
        assert_eq!(code_of(sim.decide(&purchase(CARD, 1000, 42))), "00");
        assert_eq!(sim.decide(&reversal_by_field_90("000042")), Decision::Drop);
        assert_eq!(sim.balance(CARD), Some(99_000));
        assert_eq!(sim.reversals()[0].outcome, ReversalOutcome::ByRule);
        let mut repeat = reversal_by_field_90("000042");
        repeat.set_mti(Mti::from_static("0421"));
        assert_eq!(code_of(sim.decide(&repeat)), "00", "0420 is not named");
        assert_eq!(sim.balance(CARD), Some(100_000));
    }

    #[test]
    fn advice_is_acknowledged_with_its_identity_and_counted() {
        let sim = simulator(CONFIG);
        let advice = message(
            "0220",
            &[
                (2, CARD),
                (3, "000000"),
                (4, "000000000100"),
                (7, "1207181500"),
                (11, "000005"),
                (37, "634218000005"),
                (38, "A1B2C3"),
                (39, "00"),
                (41, "TERM0001"),
            ],
        );
        let (response, _) = respond(sim.decide(&advice));
        assert_eq!(response.mti(), Mti::from_static("0230"));
        assert_eq!(response.get_str(39), Some("00"));
        for n in [2, 3, 4, 7, 11, 37, 41] {
            assert_eq!(response.get(n), advice.get(n), "field {n} echoed");
        }
        assert!(!response.has(38), "the simulator approves nothing new");
        assert_eq!(
            code_of(sim.decide(&message("0121", &[(11, "000006")]))),
            "00"
        );
        assert_eq!(sim.stats().advices, 2);
        assert_eq!(sim.balance(CARD), Some(100_000));
        let records = sim.advices();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            AdviceRecord {
                mti: Mti::from_static("0220"),
                stan: Some(Stan(5)),
                masked_pan: Some("411111******1111".to_owned()),
                amount: Some(100),
                auth_code: Some("A1B2C3".to_owned()),
                response_code: Some("00".to_owned()),
                outcome: AdviceOutcome::Received,
            }
        );
        assert_eq!(records[1].mti, Mti::from_static("0121"));
        assert_eq!(records[1].masked_pan, None);
    }

    #[test]
    fn repeated_advice_is_answered_again_and_logged_as_a_duplicate() {
        let sim = simulator(CONFIG);
        let advice = message(
            "0120",
            &[
                (2, CARD),
                (4, "000000000100"),
                (7, "1207181500"),
                (11, "000005"),
                (41, "TERM0001"),
            ],
        );
        assert_eq!(code_of(sim.decide(&advice)), "00");
        let mut repeat = advice.clone();
        repeat.set_mti(Mti::from_static("0121"));
        for _ in 0..2 {
            let (response, _) = respond(sim.decide(&repeat));
            assert_eq!(response.mti(), Mti::from_static("0130"));
            assert_eq!(response.get_str(39), Some("00"));
            assert_eq!(response.get_str(11), Some("000005"));
        }
        let outcomes: Vec<_> = sim.advices().iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                AdviceOutcome::Received,
                AdviceOutcome::Duplicate,
                AdviceOutcome::Duplicate
            ]
        );
        let stats = sim.stats();
        assert_eq!((stats.advices, stats.advices_duplicate), (3, 2));
    }

    #[test]
    fn decide_with_effect_names_the_reversal_and_advice_outcomes() {
        let sim = simulator(CONFIG);
        let (_, effect) = sim.decide_with_effect(&purchase(CARD, 1000, 42));
        assert_eq!(effect, Effect::None);
        let (_, effect) = sim.decide_with_effect(&reversal_by_field_90("000042"));
        assert_eq!(effect, Effect::Reversal(ReversalOutcome::Released));
        let (_, effect) = sim.decide_with_effect(&reversal_by_field_90("000042"));
        assert_eq!(effect, Effect::Reversal(ReversalOutcome::Duplicate));
        let (_, effect) = sim.decide_with_effect(&message("0120", &[(37, "634218000009")]));
        assert_eq!(effect, Effect::Advice(AdviceOutcome::Received));
    }

    #[test]
    fn network_management_echo_sign_on_and_sign_off_are_approved() {
        let sim = simulator(CONFIG);
        for code in ["001", "002", "301"] {
            let request = message(
                "0800",
                &[
                    (7, "0102030405"),
                    (11, "000077"),
                    (70, code),
                    (41, "TERM0001"),
                ],
            );
            let (response, _) = respond(sim.decide(&request));
            assert_eq!(response.mti(), Mti::from_static("0810"));
            let fields: Vec<u8> = response.iter().map(|(n, _)| n).collect();
            assert_eq!(fields, vec![7, 11, 39, 70], "{code}");
            assert_eq!(response.get_str(39), Some("00"));
            assert_eq!(response.get_str(70), Some(code));
        }
        assert_eq!(code_of(sim.decide(&message("0800", &[(70, "999")]))), "12");
        assert_eq!(code_of(sim.decide(&message("0800", &[]))), "30");
        assert_eq!(sim.stats().responses.get("00"), Some(&3));
    }

    #[test]
    fn stats_count_responses_by_code() {
        let sim = simulator(CONFIG);
        sim.decide(&purchase(CARD, 100, 1));
        sim.decide(&purchase(CARD, 100, 2));
        sim.decide(&purchase("4000000000000002", 100, 3));
        sim.decide(&message("0300", &[]));
        let stats = sim.stats();
        let expected: BTreeMap<String, u64> = [("00", 2), ("05", 1), ("12", 1)]
            .map(|(c, n)| (c.to_owned(), n))
            .into();
        assert_eq!(stats.responses, expected);
    }

    #[test]
    fn response_code_slots_cover_every_alphanumeric_code() {
        for code in ["00", "Z9", "zz", "a0", "N7"] {
            let slot = code_slot(code.as_bytes()).expect("alphanumeric");
            assert!(slot < CODE_SLOTS);
            assert_eq!(slot_code(slot), code);
        }
        assert_eq!(code_slot(b"0-"), None);
        assert_eq!(code_slot(b"000"), None);
    }

    #[test]
    fn invalid_default_response_is_refused() {
        let mut config: SimulatorConfig = toml::from_str("").expect("defaults");
        config.default_response = config::SimResponse::Code("0!".to_owned());
        let err = Simulator::new(&config).expect_err("not alphanumeric");
        assert!(err.to_string().contains("default_response"), "{err}");
    }

    #[test]
    fn concurrent_holds_and_reversals_leave_an_exact_balance() {
        let sim = simulator(CONFIG);
        const THREADS: u32 = 8;
        const PER_THREAD: u32 = 400;
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let sim = &sim;
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let stan = thread * PER_THREAD + i + 1;
                        let request = purchase(CARD, u64::from(i % 7 + 1), stan);
                        assert_eq!(code_of(sim.decide(&request)), "00");
                        // Reverse every even STAN, twice: the duplicate must not credit.
                        if stan % 2 == 0 {
                            let reversal = reversal_by_field_90(&format!("{stan:06}"));
                            sim.decide(&reversal);
                            sim.decide(&reversal);
                        }
                    }
                });
            }
        });
        let kept: i64 = (0..THREADS)
            .flat_map(|thread| (0..PER_THREAD).map(move |i| (thread * PER_THREAD + i + 1, i)))
            .filter(|(stan, _)| stan % 2 == 1)
            .map(|(_, i)| i64::from(i % 7 + 1))
            .sum();
        assert_eq!(sim.balance(CARD), Some(100_000 - kept));
        let stats = sim.stats();
        let reversed = u64::from(THREADS * PER_THREAD / 2);
        assert_eq!(stats.reversals_matched, reversed);
        assert_eq!(stats.reversals_duplicate, reversed);
        assert_eq!(stats.reversals_unmatched, 0);
    }
}
