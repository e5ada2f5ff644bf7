//! EBCDIC code page 037 for the printable ASCII range, which is all ISO 8583 text
//! classes allow. Bytes outside that range have no mapping and are refused.

/// ASCII (0x20..=0x7E) to CP037, index = ASCII byte - 0x20.
const TO_EBCDIC: [u8; 95] = [
    0x40, 0x5A, 0x7F, 0x7B, 0x5B, 0x6C, 0x50, 0x7D, 0x4D, 0x5D, 0x5C, 0x4E, 0x6B, 0x60, 0x4B,
    0x61, // ' '..'/'
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, // '0'..'9'
    0x7A, 0x5E, 0x4C, 0x7E, 0x6E, 0x6F, 0x7C, // ':'..'@'
    0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, // 'A'..'I'
    0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, // 'J'..'R'
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, // 'S'..'Z'
    0xBA, 0xE0, 0xBB, 0xB0, 0x6D, 0x79, // '['..'`'
    0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, // 'a'..'i'
    0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, // 'j'..'r'
    0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, // 's'..'z'
    0xC0, 0x4F, 0xD0, 0xA1, // '{'..'~'
];

/// CP037 to ASCII; 0 marks a byte with no printable ASCII mapping.
const TO_ASCII: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < TO_EBCDIC.len() {
        table[TO_EBCDIC[i] as usize] = i as u8 + 0x20;
        i += 1;
    }
    table
};

/// The CP037 byte for a printable ASCII byte.
#[inline]
pub const fn from_ascii(b: u8) -> Option<u8> {
    let i = b.wrapping_sub(0x20) as usize;
    if i < TO_EBCDIC.len() {
        Some(TO_EBCDIC[i])
    } else {
        None
    }
}

/// The printable ASCII byte for a CP037 byte.
#[inline]
pub fn to_ascii(b: u8) -> Option<u8> {
    match TO_ASCII[usize::from(b)] {
        0 => None,
        a => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_letters_map_to_their_cp037_codes() {
        assert_eq!(from_ascii(b'0'), Some(0xF0));
        assert_eq!(from_ascii(b'9'), Some(0xF9));
        assert_eq!(from_ascii(b'A'), Some(0xC1));
        assert_eq!(from_ascii(b'Z'), Some(0xE9));
        assert_eq!(from_ascii(b'a'), Some(0x81));
        assert_eq!(from_ascii(b' '), Some(0x40));
        assert_eq!(from_ascii(b'='), Some(0x7E));
    }

    #[test]
    fn every_printable_ascii_byte_round_trips() {
        for b in 0x20u8..=0x7E {
            let e = from_ascii(b).expect("printable ASCII maps");
            assert_eq!(to_ascii(e), Some(b), "byte {b:#04x}");
        }
    }

    #[test]
    fn control_bytes_have_no_mapping() {
        assert_eq!(from_ascii(0x0A), None);
        assert_eq!(from_ascii(0x7F), None);
        assert_eq!(to_ascii(0x00), None);
        assert_eq!(to_ascii(0xFF), None);
    }
}
