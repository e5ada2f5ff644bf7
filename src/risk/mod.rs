//! Risk rules: the acquirer's own checks, run after the format and channel
//! checks and before routing, so what is plainly wrong is declined before it
//! costs an issuer round trip, with the rule that fired named in the log line
//! and in `isoswitch_risk_decisions_total{rule, response_code, mode}`.
//!
//! `[[risk.rule]]` entries compile once per config snapshot into [`RiskRules`].
//! [`RiskRules::evaluate`] runs the stateless rules in config order, then the
//! stateful ones (duplicates first, then velocity), and returns the first
//! enforcing decline plus every shadow rule that would have declined. The only
//! mutable state (velocity windows, recent transmissions, cardholder-initiated
//! approvals) lives in [`RiskState`], shared by every snapshot, so a reload
//! keeps a rule's counts while the rule is unchanged.
//!
//! A velocity rule counts a transaction only if it passes every enforcing
//! rule: a declined attempt spent nothing, and counting it would let a
//! fraudster's rejected tries lock the real cardholder out. The check and the
//! count are one step under the card's shard lock, and a decline by a later
//! rule takes the count back, so counts stay exact under parallel load. For
//! the same reason the switch gives a request's counts back
//! ([`RiskRules::release`]) when it is not approved in the end.

pub(crate) mod amount;
mod bin_leads;
pub(crate) mod card;
pub(crate) mod channel;
pub mod config;
pub(crate) mod duplicate;
pub(crate) mod hotlist;
mod key_table;
pub(crate) mod merchant;
pub mod redis_state;
pub(crate) mod scope;
mod shared;
pub(crate) mod state;
mod timestamp;
pub(crate) mod velocity;

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

pub use config::{Check, InvalidRule, Mode, OnStateError, RiskConfig, RuleConfig, Scope};
pub use state::RiskState;
pub use timestamp::Timestamp;

use crate::channel::Channel;
use crate::iso8583::fields::{MaskedPan, ProcessingCode};
use crate::iso8583::{Message, ResponseCode};
use config::MAX_STATEFUL_RULES;
use merchant::trim_id;
use scope::{Applies, ScopeIndex};
use state::{card_key, id_key, CountStore, Limits, SumStore};

/// Where a request came in: the listener's channel kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskContext<'a> {
    pub channel: Channel,
    pub listener: &'a str,
}

#[cfg(test)]
impl RiskContext<'static> {
    pub(crate) fn pos() -> Self {
        RiskContext {
            channel: Channel::Pos,
            listener: "pos",
        }
    }

    pub(crate) fn virtual_terminal() -> Self {
        RiskContext {
            channel: Channel::VirtualTerminal,
            listener: "ecom",
        }
    }
}

/// A rule that fired: which, with what code, and whether it declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<'r> {
    pub rule: &'r str,
    pub kind: &'static str,
    pub response_code: ResponseCode,
    pub mode: Mode,
}

/// What the rules made of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision<'r> {
    /// The first enforcing rule that fired; the request is declined with its code.
    pub decline: Option<Hit<'r>>,
    /// Shadow rules that would have declined, in evaluation order.
    pub shadow: Vec<Hit<'r>>,
    /// What the stateful rules recorded for a request that passed, for
    /// [`RiskRules::release`] if it is not approved after all.
    pub held: Held,
}

/// The velocity counts one evaluation made, with what it takes to give them
/// back later without the request. Empty for a declined request: a decline
/// takes its own counts back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Bit `i`: stateful rule `i` counted the request (at most
    /// [`MAX_STATEFUL_RULES`], 32).
    rules: u32,
    /// (slot, key) of each count, in rule order; inline for up to four.
    counts: SmallVec<[(u64, u64); 4]>,
    /// What the request added to the windows' amounts (minor units).
    amount: u64,
    /// Counts made in the shared state: (window key, member), to take back.
    shared: Vec<(String, String)>,
}

// `Held::rules` has a bit for each stateful rule.
const _: () = assert!(MAX_STATEFUL_RULES <= u32::BITS as usize);

