//! The stages of one message, each a function: classify, check the format and
//! the channel, route by BIN, forward to the issuer, and build the response.
//! Every way out of here is an `Outcome` (docs/ARCHITECTURE.md lists where
//! each response code is decided).

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::events::{TransactionDone, UnsolicitedResponse};
use super::journaling::{outcome_of, record_answered, reversal_of, txn_start};
use super::originals::{Original, OriginalKey, RiskHold};
use super::outcome::{ChannelRefusal, Outcome, Refusal};
use super::reconcile::reconcile;
use super::refund::{check_refund, is_refund};
use super::stand_in::StandIn;
use super::{Inbound, Switch};
use crate::channel::Channel;
use crate::iso8583::fields::ProcessingCode;
use crate::iso8583::{FieldError, Message, Mti, ResponseCode};
use crate::journal::{
    now_ms, ClearPan, DecidedBy, Forward, SafKind, TimeRange, TxnId, TxnQuery, TxnStart,
};
use crate::risk::{Held, RiskContext, RiskRules, Timestamp};
use crate::upstream::UpstreamError;

/// Fields a switch-built response echoes from the request.
const ECHOED: [u8; 13] = [2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 70];

/// What kind of message arrived, by MTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Network,
    Request,
    Advice,
    Reversal,
    /// A terminal closing its shift.
    Reconciliation,
    /// A response nobody asked for.
    Response,
    Unsupported,
}

fn classify(mti: Mti) -> Kind {
    if !mti.is_request() {
        return Kind::Response;
    }
    match (mti.class(), mti.function()) {
        (8, 0) => Kind::Network,
        (1, 0) | (2, 0) => Kind::Request,
        (1, 2) | (2, 2) => Kind::Advice,
        (4, 0) | (4, 2) => Kind::Reversal,
        (5, 0) => Kind::Reconciliation,
        _ => Kind::Unsupported,
    }
}

/// The switch's own answer to `request`: an approval (sign-on, advice and
/// reversal acknowledgements) or a refusal, with the outcome's field 39.
pub fn response_to(request: &Message, outcome: impl Into<Outcome>) -> Message {
    let mti = request.mti().response().unwrap_or(request.mti());
    let mut response = Message::new(mti);
    for n in ECHOED {
        if let Some(v) = request.get(n) {
            // ECHOED holds data-field numbers only.
            let _ = response.set(n, v);
        }
    }
    let _ = response.set(39, outcome.into().response_code().as_bytes());
    response
}

/// An approval that must reach its terminal: if it does not (the connection
/// broke, or the answer does not encode for it), [`Switch::undo`] reverses it.
#[derive(Debug)]
pub struct Undo {
    pub(super) txn: TxnId,
    pub(super) issuer: Arc<str>,
}

/// The switch's answer to one message, and how to take it back if the
/// terminal never gets it.
#[derive(Debug)]
pub struct Answer {
    pub message: Message,
    /// `message` encoded with the listener's spec, when the inbound has one.
    pub payload: Option<Vec<u8>>,
    pub undo: Option<Undo>,
}

pub(super) async fn handle(sw: &Switch, from: &Inbound, request: Message) -> Option<Answer> {
    // One span per transaction: every line logged inside (issuer link warnings,
    // risk decisions) carries the listener, route and RRN. Fields are filled in
    // as the stages learn them; nothing here holds card data.
    let span = tracing::info_span!(
        "transaction",
        listener = %from.listener,
        route = tracing::field::Empty,
        rrn = tracing::field::Empty,
    );
    if let Some(rrn) = request.get_str(37) {
        span.record("rrn", rrn);
    }
    handle_in_span(sw, from, request).instrument(span).await
}

async fn handle_in_span(sw: &Switch, from: &Inbound, request: Message) -> Option<Answer> {
    let started = Instant::now();
    let kind = classify(request.mti());
    let mut undo = None;
    let (response, route) = match kind {
        Kind::Response => {
            UnsolicitedResponse {
                inbound: from,
                request: &request,
            }
            .emit();
            return None;
        }
        Kind::Network => (network(&request), None),
        Kind::Request => authorize(sw, from, &request, &mut undo).await,
        Kind::Advice => advice(sw, from, &request).await,
        Kind::Reversal => reverse(sw, &request).await,
        Kind::Reconciliation => (reconcile(sw, &from.listener, &request).await, None),
        Kind::Unsupported => (response_to(&request, Refusal::Unsupported), None),
    };
    let (response, payload) = match &from.spec {
        Some(spec) => encode_for_terminal(sw, from, spec, response, &mut undo, started).await?,
        None => (response, None),
    };
    TransactionDone {
        inbound: from,
        request: &request,
        response: &response,
        mti: match kind {
            Kind::Unsupported => "other",
            _ => mti_label(request.mti()),
        },
        route: route.as_ref(),
        elapsed: started.elapsed(),
    }
    .emit();
    Some(Answer {
        message: response,
        payload,
        undo,
    })
}

