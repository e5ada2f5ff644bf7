//! A payment as an operator asks for it (the form or the JSON API), checked
//! field by field: each error names the field and what was expected, so the
//! API answers 400 with it and the form shows it beside the field.

use std::fmt;

use serde_json::Value;

/// What the operator asked for; each maps to one MTI and processing code
/// (`PaymentKind::mti`, `PaymentKind::processing_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKind {
    Sale,
    PreAuthorization,
    Refund,
    /// Zero-amount card verification.
    Verification,
    GiftActivation,
    GiftTopUp,
    GiftBalance,
}

impl PaymentKind {
    pub const ALL: [PaymentKind; 7] = [
        PaymentKind::Sale,
        PaymentKind::PreAuthorization,
        PaymentKind::Refund,
        PaymentKind::Verification,
        PaymentKind::GiftActivation,
        PaymentKind::GiftTopUp,
        PaymentKind::GiftBalance,
    ];

    /// The API and form spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Sale => "sale",
            PaymentKind::PreAuthorization => "pre-authorization",
            PaymentKind::Refund => "refund",
            PaymentKind::Verification => "verification",
            PaymentKind::GiftActivation => "gift-activation",
            PaymentKind::GiftTopUp => "gift-top-up",
            PaymentKind::GiftBalance => "gift-balance",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            PaymentKind::Sale => "Sale",
            PaymentKind::PreAuthorization => "Pre-authorization",
            PaymentKind::Refund => "Refund (supervisor)",
            PaymentKind::Verification => "Card verification (zero amount)",
            PaymentKind::GiftActivation => "Gift card activation",
            PaymentKind::GiftTopUp => "Gift card top-up",
            PaymentKind::GiftBalance => "Gift card balance",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentKind> {
        PaymentKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// 0100 for what only authorizes (pre-authorization, verification),
    /// 0200 for what moves money or asks a balance.
    pub fn mti(self) -> &'static str {
        match self {
            PaymentKind::PreAuthorization | PaymentKind::Verification => "0100",
            _ => "0200",
        }
    }

    /// Field 3. Sale, pre-authorization and verification are purchases (00);
    /// refund 20; gift activation 72 and top-up 28 (the prepaid activation
    /// and load codes card schemes use); balance inquiry 31.
    pub fn processing_code(self) -> &'static str {
        match self {
            PaymentKind::Sale | PaymentKind::PreAuthorization | PaymentKind::Verification => {
                "000000"
            }
            PaymentKind::Refund => "200000",
            PaymentKind::GiftActivation => "720000",
            PaymentKind::GiftTopUp => "280000",
            PaymentKind::GiftBalance => "310000",
        }
    }

    /// Whether the amount must be zero (verification, balance) rather than positive.
    pub fn zero_amount(self) -> bool {
        matches!(self, PaymentKind::Verification | PaymentKind::GiftBalance)
    }

    /// Gift cards carry no CVV2.
    pub fn needs_cvv(self) -> bool {
        matches!(
            self,
            PaymentKind::Sale | PaymentKind::PreAuthorization | PaymentKind::Verification
        )
    }
}

/// Why the customer is not present: field 25 and the indicator in field 60.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MailOrder,
    TelephoneOrder,
    /// The first, cardholder-initiated payment of a recurring series.
    Recurring,
    Other,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::MailOrder,
        Reason::TelephoneOrder,
        Reason::Recurring,
        Reason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MailOrder => "mail-order",
            Reason::TelephoneOrder => "telephone-order",
            Reason::Recurring => "recurring",
            Reason::Other => "other",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Reason::MailOrder => "Mail order",
            Reason::TelephoneOrder => "Telephone order",
            Reason::Recurring => "Recurring (first payment, customer present on the phone)",
            Reason::Other => "Other",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// A card number: 12 to 19 digits with a right Luhn check digit.
#[derive(Clone, PartialEq, Eq)]
pub struct CardNumber(String);

impl CardNumber {
    /// Spaces and dashes (as people type them) are dropped first.
    pub fn parse(text: &str) -> Result<CardNumber, &'static str> {
        let digits: String = text.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("12 to 19 digits");
        }
        if !luhn_ok(&digits) {
            return Err("a card number whose check digit (Luhn) is right");
        }
        Ok(CardNumber(digits))
    }

    pub fn digits(&self) -> &str {
        &self.0
    }

    /// First 6 and last 4, the rest as `*`.
    pub fn masked(&self) -> String {
        mask_pan(&self.0)
    }

    pub fn last4(&self) -> &str {
        &self.0[self.0.len() - 4..]
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardNumber({})", self.masked())
    }
}

/// First 6 and last 4 digits kept, the rest `*`; shorter strings all `*`.
pub fn mask_pan(pan: &str) -> String {
    if pan.len() < 13 {
        return "*".repeat(pan.len());
    }
    format!(
        "{}{}{}",
        &pan[..6],
        "*".repeat(pan.len() - 10),
        &pan[pan.len() - 4..]
    )
}

