//! The `[risk]` section as written in TOML: one `[[risk.rule]]` per rule, its
//! `kind` choosing which other keys it takes (serde refuses the rest by name).
//! [`RiskConfig::validate`] checks what needs no file: names, limits, codes,
//! patterns; reading hotlist files waits for [`super::RiskRules::compile`].

use std::fmt;
use std::num::NonZeroU64;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::channel::Channel;
use crate::config_values::ConfigDir;
use crate::iso8583::ResponseCode;
use crate::route::{BinPattern, BinTable};

/// At most this many velocity and duplicate rules: their undo marks live in a
/// fixed array on the stack, so evaluation never allocates for them.
pub const MAX_STATEFUL_RULES: usize = 32;

/// The whole `[risk]` section. Absent means no rules.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// Most cards, terminals or transmissions one velocity or duplicate rule
    /// tracks at once (and the cardholder-initiated approvals remembered for
    /// `recurring`). Beyond it new keys are not tracked (the rule lets them
    /// through and `isoswitch_risk_state_full_total` counts them) until idle
    /// keys expire.
    #[serde(default = "default_max_keys_per_rule")]
    pub max_keys_per_rule: NonZeroU64,
    /// In evaluation order (velocity and duplicate rules run after the others).
    #[serde(rename = "rule", default)]
    pub rules: Vec<RuleConfig>,
    /// Where velocity and duplicate state lives: absent, in this process;
    /// `"redis://host:port"`, in Redis, shared by every instance given it.
    #[serde(default, deserialize_with = "redis_url")]
    pub state: Option<String>,
    /// With `state`: the key (32 bytes, or 64 hex digits) card numbers and
    /// terminal ids are hashed under in Redis's keys; every instance needs
    /// the same. [`STATE_KEY_ENV`] wins over it.
    #[serde(default)]
    pub state_key_file: Option<PathBuf>,
}

/// The environment variable holding the shared-state key (64 hex digits).
pub const STATE_KEY_ENV: &str = "ISOSWITCH_RISK_STATE_KEY";

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            max_keys_per_rule: default_max_keys_per_rule(),
            rules: Vec::new(),
            state: None,
            state_key_file: None,
        }
    }
}

/// A `redis://` (or `rediss://`) URL.
fn redis_url<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    let text = String::deserialize(deserializer)?;
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err(D::Error::custom(format!(
            "state: expected redis://host:port, found {text:?}"
        )));
    }
    Ok(Some(text))
}

/// What a velocity or duplicate rule does when the shared state cannot be
/// reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnStateError {
    /// Decline with 96: nothing passes unchecked.
    Decline,
    /// Check and count in this process until the shared state is back
    /// (each instance then counts alone), counted and logged.
    Local,
}

impl OnStateError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStateError::Decline => "decline",
            OnStateError::Local => "local",
        }
    }
}

fn default_max_keys_per_rule() -> NonZeroU64 {
    NonZeroU64::new(2_000_000).unwrap_or(NonZeroU64::MIN)
}

/// One rule: a name (a metric label), a mode, where it applies and what it checks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub applies_to: Scope,
    /// `kind = "..."` and the keys of that kind. Unknown keys are refused here,
    /// which is why this struct itself cannot say `deny_unknown_fields`.
    #[serde(flatten, deserialize_with = "Check::from_keys")]
    pub check: Check,
    /// Velocity and duplicate rules with `[risk] state`: what to do when it
    /// cannot be reached (default `"local"`: a Redis outage must not stop
    /// approvals; each instance then enforces the limits on its own).
    #[serde(default)]
    pub on_state_error: Option<OnStateError>,
}

/// Whether a rule that fires declines, or only says it would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    #[default]
    Enforce,
    /// Evaluated, counted and logged as "would decline with NN"; never declines.
    Shadow,
}

impl Mode {
    /// The config spelling, also the `mode` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Spelled for Mode {
    const ALL: &'static [Mode] = &[Mode::Enforce, Mode::Shadow];
    const NAMES: &'static [&'static str] = &["enforce", "shadow"];
    fn as_str(self) -> &'static str {
        Mode::as_str(self)
    }
}