/// Encodes `response` for the terminal. One that does not encode becomes a
/// 96 that does (its echoed fields dropped one by one until it does); an
/// approval in its place is reversed and the journal records the 96 the
/// terminal got. None only when not even the bare 96 encodes.
async fn encode_for_terminal(
    sw: &Switch,
    from: &Inbound,
    spec: &crate::iso8583::Spec,
    response: Message,
    undo: &mut Option<Undo>,
    started: Instant,
) -> Option<(Message, Option<Vec<u8>>)> {
    let error = match response.encode(spec) {
        Ok(payload) => return Some((response, Some(payload))),
        Err(e) => e,
    };
    tracing::error!(
        listener = %from.listener,
        part = %error.part(),
        kind = %error.kind(),
        "response does not encode for the terminal; answering 96"
    );
    let replaced = refusal_that_encodes(spec, &response, error);
    if let Some(taken_back) = undo.take() {
        let txn = taken_back.txn;
        // The terminal gets 96 (or nothing), not the approval: the issuer's
        // is undone, and the journal says 96.
        sw.undo(taken_back).await;
        let answered = match &replaced {
            Some((fallback, _)) => outcome_of(fallback, DecidedBy::Switch, started),
            None => outcome_of(&Message::new(response.mti()), DecidedBy::Switch, started),
        };
        let _ = sw.stores.journal.record_outcome(txn, answered).await;
    }
    replaced.map(|(fallback, payload)| (fallback, Some(payload)))
}

/// The 96 that replaces `response`, which does not encode with `spec`
/// (`error`), and its bytes: what it echoes is dropped field by field until
/// it encodes (the field that failed may be one it echoes), never the card
/// number. None when not even the bare MTI and field 39 encode.
pub fn refusal_that_encodes(
    spec: &crate::iso8583::Spec,
    response: &Message,
    error: crate::iso8583::CodecError,
) -> Option<(Message, Vec<u8>)> {
    let mut fallback = response_to(response, Refusal::Encode(error));
    fallback.remove(2);
    // At most every echoed field once, then the bare MTI and field 39.
    for _ in 0..16 {
        match fallback.encode(spec) {
            Ok(payload) => return Some((fallback, payload)),
            Err(e) => match e.field() {
                Some(n) if n != 39 && fallback.has(n) => {
                    fallback.remove(n);
                }
                _ => return None,
            },
        }
    }
    None
}

/// MTIs the switch handles, as a bounded label set.
fn mti_label(mti: Mti) -> &'static str {
    match mti.as_bytes() {
        b"0100" => "0100",
        b"0101" => "0101",
        b"0120" => "0120",
        b"0121" => "0121",
        b"0200" => "0200",
        b"0201" => "0201",
        b"0220" => "0220",
        b"0221" => "0221",
        b"0400" => "0400",
        b"0401" => "0401",
        b"0420" => "0420",
        b"0421" => "0421",
        b"0500" => "0500",
        b"0501" => "0501",
        b"0800" => "0800",
        _ => "other",
    }
}

/// 0800 on a terminal link: sign-on (001), sign-off (002) and echo (301) are
/// answered by the switch itself.
fn network(request: &Message) -> Message {
    match request.get(70) {
        Some(b"001" | b"002" | b"301") => response_to(request, Outcome::Approved),
        Some(_) => response_to(request, Refusal::Unsupported),
        // The one field that says what to do is missing.
        None => response_to(request, Refusal::Format(FieldError::Missing(70))),
    }
}

/// Checks the fields every authorization and financial request needs; the
/// error is logged and answered with 30. A card number of the wrong length
/// (14) and a missing amount (13) are not format errors; `check_channel`
/// answers them.
fn check_format(request: &Message) -> Result<(), FieldError> {
    let pan = request.get(2).ok_or(FieldError::Missing(2))?;
    if pan.is_empty() || !pan.iter().all(u8::is_ascii_digit) {
        return Err(FieldError::Malformed {
            field: 2,
            expected: "digits",
        });
    }
    request.processing_code()?;
    if request.has(4) {
        request.amount()?;
    }
    request.stan()?;
    request.terminal_id()?;
    if request.has(7) {
        request.transmission_time()?;
    }
    // Optional (card-not-present traffic often omits it), but never malformed.
    if request.has(14) {
        request.expiry()?;
    }
    Ok(())
}

