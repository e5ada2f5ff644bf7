//! The payment engine: an operator's request becomes a real ISO 8583 message
//! on the `virtual-terminal` channel and goes through `Switch::answer`, the
//! same entry point a terminal's message takes (checks, risk, routing, the
//! issuer, the journal). A cancel is a 0400 through the same path, a refund a
//! 0200 with processing code 20 naming its sale by RRN, a shift close a 0500
//! carrying the journal's own totals. Writes with an idempotency key run once.
//!
//! Fields the virtual terminal sends (ISO 8583:1987):
//! - 22 POS entry mode `012`: PAN keyed by hand (01), no PIN capability (2).
//! - 25 POS condition code `08` (mail/telephone order) for mail, telephone
//!   and recurring payments, `00` for other card-not-present payments.
//! - 48 additional data, private: the CVV2 as `C2`, its length (2 digits)
//!   and the digits (`C203123`). Sent upstream only: field 48 is not in the
//!   journal's kept fields, and nothing here logs a request.
//! - 60 card-not-present indicator, private: `MO` mail order, `TO`
//!   telephone order, `RC` the cardholder-initiated first payment of a
//!   recurring series, `RM` a merchant-initiated recurring charge, `OT`
//!   other. The `recurring` risk rule reads `RM` in it (mit_field = 60).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::advice::advice_for;
use super::payment::{format_amount, mask_pan, PaymentKind, PaymentRequest, Reason};
use crate::channel::Channel;
use crate::iso8583::{Message, Mti};
use crate::journal::{
    now_ms, IdempotencyStore, JournalError, ShiftTotals, TimeRange, TxnId, TxnQuery, TxnRecord,
};
use crate::switch::reconcile::net_amount_field;
use crate::switch::{Inbound, Switch};
use crate::vt_config::OperatorConfig;

/// Field 22: manual key entry, no PIN capability.
pub const ENTRY_MODE: &str = "012";
/// Field 25 for mail/telephone order.
pub const MAIL_TELEPHONE_ORDER: &str = "08";
/// Field 60 of a merchant-initiated recurring charge.
pub const MERCHANT_INITIATED: &str = "RM";
/// The listener name the switch's logs, metrics and journal show.
pub const LISTENER: &str = "virtual-terminal";

/// What an engine call answers: the outcome of one message through the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    /// The journal's transaction id (the operations list and receipts use it).
    pub id: Option<i64>,
    /// `approved`, `declined`, `cancelled` or `closed`.
    pub status: String,
    pub response_code: String,
    pub auth_code: Option<String>,
    pub rrn: Option<String>,
    /// What the code means.
    pub message: String,
    pub advice: AdviceView,
    #[serde(rename = "type")]
    pub kind: String,
    pub card: Option<String>,
    pub amount: Option<String>,
}

/// [`super::advice::Advice`] as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceView {
    pub reason: String,
    pub tell_customer: String,
    pub retry: String,
}

impl AdviceView {
    pub fn of(code: &str) -> AdviceView {
        let advice = advice_for(code);
        AdviceView {
            reason: advice.reason.to_owned(),
            tell_customer: advice.tell_customer.to_owned(),
            retry: advice.retry.as_str().to_owned(),
        }
    }
}

/// Why the engine could not do what was asked (not a decline: a decline is
/// a [`PaymentResult`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no payment {0} on this terminal")]
    NotFound(i64),
    /// A field of the request names nothing usable (a 400 naming it).
    #[error(transparent)]
    Input(#[from] super::payment::InputError),
    /// Refunds and the shift close: an operator's role does not allow them.
    #[error("{0}")]
    SupervisorOnly(&'static str),
    /// Not possible for this payment (not approved, already cancelled, ...).
    #[error("{0}")]
    NotAllowed(String),
    #[error("the switch gave no answer")]
    NoAnswer,
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// One row of today's operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    pub id: i64,
    pub received_at_ms: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub card: Option<String>,
    pub amount: Option<i64>,
    pub amount_text: String,
    pub currency: Option<u16>,
    pub status: String,
    pub response_code: Option<String>,
    pub auth_code: Option<String>,
    pub rrn: Option<String>,
    pub terminal: Option<String>,
    pub merchant: Option<String>,
    pub cancelled: bool,
    /// An approved sale that stands and is not cancelled.
    pub refundable: bool,
    /// Approved, standing, not yet cancelled (the switch refuses one in a closed shift).
    pub cancellable: bool,
}

/// A shift close's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftCloseResult {
    pub batch: String,
    /// The shift's currency (numeric), when all its transactions had one.
    pub currency: Option<u16>,
    pub response_code: String,
    pub status: String,
    pub message: String,
    pub totals: ShiftTotals,
}

