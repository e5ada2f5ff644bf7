//! BIN patterns (`"4"`, `"510000-559999"`) and the table that maps a PAN to the most
//! specific pattern's value. Built once per config snapshot (slow, strict); looked up
//! once per transaction (allocation-free: a few binary searches over `u64` keys).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

/// Longest BIN a pattern may have. 11 digits keeps every pattern value below 10^11,
/// so a pattern is one `u64` comparison and an 8-digit BIN (the schemes' current
/// length) leaves room for account-range routing.
pub const MAX_BIN_DIGITS: usize = 11;

/// One BIN pattern: a prefix, or an inclusive range over the PAN's first `L` digits
/// where `L` is the (shared) length of `low` and `high`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum BinPattern {
    /// The PAN starts with these digits.
    Prefix(String),
    /// The PAN's first `low.len()` digits, read as a number, lie in `low..=high`.
    Range { low: String, high: String },
}

/// Why a BIN pattern string was refused; each variant quotes the text it was given.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BinPatternError {
    #[error("bin pattern is empty: expected 1–{MAX_BIN_DIGITS} digits (\"4\") or a range (\"510000-559999\")")]
    Empty,
    #[error("bin \"{pattern}\": expected only digits, found {found:?} at position {position}")]
    NotADigit {
        pattern: String,
        found: char,
        /// 1-based character position in `pattern`.
        position: usize,
    },
    #[error("bin \"{pattern}\": expected 1–{MAX_BIN_DIGITS} digits, found {digits}")]
    BadLength { pattern: String, digits: usize },
    #[error(
        "bin range \"{pattern}\": low and high must have the same number of digits, found {low_digits} and {high_digits}"
    )]
    UnequalRangeLengths {
        pattern: String,
        low_digits: usize,
        high_digits: usize,
    },
    #[error("bin range \"{pattern}\": expected low <= high, found {low} > {high}")]
    ReversedRange {
        pattern: String,
        low: String,
        high: String,
    },
}

impl BinPattern {
    /// How many leading PAN digits this pattern looks at; also its specificity rank.
    pub fn digits(&self) -> usize {
        match self {
            BinPattern::Prefix(prefix) => prefix.len(),
            BinPattern::Range { low, .. } => low.len(),
        }
    }

    /// Whether `pan` (ASCII digits) falls under this pattern. A PAN shorter than the
    /// pattern, or one with a non-digit among the digits looked at, never matches.
    pub fn matches(&self, pan: &[u8]) -> bool {
        let (low, high) = self.bounds();
        match leading_value(pan, self.digits()) {
            Some(value) => low <= value && value <= high,
            None => false,
        }
    }

    /// The pattern as an inclusive interval over the first `digits()` digits.
    fn bounds(&self) -> (u64, u64) {
        match self {
            BinPattern::Prefix(prefix) => {
                let value = digits_value(prefix.as_bytes());
                (value, value)
            }
            BinPattern::Range { low, high } => {
                (digits_value(low.as_bytes()), digits_value(high.as_bytes()))
            }
        }
    }
}

impl FromStr for BinPattern {
    type Err = BinPatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(BinPatternError::Empty);
        }
        match text.split_once('-') {
            None => {
                check_digits(text, text, 0)?;
                Ok(BinPattern::Prefix(text.to_owned()))
            }
            Some((low, high)) => {
                check_digits(text, low, 0)?;
                // +1 skips the '-' so positions point into the whole pattern.
                check_digits(text, high, low.chars().count() + 1)?;
                if low.len() != high.len() {
                    return Err(BinPatternError::UnequalRangeLengths {
                        pattern: text.to_owned(),
                        low_digits: low.len(),
                        high_digits: high.len(),
                    });
                }
                // Same length, digits only: string order is numeric order.
                if low > high {
                    return Err(BinPatternError::ReversedRange {
                        pattern: text.to_owned(),
                        low: low.to_owned(),
                        high: high.to_owned(),
                    });
                }
                Ok(BinPattern::Range {
                    low: low.to_owned(),
                    high: high.to_owned(),
                })
            }
        }
    }
}

