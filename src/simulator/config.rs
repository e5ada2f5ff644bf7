//! The `[simulator]` section: how the issuer simulator answers (rules, then
//! `default_response`) and the accounts it knows. Values are checked as they
//! are read, so toml can point at the one at fault.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::config_values::{
    checked, default_header, default_spec, header_kind, socket_addr, ConfigDir,
};

/// The issuer simulator: answers by the first matching rule, else `default_response`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Used by `isoswitch issuer-sim`; `"sim"` endpoints run in process without a socket.
    #[serde(default = "default_simulator_bind", deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    #[serde(default = "default_spec")]
    pub spec: PathBuf,
    #[serde(default = "default_header", deserialize_with = "header_kind")]
    pub header: String,
    #[serde(default)]
    pub header_includes_self: bool,
    #[serde(default = "default_sim_response")]
    pub default_response: SimResponse,
    /// First match wins.
    #[serde(rename = "rule", default)]
    pub rules: Vec<SimRule>,
    #[serde(rename = "account", default)]
    pub accounts: Vec<SimAccount>,
    /// Append a JSON line per message received over TCP to this file
    /// (relative to the config file); `isoswitch issuer-sim --record` wins.
    #[serde(default)]
    pub record: Option<PathBuf>,
}

impl SimulatorConfig {
    /// The length-header kind, one of [`HEADER_KINDS`](crate::config_values::HEADER_KINDS).
    pub fn header(&self) -> &str {
        &self.header
    }
}

/// One simulator rule; every condition given must hold, absent ones always hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRule {
    #[serde(default, deserialize_with = "optional_mti")]
    pub mti: Option<String>,
    #[serde(default, deserialize_with = "optional_pan_prefix")]
    pub pan_prefix: Option<String>,
    /// Inclusive bounds on field 4, in minor units.
    #[serde(default)]
    pub amount_min: Option<u64>,
    #[serde(default)]
    pub amount_max: Option<u64>,
    /// Prefix of field 3.
    #[serde(default, deserialize_with = "optional_processing_code")]
    pub processing_code: Option<String>,
    /// Exact values of other fields, by field number.
    #[serde(default, deserialize_with = "field_values")]
    pub fields: BTreeMap<u16, String>,
    pub respond: SimResponse,
    #[serde(default)]
    pub delay_ms: u64,
}

/// What the simulator does with a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum SimResponse {
    /// Answer with this field 39 (two ASCII letters or digits).
    Code(String),
    /// Never answer (to provoke timeouts and reversals).
    Drop,
    /// Close the connection instead of answering.
    Close,
}

impl FromStr for SimResponse {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "drop" => Ok(SimResponse::Drop),
            "close" => Ok(SimResponse::Close),
            code if code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Ok(SimResponse::Code(code.to_owned()))
            }
            other => Err(format!(
                "expected a 2-character response code like \"05\", \"drop\" or \"close\", found {other:?}"
            )),
        }
    }
}

impl TryFrom<String> for SimResponse {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for SimResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimResponse::Code(code) => f.write_str(code),
            SimResponse::Drop => f.write_str("drop"),
            SimResponse::Close => f.write_str("close"),
        }
    }
}

/// A cardholder account known to the simulator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimAccount {
    #[serde(deserialize_with = "account_pan")]
    pub pan: String,
    /// Available balance in minor units; may be negative (overdrawn).
    pub balance: i64,
    /// ISO 4217 numeric code.
    #[serde(default = "default_currency", deserialize_with = "currency_code")]
    pub currency: String,
    #[serde(default = "default_account_status")]
    pub status: AccountStatus,
    /// YYMM, as in field 14.
    #[serde(deserialize_with = "expiry_yymm")]
    pub expiry: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountStatus {
    Active,
    Blocked,
}

/// A simulator section that parsed but does not hold together: `item` is
/// e.g. `simulator rule #2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSimulator {
    pub item: String,
    pub problem: String,
}

fn invalid(item: impl Into<String>, problem: impl Into<String>) -> InvalidSimulator {
    InvalidSimulator {
        item: item.into(),
        problem: problem.into(),
    }
}

impl SimulatorConfig {
    /// Makes the spec path relative to the config file's directory.
    pub fn resolve_paths(&mut self, dir: ConfigDir<'_>) {
        dir.resolve_spec(&mut self.spec);
        dir.resolve_optional(&mut self.record);
    }

    /// Checks what relates rules and accounts to each other; single values
    /// were checked as they were read.
    pub fn validate(&self) -> Result<(), InvalidSimulator> {
        for (index, rule) in self.rules.iter().enumerate() {
            if let (Some(min), Some(max)) = (rule.amount_min, rule.amount_max) {
                if min > max {
                    return Err(invalid(
                        format!("simulator rule #{}", index + 1),
                        format!("expected amount_min <= amount_max, found {min} > {max}"),
                    ));
                }
            }
        }
        let mut seen = HashSet::new();
        for (index, account) in self.accounts.iter().enumerate() {
            if !seen.insert(&account.pan) {
                return Err(invalid(
                    format!("simulator account #{}", index + 1),
                    "another account has the same pan",
                ));
            }
        }
        Ok(())
    }
}

// ---- explicit defaults ----

fn default_simulator_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}
fn default_sim_response() -> SimResponse {
    SimResponse::Code("00".to_owned())
}
fn default_currency() -> String {
    "840".to_owned()
}
fn default_account_status() -> AccountStatus {
    AccountStatus::Active
}