/// A config value that is one of a few words. Read as a string, so a number
/// or a table in its place is "expected a string", not serde's enum wording
/// ("wanted string or table"); a wrong word lists the right ones.
trait Spelled: Copy + 'static {
    const ALL: &'static [Self];
    const NAMES: &'static [&'static str];
    fn as_str(self) -> &'static str;
}

fn spelled<'de, D: serde::Deserializer<'de>, T: Spelled>(deserializer: D) -> Result<T, D::Error> {
    let word = String::deserialize(deserializer)?;
    T::ALL
        .iter()
        .copied()
        .find(|value| value.as_str() == word)
        .ok_or_else(|| serde::de::Error::unknown_variant(&word, T::NAMES))
}

macro_rules! deserialize_spelled {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                spelled(deserializer)
            }
        }
    )*};
}

deserialize_spelled!(Mode, Per, Brand);

/// Where a rule applies; every list given must match, an empty list matches all.
/// A rule scoped by merchant or MCC does not apply to a request without that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Listener names from `[[listener]]`.
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Field 42 values (trailing spaces ignored).
    #[serde(default)]
    pub merchants: Vec<String>,
    /// Field 18 values or ranges: "5411", "5960-5969".
    #[serde(default)]
    pub mccs: Vec<MccRange>,
}

impl Scope {
    pub fn is_everything(&self) -> bool {
        self.channels.is_empty()
            && self.listeners.is_empty()
            && self.merchants.is_empty()
            && self.mccs.is_empty()
    }
}

/// What a rule checks, by `kind`. Each variant lists the keys that kind takes.
/// Read through [`Check::from_keys`], not as serde's internally tagged enum:
/// that buffers the keys first, and its errors then name neither the key nor
/// where it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Check {
    /// Field 2 is all digits, `min_length..=max_length` long, with a right Luhn
    /// check digit; else 14.
    CardNumber {
        #[serde(default = "default_min_pan_length")]
        min_length: u8,
        #[serde(default = "default_max_pan_length")]
        max_length: u8,
    },
    /// Field 14 (YYMM) before the transaction's month gives 54. A request
    /// without field 14 passes (card-not-present requests may lack it).
    Expiry {},
    /// PANs and BIN patterns from a file, each with a reason: lost (41),
    /// stolen (43) or restricted (62).
    Hotlist { file: PathBuf },
    /// Known and blocked terminals (field 41) and merchants (field 42); 03.
    Terminal {
        /// When given, any other terminal is refused.
        #[serde(default)]
        known_terminals: Option<Vec<String>>,
        /// When given, any other merchant is refused.
        #[serde(default)]
        known_merchants: Option<Vec<String>>,
        #[serde(default)]
        blocked_terminals: Vec<String>,
        #[serde(default)]
        blocked_merchants: Vec<String>,
    },
    /// Merchant category codes (field 18): an allowlist or a blocklist; 58.
    Mcc {
        #[serde(default)]
        allow: Vec<MccRange>,
        #[serde(default)]
        block: Vec<MccRange>,
    },
    /// Currencies (field 49, ISO 4217 numeric) accepted; others get
    /// `response_code`, 13 (default) or 57.
    Currency {
        allow: Vec<CurrencyCode>,
        #[serde(default = "default_currency_code")]
        response_code: Code,
    },
    /// Field 4 below `min` gives 13, above `max` 61. A zero amount passes only
    /// for account verification (0100 purchase) and balance inquiry, else 13.
    Amount {
        #[serde(default)]
        min: Option<u64>,
        #[serde(default)]
        max: Option<u64>,
    },
    /// Count (65) and cumulative amount (61) per card or terminal within a
    /// sliding window of `window_s` seconds.
    Velocity {
        per: Per,
        window_s: u64,
        #[serde(default)]
        max_count: Option<u32>,
        /// Minor units; refunds do not add to it.
        #[serde(default)]
        max_amount: Option<u64>,
    },
    /// PAN entry modes (first two digits of field 22) refused; 58. Applies to
    /// the virtual-terminal channel unless `applies_to.channels` says otherwise.
    EntryMode {
        #[serde(default = "default_refused_entry_modes")]
        refuse: Vec<EntryModeCode>,
    },
    /// Card brands and BIN patterns refused; 57. Applies to the
    /// virtual-terminal channel unless `applies_to.channels` says otherwise.
    CardBrand {
        #[serde(default = "default_refused_brands")]
        brands: Vec<Brand>,
        #[serde(default)]
        bins: Vec<BinPattern>,
    },
    /// A merchant-initiated transaction (field `mit_field` holds one of
    /// `mit_values`) needs an approved cardholder-initiated one for the same
    /// card and merchant within `cit_valid_days`; else `response_code` (57).
    Recurring {
        #[serde(default = "default_mit_field")]
        mit_field: u8,
        #[serde(default = "default_mit_values")]
        mit_values: Vec<String>,
        #[serde(default = "default_cit_valid_days")]
        cit_valid_days: u32,
        #[serde(default = "default_recurring_code")]
        response_code: Code,
    },
    /// The same terminal (41), STAN (11) and transmission time (7) again within
    /// `window_s` gives 94, even while the first is still at the issuer.
    Duplicate {
        #[serde(default = "default_duplicate_window_s")]
        window_s: u64,
    },
}