impl TryFrom<String> for BinPattern {
    type Error = BinPatternError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for BinPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BinPattern::Prefix(prefix) => f.write_str(prefix),
            BinPattern::Range { low, high } => write!(f, "{low}-{high}"),
        }
    }
}

/// Checks that `part` (a piece of `pattern` starting at character `offset`) is
/// 1–11 ASCII digits.
fn check_digits(pattern: &str, part: &str, offset: usize) -> Result<(), BinPatternError> {
    if let Some((index, found)) = part.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(BinPatternError::NotADigit {
            pattern: pattern.to_owned(),
            found,
            position: offset + index + 1,
        });
    }
    if part.is_empty() || part.len() > MAX_BIN_DIGITS {
        return Err(BinPatternError::BadLength {
            pattern: pattern.to_owned(),
            digits: part.len(),
        });
    }
    Ok(())
}

/// Value of a run of ASCII digits already known to be at most 11 long.
fn digits_value(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0, |acc, digit| acc * 10 + u64::from(digit - b'0'))
}

/// Value of the first `count` bytes of `pan`, if there are that many and all are digits.
fn leading_value(pan: &[u8], count: usize) -> Option<u64> {
    let head = pan.get(..count)?;
    if head.iter().all(u8::is_ascii_digit) {
        Some(digits_value(head))
    } else {
        None
    }
}

/// Why a set of patterns cannot form a table: some PAN would have no single most
/// specific match. Indices are positions in the list given to [`BinTable::build`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BinTableError {
    #[error("bin patterns \"{first}\" and \"{second}\" match exactly the same cards, so neither is more specific")]
    Ambiguous {
        first: BinPattern,
        first_index: usize,
        second: BinPattern,
        second_index: usize,
    },
    #[error(
        "bin ranges \"{first}\" and \"{second}\" partly overlap; patterns of the same length must be disjoint or one must lie inside the other"
    )]
    Overlap {
        first: BinPattern,
        first_index: usize,
        second: BinPattern,
        second_index: usize,
    },
}

/// Maps PANs to values by BIN. The most specific pattern wins: more digits first,
/// then, among patterns of the same length, the narrower one (a prefix of length L
/// is the narrowest possible range of length L).
#[derive(Debug, Clone)]
pub struct BinTable<T> {
    entries: Vec<(BinPattern, T)>,
    /// One per pattern length in use, longest first, so the first hit is the answer.
    buckets: Vec<LengthBucket>,
}

/// All patterns of one length, flattened into sorted, disjoint segments that each
/// point at the innermost (narrowest) pattern covering them.
#[derive(Debug, Clone)]
struct LengthBucket {
    digits: usize,
    starts: Vec<u64>,
    /// Segment end (inclusive) and owning entry, beside each other: one cache line per hit.
    ends: Vec<(u64, usize)>,
}

impl LengthBucket {
    fn find(&self, key: u64) -> Option<usize> {
        // Binary search for the last start <= key with a fixed log2(n) trip count and
        // no early exit, so the compiler emits conditional moves: about twice as fast
        // as `partition_point` on 10 000 random lookups, where branches mispredict.
        let mut size = self.starts.len();
        if size == 0 {
            return None;
        }
        let mut base = 0;
        while size > 1 {
            let half = size / 2;
            let middle = base + half;
            if self.starts[middle] <= key {
                base = middle;
            }
            size -= half;
        }
        if self.starts[base] > key {
            return None;
        }
        let (end, entry) = self.ends[base];
        (key <= end).then_some(entry)
    }

    fn push_segment(&mut self, start: u64, end: u64, entry: usize) {
        if start <= end {
            self.starts.push(start);
            self.ends.push((end, entry));
        }
    }
}

/// A pattern as an interval, with its position in the build input.
#[derive(Clone, Copy)]
struct Interval {
    low: u64,
    high: u64,
    entry: usize,
}