impl Held {
    fn push(&mut self, rule: usize, slot: u64, key: u64, amount: u64) {
        self.rules |= 1 << rule;
        self.counts.push((slot, key));
        self.amount = amount;
    }

    /// (stateful rule, slot, key) of each count, in rule order.
    fn counts(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let rules = (0..MAX_STATEFUL_RULES).filter(|i| self.rules >> i & 1 != 0);
        rules
            .zip(&self.counts)
            .map(|(rule, &(slot, key))| (rule, slot, key))
    }

    /// Whether any velocity rule counted the request.
    pub fn counts_anything(&self) -> bool {
        self.rules != 0 || !self.shared.is_empty()
    }
}

impl Decision<'_> {
    /// The code to decline with, if any.
    pub fn response_code(&self) -> Option<ResponseCode> {
        self.decline.map(|hit| hit.response_code)
    }

    pub fn is_declined(&self) -> bool {
        self.decline.is_some()
    }
}

/// Why rules could not be compiled. Every variant names the rule.
#[derive(Debug, thiserror::Error)]
pub enum RiskError {
    #[error(transparent)]
    Invalid(#[from] InvalidRule),
    #[error("risk rule {rule:?}: file: cannot read {path}: {source}")]
    Read {
        rule: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("[risk] state: {0}")]
    State(String),
    #[error("risk rule {rule:?}: file: {path}:{line}: {problem}")]
    Entry {
        rule: String,
        path: String,
        line: usize,
        problem: String,
    },
}

/// A value computed on first use and kept for the rest of an evaluation.
/// (`OnceCell` would do, but its first use is an out-of-line call, and in an
/// evaluation every use is either the first or a cheap second.)
struct Lazy<T>(Cell<Option<T>>);

impl<T: Copy> Lazy<T> {
    const fn new() -> Lazy<T> {
        Lazy(Cell::new(None))
    }

    #[inline]
    fn get(&self, compute: impl FnOnce() -> T) -> T {
        if let Some(value) = self.0.get() {
            return value;
        }
        let value = compute();
        self.0.set(Some(value));
        value
    }
}

/// The request's fields the rules read. Each is parsed on first use and kept
/// for the rest of the evaluation, as are the keyed hashes: a rule set that
/// never reads an amount or a category (the embedded card checks) never
/// parses one.
pub(crate) struct Facts<'a> {
    pub msg: &'a Message,
    pub channel: Channel,
    pub listener: &'a str,
    pub now: Timestamp,
    pub pan: Option<&'a [u8]>,
    amount: Lazy<Option<u64>>,
    transaction_type: Lazy<Option<u8>>,
    mcc: Lazy<Option<u16>>,
    merchant: Lazy<Option<&'a [u8]>>,
    terminal: Lazy<Option<&'a [u8]>>,
    card_key: Lazy<Option<u64>>,
    terminal_key: Lazy<Option<u64>>,
    merchant_key: Lazy<Option<u64>>,
    transmission_key: Lazy<Option<u64>>,
    currency: Lazy<Option<u16>>,
}