impl Check {
    /// A rule's `kind` and that kind's keys (what is left of the rule's table
    /// after `name`, `mode` and `applies_to`). The keys are read as a table,
    /// so an error names the key it is about: "window_s: invalid type: string
    /// \"x\", expected u64" rather than the bare message.
    fn from_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Check, D::Error> {
        use serde::de::Error;
        let mut keys = toml::Table::deserialize(deserializer)?;
        let kind = match keys.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "kind: expected a string such as \"velocity\", found {}",
                    other.type_str()
                )))
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        // Serde's externally tagged form: { kind = { its keys } }.
        let tagged = toml::Table::from_iter([(kind, toml::Value::Table(keys))]);
        toml::Value::Table(tagged)
            .try_into()
            .map_err(|e: toml::de::Error| D::Error::custom(key_first(&e.to_string())))
    }

    /// The `kind` spelling.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::CardNumber { .. } => "card-number",
            Check::Expiry {} => "expiry",
            Check::Hotlist { .. } => "hotlist",
            Check::Terminal { .. } => "terminal",
            Check::Mcc { .. } => "mcc",
            Check::Currency { .. } => "currency",
            Check::Amount { .. } => "amount",
            Check::Velocity { .. } => "velocity",
            Check::EntryMode { .. } => "entry-mode",
            Check::CardBrand { .. } => "card-brand",
            Check::Recurring { .. } => "recurring",
            Check::Duplicate { .. } => "duplicate",
        }
    }

    /// Velocity and duplicate rules keep state and run after all the others.
    pub fn is_stateful(&self) -> bool {
        matches!(self, Check::Velocity { .. } | Check::Duplicate { .. })
    }
}

/// toml's "message\nin `key`\n" as one line, "key: message".
fn key_first(error: &str) -> String {
    let error = error.trim_end();
    match error.rsplit_once("\nin `") {
        Some((message, key)) => format!("{}: {}", key.trim_end_matches('`'), message.trim()),
        None => error.replace('\n', " "),
    }
}

/// What a velocity rule counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    Card,
    Terminal,
}

impl Per {
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Card => "card",
            Per::Terminal => "terminal",
        }
    }
}

impl Spelled for Per {
    const ALL: &'static [Per] = &[Per::Card, Per::Terminal];
    const NAMES: &'static [&'static str] = &["card", "terminal"];
    fn as_str(self) -> &'static str {
        Per::as_str(self)
    }
}

/// Card brands whose BIN ranges the switch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Brand {
    Unionpay,
    Maestro,
}

impl Brand {
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Unionpay => "unionpay",
            Brand::Maestro => "maestro",
        }
    }

    /// The brand's IIN prefixes (ISO/IEC 7812 registrations as the schemes
    /// publish them).
    pub fn bins(self) -> &'static [&'static str] {
        match self {
            Brand::Unionpay => &["62", "81"],
            Brand::Maestro => &[
                "5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763",
            ],
        }
    }
}