/// The Luhn check over a string of ASCII digits.
pub fn luhn_ok(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum % 10 == 0
}

/// The card brand a number's prefix shows, for the page (the switch's
/// card-brand rule decides what is refused).
pub fn brand_of(digits: &str) -> &'static str {
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
    match (prefix(1), prefix(2), prefix(4), prefix(6)) {
        (_, Some(62), _, _) => "UnionPay",
        (_, Some(50 | 56..=58 | 67), _, _) => "Maestro",
        (Some(4), _, _, _) => "Visa",
        (_, Some(51..=55), _, _) => "Mastercard",
        (_, _, _, Some(222100..=272099)) => "Mastercard",
        (_, Some(34 | 37), _, _) => "American Express",
        (_, _, Some(6011), _) | (_, Some(65), _, _) => "Discover",
        (_, _, Some(3528..=3589), _) => "JCB",
        _ => "card",
    }
}

/// Field 14, YYMM, from "MM/YY", "MMYY" or "MM/YYYY".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub yy: u8,
    pub mm: u8,
}

impl Expiry {
    pub fn parse(text: &str) -> Result<Expiry, &'static str> {
        const EXPECTED: &str = "MM/YY (a month 01-12 and a two-digit year)";
        let digits: String = text.chars().filter(|c| !matches!(c, '/' | ' ')).collect();
        let (mm, yy) = match digits.len() {
            4 => (&digits[..2], &digits[2..]),
            6 => (&digits[..2], &digits[4..]),
            _ => return Err(EXPECTED),
        };
        let (Ok(mm), Ok(yy)) = (mm.parse::<u8>(), yy.parse::<u8>()) else {
            return Err(EXPECTED);
        };
        if !(1..=12).contains(&mm) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EXPECTED);
        }
        Ok(Expiry { yy, mm })
    }

    pub fn yymm(self) -> String {
        format!("{:02}{:02}", self.yy, self.mm)
    }

    pub fn display(self) -> String {
        format!("{:02}/{:02}", self.mm, self.yy)
    }
}

/// CVV2: 3 or 4 digits. Sent upstream in field 48, never stored or logged;
/// its Debug shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Cvv(String);

impl Cvv {
    pub fn parse(text: &str) -> Result<Cvv, &'static str> {
        if !(3..=4).contains(&text.len()) || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err("3 or 4 digits");
        }
        Ok(Cvv(text.to_owned()))
    }

    pub fn digits(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Cvv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvv(***)")
    }
}

/// A currency the terminal takes: ISO 4217 alphabetic code, numeric code
/// (field 49) and minor-unit exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    pub alpha: &'static str,
    pub numeric: u16,
    pub exponent: u8,
}

const CURRENCIES: [Currency; 12] = [
    Currency {
        alpha: "USD",
        numeric: 840,
        exponent: 2,
    },
    Currency {
        alpha: "EUR",
        numeric: 978,
        exponent: 2,
    },
    Currency {
        alpha: "GBP",
        numeric: 826,
        exponent: 2,
    },
    Currency {
        alpha: "CHF",
        numeric: 756,
        exponent: 2,
    },
    Currency {
        alpha: "CAD",
        numeric: 124,
        exponent: 2,
    },
    Currency {
        alpha: "AUD",
        numeric: 36,
        exponent: 2,
    },
    Currency {
        alpha: "SEK",
        numeric: 752,
        exponent: 2,
    },
    Currency {
        alpha: "NOK",
        numeric: 578,
        exponent: 2,
    },
    Currency {
        alpha: "DKK",
        numeric: 208,
        exponent: 2,
    },
    Currency {
        alpha: "PLN",
        numeric: 985,
        exponent: 2,
    },
    Currency {
        alpha: "CZK",
        numeric: 203,
        exponent: 2,
    },
    Currency {
        alpha: "JPY",
        numeric: 392,
        exponent: 0,
    },
];

impl Currency {
    pub fn all() -> &'static [Currency] {
        &CURRENCIES
    }

    /// "USD", "usd" or "840".
    pub fn parse(text: &str) -> Option<Currency> {
        let upper = text.trim().to_ascii_uppercase();
        CURRENCIES.iter().copied().find(|c| {
            c.alpha == upper
                || upper
                    .parse::<u16>()
                    .is_ok_and(|n| n == c.numeric && upper.len() == 3)
        })
    }

    pub fn of_numeric(numeric: u16) -> Option<Currency> {
        CURRENCIES.iter().copied().find(|c| c.numeric == numeric)
    }

    /// `amount` minor units as "12.34 USD".
    pub fn format(self, amount: i64) -> String {
        if self.exponent == 0 {
            return format!("{amount} {}", self.alpha);
        }
        let scale = 10i64.pow(u32::from(self.exponent));
        let sign = if amount < 0 { "-" } else { "" };
        let abs = amount.unsigned_abs();
        let scale = scale.unsigned_abs();
        format!(
            "{sign}{}.{:0width$} {}",
            abs / scale,
            abs % scale,
            self.alpha,
            width = usize::from(self.exponent)
        )
    }
}