impl<'a> Facts<'a> {
    pub fn new(ctx: &RiskContext<'a>, msg: &'a Message, now: Timestamp) -> Facts<'a> {
        Facts {
            msg,
            channel: ctx.channel,
            listener: ctx.listener,
            now,
            pan: msg.get(2),
            amount: Lazy::new(),
            transaction_type: Lazy::new(),
            mcc: Lazy::new(),
            merchant: Lazy::new(),
            terminal: Lazy::new(),
            card_key: Lazy::new(),
            terminal_key: Lazy::new(),
            merchant_key: Lazy::new(),
            transmission_key: Lazy::new(),
            currency: Lazy::new(),
        }
    }

    /// Field 4 in minor units, if it is an amount.
    pub fn amount(&self) -> Option<u64> {
        self.amount.get(|| self.msg.amount().ok().map(|a| a.0))
    }

    /// The transaction type of field 3, if it is a processing code.
    pub fn transaction_type(&self) -> Option<u8> {
        self.transaction_type
            .get(|| self.msg.processing_code().ok().map(|p| p.transaction_type))
    }

    /// Field 18, if it is a merchant category code.
    pub fn mcc(&self) -> Option<u16> {
        self.mcc.get(|| self.msg.mcc().ok())
    }

    /// Field 42 without trailing spaces.
    pub fn merchant(&self) -> Option<&'a [u8]> {
        self.merchant.get(|| self.msg.get(42).map(trim_id))
    }

    /// Field 41 without trailing spaces.
    pub fn terminal(&self) -> Option<&'a [u8]> {
        self.terminal.get(|| self.msg.get(41).map(trim_id))
    }

    pub fn card_key(&self) -> Option<u64> {
        self.card_key.get(|| self.pan.map(card_key))
    }

    pub fn terminal_key(&self) -> Option<u64> {
        self.terminal_key.get(|| self.terminal().map(id_key))
    }

    pub fn merchant_key(&self) -> Option<u64> {
        self.merchant_key.get(|| self.merchant().map(id_key))
    }

    /// The duplicate rules' key: terminal, STAN and transmission time.
    pub fn transmission_key(&self) -> Option<u64> {
        self.transmission_key
            .get(|| duplicate::transmission_key(self))
    }

    /// Field 49, if it is a currency code.
    pub fn currency(&self) -> Option<u16> {
        self.currency.get(|| self.msg.currency().ok())
    }

    /// Account verification (0100 purchase of zero) or balance inquiry: the
    /// requests that may carry a zero amount.
    pub fn is_verification(&self) -> bool {
        match self.transaction_type() {
            Some(30 | ProcessingCode::BALANCE_INQUIRY) => true,
            Some(ProcessingCode::PURCHASE) => {
                self.msg.mti().class() == 1 && self.amount() == Some(0)
            }
            _ => false,
        }
    }
}

/// What a stateful rule must take back if a later rule declines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Mark {
    #[default]
    None,
    /// A velocity count in this slot.
    Slot(u64),
    /// A duplicate record with this stamp.
    Stamp(u64),
}

/// A stateful rule's verdict.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reserved {
    pub code: Option<ResponseCode>,
    pub mark: Mark,
    /// The store was full and the key new: nothing checked, nothing counted.
    pub untracked: bool,
}

/// A compiled check.
#[derive(Debug)]
enum Compiled {
    CardNumber(card::CardNumber),
    Expiry(card::Expiry),
    // Boxed, so the rule list stays a few cache lines long.
    Hotlist(Box<hotlist::Hotlist>),
    Terminal(Box<merchant::Terminals>),
    Mcc(merchant::Mccs),
    Currency(merchant::Currencies),
    Amount(amount::Amounts),
    EntryMode(channel::EntryModes),
    CardBrand(channel::CardBrands),
    Recurring(channel::Recurring),
    Velocity(velocity::Velocity),
    Duplicate(duplicate::Duplicate),
}

/// One rule as `rules check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSummary {
    pub name: String,
    pub kind: &'static str,
    pub mode: Mode,
    /// The codes it can decline with.
    pub codes: Vec<ResponseCode>,
    pub applies_to: String,
    pub detail: String,
}

/// A compiled rule with its metric handles, made once so evaluation builds
/// no label strings.
struct Rule {
    name: Box<str>,
    kind: &'static str,
    mode: Mode,
    applies: Applies,
    check: Compiled,
    counters: Vec<(ResponseCode, metrics::Counter)>,
    state_full: metrics::Counter,
    /// With shared state: what to do when it cannot be reached.
    on_state_error: OnStateError,
}

