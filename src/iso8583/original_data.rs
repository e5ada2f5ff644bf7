//! Field 90, original data elements: how a reversal names the message it undoes.
//! One type builds it (switch, issuer links) and parses it (switch, simulator),
//! so the 42-digit layout is written down once.

use std::fmt;

use super::fields::Stan;
use super::message::{Message, Mti};

/// Width of field 90 and of its parts (ISO 8583:1987).
const LEN: usize = 42;
const MTI: std::ops::Range<usize> = 0..4;
const STAN: std::ops::Range<usize> = 4..10;
const TIME: std::ops::Range<usize> = 10..20;
const ACQUIRER: std::ops::Range<usize> = 20..31;
const FORWARDING: std::ops::Range<usize> = 31..42;

/// Field 90: the original's MTI (4), STAN (6), transmission time (10),
/// acquiring institution (11) and forwarding institution (11), all digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginalData {
    pub mti: Mti,
    pub stan: Stan,
    /// MMDDhhmmss of the original (its field 7); zeros if it had none.
    pub transmission_time: Digits<10>,
    /// The original's field 32, right-justified and zero-padded.
    pub acquirer_id: Digits<11>,
    /// The forwarding institution (field 33); zeros when there is none.
    pub forwarding_id: Digits<11>,
}

/// `N` ASCII digits: only [`OriginalData`] makes them, from checked input.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digits<const N: usize>([u8; N]);

impl<const N: usize> Digits<N> {
    const ZEROS: Digits<N> = Digits([b'0'; N]);

    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("digits by construction")
    }
}

impl<const N: usize> PartialEq<&str> for Digits<N> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl<const N: usize> fmt::Display for Digits<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Digits<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Text that is not a field 90.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalDataError {
    #[error(
        "field 90 must be 42 digits (MTI 4, STAN 6, MMDDhhmmss 10, acquirer 11, \
         forwarding institution 11), found {0} bytes"
    )]
    Length(usize),
    #[error("field 90 must be all digits; byte {0} is not a digit")]
    NotDigit(usize),
}

impl OriginalData {
    /// Field 90 naming `original` as it was sent: its MTI, fields 11, 7 and 32.
    /// A field that is absent or not digits is sent as zeros.
    pub fn from_request(original: &Message) -> OriginalData {
        let stan: Digits<6> = right_justified(original.get(11));
        OriginalData {
            mti: original.mti(),
            stan: Stan(digits(stan.as_bytes())),
            transmission_time: right_justified(original.get(7)),
            acquirer_id: right_justified(original.get(32)),
            forwarding_id: Digits::ZEROS,
        }
    }

    /// Reads a field 90 value.
    pub fn parse(value: &[u8]) -> Result<OriginalData, OriginalDataError> {
        if value.len() != LEN {
            return Err(OriginalDataError::Length(value.len()));
        }
        if let Some(at) = value.iter().position(|b| !b.is_ascii_digit()) {
            return Err(OriginalDataError::NotDigit(at));
        }
        // All digits, checked above.
        let part = |range: std::ops::Range<usize>| &value[range];
        let mti = Mti::new(copied(part(MTI)).0).expect("four digits are an MTI");
        Ok(OriginalData {
            mti,
            stan: Stan(digits(part(STAN))),
            transmission_time: copied(part(TIME)),
            acquirer_id: copied(part(ACQUIRER)),
            forwarding_id: copied(part(FORWARDING)),
        })
    }

    /// The 42-digit wire value.
    pub fn to_field(&self) -> [u8; LEN] {
        let mut out = [b'0'; LEN];
        out[MTI].copy_from_slice(self.mti.as_bytes());
        out[STAN].copy_from_slice(&self.stan.to_digits());
        out[TIME].copy_from_slice(self.transmission_time.as_bytes());
        out[ACQUIRER].copy_from_slice(self.acquirer_id.as_bytes());
        out[FORWARDING].copy_from_slice(self.forwarding_id.as_bytes());
        out
    }
}