impl Spelled for Brand {
    const ALL: &'static [Brand] = &[Brand::Unionpay, Brand::Maestro];
    const NAMES: &'static [&'static str] = &["unionpay", "maestro"];
    fn as_str(self) -> &'static str {
        Brand::as_str(self)
    }
}

/// An MCC or an inclusive MCC range, written "5411" or "5960-5969".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MccRange {
    pub low: u16,
    pub high: u16,
}

impl FromStr for MccRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || {
            format!(
                "expected an MCC of 4 digits (\"5411\") or a range (\"5960-5969\"), found {text:?}"
            )
        };
        let one = |part: &str| -> Result<u16, String> {
            if part.len() == 4 && part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().map_err(|_| expected())
            } else {
                Err(expected())
            }
        };
        let (low, high) = match text.split_once('-') {
            Some((low, high)) => (one(low)?, one(high)?),
            None => {
                let code = one(text)?;
                (code, code)
            }
        };
        if low > high {
            return Err(format!(
                "MCC range {text:?}: expected low <= high, found {low:04} > {high:04}"
            ));
        }
        Ok(MccRange { low, high })
    }
}

impl TryFrom<String> for MccRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for MccRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{:04}", self.low)
        } else {
            write!(f, "{:04}-{:04}", self.low, self.high)
        }
    }
}

/// An ISO 4217 numeric currency code, "840".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CurrencyCode(pub u16);

impl TryFrom<String> for CurrencyCode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let digits = text.as_bytes();
        if let &[a, b, c] = digits {
            if digits.iter().all(u8::is_ascii_digit) {
                let value = |d: u8| u16::from(d - b'0');
                return Ok(CurrencyCode(value(a) * 100 + value(b) * 10 + value(c)));
            }
        }
        Err(format!(
            "expected an ISO 4217 numeric currency code of 3 digits (\"840\"), found {text:?}"
        ))
    }
}

impl fmt::Display for CurrencyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// The first two digits of field 22 (PAN entry mode), "05".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct EntryModeCode(pub u8);

impl TryFrom<String> for EntryModeCode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_bytes() {
            &[a, b] if a.is_ascii_digit() && b.is_ascii_digit() => {
                Ok(EntryModeCode((a - b'0') * 10 + (b - b'0')))
            }
            _ => Err(format!(
                "expected a PAN entry mode of 2 digits (\"05\" chip, \"07\" contactless), found {text:?}"
            )),
        }
    }
}

impl fmt::Display for EntryModeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.0)
    }
}

/// A response code written in config, "57".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Code(pub ResponseCode);

impl TryFrom<String> for Code {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse().map(Code).map_err(|e| e.to_string())
    }
}

fn default_min_pan_length() -> u8 {
    12
}
fn default_max_pan_length() -> u8 {
    19
}
fn default_currency_code() -> Code {
    Code(ResponseCode::INVALID_AMOUNT)
}
fn default_refused_entry_modes() -> Vec<EntryModeCode> {
    // Chip and contactless chip: a card-not-present channel cannot read either.
    vec![EntryModeCode(5), EntryModeCode(7)]
}
fn default_refused_brands() -> Vec<Brand> {
    vec![Brand::Unionpay, Brand::Maestro]
}
fn default_mit_field() -> u8 {
    // POS condition code; "08" is mail/telephone order, where recurring lives.
    25
}
fn default_mit_values() -> Vec<String> {
    vec!["08".to_owned()]
}
fn default_cit_valid_days() -> u32 {
    // A yearly subscription renews within 13 months of its last approval.
    400
}
fn default_recurring_code() -> Code {
    Code(ResponseCode::NOT_PERMITTED_TO_CARDHOLDER)
}
fn default_duplicate_window_s() -> u64 {
    300
}

/// A rule that cannot work as written: which rule, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("risk rule {rule:?}: {key}: {problem}")]
pub struct InvalidRule {
    pub rule: String,
    pub key: &'static str,
    pub problem: String,
}

fn invalid(rule: &RuleConfig, key: &'static str, problem: impl Into<String>) -> InvalidRule {
    InvalidRule {
        rule: rule.name.clone(),
        key,
        problem: problem.into(),
    }
}