/// Prepaid (gift card) load (top-up) and activation: financial (0200) only.
const PREPAID_LOAD: u8 = 28;
const PREPAID_ACTIVATION: u8 = 72;

/// Whether this channel may carry this MTI, processing code and amount, for
/// a card number of a length cards have.
fn check_channel(channel: Channel, request: &Message) -> Result<(), Refusal> {
    if request.pan().is_err() {
        // Digits (check_format saw to that), but not 12 to 19 of them.
        return Err(Refusal::Channel(ChannelRefusal::CardNumberLength));
    }
    let pc = request.processing_code()?;
    let amount = match request.amount() {
        Ok(amount) => amount,
        Err(FieldError::Missing(_)) => return Err(Refusal::Channel(ChannelRefusal::Amount)),
        Err(e) => return Err(Refusal::Format(e)),
    };
    let class = request.mti().class();
    let allowed = matches!(
        (class, pc.transaction_type),
        (
            1,
            ProcessingCode::PURCHASE | ProcessingCode::CASH | 30 | ProcessingCode::BALANCE_INQUIRY
        ) | (
            2,
            ProcessingCode::PURCHASE
                | ProcessingCode::CASH
                | ProcessingCode::REFUND
                | ProcessingCode::BALANCE_INQUIRY
                | PREPAID_LOAD
                | PREPAID_ACTIVATION
        )
    );
    let cash_on_vt =
        channel == Channel::VirtualTerminal && pc.transaction_type == ProcessingCode::CASH;
    if !allowed || cash_on_vt {
        return Err(Refusal::Channel(ChannelRefusal::Transaction));
    }
    // Zero only for account verification (0100 purchase) and balance inquiries.
    let zero_ok = matches!(pc.transaction_type, 30 | ProcessingCode::BALANCE_INQUIRY)
        || (class == 1 && pc.transaction_type == ProcessingCode::PURCHASE);
    if amount.0 == 0 && !zero_ok {
        return Err(Refusal::Channel(ChannelRefusal::Amount));
    }
    Ok(())
}

/// The acquirer's risk rules: the first enforcing rule that fires declines
/// with its code (the rule logs and counts itself, shadow rules included).
/// A request that passes comes back with the velocity counts it holds.
/// With `[risk] state` the velocity and duplicate rules ask Redis, one round
/// trip each.
async fn check_risk(rules: &RiskRules, from: &Inbound, request: &Message) -> Result<Held, Refusal> {
    let ctx = RiskContext {
        channel: from.channel,
        listener: &from.listener,
    };
    let decision = if rules.shares_state() {
        rules.evaluate_shared(&ctx, request, Timestamp::now()).await
    } else {
        rules.evaluate(&ctx, request, Timestamp::now())
    };
    match decision.decline {
        Some(hit) => Err(Refusal::Risk {
            code: hit.response_code,
        }),
        None => Ok(decision.held),
    }
}

/// Tells the rules how a request they passed ended: an approval may be a
/// cardholder's mandate, anything else gives its velocity counts back.
fn settle_risk(risk: Option<&RiskRules>, request: &Message, held: &Held, approved: bool) {
    match risk {
        Some(risk) if approved => risk.record_approval(request, Timestamp::now()),
        Some(risk) => risk.release(held),
        None => {}
    }
}