/// The engine: one per virtual terminal, shared by its sessions.
pub struct Engine {
    switch: Arc<Switch>,
    inbound: Inbound,
    stan: AtomicU32,
    idempotency: Arc<dyn IdempotencyStore>,
    /// Writes in progress by (scope, key): a double click waits for the
    /// first and gets its result.
    in_progress: DashMap<(String, String), Arc<Mutex<()>>>,
    mcc: String,
}

impl Engine {
    pub fn new(switch: Arc<Switch>, idempotency: Arc<dyn IdempotencyStore>, mcc: &str) -> Engine {
        // Clock-derived (a hundred a second), so a restart does not repeat
        // the STANs the last run used just before it.
        let seed = u32::try_from((now_ms() / 10) % 999_000).unwrap_or(0);
        Engine {
            switch,
            inbound: Inbound::new(LISTENER, Channel::VirtualTerminal),
            stan: AtomicU32::new(seed),
            idempotency,
            in_progress: DashMap::new(),
            mcc: mcc.to_owned(),
        }
    }

    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    fn next_stan(&self) -> String {
        let n = self.stan.fetch_add(1, Ordering::Relaxed) % 999_999 + 1;
        format!("{n:06}")
    }

    /// Runs `work` once per (terminal, key): a repeat gets the first result,
    /// also after a restart when the store keeps keys.
    async fn once<T, F>(
        &self,
        operator: &OperatorConfig,
        key: Option<&str>,
        work: F,
    ) -> Result<T, EngineError>
    where
        T: Serialize + for<'de> Deserialize<'de>,
        F: std::future::Future<Output = Result<T, EngineError>>,
    {
        let Some(key) = key else {
            return work.await;
        };
        let slot = (operator.terminal.clone(), key.to_owned());
        let lock = self.in_progress.entry(slot.clone()).or_default().clone();
        let guard = lock.lock().await;
        let result = self.once_locked(&slot, work).await;
        drop(guard);
        self.in_progress
            .remove_if(&slot, |_, lock| Arc::strong_count(lock) == 2);
        result
    }

    async fn once_locked<T, F>(&self, slot: &(String, String), work: F) -> Result<T, EngineError>
    where
        T: Serialize + for<'de> Deserialize<'de>,
        F: std::future::Future<Output = Result<T, EngineError>>,
    {
        let (scope, key) = slot;
        if let Some(stored) = self.idempotency.recall(scope, key).await? {
            if let Ok(first) = serde_json::from_str(&stored) {
                return Ok(first);
            }
        }
        let result = work.await?;
        if let Ok(text) = serde_json::to_string(&result) {
            self.idempotency.remember(scope, key, &text).await?;
        }
        Ok(result)
    }

    /// Takes a payment (any [`PaymentKind`]); refunds are for supervisors.
    pub async fn pay(
        &self,
        operator: &OperatorConfig,
        request: &PaymentRequest,
        key: Option<&str>,
    ) -> Result<PaymentResult, EngineError> {
        if request.kind == PaymentKind::Refund && !is_supervisor(operator) {
            return Err(EngineError::SupervisorOnly("refunds need a supervisor"));
        }
        self.once(operator, key, self.pay_now(operator, request, None))
            .await
    }

    /// A STAN for a charge whose caller must know it before it is sent (a
    /// recurring charge records it first, to find the charge after a crash).
    pub fn reserve_stan(&self) -> String {
        self.next_stan()
    }

