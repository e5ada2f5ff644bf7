//! Typed views of the fields the switch reads (ISO 8583:1987 layouts). Each
//! accessor checks the value's shape and says which field is missing or wrong, so
//! the switch can answer 30 (format error) naming the field.

use std::fmt;

use super::message::Message;
use super::original_data::OriginalData;
use super::response_code::ResponseCode;

/// A field the switch needs is absent or not in the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("field {0} is missing")]
    Missing(u8),
    #[error("field {field}: expected {expected}")]
    Malformed { field: u8, expected: &'static str },
}

impl FieldError {
    pub fn field(&self) -> u8 {
        match self {
            FieldError::Missing(n) => *n,
            FieldError::Malformed { field, .. } => *field,
        }
    }
}

fn malformed(field: u8, expected: &'static str) -> FieldError {
    FieldError::Malformed { field, expected }
}

/// Parses all-digit text as an integer, None on anything else or overflow.
#[inline]
fn digits_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// Reads `N` digits as numbers of 2 digits each (MMDD, hhmmss…).
fn pairs<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    if v.len() != N * 2 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in v.chunks_exact(2).enumerate() {
        out[i] = (pair[0] - b'0') * 10 + (pair[1] - b'0');
    }
    Some(out)
}

/// A primary account number. `Display` masks it to first 6 / last 4; the full
/// number is only reachable through [`Pan::reveal`], named so it stands out.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pan<'a>(&'a str);

impl<'a> Pan<'a> {
    /// A PAN from 12–19 digits.
    pub fn new(digits: &'a str) -> Option<Pan<'a>> {
        ((12..=19).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then_some(Pan(digits))
    }

    /// The full PAN, for routing and issuer messages only. Never log it.
    pub fn reveal(&self) -> &'a str {
        self.0
    }

    /// The first `n` digits (the BIN/IIN is 6 or 8).
    pub fn prefix(&self, n: usize) -> &'a str {
        &self.0[..n.min(self.0.len())]
    }

    pub fn last4(&self) -> &'a str {
        &self.0[self.0.len() - 4..]
    }

    /// Whether the Luhn (mod 10) check digit is right.
    pub fn luhn_valid(&self) -> bool {
        luhn_valid(self.0.as_bytes())
    }
}

/// Luhn check over ASCII digits; false for anything that is not all digits.
/// Two digits a step from the right, the doubled one through a table: the
/// textbook "double, and take 9 off if over 9" branches on the digit, which a
/// processor cannot predict for card numbers.
pub fn luhn_valid(digits: &[u8]) -> bool {
    /// A digit doubled, with 9 taken off if that is over 9.
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let digit = |b: u8| {
        let d = b.wrapping_sub(b'0');
        (d <= 9).then_some(usize::from(d))
    };
    let mut sum = 0u32;
    let mut rest = digits;
    while let [head @ .., doubled, plain] = rest {
        let (Some(doubled), Some(plain)) = (digit(*doubled), digit(*plain)) else {
            return false;
        };
        sum += DOUBLED[doubled] + plain as u32;
        rest = head;
    }
    // The loop leaves the first digit of an odd-length number, or nothing.
    match rest {
        [first] => digit(*first).is_some_and(|d| (sum + d as u32) % 10 == 0),
        _ => !digits.is_empty() && sum % 10 == 0,
    }
}

/// Masks a PAN-like digit string to first 6 / last 4; short ones are hidden whole.
pub fn mask_pan(pan: &str) -> String {
    let n = pan.chars().count();
    if n < 13 || !pan.is_ascii() {
        return "*".repeat(n.max(4));
    }
    format!("{}{}{}", &pan[..6], "*".repeat(n - 10), &pan[n - 4..])
}

/// Field 2 of a message as a log line may show it: masked by [`mask_pan`],
/// formatted only if the line is written; `-` when the message has none.
#[derive(Clone, Copy)]
pub struct MaskedPan<'a>(Option<&'a [u8]>);