impl Rule {
    fn hit(&self, code: ResponseCode) -> Hit<'_> {
        Hit {
            rule: &self.name,
            kind: self.kind,
            response_code: code,
            mode: self.mode,
        }
    }

    fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        match &self.check {
            Compiled::CardNumber(c) => c.check(facts),
            Compiled::Expiry(c) => c.check(facts),
            Compiled::Hotlist(c) => c.check(facts),
            Compiled::Terminal(c) => c.check(facts),
            Compiled::Mcc(c) => c.check(facts),
            Compiled::Currency(c) => c.check(facts),
            Compiled::Amount(c) => c.check(facts),
            Compiled::EntryMode(c) => c.check(facts),
            Compiled::CardBrand(c) => c.check(facts),
            Compiled::Recurring(c) => c.check(facts),
            // Stateful rules run in their own phase.
            Compiled::Velocity(_) | Compiled::Duplicate(_) => None,
        }
    }

    fn reserve(&self, facts: &Facts<'_>, cap: usize) -> Reserved {
        let reserved = match &self.check {
            Compiled::Velocity(v) => v.reserve(facts, self.mode == Mode::Shadow, cap),
            Compiled::Duplicate(d) => d.reserve(facts, cap),
            _ => Reserved::default(),
        };
        if reserved.untracked {
            self.state_full.increment(1);
        }
        reserved
    }

    /// Starts loading the record [`reserve`](Self::reserve) will read.
    fn prefetch(&self, facts: &Facts<'_>) {
        match &self.check {
            Compiled::Velocity(v) => v.prefetch(facts),
            Compiled::Duplicate(d) => d.prefetch(facts),
            _ => {}
        }
    }

    fn undo(&self, facts: &Facts<'_>, mark: Mark) {
        match &self.check {
            Compiled::Velocity(v) => v.undo(facts, mark),
            Compiled::Duplicate(d) => d.undo(facts, mark),
            _ => {}
        }
    }

    /// Counts and logs one firing, together, so the two never drift apart.
    fn emit(&self, code: ResponseCode, facts: &Facts<'_>) {
        if let Some((_, counter)) = self.counters.iter().find(|(c, _)| *c == code) {
            counter.increment(1);
        }
        let pan = MaskedPan::of(facts.pan);
        match self.mode {
            Mode::Enforce => tracing::info!(
                rule = &*self.name,
                kind = self.kind,
                response_code = %code,
                mode = "enforce",
                listener = facts.listener,
                channel = facts.channel.as_str(),
                pan = %pan,
                "risk rule {} declined with {}",
                self.name,
                code
            ),
            Mode::Shadow => tracing::info!(
                rule = &*self.name,
                kind = self.kind,
                response_code = %code,
                mode = "shadow",
                listener = facts.listener,
                channel = facts.channel.as_str(),
                pan = %pan,
                "risk rule {} would decline with {}",
                self.name,
                code
            ),
        }
    }
}

/// The compiled rules of one config snapshot.
pub struct RiskRules {
    stateless: Vec<Rule>,
    /// Where the stateless rules apply, so evaluation visits only those that do.
    scopes: ScopeIndex,
    /// Duplicate rules first, then velocity, each in config order.
    stateful: Vec<Rule>,
    summaries: Vec<RuleSummary>,
    records_approvals: bool,
    cap: usize,
    state: Arc<RiskState>,
    /// What these rules ask the shared CIT ledger to keep, while they live.
    _cit_policy: Option<Arc<state::CitPolicy>>,
    /// `[risk] state`: velocity and duplicate state in Redis.
    shared: Option<redis_state::SharedState>,
}

impl fmt::Debug for RiskRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.summaries.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("RiskRules").field("rules", &names).finish()
    }
}

