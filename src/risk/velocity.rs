//! Velocity: how many transactions, and how much money, one card or terminal
//! has had within a sliding window: over the count 65, over the amount 61.
//! Only transactions that pass every enforcing rule are counted (a declined
//! attempt has not spent anything), refunds add to the count but not the sum.

use std::sync::Arc;

use super::config::Per;
use super::state::{CountStore, Limits, SumStore, Tally};
use super::{Facts, Mark, Reserved};
use crate::iso8583::fields::ProcessingCode;
use crate::iso8583::ResponseCode;

/// The store a velocity rule counts in: amounts only when it limits them.
pub(crate) enum Store {
    Count(Arc<CountStore>),
    Sum(Arc<SumStore>),
}

/// One velocity rule.
pub(crate) struct Velocity {
    pub per: Per,
    pub window_s: u64,
    pub limits: Limits,
    pub store: Store,
}

impl std::fmt::Debug for Velocity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Velocity")
            .field("per", &self.per)
            .field("window_s", &self.window_s)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Velocity {
    pub fn key(&self, facts: &Facts<'_>) -> Option<u64> {
        match self.per {
            Per::Card => facts.card_key(),
            Per::Terminal => facts.terminal_key(),
        }
    }

    /// What this transaction adds to the cumulative amount.
    pub fn amount(&self, facts: &Facts<'_>) -> u64 {
        match facts.transaction_type() {
            Some(ProcessingCode::REFUND) => 0,
            _ => facts.amount().unwrap_or(0),
        }
    }

    /// Starts loading the window [`reserve`](Self::reserve) will check.
    pub fn prefetch(&self, facts: &Facts<'_>) {
        if let Some(key) = self.key(facts) {
            match &self.store {
                Store::Count(s) => s.prefetch(key),
                Store::Sum(s) => s.prefetch(key),
            }
        }
    }

    /// Checks the window with this transaction in it, and counts it if it fits
    /// (or `force`, for shadow rules: the transaction goes on either way).
    pub fn reserve(&self, facts: &Facts<'_>, force: bool, cap: usize) -> Reserved {
        // A request without the key (no PAN, no terminal) has nothing to count.
        let Some(key) = self.key(facts) else {
            return Reserved::default();
        };
        let amount = self.amount(facts);
        let tally = match &self.store {
            Store::Count(s) => s.tally(key, facts.now, amount, self.limits, force, cap),
            Store::Sum(s) => s.tally(key, facts.now, amount, self.limits, force, cap),
        };
        match tally {
            Tally::Counted { slot } => Reserved {
                mark: Mark::Slot(slot),
                ..Reserved::default()
            },
            Tally::Over {
                count_exceeded,
                counted_slot,
            } => Reserved {
                code: Some(if count_exceeded {
                    ResponseCode::EXCEEDS_FREQUENCY_LIMIT
                } else {
                    ResponseCode::EXCEEDS_AMOUNT_LIMIT
                }),
                mark: counted_slot.map_or(Mark::None, Mark::Slot),
                untracked: false,
            },
            Tally::Untracked => Reserved {
                untracked: true,
                ..Reserved::default()
            },
        }
    }

    /// Takes back a count made by [`reserve`](Self::reserve).
    pub fn undo(&self, facts: &Facts<'_>, mark: Mark) {
        if let (Mark::Slot(slot), Some(key)) = (mark, self.key(facts)) {
            self.undo_keyed(key, slot, self.amount(facts));
        }
    }

    /// Takes back a count of `amount` made in `slot` for `key`.
    pub fn undo_keyed(&self, key: u64, slot: u64, amount: u64) {
        match &self.store {
            Store::Count(s) => s.undo(key, slot, amount),
            Store::Sum(s) => s.undo(key, slot, amount),
        }
    }

    /// Count and amount `facts`' key has in the window now, without counting.
    pub fn peek(&self, facts: &Facts<'_>) -> (u64, u64) {
        let Some(key) = self.key(facts) else {
            return (0, 0);
        };
        match &self.store {
            Store::Count(s) => s.peek(key, facts.now),
            Store::Sum(s) => s.peek(key, facts.now),
        }
    }

    pub fn describe(&self) -> String {
        let mut limits = Vec::new();
        if let Some(n) = self.limits.max_count {
            limits.push(format!("{n} transactions (65)"));
        }
        if let Some(a) = self.limits.max_amount {
            limits.push(format!("{a} minor units (61)"));
        }
        format!(
            "per {} within {} s: at most {}",
            self.per.as_str(),
            self.window_s,
            limits.join(" and ")
        )
    }
}