    /// A merchant-initiated charge of a card on file (field 60 `RM`) under
    /// `key` and the `stan` reserved at `reserved_at_ms`. Runs once per key;
    /// and when this terminal's journal has a transaction with that STAN
    /// received since it was reserved (a crash after sending, before the
    /// key's result was stored) its outcome is taken instead of charging again.
    pub async fn charge_merchant_initiated(
        &self,
        operator: &OperatorConfig,
        request: &PaymentRequest,
        key: &str,
        stan: &str,
        reserved_at_ms: i64,
    ) -> Result<PaymentResult, EngineError> {
        let work = async {
            if let Some(id) = self.journaled_id(operator, stan, reserved_at_ms).await? {
                let record = self.record(operator, id).await?;
                return Ok(result_of_record(&record));
            }
            self.pay_with_stan(operator, request, Some(MERCHANT_INITIATED), stan)
                .await
        };
        self.once(operator, Some(key), work).await
    }

    async fn pay_now(
        &self,
        operator: &OperatorConfig,
        request: &PaymentRequest,
        indicator: Option<&str>,
    ) -> Result<PaymentResult, EngineError> {
        let stan = self.next_stan();
        self.pay_with_stan(operator, request, indicator, &stan)
            .await
    }

    async fn pay_with_stan(
        &self,
        operator: &OperatorConfig,
        request: &PaymentRequest,
        indicator: Option<&str>,
        stan: &str,
    ) -> Result<PaymentResult, EngineError> {
        let stan = stan.to_owned();
        let sent_at_ms = now_ms();
        let message = self.payment_message(operator, request, &stan, indicator);
        let response = self.send(message).await?;
        let id = self.journaled_id(operator, &stan, sent_at_ms).await?;
        let amount = i64::try_from(request.amount).unwrap_or(i64::MAX);
        Ok(result_of(
            &response,
            id,
            request.kind.as_str(),
            Some(request.card.masked()),
            Some(format_amount(amount, Some(request.currency.numeric))),
        ))
    }

    /// The 0100/0200 for `request`.
    fn payment_message(
        &self,
        operator: &OperatorConfig,
        request: &PaymentRequest,
        stan: &str,
        indicator: Option<&str>,
    ) -> Message {
        let mut message = Message::new(Mti::from_static(request.kind.mti()));
        let mut set = |n: u8, v: &str| {
            // Every number below is a data field.
            let _ = message.set(n, v);
        };
        set(2, request.card.digits());
        set(3, request.kind.processing_code());
        set(4, &format!("{:012}", request.amount));
        self.stamp(&mut set, operator, stan);
        if let Some(expiry) = request.expiry {
            set(14, &expiry.yymm());
        }
        set(18, &self.mcc);
        set(22, ENTRY_MODE);
        let condition = match request.reason {
            Reason::Other => "00",
            _ => MAIL_TELEPHONE_ORDER,
        };
        set(25, condition);
        if let Some(cvv) = &request.cvv {
            set(48, &format!("C2{:02}{}", cvv.digits().len(), cvv.digits()));
        }
        set(49, &format!("{:03}", request.currency.numeric));
        let indicator = indicator.unwrap_or(match request.reason {
            Reason::MailOrder => "MO",
            Reason::TelephoneOrder => "TO",
            Reason::Recurring => "RC",
            Reason::Other => "OT",
        });
        set(60, indicator);
        if let Some(rrn) = &request.original_rrn {
            set(37, rrn);
        }
        message
    }

    /// Fields 7, 11, 12, 13, 41 and 42.
    fn stamp(&self, set: &mut impl FnMut(u8, &str), operator: &OperatorConfig, stan: &str) {
        let now = time::OffsetDateTime::now_utc();
        let (month, day) = (u8::from(now.month()), now.day());
        let (h, m, s) = (now.hour(), now.minute(), now.second());
        set(7, &format!("{month:02}{day:02}{h:02}{m:02}{s:02}"));
        set(11, stan);
        set(12, &format!("{h:02}{m:02}{s:02}"));
        set(13, &format!("{month:02}{day:02}"));
        set(41, &operator.terminal);
        set(42, &operator.merchant);
    }