/// Longest window a velocity or duplicate rule may have (400 days).
const MAX_WINDOW_S: u64 = 400 * 86_400;

impl RiskConfig {
    /// Makes hotlist files relative to the config file's directory.
    pub fn resolve_paths(&mut self, dir: ConfigDir<'_>) {
        dir.resolve_optional(&mut self.state_key_file);
        for rule in &mut self.rules {
            if let Check::Hotlist { file } = &mut rule.check {
                dir.resolve(file);
            }
        }
    }

    /// Checks every rule without reading files. `listeners` are the configured
    /// listener names that `applies_to.listeners` may refer to.
    pub fn validate<'a>(
        &self,
        listeners: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), InvalidRule> {
        let mut seen = std::collections::HashSet::new();
        let mut stateful = 0usize;
        for rule in &self.rules {
            let name = &rule.name;
            // Names become metric labels and log fields.
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    rule,
                    "name",
                    "expected a name of letters, digits, '-' or '_'",
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(invalid(rule, "name", "the name is used by another rule"));
            }
            for listener in &rule.applies_to.listeners {
                if !listeners.clone().into_iter().any(|l| l == listener) {
                    return Err(invalid(
                        rule,
                        "applies_to.listeners",
                        format!("listener {listener:?} is not defined"),
                    ));
                }
            }
            if rule.on_state_error.is_some() && !rule.check.is_stateful() {
                return Err(invalid(
                    rule,
                    "on_state_error",
                    "only velocity and duplicate rules keep state",
                ));
            }
            if rule.check.is_stateful() {
                stateful += 1;
                if stateful > MAX_STATEFUL_RULES {
                    return Err(invalid(
                        rule,
                        "kind",
                        format!(
                            "expected at most {MAX_STATEFUL_RULES} velocity and duplicate rules, found more"
                        ),
                    ));
                }
            }
            validate_check(rule)?;
        }
        Ok(())
    }
}

