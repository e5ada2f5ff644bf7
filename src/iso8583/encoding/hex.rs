//! Binary values written as hex text (two characters a byte), as in specs that
//! carry bitmaps and binary fields as printable characters.

pub(crate) const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
pub(crate) const LOWER_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the uppercase hex text of `bytes` to `out`.
#[inline]
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    encode_cased_into(bytes, false, out);
}

/// Appends the hex text of `bytes` to `out`, lowercase letters if `lower`.
#[inline]
pub fn encode_cased_into(bytes: &[u8], lower: bool, out: &mut Vec<u8>) {
    let digits = if lower { LOWER_DIGITS } else { DIGITS };
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 0x0F)]);
    }
}

/// Whether the letters of hex `text` are lowercase: `seen` is the case of
/// letters read before (another bitmap of the same message), None when there
/// were none. Ok(None) if neither has letters; on a letter of the other case,
/// its index.
pub fn letter_case(text: &[u8], seen: Option<bool>) -> Result<Option<bool>, usize> {
    letter_case_of(text.iter().copied(), seen)
}

/// [`letter_case`] over hex characters given one by one (EBCDIC hex passes
/// them translated to ASCII).
#[inline]
pub fn letter_case_of(
    text: impl IntoIterator<Item = u8>,
    seen: Option<bool>,
) -> Result<Option<bool>, usize> {
    let mut case = seen;
    for (i, c) in text.into_iter().enumerate() {
        if !c.is_ascii_alphabetic() {
            continue;
        }
        let lower = c.is_ascii_lowercase();
        match case {
            Some(expected) if expected != lower => return Err(i),
            _ => case = Some(lower),
        }
    }
    Ok(case)
}

/// The value of one hex character (either case).
#[inline]
pub fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes hex text into `out`; on failure, the index of the first bad character.
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

/// Uppercase hex text of `bytes`.
pub fn to_string(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    encode_into(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_uppercase_and_decodes_either_case() {
        let mut text = Vec::new();
        encode_into(&[0x01, 0xAB, 0xFF], &mut text);
        assert_eq!(text, b"01ABFF");
        let mut bytes = Vec::new();
        decode_into(b"01abFF", &mut bytes).expect("valid hex");
        assert_eq!(bytes, [0x01, 0xAB, 0xFF]);
    }

    #[test]
    fn letter_case_follows_the_first_letter_and_refuses_the_other_case() {
        assert_eq!(letter_case(b"0123", None), Ok(None));
        assert_eq!(letter_case(b"01ab", None), Ok(Some(true)));
        assert_eq!(letter_case(b"01AB", None), Ok(Some(false)));
        assert_eq!(letter_case(b"0123", Some(true)), Ok(Some(true)));
        assert_eq!(letter_case(b"aB", None), Err(1));
        assert_eq!(letter_case(b"01A", Some(true)), Err(2));
        let mut text = Vec::new();
        encode_cased_into(&[0xAB, 0x0F], true, &mut text);
        assert_eq!(text, b"ab0f");
    }

    #[test]
    fn reports_the_index_of_the_first_bad_character() {
        assert_eq!(decode_into(b"01G0", &mut Vec::new()), Err(2));
        assert_eq!(decode_into(b"0", &mut Vec::new()), Err(1));
    }
}
