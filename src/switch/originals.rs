//! Recent authorizations, so a terminal's reversal can be matched to what the
//! issuer actually saw (the switch rewrote the STAN on the way out). Sharded map,
//! no global lock; entries expire so memory stays bounded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::iso8583::{Message, Mti};
use crate::journal::TxnId;
use crate::risk::{Held, RiskRules};

/// How a terminal names a transaction: terminal id, its STAN and field 7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalKey {
    terminal: [u8; 16],
    stan: u32,
    transmission: u64,
}

impl OriginalKey {
    /// From terminal id, STAN digits and field 7 digits; None when any is absent
    /// or not in shape.
    pub fn new(terminal: &[u8], stan: &[u8], transmission: &[u8]) -> Option<OriginalKey> {
        if terminal.is_empty() || terminal.len() > 16 || stan.len() != 6 {
            return None;
        }
        let mut t = [b' '; 16];
        t[..terminal.len()].copy_from_slice(terminal);
        Some(OriginalKey {
            terminal: t,
            stan: digits(stan)? as u32,
            transmission: digits(transmission).unwrap_or(0),
        })
    }

    /// The key of a request as the terminal sent it (fields 41, 11, 7).
    pub fn of_request(msg: &Message) -> Option<OriginalKey> {
        OriginalKey::new(msg.get(41)?, msg.get(11)?, msg.get(7).unwrap_or(b""))
    }

    /// The key a reversal points at: field 90's STAN and time, else its own 11 and 7.
    pub fn of_reversal(msg: &Message) -> Option<OriginalKey> {
        let terminal = msg.get(41)?;
        match msg.original_data() {
            Ok(o) => {
                let stan = o.stan.to_digits();
                OriginalKey::new(terminal, &stan, o.transmission_time.as_bytes())
            }
            Err(_) => OriginalKey::of_request(msg),
        }
    }
}

fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// What the switch remembers of a forwarded authorization.
#[derive(Debug, Clone)]
pub struct Original {
    pub mti: Mti,
    pub issuer: Arc<str>,
    /// Its journal record, whose reversal fields a terminal's reversal uses.
    pub txn: Option<TxnId>,
    /// The STAN the issuer saw; None while the original is still at the
    /// issuer (the link assigns it), or if it never reached the issuer.
    pub issuer_stan: Option<u32>,
    /// Whether a reversal of it is already on its way to the issuer: the
    /// switch's own (timeout, lost link) or a terminal's.
    pub reversed: bool,
    pub at: Instant,
    /// The velocity counts an approval holds, given back if it is reversed.
    pub risk: Option<RiskHold>,
}

impl Original {
    /// A record made now.
    pub fn new(
        mti: Mti,
        issuer: Arc<str>,
        txn: Option<TxnId>,
        issuer_stan: Option<u32>,
        reversed: bool,
        risk: Option<RiskHold>,
    ) -> Original {
        Original {
            mti,
            issuer,
            txn,
            issuer_stan,
            reversed,
            at: Instant::now(),
            risk,
        }
    }
}

/// Velocity counts and the rules that made them (boxed: most records have none).
pub type RiskHold = Box<(Arc<RiskRules>, Held)>;

/// One generation of the table.
pub type Generation = DashMap<OriginalKey, Original>;

/// The recent-authorizations table: a few generations of sharded maps. Inserts
/// go to the newest; [`Originals::rotate`] (run by a timer) drops the oldest
/// whole, so expiry never scans entries and never stalls the hot path.
pub struct Originals {
    generations: ArcSwap<Vec<Arc<Generation>>>,
    /// Entries in all generations (kept beside them: `DashMap::len` locks
    /// every shard, too dear per insert).
    count: AtomicUsize,
    max: usize,
}