fn validate_check(rule: &RuleConfig) -> Result<(), InvalidRule> {
    match &rule.check {
        Check::CardNumber {
            min_length,
            max_length,
        } => {
            if !(12..=19).contains(min_length) || !(12..=19).contains(max_length) {
                return Err(invalid(
                    rule,
                    "min_length",
                    format!("expected PAN lengths within 12–19, found {min_length}–{max_length}"),
                ));
            }
            if min_length > max_length {
                return Err(invalid(
                    rule,
                    "min_length",
                    format!("expected min_length <= max_length, found {min_length} > {max_length}"),
                ));
            }
        }
        Check::Expiry {} | Check::Hotlist { .. } => {}
        Check::Terminal {
            known_terminals,
            known_merchants,
            blocked_terminals,
            blocked_merchants,
        } => {
            if known_terminals.is_none()
                && known_merchants.is_none()
                && blocked_terminals.is_empty()
                && blocked_merchants.is_empty()
            {
                return Err(invalid(
                    rule,
                    "known_terminals",
                    "expected at least one of known_terminals, known_merchants, blocked_terminals, blocked_merchants",
                ));
            }
            let lists = [
                ("known_terminals", known_terminals.as_deref().unwrap_or(&[])),
                ("known_merchants", known_merchants.as_deref().unwrap_or(&[])),
                ("blocked_terminals", blocked_terminals.as_slice()),
                ("blocked_merchants", blocked_merchants.as_slice()),
            ];
            for (key, list) in lists {
                if let Some(id) = list.iter().find(|id| id.trim_end().is_empty()) {
                    return Err(invalid(rule, key, format!("expected ids, found {id:?}")));
                }
            }
        }
        Check::Mcc { allow, block } => {
            if allow.is_empty() == block.is_empty() {
                return Err(invalid(
                    rule,
                    "allow",
                    "expected either allow or block (a list of MCCs), not both and not neither",
                ));
            }
        }
        Check::Currency {
            allow,
            response_code,
        } => {
            if allow.is_empty() {
                return Err(invalid(rule, "allow", "expected at least one currency"));
            }
            let code = response_code.0;
            if code != ResponseCode::INVALID_AMOUNT
                && code != ResponseCode::NOT_PERMITTED_TO_CARDHOLDER
            {
                return Err(invalid(
                    rule,
                    "response_code",
                    format!("expected \"13\" or \"57\", found \"{code}\""),
                ));
            }
        }
        Check::Amount { min, max } => {
            if let (Some(min), Some(max)) = (min, max) {
                if min > max {
                    return Err(invalid(
                        rule,
                        "min",
                        format!("expected min <= max, found {min} > {max}"),
                    ));
                }
            }
        }
        Check::Velocity {
            window_s,
            max_count,
            max_amount,
            ..
        } => {
            check_window(rule, *window_s)?;
            if max_count.is_none() && max_amount.is_none() {
                return Err(invalid(
                    rule,
                    "max_count",
                    "expected max_count, max_amount or both",
                ));
            }
            if *max_count == Some(0) {
                return Err(invalid(
                    rule,
                    "max_count",
                    "expected max_count >= 1, found 0",
                ));
            }
        }
        Check::EntryMode { refuse } => {
            if refuse.is_empty() {
                return Err(invalid(rule, "refuse", "expected at least one entry mode"));
            }
        }
        Check::CardBrand { .. } => {
            brand_table(&rule.check).map_err(|problem| invalid(rule, "bins", problem))?;
        }
        Check::Recurring {
            mit_field,
            mit_values,
            cit_valid_days,
            response_code,
        } => {
            if !(2..=128).contains(mit_field) {
                return Err(invalid(
                    rule,
                    "mit_field",
                    format!("expected a field number 2–128, found {mit_field}"),
                ));
            }
            if mit_values.is_empty() || mit_values.iter().any(String::is_empty) {
                return Err(invalid(
                    rule,
                    "mit_values",
                    "expected at least one non-empty value",
                ));
            }
            if *cit_valid_days == 0 || u64::from(*cit_valid_days) * 86_400 > MAX_WINDOW_S {
                return Err(invalid(
                    rule,
                    "cit_valid_days",
                    format!("expected 1–400 days, found {cit_valid_days}"),
                ));
            }
            if response_code.0.is_approval() {
                return Err(invalid(
                    rule,
                    "response_code",
                    format!("expected a decline code, found \"{}\"", response_code.0),
                ));
            }
        }
        Check::Duplicate { window_s } => check_window(rule, *window_s)?,
    }
    Ok(())
}

fn check_window(rule: &RuleConfig, window_s: u64) -> Result<(), InvalidRule> {
    if window_s == 0 || window_s > MAX_WINDOW_S {
        return Err(invalid(
            rule,
            "window_s",
            format!("expected 1–{MAX_WINDOW_S} seconds, found {window_s}"),
        ));
    }
    Ok(())
}

