//! A BIN table with a pre-check: the four-digit PAN leads any of its patterns
//! can match, as 10 000 bits. Most PANs a hotlist or brand rule sees match
//! none of its patterns, and one bit then answers for the whole table search.

use crate::route::{BinPattern, BinTable};

/// PAN leads (first four digits) that some pattern may match.
#[derive(Debug)]
struct Leads(Box<[u64; 157]>);

impl Leads {
    const DIGITS: usize = 4;

    fn new<'a>(patterns: impl Iterator<Item = &'a BinPattern>) -> Leads {
        let mut bits = Box::new([0u64; 157]);
        for pattern in patterns {
            let (low, high) = match pattern {
                BinPattern::Prefix(prefix) => (prefix.as_str(), prefix.as_str()),
                BinPattern::Range { low, high } => (low.as_str(), high.as_str()),
            };
            // Patterns are digits only (checked when parsed): an empty lead
            // range would only mean a needless table search, never a miss.
            let (Some(low), Some(high)) =
                (lead(low.as_bytes(), false), lead(high.as_bytes(), true))
            else {
                continue;
            };
            for lead in low..=high.min(9999) {
                bits[lead / 64] |= 1 << (lead % 64);
            }
        }
        Leads(bits)
    }

    /// Whether a PAN may match some pattern; true when its lead cannot be read.
    fn may_match(&self, pan: &[u8]) -> bool {
        match pan
            .get(..Self::DIGITS)
            .and_then(|digits| lead(digits, false))
        {
            Some(lead) => self.0[lead / 64] & (1 << (lead % 64)) != 0,
            None => true,
        }
    }
}

/// The first four digits of `digits` as a number; a shorter pattern stands
/// for every lead it starts, from its lowest (`…000`) or highest (`…999`).
fn lead(digits: &[u8], highest: bool) -> Option<usize> {
    let mut value = 0usize;
    for position in 0..Leads::DIGITS {
        let digit = match digits.get(position) {
            Some(&d) if d.is_ascii_digit() => usize::from(d - b'0'),
            Some(_) => return None,
            None if highest => 9,
            None => 0,
        };
        value = value * 10 + digit;
    }
    Some(value)
}

/// A [`BinTable`] searched only when the PAN's lead may match.
#[derive(Debug)]
pub(crate) struct LeadFiltered<T> {
    table: BinTable<T>,
    leads: Leads,
}

impl<T> LeadFiltered<T> {
    pub fn new(table: BinTable<T>) -> LeadFiltered<T> {
        let leads = Leads::new(table.iter().map(|(pattern, _)| pattern));
        LeadFiltered { table, leads }
    }

    /// What [`BinTable::lookup`] finds, without the search where nothing can match.
    #[inline]
    pub fn lookup(&self, pan: &[u8]) -> Option<&T> {
        if self.leads.may_match(pan) {
            self.table.lookup(pan)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(patterns: &[&str]) -> LeadFiltered<String> {
        let entries: Vec<_> = patterns
            .iter()
            .map(|p| (p.parse::<BinPattern>().expect("pattern"), (*p).to_owned()))
            .collect();
        LeadFiltered::new(BinTable::build(entries).expect("table"))
    }

    #[test]
    fn the_filter_never_hides_a_match() {
        let filtered = table(&[
            "4",
            "51",
            "222100-272099",
            "36000000-36000049",
            "6011",
            "622126-622925",
            "35",
            "12345678901",
        ]);
        let mut seed = 99u64;
        let mut pans: Vec<String> = vec!["1".into(), "36".into(), "40".into(), "4x11".into()];
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = 1 + (seed >> 60) as usize + (seed >> 59 & 1) as usize * 4;
            pans.push(format!("{:019}", seed >> 1)[..len.min(19)].to_owned());
            pans.push(format!("36000{:011}", seed % 100_000_000_000));
        }
        for pan in &pans {
            assert_eq!(
                filtered.lookup(pan.as_bytes()),
                filtered.table.lookup(pan.as_bytes()),
                "{pan}"
            );
        }
        assert!(!filtered.leads.may_match(b"9999000000000000"));
    }
}
