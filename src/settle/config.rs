//! `[[tariff]]` and `[[scheme]]`: what the acquirer charges per card scheme
//! and operation type, and which BINs belong to which scheme (built-in
//! ranges for the major schemes, which a `[[scheme]]` of the same name
//! replaces and another name adds to; the most specific pattern wins).

use std::collections::HashMap;

use serde::Deserialize;

use super::report::OperationType;
use crate::route::{BinPattern, BinTable};

/// `[[tariff]]`: one scheme's rates in basis points (130 = 1.3 %) and fixed
/// fees in minor units. A negative rate is a fee the acquirer returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    pub scheme: String,
    pub sale_bp: i32,
    pub cancel_bp: i32,
    pub refund_bp: i32,
    #[serde(default)]
    pub sale_fixed: i64,
    #[serde(default)]
    pub cancel_fixed: i64,
    #[serde(default)]
    pub refund_fixed: i64,
}

impl TariffConfig {
    /// The rate and fixed fee of `operation`. A cancelled refund is charged
    /// as a cancellation.
    pub fn rate(&self, operation: OperationType) -> (i32, i64) {
        match operation {
            OperationType::Sale => (self.sale_bp, self.sale_fixed),
            OperationType::Cancel | OperationType::RefundCancel => {
                (self.cancel_bp, self.cancel_fixed)
            }
            OperationType::Refund => (self.refund_bp, self.refund_fixed),
        }
    }
}

/// `[[scheme]]`: a card scheme's BIN patterns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeConfig {
    pub name: String,
    pub bins: Vec<BinPattern>,
}

/// The built-in IIN ranges (ISO/IEC 7812 prefixes as the schemes publish them).
pub const DEFAULT_SCHEMES: &[(&str, &[&str])] = &[
    ("visa", &["4"]),
    ("mastercard", &["51-55", "2221-2720"]),
    ("amex", &["34", "37"]),
    ("unionpay", &["62"]),
    ("jcb", &["3528-3589"]),
    ("discover", &["6011", "644-649", "65"]),
    ("mir", &["2200-2204"]),
    (
        "maestro",
        &["5018", "5020", "5038", "5893", "6304", "6759", "6761-6763"],
    ),
];

/// The scheme of a BIN.
pub struct SchemeTable(BinTable<String>);

impl std::fmt::Debug for SchemeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemeTable").finish_non_exhaustive()
    }
}

impl SchemeTable {
    /// The built-in schemes with `configured` ones replacing (same name) or
    /// added to them. The error names the scheme at fault.
    pub fn build(configured: &[SchemeConfig]) -> Result<SchemeTable, String> {
        let mut schemes: Vec<(String, Vec<BinPattern>)> = DEFAULT_SCHEMES
            .iter()
            .filter(|(name, _)| !configured.iter().any(|c| c.name == *name))
            .map(|(name, bins)| {
                let bins = bins
                    .iter()
                    .map(|b| b.parse().expect("the built-in BIN ranges parse"))
                    .collect();
                ((*name).to_owned(), bins)
            })
            .collect();
        schemes.extend(configured.iter().map(|c| (c.name.clone(), c.bins.clone())));
        let entries: Vec<(BinPattern, String)> = schemes
            .iter()
            .flat_map(|(name, bins)| bins.iter().map(move |b| (b.clone(), name.clone())))
            .collect();
        BinTable::build(entries.clone())
            .map(SchemeTable)
            .map_err(|e| match e {
                crate::route::BinTableError::Ambiguous {
                    first_index,
                    second_index,
                    ..
                }
                | crate::route::BinTableError::Overlap {
                    first_index,
                    second_index,
                    ..
                } => format!(
                    "scheme {:?}: bin \"{}\" overlaps bin \"{}\" of scheme {:?} (same-length \
                     patterns must be disjoint or nested)",
                    entries[second_index].1,
                    pattern_text(&entries[second_index].0),
                    pattern_text(&entries[first_index].0),
                    entries[first_index].1,
                ),
            })
    }

