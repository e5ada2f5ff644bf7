//! Traffic scenarios: the TOML model in `load/scenarios/*.toml`, the card pool it
//! generates (BIN mix, Luhn-valid PANs, expiry in the future) and the requests built
//! from it, each carrying the response codes it should get back.
//!
//! Everything random comes from a seeded `fastrand::Rng`, so a scenario and a seed
//! always give the same cards and, per connection, the same request sequence.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use isoswitch::iso8583::fields::mask_pan;
use isoswitch::iso8583::message::{is_data_field, InvalidFieldNumber};
use isoswitch::iso8583::{Message, Mti, ResponseCode, Stan};
use serde::Deserialize;

/// Fields the generator fills itself on every request; a scenario may not set them.
pub const GENERATED_FIELDS: [u8; 9] = [2, 3, 4, 7, 11, 12, 13, 14, 41];

/// Constant fields every request carries unless the scenario's `[fields]` replaces
/// them: POS entry mode, condition code, merchant id, currency.
const DEFAULT_FIELDS: [(u8, &str); 4] = [
    (22, "051"),
    (25, "00"),
    (42, "LOADGEN00000001"),
    (49, "840"),
];

/// Weights and special-card shares are drawn in parts per million.
const PPM: u32 = 1_000_000;

/// Why a scenario file cannot be used. `Invalid` names the key in the file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario {path}: cannot read it: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Toml { path: String, message: String },
    #[error("scenario {path}: {key}: {problem}")]
    Invalid {
        path: String,
        key: String,
        problem: String,
    },
}

// ------------------------------------------------------------ the file model

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_channel")]
    channel: String,
    #[serde(default = "default_mti")]
    mti: Vec<WeightedText>,
    #[serde(default = "default_processing_code")]
    processing_code: Vec<WeightedText>,
    cards: CardsFile,
    #[serde(default, rename = "special_card")]
    special_cards: Vec<SpecialCardFile>,
    amount: AmountFile,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardsFile {
    count: u32,
    #[serde(default = "default_pan_length")]
    pan_length: u8,
    #[serde(default = "default_expiry_months_ahead")]
    expiry_months_ahead: u32,
    bins: Vec<BinFile>,
    expect: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BinFile {
    prefix: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecialCardFile {
    pan: String,
    percent: f64,
    expect: Vec<String>,
    #[serde(default = "default_special_expiry")]
    expiry: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountFile {
    min: Option<u64>,
    max: Option<u64>,
    choices: Option<Vec<AmountChoice>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountChoice {
    value: u64,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedText {
    value: String,
    weight: u32,
}

fn default_seed() -> u64 {
    1
}
fn default_channel() -> String {
    "pos".to_string()
}
fn default_mti() -> Vec<WeightedText> {
    vec![WeightedText {
        value: "0200".to_string(),
        weight: 1,
    }]
}
fn default_processing_code() -> Vec<WeightedText> {
    vec![WeightedText {
        value: "000000".to_string(),
        weight: 1,
    }]
}
fn default_pan_length() -> u8 {
    16
}
fn default_expiry_months_ahead() -> u32 {
    36
}
fn default_special_expiry() -> String {
    "auto".to_string()
}

// ------------------------------------------------------------ the model in memory

/// Values drawn with probability proportional to their weight.
#[derive(Debug, Clone)]
pub struct Weighted<T> {
    /// (value, cumulative weight up to and including it)
    items: Vec<(T, u64)>,
    total: u64,
}

impl<T> Weighted<T> {
    fn new(pairs: Vec<(T, u32)>) -> Option<Weighted<T>> {
        let mut total = 0u64;
        let mut items = Vec::with_capacity(pairs.len());
        for (value, weight) in pairs {
            if weight == 0 {
                continue;
            }
            total += u64::from(weight);
            items.push((value, total));
        }
        (total > 0).then_some(Weighted { items, total })
    }

    pub fn pick(&self, rng: &mut fastrand::Rng) -> &T {
        let r = rng.u64(0..self.total);
        let i = self
            .items
            .partition_point(|(_, cumulative)| *cumulative <= r);
        // partition_point < len because r < total == last cumulative weight.
        &self.items[i.min(self.items.len() - 1)].0
    }

    /// Each value with its share of the total, in percent.
    pub fn shares(&self) -> impl Iterator<Item = (&T, f64)> + '_ {
        let mut previous = 0;
        self.items.iter().map(move |(value, cumulative)| {
            let share = (cumulative - previous) as f64 * 100.0 / self.total as f64;
            previous = *cumulative;
            (value, share)
        })
    }
}

/// A BIN pattern: a prefix ("4") or an equal-length range ("51-55").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinRange {
    pub low: u64,
    pub high: u64,
    pub digits: u8,
}

impl BinRange {
    pub fn parse(text: &str) -> Result<BinRange, String> {
        let (low, high) = text.split_once('-').unwrap_or((text, text));
        if low.len() != high.len() {
            return Err(format!(
                "expected a prefix like \"4\" or a range of equal-length prefixes like \"51-55\", found {text:?}"
            ));
        }
        if low.is_empty()
            || low.len() > 11
            || !(low.bytes().chain(high.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(format!("expected 1 to 11 digits, found {text:?}"));
        }
        let (Ok(lo), Ok(hi)) = (low.parse::<u64>(), high.parse::<u64>()) else {
            return Err(format!("expected 1 to 11 digits, found {text:?}"));
        };
        if lo > hi {
            return Err(format!("range {text:?} runs backwards"));
        }
        Ok(BinRange {
            low: lo,
            high: hi,
            digits: low.len() as u8,
        })
    }

    /// How many distinct PANs of `pan_length` digits this pattern can make
    /// (saturating): prefixes × free digits (the check digit is not free).
    fn capacity(&self, pan_length: u8) -> u64 {
        let free = u32::from(pan_length.saturating_sub(self.digits + 1));
        (self.high - self.low + 1).saturating_mul(10u64.saturating_pow(free))
    }
}

impl fmt::Display for BinRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = usize::from(self.digits);
        if self.low == self.high {
            write!(f, "{:0width$}", self.low)
        } else {
            write!(f, "{:0width$}-{:0width$}", self.low, self.high)
        }
    }
}

/// The response codes a request may get; any other code is a mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Who this expectation is for, for messages: "generated cards" or a masked PAN.
    pub label: String,
    pub codes: Vec<ResponseCode>,
}

impl Expect {
    /// Whether `code` (absent when the response has no field 39) is acceptable.
    pub fn accepts(&self, code: Option<ResponseCode>) -> bool {
        code.is_some_and(|c| self.codes.contains(&c))
    }

    /// The codes as text, for messages: "00|51".
    pub fn codes_text(&self) -> String {
        let codes: Vec<&str> = self.codes.iter().map(ResponseCode::as_str).collect();
        codes.join("|")
    }
}

/// One card of the pool or a special card.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    pub pan: String,
    /// Field 14, YYMM.
    pub expiry: [u8; 4],
    /// Index into [`Scenario::expectations`].
    pub expect: u16,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Card({})", mask_pan(&self.pan))
    }
}

