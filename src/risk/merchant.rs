//! Merchant and terminal rules: known and blocked terminals and merchants (03),
//! merchant category codes allowed or blocked (58), currencies accepted (13 or
//! 57). Ids are compared without trailing spaces (fields 41 and 42 are padded).

use super::config::{CurrencyCode, MccRange};
use super::state::{id_key, KeySet};
use super::Facts;
use crate::iso8583::ResponseCode;

/// Ids as the switch compares them: trailing spaces dropped.
pub(crate) fn trim_id(id: &[u8]) -> &[u8] {
    let end = id.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    &id[..end]
}

/// Keys of ids, so a lookup costs one key already computed per request.
fn id_set(ids: &[String]) -> KeySet<()> {
    ids.iter()
        .map(|id| (id_key(trim_id(id.as_bytes())), ()))
        .collect()
}

/// Whether an id (by keyed hash) is blocked, or missing from a list of known ones.
fn refused(known: Option<&KeySet<()>>, blocked: &KeySet<()>, key: Option<u64>) -> bool {
    match key {
        Some(key) => blocked.contains_key(&key) || known.is_some_and(|k| !k.contains_key(&key)),
        // Without the field the id cannot be on a list of known ones.
        None => known.is_some(),
    }
}

/// Terminals and merchants the acquirer knows, and those it has blocked.
#[derive(Debug)]
pub(crate) struct Terminals {
    known_terminals: Option<KeySet<()>>,
    known_merchants: Option<KeySet<()>>,
    blocked_terminals: KeySet<()>,
    blocked_merchants: KeySet<()>,
}

impl Terminals {
    pub fn new(
        known_terminals: Option<&[String]>,
        known_merchants: Option<&[String]>,
        blocked_terminals: &[String],
        blocked_merchants: &[String],
    ) -> Terminals {
        Terminals {
            known_terminals: known_terminals.map(id_set),
            known_merchants: known_merchants.map(id_set),
            blocked_terminals: id_set(blocked_terminals),
            blocked_merchants: id_set(blocked_merchants),
        }
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let terminal_refused = (self.known_terminals.is_some()
            || !self.blocked_terminals.is_empty())
            && refused(
                self.known_terminals.as_ref(),
                &self.blocked_terminals,
                facts.terminal_key(),
            );
        let merchant_refused = || {
            (self.known_merchants.is_some() || !self.blocked_merchants.is_empty())
                && refused(
                    self.known_merchants.as_ref(),
                    &self.blocked_merchants,
                    facts.merchant_key(),
                )
        };
        (terminal_refused || merchant_refused()).then_some(ResponseCode::INVALID_MERCHANT)
    }

    pub fn describe(&self) -> String {
        let known = |set: &Option<KeySet<()>>| {
            set.as_ref()
                .map_or("any".to_owned(), |s| s.len().to_string())
        };
        format!(
            "known terminals {}, known merchants {}, blocked terminals {}, blocked merchants {}",
            known(&self.known_terminals),
            known(&self.known_merchants),
            self.blocked_terminals.len(),
            self.blocked_merchants.len()
        )
    }
}

/// 10 000 MCCs as bits: a lookup is one shift, whatever the list's length.
#[derive(Debug, Clone)]
pub(crate) struct MccSet(Box<[u64; 157]>);

impl MccSet {
    pub fn new(ranges: &[MccRange]) -> MccSet {
        let mut bits = Box::new([0u64; 157]);
        for range in ranges {
            for mcc in range.low..=range.high.min(9999) {
                bits[usize::from(mcc / 64)] |= 1 << (mcc % 64);
            }
        }
        MccSet(bits)
    }

    pub fn contains(&self, mcc: u16) -> bool {
        self.0
            .get(usize::from(mcc / 64))
            .is_some_and(|word| word & (1 << (mcc % 64)) != 0)
    }
}

/// Merchant category codes allowed (all others refused) or blocked.
#[derive(Debug)]
pub(crate) struct Mccs {
    set: MccSet,
    allow: bool,
}

impl Mccs {
    pub fn new(allow: &[MccRange], block: &[MccRange]) -> Mccs {
        if allow.is_empty() {
            Mccs {
                set: MccSet::new(block),
                allow: false,
            }
        } else {
            Mccs {
                set: MccSet::new(allow),
                allow: true,
            }
        }
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let refused = match facts.mcc() {
            Some(mcc) => self.set.contains(mcc) != self.allow,
            // An allowlist cannot admit a category it was not told.
            None => self.allow,
        };
        refused.then_some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
    }
}

/// ISO 4217 numeric currencies accepted, as 1000 bits.
#[derive(Debug)]
pub(crate) struct Currencies {
    bits: [u64; 16],
    code: ResponseCode,
}

