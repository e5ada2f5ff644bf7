//! Duplicate transmission: the same terminal (41), STAN (11) and transmission
//! time (7) again within the window gives 94. The first is recorded when it is
//! evaluated, not when it is answered, so a repeat sent while the original is
//! still at the issuer is caught too; repeat MTIs (0101, 0201) match their
//! originals because the MTI is not part of the key.

use std::sync::Arc;

use super::state::{digits_as_nibbles, keyed_hash, mix, DuplicateStore, Seen};
use super::{Facts, Mark, Reserved};
use crate::iso8583::ResponseCode;

/// One duplicate rule.
pub(crate) struct Duplicate {
    pub window_s: u64,
    pub store: Arc<DuplicateStore>,
}

impl std::fmt::Debug for Duplicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Duplicate")
            .field("window_s", &self.window_s)
            .finish()
    }
}

/// A transmission's key (terminal, STAN, field 7); see [`Facts::transmission_key`].
pub(crate) fn transmission_key(facts: &Facts<'_>) -> Option<u64> {
    let stan = facts.msg.get(11)?;
    // Without field 7 a STAN alone could repeat legitimately after wrapping.
    let time = facts.msg.get(7)?;
    let terminal = facts.terminal_key()?;
    let nibbles = |v: &[u8], max: usize| (v.len() == max).then(|| digits_as_nibbles(v))?;
    match (nibbles(stan, 6), nibbles(time, 10)) {
        // The usual case (6-digit STAN, MMDDhhmmss): the terminal's keyed key
        // mixed with STAN and time packed as nibbles into one word.
        (Some(stan), Some(time)) => Some(mix(terminal ^ mix(stan << 40 | time))),
        _ => Some(keyed_hash(&[b"dup", facts.terminal()?, stan, time])),
    }
}

impl Duplicate {
    /// Starts loading the record [`reserve`](Self::reserve) will check.
    pub fn prefetch(&self, facts: &Facts<'_>) {
        if let Some(key) = facts.transmission_key() {
            self.store.prefetch(key);
        }
    }

    pub fn reserve(&self, facts: &Facts<'_>, cap: usize) -> Reserved {
        let Some(key) = facts.transmission_key() else {
            return Reserved::default();
        };
        match self.store.check_and_record(key, facts.now, cap) {
            Seen::First { stamp } => Reserved {
                mark: Mark::Stamp(stamp),
                ..Reserved::default()
            },
            Seen::Again => Reserved {
                code: Some(ResponseCode::DUPLICATE_TRANSMISSION),
                ..Reserved::default()
            },
            Seen::Untracked => Reserved {
                untracked: true,
                ..Reserved::default()
            },
        }
    }

    /// Forgets the record [`reserve`](Self::reserve) made: a later rule
    /// declined, and the terminal's repeat should meet that rule again, not 94.
    pub fn undo(&self, facts: &Facts<'_>, mark: Mark) {
        if let (Mark::Stamp(stamp), Some(key)) = (mark, facts.transmission_key()) {
            self.store.undo(key, stamp);
        }
    }
}