/// How amounts are drawn, in minor units.
#[derive(Debug, Clone)]
pub enum AmountModel {
    Uniform { min: u64, max: u64 },
    Choices(Weighted<u64>),
}

impl AmountModel {
    fn pick(&self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            AmountModel::Uniform { min, max } => rng.u64(*min..=*max),
            AmountModel::Choices(w) => *w.pick(rng),
        }
    }
}

/// A loaded, checked scenario.
#[derive(Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// Informational: the kind of listener this traffic is meant for.
    pub channel: String,
    /// Generated cards first (`pool_len` of them), then the special cards.
    pub cards: Vec<Card>,
    pub pool_len: usize,
    pub bins: Weighted<BinRange>,
    /// (index into `cards`, cumulative share in parts per million)
    specials: Vec<(usize, u32)>,
    /// Index 0 is the generated cards'; then one per special card.
    pub expectations: Vec<Expect>,
    pub amount: AmountModel,
    pub mti: Weighted<Mti>,
    pub processing_code: Weighted<[u8; 6]>,
    /// Constant fields, ascending.
    pub fields: Vec<(u8, String)>,
}

impl fmt::Debug for Scenario {
    /// A summary: the card pool is large and its PANs must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scenario({})", self.describe())
    }
}

/// One request ready to encode, with what it needs for matching its response.
#[derive(Debug, Clone)]
pub struct Planned {
    pub message: Message,
    /// Index into [`Scenario::cards`].
    pub card: u32,
    /// Index into [`Scenario::expectations`].
    pub expect: u16,
    /// Field 4, in minor units.
    pub amount: u64,
}