impl Originals {
    /// `generations` maps, each living one rotation period; at most `max`
    /// entries in all.
    pub fn new(generations: usize, max: usize) -> Originals {
        let maps = (0..generations.max(2))
            .map(|_| Arc::new(DashMap::new()))
            .collect();
        Originals {
            generations: ArcSwap::from_pointee(maps),
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// Remembers a forwarded authorization. While the table is full the newest
    /// is not remembered (a later terminal reversal for it is routed by PAN with
    /// its field 90 as sent) until the next rotation frees a generation.
    pub fn insert(&self, key: OriginalKey, original: Original) {
        if self.count.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let generations = self.generations.load();
        if generations[0].insert(key, original).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completes the record made when the original was forwarded with what
    /// the issuer's answer (or its absence) taught: the STAN the issuer saw,
    /// whether a reversal is on its way, the counts an approval holds.
    /// Returns true if a terminal reversed the original while it was at the
    /// issuer: the caller must reverse it now, if it was approved, since
    /// only now does it know the STAN to name. A record no longer in the
    /// table (rotated out, or never in: the table was full) is inserted.
    pub fn complete(&self, key: OriginalKey, mut done: Original) -> bool {
        let generations = self.generations.load();
        let found = generations.iter().find_map(|g| {
            g.get_mut(&key).map(|mut record| {
                let reversed_meanwhile = record.reversed && record.issuer_stan.is_none();
                record.issuer_stan = done.issuer_stan;
                record.reversed |= done.reversed;
                if !reversed_meanwhile {
                    record.risk = done.risk.take();
                }
                reversed_meanwhile
            })
        });
        match found {
            Some(reversed_meanwhile) => reversed_meanwhile,
            None => {
                self.insert(key, done);
                false
            }
        }
    }

    /// The record as it is, unchanged.
    pub fn get(&self, key: &OriginalKey) -> Option<Original> {
        let generations = self.generations.load();
        generations
            .iter()
            .find_map(|g| g.get(key).map(|original| original.clone()))
    }

    /// The record as it was, now marked reversed: a repeat of the reversal
    /// (0401, 0421) finds it so and is not sent to the issuer twice.
    pub fn reverse(&self, key: &OriginalKey) -> Option<Original> {
        let generations = self.generations.load();
        generations.iter().find_map(|g| {
            g.get_mut(key).map(|mut original| {
                // The counts go with the first reversal, and only once.
                let risk = original.risk.take();
                let before = Original {
                    risk,
                    ..original.clone()
                };
                original.reversed = true;
                before
            })
        })
    }

    /// Starts a fresh newest generation and retires the oldest, which it
    /// returns: freeing a generation of a busy minute takes milliseconds, so the
    /// caller drops it off the hot path. The new generation is sized like the
    /// last one, so it does not rehash (stalling its shard) as it fills.
    pub fn rotate(&self) -> Arc<Generation> {
        let current = self.generations.load_full();
        let expected = current.first().map_or(0, |g| g.len()).min(self.max);
        let mut next = Vec::with_capacity(current.len());
        next.push(Arc::new(DashMap::with_capacity(expected)));
        next.extend(current[..current.len() - 1].iter().cloned());
        self.generations.store(Arc::new(next));
        let oldest = current
            .last()
            .cloned()
            .expect("Originals::new keeps at least two generations");
        self.count.fetch_sub(oldest.len(), Ordering::Relaxed);
        oldest
    }

    /// Whether the table is close enough to full that the timer should rotate
    /// before its period is up.
    pub fn nearly_full(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= self.max / 4 * 3
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original(at: Instant) -> Original {
        Original {
            mti: Mti::from_static("0100"),
            issuer: Arc::from("sim"),
            txn: Some(TxnId(1)),
            issuer_stan: Some(7),
            reversed: false,
            at,
            risk: None,
        }
    }

    #[test]
    fn a_reversal_finds_its_original_by_field_90() {
        let mut req = Message::new(Mti::from_static("0100"));
        req.set(41, "TERM0001")
            .and_then(|m| m.set(11, "000042"))
            .and_then(|m| m.set(7, "1123184100"))
            .expect("fields");
        let mut rev = Message::new(Mti::from_static("0400"));
        rev.set(41, "TERM0001")
            .and_then(|m| m.set(11, "000043"))
            .and_then(|m| m.set(90, "010000004211231841000000000123400000000000"))
            .expect("fields");
        assert_eq!(
            OriginalKey::of_request(&req),
            OriginalKey::of_reversal(&rev)
        );
    }

    #[test]
    fn a_repeated_reversal_finds_the_original_reversed() {
        let table = Originals::new(4, 10);
        let key = OriginalKey::new(b"T1", b"000001", b"1123184100").expect("key");
        assert!(table.reverse(&key).is_none());
        table.insert(key, original(Instant::now()));
        table.rotate();
        assert!(table.reverse(&key).is_some_and(|o| !o.reversed));
        assert!(table.reverse(&key).is_some_and(|o| o.reversed));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_reversal_while_the_original_is_at_the_issuer_is_reported_on_completion() {
        let table = Originals::new(4, 10);
        let key = OriginalKey::new(b"T1", b"000001", b"1123184100").expect("key");
        let in_flight = Original {
            issuer_stan: None,
            ..original(Instant::now())
        };
        table.insert(key, in_flight.clone());
        let seen = table.reverse(&key).expect("in flight");
        assert!(!seen.reversed && seen.issuer_stan.is_none());
        assert!(table.complete(key, original(Instant::now())));
        // Completed: a repeat of the reversal finds it reversed, with its STAN.
        let repeat = table.reverse(&key).expect("completed");
        assert!(repeat.reversed);
        assert_eq!(repeat.issuer_stan, Some(7));
        // Not reversed while in flight: nothing to report.
        let other = OriginalKey::new(b"T1", b"000002", b"1123184100").expect("key");
        table.insert(other, in_flight);
        assert!(!table.complete(other, original(Instant::now())));
        assert!(table.reverse(&other).is_some_and(|o| !o.reversed));
    }

    #[test]
    fn stays_within_its_bound() {
        let table = Originals::new(4, 3);
        for i in 0..10u32 {
            let stan = format!("{i:06}");
            let key = OriginalKey::new(b"T1", stan.as_bytes(), b"").expect("key");
            table.insert(key, original(Instant::now()));
        }
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn entries_live_through_all_generations_then_go() {
        let table = Originals::new(3, 100);
        let key = OriginalKey::new(b"T1", b"000001", b"1123184100").expect("key");
        table.insert(key, original(Instant::now()));
        table.rotate();
        table.rotate();
        assert_eq!(table.len(), 1);
        table.rotate();
        assert_eq!(table.len(), 0);
        assert!(table.reverse(&key).is_none());
    }

    #[test]
    fn a_full_table_frees_room_on_rotation() {
        let table = Originals::new(2, 2);
        let key = |stan: &[u8]| OriginalKey::new(b"T1", stan, b"").expect("key");
        table.insert(key(b"000001"), original(Instant::now()));
        table.insert(key(b"000002"), original(Instant::now()));
        assert!(table.nearly_full());
        table.rotate();
        table.rotate();
        table.insert(key(b"000003"), original(Instant::now()));
        assert!(table.reverse(&key(b"000003")).is_some());
    }
}