/// Formats `amount` in the currency of numeric code `currency`, or as bare
/// minor units when the code is unknown.
pub fn format_amount(amount: i64, currency: Option<u16>) -> String {
    match currency.and_then(Currency::of_numeric) {
        Some(c) => c.format(amount),
        None => format!("{amount} (minor units)"),
    }
}

/// The largest amount field 4 (n 12) carries.
pub const MAX_AMOUNT: u64 = 999_999_999_999;

/// A checked payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    pub kind: PaymentKind,
    pub card: CardNumber,
    pub expiry: Option<Expiry>,
    pub cvv: Option<Cvv>,
    /// Minor units.
    pub amount: u64,
    pub currency: Currency,
    pub reason: Reason,
    /// A refund's original sale, by its RRN.
    pub original_rrn: Option<String>,
}

/// A field that did not pass: its name and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}")]
pub struct InputError {
    pub field: &'static str,
    pub expected: String,
}

fn bad(field: &'static str, expected: impl Into<String>) -> InputError {
    InputError {
        field,
        expected: expected.into(),
    }
}

/// Where the fields come from: a JSON object (API) or form fields (pages),
/// both seen as strings or numbers by name.
pub trait Fields {
    /// The field as text: None when absent; Err when present but not text
    /// (a JSON number is given as its digits, with `number = true`).
    fn text(&self, name: &'static str) -> Result<Option<(String, bool)>, InputError>;
}

impl Fields for serde_json::Map<String, Value> {
    fn text(&self, name: &'static str) -> Result<Option<(String, bool)>, InputError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some((s.clone(), false))),
            Some(Value::Number(n)) => Ok(Some((n.to_string(), true))),
            Some(_) => Err(bad(name, "a string or a number")),
        }
    }
}

impl Fields for std::collections::HashMap<String, String> {
    fn text(&self, name: &'static str) -> Result<Option<(String, bool)>, InputError> {
        Ok(self
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.trim().to_owned(), false)))
    }
}

fn required(fields: &dyn Fields, name: &'static str, what: &str) -> Result<String, InputError> {
    fields
        .text(name)?
        .map(|(text, _)| text)
        .ok_or_else(|| bad(name, what))
}

/// An amount in minor units: whole digits, no decimal point, sign or exponent.
pub fn parse_amount(text: &str) -> Result<u64, InputError> {
    const WHOLE: &str = "an amount in minor units: whole digits, no decimal point (1050 for 10.50)";
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("amount", WHOLE));
    }
    match text.parse::<u64>() {
        Ok(amount) if amount <= MAX_AMOUNT => Ok(amount),
        _ => Err(bad("amount", format!("at most {MAX_AMOUNT} minor units"))),
    }
}