/// Fields 7, 12 and 13 for one UTC second. Computed once a second per connection
/// rather than per request; the switch sees no local time zone from a load test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireTime {
    unix_second: i64,
    /// MMDDhhmmss
    pub transmission: [u8; 10],
    /// hhmmss
    pub local_time: [u8; 6],
    /// MMDD
    pub local_date: [u8; 4],
}

impl WireTime {
    pub fn at(when: time::OffsetDateTime) -> WireTime {
        let utc = when.to_offset(time::UtcOffset::UTC);
        let mut text = [0u8; 10];
        let parts = [
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second(),
        ];
        for (i, part) in parts.iter().enumerate() {
            text[2 * i] = b'0' + part / 10;
            text[2 * i + 1] = b'0' + part % 10;
        }
        let mut local_time = [0u8; 6];
        local_time.copy_from_slice(&text[4..10]);
        let mut local_date = [0u8; 4];
        local_date.copy_from_slice(&text[0..4]);
        WireTime {
            unix_second: utc.unix_timestamp(),
            transmission: text,
            local_time,
            local_date,
        }
    }

    pub fn now() -> WireTime {
        WireTime::at(time::OffsetDateTime::now_utc())
    }

    /// Moves to the current second if the clock has passed the one held.
    pub fn refresh(&mut self) {
        let now = time::OffsetDateTime::now_utc();
        if now.unix_timestamp() != self.unix_second {
            *self = WireTime::at(now);
        }
    }
}

impl Scenario {
    /// Reads, parses and checks a scenario file, and generates its cards.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let default_name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("scenario");
        Scenario::from_toml_str(&text, &shown, default_name, time::OffsetDateTime::now_utc())
    }

    /// Parses scenario text; `origin` names it in errors, `today` dates the
    /// generated expiries.
    pub fn from_toml_str(
        text: &str,
        origin: &str,
        default_name: &str,
        today: time::OffsetDateTime,
    ) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile = toml::from_str(text).map_err(|e| ScenarioError::Toml {
            path: origin.to_string(),
            message: match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_string(),
            },
        })?;
        let invalid = |key: &str, problem: String| ScenarioError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            problem,
        };
        build(file, default_name, today).map_err(|(key, problem)| invalid(&key, problem))
    }

    /// The expectation for a planned request.
    pub fn expectation(&self, index: u16) -> Option<&Expect> {
        self.expectations.get(usize::from(index))
    }

    pub fn card(&self, index: u32) -> Option<&Card> {
        self.cards.get(index as usize)
    }

    /// Special cards with their share of traffic in percent.
    pub fn special_shares(&self) -> impl Iterator<Item = (&Card, f64)> + '_ {
        let mut previous = 0;
        self.specials.iter().map(move |(index, cumulative)| {
            let share = f64::from(cumulative - previous) * 100.0 / f64::from(PPM);
            previous = *cumulative;
            (&self.cards[*index], share)
        })
    }

    /// Draws a card: a special one by its share, else one of the pool uniformly.
    pub fn pick_card(&self, rng: &mut fastrand::Rng) -> u32 {
        if !self.specials.is_empty() {
            let r = rng.u32(0..PPM);
            if let Some((index, _)) = self.specials.iter().find(|(_, cumulative)| r < *cumulative) {
                return *index as u32;
            }
        }
        rng.usize(0..self.pool_len) as u32
    }

    /// Builds the next request: card, amount, MTI and processing code drawn from
    /// `rng`; `stan` and `terminal_id` from the connection; times from `time`.
    pub fn next_request(
        &self,
        rng: &mut fastrand::Rng,
        stan: Stan,
        terminal_id: &str,
        time: &WireTime,
    ) -> Result<Planned, InvalidFieldNumber> {
        let card_index = self.pick_card(rng);
        let card = &self.cards[card_index as usize];
        let mti = *self.mti.pick(rng);
        let processing_code = self.processing_code.pick(rng);
        // Balance inquiries carry amount zero: the switch allows zero only there
        // (and for account verification).
        let amount = if matches!(&processing_code[..2], b"30" | b"31") {
            0
        } else {
            self.amount.pick(rng)
        };
        let mut message = Message::new(mti);
        message
            .set(2, &card.pan)?
            .set(3, processing_code)?
            .set(4, format!("{amount:012}"))?
            .set(7, time.transmission)?
            .set(11, stan.to_digits())?
            .set(12, time.local_time)?
            .set(13, time.local_date)?
            .set(14, card.expiry)?
            .set(41, terminal_id)?;
        for (n, value) in &self.fields {
            message.set(*n, value)?;
        }
        Ok(Planned {
            message,
            card: card_index,
            expect: card.expect,
            amount,
        })
    }

    /// One line describing the traffic, for the start of a run.
    pub fn describe(&self) -> String {
        let bins: Vec<String> = self
            .bins
            .shares()
            .map(|(bin, share)| format!("{share:.0}% {bin}"))
            .collect();
        let specials: Vec<String> = self
            .special_shares()
            .map(|(card, share)| {
                let expect = self
                    .expectation(card.expect)
                    .map(Expect::codes_text)
                    .unwrap_or_default();
                format!("{share}% {} → {expect}", mask_pan(&card.pan))
            })
            .collect();
        let amount = match &self.amount {
            AmountModel::Uniform { min, max } => format!("amounts {min}..={max}"),
            AmountModel::Choices(w) => format!("{} weighted amounts", w.items.len()),
        };
        let mut line = format!(
            "scenario {}: {} cards ({}), {amount}, channel {}",
            self.name,
            self.pool_len,
            bins.join(", "),
            self.channel
        );
        if !specials.is_empty() {
            line.push_str(&format!("; special: {}", specials.join(", ")));
        }
        line
    }
}