/// The BIN table of a `card-brand` check: each brand's prefixes and the extra
/// `bins`, the value naming where the pattern came from. Errors name both
/// patterns when two cover the same cards.
pub(crate) fn brand_table(check: &Check) -> Result<BinTable<&'static str>, String> {
    let Check::CardBrand { brands, bins } = check else {
        return Err("not a card-brand rule".to_owned());
    };
    if brands.is_empty() && bins.is_empty() {
        return Err("expected at least one brand or bin".to_owned());
    }
    let mut entries = Vec::new();
    for brand in brands {
        for bin in brand.bins() {
            let pattern: BinPattern = bin.parse().map_err(|e| format!("{e}"))?;
            entries.push((pattern, brand.as_str()));
        }
    }
    for bin in bins {
        entries.push((bin.clone(), "bins"));
    }
    BinTable::build(entries).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        risk: RiskConfig,
    }

    fn parse(text: &str) -> Result<RiskConfig, String> {
        toml::from_str::<Wrapper>(text)
            .map(|w| w.risk)
            .map_err(|e| e.message().to_owned())
    }

    fn validated(text: &str) -> Result<RiskConfig, String> {
        let config = parse(text)?;
        config
            .validate(["pos", "ecom"])
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn shared_state_is_a_redis_url_and_only_stateful_rules_say_what_to_do_without_it() {
        let config = validated(
            r#"
[risk]
state = "redis://127.0.0.1:6379"
state_key_file = "risk.key"
[[risk.rule]]
name = "v"
kind = "velocity"
per = "card"
window_s = 60
max_count = 3
on_state_error = "decline"
"#,
        )
        .expect("valid");
        assert_eq!(config.state.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(config.rules[0].on_state_error, Some(OnStateError::Decline));
        let error = validated("[risk]\nstate = \"memcached://x\"\n").expect_err("not redis");
        assert!(
            error.contains("state: expected redis://host:port"),
            "{error}"
        );
        let error = validated(
            "[[risk.rule]]\nname = \"e\"\nkind = \"expiry\"\non_state_error = \"local\"\n",
        )
        .expect_err("stateless");
        assert!(
            error.contains("on_state_error: only velocity and duplicate rules keep state"),
            "{error}"
        );
    }

    #[test]
    fn each_kind_reads_its_own_keys_with_defaults() {
        let config = validated(
            r#"
[risk]
[[risk.rule]]
name = "card"
kind = "card-number"
[[risk.rule]]
name = "vt-brands"
kind = "card-brand"
mode = "shadow"
applies_to = { channels = ["virtual-terminal"], mccs = ["5960-5969"] }
[[risk.rule]]
name = "per-minute"
kind = "velocity"
per = "card"
window_s = 60
max_count = 5
"#,
        )
        .expect("valid");
        assert_eq!(config.max_keys_per_rule.get(), 2_000_000);
        assert_eq!(
            config.rules[0].check,
            Check::CardNumber {
                min_length: 12,
                max_length: 19
            }
        );
        assert_eq!(config.rules[1].mode, Mode::Shadow);
        assert_eq!(
            config.rules[1].applies_to.mccs,
            [MccRange {
                low: 5960,
                high: 5969
            }]
        );
        assert_eq!(
            config.rules[1].check,
            Check::CardBrand {
                brands: vec![Brand::Unionpay, Brand::Maestro],
                bins: vec![]
            }
        );
        assert!(config.rules[2].check.is_stateful());
    }

    #[test]
    fn a_key_of_another_kind_is_refused_by_name() {
        let error =
            parse("[risk]\n[[risk.rule]]\nname = \"x\"\nkind = \"expiry\"\nmax_count = 3\n")
                .expect_err("expiry takes no max_count");
        assert!(error.contains("unknown field `max_count`"), "{error}");
    }

    #[test]
    fn an_unknown_kind_lists_the_known_ones() {
        let error = parse("[risk]\n[[risk.rule]]\nname = \"x\"\nkind = \"luhn\"\n")
            .expect_err("no such kind");
        assert!(error.contains("unknown variant `luhn`"), "{error}");
        assert!(error.contains("card-number"), "{error}");
    }

    #[test]
    fn bad_values_name_rule_and_key() {
        let cases = [
            (
                "name = \"a\"\nkind = \"amount\"\nmin = 500\nmax = 100",
                "risk rule \"a\": min: expected min <= max, found 500 > 100",
            ),
            (
                "name = \"b\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 0\nmax_count = 1",
                "risk rule \"b\": window_s: expected 1–34560000 seconds, found 0",
            ),
            (
                "name = \"c\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 60",
                "risk rule \"c\": max_count: expected max_count, max_amount or both",
            ),
            (
                "name = \"d\"\nkind = \"currency\"\nallow = [\"840\"]\nresponse_code = \"05\"",
                "risk rule \"d\": response_code: expected \"13\" or \"57\", found \"05\"",
            ),
            (
                "name = \"e\"\nkind = \"mcc\"\nallow = [\"5411\"]\nblock = [\"7995\"]",
                "risk rule \"e\": allow: expected either allow or block",
            ),
            (
                "name = \"f f\"\nkind = \"expiry\"",
                "risk rule \"f f\": name: expected a name of letters",
            ),
            (
                "name = \"g\"\nkind = \"expiry\"\napplies_to = { listeners = [\"atm\"] }",
                "risk rule \"g\": applies_to.listeners: listener \"atm\" is not defined",
            ),
            (
                "name = \"h\"\nkind = \"card-brand\"\nbins = [\"62\"]",
                "risk rule \"h\": bins: bin patterns \"62\" and \"62\" match exactly the same cards",
            ),
            (
                "name = \"i\"\nkind = \"recurring\"\nresponse_code = \"00\"",
                "risk rule \"i\": response_code: expected a decline code, found \"00\"",
            ),
            (
                "name = \"j\"\nkind = \"terminal\"",
                "risk rule \"j\": known_terminals: expected at least one of",
            ),
        ];
        for (body, expected) in cases {
            let text = format!("[risk]\n[[risk.rule]]\n{body}\n");
            let error = validated(&text).expect_err(body);
            assert!(error.starts_with(expected), "{body}: {error}");
        }
    }

    #[test]
    fn two_rules_with_one_name_are_refused() {
        let text = "[risk]\n[[risk.rule]]\nname = \"x\"\nkind = \"expiry\"\n[[risk.rule]]\nname = \"x\"\nkind = \"duplicate\"\n";
        assert_eq!(
            validated(text).expect_err("same name"),
            "risk rule \"x\": name: the name is used by another rule"
        );
    }

    #[test]
    fn malformed_values_say_what_was_expected() {
        for (body, expected) in [
            (
                "kind = \"mcc\"\nblock = [\"79\"]",
                "expected an MCC of 4 digits",
            ),
            (
                "kind = \"mcc\"\nblock = [\"7999-7990\"]",
                "expected low <= high",
            ),
            ("kind = \"currency\"\nallow = [\"EUR\"]", "ISO 4217 numeric"),
            (
                "kind = \"entry-mode\"\nrefuse = [\"5\"]",
                "PAN entry mode of 2 digits",
            ),
            (
                "kind = \"card-brand\"\nbrands = [\"amex\"]",
                "unknown variant `amex`",
            ),
            (
                "kind = \"velocity\"\nper = \"merchant\"\nwindow_s = 1",
                "unknown variant `merchant`",
            ),
            ("kind = \"expiry\"\nmode = \"log\"", "unknown variant `log`"),
            (
                "kind = \"expiry\"\napplies_to = { channel = [\"pos\"] }",
                "unknown field `channel`",
            ),
            // A kind's own keys are named in their errors, on one line.
            (
                "kind = \"velocity\"\nper = \"card\"\nwindow_s = \"x\"\nmax_count = 1",
                "window_s: invalid type: string \"x\", expected u64",
            ),
            (
                "kind = \"velocity\"\nper = \"card\"\nwindow_s = 60\nmax_count = -1",
                "max_count: invalid value: integer `-1`, expected u32",
            ),
            (
                "kind = \"card-brand\"\nbrands = [\"maestro\", \"amex\"]",
                "brands: unknown variant `amex`",
            ),
            (
                "kind = 3",
                "kind: expected a string such as \"velocity\", found integer",
            ),
            ("mode = \"shadow\"", "missing field `kind`"),
            // A word-valued key given something else says a string is wanted.
            (
                "kind = \"expiry\"\nmode = 1.5",
                "invalid type: floating point `1.5`, expected a string",
            ),
            (
                "kind = \"velocity\"\nper = 3\nwindow_s = 1\nmax_count = 1",
                "per: invalid type: integer `3`, expected a string",
            ),
        ] {
            let text = format!("[risk]\n[[risk.rule]]\nname = \"x\"\n{body}\n");
            let error = parse(&text).expect_err(body);
            assert!(error.contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn each_word_valued_key_lists_the_words_it_reads() {
        fn names<T: Spelled>() -> Vec<&'static str> {
            T::ALL.iter().map(|v| v.as_str()).collect()
        }
        assert_eq!(names::<Mode>(), Mode::NAMES);
        assert_eq!(names::<Per>(), Per::NAMES);
        assert_eq!(names::<Brand>(), Brand::NAMES);
    }

    #[test]
    fn mcc_ranges_print_as_written() {
        for text in ["5411", "5960-5969", "0742"] {
            assert_eq!(text.parse::<MccRange>().expect(text).to_string(), text);
        }
    }
}
