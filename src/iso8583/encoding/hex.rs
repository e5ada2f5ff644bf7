//! Binary values written as hex text (two characters a byte), as in specs that
//! carry bitmaps and binary fields as printable characters.

const DIGITS: &[u8; 16] = b"0123456789ABCDEF";

/// Appends the uppercase hex text of `bytes` to `out`.
#[inline]
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0F)]);
    }
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
    fn reports_the_index_of_the_first_bad_character() {
        assert_eq!(decode_into(b"01G0", &mut Vec::new()), Err(2));
        assert_eq!(decode_into(b"0", &mut Vec::new()), Err(1));
    }
}
