//! Evaluation when velocity and duplicate state is shared by several
//! instances (`[risk] state`, Redis): the stateless rules run as always,
//! then each stateful rule asks the shared state (one round trip each).
//! When it cannot be reached, each rule does what its `on_state_error` says:
//! decline with 96, or check and count in this process (`local`) until it
//! is back; either is counted in `isoswitch_risk_state_errors_total` and
//! logged (at most once a second per rule).

use std::sync::atomic::{AtomicI64, Ordering};

use super::config::{RiskConfig, STATE_KEY_ENV};
use super::redis_state::{SharedState, StateError};
use super::velocity::Velocity;
use super::{
    Compiled, Decision, Facts, Mark, OnStateError, RiskContext, RiskError, RiskRules, Rule,
    Timestamp, MAX_STATEFUL_RULES,
};
use crate::iso8583::{Message, ResponseCode};
use crate::risk::config::Mode;

/// The key Redis keys are hashed under: [`STATE_KEY_ENV`] (64 hex digits),
/// else `state_key_file` (32 bytes or 64 hex digits). Never generated: every
/// instance must use the same.
pub(super) fn state_key(config: &RiskConfig) -> Result<[u8; 32], RiskError> {
    let parse = |bytes: &[u8]| -> Option<[u8; 32]> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Some(raw);
        }
        let text = std::str::from_utf8(bytes).ok()?.trim();
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).ok()?;
        Some(key)
    };
    if let Some(value) = std::env::var_os(STATE_KEY_ENV) {
        let text = value.to_str().unwrap_or_default().trim().to_owned();
        return parse(text.as_bytes())
            .filter(|_| text.len() == 64)
            .ok_or_else(|| {
                RiskError::State(format!(
                    "{STATE_KEY_ENV}: expected 64 hex digits (a 256-bit key)"
                ))
            });
    }
    let Some(path) = &config.state_key_file else {
        return Err(RiskError::State(format!(
            "state_key_file: expected the key every instance hashes card numbers under \
             (or {STATE_KEY_ENV}), found none"
        )));
    };
    let bytes = std::fs::read(path).map_err(|e| {
        RiskError::State(format!(
            "state_key_file: cannot read {}: {e}",
            path.display()
        ))
    })?;
    parse(&bytes).ok_or_else(|| {
        RiskError::State(format!(
            "state_key_file: {}: expected 32 bytes or 64 hex digits",
            path.display()
        ))
    })
}

/// One stateful rule's question to the shared state, built before the
/// round trip (so nothing borrowed from the request is held across it).
enum Ask {
    Velocity {
        key: String,
        now_ms: i64,
        window_ms: u64,
        amount: u64,
        max_count: Option<u32>,
        max_amount: Option<u64>,
        force: bool,
    },
    Transmission {
        key: String,
        window_ms: u64,
    },
}

/// A count or record made in the shared state, to take back.
enum Made {
    Count { key: String, member: String },
    Transmission { key: String },
}

fn ask(shared: &SharedState, rule: &Rule, facts: &Facts<'_>) -> Option<Ask> {
    match &rule.check {
        Compiled::Velocity(v) => {
            let (what, part) = match v.per {
                super::config::Per::Card => ("card", facts.pan?),
                super::config::Per::Terminal => ("terminal", facts.terminal()?),
            };
            Some(Ask::Velocity {
                key: shared.key(&rule.name, what, &[part]),
                now_ms: i64::try_from(facts.now.unix_ms()).unwrap_or(i64::MAX),
                window_ms: v.window_s.saturating_mul(1000),
                amount: Velocity::amount(v, facts),
                max_count: v.limits.max_count,
                max_amount: v.limits.max_amount,
                force: rule.mode == Mode::Shadow,
            })
        }
        Compiled::Duplicate(d) => {
            // Without field 7 a STAN alone could repeat legitimately.
            let (terminal, stan, time) = (facts.terminal()?, facts.msg.get(11)?, facts.msg.get(7)?);
            Some(Ask::Transmission {
                key: shared.key(&rule.name, "tx", &[terminal, stan, time]),
                window_ms: d.window_s.saturating_mul(1000),
            })
        }
        _ => None,
    }
}

/// The code the shared state gives, and what it recorded.
async fn answer(
    shared: &SharedState,
    ask: Ask,
) -> Result<(Option<ResponseCode>, Option<Made>), StateError> {
    match ask {
        Ask::Velocity {
            key,
            now_ms,
            window_ms,
            amount,
            max_count,
            max_amount,
            force,
        } => {
            let tally = shared
                .velocity(
                    &key, now_ms, window_ms, amount, max_count, max_amount, force,
                )
                .await?;
            let code = tally.over.map(|count_exceeded| {
                if count_exceeded {
                    ResponseCode::EXCEEDS_FREQUENCY_LIMIT
                } else {
                    ResponseCode::EXCEEDS_AMOUNT_LIMIT
                }
            });
            Ok((
                code,
                tally.counted.map(|member| Made::Count { key, member }),
            ))
        }
        Ask::Transmission { key, window_ms } => {
            if shared.first_transmission(&key, window_ms).await? {
                Ok((None, Some(Made::Transmission { key })))
            } else {
                Ok((Some(ResponseCode::DUPLICATE_TRANSMISSION), None))
            }
        }
    }
}

