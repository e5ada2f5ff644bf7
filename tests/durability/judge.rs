//! Judging a run: what the terminals heard against what the issuer (the
//! simulator's record) received and what the journal kept. Every approval a
//! terminal did not hear is reversed at the issuer, naming the STAN the
//! issuer saw; no approval a terminal heard is; each heard approval is
//! journaled as 00.

use std::collections::HashMap;
use std::fmt;

use super::evidence::Recorded;
use super::load::Sent;

/// What one run exercised, and the transactions reversed more than once.
#[derive(Debug, Default)]
pub struct Verdict {
    pub sent: usize,
    pub approved: usize,
    pub declined_91: usize,
    pub other_answers: usize,
    pub unanswered: usize,
    pub originals_at_issuer: usize,
    pub dropped_at_issuer: usize,
    pub approved_at_issuer_not_heard: usize,
    pub reversed_originals: usize,
    pub reversal_lines: usize,
    pub released: usize,
    pub reversals_of_originals_never_seen: usize,
    /// RRNs whose original got more than one first attempt (0400) at the
    /// issuer: more than one reversal item for one transaction.
    pub reversed_twice: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "terminals: {} sent, {} approved, {} declined 91, {} other, {} unanswered",
            self.sent, self.approved, self.declined_91, self.other_answers, self.unanswered
        )?;
        writeln!(
            f,
            "issuer: {} purchases ({} dropped, {} approved but not heard), {} reversed \
             ({} lines, {} released), {} reversals of purchases it never saw",
            self.originals_at_issuer,
            self.dropped_at_issuer,
            self.approved_at_issuer_not_heard,
            self.reversed_originals,
            self.reversal_lines,
            self.released,
            self.reversals_of_originals_never_seen
        )?;
        write!(f, "reversed more than once: {:?}", self.reversed_twice)
    }
}

/// Checks the record and the journal (response code by terminal RRN) against
/// what the terminals heard; panics naming the first transaction that breaks
/// a rule. Repeated reversal items are collected, not failed: the caller decides.
pub fn judge(
    sent: &[Sent],
    record: &[Recorded],
    journal: &HashMap<String, Option<String>>,
) -> Verdict {
    let mut verdict = Verdict {
        sent: sent.len(),
        ..Verdict::default()
    };
    for s in sent {
        match s.answer.as_deref() {
            Some("00") => verdict.approved += 1,
            Some("91") => verdict.declined_91 += 1,
            Some(_) => verdict.other_answers += 1,
            None => verdict.unanswered += 1,
        }
    }
    let by_rrn: HashMap<&str, &Sent> = sent.iter().map(|s| (s.rrn.as_str(), s)).collect();

    // Purchases at the issuer by RRN (each purchase has its own), and the
    // reversals of each: a reversal the switch built from its journal carries
    // the purchase's RRN. One without (a terminal's reversal of a purchase the
    // switch never took, forwarded as the terminal sent it) reverses nothing seen.
    let mut originals: HashMap<&str, &Recorded> = HashMap::new();
    for original in record.iter().filter(|r| r.mti == "0200") {
        let rrn = original
            .rrn
            .as_deref()
            .unwrap_or_else(|| panic!("a purchase at the issuer without its RRN: {original:?}"));
        assert!(
            originals.insert(rrn, original).is_none(),
            "the issuer saw RRN {rrn} twice"
        );
    }
    let mut reversals: HashMap<&str, Vec<&Recorded>> = HashMap::new();
    for reversal in record.iter().filter(|r| r.is_reversal()) {
        verdict.reversal_lines += 1;
        let original = reversal
            .rrn
            .as_deref()
            .and_then(|rrn| Some((rrn, *originals.get(rrn)?)));
        let Some((rrn, original)) = original else {
            verdict.reversals_of_originals_never_seen += 1;
            continue;
        };
        assert_eq!(
            reversal.original_stan.as_deref(),
            Some(original.stan.as_str()),
            "a reversal of RRN {rrn} names another STAN than the issuer saw: {reversal:?}"
        );
        assert_eq!(reversal.terminal(), original.terminal(), "{reversal:?}");
        reversals.entry(rrn).or_default().push(reversal);
    }

    for (&rrn, original) in &originals {
        verdict.originals_at_issuer += 1;
        verdict.dropped_at_issuer += usize::from(original.answer == "drop");
        let terminal = by_rrn
            .get(rrn)
            .unwrap_or_else(|| panic!("the issuer saw RRN {rrn}, which no terminal sent"));
        let its_reversals = reversals.get(rrn).map_or(&[][..], Vec::as_slice);
        if terminal.approved() {
            assert!(
                its_reversals.is_empty(),
                "RRN {rrn}: the terminal heard its approval, yet the issuer got {its_reversals:#?}"
            );
            continue;
        }
        if original.answer == "00" {
            verdict.approved_at_issuer_not_heard += 1;
        }
        assert!(
            !its_reversals.is_empty(),
            "RRN {rrn} (issuer STAN {}, issuer answer {}, terminal heard {:?}): never reversed",
            original.stan,
            original.answer,
            terminal.answer
        );
        verdict.reversed_originals += 1;
        for reversal in its_reversals {
            assert_eq!(
                reversal.original_mti.as_deref(),
                Some("0200"),
                "{reversal:?}"
            );
            assert_eq!(
                reversal.original_transmission, original.transmission,
                "{reversal:?}"
            );
        }
        let released = its_reversals
            .iter()
            .filter(|r| r.reversal.as_deref() == Some("released"))
            .count();
        assert!(
            released <= 1,
            "RRN {rrn}: released {released} times: {its_reversals:#?}"
        );
        verdict.released += released;
        if its_reversals.iter().filter(|r| r.mti == "0400").count() > 1 {
            verdict.reversed_twice.push(rrn.to_owned());
        }
    }

    for s in sent.iter().filter(|s| s.approved()) {
        assert_eq!(
            journal.get(&s.rrn),
            Some(&Some("00".to_owned())),
            "RRN {}: the terminal heard 00, the journal says otherwise",
            s.rrn
        );
    }
    verdict.reversed_twice.sort();
    verdict
}
