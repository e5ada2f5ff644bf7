//! Reconnect and retry delays: capped exponential backoff with jitter, shared by
//! the link's reconnect loop and store-and-forward's retries.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Capped exponential backoff with "equal jitter": half the delay fixed, half random,
/// so a fleet of links does not reconnect in step.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
    random: u64,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        // RandomState is seeded per process; good enough to spread reconnects.
        let seed = RandomState::new().hash_one(std::process::id()) | 1;
        Backoff {
            first,
            max,
            current: first,
            random: seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.first;
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (base * 2).min(self.max);
        // xorshift64
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let half = base / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { self.random % span };
        half + Duration::from_nanos(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base / 2 && *delay <= base,
                "{delay:?} for {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