impl RiskRules {
    /// Compiles `config` (reading hotlist files), taking velocity and duplicate
    /// stores from `state`: a rule with the same identity as a running one
    /// gets the running store, counts and all.
    ///
    /// A store's identity is the rule's name, kind, what it counts per, its
    /// window, whether it sums amounts and its scope; limits and mode are not
    /// part of it, so raising a limit or moving a rule from shadow to enforce
    /// keeps what it has counted.
    pub fn compile(config: &RiskConfig, state: &Arc<RiskState>) -> Result<RiskRules, RiskError> {
        // Listener names were checked against the config already; here any goes.
        let named: Vec<&str> = config
            .rules
            .iter()
            .flat_map(|r| r.applies_to.listeners.iter().map(String::as_str))
            .collect();
        config.validate(named)?;
        let cap = usize::try_from(config.max_keys_per_rule.get()).unwrap_or(usize::MAX);
        let mut stateless = Vec::new();
        let mut duplicates = Vec::new();
        let mut velocities = Vec::new();
        let mut summaries = Vec::new();
        let mut stateful_summaries = (Vec::new(), Vec::new());
        let mut cit_keep_ms = 0u64;
        for rc in &config.rules {
            let (rule, summary) = compile_rule(rc, state)?;
            if let Compiled::Recurring(r) = &rule.check {
                cit_keep_ms = cit_keep_ms.max(r.valid_ms());
            }
            match rule.check {
                Compiled::Duplicate(_) => {
                    duplicates.push(rule);
                    stateful_summaries.0.push(summary);
                }
                Compiled::Velocity(_) => {
                    velocities.push(rule);
                    stateful_summaries.1.push(summary);
                }
                _ => {
                    stateless.push(rule);
                    summaries.push(summary);
                }
            }
        }
        let records_approvals = stateless
            .iter()
            .any(|r| matches!(r.check, Compiled::Recurring(_)));
        // Registered, not set: until these rules are installed (or if they
        // never are), the running rules' needs still hold too.
        let cit_policy = records_approvals.then(|| state.cit_ledger().register(cit_keep_ms, cap));
        summaries.extend(stateful_summaries.0);
        summaries.extend(stateful_summaries.1);
        duplicates.extend(velocities);
        debug_assert!(duplicates.len() <= MAX_STATEFUL_RULES);
        let scopes = ScopeIndex::new(&stateless.iter().map(|r| &r.applies).collect::<Vec<_>>());
        let shared = match &config.state {
            Some(url) => {
                let key = shared::state_key(config)?;
                Some(
                    state
                        .shared_state(url, key)
                        .map_err(|e| RiskError::State(e.to_string()))?,
                )
            }
            None => None,
        };
        Ok(RiskRules {
            shared,
            stateless,
            scopes,
            stateful: duplicates,
            summaries,
            records_approvals,
            cap,
            state: state.clone(),
            _cit_policy: cit_policy,
        })
    }

    /// The state these rules count in (shared with later snapshots).
    pub fn state(&self) -> &Arc<RiskState> {
        &self.state
    }

    /// The rules in evaluation order.
    pub fn summaries(&self) -> &[RuleSummary] {
        &self.summaries
    }

    pub fn is_empty(&self) -> bool {
        self.summaries.is_empty()
    }