/// 0100/0200: check, route, journal, forward, journal the outcome, answer.
/// An approval comes with its `undo`.
async fn authorize(
    sw: &Switch,
    from: &Inbound,
    request: &Message,
    undo: &mut Option<Undo>,
) -> (Message, Option<Arc<str>>) {
    let received_at_ms = now_ms();
    let started = Instant::now();
    // Answered by the switch before any issuer: journaled, then answered.
    let refuse = |refusal: Refusal, route: Option<Arc<str>>| async move {
        let decided_by = refusal.decided_by();
        let reason = refusal.reason();
        let response = response_to(request, refusal);
        let start = txn_start(from, request, received_at_ms, None);
        let outcome = crate::journal::Outcome {
            reason,
            ..outcome_of(&response, decided_by, started)
        };
        // A decline the journal cannot take is still a decline; the writer
        // logs the failure and /readyz reports it.
        let _ = record_answered(&sw.stores, start, outcome).await;
        (response, route)
    };
    if let Err(e) = check_format(request) {
        tracing::debug!(listener = %from.listener, error = %e, "format error");
        return refuse(Refusal::Format(e), None).await;
    }
    if let Err(refusal) = check_channel(from.channel, request) {
        return refuse(refusal, None).await;
    }
    // Held until the refund's outcome is recorded (the end of this function).
    let (_refund_hold, original_id) = if is_refund(request) {
        match check_refund(sw, &from.listener, request).await {
            Ok((hold, original)) => (Some(hold), Some(original)),
            Err(refusal) => return refuse(refusal, None).await,
        }
    } else {
        (None, None)
    };
    let snapshot = sw.snapshot.load();
    let held = match check_risk(&snapshot.risk, from, request).await {
        Ok(held) => held,
        Err(refusal) => {
            drop(snapshot);
            return refuse(refusal, None).await;
        }
    };
    // Held past the snapshot only when the outcome matters to the rules: a
    // recurring rule hears of approvals, counts are given back otherwise.
    let risk = &snapshot.risk;
    let risk = (risk.records_approvals() || held.counts_anything()).then(|| risk.clone());
    let Some(route) = request.get(2).and_then(|pan| snapshot.route(pan)) else {
        drop(snapshot);
        settle_risk(risk.as_deref(), request, &held, false);
        return refuse(Refusal::NoRoute, None).await;
    };
    let issuer = route.issuer.clone();
    let route_name = route.name.clone();
    let stand_in = route.stand_in.clone();
    tracing::Span::current().record("route", route_name.as_ref());
    drop(snapshot);

    let mut outbound = request.clone();
    let generated_rrn = (!outbound.has(37)).then(|| sw.rrn.next());
    if let Some(rrn) = generated_rrn {
        let _ = outbound.set(37, rrn);
        if let Ok(text) = std::str::from_utf8(&rrn) {
            tracing::Span::current().record("rrn", text);
        }
    }
    // Switch-built answers echo the RRN the issuer saw, generated or not.
    let answer = |refusal: Refusal| {
        let mut response = response_to(request, refusal);
        if let Some(rrn) = generated_rrn {
            let _ = response.set(37, rrn);
        }
        response
    };

    // Write-ahead: the journal knows where it goes, under which STAN, and the
    // reversal that undoes it, before the issuer sees it.
    let stan = issuer.reserve_stan();
    let reversal = reversal_of(&outbound, stan);
    let forward = Forward {
        route: route_name.to_string(),
        issuer: issuer.name().to_owned(),
        upstream_stan: stan.to_string(),
        upstream_rrn: outbound.get_str(37).map(str::to_owned),
        reversal: reversal.clone(),
    };
    let start = TxnStart {
        original_id,
        ..txn_start(from, request, received_at_ms, Some(forward))
    };
    let txn = match sw.stores.journal.begin(start).await {
        Ok(txn) => txn,
        Err(e) => {
            // Nothing is forwarded that the journal cannot hold.
            settle_risk(risk.as_deref(), request, &held, false);
            return (answer(Refusal::Storage(e)), Some(route_name));
        }
    };

    // Remembered before it is forwarded, so a terminal's reversal arriving
    // while it is at the issuer finds it; completed with the issuer's STAN.
    let key = OriginalKey::of_request(request);
    let original_mti = request.mti().original();
    if let Some(key) = key {
        let in_flight = Original::new(
            original_mti,
            issuer.shared_name(),
            Some(txn),
            None,
            false,
            None,
        );
        sw.originals.insert(key, in_flight);
    }
    // Whether a terminal reversed it meanwhile.
    let remember = |reversed: bool, risk: Option<RiskHold>| {
        key.is_some_and(|key| {
            let original = Original::new(
                original_mti,
                issuer.shared_name(),
                Some(txn),
                Some(stan.0),
                reversed,
                risk,
            );
            sw.originals.complete(key, original)
        })
    };
    let response_mti = request.mti().response().unwrap_or(request.mti());
    // Only an issuer's answer can approve; the switch's own never do.
    let (response, approved) = match issuer.request_as(outbound, stan).await {
        Ok(mut response) => {
            response.set_mti(response_mti);
            if response.response_code().is_err() {
                let refusal = Refusal::IssuerResponse;
                tracing::warn!(issuer = issuer.name(), "{refusal}");
                let _ = response.set(39, refusal.response_code().as_bytes());
            }
            // An approval keeps its counts until a reversal gives them back.
            let approved = response.response_code().is_ok_and(|c| c.is_approval());
            let hold = risk
                .as_ref()
                .filter(|_| approved && held.counts_anything())
                .map(|risk| Box::new((risk.clone(), held.clone())));
            // The terminal reversed it while it was at the issuer: an approval
            // is reversed now, and spent nothing.
            let reversed_meanwhile = remember(false, hold);
            let undo = reversed_meanwhile && approved;
            if undo
                && sw
                    .queue_reversal(issuer.name(), txn, reversal)
                    .await
                    .is_err()
            {
                // Left in doubt (no outcome recorded): the sweep reverses it.
                return (response, Some(route_name));
            }
            let outcome = outcome_of(&response, DecidedBy::Issuer, started);
            match sw.stores.journal.record_outcome(txn, outcome).await {
                Ok(()) => (response, approved && !undo),
                Err(e) if approved && !undo => {
                    // An approval the journal cannot hold does not reach the
                    // terminal; the record stays in doubt and the sweep
                    // reverses it once storage is back.
                    (answer(Refusal::Storage(e)), false)
                }
                Err(_) => (response, false),
            }
        }
        Err(e) => {
            let sent = matches!(
                e,
                UpstreamError::Timeout { .. } | UpstreamError::ConnectionLost { .. }
            );
            if !e.is_upstream_fault() {
                tracing::error!(issuer = issuer.name(), error = %e, "forwarding failed");
            }
            let unreachable = e.is_upstream_fault();
            let refusal = Refusal::Upstream(e);
            let decided_by = refusal.decided_by();
            let response = answer(refusal);
            if sent {
                // The issuer may have approved: its reversal is queued before
                // the terminal hears 91 (or a stand-in approval).
                let _ = remember(true, None);
                if sw
                    .queue_reversal(issuer.name(), txn, reversal)
                    .await
                    .is_err()
                {
                    return (response, Some(route_name));
                }
            }
            let stood_in = match (&stand_in, unreachable) {
                (Some(policy), true) => {
                    stand_in_for(
                        sw,
                        request,
                        generated_rrn,
                        policy,
                        issuer.name(),
                        txn,
                        &route_name,
                    )
                    .await
                }
                _ => None,
            };
            let (response, decided_by, approved) = match stood_in {
                Some(mut approval) => {
                    if let Some(rrn) = generated_rrn {
                        let _ = approval.set(37, rrn);
                    }
                    (approval, DecidedBy::StandIn, true)
                }
                None => (response, decided_by, false),
            };
            let outcome = outcome_of(&response, decided_by, started);
            match sw.stores.journal.record_outcome(txn, outcome).await {
                Ok(()) => (response, approved),
                // A stand-in approval the journal cannot hold is not given;
                // its advice is queued, and the issuer declines nothing it
                // never approved.
                Err(e) if approved => (answer(Refusal::Storage(e)), false),
                Err(_) => (response, false),
            }
        }
    };
    settle_risk(risk.as_deref(), request, &held, approved);
    if approved {
        *undo = Some(Undo {
            txn,
            issuer: issuer.shared_name(),
        });
    }
    (response, Some(route_name))
}

