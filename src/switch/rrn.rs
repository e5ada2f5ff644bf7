//! Retrieval reference numbers for requests that arrive without one (field
//! 37, 12 digits): the instance's digit, then a counter that is the unix time
//! in seconds (last six digits) followed by five digits of sequence. It never
//! goes back: a second with more than 100 000 requests borrows from the next.
//! So an instance's RRNs repeat only after 10^11 of them (11.6 days at
//! 100 000/s), are new after a restart (the clock has moved on), and never
//! equal another instance's with another digit (`[instance] rrn_digit`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Sequence numbers per second of the counter.
const PER_SECOND: u64 = 100_000;
/// The counter's range: eleven digits.
const CYCLE: u64 = 100_000_000_000;

/// One instance's RRNs.
#[derive(Debug)]
pub(super) struct RrnSource {
    digit: u8,
    /// The last counter value handed out (seconds × [`PER_SECOND`] + sequence).
    last: AtomicU64,
}

impl RrnSource {
    /// RRNs starting with `digit` (0–9; anything above is taken modulo 10).
    pub(super) fn new(digit: u8) -> RrnSource {
        RrnSource {
            digit: digit % 10,
            last: AtomicU64::new(0),
        }
    }

    pub(super) fn next(&self) -> [u8; 12] {
        self.next_at(unix_seconds())
    }

    fn next_at(&self, now_seconds: u64) -> [u8; 12] {
        let floor = now_seconds.saturating_mul(PER_SECOND);
        let mut current = self.last.load(Ordering::Relaxed);
        let counter = loop {
            let candidate = floor.max(current + 1);
            match self.last.compare_exchange_weak(
                current,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break candidate,
                Err(seen) => current = seen,
            }
        };
        let mut out = [b'0'; 12];
        out[0] = b'0' + self.digit;
        let mut n = counter % CYCLE;
        for slot in out[1..].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn text(rrn: [u8; 12]) -> String {
        String::from_utf8(rrn.to_vec()).expect("digits")
    }

    #[test]
    fn twelve_digits_led_by_the_instance_digit_then_time_and_sequence() {
        let source = RrnSource::new(7);
        assert_eq!(text(source.next_at(1_796_669_708)), "766970800000");
        assert_eq!(text(source.next_at(1_796_669_708)), "766970800001");
        assert_eq!(text(source.next_at(1_796_669_709)), "766970900000");
    }

    #[test]
    fn a_busy_second_borrows_from_the_next_and_never_repeats() {
        let source = RrnSource::new(0);
        let mut seen = HashSet::new();
        // 250 000 in one second: the counter runs 2.5 seconds ahead.
        for _ in 0..250_000 {
            assert!(seen.insert(source.next_at(1_000)), "repeated");
        }
        assert_eq!(text(source.next_at(1_001)), "000100250000");
        // Once the clock passes it, the counter follows the clock again.
        assert_eq!(text(source.next_at(1_010)), "000101000000");
    }

    #[test]
    fn a_restart_later_starts_past_the_last_run() {
        let before = RrnSource::new(3).next_at(5_000);
        let after = RrnSource::new(3).next_at(5_001);
        assert!(after > before);
        assert_ne!(RrnSource::new(4).next_at(5_000), before, "another instance");
    }

    #[test]
    fn concurrent_callers_never_get_the_same_rrn() {
        let source = std::sync::Arc::new(RrnSource::new(1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let source = source.clone();
                std::thread::spawn(move || (0..20_000).map(|_| source.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for handle in handles {
            for rrn in handle.join().expect("thread") {
                assert!(all.insert(rrn));
            }
        }
        assert_eq!(all.len(), 80_000);
    }
}