impl Currencies {
    pub fn new(allow: &[CurrencyCode], code: ResponseCode) -> Currencies {
        let mut bits = [0u64; 16];
        for &CurrencyCode(c) in allow {
            if let Some(word) = bits.get_mut(usize::from(c / 64)) {
                *word |= 1 << (c % 64);
            }
        }
        Currencies { bits, code }
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let accepted = facts.currency().is_some_and(|c| {
            self.bits
                .get(usize::from(c / 64))
                .is_some_and(|word| word & (1 << (c % 64)) != 0)
        });
        (!accepted).then_some(self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti};
    use crate::risk::{RiskContext, Timestamp};

    fn message(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0200"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        check: impl Fn(&Facts<'_>) -> Option<ResponseCode>,
        fields: &[(u8, &str)],
    ) -> Option<ResponseCode> {
        let msg = message(fields);
        check(&Facts::new(
            &RiskContext::pos(),
            &msg,
            Timestamp::from_unix_ms(0),
        ))
    }

    fn mccs(list: &[&str]) -> Vec<MccRange> {
        list.iter().map(|s| s.parse().expect("mcc")).collect()
    }

    #[test]
    fn trailing_spaces_do_not_make_another_id() {
        assert_eq!(trim_id(b"TERM1   "), b"TERM1");
        assert_eq!(trim_id(b"   "), b"");
        assert_eq!(trim_id(b" A"), b" A");
    }

    #[test]
    fn an_unknown_terminal_gives_03_when_a_list_is_configured() {
        let rule = Terminals::new(Some(&ids(&["TERM0001", "TERM0002"])), None, &[], &[]);
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(run(check, &[(41, "TERM0001")]), None);
        assert_eq!(run(check, &[(41, "TERM0002")]), None);
        assert_eq!(
            run(check, &[(41, "TERM0009")]),
            Some(ResponseCode::INVALID_MERCHANT)
        );
        assert_eq!(run(check, &[]), Some(ResponseCode::INVALID_MERCHANT));
    }

    #[test]
    fn a_blocked_terminal_or_merchant_gives_03() {
        let rule = Terminals::new(None, None, &ids(&["BADTERM"]), &ids(&["BADSHOP"]));
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(run(check, &[(41, "TERM0001"), (42, "GOODSHOP")]), None);
        assert_eq!(
            run(check, &[(41, "BADTERM ")]),
            Some(ResponseCode::INVALID_MERCHANT)
        );
        assert_eq!(
            run(check, &[(41, "TERM0001"), (42, "BADSHOP        ")]),
            Some(ResponseCode::INVALID_MERCHANT)
        );
        assert_eq!(
            run(check, &[]),
            None,
            "blocklists pass requests without ids"
        );
    }

    #[test]
    fn an_unknown_merchant_gives_03() {
        let rule = Terminals::new(None, Some(&ids(&["SHOP1"])), &[], &[]);
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(run(check, &[(42, "SHOP1          ")]), None);
        assert_eq!(
            run(check, &[(42, "SHOP2")]),
            Some(ResponseCode::INVALID_MERCHANT)
        );
    }

    #[test]
    fn a_blocked_mcc_gives_58() {
        let rule = Mccs::new(&[], &mccs(&["7995", "5960-5969"]));
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(
            run(check, &[(18, "7995")]),
            Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
        );
        assert_eq!(
            run(check, &[(18, "5962")]),
            Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
        );
        assert_eq!(run(check, &[(18, "5411")]), None);
        assert_eq!(run(check, &[]), None);
    }

    #[test]
    fn an_mcc_off_the_allowlist_gives_58() {
        let rule = Mccs::new(&mccs(&["5411", "5812-5814"]), &[]);
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(run(check, &[(18, "5813")]), None);
        assert_eq!(
            run(check, &[(18, "9999")]),
            Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
        );
        assert_eq!(
            run(check, &[(18, "0000")]),
            Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
        );
        assert_eq!(
            run(check, &[]),
            Some(ResponseCode::NOT_PERMITTED_TO_TERMINAL)
        );
    }

    #[test]
    fn a_currency_off_the_allowlist_gives_the_configured_code() {
        let rule = Currencies::new(
            &[CurrencyCode(840), CurrencyCode(978)],
            ResponseCode::INVALID_AMOUNT,
        );
        let check = |f: &Facts<'_>| rule.check(f);
        assert_eq!(run(check, &[(49, "978")]), None);
        assert_eq!(
            run(check, &[(49, "826")]),
            Some(ResponseCode::INVALID_AMOUNT)
        );
        assert_eq!(
            run(check, &[(49, "99")]),
            Some(ResponseCode::INVALID_AMOUNT)
        );
        assert_eq!(run(check, &[]), Some(ResponseCode::INVALID_AMOUNT));
        let as_57 = Currencies::new(
            &[CurrencyCode(840)],
            ResponseCode::NOT_PERMITTED_TO_CARDHOLDER,
        );
        assert_eq!(
            run(|f: &Facts<'_>| as_57.check(f), &[(49, "999")]),
            Some(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
        );
    }
}