/// Takes back `made` in the background (a decline, or a request not
/// approved in the end); a failure is logged: the count then ages out with
/// its window.
fn take_back(shared: &SharedState, made: Vec<Made>) {
    if made.is_empty() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let shared = shared.clone();
    runtime.spawn(async move {
        for m in made {
            let result = match &m {
                Made::Count { key, member } => shared.velocity_undo(key, member).await,
                Made::Transmission { key } => shared.forget_transmission(key).await,
            };
            if let Err(error) = result {
                tracing::warn!(%error, "risk count not taken back in the shared state; it expires with its window");
            }
        }
    });
}

/// Gives back the shared counts of a request not approved in the end.
pub(super) fn release(shared: &SharedState, counts: &[(String, String)]) {
    let made = counts
        .iter()
        .map(|(key, member)| Made::Count {
            key: key.clone(),
            member: member.clone(),
        })
        .collect();
    take_back(shared, made);
}

/// Unix ms of the last state-error log line, so an outage logs a line a
/// second, not one a request; the metric counts every one.
static LAST_LOGGED_MS: AtomicI64 = AtomicI64::new(0);

/// Counts and logs, together, a rule that could not reach the shared state.
fn state_error(rule: &Rule, error: &StateError) {
    let action = rule.on_state_error.as_str();
    metrics::counter!(
        "isoswitch_risk_state_errors_total",
        "rule" => rule.name.to_string(),
        "action" => action,
    )
    .increment(1);
    let now = i64::try_from(super::Timestamp::now().unix_ms()).unwrap_or(i64::MAX);
    let last = LAST_LOGGED_MS.load(Ordering::Relaxed);
    if now - last >= 1000
        && LAST_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        match rule.on_state_error {
            OnStateError::Decline => tracing::error!(
                rule = %rule.name, %error,
                "risk state unreachable; declining with 96 (on_state_error = \"decline\")"
            ),
            OnStateError::Local => tracing::warn!(
                rule = %rule.name, %error,
                "risk state unreachable; counting in this process (on_state_error = \"local\")"
            ),
        }
    }
}

impl RiskRules {
    /// Whether velocity and duplicate state is shared with other instances
    /// (then [`RiskRules::evaluate_shared`] must be used).
    pub fn shares_state(&self) -> bool {
        self.shared.is_some()
    }

    /// [`RiskRules::evaluate`] with the velocity and duplicate rules asking
    /// the shared state, one round trip per rule. Without shared state it
    /// is `evaluate`.
    pub async fn evaluate_shared<'r>(
        &'r self,
        ctx: &RiskContext<'_>,
        msg: &Message,
        now: Timestamp,
    ) -> Decision<'r> {
        let Some(shared) = &self.shared else {
            return self.evaluate(ctx, msg, now);
        };
        let mut decision = Decision::default();
        if self.summaries.is_empty() {
            return decision;
        }
        let facts = Facts::new(ctx, msg, now);
        let Some(applies) = self.stateless_phase(&facts, &mut decision, false) else {
            return decision;
        };
        let mut marks = [Mark::None; MAX_STATEFUL_RULES];
        let mut made: Vec<Made> = Vec::new();
        for (index, (rule, applies)) in self.stateful.iter().zip(applies).enumerate() {
            if !applies {
                continue;
            }
            let Some(question) = ask(shared, rule, &facts) else {
                continue;
            };
            let code = match answer(shared, question).await {
                Ok((code, recorded)) => {
                    made.extend(recorded);
                    code
                }
                Err(error) => {
                    state_error(rule, &error);
                    match rule.on_state_error {
                        OnStateError::Decline => Some(ResponseCode::SYSTEM_MALFUNCTION),
                        OnStateError::Local => {
                            let reserved = rule.reserve(&facts, self.cap);
                            if let Some(slot) = marks.get_mut(index) {
                                *slot = reserved.mark;
                            }
                            reserved.code
                        }
                    }
                }
            };
            let Some(code) = code else {
                continue;
            };
            rule.emit(code, &facts);
            match rule.mode {
                Mode::Enforce => {
                    for (earlier, mark) in self.stateful.iter().zip(marks).take(index) {
                        earlier.undo(&facts, mark);
                    }
                    take_back(shared, made);
                    decision.decline = Some(rule.hit(code));
                    return decision;
                }
                Mode::Shadow => decision.shadow.push(rule.hit(code)),
            }
        }
        for (index, (rule, &mark)) in self.stateful.iter().zip(&marks).enumerate() {
            if let (Compiled::Velocity(v), Mark::Slot(slot)) = (&rule.check, mark) {
                if let Some(key) = v.key(&facts) {
                    decision.held.push(index, slot, key, v.amount(&facts));
                }
            }
        }
        for m in made {
            if let Made::Count { key, member } = m {
                decision.held.shared.push((key, member));
            }
        }
        if let Some(v) = self.stateful.iter().find_map(|r| match &r.check {
            Compiled::Velocity(v) => Some(v),
            _ => None,
        }) {
            decision.held.amount = v.amount(&facts);
        }
        decision
    }
}