    /// Through the switch, on a task of its own: a browser that goes away
    /// does not cut a payment off halfway.
    async fn send(&self, message: Message) -> Result<Message, EngineError> {
        let switch = self.switch.clone();
        let inbound = self.inbound.clone();
        let answer = tokio::spawn(async move { switch.answer(&inbound, message).await })
            .await
            .map_err(|_| EngineError::NoAnswer)?;
        // The answer reaches the operator through this process: nothing to
        // undo (a browser that went away finds it in today's operations).
        answer.map(|a| a.message).ok_or(EngineError::NoAnswer)
    }

    /// The journal id of this terminal's newest transaction with `stan`
    /// received since `since_ms` (STANs repeat: a restart may reuse them).
    async fn journaled_id(
        &self,
        operator: &OperatorConfig,
        stan: &str,
        since_ms: i64,
    ) -> Result<Option<i64>, EngineError> {
        let found = self
            .switch
            .stores()
            .journal
            .find(TxnQuery {
                terminal_stan: Some((operator.terminal.clone(), stan.to_owned())),
                range: TimeRange {
                    since_ms: Some(since_ms),
                    until_ms: None,
                },
                ..TxnQuery::default()
            })
            .await?;
        Ok(found
            .iter()
            .filter(|r| r.mti.class() != 4)
            .map(|r| r.id.0)
            .max())
    }

    /// The record `id` if it is this operator's terminal's.
    pub async fn record(
        &self,
        operator: &OperatorConfig,
        id: i64,
    ) -> Result<TxnRecord, EngineError> {
        let found = self
            .switch
            .stores()
            .journal
            .find(TxnQuery {
                terminal: Some(operator.terminal.clone()),
                after: Some(TxnId(id.saturating_sub(1))),
                limit: Some(1),
                ..TxnQuery::default()
            })
            .await?;
        found
            .into_iter()
            .find(|r| r.id.0 == id)
            .ok_or(EngineError::NotFound(id))
    }

    /// One operation of this terminal.
    pub async fn operation(
        &self,
        operator: &OperatorConfig,
        id: i64,
    ) -> Result<Operation, EngineError> {
        Ok(operation_of(&self.record(operator, id).await?))
    }

    /// This terminal's operations received in `range`, newest first.
    pub async fn operations(
        &self,
        operator: &OperatorConfig,
        range: TimeRange,
    ) -> Result<Vec<Operation>, EngineError> {
        let mut records = self
            .switch
            .stores()
            .journal
            .find(TxnQuery {
                terminal: Some(operator.terminal.clone()),
                range,
                ..TxnQuery::default()
            })
            .await?;
        records.retain(|r| matches!(r.mti.class(), 1 | 2));
        Ok(records.iter().rev().map(operation_of).collect())
    }

    /// Cancels an approved payment of this terminal: a 0400 through the
    /// switch, which marks it cancelled and queues the reversal to its issuer
    /// (12 when its shift is closed: then only a refund undoes it).
    pub async fn cancel(
        &self,
        operator: &OperatorConfig,
        id: i64,
        key: Option<&str>,
    ) -> Result<PaymentResult, EngineError> {
        self.once(operator, key, self.cancel_now(operator, id))
            .await
    }