impl PaymentRequest {
    /// Checks every field; the first that fails is named.
    pub fn from_fields(fields: &dyn Fields) -> Result<PaymentRequest, InputError> {
        let kinds: Vec<&str> = PaymentKind::ALL.iter().map(|k| k.as_str()).collect();
        let kind_text = required(fields, "type", &format!("one of {}", kinds.join(", ")))?;
        let kind = PaymentKind::parse(&kind_text)
            .ok_or_else(|| bad("type", format!("one of {}", kinds.join(", "))))?;
        let card = CardNumber::parse(&required(fields, "card_number", "a card number")?)
            .map_err(|e| bad("card_number", e))?;
        let expiry = match fields.text("expiry")? {
            Some((text, _)) => Some(Expiry::parse(&text).map_err(|e| bad("expiry", e))?),
            None if kind.needs_cvv() => return Err(bad("expiry", "MM/YY")),
            None => None,
        };
        let cvv = match fields.text("cvv")? {
            Some((text, _)) => Some(Cvv::parse(&text).map_err(|e| bad("cvv", e))?),
            None if kind.needs_cvv() => {
                return Err(bad("cvv", "3 or 4 digits (CVV2 from the back of the card)"))
            }
            None => None,
        };
        let amount = match fields.text("amount")? {
            Some((text, _)) => parse_amount(&text)?,
            None if kind.zero_amount() => 0,
            None => return Err(bad("amount", "an amount in minor units")),
        };
        if kind.zero_amount() && amount != 0 {
            return Err(bad("amount", format!("0 for {}", kind.as_str())));
        }
        if !kind.zero_amount() && amount == 0 {
            return Err(bad("amount", "more than 0"));
        }
        let currency_text = required(fields, "currency", "a currency code such as USD or 840")?;
        let currency = Currency::parse(&currency_text).ok_or_else(|| {
            let known: Vec<&str> = CURRENCIES.iter().map(|c| c.alpha).collect();
            bad("currency", format!("one of {}", known.join(", ")))
        })?;
        let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        let reason = match fields.text("reason")? {
            Some((text, _)) => Reason::parse(&text)
                .ok_or_else(|| bad("reason", format!("one of {}", reasons.join(", "))))?,
            None => Reason::Other,
        };
        let original_rrn = match fields.text("original_rrn")? {
            Some((text, _)) => {
                if text.is_empty()
                    || text.len() > 12
                    || !text.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(bad(
                        "original_rrn",
                        "the sale's RRN: 1 to 12 letters or digits",
                    ));
                }
                Some(text)
            }
            None if kind == PaymentKind::Refund => {
                return Err(bad("original_rrn", "the RRN of the sale being refunded"))
            }
            None => None,
        };
        Ok(PaymentRequest {
            kind,
            card,
            expiry,
            cvv,
            amount,
            currency,
            reason,
            original_rrn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Result<PaymentRequest, InputError> {
        let value: Value = serde_json::from_str(text).expect("test JSON");
        let Value::Object(map) = value else {
            panic!("test JSON is an object")
        };
        PaymentRequest::from_fields(&map)
    }

    const SALE: &str = r#"{"type":"sale","card_number":"4111 1111 1111 1111","expiry":"12/30","cvv":"123","amount":1050,"currency":"USD","reason":"mail-order"}"#;

    #[test]
    fn a_sale_parses_with_spaces_in_the_card_number() {
        let request = json(SALE).expect("valid sale");
        assert_eq!(request.card.digits(), "4111111111111111");
        assert_eq!(request.amount, 1050);
        assert_eq!(request.expiry.map(Expiry::yymm).as_deref(), Some("3012"));
        assert_eq!(request.currency.numeric, 840);
        assert_eq!(request.reason, Reason::MailOrder);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                SALE.replace("4111 1111 1111 1111", "4111111111111112"),
                "card_number",
            ),
            (SALE.replace("4111 1111 1111 1111", "41x1"), "card_number"),
            (SALE.replace("1050", "10.50"), "amount"),
            (SALE.replace("1050", "\"10.50\""), "amount"),
            (SALE.replace("1050", "-5"), "amount"),
            (SALE.replace("1050", "0"), "amount"),
            (SALE.replace("\"USD\"", "\"XYZ\""), "currency"),
            (SALE.replace("12/30", "13/30"), "expiry"),
            (SALE.replace("\"123\"", "\"12\""), "cvv"),
            (SALE.replace("\"sale\"", "\"gift\""), "type"),
            (SALE.replace("mail-order", "walk-in"), "reason"),
            (SALE.replace("\"cvv\":\"123\",", ""), "cvv"),
        ];
        for (body, field) in cases {
            let error = json(&body).expect_err(&body);
            assert_eq!(error.field, field, "{body}: {error}");
        }
    }

    #[test]
    fn zero_amount_is_for_verification_and_balance_only() {
        let verification = SALE
            .replace("\"sale\"", "\"verification\"")
            .replace("1050", "0");
        assert_eq!(json(&verification).expect("verification").amount, 0);
        let nonzero = SALE.replace("\"sale\"", "\"verification\"");
        assert_eq!(json(&nonzero).expect_err("nonzero").field, "amount");
    }

    #[test]
    fn a_refund_names_its_original() {
        let refund = SALE.replace("\"sale\"", "\"refund\"");
        assert_eq!(json(&refund).expect_err("no rrn").field, "original_rrn");
    }

    #[test]
    fn masking_keeps_first_six_and_last_four() {
        assert_eq!(mask_pan("4111111111111111"), "411111******1111");
        let card = CardNumber::parse("4111111111111111").expect("valid");
        assert!(!format!("{card:?}").contains("4111111111111111"));
        let cvv = Cvv::parse("987").expect("valid");
        assert!(!format!("{cvv:?}").contains("987"));
    }

    #[test]
    fn brands_from_prefixes() {
        assert_eq!(brand_of("4111111111111111"), "Visa");
        assert_eq!(brand_of("5500000000000004"), "Mastercard");
        assert_eq!(brand_of("6212345678901232"), "UnionPay");
        assert_eq!(brand_of("6759649826438453"), "Maestro");
    }

    #[test]
    fn amounts_print_in_major_units() {
        let usd = Currency::parse("usd").expect("known");
        assert_eq!(usd.format(1050), "10.50 USD");
        assert_eq!(
            Currency::parse("392").expect("known").format(500),
            "500 JPY"
        );
    }
}