/// Approves `request` in the issuer's place when its route's limits allow,
/// and queues the advice (0120/0220, carrying the switch's auth code) that
/// tells the issuer; behind the original's reversal, where there is one. None
/// (answer 91) when the limits refuse or the advice cannot be queued.
async fn stand_in_for(
    sw: &Switch,
    request: &Message,
    generated_rrn: Option<[u8; 12]>,
    policy: &StandIn,
    issuer: &str,
    txn: TxnId,
    route: &str,
) -> Option<Message> {
    let approvals_today = match stand_in_approvals_today(sw, request).await {
        Ok(count) => count,
        Err(e) => {
            tracing::warn!(route, error = %e, "stand-in refused: the card's approvals today cannot be counted");
            metrics::counter!("isoswitch_stand_in_total", "result" => "storage").increment(1);
            return None;
        }
    };
    if let Err(refusal) = policy.check(request, approvals_today) {
        metrics::counter!("isoswitch_stand_in_total", "result" => refusal.kind()).increment(1);
        tracing::info!(route, pan = %request.masked_pan(), reason = %refusal, "stand-in refused; answering 91");
        return None;
    }
    let auth_code = policy.auth_code();
    // The link gives it a STAN of its own.
    let mut advice = request.clone();
    if let Some(rrn) = generated_rrn {
        let _ = advice.set(37, rrn);
    }
    advice.set_mti(advice_mti(request.mti()));
    let _ = advice.set(38, auth_code);
    let _ = advice.set(39, ResponseCode::APPROVED.as_bytes());
    if let Err(e) = sw
        .queue_message(issuer, SafKind::Advice, Some(txn), &advice)
        .await
    {
        tracing::error!(route, error = %e, "stand-in refused: its advice cannot be queued");
        metrics::counter!("isoswitch_stand_in_total", "result" => "storage").increment(1);
        return None;
    }
    metrics::counter!("isoswitch_stand_in_total", "result" => "approved").increment(1);
    tracing::info!(
        route,
        issuer,
        pan = %request.masked_pan(),
        amount = request.get_str(4).unwrap_or("-"),
        auth_code = %String::from_utf8_lossy(&auth_code),
        "stood in for the issuer: approved, advice queued"
    );
    let mut approval = response_to(request, Outcome::Approved);
    let _ = approval.set(38, auth_code);
    Some(approval)
}

