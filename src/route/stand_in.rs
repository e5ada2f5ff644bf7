//! A route's `stand_in` table: the limits within which the switch may approve
//! on the issuer's behalf when the issuer cannot be reached. Only the values
//! live here; `switch::stand_in` applies them to a request.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// `[[route]] stand_in = { max_amount = 5000, max_per_card_per_day = 3 }`.
/// Without it a route never stands in: an unreachable issuer means 91.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandInConfig {
    /// The largest amount approved, in minor units of the transaction's
    /// currency (field 4), inclusive.
    pub max_amount: u64,
    /// Stand-in approvals per card per day; the next one is refused.
    pub max_per_card_per_day: u32,
    /// Merchant category codes (field 18, 4 digits) never stood in for.
    #[serde(default, deserialize_with = "mcc_list")]
    pub mcc_deny: Vec<String>,
    /// ISO 4217 numeric codes (field 49, 3 digits) that may be stood in for;
    /// `None` allows any. An acquirer's limit is per currency (5000 is 50.00
    /// dollars but 5000 yen), so a route that sees several currencies
    /// should list the one its `max_amount` means.
    #[serde(default, deserialize_with = "currency_list")]
    pub currencies: Option<Vec<String>>,
}

impl StandInConfig {
    /// Checks what parsing cannot: the message names the key and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_amount == 0 {
            return Err(
                "stand_in.max_amount: expected > 0, found 0 (leave stand_in out to never stand in)"
                    .to_owned(),
            );
        }
        if self.max_per_card_per_day == 0 {
            return Err(
                "stand_in.max_per_card_per_day: expected >= 1, found 0 (leave stand_in out to \
                 never stand in)"
                    .to_owned(),
            );
        }
        if self.currencies.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "stand_in.currencies: expected at least one currency, found none (leave \
                 currencies out to allow any)"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

fn mcc_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    digit_codes(
        deserializer,
        4,
        "stand_in.mcc_deny: expected merchant category codes of 4 digits (\"7995\")",
    )
}

fn currency_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    digit_codes(
        deserializer,
        3,
        "stand_in.currencies: expected ISO 4217 numeric currency codes of 3 digits (\"840\")",
    )
    .map(Some)
}

/// A list of codes of exactly `len` digits each; `expected` says which key wanted them.
fn digit_codes<'de, D: Deserializer<'de>>(
    deserializer: D,
    len: usize,
    expected: &str,
) -> Result<Vec<String>, D::Error> {
    let codes = Vec::<String>::deserialize(deserializer)?;
    if let Some(bad) = codes
        .iter()
        .find(|code| code.len() != len || !code.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(D::Error::custom(format!("{expected}, found {bad:?}")));
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route-like table holding only `stand_in`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Route {
        stand_in: StandInConfig,
    }

    fn parse(text: &str) -> Result<StandInConfig, String> {
        toml::from_str::<Route>(text)
            .map(|route| route.stand_in)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn the_documented_table_parses_with_optional_keys_defaulted() {
        let full = parse(
            "stand_in = { max_amount = 5000, max_per_card_per_day = 3, mcc_deny = [\"7995\"], \
             currencies = [\"840\", \"978\"] }",
        )
        .expect("valid");
        assert_eq!(full.max_amount, 5000);
        assert_eq!(full.max_per_card_per_day, 3);
        assert_eq!(full.mcc_deny, ["7995"]);
        assert_eq!(full.currencies, Some(vec!["840".into(), "978".into()]));
        assert_eq!(full.validate(), Ok(()));

        let least =
            parse("stand_in = { max_amount = 1, max_per_card_per_day = 1 }").expect("valid");
        assert!(least.mcc_deny.is_empty());
        assert_eq!(least.currencies, None);
        assert_eq!(least.validate(), Ok(()));
    }

    #[test]
    fn both_limits_are_required() {
        let error = parse("stand_in = { max_per_card_per_day = 3 }").expect_err("no amount");
        assert!(error.contains("missing field `max_amount`"), "{error}");
        let error = parse("stand_in = { max_amount = 5000 }").expect_err("no count");
        assert!(
            error.contains("missing field `max_per_card_per_day`"),
            "{error}"
        );
    }

    #[test]
    fn malformed_codes_are_refused_naming_the_key_and_the_code() {
        let error = parse("stand_in = { max_amount = 1, max_per_card_per_day = 1, mcc_deny = [\"5411\", \"79\"] }")
            .expect_err("short mcc");
        assert_eq!(
            error,
            "stand_in.mcc_deny: expected merchant category codes of 4 digits (\"7995\"), found \"79\""
        );
        let error = parse(
            "stand_in = { max_amount = 1, max_per_card_per_day = 1, currencies = [\"USD\"] }",
        )
        .expect_err("alpha currency");
        assert_eq!(
            error,
            "stand_in.currencies: expected ISO 4217 numeric currency codes of 3 digits (\"840\"), found \"USD\""
        );
    }

    #[test]
    fn limits_that_allow_nothing_are_refused_naming_the_key() {
        let base = StandInConfig {
            max_amount: 5000,
            max_per_card_per_day: 3,
            mcc_deny: Vec::new(),
            currencies: None,
        };
        let cases = [
            (
                StandInConfig {
                    max_amount: 0,
                    ..base.clone()
                },
                "stand_in.max_amount: expected > 0",
            ),
            (
                StandInConfig {
                    max_per_card_per_day: 0,
                    ..base.clone()
                },
                "stand_in.max_per_card_per_day: expected >= 1",
            ),
            (
                StandInConfig {
                    currencies: Some(Vec::new()),
                    ..base.clone()
                },
                "stand_in.currencies: expected at least one currency",
            ),
        ];
        for (config, expected) in cases {
            let error = config.validate().expect_err(expected);
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