    async fn cancel_now(
        &self,
        operator: &OperatorConfig,
        id: i64,
    ) -> Result<PaymentResult, EngineError> {
        let record = self.record(operator, id).await?;
        if !record.stands() || record.cancelled_at_ms.is_some() {
            return Err(EngineError::NotAllowed(format!(
                "payment {id} is not an approved payment that can be cancelled"
            )));
        }
        let fields = self
            .switch
            .stores()
            .journal
            .reversal_fields(record.id)
            .await?
            .ok_or_else(|| {
                EngineError::NotAllowed(format!("payment {id} never reached an issuer"))
            })?;
        let stan = record.terminal_stan.clone().unwrap_or_default();
        let mut reversal = Message::new(Mti::from_static("0400"));
        for n in [2, 3, 4, 7, 12, 13, 14, 18, 22, 42, 49] {
            if let Some(v) = fields.get(n) {
                let _ = reversal.set(n, v);
            }
        }
        let _ = reversal.set(11, &stan);
        let _ = reversal.set(41, &operator.terminal);
        let _ = reversal.set(42, &operator.merchant);
        if let Some(rrn) = record
            .terminal_rrn
            .as_ref()
            .or(record.upstream_rrn.as_ref())
        {
            let _ = reversal.set(37, rrn);
        }
        let sent_at = fields
            .get(7)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_else(|| "0".repeat(10));
        let original = format!(
            "{}{:0>6}{:0>10}{}",
            record.mti.as_str(),
            stan,
            sent_at,
            "0".repeat(22)
        );
        let _ = reversal.set(90, original);
        let response = self.send(reversal).await?;
        let mut result = result_of(
            &response,
            Some(id),
            "cancel",
            record.pan_masked.clone(),
            record.amount.map(|a| format_amount(a, record.currency)),
        );
        if result.status == "approved" {
            result.status = "cancelled".into();
            result.message = "cancelled: the reversal is on its way to the card's bank".into();
            result.auth_code = record.outcome.as_ref().and_then(|o| o.auth_code.clone());
        }
        Ok(result)
    }

    /// Refunds `amount` (all of it when None) of approved sale `id`; for
    /// supervisors. The switch checks it against the sale (card, merchant,
    /// currency, age, what earlier refunds left).
    pub async fn refund(
        &self,
        operator: &OperatorConfig,
        id: i64,
        amount: Option<u64>,
        key: Option<&str>,
    ) -> Result<PaymentResult, EngineError> {
        if !is_supervisor(operator) {
            return Err(EngineError::SupervisorOnly("refunds need a supervisor"));
        }
        self.once(operator, key, self.refund_now(operator, id, amount))
            .await
    }

    async fn refund_now(
        &self,
        operator: &OperatorConfig,
        id: i64,
        amount: Option<u64>,
    ) -> Result<PaymentResult, EngineError> {
        let record = self.record(operator, id).await?;
        let fields = self
            .switch
            .stores()
            .journal
            .reversal_fields(record.id)
            .await?
            .ok_or_else(|| {
                EngineError::NotAllowed(format!("payment {id} never reached an issuer"))
            })?;
        let rrn = record
            .terminal_rrn
            .clone()
            .or(record.upstream_rrn.clone())
            .ok_or_else(|| EngineError::NotAllowed(format!("payment {id} has no RRN")))?;
        let amount = amount
            .or_else(|| record.amount.and_then(|a| u64::try_from(a).ok()))
            .unwrap_or(0);
        let stan = self.next_stan();
        let sent_at_ms = now_ms();
        let mut refund = Message::new(Mti::from_static("0200"));
        let mut set = |n: u8, v: &[u8]| {
            let _ = refund.set(n, v);
        };
        for n in [2, 14, 49] {
            if let Some(v) = fields.get(n) {
                set(n, v);
            }
        }
        set(3, b"200000");
        set(4, format!("{amount:012}").as_bytes());
        set(18, self.mcc.as_bytes());
        set(22, ENTRY_MODE.as_bytes());
        set(25, MAIL_TELEPHONE_ORDER.as_bytes());
        set(37, rrn.as_bytes());
        set(60, b"OT");
        self.stamp(&mut |n, v| set(n, v.as_bytes()), operator, &stan);
        let response = self.send(refund).await?;
        let id = self.journaled_id(operator, &stan, sent_at_ms).await?;
        Ok(result_of(
            &response,
            id,
            "refund",
            record.pan_masked.clone(),
            Some(format_amount(
                i64::try_from(amount).unwrap_or(i64::MAX),
                record.currency,
            )),
        ))
    }

