//! STAN allocation for an issuer, and the table of timed-out requests whose
//! answers may still arrive late (so they are recognised, not called unmatched).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::iso8583::{Mti, Stan};

/// Highest STAN; the counter cycles 000001..=999999.
pub(super) const STAN_MAX: u32 = 999_999;
/// How long a timed-out request is remembered so its response is recognised as late.
pub(super) const LATE_RETENTION: Duration = Duration::from_secs(60);
/// At most this many timed-out requests are remembered; the oldest go first.
const LATE_CAPACITY: usize = 10_000;

/// A timed-out request, remembered so its response is recognised as late.
pub(super) struct LateEntry {
    pub expires: Instant,
    pub expected: Option<Mti>,
}

/// Timed-out requests by STAN, bounded in age and number.
#[derive(Default)]
pub(super) struct LateTable {
    entries: HashMap<u32, LateEntry>,
    order: VecDeque<(Instant, u32)>,
}

impl LateTable {
    pub(super) fn insert(&mut self, stan: u32, entry: LateEntry) {
        while self.entries.len() >= LATE_CAPACITY {
            match self.order.pop_front() {
                Some((_, oldest)) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back((entry.expires, stan));
        self.entries.insert(stan, entry);
    }

    pub(super) fn contains(&self, stan: u32) -> bool {
        self.entries.contains_key(&stan)
    }

    pub(super) fn take(&mut self, stan: u32) -> Option<LateEntry> {
        self.entries.remove(&stan)
    }

    pub(super) fn put_back(&mut self, stan: u32, entry: LateEntry) {
        self.entries.insert(stan, entry);
    }

    pub(super) fn purge(&mut self, now: Instant) {
        while let Some(&(expires, stan)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            // The STAN may have been taken and reused since; only drop the old entry.
            if self
                .entries
                .get(&stan)
                .is_some_and(|e| e.expires == expires)
            {
                self.entries.remove(&stan);
            }
        }
    }
}

/// An issuer's STANs: 000001..=999999, cycling, shared by all its links. The
/// switch takes one before it forwards a request, so the write-ahead journal
/// record already names the STAN a reversal will have to name.
#[derive(Debug)]
pub(crate) struct StanSource {
    next: AtomicU32,
}

impl StanSource {
    /// Starts at `first`, clamped into range.
    pub(crate) fn starting_at(first: u32) -> StanSource {
        StanSource {
            next: AtomicU32::new(first.clamp(1, STAN_MAX) - 1),
        }
    }

    /// Starts somewhere depending on the clock, so a restarted switch does not
    /// send the issuer the STANs of its last minutes again.
    pub(crate) fn from_clock() -> StanSource {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        StanSource::starting_at((nanos % u128::from(STAN_MAX)) as u32 + 1)
    }

    pub(crate) fn next(&self) -> Stan {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % STAN_MAX;
        Stan(n + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stans_cycle_through_000001_to_999999() {
        let stans = StanSource::starting_at(STAN_MAX - 1);
        assert_eq!(stans.next(), Stan(STAN_MAX - 1));
        assert_eq!(stans.next(), Stan(STAN_MAX));
        assert_eq!(stans.next(), Stan(1));
        assert_eq!(StanSource::starting_at(0).next(), Stan(1));
        let clocked = StanSource::from_clock().next();
        assert!((1..=STAN_MAX).contains(&clocked.0));
    }

    #[test]
    fn late_table_forgets_old_entries_by_age_and_count() {
        let start = Instant::now();
        let mut late = LateTable::default();
        let entry = |expires| LateEntry {
            expires,
            expected: None,
        };
        late.insert(1, entry(start + Duration::from_secs(1)));
        late.insert(2, entry(start + Duration::from_secs(5)));
        late.purge(start + Duration::from_secs(2));
        assert!(!late.contains(1));
        assert!(late.contains(2));
        for stan in 10..10 + LATE_CAPACITY as u32 {
            late.insert(stan, entry(start + Duration::from_secs(10)));
        }
        assert!(!late.contains(2), "the oldest goes when full");
        assert_eq!(late.entries.len(), LATE_CAPACITY);
    }
}