impl<'a> MaskedPan<'a> {
    /// A field 2 value (or its absence) to mask when displayed.
    pub fn of(pan: Option<&'a [u8]>) -> MaskedPan<'a> {
        MaskedPan(pan)
    }
}

impl fmt::Display for MaskedPan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.map(std::str::from_utf8) {
            Some(Ok(pan)) => f.write_str(&mask_pan(pan)),
            Some(Err(_)) => f.write_str("****"),
            None => f.write_str("-"),
        }
    }
}

impl fmt::Display for Pan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_pan(self.0))
    }
}

impl fmt::Debug for Pan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pan({})", mask_pan(self.0))
    }
}

/// An amount in minor units of its currency (cents for USD). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MinorUnits(pub u64);

impl fmt::Display for MinorUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Field 3: transaction type (first two digits) and from/to account types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessingCode {
    pub transaction_type: u8,
    pub from_account: u8,
    pub to_account: u8,
}

impl ProcessingCode {
    pub const PURCHASE: u8 = 0;
    pub const CASH: u8 = 1;
    pub const REFUND: u8 = 20;
    pub const BALANCE_INQUIRY: u8 = 31;

    pub fn describe(&self) -> &'static str {
        match self.transaction_type {
            0 => "purchase",
            1 => "cash withdrawal",
            9 => "purchase with cashback",
            20 => "refund",
            30 | 31 => "balance inquiry",
            _ => "other",
        }
    }
}

/// System trace audit number (field 11): 6 digits, unique per sender and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stan(pub u32);

impl Stan {
    /// The six-digit wire text.
    pub fn to_digits(self) -> [u8; 6] {
        let mut out = [b'0'; 6];
        let mut n = self.0 % 1_000_000;
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out
    }
}

impl fmt::Display for Stan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

/// Field 7, transmission date and time (MMDDhhmmss, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransmissionTime {
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// Field 14, card expiry (YYMM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Expiry {
    pub year: u8,
    pub month: u8,
}

impl Expiry {
    /// Whether the card has expired by `(yy, mm)`: a card is valid through the
    /// last day of its expiry month.
    pub fn is_expired_at(&self, yy: u8, mm: u8) -> bool {
        (self.year, self.month) < (yy, mm)
    }
}

/// Field 22, POS entry mode: PAN entry (first two digits) and PIN capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryMode {
    pub pan_entry: u8,
    pub pin_capability: u8,
}

impl EntryMode {
    /// Chip (05x) or contactless chip (07x), which a card-not-present channel
    /// cannot legitimately carry.
    pub fn is_chip_or_contactless(&self) -> bool {
        matches!(self.pan_entry, 5 | 7)
    }
}

impl Message {
    fn required(&self, n: u8) -> Result<&[u8], FieldError> {
        self.get(n).ok_or(FieldError::Missing(n))
    }

    fn required_str(&self, n: u8, expected: &'static str) -> Result<&str, FieldError> {
        std::str::from_utf8(self.required(n)?).map_err(|_| malformed(n, expected))
    }