impl fmt::Display for OriginalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = self.to_field();
        f.write_str(std::str::from_utf8(&field).expect("digits by construction"))
    }
}

/// The last `N` digits of `value`, right-justified over zeros; zeros if
/// `value` is absent or not all digits.
fn right_justified<const N: usize>(value: Option<&[u8]>) -> Digits<N> {
    let mut out = Digits::ZEROS;
    if let Some(value) = value.filter(|v| v.iter().all(u8::is_ascii_digit)) {
        let value = &value[value.len().saturating_sub(N)..];
        out.0[N - value.len()..].copy_from_slice(value);
    }
    out
}

/// Up to nine ASCII digits as a number.
fn digits(v: &[u8]) -> u32 {
    v.iter()
        .fold(0, |n, &b| n * 10 + u32::from(b.wrapping_sub(b'0')))
}

/// Digits already checked, as a fixed-width part.
fn copied<const N: usize>(v: &[u8]) -> Digits<N> {
    let mut out = Digits::ZEROS;
    out.0.copy_from_slice(v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(u8, &str)]) -> Message {
        let mut m = Message::new(Mti::from_static("0200"));
        for (n, v) in fields {
            m.set(*n, v).expect("data field");
        }
        m
    }

    #[test]
    fn built_from_the_original_request_it_names() {
        let original = request(&[(7, "1123184100"), (11, "000042"), (32, "12345")]);
        let data = OriginalData::from_request(&original);
        let expected = concat!("0200", "000042", "1123184100", "00000012345", "00000000000");
        assert_eq!(data.to_string(), expected);
        assert_eq!(data.mti, Mti::from_static("0200"));
        assert_eq!(data.stan, Stan(42));
    }

    #[test]
    fn missing_or_non_digit_parts_are_zeros() {
        let data = OriginalData::from_request(&request(&[(11, "12345"), (32, "ABC")]));
        let expected = concat!("0200", "012345", "0000000000", "00000000000", "00000000000");
        assert_eq!(data.to_string(), expected);
        // Too long: the last digits, right-justified, as the field keeps them.
        let long = OriginalData::from_request(&request(&[(32, "123456789012345")]));
        assert_eq!(long.acquirer_id, "56789012345");
    }

    #[test]
    fn parse_reads_each_part() {
        let data =
            OriginalData::parse(b"010000004211231841000000000123400000000000").expect("valid");
        assert_eq!(data.mti, Mti::from_static("0100"));
        assert_eq!(data.stan, Stan(42));
        assert_eq!(data.transmission_time, "1123184100");
        assert_eq!(data.acquirer_id, "00000001234");
        assert_eq!(data.forwarding_id, "00000000000");
    }

    #[test]
    fn parse_says_what_is_wrong() {
        let short = OriginalData::parse(b"0200000042").expect_err("short");
        assert_eq!(short, OriginalDataError::Length(10));
        assert!(short.to_string().contains("42 digits"), "{short}");
        let letters = OriginalData::parse(b"0200000042112318410000000001234000000000X0");
        assert_eq!(letters, Err(OriginalDataError::NotDigit(40)));
    }

    proptest::proptest! {
        #[test]
        fn a_valid_field_round_trips(field in "[0-9]{42}") {
            let data = OriginalData::parse(field.as_bytes()).expect("42 digits");
            proptest::prop_assert_eq!(data.to_string(), field.clone());
            proptest::prop_assert_eq!(OriginalData::parse(&data.to_field()), Ok(data));
        }

        #[test]
        fn what_from_request_builds_parses_back(
            stan in "[0-9]{1,6}",
            time in "[0-9]{10}",
            acquirer in "[0-9]{1,11}",
        ) {
            let original = request(&[(7, &time), (11, &stan), (32, &acquirer)]);
            let data = OriginalData::from_request(&original);
            proptest::prop_assert_eq!(OriginalData::parse(&data.to_field()), Ok(data));
            proptest::prop_assert_eq!(data.stan.0, stan.parse::<u32>().expect("digits"));
            proptest::prop_assert_eq!(data.transmission_time.as_str(), time.as_str());
        }
    }
}