/// The advice that reports a stand-in approval of `original`: 0100 → 0120,
/// 0200 → 0220 (repeats included).
fn advice_mti(original: Mti) -> Mti {
    let [version, class, ..] = *original.as_bytes();
    Mti::new([version, class, b'2', b'0']).unwrap_or(original)
}

/// Stand-in approvals of this card since midnight UTC, from the journal.
async fn stand_in_approvals_today(
    sw: &Switch,
    request: &Message,
) -> Result<u32, crate::journal::JournalError> {
    let Some(pan) = request.get_str(2).and_then(ClearPan::new) else {
        return Ok(0);
    };
    let now = now_ms();
    let midnight = now - now.rem_euclid(24 * 3600 * 1000);
    let found = sw
        .stores
        .journal
        .find(TxnQuery {
            pan: Some(pan),
            range: TimeRange {
                since_ms: Some(midnight),
                until_ms: None,
            },
            decided_by: Some(DecidedBy::StandIn),
            approved_only: true,
            ..TxnQuery::default()
        })
        .await?;
    Ok(u32::try_from(found.len()).unwrap_or(u32::MAX))
}

/// 0120/0220: the switch takes responsibility for delivery and acknowledges
/// once the advice is in the queue.
async fn advice(sw: &Switch, from: &Inbound, request: &Message) -> (Message, Option<Arc<str>>) {
    let received_at_ms = now_ms();
    let started = Instant::now();
    if let Err(e) = request.pan().and_then(|_| request.stan()) {
        return (response_to(request, Refusal::Format(e)), None);
    }
    let (issuer, route_name) = {
        let snapshot = sw.snapshot.load();
        match request.get(2).and_then(|pan| snapshot.route(pan)) {
            Some(route) => (route.issuer.shared_name(), route.name.clone()),
            None => return (response_to(request, Refusal::NoRoute), None),
        }
    };
    let mut outbound = request.clone();
    outbound.set_mti(request.mti().original());
    let start = txn_start(from, request, received_at_ms, None);
    let queued = async {
        let txn = sw.stores.journal.begin(start).await?;
        sw.queue_message(&issuer, SafKind::Advice, Some(txn), &outbound)
            .await?;
        Ok::<_, crate::journal::JournalError>(txn)
    }
    .await;
    let (response, txn) = match queued {
        Ok(txn) => (response_to(request, Outcome::Approved), Some(txn)),
        Err(e) => (response_to(request, Refusal::Storage(e)), None),
    };
    if let Some(txn) = txn {
        let outcome = outcome_of(&response, DecidedBy::Switch, started);
        let _ = sw.stores.journal.record_outcome(txn, outcome).await;
    }
    (response, Some(route_name))
}