/// 1-based line and column of a byte offset, for error messages.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

type Problem = (String, String);

fn problem(key: impl Into<String>, text: impl Into<String>) -> Problem {
    (key.into(), text.into())
}

fn build(
    file: ScenarioFile,
    default_name: &str,
    today: time::OffsetDateTime,
) -> Result<Scenario, Problem> {
    let channel = match file.channel.as_str() {
        "pos" | "virtual-terminal" | "host" => file.channel,
        other => {
            return Err(problem(
                "channel",
                format!("expected pos, virtual-terminal or host, found {other:?}"),
            ))
        }
    };

    let mut mti = Vec::new();
    for (i, item) in file.mti.iter().enumerate() {
        let parsed: Mti = item
            .value
            .parse()
            .map_err(|e| problem(format!("mti[{i}].value"), format!("{e}")))?;
        if !(matches!(parsed.class(), 1 | 2) && parsed.function() == 0) {
            return Err(problem(
                format!("mti[{i}].value"),
                format!("expected an authorization or financial request (0100, 0200, ...), found {parsed}"),
            ));
        }
        mti.push((parsed, item.weight));
    }
    let mti = Weighted::new(mti)
        .ok_or_else(|| problem("mti", "expected at least one entry with a weight above 0"))?;

    let mut codes = Vec::new();
    for (i, item) in file.processing_code.iter().enumerate() {
        let bytes = item.value.as_bytes();
        let Ok(code) = <[u8; 6]>::try_from(bytes) else {
            return Err(problem(
                format!("processing_code[{i}].value"),
                format!("expected 6 digits, found {:?}", item.value),
            ));
        };
        if !code.iter().all(u8::is_ascii_digit) {
            return Err(problem(
                format!("processing_code[{i}].value"),
                format!("expected 6 digits, found {:?}", item.value),
            ));
        }
        codes.push((code, item.weight));
    }
    let processing_code = Weighted::new(codes).ok_or_else(|| {
        problem(
            "processing_code",
            "expected at least one entry with a weight above 0",
        )
    })?;

    let amount = amount_model(&file.amount)?;

    let cards_file = &file.cards;
    if !(12..=19).contains(&cards_file.pan_length) {
        return Err(problem(
            "cards.pan_length",
            format!("expected 12 to 19, found {}", cards_file.pan_length),
        ));
    }
    if !(1..=240).contains(&cards_file.expiry_months_ahead) {
        return Err(problem(
            "cards.expiry_months_ahead",
            format!(
                "expected 1 to 240, found {}",
                cards_file.expiry_months_ahead
            ),
        ));
    }
    if cards_file.count == 0 {
        return Err(problem("cards.count", "expected at least 1 card"));
    }
    let mut bins = Vec::new();
    for (i, bin) in cards_file.bins.iter().enumerate() {
        let range = BinRange::parse(&bin.prefix)
            .map_err(|e| problem(format!("cards.bins[{i}].prefix"), e))?;
        if range.digits + 1 >= cards_file.pan_length {
            return Err(problem(
                format!("cards.bins[{i}].prefix"),
                format!(
                    "{} digits leave no room for random digits in a {}-digit PAN",
                    range.digits, cards_file.pan_length
                ),
            ));
        }
        bins.push((range, bin.weight));
    }
    let bins = Weighted::new(bins).ok_or_else(|| {
        problem(
            "cards.bins",
            "expected at least one BIN with a weight above 0",
        )
    })?;
    let expect_pool = expect_codes(&cards_file.expect, "cards.expect", "generated cards")?;
    let expiry = expiry_after(today, cards_file.expiry_months_ahead);

    let mut expectations = vec![expect_pool];
    let mut specials = Vec::new();
    let mut special_cards = Vec::new();
    let mut cumulative = 0u32;
    for (i, special) in file.special_cards.iter().enumerate() {
        let key = |k: &str| format!("special_card[{i}].{k}");
        let pan = &special.pan;
        if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
            return Err(problem(
                key("pan"),
                format!("expected 12 to 19 digits, found {} characters", pan.len()),
            ));
        }
        if !(special.percent > 0.0 && special.percent <= 100.0) {
            return Err(problem(
                key("percent"),
                format!(
                    "expected a share above 0 and at most 100, found {}",
                    special.percent
                ),
            ));
        }
        let share = (special.percent * f64::from(PPM) / 100.0).round() as u32;
        cumulative = cumulative.saturating_add(share.max(1));
        if cumulative > PPM {
            return Err(problem(
                key("percent"),
                "the special cards' shares add up to more than 100%",
            ));
        }
        let card_expiry = match special.expiry.as_str() {
            "auto" => expiry,
            text => parse_expiry(text).ok_or_else(|| {
                problem(
                    key("expiry"),
                    format!("expected YYMM or \"auto\", found {text:?}"),
                )
            })?,
        };
        let expect = expect_codes(&special.expect, &key("expect"), &mask_pan(pan))?;
        let expect_index = u16::try_from(expectations.len())
            .map_err(|_| problem("special_card", "too many special cards"))?;
        expectations.push(expect);
        special_cards.push(Card {
            pan: pan.clone(),
            expiry: card_expiry,
            expect: expect_index,
        });
        specials.push((i, cumulative));
    }

    let reserved: HashSet<&str> = special_cards.iter().map(|c| c.pan.as_str()).collect();
    let mut rng = fastrand::Rng::with_seed(file.seed);
    let pool = generate_cards(
        &mut rng,
        &bins,
        cards_file.count as usize,
        cards_file.pan_length,
        expiry,
        &reserved,
    )
    .map_err(|e| problem("cards.count", e))?;
    let pool_len = pool.len();
    let mut cards = pool;
    cards.extend(special_cards);
    let specials = specials
        .into_iter()
        .map(|(i, c)| (pool_len + i, c))
        .collect();

    let fields = constant_fields(&file.fields)?;
    Ok(Scenario {
        name: file.name.unwrap_or_else(|| default_name.to_string()),
        description: file.description,
        seed: file.seed,
        channel,
        cards,
        pool_len,
        bins,
        specials,
        expectations,
        amount,
        mti,
        processing_code,
        fields,
    })
}