// ---- value checks run while deserializing, so toml can point at the value ----

/// `Ok` if `text` is `min..=max` ASCII digits; otherwise says what `what` should be.
fn check_digit_run(text: &str, what: &str, min: usize, max: usize) -> Result<(), String> {
    check_digits(text, what, min, max, Some(text))
}

/// As `check_digit_run` for card numbers: the error never repeats the value,
/// which may be a whole PAN (PCI DSS), only what is wrong with it.
fn check_pan_digits(text: &str, what: &str, min: usize, max: usize) -> Result<(), String> {
    check_digits(text, what, min, max, None)
}

fn check_digits(
    text: &str,
    what: &str,
    min: usize,
    max: usize,
    shown: Option<&str>,
) -> Result<(), String> {
    let length = if min == max {
        format!("{min}")
    } else {
        format!("{min}–{max}")
    };
    let found = shown.map_or_else(String::new, |text| format!("{text:?} "));
    if let Some((index, bad)) = text.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        return Err(format!(
            "expected {what} of {length} digits, found {found}({bad:?} at position {})",
            index + 1
        ));
    }
    if text.len() < min || text.len() > max {
        return Err(format!(
            "expected {what} of {length} digits, found {found}({} digits)",
            text.len()
        ));
    }
    Ok(())
}

fn optional_mti<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    checked(deserializer, |text| check_digit_run(text, "an MTI", 4, 4)).map(Some)
}

fn optional_pan_prefix<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    checked(deserializer, |text| {
        check_pan_digits(text, "a PAN prefix", 1, 19)
    })
    .map(Some)
}

fn optional_processing_code<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    checked(deserializer, |text| {
        check_digit_run(text, "a processing-code prefix", 1, 6)
    })
    .map(Some)
}

fn account_pan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    checked(deserializer, |text| check_pan_digits(text, "a PAN", 12, 19))
}

fn currency_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    checked(deserializer, |text| {
        check_digit_run(text, "an ISO 4217 numeric currency code", 3, 3)
    })
}

fn expiry_yymm<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    checked(deserializer, |text| {
        check_digit_run(text, "an expiry date (YYMM)", 4, 4)?;
        match text[2..].parse::<u8>() {
            Ok(1..=12) => Ok(()),
            _ => Err(format!(
                "expected an expiry date (YYMM) with month 01–12, found {text:?}"
            )),
        }
    })
}

/// Highest field number a rule may match on (end of the secondary bitmap).
const MAX_FIELD_NUMBER: u16 = 128;

fn field_values<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u16, String>, D::Error> {
    let raw = BTreeMap::<String, String>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| match key.parse::<u16>() {
            // Field 1 is the secondary bitmap, not a value one could match.
            Ok(number @ 2..=MAX_FIELD_NUMBER) if key.bytes().all(|b| b.is_ascii_digit()) => {
                Ok((number, value))
            }
            _ => Err(D::Error::custom(format!(
                "expected field numbers 2–{MAX_FIELD_NUMBER} as keys of `fields`, found {key:?}"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn simulator_values_are_typed() {
        let text = r#"
[simulator]
[[simulator.rule]]
mti = "0200"
fields = { "41" = "TERM0001", "3" = "000000" }
respond = "close"
delay_ms = 250
[[simulator.account]]
pan = "4111111111111111"
balance = -500
expiry = "2812"
"#;
        let simulator = Config::from_toml_str(text, "test.toml")
            .expect("valid")
            .simulator
            .expect("present");
        assert_eq!(simulator.default_response, SimResponse::Code("00".into()));
        let rule = &simulator.rules[0];
        assert_eq!(rule.respond, SimResponse::Close);
        assert_eq!(rule.fields.get(&41).map(String::as_str), Some("TERM0001"));
        assert_eq!(rule.fields.get(&3).map(String::as_str), Some("000000"));
        let account = &simulator.accounts[0];
        assert_eq!((account.balance, account.currency.as_str()), (-500, "840"));
        assert_eq!(account.status, AccountStatus::Active);
    }

    #[test]
    fn record_path_is_relative_to_the_config_file() {
        let mut simulator: SimulatorConfig =
            toml::from_str("record = \"out/sim.jsonl\"").expect("valid");
        simulator.resolve_paths(ConfigDir(std::path::Path::new("/etc/isoswitch")));
        assert_eq!(
            simulator.record.as_deref(),
            Some(std::path::Path::new("/etc/isoswitch/out/sim.jsonl"))
        );
        let absent: SimulatorConfig = toml::from_str("").expect("valid");
        assert_eq!(absent.record, None);
    }

    /// A card number in a config error is described, never repeated: the value
    /// may be a whole PAN, written with spaces or one digit short.
    #[test]
    fn a_malformed_account_pan_is_not_repeated_in_its_error() {
        for pan in ["4111 1111 1111 1111", "41111111111", "41111111111111111111"] {
            let text = format!(
                "[simulator]\n[[simulator.account]]\npan = \"{pan}\"\nbalance = 1\nexpiry = \"2812\"\n"
            );
            let error = Config::from_toml_str(&text, "pans.toml")
                .expect_err("malformed PAN")
                .to_string();
            assert!(error.contains("expected a PAN of 12–19 digits"), "{error}");
            assert!(!error.contains("1111"), "PAN digits in {error}");
        }
    }
}