    /// The scheme of a card whose number starts with `bin` (digits; a masked
    /// PAN's first six do), or `None`.
    pub fn scheme_of(&self, bin: &str) -> Option<&str> {
        let digits: String = bin.chars().take_while(char::is_ascii_digit).collect();
        self.0.lookup(digits.as_bytes()).map(String::as_str)
    }
}

fn pattern_text(pattern: &BinPattern) -> String {
    match pattern {
        BinPattern::Prefix(p) => p.clone(),
        BinPattern::Range { low, high } => format!("{low}-{high}"),
    }
}

/// The tariffs by scheme.
#[derive(Debug, Clone, Default)]
pub struct Tariffs(HashMap<String, TariffConfig>);

impl Tariffs {
    /// One tariff per scheme, rates within ±100 % (±10 000 bp); the error
    /// names the tariff at fault.
    pub fn build(tariffs: &[TariffConfig]) -> Result<Tariffs, String> {
        let mut by_scheme = HashMap::new();
        for tariff in tariffs {
            let item = format!("tariff {:?}", tariff.scheme);
            for (key, bp) in [
                ("sale_bp", tariff.sale_bp),
                ("cancel_bp", tariff.cancel_bp),
                ("refund_bp", tariff.refund_bp),
            ] {
                if !(-10_000..=10_000).contains(&bp) {
                    return Err(format!(
                        "{item}: {key}: expected -10000 to 10000 basis points, found {bp}"
                    ));
                }
            }
            if by_scheme
                .insert(tariff.scheme.clone(), tariff.clone())
                .is_some()
            {
                return Err(format!("{item}: the scheme has another tariff"));
            }
        }
        Ok(Tariffs(by_scheme))
    }

    pub fn of(&self, scheme: &str) -> Option<&TariffConfig> {
        self.0.get(scheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_ranges_name_the_major_schemes_and_config_replaces_them() {
        let table = SchemeTable::build(&[]).expect("built-in ranges are consistent");
        assert_eq!(table.scheme_of("411111******1111"), Some("visa"));
        assert_eq!(table.scheme_of("550000"), Some("mastercard"));
        assert_eq!(table.scheme_of("222100"), Some("mastercard"));
        assert_eq!(table.scheme_of("220000"), Some("mir"));
        assert_eq!(table.scheme_of("371449"), Some("amex"));
        assert_eq!(table.scheme_of("356600"), Some("jcb"));
        assert_eq!(table.scheme_of("676100"), Some("maestro"));
        assert_eq!(table.scheme_of("900000"), None);
        let local = SchemeConfig {
            name: "local".into(),
            bins: vec!["9".parse().expect("bin")],
        };
        let visa = SchemeConfig {
            name: "visa".into(),
            bins: vec!["41".parse().expect("bin")],
        };
        let table = SchemeTable::build(&[local, visa]).expect("table");
        assert_eq!(table.scheme_of("900000"), Some("local"));
        assert_eq!(table.scheme_of("420000"), None, "visa is only 41 now");
    }

    #[test]
    fn overlapping_schemes_and_two_tariffs_for_one_scheme_are_refused_by_name() {
        let clash = SchemeConfig {
            name: "clash".into(),
            bins: vec!["50-52".parse().expect("bin")],
        };
        let error = SchemeTable::build(&[clash]).expect_err("crosses 51-55");
        assert!(
            error.contains("clash") && error.contains("mastercard"),
            "{error}"
        );
        let tariff = TariffConfig {
            scheme: "visa".into(),
            sale_bp: 130,
            cancel_bp: 120,
            refund_bp: 130,
            sale_fixed: 0,
            cancel_fixed: 0,
            refund_fixed: 0,
        };
        let error = Tariffs::build(&[tariff.clone(), tariff.clone()]).expect_err("twice");
        assert!(error.contains("tariff \"visa\""), "{error}");
        let wild = TariffConfig {
            sale_bp: 20_000,
            ..tariff
        };
        let error = Tariffs::build(&[wild]).expect_err("200 %");
        assert!(error.contains("sale_bp"), "{error}");
    }
}