fn amount_model(file: &AmountFile) -> Result<AmountModel, Problem> {
    match (file.min, file.max, &file.choices) {
        (Some(min), Some(max), None) => {
            if min > max {
                return Err(problem(
                    "amount.min",
                    format!("{min} is above amount.max {max}"),
                ));
            }
            if max > 999_999_999_999 {
                return Err(problem(
                    "amount.max",
                    "expected at most 12 digits (minor units)",
                ));
            }
            Ok(AmountModel::Uniform { min, max })
        }
        (None, None, Some(choices)) => {
            for (i, c) in choices.iter().enumerate() {
                if c.value > 999_999_999_999 {
                    return Err(problem(
                        format!("amount.choices[{i}].value"),
                        "expected at most 12 digits (minor units)",
                    ));
                }
            }
            Weighted::new(choices.iter().map(|c| (c.value, c.weight)).collect())
                .map(AmountModel::Choices)
                .ok_or_else(|| {
                    problem(
                        "amount.choices",
                        "expected at least one amount with a weight above 0",
                    )
                })
        }
        (Some(_), None, None) => Err(problem(
            "amount.max",
            "missing: amount.min needs amount.max",
        )),
        (None, Some(_), None) => Err(problem(
            "amount.min",
            "missing: amount.max needs amount.min",
        )),
        (None, None, None) => Err(problem(
            "amount",
            "expected min and max (minor units, uniform) or choices = [{ value, weight }, ...]",
        )),
        _ => Err(problem(
            "amount.choices",
            "give either min and max or choices, not both",
        )),
    }
}

