//! The simulator's memory of what it received lately (reversals, advices), so
//! in-process tests can ask after the fact: a fixed ring, oldest dropped first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// A ring slot: the record and the sequence number it was written under.
type Slot<T> = Mutex<Option<(u64, T)>>;

/// A ring of the last records. Each writer claims its own slot by sequence
/// number, so writers only contend when the ring has wrapped onto them.
pub(crate) struct RecentLog<T> {
    slots: Box<[Slot<T>]>,
    next: AtomicU64,
}

impl<T: Clone> RecentLog<T> {
    pub(crate) fn new(capacity: usize) -> RecentLog<T> {
        RecentLog {
            slots: (0..capacity.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicU64::new(0),
        }
    }

    fn slot(&self, seq: u64) -> &Slot<T> {
        &self.slots[(seq % self.slots.len() as u64) as usize]
    }

    pub(crate) fn push(&self, record: T) {
        let seq = self.next.fetch_add(1, Ordering::AcqRel);
        let mut slot = self
            .slot(seq)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A slow writer must not overwrite a newer record that wrapped past it.
        if !matches!(&*slot, Some((held, _)) if *held > seq) {
            *slot = Some((seq, record));
        }
    }

    /// The records still held, oldest first.
    pub(crate) fn list(&self) -> Vec<T> {
        let end = self.next.load(Ordering::Acquire);
        let start = end.saturating_sub(self.slots.len() as u64);
        (start..end)
            .filter_map(|seq| {
                let slot = self
                    .slot(seq)
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match &*slot {
                    Some((held, record)) if *held == seq => Some(record.clone()),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_log_keeps_the_most_recent_records() {
        let log = RecentLog::new(3);
        for n in 1..=5 {
            log.push(n);
        }
        assert_eq!(log.list(), vec![3, 4, 5]);
    }
}