    /// Closes the shift of this terminal (supervisors): the journal's totals
    /// go in a 0500 through the switch, which compares and records the close.
    pub async fn close_shift(
        &self,
        operator: &OperatorConfig,
        key: Option<&str>,
    ) -> Result<ShiftCloseResult, EngineError> {
        if !is_supervisor(operator) {
            return Err(EngineError::SupervisorOnly(
                "closing the shift needs a supervisor",
            ));
        }
        self.once(operator, key, self.close_now(operator)).await
    }

    /// This terminal's open shift: its transactions since its last close.
    /// Its totals, the batch number its close will carry, and its currency
    /// when every transaction in it has the same one.
    pub async fn shift_totals(
        &self,
        operator: &OperatorConfig,
    ) -> Result<(ShiftTotals, String, Option<u16>), EngineError> {
        let journal = &self.switch.stores().journal;
        let last = journal.last_close(&operator.terminal, None).await?;
        let after = last.as_ref().map(|c| c.close.last_txn);
        let shift = journal
            .find(TxnQuery {
                terminal: Some(operator.terminal.clone()),
                after,
                ..TxnQuery::default()
            })
            .await?;
        let batch = last
            .and_then(|c| c.close.batch.parse::<u32>().ok())
            .map_or(1, |b| b % 999_999 + 1);
        let mut currencies = shift.iter().filter_map(|r| r.currency);
        let first = currencies.next();
        let currency = first.filter(|c| currencies.all(|other| other == *c));
        Ok((ShiftTotals::of(&shift), format!("{batch:06}"), currency))
    }

    async fn close_now(&self, operator: &OperatorConfig) -> Result<ShiftCloseResult, EngineError> {
        let (totals, batch, currency) = self.shift_totals(operator).await?;
        let mut close = Message::new(Mti::from_static("0500"));
        let mut set = |n: u8, v: String| {
            let _ = close.set(n, v);
        };
        let count = |n: u64| format!("{n:010}");
        let amount = |n: i64| format!("{:016}", n.max(0));
        set(74, count(totals.credits.count));
        set(75, count(totals.credit_reversals.count));
        set(76, count(totals.debits.count));
        set(77, count(totals.debit_reversals.count));
        set(86, amount(totals.credits.amount));
        set(87, amount(totals.credit_reversals.amount));
        set(88, amount(totals.debits.amount));
        set(89, amount(totals.debit_reversals.amount));
        set(97, net_amount_field(totals.net()));
        set(60, batch.clone());
        let stan = self.next_stan();
        self.stamp(&mut |n, v| set(n, v.to_owned()), operator, &stan);
        let response = self.send(close).await?;
        let code = response.get_str(39).unwrap_or("96").to_owned();
        let status = if code == "00" {
            "closed"
        } else {
            "out-of-balance"
        };
        Ok(ShiftCloseResult {
            batch,
            currency,
            message: crate::iso8583::ResponseCode::new(code_bytes(&code))
                .map_or("unknown code", |c| c.meaning())
                .to_owned(),
            response_code: code,
            status: status.into(),
            totals,
        })
    }
}

fn code_bytes(code: &str) -> [u8; 2] {
    match code.as_bytes() {
        [a, b] => [*a, *b],
        _ => *b"96",
    }
}

pub fn is_supervisor(operator: &OperatorConfig) -> bool {
    operator.role == crate::vt_config::Role::Supervisor
}

/// A response as the operator sees it.
fn result_of(
    response: &Message,
    id: Option<i64>,
    kind: &str,
    card: Option<String>,
    amount: Option<String>,
) -> PaymentResult {
    let code = response.get_str(39).unwrap_or("96").to_owned();
    let approved =
        crate::iso8583::ResponseCode::new(code_bytes(&code)).is_some_and(|c| c.is_approval());
    let meaning = crate::iso8583::ResponseCode::new(code_bytes(&code))
        .map_or("unknown code", |c| c.meaning());
    PaymentResult {
        id,
        status: if approved { "approved" } else { "declined" }.into(),
        auth_code: response
            .get_str(38)
            .map(|a| a.trim().to_owned())
            .filter(|a| approved && !a.is_empty()),
        rrn: response.get_str(37).map(|r| r.trim().to_owned()),
        message: meaning.to_owned(),
        advice: AdviceView::of(&code),
        response_code: code,
        kind: kind.to_owned(),
        card,
        amount,
    }
}