fn expect_codes(texts: &[String], key: &str, label: &str) -> Result<Expect, Problem> {
    if texts.is_empty() {
        return Err(problem(
            key,
            "expected at least one response code, e.g. [\"00\"]",
        ));
    }
    let mut codes = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let code = <[u8; 2]>::try_from(text.as_bytes())
            .ok()
            .and_then(ResponseCode::new)
            .ok_or_else(|| {
                problem(
                    format!("{key}[{i}]"),
                    format!("expected a two-character response code, found {text:?}"),
                )
            })?;
        codes.push(code);
    }
    Ok(Expect {
        label: label.to_string(),
        codes,
    })
}

fn constant_fields(table: &BTreeMap<String, String>) -> Result<Vec<(u8, String)>, Problem> {
    let mut fields: BTreeMap<u8, String> = DEFAULT_FIELDS
        .iter()
        .map(|(n, v)| (*n, v.to_string()))
        .collect();
    for (key, value) in table {
        let n = key
            .parse::<u8>()
            .ok()
            .filter(|n| is_data_field(*n))
            .ok_or_else(|| {
                problem(
                    format!("fields.{key}"),
                    "expected a field number 2-192 other than 65",
                )
            })?;
        if GENERATED_FIELDS.contains(&n) {
            return Err(problem(
                format!("fields.{key}"),
                "the load generator sets this field itself on every request",
            ));
        }
        fields.insert(n, value.clone());
    }
    Ok(fields.into_iter().collect())
}

/// YYMM `months` after `today`.
fn expiry_after(today: time::OffsetDateTime, months: u32) -> [u8; 4] {
    let total =
        today.year() as i64 * 12 + i64::from(u8::from(today.month())) - 1 + i64::from(months);
    let year = (total / 12).rem_euclid(100) as u8;
    let month = (total % 12) as u8 + 1;
    [
        b'0' + year / 10,
        b'0' + year % 10,
        b'0' + month / 10,
        b'0' + month % 10,
    ]
}

fn parse_expiry(text: &str) -> Option<[u8; 4]> {
    let bytes = <[u8; 4]>::try_from(text.as_bytes()).ok()?;
    let month = bytes[2].wrapping_sub(b'0') * 10 + bytes[3].wrapping_sub(b'0');
    (bytes.iter().all(u8::is_ascii_digit) && (1..=12).contains(&month)).then_some(bytes)
}

/// The Luhn check digit that completes `body` (ASCII digits).
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    let mut sum = 0u32;
    // The check digit will sit at the right, so the body's last digit is doubled.
    for (i, &b) in body.iter().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// `count` distinct Luhn-valid PANs following the BIN mix; none of them in `reserved`.
