//! The hotlist: cards reported lost (41), stolen (43) or restricted (62), as
//! whole PANs or BIN patterns, read from a file when rules are compiled.
//!
//! One entry a line, `<PAN or BIN pattern> <reason>` (a comma may separate
//! them), `#` starts a comment:
//!
//! ```text
//! 4000000000000010 stolen       # 12–19 digits: one card
//! 412345 restricted             # up to 11 digits: a BIN prefix
//! 51234500-51234599, lost       # a BIN range, low and high of one length
//! ```
//!
//! PANs are kept only as keyed hashes; a PAN entry beats any BIN entry, and
//! among BIN entries the most specific wins (as in routing).

use std::path::Path;

use super::bin_leads::LeadFiltered;
use super::state::{card_key, KeySet};
use super::{Facts, RiskError};
use crate::iso8583::fields::mask_pan;
use crate::iso8583::ResponseCode;
use crate::route::{BinPattern, BinTable, BinTableError};

/// Why a card is on the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Lost,
    Stolen,
    Restricted,
}

impl Reason {
    fn parse(text: &str) -> Option<Reason> {
        match text {
            "lost" => Some(Reason::Lost),
            "stolen" => Some(Reason::Stolen),
            "restricted" => Some(Reason::Restricted),
            _ => None,
        }
    }

    fn code(self) -> ResponseCode {
        match self {
            Reason::Lost => ResponseCode::LOST_CARD,
            Reason::Stolen => ResponseCode::STOLEN_CARD,
            Reason::Restricted => ResponseCode::RESTRICTED_CARD,
        }
    }
}

/// An entry as error messages may show it: anything PAN-long is masked.
fn shown(entry: &str) -> String {
    if entry.len() >= 12 {
        mask_pan(entry)
    } else {
        entry.to_owned()
    }
}

/// A compiled hotlist.
#[derive(Debug)]
pub(crate) struct Hotlist {
    /// Keyed hash of the PAN → response code.
    pans: KeySet<ResponseCode>,
    bins: LeadFiltered<ResponseCode>,
}

impl Hotlist {
    /// Reads and compiles the file at `path` for rule `rule`.
    pub fn load(rule: &str, path: &Path) -> Result<Hotlist, RiskError> {
        let text = std::fs::read_to_string(path).map_err(|source| RiskError::Read {
            rule: rule.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
        Hotlist::parse(rule, &path.display().to_string(), &text)
    }

    /// Compiles hotlist text; `origin` names it in errors.
    pub fn parse(rule: &str, origin: &str, text: &str) -> Result<Hotlist, RiskError> {
        let bad_line = |line: usize, problem: String| RiskError::Entry {
            rule: rule.to_owned(),
            path: origin.to_owned(),
            line,
            problem,
        };
        let mut pans: KeySet<(ResponseCode, usize)> = KeySet::default();
        let mut bins: Vec<(BinPattern, ResponseCode)> = Vec::new();
        let mut bin_lines: Vec<usize> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let content = line.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut parts = content
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty());
            let (Some(entry), Some(reason), None) = (parts.next(), parts.next(), parts.next())
            else {
                // The line is not echoed: it may hold a PAN in groups of digits.
                let columns = content
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .count();
                return Err(bad_line(
                    number,
                    format!(
                        "expected two columns, \"<PAN or BIN pattern> <lost|stolen|restricted>\", \
                         found {columns}{}",
                        if columns > 2 {
                            " (write a PAN without spaces)"
                        } else {
                            ""
                        }
                    ),
                ));
            };
            let code = Reason::parse(reason)
                .ok_or_else(|| {
                    // Anything with a digit in it is not shown: it may be a PAN.
                    let found = if reason.bytes().any(|b| b.is_ascii_digit()) {
                        "digits".to_owned()
                    } else {
                        format!("{reason:?}")
                    };
                    bad_line(
                        number,
                        format!("expected a reason of lost, stolen or restricted, found {found}"),
                    )
                })?
                .code();
            let is_pan =
                (12..=19).contains(&entry.len()) && entry.bytes().all(|b| b.is_ascii_digit());
            if is_pan {
                let key = card_key(entry.as_bytes());
                if let Some((earlier, first_line)) = pans.insert(key, (code, number)) {
                    if earlier != code {
                        // The entry is a PAN: name the lines, never the number.
                        return Err(bad_line(
                            number,
                            format!(
                                "the card is also listed on line {first_line} with another reason"
                            ),
                        ));
                    }
                }
            } else {
                let pattern = entry.parse::<BinPattern>().map_err(|e| {
                    // A long entry may be a mistyped PAN: do not repeat it.
                    let why = if entry.len() >= 12 {
                        format!("found {:?}", shown(entry))
                    } else {
                        e.to_string()
                    };
                    bad_line(
                        number,
                        format!("expected a PAN of 12–19 digits or a BIN pattern: {why}"),
                    )
                })?;
                bins.push((pattern, code));
                bin_lines.push(number);
            }
        }
        let bins = BinTable::build(bins).map_err(|error| {
            let (second, first) = match &error {
                BinTableError::Ambiguous {
                    first_index,
                    second_index,
                    ..
                }
                | BinTableError::Overlap {
                    first_index,
                    second_index,
                    ..
                } => (*second_index, *first_index),
            };
            let line_of = |i: usize| bin_lines.get(i).copied().unwrap_or(0);
            bad_line(
                line_of(second),
                format!("{error} (the other is on line {})", line_of(first)),
            )
        })?;
        Ok(Hotlist {
            pans: pans.into_iter().map(|(k, (code, _))| (k, code)).collect(),
            bins: LeadFiltered::new(bins),
        })
    }