impl<T> BinTable<T> {
    /// Builds the table, refusing any pair of patterns that would leave a PAN without
    /// a single most specific match (identical coverage, or same-length ranges that
    /// cross without one containing the other).
    pub fn build(
        entries: impl IntoIterator<Item = (BinPattern, T)>,
    ) -> Result<Self, BinTableError> {
        let entries: Vec<(BinPattern, T)> = entries.into_iter().collect();
        let mut by_length: Vec<Vec<Interval>> = vec![Vec::new(); MAX_BIN_DIGITS + 1];
        for (entry, (pattern, _)) in entries.iter().enumerate() {
            let (low, high) = pattern.bounds();
            by_length[pattern.digits()].push(Interval { low, high, entry });
        }
        let mut buckets = Vec::new();
        for (digits, intervals) in by_length.into_iter().enumerate().rev() {
            if !intervals.is_empty() {
                buckets.push(flatten(digits, intervals, &entries)?);
            }
        }
        Ok(BinTable { entries, buckets })
    }

    /// The value of the most specific pattern matching `pan` (ASCII digits).
    /// A PAN with any non-digit, or an empty one, matches nothing.
    pub fn lookup(&self, pan: &[u8]) -> Option<&T> {
        self.lookup_entry(pan).map(|(_, value)| value)
    }

    /// Like [`lookup`](Self::lookup), also returning the pattern that matched.
    pub fn lookup_entry(&self, pan: &[u8]) -> Option<(&BinPattern, &T)> {
        if pan.is_empty() || !pan.iter().all(u8::is_ascii_digit) {
            return None;
        }
        // prefixes[n] = value of the first n digits, computed once for every bucket.
        let mut prefixes = [0u64; MAX_BIN_DIGITS + 1];
        let mut value = 0u64;
        for (index, digit) in pan.iter().take(MAX_BIN_DIGITS).enumerate() {
            value = value * 10 + u64::from(digit - b'0');
            prefixes[index + 1] = value;
        }
        for bucket in &self.buckets {
            if bucket.digits > pan.len() {
                continue;
            }
            if let Some(entry) = bucket.find(prefixes[bucket.digits]) {
                let (pattern, value) = &self.entries[entry];
                return Some((pattern, value));
            }
        }
        None
    }