/// 0400/0420: find what the issuer saw — in memory, else in the journal (after
/// a restart) — and queue the reversal built when it was forwarded, naming the
/// STAN the issuer saw; then acknowledge. A transaction already reversed (by
/// the switch itself on a timeout or lost link, or by an earlier copy of this
/// reversal) is acknowledged without a second reversal.
async fn reverse(sw: &Switch, request: &Message) -> (Message, Option<Arc<str>>) {
    if let Err(e) = request.stan().and_then(|_| request.terminal_id()) {
        return (response_to(request, Refusal::Format(e)), None);
    }
    let key = OriginalKey::of_reversal(request);
    match in_closed_shift(sw, request, key.as_ref()).await {
        Ok(false) => {}
        Ok(true) => return (response_to(request, Refusal::ClosedShift), None),
        Err(e) => return (response_to(request, Refusal::Storage(e)), None),
    }
    let original = key.and_then(|k| sw.originals.reverse(&k));
    if let Some((rules, held)) = original.as_ref().and_then(|o| o.risk.as_deref()) {
        // Reversed, the approval spent nothing after all.
        rules.release(held);
    }
    let acknowledged = |label: Option<&str>| {
        (
            response_to(request, Outcome::Approved),
            label.map(Arc::from),
        )
    };
    match original {
        Some(o) if o.reversed => {
            metrics::counter!("isoswitch_reversals_already_sent_total").increment(1);
            return acknowledged(None);
        }
        Some(Original {
            issuer_stan: None, ..
        }) => {
            // At the issuer still: its answer decides. An approval is
            // reversed then, naming the STAN the issuer saw.
            metrics::counter!("isoswitch_reversals_of_in_flight_total").increment(1);
            return acknowledged(None);
        }
        Some(Original {
            txn: Some(txn),
            issuer,
            ..
        }) => {
            return match reverse_journaled(sw, request, txn, &issuer).await {
                Ok(()) => acknowledged(Some(&issuer)),
                Err(e) => (response_to(request, Refusal::Storage(e)), None),
            };
        }
        Some(_) => {}
        None => match sw.find_original(request).await {
            Ok(Some(found)) => {
                if let Some(key) = key {
                    let mti = request.mti().original();
                    let original = Original::new(
                        mti,
                        Arc::from(found.issuer.as_str()),
                        Some(found.txn),
                        None,
                        true,
                        None,
                    );
                    sw.originals.insert(key, original);
                }
                if found.reversed {
                    metrics::counter!("isoswitch_reversals_already_sent_total").increment(1);
                    return acknowledged(None);
                }
                return match reverse_journaled(sw, request, found.txn, &found.issuer).await {
                    Ok(()) => acknowledged(Some(&found.issuer)),
                    Err(e) => (response_to(request, Refusal::Storage(e)), None),
                };
            }
            Ok(None) => {}
            Err(e) => return (response_to(request, Refusal::Storage(e)), None),
        },
    }
    // Neither remembered nor journaled: routed by card number, with field 90
    // as the terminal sent it.
    let target = {
        let snapshot = sw.snapshot.load();
        request
            .get(2)
            .and_then(|pan| snapshot.route(pan))
            .map(|r| (r.issuer.shared_name(), r.name.clone()))
    };
    match target {
        Some((issuer, label)) => {
            metrics::counter!("isoswitch_reversals_unmatched_total").increment(1);
            // Remembered as reversed, so its repeats are not sent again
            // (only `reversed` is read of a record made here).
            if let Some(key) = key {
                let mti = request.mti().original();
                let original = Original::new(mti, issuer.clone(), None, None, true, None);
                sw.originals.insert(key, original);
            }
            let mut outbound = request.clone();
            outbound.set_mti(request.mti().original());
            match sw
                .queue_message(&issuer, SafKind::Reversal, None, &outbound)
                .await
            {
                Ok(_) => (response_to(request, Outcome::Approved), Some(label)),
                Err(e) => (response_to(request, Refusal::Storage(e)), None),
            }
        }
        None if request.has(2) => (response_to(request, Refusal::NoRoute), None),
        None => (
            response_to(request, Refusal::Format(FieldError::Missing(2))),
            None,
        ),
    }
}

/// Whether the original a terminal's reversal names is in a shift its
/// terminal has closed since: then it is not cancelled (12), it can only be
/// refunded. Read before the reversal marks anything.
async fn in_closed_shift(
    sw: &Switch,
    request: &Message,
    key: Option<&OriginalKey>,
) -> Result<bool, crate::journal::JournalError> {
    let Some(terminal) = request.get_str(41).map(str::trim_end) else {
        return Ok(false);
    };
    let Some(close) = sw.stores.journal.last_close(terminal, None).await? else {
        return Ok(false);
    };
    let remembered = key.and_then(|k| sw.originals.get(k)).and_then(|o| o.txn);
    let txn = match remembered {
        Some(txn) => Some(txn),
        None => sw.find_original(request).await?.map(|found| found.txn),
    };
    Ok(txn.is_some_and(|txn| txn <= close.close.last_txn))
}

