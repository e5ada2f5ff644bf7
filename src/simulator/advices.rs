//! Advices (0120/0121/0220/0221) the simulator received: which were new and
//! which repeated one it already had, so a test can check that each advice
//! arrived exactly once however often store-and-forward sent it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use crate::iso8583::{Message, Mti, Stan};

use super::accounts::TransmissionKey;

/// Identities of advices remembered for spotting repeats; the oldest are
/// forgotten first.
pub const SEEN_ADVICE_CAPACITY: usize = 100_000;

/// Whether an advice was news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdviceOutcome {
    /// The first advice with its identity.
    Received,
    /// Another advice had the same terminal, STAN and transmission time (41,
    /// 11, 7) or the same RRN (37): a repeat, not a second advice.
    Duplicate,
}

impl AdviceOutcome {
    /// As the record file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdviceOutcome::Received => "received",
            AdviceOutcome::Duplicate => "duplicate",
        }
    }
}

/// One advice the simulator received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdviceRecord {
    pub mti: Mti,
    /// Field 11.
    pub stan: Option<Stan>,
    pub masked_pan: Option<String>,
    /// Field 4, in minor units.
    pub amount: Option<u64>,
    /// Field 38: the approval the advice reports.
    pub auth_code: Option<String>,
    /// Field 39: the answer the advice reports.
    pub response_code: Option<String>,
    pub outcome: AdviceOutcome,
}

/// How an advice is recognised when it comes again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AdviceKey {
    Transmission(TransmissionKey),
    Rrn(Box<[u8]>),
}

fn keys(advice: &Message) -> impl Iterator<Item = AdviceKey> {
    let by_transmission = match (advice.get(11), advice.get(7)) {
        (Some(stan), Some(time)) => {
            TransmissionKey::new(stan, time, advice.get(41).unwrap_or_default())
                .map(AdviceKey::Transmission)
        }
        _ => None,
    };
    let by_rrn = advice
        .get(37)
        .filter(|rrn| !rrn.iter().all(|b| b.is_ascii_whitespace() || *b == b'0'))
        .map(|rrn| AdviceKey::Rrn(rrn.into()));
    by_transmission.into_iter().chain(by_rrn)
}

/// The identities of advices received, oldest forgotten first.
pub(crate) struct SeenAdvices {
    capacity: usize,
    seen: Mutex<(HashSet<AdviceKey>, VecDeque<AdviceKey>)>,
}

impl SeenAdvices {
    pub(crate) fn new(capacity: usize) -> SeenAdvices {
        SeenAdvices {
            capacity: capacity.max(1),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Remembers `advice` and says whether one with its identity came before.
    /// An advice with neither identity is always news.
    pub(crate) fn note(&self, advice: &Message) -> AdviceOutcome {
        let keys: Vec<AdviceKey> = keys(advice).collect();
        let mut guard = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *guard;
        if keys.iter().any(|key| set.contains(key)) {
            return AdviceOutcome::Duplicate;
        }
        for key in keys {
            if set.len() >= self.capacity {
                if let Some(oldest) = order.pop_front() {
                    set.remove(&oldest);
                }
            }
            set.insert(key.clone());
            order.push_back(key);
        }
        AdviceOutcome::Received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advice(mti: &str, fields: &[(u8, &str)]) -> Message {
        let mut message = Message::new(mti.parse().expect("valid MTI"));
        for (n, v) in fields {
            message.set(*n, v).expect("data field");
        }
        message
    }

    #[test]
    fn a_repeat_with_the_same_terminal_stan_and_time_is_a_duplicate() {
        let seen = SeenAdvices::new(10);
        let first = [(7, "1207181500"), (11, "000123"), (41, "TERM0001")];
        assert_eq!(seen.note(&advice("0120", &first)), AdviceOutcome::Received);
        assert_eq!(seen.note(&advice("0121", &first)), AdviceOutcome::Duplicate);
        let other_terminal = [(7, "1207181500"), (11, "000123"), (41, "TERM0002")];
        assert_eq!(
            seen.note(&advice("0120", &other_terminal)),
            AdviceOutcome::Received
        );
        let other_time = [(7, "1207181501"), (11, "000123"), (41, "TERM0001")];
        assert_eq!(
            seen.note(&advice("0120", &other_time)),
            AdviceOutcome::Received
        );
    }

    #[test]
    fn a_repeat_with_the_same_rrn_is_a_duplicate_whatever_its_stan() {
        let seen = SeenAdvices::new(10);
        let first = [(7, "1207181500"), (11, "000001"), (37, "634218000001")];
        assert_eq!(seen.note(&advice("0220", &first)), AdviceOutcome::Received);
        let restamped = [(7, "1207181530"), (11, "000777"), (37, "634218000001")];
        assert_eq!(
            seen.note(&advice("0221", &restamped)),
            AdviceOutcome::Duplicate
        );
    }

    #[test]
    fn an_advice_without_identity_is_always_news() {
        let seen = SeenAdvices::new(10);
        let bare = advice("0120", &[(37, "000000000000")]);
        assert_eq!(seen.note(&bare), AdviceOutcome::Received);
        assert_eq!(seen.note(&bare), AdviceOutcome::Received);
    }

    #[test]
    fn the_oldest_identities_are_forgotten_past_capacity() {
        let seen = SeenAdvices::new(2);
        let rrn = |n: &str| advice("0120", &[(37, n)]);
        for n in ["000000000001", "000000000002", "000000000003"] {
            assert_eq!(seen.note(&rrn(n)), AdviceOutcome::Received);
        }
        assert_eq!(seen.note(&rrn("000000000003")), AdviceOutcome::Duplicate);
        assert_eq!(seen.note(&rrn("000000000001")), AdviceOutcome::Received);
    }
}