    /// Field 2.
    pub fn pan(&self) -> Result<Pan<'_>, FieldError> {
        let text = self.required_str(2, "12-19 digits")?;
        Pan::new(text).ok_or(malformed(2, "12-19 digits"))
    }

    /// Field 2 masked for logs, whatever its shape.
    pub fn masked_pan(&self) -> MaskedPan<'_> {
        MaskedPan(self.get(2))
    }

    /// Field 3.
    pub fn processing_code(&self) -> Result<ProcessingCode, FieldError> {
        let [t, from, to] = pairs::<3>(self.required(3)?).ok_or(malformed(3, "6 digits"))?;
        Ok(ProcessingCode {
            transaction_type: t,
            from_account: from,
            to_account: to,
        })
    }

    /// Field 4, amount in minor units.
    pub fn amount(&self) -> Result<MinorUnits, FieldError> {
        digits_u64(self.required(4)?)
            .map(MinorUnits)
            .ok_or(malformed(4, "up to 12 digits"))
    }

    /// Field 7.
    pub fn transmission_time(&self) -> Result<TransmissionTime, FieldError> {
        let expected = "MMDDhhmmss";
        let [month, day, hour, minute, second] =
            pairs::<5>(self.required(7)?).ok_or(malformed(7, expected))?;
        let valid = (1..=12).contains(&month)
            && (1..=31).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        valid
            .then_some(TransmissionTime {
                month,
                day,
                hour,
                minute,
                second,
            })
            .ok_or(malformed(7, expected))
    }

    /// Field 11.
    pub fn stan(&self) -> Result<Stan, FieldError> {
        let v = self.required(11)?;
        match digits_u64(v) {
            Some(n) if v.len() == 6 => Ok(Stan(n as u32)),
            _ => Err(malformed(11, "6 digits")),
        }
    }

    /// Field 14.
    pub fn expiry(&self) -> Result<Expiry, FieldError> {
        let [year, month] = pairs::<2>(self.required(14)?).ok_or(malformed(14, "YYMM"))?;
        if !(1..=12).contains(&month) {
            return Err(malformed(14, "YYMM with month 01-12"));
        }
        Ok(Expiry { year, month })
    }

    /// Field 18, merchant category code.
    pub fn mcc(&self) -> Result<u16, FieldError> {
        let v = self.required(18)?;
        match digits_u64(v) {
            Some(n) if v.len() == 4 => Ok(n as u16),
            _ => Err(malformed(18, "4 digits")),
        }
    }

    /// Field 22.
    pub fn entry_mode(&self) -> Result<EntryMode, FieldError> {
        let v = self.required(22)?;
        if v.len() != 3 || !v.iter().all(u8::is_ascii_digit) {
            return Err(malformed(22, "3 digits"));
        }
        Ok(EntryMode {
            pan_entry: (v[0] - b'0') * 10 + (v[1] - b'0'),
            pin_capability: v[2] - b'0',
        })
    }

    /// Field 37, retrieval reference number.
    pub fn rrn(&self) -> Result<&str, FieldError> {
        self.required_str(37, "12 characters")
    }

    /// Field 38, authorization identification response.
    pub fn auth_code(&self) -> Result<&str, FieldError> {
        self.required_str(38, "6 characters")
    }

    /// Field 39.
    pub fn response_code(&self) -> Result<ResponseCode, FieldError> {
        match self.required(39)? {
            &[a, b] => ResponseCode::new([a, b]).ok_or(malformed(39, "2 letters or digits")),
            _ => Err(malformed(39, "2 letters or digits")),
        }
    }

    /// Field 41, card acceptor terminal id.
    pub fn terminal_id(&self) -> Result<&str, FieldError> {
        self.required_str(41, "8 characters")
    }

    /// Field 42, card acceptor (merchant) id.
    pub fn merchant_id(&self) -> Result<&str, FieldError> {
        self.required_str(42, "15 characters")
    }

    /// Field 49, transaction currency (ISO 4217 numeric).
    pub fn currency(&self) -> Result<u16, FieldError> {
        let v = self.required(49)?;
        match digits_u64(v) {
            Some(n) if v.len() == 3 => Ok(n as u16),
            _ => Err(malformed(49, "3 digits (ISO 4217 numeric)")),
        }
    }

    /// Field 90.
    pub fn original_data(&self) -> Result<OriginalData, FieldError> {
        let expected = "42 digits: MTI, STAN, MMDDhhmmss, acquirer id, forwarding id";
        OriginalData::parse(self.required(90)?).map_err(|_| malformed(90, expected))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    fn msg(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0100"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    #[test]
    fn pan_display_masks_to_first_six_last_four() {
        let m = msg(&[(2, "4111111111111111")]);
        let pan = m.pan().expect("pan");
        assert_eq!(pan.to_string(), "411111******1111");
        assert_eq!(format!("{pan:?}"), "Pan(411111******1111)");
        assert!(pan.luhn_valid());
        assert_eq!(pan.prefix(6), "411111");
        assert_eq!(mask_pan("1234"), "****");
    }

    #[test]
    fn a_message_pan_is_masked_for_logs_whatever_its_shape() {
        assert_eq!(
            msg(&[(2, "4111111111111111")]).masked_pan().to_string(),
            "411111******1111"
        );
        assert_eq!(msg(&[(2, "41111")]).masked_pan().to_string(), "*****");
        assert_eq!(msg(&[]).masked_pan().to_string(), "-");
        let mut binary = msg(&[]);
        binary.set(2, [0xff, 0xfe]).expect("data field");
        assert_eq!(binary.masked_pan().to_string(), "****");
    }

    #[test]
    fn luhn_rejects_a_wrong_check_digit() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(!luhn_valid(b"41111111a1111111"));
        assert!(luhn_valid(b"79927398713"), "odd length");
        assert!(!luhn_valid(b"79927398710"));
        assert!(luhn_valid(b"0"));
        assert!(!luhn_valid(b""));
        assert!(!luhn_valid(b"/"), "the byte before '0'");
        assert!(!luhn_valid(b"4111111111111111:"), "the byte after '9'");
    }

    /// The rule as ISO/IEC 7812 states it, digit by digit.
    fn luhn_textbook(digits: &[u8]) -> bool {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return false;
        }
        let sum: u32 = digits
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &b)| {
                let d = u32::from(b - b'0');
                match (i % 2, d * 2) {
                    (0, _) => d,
                    (_, twice) if twice > 9 => twice - 9,
                    (_, twice) => twice,
                }
            })
            .sum();
        sum % 10 == 0
    }

    proptest::proptest! {
        #[test]
        fn luhn_agrees_with_the_textbook_rule(
            digits in "[0-9]{0,19}",
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
            at in 0usize..20,
        ) {
            proptest::prop_assert_eq!(luhn_valid(digits.as_bytes()), luhn_textbook(digits.as_bytes()));
            // Any byte at all somewhere among the digits.
            let mut mixed = digits.into_bytes();
            mixed.insert(at.min(mixed.len()), noise.first().copied().unwrap_or(b'x'));
            mixed.extend(&noise);
            proptest::prop_assert_eq!(luhn_valid(&mixed), luhn_textbook(&mixed));
        }
    }

    #[test]
    fn accessors_read_the_1987_layouts() {
        let m = msg(&[
            (3, "200000"),
            (4, "000000012345"),
            (7, "1123184100"),
            (11, "000042"),
            (14, "2812"),
            (18, "5411"),
            (22, "051"),
            (39, "05"),
            (49, "840"),
            (90, "010000004211231841000000000123400000000000"),
        ]);
        assert_eq!(
            m.processing_code().expect("pc").transaction_type,
            ProcessingCode::REFUND
        );
        assert_eq!(m.amount(), Ok(MinorUnits(12345)));
        assert_eq!(m.transmission_time().expect("f7").hour, 18);
        assert_eq!(m.stan(), Ok(Stan(42)));
        assert_eq!(
            m.expiry(),
            Ok(Expiry {
                year: 28,
                month: 12
            })
        );
        assert_eq!(m.mcc(), Ok(5411));
        assert!(m.entry_mode().expect("f22").is_chip_or_contactless());
        assert_eq!(m.response_code(), Ok(ResponseCode::DO_NOT_HONOUR));
        assert_eq!(m.currency(), Ok(840));
        let original = m.original_data().expect("f90");
        assert_eq!(original.mti, Mti::from_static("0100"));
        assert_eq!(original.stan, Stan(42));
        assert_eq!(original.transmission_time, "1123184100");
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let m = msg(&[(4, "12a"), (7, "1399999999"), (14, "2813")]);
        assert_eq!(m.pan(), Err(FieldError::Missing(2)));
        assert_eq!(m.amount().map_err(|e| e.field()), Err(4));
        assert!(m.transmission_time().is_err());
        assert!(m.expiry().is_err());
        assert_eq!(
            m.stan().map_err(|e| e.to_string()),
            Err("field 11 is missing".into())
        );
    }

    #[test]
    fn expiry_is_valid_through_its_month() {
        let e = Expiry {
            year: 26,
            month: 11,
        };
        assert!(!e.is_expired_at(26, 11));
        assert!(e.is_expired_at(26, 12));
        assert!(!e.is_expired_at(25, 12));
    }

    #[test]
    fn stan_prints_six_digits() {
        assert_eq!(Stan(7).to_string(), "000007");
        assert_eq!(&Stan(123456).to_digits(), b"123456");
    }
}