    pub fn check(&self, facts: &Facts<'_>) -> Option<ResponseCode> {
        let pan = facts.pan?;
        if let Some(key) = facts.card_key() {
            if let Some(&code) = self.pans.get(&key) {
                return Some(code);
            }
        }
        self.bins.lookup(pan).copied()
    }

    /// PAN entries and BIN entries.
    pub fn sizes(&self) -> (usize, usize) {
        (self.pans.len(), self.bins.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti};
    use crate::risk::{RiskContext, Timestamp};

    const LIST: &str = "\
# issuer hotlist
4000000000000010 stolen
4000000000000028,lost
412345 restricted   # a whole BIN
51234500-51234599, lost

";

    fn check(list: &Hotlist, pan: &str) -> Option<ResponseCode> {
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(2, pan).expect("field 2");
        list.check(&Facts::new(
            &RiskContext::pos(),
            &msg,
            Timestamp::from_unix_ms(0),
        ))
    }

    #[test]
    fn listed_cards_get_the_code_of_their_reason() {
        let list = Hotlist::parse("hot", "list.txt", LIST).expect("valid list");
        assert_eq!(list.sizes(), (2, 2));
        assert_eq!(
            check(&list, "4000000000000010"),
            Some(ResponseCode::STOLEN_CARD)
        );
        assert_eq!(
            check(&list, "4000000000000028"),
            Some(ResponseCode::LOST_CARD)
        );
        assert_eq!(
            check(&list, "4123451234567890"),
            Some(ResponseCode::RESTRICTED_CARD)
        );
        assert_eq!(
            check(&list, "5123455012345678"),
            Some(ResponseCode::LOST_CARD)
        );
        assert_eq!(check(&list, "4111111111111111"), None);
        assert_eq!(check(&list, "5123460012345678"), None);
    }

    #[test]
    fn a_pan_entry_beats_its_bin_entry() {
        let list = Hotlist::parse("hot", "l", "412345 restricted\n4123450000000001 stolen\n")
            .expect("valid list");
        assert_eq!(
            check(&list, "4123450000000001"),
            Some(ResponseCode::STOLEN_CARD)
        );
        assert_eq!(
            check(&list, "4123450000000019"),
            Some(ResponseCode::RESTRICTED_CARD)
        );
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line_without_the_pan() {
        let cases = [
            ("4000000000000010\n", "list.txt:1: expected two columns, \"<PAN or BIN pattern> <lost|stolen|restricted>\", found 1"),
            (
                "4000 0000 0000 0010 stolen\n",
                "list.txt:1: expected two columns, \"<PAN or BIN pattern> <lost|stolen|restricted>\", found 5 (write a PAN without spaces)",
            ),
            (
                "4000000000000028 4000000000000010\n",
                "list.txt:1: expected a reason of lost, stolen or restricted, found digits",
            ),
            ("\n4000000000000010 missing\n", "list.txt:2: expected a reason of lost, stolen or restricted, found \"missing\""),
            ("41x3 lost\n", "list.txt:1: expected a PAN of 12–19 digits or a BIN pattern: bin \"41x3\""),
            (
                "40000000000000101234 lost\n",
                "list.txt:1: expected a PAN of 12–19 digits or a BIN pattern: found \"400000**********1234\"",
            ),
            ("4 lost stolen\n", "list.txt:1: expected two columns, \"<PAN or BIN pattern> <lost|stolen|restricted>\", found 3"),
            (
                "4000000000000010 lost\n4000000000000010 stolen\n",
                "list.txt:2: the card is also listed on line 1 with another reason",
            ),
            (
                "412345 lost\n# x\n412345-412345 stolen\n",
                "list.txt:3: bin patterns \"412345\" and \"412345-412345\" match exactly the same cards",
            ),
        ];
        for (text, expected) in cases {
            let error = Hotlist::parse("hot", "list.txt", text)
                .expect_err(text)
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("risk rule \"hot\": file: "), "{error}");
            for pan in ["4000000000000010", "0000 0010", "4000000000000028"] {
                assert!(!error.contains(pan), "PAN in {error}");
            }
        }
    }

    #[test]
    fn the_same_card_twice_with_one_reason_is_accepted() {
        let list = Hotlist::parse("hot", "l", "4000000000000010 lost\n4000000000000010 lost\n")
            .expect("repeated entry");
        assert_eq!(list.sizes(), (1, 0));
    }

    #[test]
    fn a_missing_file_names_rule_and_path() {
        let error = Hotlist::load("hot", Path::new("/nonexistent/hotlist.txt"))
            .expect_err("no file")
            .to_string();
        assert!(
            error.starts_with("risk rule \"hot\": file: cannot read /nonexistent/hotlist.txt"),
            "{error}"
        );
    }
}