    /// Runs the rules on one request at time `now`. Every rule that fires is
    /// counted and logged here; velocity and duplicate rules record the
    /// request unless an enforcing rule declines it.
    pub fn evaluate<'r>(
        &'r self,
        ctx: &RiskContext<'_>,
        msg: &Message,
        now: Timestamp,
    ) -> Decision<'r> {
        let mut decision = Decision::default();
        if self.summaries.is_empty() {
            return decision;
        }
        let facts = Facts::new(ctx, msg, now);
        let Some(applies) = self.stateless_phase(&facts, &mut decision, true) else {
            return decision;
        };
        if self.stateful.is_empty() {
            return decision;
        }
        let mut marks = [Mark::None; MAX_STATEFUL_RULES];
        for (index, (rule, applies)) in self.stateful.iter().zip(applies).enumerate() {
            if !applies {
                continue;
            }
            let reserved = rule.reserve(&facts, self.cap);
            if let Some(slot) = marks.get_mut(index) {
                *slot = reserved.mark;
            }
            let Some(code) = reserved.code else {
                continue;
            };
            rule.emit(code, &facts);
            match rule.mode {
                Mode::Enforce => {
                    for (earlier, mark) in self.stateful.iter().zip(marks).take(index) {
                        earlier.undo(&facts, mark);
                    }
                    decision.decline = Some(rule.hit(code));
                    return decision;
                }
                Mode::Shadow => decision.shadow.push(rule.hit(code)),
            }
        }
        for (index, (rule, &mark)) in self.stateful.iter().zip(&marks).enumerate() {
            if let (Compiled::Velocity(v), Mark::Slot(slot)) = (&rule.check, mark) {
                // A count was made, so the rule's key is there.
                if let Some(key) = v.key(&facts) {
                    decision.held.push(index, slot, key, v.amount(&facts));
                }
            }
        }
        decision
    }

    /// The stateless rules, and which stateful rules apply. None when an
    /// enforcing rule declined (`decision` says which). With `prefetch`, the
    /// stateful rules' in-process records are asked for first, to arrive
    /// while the stateless rules run.
    fn stateless_phase<'r>(
        &'r self,
        facts: &Facts<'_>,
        decision: &mut Decision<'r>,
        prefetch: bool,
    ) -> Option<[bool; MAX_STATEFUL_RULES]> {
        // The stateful rules' records are most likely not in cache (one per
        // card among millions): ask for them now, and run the stateless rules
        // while they arrive.
        let mut applies = [false; MAX_STATEFUL_RULES];
        for (rule, applies) in self.stateful.iter().zip(&mut applies) {
            *applies = rule.applies.matches(facts);
            if *applies && prefetch {
                rule.prefetch(facts);
            }
        }
        for (word, mut bits, check_scope) in self.scopes.candidates(facts).words() {
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Some(rule) = self.stateless.get(word * 64 + bit) else {
                    break;
                };
                if check_scope >> bit & 1 != 0 && !rule.applies.matches(facts) {
                    continue;
                }
                let Some(code) = rule.check(facts) else {
                    continue;
                };
                rule.emit(code, facts);
                match rule.mode {
                    Mode::Enforce => {
                        decision.decline = Some(rule.hit(code));
                        return None;
                    }
                    Mode::Shadow => decision.shadow.push(rule.hit(code)),
                }
            }
        }
        Some(applies)
    }

    /// Takes back the velocity counts `held` (from one of these rules'
    /// [`evaluate`](Self::evaluate)s) when its request was not approved in
    /// the end, or was reversed: an issuer decline, no route, no answer, a
    /// terminal's reversal. It spent nothing, as with a risk decline.
    /// Duplicate records stay: a repeat of that transmission is a duplicate
    /// whatever became of the original.
    pub fn release(&self, held: &Held) {
        if let Some(shared) = &self.shared {
            shared::release(shared, &held.shared);
        }
        for (index, slot, key) in held.counts() {
            if let Some(Compiled::Velocity(v)) = self.stateful.get(index).map(|r| &r.check) {
                v.undo_keyed(key, slot, held.amount);
            }
        }
    }

    /// Whether [`record_approval`](Self::record_approval) does anything (a
    /// `recurring` rule is configured).
    pub fn records_approvals(&self) -> bool {
        self.records_approvals
    }

    /// Tells the rules the issuer approved `msg`: a cardholder-initiated
    /// purchase lets later merchant-initiated charges of that card at that
    /// merchant through. Call it after every approval; it is a no-op unless a
    /// `recurring` rule is configured.
    pub fn record_approval(&self, msg: &Message, now: Timestamp) {
        if !self.records_approvals {
            return;
        }
        let recurring = self.stateless.iter().filter_map(|r| match &r.check {
            Compiled::Recurring(rec) => Some(rec),
            _ => None,
        });
        let mut is_mit = false;
        for rule in recurring {
            is_mit |= rule.is_mit(msg);
        }
        // Only a purchase (an account verification is one of zero) shows the
        // cardholder's consent; a refund the merchant pushes does not.
        let is_purchase = msg
            .processing_code()
            .is_ok_and(|p| p.transaction_type == ProcessingCode::PURCHASE);
        if is_mit || !is_purchase {
            return;
        }
        let (Some(pan), Some(merchant)) = (msg.get(2), msg.get(42).map(trim_id)) else {
            return;
        };
        let key = channel::cit_key(card_key(pan), id_key(merchant));
        if !self.state.cit_ledger().record(key, now) {
            metrics::counter!("isoswitch_risk_state_full_total", "rule" => "cit-ledger")
                .increment(1);
        }
    }

    /// For `rules test` and tests: a velocity rule's count and amount for the
    /// request's card or terminal at `now`, without counting. None if `rule` is
    /// not a velocity rule.
    pub fn velocity_of(
        &self,
        rule: &str,
        ctx: &RiskContext<'_>,
        msg: &Message,
        now: Timestamp,
    ) -> Option<(u64, u64)> {
        let facts = Facts::new(ctx, msg, now);
        self.stateful.iter().find_map(|r| match &r.check {
            Compiled::Velocity(v) if &*r.name == rule => Some(v.peek(&facts)),
            _ => None,
        })
    }
}