    /// The patterns and values in the order they were given to [`build`](Self::build).
    pub fn iter(&self) -> impl Iterator<Item = (&BinPattern, &T)> {
        self.entries.iter().map(|(pattern, value)| (pattern, value))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Turns same-length intervals (which must form a nesting: any two are disjoint or
/// one contains the other) into disjoint segments owned by the innermost interval.
fn flatten<T>(
    digits: usize,
    mut intervals: Vec<Interval>,
    entries: &[(BinPattern, T)],
) -> Result<LengthBucket, BinTableError> {
    // Outer intervals sort before the intervals they contain.
    intervals.sort_by(|a, b| a.low.cmp(&b.low).then(b.high.cmp(&a.high)));
    let mut bucket = LengthBucket {
        digits,
        starts: Vec::with_capacity(intervals.len()),
        ends: Vec::with_capacity(intervals.len()),
    };
    let pattern = |entry: usize| entries[entry].0.clone();
    // Intervals still open at the sweep position, outermost at the bottom.
    let mut open: Vec<Interval> = Vec::new();
    // Everything below `cursor` has been emitted (or is covered by nothing).
    let mut cursor = 0u64;
    for interval in intervals {
        while let Some(top) = open.last().copied().filter(|top| top.high < interval.low) {
            bucket.push_segment(cursor, top.high, top.entry);
            cursor = top.high + 1;
            open.pop();
        }
        if let Some(top) = open.last().copied() {
            // Report in input order so messages read the way the config was written.
            let (first, second) = if top.entry < interval.entry {
                (top.entry, interval.entry)
            } else {
                (interval.entry, top.entry)
            };
            if top.low == interval.low && top.high == interval.high {
                return Err(BinTableError::Ambiguous {
                    first: pattern(first),
                    first_index: first,
                    second: pattern(second),
                    second_index: second,
                });
            }
            if top.high < interval.high {
                return Err(BinTableError::Overlap {
                    first: pattern(first),
                    first_index: first,
                    second: pattern(second),
                    second_index: second,
                });
            }
            // `top` contains `interval`: `top` owns the gap up to it.
            if cursor < interval.low {
                bucket.push_segment(cursor, interval.low - 1, top.entry);
            }
        }
        cursor = interval.low;
        open.push(interval);
    }
    while let Some(top) = open.pop() {
        bucket.push_segment(cursor, top.high, top.entry);
        cursor = top.high + 1;
    }
    Ok(bucket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(text: &str) -> BinPattern {
        text.parse().expect("test pattern is valid")
    }

    fn table(patterns: &[&str]) -> BinTable<String> {
        BinTable::build(
            patterns
                .iter()
                .map(|text| (pattern(text), text.to_string())),
        )
        .expect("test table builds")
    }

    fn lookup<'a>(table: &'a BinTable<String>, pan: &str) -> Option<&'a str> {
        table.lookup(pan.as_bytes()).map(String::as_str)
    }

    #[test]
    fn prefix_and_range_parse_and_print_back() {
        assert_eq!(pattern("4"), BinPattern::Prefix("4".into()));
        assert_eq!(
            pattern("510000-559999"),
            BinPattern::Range {
                low: "510000".into(),
                high: "559999".into()
            }
        );
        for text in ["4", "45678901234", "510000-559999", "7-7"] {
            assert_eq!(pattern(text).to_string(), text);
        }
    }

    #[test]
    fn bad_patterns_say_what_was_expected_and_found() {
        let cases = [
            ("", "empty"),
            ("45x1", "found 'x' at position 3"),
            ("123456789012", "expected 1–11 digits, found 12"),
            ("51-559", "same number of digits, found 2 and 3"),
            ("55-51", "expected low <= high, found 55 > 51"),
            ("5-", "found 0"),
            ("-5", "found 0"),
            ("5-6-7", "found '-' at position 4"),
            (" 4", "found ' ' at position 1"),
        ];
        for (text, expected) in cases {
            let error = text.parse::<BinPattern>().expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn longer_prefix_beats_shorter_prefix_and_range() {
        let table = table(&["4", "40-49", "4000", "411111"]);
        assert_eq!(lookup(&table, "4111111111111111"), Some("411111"));
        assert_eq!(lookup(&table, "4000000000000002"), Some("4000"));
        assert_eq!(lookup(&table, "4500000000000000"), Some("40-49"));
    }

    #[test]
    fn range_of_equal_length_beats_shorter_prefix() {
        let table = table(&["5", "510000-559999"]);
        assert_eq!(lookup(&table, "5300000000000000"), Some("510000-559999"));
        assert_eq!(lookup(&table, "5600000000000000"), Some("5"));
    }

    #[test]
    fn narrower_range_beats_wider_range_of_same_length() {
        let table = table(&["510000-559999", "520000-529999", "525000"]);
        assert_eq!(lookup(&table, "5250001111111111"), Some("525000"));
        assert_eq!(lookup(&table, "5251001111111111"), Some("520000-529999"));
        assert_eq!(lookup(&table, "5300001111111111"), Some("510000-559999"));
        assert_eq!(lookup(&table, "5100001111111111"), Some("510000-559999"));
    }

    #[test]
    fn pan_shorter_than_pattern_does_not_match_it() {
        let table = table(&["4", "411111"]);
        assert_eq!(lookup(&table, "4111"), Some("4"));
        assert_eq!(lookup(&table, "411111"), Some("411111"));
    }

    #[test]
    fn non_digit_or_empty_pan_matches_nothing() {
        let table = table(&["4", "0-9"]);
        assert_eq!(lookup(&table, "4111 1111"), None);
        assert_eq!(lookup(&table, "41111111111111x1"), None);
        assert_eq!(lookup(&table, ""), None);
    }

    #[test]
    fn unmatched_pan_returns_none() {
        let table = table(&["4", "510000-559999"]);
        assert_eq!(lookup(&table, "6011000000000000"), None);
        assert_eq!(lookup(&table, "5099990000000000"), None);
    }

    #[test]
    fn identical_coverage_is_refused_naming_both_patterns() {
        let error = BinTable::build([(pattern("4000"), 1), (pattern("4000-4000"), 2)])
            .expect_err("prefix and one-value range are equal");
        assert_eq!(
            error,
            BinTableError::Ambiguous {
                first: pattern("4000"),
                first_index: 0,
                second: pattern("4000-4000"),
                second_index: 1,
            }
        );
        assert!(error.to_string().contains("\"4000\" and \"4000-4000\""));
    }

    #[test]
    fn crossing_ranges_of_same_length_are_refused_naming_both() {
        let error = BinTable::build([
            (pattern("1"), 0),
            (pattern("540000-559999"), 1),
            (pattern("510000-549999"), 2),
        ])
        .expect_err("ranges cross");
        assert_eq!(
            error.to_string(),
            "bin ranges \"540000-559999\" and \"510000-549999\" partly overlap; \
             patterns of the same length must be disjoint or one must lie inside the other"
        );
    }

    #[test]
    fn ranges_of_different_lengths_may_overlap() {
        let table = table(&["51-55", "540-569"]);
        assert_eq!(lookup(&table, "5500"), Some("540-569"));
        assert_eq!(lookup(&table, "5100"), Some("51-55"));
    }

    #[test]
    fn eleven_digit_pattern_matches_at_full_width() {
        let table = table(&["99999999999", "00000000000-00000000009"]);
        assert_eq!(lookup(&table, "9999999999912345"), Some("99999999999"));
        assert_eq!(
            lookup(&table, "0000000000512345"),
            Some("00000000000-00000000009")
        );
        assert_eq!(lookup(&table, "0000000001012345"), None);
    }

    #[test]
    fn iter_keeps_build_order() {
        let table = table(&["5", "4"]);
        let order: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(order, ["5", "4"]);
        assert_eq!(table.len(), 2);
        assert!(!table.is_empty());
    }

    #[test]
    fn large_table_agrees_with_linear_scan() {
        // Nested 8-digit ranges inside 6-digit prefixes inside 1-digit prefixes,
        // deep enough that every bucket's search takes many steps.
        let mut entries: Vec<(BinPattern, usize)> = Vec::new();
        for i in 0..1500u64 {
            let low = 40_000_000 + i * 1000;
            let text = format!("{low:08}-{:08}", low + 499);
            entries.push((pattern(&text), entries.len()));
        }
        for i in 0..400u64 {
            entries.push((pattern(&format!("{:06}", 400_000 + i * 3)), entries.len()));
        }
        for digit in ["3", "4", "5"] {
            entries.push((pattern(digit), entries.len()));
        }
        let table = BinTable::build(entries.clone()).expect("nested table builds");
        // A fixed linear-congruential sequence keeps the PANs the same on every run.
        let mut state: u64 = 8583;
        for _ in 0..400 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Half the PANs land where the ranges and long prefixes are.
            let bin = if state & 1 == 0 {
                40_000_000 + (state >> 8) % 1_500_000
            } else {
                39_000_000 + (state >> 8) % 17_000_000
            };
            let pan = format!("{bin:08}{:08}", (state >> 32) % 100_000_000);
            assert_eq!(
                table.lookup(pan.as_bytes()).copied(),
                reference_lookup(&entries, &pan),
                "pan {pan}"
            );
        }
    }

    // ---- properties against a linear-scan reference ----

    /// Patterns of 1–4 digits drawn from few digit values, so random PANs hit them
    /// and random tables contain nesting, ties and crossings often.
    fn arb_pattern() -> impl Strategy<Value = BinPattern> {
        let digits = |len: usize| proptest::collection::vec(0u8..4, len);
        (1usize..=4)
            .prop_flat_map(move |len| (digits(len), digits(len), any::<bool>()))
            .prop_map(|(a, b, is_range)| {
                let a: String = a.iter().map(|d| char::from(b'0' + d)).collect();
                let b: String = b.iter().map(|d| char::from(b'0' + d)).collect();
                if is_range {
                    let (low, high) = if a <= b { (a, b) } else { (b, a) };
                    BinPattern::Range { low, high }
                } else {
                    BinPattern::Prefix(a)
                }
            })
    }

    fn arb_pan() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[0-4]{0,7}").expect("regex is valid")
    }

    /// Two same-length patterns conflict unless disjoint or strictly nested.
    fn conflicts(a: &BinPattern, b: &BinPattern) -> bool {
        if a.digits() != b.digits() {
            return false;
        }
        let ((al, ah), (bl, bh)) = (a.bounds(), b.bounds());
        let disjoint = ah < bl || bh < al;
        let a_in_b = bl <= al && ah <= bh;
        let b_in_a = al <= bl && bh <= ah;
        let identical = a_in_b && b_in_a;
        !disjoint && (identical || !(a_in_b || b_in_a))
    }

    fn reference_lookup(entries: &[(BinPattern, usize)], pan: &str) -> Option<usize> {
        if pan.is_empty() || !pan.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        entries
            .iter()
            .filter(|(pattern, _)| pattern.matches(pan.as_bytes()))
            .max_by_key(|(pattern, _)| {
                let (low, high) = pattern.bounds();
                (pattern.digits(), std::cmp::Reverse(high - low))
            })
            .map(|(_, value)| *value)
    }

    proptest! {
        // A fixed seed keeps runs repeatable; widen coverage by changing it, not by chance.
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x150_8583),
            cases: 512,
            ..ProptestConfig::default()
        })]

        #[test]
        fn lookup_agrees_with_linear_scan(
            patterns in proptest::collection::vec(arb_pattern(), 0..40),
            pans in proptest::collection::vec(arb_pan(), 1..40),
        ) {
            // Keep only patterns that do not conflict with one kept earlier.
            let mut entries: Vec<(BinPattern, usize)> = Vec::new();
            for pattern in patterns {
                if !entries.iter().any(|(kept, _)| conflicts(kept, &pattern)) {
                    let value = entries.len();
                    entries.push((pattern, value));
                }
            }
            let table = BinTable::build(entries.clone()).expect("conflict-free table builds");
            for pan in &pans {
                prop_assert_eq!(table.lookup(pan.as_bytes()).copied(), reference_lookup(&entries, pan), "pan {}", pan);
            }
        }

        #[test]
        fn build_refuses_exactly_the_conflicting_tables(
            patterns in proptest::collection::vec(arb_pattern(), 0..12),
        ) {
            let has_conflict = patterns.iter().enumerate().any(|(i, a)| {
                patterns[i + 1..].iter().any(|b| conflicts(a, b))
            });
            let built = BinTable::build(patterns.iter().cloned().map(|p| (p, ())));
            match built {
                Ok(_) => prop_assert!(!has_conflict),
                Err(BinTableError::Ambiguous { first, second, first_index, second_index })
                | Err(BinTableError::Overlap { first, second, first_index, second_index }) => {
                    prop_assert!(first_index < second_index);
                    prop_assert_eq!(&patterns[first_index], &first);
                    prop_assert_eq!(&patterns[second_index], &second);
                    prop_assert!(conflicts(&first, &second));
                }
            }
        }

        #[test]
        fn parse_accepts_what_display_prints(pattern in arb_pattern()) {
            prop_assert_eq!(pattern.to_string().parse::<BinPattern>(), Ok(pattern));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,30}") {
            let _ = text.parse::<BinPattern>();
        }
    }
}