pub fn generate_cards(
    rng: &mut fastrand::Rng,
    bins: &Weighted<BinRange>,
    count: usize,
    pan_length: u8,
    expiry: [u8; 4],
    reserved: &HashSet<&str>,
) -> Result<Vec<Card>, String> {
    let capacity: u64 = bins.items.iter().fold(0u64, |acc, (bin, _)| {
        acc.saturating_add(bin.capacity(pan_length))
    });
    // Headroom so random draws find unused numbers quickly.
    if (count as u64).saturating_mul(2) > capacity {
        return Err(format!(
            "{count} distinct {pan_length}-digit cards do not fit the BINs given (room for about {} with headroom)",
            capacity / 2
        ));
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(count);
    let mut cards = Vec::with_capacity(count);
    let max_attempts = count.saturating_mul(20).saturating_add(1000);
    let mut attempts = 0;
    let length = usize::from(pan_length);
    while cards.len() < count {
        attempts += 1;
        if attempts > max_attempts {
            return Err(format!(
                "found only {} distinct cards after {max_attempts} draws; use more or wider BINs",
                cards.len()
            ));
        }
        let bin = bins.pick(rng);
        let width = usize::from(bin.digits);
        let mut digits = format!("{:0width$}", rng.u64(bin.low..=bin.high)).into_bytes();
        while digits.len() < length - 1 {
            digits.push(b'0' + rng.u8(0..10));
        }
        digits.push(luhn_check_digit(&digits));
        let Ok(pan) = String::from_utf8(digits) else {
            continue;
        };
        if reserved.contains(pan.as_str()) || !seen.insert(pan.clone()) {
            continue;
        }
        cards.push(Card {
            pan,
            expiry,
            expect: 0,
        });
    }
    Ok(cards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use isoswitch::iso8583::fields::luhn_valid;

    fn today() -> time::OffsetDateTime {
        // 2026-11-23 12:00:00 UTC
        time::OffsetDateTime::from_unix_timestamp(1_795_435_200).expect("valid timestamp")
    }

    const MINIMAL: &str = r#"
[cards]
count = 100
bins = [{ prefix = "4", weight = 1 }]
expect = ["00"]

[amount]
min = 100
max = 200
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml_str(text, "test.toml", "test", today())
    }

    fn error_of(text: &str) -> String {
        parse(text).expect_err("invalid scenario").to_string()
    }

    #[test]
    fn minimal_scenario_takes_the_defaults() {
        let s = parse(MINIMAL).expect("valid");
        assert_eq!(s.name, "test");
        assert_eq!(s.pool_len, 100);
        assert_eq!(s.channel, "pos");
        assert_eq!(
            *s.mti.pick(&mut fastrand::Rng::with_seed(1)),
            Mti::from_static("0200")
        );
        assert_eq!(s.expectations[0].codes, vec![ResponseCode::APPROVED]);
        let fields: Vec<u8> = s.fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(fields, vec![22, 25, 42, 49]);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let text = format!("{MINIMAL}\nbogus_key = 1\n");
        let e = error_of(&text);
        assert!(e.contains("bogus_key"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
        let text = MINIMAL.replace("count = 100", "count = 100\ncolour = \"red\"");
        let e = error_of(&text);
        assert!(e.contains("colour"), "{e}");
        assert!(e.contains("line 4, column 1"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (MINIMAL.replace("prefix = \"4\"", "prefix = \"4x\""), "cards.bins[0].prefix"),
            (MINIMAL.replace("prefix = \"4\"", "prefix = \"55-51\""), "cards.bins[0].prefix"),
            (MINIMAL.replace("prefix = \"4\"", "prefix = \"5-555\""), "cards.bins[0].prefix"),
            (MINIMAL.replace("expect = [\"00\"]", "expect = [\"000\"]"), "cards.expect[0]"),
            (MINIMAL.replace("expect = [\"00\"]", "expect = []"), "cards.expect"),
            (MINIMAL.replace("min = 100", "min = 300"), "amount.min"),
            (MINIMAL.replace("max = 200\n", ""), "amount.max"),
            (MINIMAL.replace("count = 100", "count = 0"), "cards.count"),
            (
                MINIMAL.replace("count = 100", "count = 100\npan_length = 25"),
                "cards.pan_length",
            ),
            (format!("mti = [{{ value = \"0800\", weight = 1 }}]\n{MINIMAL}"), "mti[0].value"),
            (
                format!("processing_code = [{{ value = \"00\", weight = 1 }}]\n{MINIMAL}"),
                "processing_code[0].value",
            ),
            (format!("channel = \"atm\"\n{MINIMAL}"), "channel"),
            (format!("{MINIMAL}\n[fields]\n2 = \"4111\"\n"), "fields.2"),
            (format!("{MINIMAL}\n[fields]\n65 = \"1\"\n"), "fields.65"),
            (
                format!("{MINIMAL}\n[[special_card]]\npan = \"4000000000000002\"\npercent = 0.0\nexpect = [\"05\"]\n"),
                "special_card[0].percent",
            ),
            (
                format!("{MINIMAL}\n[[special_card]]\npan = \"40000\"\npercent = 1.0\nexpect = [\"05\"]\n"),
                "special_card[0].pan",
            ),
        ];
        for (text, key) in cases {
            let e = error_of(&text);
            assert!(e.contains(&format!("{key}:")), "expected {key} in: {e}");
        }
    }

    #[test]
    fn too_many_cards_for_the_bins_is_refused() {
        let text = MINIMAL
            .replace("prefix = \"4\"", "prefix = \"41111111111\"")
            .replace("count = 100", "count = 6000");
        let e = error_of(&text);
        assert!(e.contains("cards.count"), "{e}");
    }

    #[test]
    fn generated_cards_are_distinct_luhn_valid_and_follow_the_bin_mix() {
        let text = r#"
seed = 7
[cards]
count = 10000
bins = [{ prefix = "4", weight = 70 }, { prefix = "51-55", weight = 30 }]
expect = ["00"]
[amount]
min = 1
max = 2
"#;
        let s = parse(text).expect("valid");
        assert_eq!(s.cards.len(), 10_000);
        let distinct: HashSet<&str> = s.cards.iter().map(|c| c.pan.as_str()).collect();
        assert_eq!(distinct.len(), 10_000);
        let mut visa = 0;
        for card in &s.cards {
            assert_eq!(card.pan.len(), 16);
            assert!(luhn_valid(card.pan.as_bytes()), "{card:?}");
            match card.pan.as_bytes()[0] {
                b'4' => visa += 1,
                b'5' => assert!((b'1'..=b'5').contains(&card.pan.as_bytes()[1]), "{card:?}"),
                _ => panic!("card outside the BINs: {card:?}"),
            }
        }
        // 70% ± 2 points of 10 000 draws (the standard deviation is ~0.46 points).
        assert!((6_800..=7_200).contains(&visa), "{visa} Visa cards");
    }

    #[test]
    fn same_seed_same_cards() {
        let a = parse(MINIMAL).expect("valid");
        let b = parse(MINIMAL).expect("valid");
        assert_eq!(a.cards, b.cards);
        let c = parse(&format!("seed = 99\n{MINIMAL}")).expect("valid");
        assert_ne!(a.cards, c.cards);
    }

    #[test]
    fn check_digit_matches_known_test_cards() {
        assert_eq!(luhn_check_digit(b"411111111111111"), b'1');
        assert_eq!(luhn_check_digit(b"550000000000000"), b'4');
        assert_eq!(luhn_check_digit(b"400000000000000"), b'2');
    }

    #[test]
    fn expiry_is_months_after_today() {
        assert_eq!(&expiry_after(today(), 36), b"2911");
        assert_eq!(&expiry_after(today(), 1), b"2612");
        assert_eq!(&expiry_after(today(), 2), b"2701");
    }

    #[test]
    fn special_cards_take_their_share() {
        let text = format!(
            "{MINIMAL}\n[[special_card]]\npan = \"4000000000000002\"\npercent = 10.0\nexpect = [\"05\"]\n"
        );
        let s = parse(&text).expect("valid");
        let mut rng = fastrand::Rng::with_seed(3);
        let draws = 20_000;
        let special = (0..draws)
            .filter(|_| s.cards[s.pick_card(&mut rng) as usize].pan == "4000000000000002")
            .count();
        assert!((1_800..=2_200).contains(&special), "{special}");
        assert_eq!(s.expectations[1].codes_text(), "05");
        assert_eq!(s.expectations[1].label, "400000******0002");
    }

    #[test]
    fn expectation_accepts_only_its_codes() {
        let e = Expect {
            label: "x".into(),
            codes: vec![ResponseCode::APPROVED, ResponseCode::INSUFFICIENT_FUNDS],
        };
        assert!(e.accepts(Some(ResponseCode::APPROVED)));
        assert!(e.accepts(Some(ResponseCode::INSUFFICIENT_FUNDS)));
        assert!(!e.accepts(Some(ResponseCode::DO_NOT_HONOUR)));
        assert!(!e.accepts(None));
        assert_eq!(e.codes_text(), "00|51");
    }

    #[test]
    fn requests_carry_the_generated_fields() {
        let text = format!("processing_code = [{{ value = \"310000\", weight = 1 }}]\n{MINIMAL}");
        let s = parse(&text).expect("valid");
        let time = WireTime::at(today());
        let planned = s
            .next_request(
                &mut fastrand::Rng::with_seed(1),
                Stan(42),
                "LG000001",
                &time,
            )
            .expect("fields are data fields");
        let m = &planned.message;
        assert_eq!(m.get_str(3), Some("310000"));
        assert_eq!(
            m.get_str(4),
            Some("000000000000"),
            "balance inquiries carry zero"
        );
        assert_eq!(m.get_str(7), Some("1123120000"));
        assert_eq!(m.get_str(11), Some("000042"));
        assert_eq!(m.get_str(12), Some("120000"));
        assert_eq!(m.get_str(13), Some("1123"));
        assert_eq!(m.get_str(14), Some("2911"));
        assert_eq!(m.get_str(41), Some("LG000001"));
        assert_eq!(m.get_str(49), Some("840"));
        assert_eq!(
            m.get_str(2),
            Some(s.cards[planned.card as usize].pan.as_str())
        );
        assert!(!m.has(37), "the switch assigns the RRN");
    }

    #[test]
    fn shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        for name in ["default", "smoke", "bench"] {
            let s = Scenario::load(&dir.join(format!("{name}.toml"))).expect(name);
            assert_eq!(s.name, name);
            for card in &s.cards {
                assert!(luhn_valid(card.pan.as_bytes()), "{name}: {card:?}");
            }
        }
    }
}
