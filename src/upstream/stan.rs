//! STAN allocation for one link, and the table of timed-out requests whose
//! answers may still arrive late (so they are recognised, not called unmatched).

use std::collections::{HashMap, VecDeque};
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
    pub reversal_queued: bool,
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

/// The link's STAN counter: 000001..=999999, cycling.
pub(super) struct StanCounter {
    next: u32,
}

impl StanCounter {
    pub(super) fn new(first: u32) -> StanCounter {
        StanCounter {
            next: first.clamp(1, STAN_MAX),
        }
    }

    /// The next STAN for which `busy` is false; None if every one is busy.
    pub(super) fn allocate(&mut self, busy: impl Fn(u32) -> bool) -> Option<Stan> {
        for _ in 0..STAN_MAX {
            let candidate = self.next;
            self.next = if candidate >= STAN_MAX {
                1
            } else {
                candidate + 1
            };
            if !busy(candidate) {
                return Some(Stan(candidate));
            }
        }
        None
    }
}

/// Where link `index` of `count` starts counting, so an issuer's links rarely use
/// the same STAN at the same moment.
pub(crate) fn first_stan(index: usize, count: usize) -> u32 {
    let spacing = STAN_MAX as usize / count.max(1);
    u32::try_from(1 + index.saturating_mul(spacing) % STAN_MAX as usize).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stan_counter_cycles_and_skips_busy_stans() {
        let mut stans = StanCounter::new(STAN_MAX - 1);
        assert_eq!(stans.allocate(|_| false), Some(Stan(STAN_MAX - 1)));
        assert_eq!(stans.allocate(|s| s == STAN_MAX), Some(Stan(1)));
        assert_eq!(stans.allocate(|s| s == 2 || s == 3), Some(Stan(4)));
        assert_eq!(stans.allocate(|_| true), None);
    }

    #[test]
    fn links_of_one_issuer_start_their_stans_apart() {
        assert_eq!(first_stan(0, 1), 1);
        assert_eq!(first_stan(0, 4), 1);
        assert_eq!(first_stan(1, 4), 249_999 + 1);
        assert!((1..=STAN_MAX).contains(&first_stan(3, 4)));
    }

    #[test]
    fn late_table_forgets_old_entries_by_age_and_count() {
        let start = Instant::now();
        let mut late = LateTable::default();
        let entry = |expires| LateEntry {
            expires,
            expected: None,
            reversal_queued: true,
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