fn compile_rule(rc: &RuleConfig, state: &Arc<RiskState>) -> Result<(Rule, RuleSummary), RiskError> {
    let name = rc.name.as_str();
    let kind = rc.check.kind();
    let cnp_default: &[Channel] = match rc.check {
        Check::EntryMode { .. } | Check::CardBrand { .. } => &[Channel::VirtualTerminal],
        _ => &[],
    };
    let identity = |extra: String| format!("{kind}|{name}|{extra}|{:?}", rc.applies_to);
    let (check, codes, detail): (Compiled, Vec<ResponseCode>, String) = match &rc.check {
        Check::CardNumber {
            min_length,
            max_length,
        } => (
            Compiled::CardNumber(card::CardNumber {
                min_length: usize::from(*min_length),
                max_length: usize::from(*max_length),
            }),
            vec![ResponseCode::INVALID_CARD_NUMBER],
            format!("Luhn check digit, length {min_length}–{max_length}"),
        ),
        Check::Expiry {} => (
            Compiled::Expiry(card::Expiry),
            vec![ResponseCode::EXPIRED_CARD],
            "field 14 not before the transaction month".to_owned(),
        ),
        Check::Hotlist { file } => {
            let list = hotlist::Hotlist::load(name, file)?;
            let (pans, bins) = list.sizes();
            (
                Compiled::Hotlist(Box::new(list)),
                vec![
                    ResponseCode::LOST_CARD,
                    ResponseCode::STOLEN_CARD,
                    ResponseCode::RESTRICTED_CARD,
                ],
                format!("{}: {pans} cards, {bins} BIN patterns", file.display()),
            )
        }
        Check::Terminal {
            known_terminals,
            known_merchants,
            blocked_terminals,
            blocked_merchants,
        } => {
            let terminals = merchant::Terminals::new(
                known_terminals.as_deref(),
                known_merchants.as_deref(),
                blocked_terminals,
                blocked_merchants,
            );
            let detail = terminals.describe();
            (
                Compiled::Terminal(Box::new(terminals)),
                vec![ResponseCode::INVALID_MERCHANT],
                detail,
            )
        }
        Check::Mcc { allow, block } => {
            let (word, list) = if allow.is_empty() {
                ("block", block)
            } else {
                ("allow", allow)
            };
            let list: Vec<String> = list.iter().map(ToString::to_string).collect();
            (
                Compiled::Mcc(merchant::Mccs::new(allow, block)),
                vec![ResponseCode::NOT_PERMITTED_TO_TERMINAL],
                format!("{word} {}", list.join(",")),
            )
        }
        Check::Currency {
            allow,
            response_code,
        } => {
            let list: Vec<String> = allow.iter().map(ToString::to_string).collect();
            (
                Compiled::Currency(merchant::Currencies::new(allow, response_code.0)),
                vec![response_code.0],
                format!("allow {}", list.join(",")),
            )
        }
        Check::Amount { min, max } => {
            let amounts = amount::Amounts {
                min: *min,
                max: *max,
            };
            let detail = amounts.describe();
            (
                Compiled::Amount(amounts),
                vec![
                    ResponseCode::INVALID_AMOUNT,
                    ResponseCode::EXCEEDS_AMOUNT_LIMIT,
                ],
                detail,
            )
        }
        Check::EntryMode { refuse } => {
            let list: Vec<String> = refuse.iter().map(|m| format!("{m}x")).collect();
            (
                Compiled::EntryMode(channel::EntryModes::new(refuse)),
                vec![ResponseCode::NOT_PERMITTED_TO_TERMINAL],
                format!("refuse entry modes {}", list.join(",")),
            )
        }
        Check::CardBrand { brands, bins } => {
            let table = config::brand_table(&rc.check).map_err(|problem| InvalidRule {
                rule: name.to_owned(),
                key: "bins",
                problem,
            })?;
            let mut refused: Vec<String> = brands.iter().map(|b| b.as_str().to_owned()).collect();
            refused.extend(bins.iter().map(ToString::to_string));
            (
                Compiled::CardBrand(channel::CardBrands {
                    table: bin_leads::LeadFiltered::new(table),
                }),
                vec![ResponseCode::NOT_PERMITTED_TO_CARDHOLDER],
                format!("refuse {}", refused.join(",")),
            )
        }
        Check::Recurring {
            mit_field,
            mit_values,
            cit_valid_days,
            response_code,
        } => {
            let recurring = channel::Recurring::new(
                *mit_field,
                mit_values,
                *cit_valid_days,
                response_code.0,
                state.cit_ledger().clone(),
            );
            let detail = recurring.describe();
            (
                Compiled::Recurring(recurring),
                vec![response_code.0],
                detail,
            )
        }
        Check::Velocity {
            per,
            window_s,
            max_count,
            max_amount,
        } => {
            let window_ms = window_s.saturating_mul(1000);
            let store = if max_amount.is_some() {
                velocity::Store::Sum(
                    state.store(identity(format!("{}|{window_s}|sum", per.as_str())), || {
                        SumStore::new(window_ms)
                    }),
                )
            } else {
                velocity::Store::Count(state.store(
                    identity(format!("{}|{window_s}|count", per.as_str())),
                    || CountStore::new(window_ms),
                ))
            };
            let v = velocity::Velocity {
                per: *per,
                window_s: *window_s,
                limits: Limits {
                    max_count: *max_count,
                    max_amount: *max_amount,
                },
                store,
            };
            let mut codes = Vec::new();
            if max_count.is_some() {
                codes.push(ResponseCode::EXCEEDS_FREQUENCY_LIMIT);
            }
            if max_amount.is_some() {
                codes.push(ResponseCode::EXCEEDS_AMOUNT_LIMIT);
            }
            let detail = v.describe();
            (Compiled::Velocity(v), codes, detail)
        }
        Check::Duplicate { window_s } => {
            let window_ms = window_s.saturating_mul(1000);
            let store = state.store(identity(format!("{window_s}")), || {
                state::DuplicateStore::new(window_ms)
            });
            (
                Compiled::Duplicate(duplicate::Duplicate {
                    window_s: *window_s,
                    store,
                }),
                vec![ResponseCode::DUPLICATE_TRANSMISSION],
                format!("same terminal, STAN and field 7 within {window_s} s"),
            )
        }
    };
    let counters = codes
        .iter()
        .map(|code| {
            let counter = metrics::counter!(
                "isoswitch_risk_decisions_total",
                "rule" => name.to_owned(),
                "response_code" => code.as_str().to_owned(),
                "mode" => rc.mode.as_str(),
            );
            (*code, counter)
        })
        .collect();
    let rule = Rule {
        name: name.into(),
        kind,
        mode: rc.mode,
        applies: Applies::new(&rc.applies_to, cnp_default),
        check,
        counters,
        state_full: metrics::counter!("isoswitch_risk_state_full_total", "rule" => name.to_owned()),
        on_state_error: rc.on_state_error.unwrap_or(OnStateError::Local),
    };
    let summary = RuleSummary {
        name: name.to_owned(),
        kind,
        mode: rc.mode,
        codes,
        applies_to: Applies::describe(&rc.applies_to, cnp_default),
        detail,
    };
    Ok((rule, summary))
}