/// Marks `txn` cancelled by its terminal (its shift's totals count it as a
/// reversal), then queues the reversal the journal built for it when it was
/// forwarded.
async fn reverse_journaled(
    sw: &Switch,
    request: &Message,
    txn: TxnId,
    issuer: &str,
) -> Result<(), crate::journal::JournalError> {
    let fields = match sw.stores.journal.reversal_fields(txn).await? {
        Some(fields) => fields,
        None => {
            // Journaled without reversal fields (never forwarded): nothing
            // the issuer saw to undo.
            tracing::debug!(
                stan = request.get_str(11).unwrap_or("-"),
                "reversal of a transaction that was never forwarded"
            );
            return Ok(());
        }
    };
    sw.stores.journal.cancel(txn, now_ms()).await?;
    sw.queue_reversal(issuer, txn, fields).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mti: &str, fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(mti.parse().expect("mti"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    fn purchase(pc: &str, amount: &str) -> Message {
        request(
            "0200",
            &[
                (2, "4111111111111111"),
                (3, pc),
                (4, amount),
                (11, "000001"),
                (41, "TERM0001"),
            ],
        )
    }

    #[test]
    fn classifies_by_mti() {
        let k = |s: &str| classify(s.parse().expect("mti"));
        assert_eq!(k("0100"), Kind::Request);
        assert_eq!(k("0201"), Kind::Request);
        assert_eq!(k("0220"), Kind::Advice);
        assert_eq!(k("0421"), Kind::Reversal);
        assert_eq!(k("0800"), Kind::Network);
        assert_eq!(k("0501"), Kind::Reconciliation);
        assert_eq!(k("0110"), Kind::Response);
        assert_eq!(k("0300"), Kind::Unsupported);
    }

    #[test]
    fn a_switch_response_echoes_the_request_and_sets_the_code() {
        let r = response_to(&purchase("000000", "000000001000"), Refusal::NoRoute);
        assert_eq!(r.mti(), Mti::from_static("0210"));
        assert_eq!(r.get_str(39), Some("15"));
        assert_eq!(r.get_str(11), Some("000001"));
    }

    #[test]
    fn channel_rules_give_12_and_13() {
        use crate::iso8583::ResponseCode;
        let check_channel = |channel, request: &Message| {
            check_channel(channel, request).map_err(|refusal| refusal.response_code())
        };
        let pos = Channel::Pos;
        assert_eq!(
            check_channel(pos, &purchase("000000", "000000001000")),
            Ok(())
        );
        assert_eq!(
            check_channel(pos, &purchase("500000", "000000001000")),
            Err(ResponseCode::INVALID_TRANSACTION)
        );
        assert_eq!(
            check_channel(pos, &purchase("000000", "000000000000")),
            Err(ResponseCode::INVALID_AMOUNT)
        );
        assert_eq!(
            check_channel(
                Channel::VirtualTerminal,
                &purchase("010000", "000000001000")
            ),
            Err(ResponseCode::INVALID_TRANSACTION)
        );
        // Gift cards: activation (72) and top-up (28) as 0200 on any channel.
        for pc in ["720000", "280000"] {
            assert_eq!(
                check_channel(Channel::VirtualTerminal, &purchase(pc, "000000001000")),
                Ok(()),
                "{pc}"
            );
        }
        let verification = request(
            "0100",
            &[
                (2, "4111111111111111"),
                (3, "000000"),
                (4, "000000000000"),
                (11, "000001"),
                (41, "T"),
            ],
        );
        assert_eq!(check_channel(pos, &verification), Ok(()));
    }

    #[test]
    fn format_check_names_the_missing_field() {
        let mut r = purchase("000000", "000000001000");
        r.remove(41);
        assert_eq!(check_format(&r).map_err(|e| e.field()), Err(41));
    }

    #[test]
    fn network_management_answers_sign_on_and_echo_only() {
        let echo = request("0800", &[(7, "1123184100"), (11, "000001"), (70, "301")]);
        assert_eq!(network(&echo).get_str(39), Some("00"));
        assert_eq!(network(&echo).mti(), Mti::from_static("0810"));
        let other = request("0800", &[(11, "000001"), (70, "999")]);
        assert_eq!(network(&other).get_str(39), Some("12"));
    }
}