/// A journaled transaction as a result: its recorded answer, or 91 (the
/// issuer's answer is not known; the switch reverses such a one) when it
/// has none yet.
fn result_of_record(record: &TxnRecord) -> PaymentResult {
    let code = record
        .outcome
        .as_ref()
        .map_or("91".to_owned(), |o| o.response_code.as_str().to_owned());
    let approved = record.stands() && record.cancelled_at_ms.is_none();
    let code = if record.outcome.is_some() && !approved && code == "00" {
        "91".to_owned()
    } else {
        code
    };
    PaymentResult {
        id: Some(record.id.0),
        status: if approved { "approved" } else { "declined" }.into(),
        auth_code: record
            .outcome
            .as_ref()
            .and_then(|o| o.auth_code.clone())
            .filter(|_| approved),
        rrn: record.terminal_rrn.clone().or(record.upstream_rrn.clone()),
        message: crate::iso8583::ResponseCode::new(code_bytes(&code))
            .map_or("unknown code", |c| c.meaning())
            .to_owned(),
        advice: AdviceView::of(&code),
        response_code: code,
        kind: kind_of(record).to_owned(),
        card: record.pan_masked.clone(),
        amount: record.amount.map(|a| format_amount(a, record.currency)),
    }
}

/// The kind of a journaled transaction, from its MTI and processing code.
pub fn kind_of(record: &TxnRecord) -> &'static str {
    let pc = record.processing_code.as_deref().unwrap_or("");
    let amount_zero = record.amount == Some(0);
    match (record.mti.class(), pc.get(..2).unwrap_or("")) {
        (1, "00") if amount_zero => "verification",
        (1, "00") => "pre-authorization",
        (2, "00") => "sale",
        (2, "20") => "refund",
        (_, "72") => "gift-activation",
        (_, "28") => "gift-top-up",
        (_, "30" | "31") => "gift-balance",
        (5, _) => "shift-close",
        _ => "other",
    }
}

fn operation_of(record: &TxnRecord) -> Operation {
    let code = record
        .outcome
        .as_ref()
        .map(|o| o.response_code.as_str().to_owned());
    let cancelled = record.cancelled_at_ms.is_some();
    let status = match (&record.outcome, cancelled) {
        (None, _) => "pending",
        (Some(_), true) => "cancelled",
        (Some(_), false) if record.reversed_by_switch() => "reversed",
        (Some(o), false) if o.response_code.is_approval() => "approved",
        (Some(_), false) => "declined",
    };
    let stands = record.stands() && !cancelled;
    Operation {
        id: record.id.0,
        received_at_ms: record.received_at_ms,
        kind: kind_of(record).to_owned(),
        card: record.pan_masked.as_deref().map(mask_again),
        amount: record.amount,
        amount_text: record
            .amount
            .map(|a| format_amount(a, record.currency))
            .unwrap_or_default(),
        currency: record.currency,
        status: status.to_owned(),
        response_code: code,
        auth_code: record.outcome.as_ref().and_then(|o| o.auth_code.clone()),
        rrn: record
            .terminal_rrn
            .clone()
            .or_else(|| record.upstream_rrn.clone()),
        terminal: record.terminal_id.clone(),
        merchant: record.merchant_id.clone(),
        cancelled,
        refundable: stands && record.is_financial("00"),
        cancellable: stands && record.mti.class() != 5,
    }
}

/// The journal keeps PANs masked already; masked again in case a backend
/// keeps more, so nothing but first 6 / last 4 can reach a page.
fn mask_again(pan: &str) -> String {
    if pan.bytes().all(|b| b.is_ascii_digit()) {
        mask_pan(pan)
    } else {
        pan.to_owned()
    }
}
