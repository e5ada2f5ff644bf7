//! Rate limits for log lines a peer can cause at will: a terminal sending
//! garbage, a crowd of connections past the cap, an issuer flooding unmatched
//! answers. The metrics count every event; the log gets at most a few lines a
//! second of each kind, and the next line written says how many were left out,
//! so a hostile peer cannot fill the disk or drown the lines that matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Lines of one kind: at most `per_second` in each whole second.
pub struct LogLimit {
    per_second: u64,
    /// The second (since the process's first use of any limit) and how many
    /// lines were let through in it, packed: second << 20 | count.
    window: AtomicU64,
    /// Lines refused since the last one let through.
    suppressed: AtomicU64,
}

const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn seconds_since_start() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

impl LogLimit {
    /// At most `per_second` lines a second (capped at about a million).
    pub const fn new(per_second: u64) -> LogLimit {
        LogLimit {
            per_second: if per_second > COUNT_MASK {
                COUNT_MASK
            } else {
                per_second
            },
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now; if so, how many lines of this kind
    /// were left out since the last one written (to put in the line).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(seconds_since_start())
    }

    fn admit_at(&self, second: u64) -> Option<u64> {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, count) = (current >> COUNT_BITS, current & COUNT_MASK);
            let next = if window_second == second {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (second << COUNT_BITS) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_through_the_allowance_each_second_and_reports_what_it_left_out() {
        let limit = LogLimit::new(3);
        let first: Vec<_> = (0..5).map(|_| limit.admit_at(7)).collect();
        assert_eq!(first, [Some(0), Some(0), Some(0), None, None]);
        // The next second: the first line says two were left out.
        assert_eq!(limit.admit_at(8), Some(2));
        assert_eq!(limit.admit_at(8), Some(0));
    }

    #[test]
    fn concurrent_callers_never_exceed_the_allowance() {
        let limit = std::sync::Arc::new(LogLimit::new(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limit = limit.clone();
                std::thread::spawn(move || {
                    (0..1_000).filter(|_| limit.admit_at(1).is_some()).count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(admitted, 100);
        assert_eq!(limit.admit_at(2), Some(3_900));
    }
}
