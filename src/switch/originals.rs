//! Recent authorizations, so a terminal's reversal can be matched to what the
//! issuer actually saw (the switch rewrote the STAN on the way out). Sharded map,
//! no global lock; entries expire so memory stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::iso8583::{Message, Mti};

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
    /// The STAN the issuer saw.
    pub issuer_stan: u32,
    /// Whether the switch already sent a reversal of its own (timeout, lost link).
    pub reversed: bool,
    pub at: Instant,
}

/// The recent-authorizations table.
pub struct Originals {
    map: DashMap<OriginalKey, Original>,
    keep: Duration,
    max: usize,
}

impl Originals {
    pub fn new(keep: Duration, max: usize) -> Originals {
        Originals {
            map: DashMap::new(),
            keep,
            max,
        }
    }

    pub fn insert(&self, key: OriginalKey, original: Original) {
        if self.map.len() >= self.max {
            self.expire(Instant::now());
        }
        if self.map.len() < self.max {
            self.map.insert(key, original);
        }
    }

    /// Takes the record, so a repeated reversal finds nothing to reverse twice.
    pub fn take(&self, key: &OriginalKey) -> Option<Original> {
        self.map.remove(key).map(|(_, v)| v)
    }

    /// Drops entries older than the keep window.
    pub fn expire(&self, now: Instant) {
        let keep = self.keep;
        self.map.retain(|_, v| now.duration_since(v.at) < keep);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original(at: Instant) -> Original {
        Original {
            mti: Mti::from_static("0100"),
            issuer: Arc::from("sim"),
            issuer_stan: 7,
            reversed: false,
            at,
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
    fn take_removes_so_a_repeat_finds_nothing() {
        let table = Originals::new(Duration::from_secs(60), 10);
        let key = OriginalKey::new(b"T1", b"000001", b"1123184100").expect("key");
        table.insert(key, original(Instant::now()));
        assert!(table.take(&key).is_some());
        assert!(table.take(&key).is_none());
    }

    #[test]
    fn stays_within_its_bound() {
        let table = Originals::new(Duration::from_secs(60), 3);
        for i in 0..10u32 {
            let stan = format!("{i:06}");
            let key = OriginalKey::new(b"T1", stan.as_bytes(), b"").expect("key");
            table.insert(key, original(Instant::now()));
        }
        assert_eq!(table.len(), 3);
    }
}
