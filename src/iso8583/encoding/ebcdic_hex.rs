//! Binary values written as hex digits in EBCDIC (jPOS's `IFE_BINARY`,
//! `IFE_BITMAP`): two wire bytes a byte, 0-9 as 0xF0-0xF9, A-F as 0xC1-0xC6
//! (a-f as 0x81-0x86). The hex rules of `hex.rs` over the CP037 digits of `ebcdic.rs`.

use super::{ebcdic, hex};

/// The CP037 bytes of `ascii` hex digits.
const fn to_cp037(ascii: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = match ebcdic::from_ascii(ascii[i]) {
            Some(e) => e,
            None => panic!("hex digits are printable ASCII"),
        };
        i += 1;
    }
    out
}

const DIGITS: [u8; 16] = to_cp037(hex::DIGITS);
const LOWER_DIGITS: [u8; 16] = to_cp037(hex::LOWER_DIGITS);

/// Appends the EBCDIC hex text of `bytes` to `out`, lowercase letters if `lower`.
#[inline]
pub fn encode_cased_into(bytes: &[u8], lower: bool, out: &mut Vec<u8>) {
    let digits = if lower { &LOWER_DIGITS } else { &DIGITS };
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0x0F)]);
    }
}

/// The value of one EBCDIC hex character (either case).
#[inline]
pub fn nibble(c: u8) -> Option<u8> {
    ebcdic::to_ascii(c).and_then(hex::nibble)
}

/// Decodes EBCDIC hex text into `out`; on failure, the index of the first bad
/// character (the length for an odd count).
pub fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    if text.len() % 2 != 0 {
        return Err(text.len());
    }
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(2 * i)?;
        let lo = nibble(pair[1]).ok_or(2 * i + 1)?;
        out.push(hi << 4 | lo);
    }
    Ok(())
}

/// [`hex::letter_case`] for EBCDIC hex text: the case of its letters given
/// `seen` (the case read before), or the index of a letter of the other case.
pub fn letter_case(text: &[u8], seen: Option<bool>) -> Result<Option<bool>, usize> {
    hex::letter_case_of(text.iter().map(|&c| ebcdic::to_ascii(c).unwrap_or(0)), seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_cp037_codes_jpos_writes() {
        let mut text = Vec::new();
        encode_cased_into(&[0x01, 0x9A, 0xBF], false, &mut text);
        assert_eq!(text, [0xF0, 0xF1, 0xF9, 0xC1, 0xC2, 0xC6]);
        text.clear();
        encode_cased_into(&[0xAF], true, &mut text);
        assert_eq!(text, [0x81, 0x86]);
    }

    #[test]
    fn every_byte_round_trips_in_both_cases() {
        let bytes: Vec<u8> = (0..=255).collect();
        for lower in [false, true] {
            let mut text = Vec::new();
            encode_cased_into(&bytes, lower, &mut text);
            assert_eq!(text.len(), 512);
            let mut back = Vec::new();
            decode_into(&text, &mut back).expect("own output decodes");
            assert_eq!(back, bytes, "lower = {lower}");
            let case = letter_case(&text, None);
            assert_eq!(case, Ok(Some(lower)));
        }
    }

    #[test]
    fn reports_the_index_of_the_first_bad_character() {
        // ASCII '1' (0x31) is not an EBCDIC digit; nor is 'G' (0xC7).
        assert_eq!(decode_into(&[0xF0, 0x31], &mut Vec::new()), Err(1));
        assert_eq!(
            decode_into(&[0xF0, 0xF0, 0xC7, 0xF0], &mut Vec::new()),
            Err(2)
        );
        assert_eq!(decode_into(&[0xF0], &mut Vec::new()), Err(1));
        assert_eq!(nibble(0x87), None);
        assert_eq!(nibble(0x40), None);
    }

    #[test]
    fn letter_case_refuses_the_other_case() {
        assert_eq!(letter_case(&[0xF1, 0xF2], None), Ok(None));
        assert_eq!(letter_case(&[0xC1, 0x82], None), Err(1));
        assert_eq!(letter_case(&[0xF0, 0xC1], Some(true)), Err(1));
    }
}
