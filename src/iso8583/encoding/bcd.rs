//! Packed BCD: two decimal digits a byte. An odd number of digits leaves one filler
//! nibble, on the side the spec names. Track 2's separator (`=` or `D`) packs as
//! nibble D and unpacks as `=`.

use crate::iso8583::spec::BcdFiller;

/// Why packing or unpacking failed, and at which digit or byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BcdError {
    /// Nibble that is no digit, at this byte index.
    BadNibble { index: usize, nibble: u8 },
    /// Filler nibble with the wrong value, at this byte index.
    BadFiller {
        index: usize,
        expected: u8,
        found: u8,
    },
    /// Character that cannot be packed, at this digit index.
    BadDigit { index: usize, found: u8 },
}

fn filler_nibble(filler: BcdFiller) -> u8 {
    match filler {
        BcdFiller::RightF => 0xF,
        _ => 0x0,
    }
}

#[inline]
fn pack_digit(c: u8, separator_ok: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'=' | b'D' if separator_ok => Some(0xD),
        _ => None,
    }
}

/// Packs ASCII digits into BCD, appending to `out`. `separator_ok` lets `=` or `D`
/// through as nibble D (track 2).
pub fn pack_into(
    digits: &[u8],
    filler: BcdFiller,
    separator_ok: bool,
    out: &mut Vec<u8>,
) -> Result<(), BcdError> {
    let digit = |i: usize| {
        pack_digit(digits[i], separator_ok).ok_or(BcdError::BadDigit {
            index: i,
            found: digits[i],
        })
    };
    let odd = digits.len() % 2 == 1;
    out.reserve(digits.len().div_ceil(2));
    let mut i = 0;
    if odd && filler == BcdFiller::Left {
        out.push(digit(0)?);
        i = 1;
    }
    while i + 1 < digits.len() {
        out.push(digit(i)? << 4 | digit(i + 1)?);
        i += 2;
    }
    if i < digits.len() {
        out.push(digit(i)? << 4 | filler_nibble(filler));
    }
    Ok(())
}

#[inline]
fn unpack_nibble(n: u8, separator_ok: bool) -> Option<u8> {
    match n {
        0..=9 => Some(b'0' + n),
        0xD if separator_ok => Some(b'='),
        _ => None,
    }
}

/// Unpacks `count` digits from `packed` (exactly `count.div_ceil(2)` bytes),
/// appending ASCII digits to `out`.
pub fn unpack_into(
    packed: &[u8],
    count: usize,
    filler: BcdFiller,
    separator_ok: bool,
    out: &mut Vec<u8>,
) -> Result<(), BcdError> {
    debug_assert_eq!(packed.len(), count.div_ceil(2));
    out.reserve(count);
    let odd = count % 2 == 1;
    let last = packed.len().saturating_sub(1);
    for (index, &byte) in packed.iter().enumerate() {
        let (hi, lo) = (byte >> 4, byte & 0x0F);
        let filler_hi = odd && index == 0 && filler == BcdFiller::Left;
        let filler_lo = odd && index == last && filler != BcdFiller::Left;
        for (nibble, is_filler) in [(hi, filler_hi), (lo, filler_lo)] {
            if is_filler {
                let expected = filler_nibble(filler);
                if nibble != expected {
                    return Err(BcdError::BadFiller {
                        index,
                        expected,
                        found: nibble,
                    });
                }
            } else {
                let c = unpack_nibble(nibble, separator_ok)
                    .ok_or(BcdError::BadNibble { index, nibble })?;
                out.push(c);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pack(digits: &str, filler: BcdFiller) -> Vec<u8> {
        let mut out = Vec::new();
        pack_into(digits.as_bytes(), filler, true, &mut out).expect("packable");
        out
    }

    #[test]
    fn odd_lengths_put_the_filler_on_the_configured_side() {
        assert_eq!(pack("123", BcdFiller::Left), [0x01, 0x23]);
        assert_eq!(pack("123", BcdFiller::Right), [0x12, 0x30]);
        assert_eq!(pack("123", BcdFiller::RightF), [0x12, 0x3F]);
        assert_eq!(pack("1234", BcdFiller::RightF), [0x12, 0x34]);
    }

    #[test]
    fn track2_separator_packs_as_nibble_d() {
        assert_eq!(pack("41=25", BcdFiller::RightF), [0x41, 0xD2, 0x5F]);
        let mut out = Vec::new();
        unpack_into(&[0x41, 0xD2, 0x5F], 5, BcdFiller::RightF, true, &mut out).expect("valid");
        assert_eq!(out, b"41=25");
        assert_eq!(pack("41D25", BcdFiller::RightF), [0x41, 0xD2, 0x5F]);
    }

    #[test]
    fn refuses_non_digit_nibbles_and_wrong_filler() {
        let mut out = Vec::new();
        assert_eq!(
            unpack_into(&[0x1A], 2, BcdFiller::Left, false, &mut out),
            Err(BcdError::BadNibble {
                index: 0,
                nibble: 0xA
            })
        );
        assert_eq!(
            unpack_into(&[0x11, 0x23], 3, BcdFiller::Left, false, &mut out),
            Err(BcdError::BadFiller {
                index: 0,
                expected: 0,
                found: 1
            })
        );
        assert_eq!(
            pack_into(b"1x", BcdFiller::Left, false, &mut out),
            Err(BcdError::BadDigit {
                index: 1,
                found: b'x'
            })
        );
    }

    proptest! {
        #[test]
        fn digits_round_trip(digits in "[0-9]{0,40}", which in 0usize..3) {
            let filler = [BcdFiller::Left, BcdFiller::Right, BcdFiller::RightF][which];
            let mut packed = Vec::new();
            pack_into(digits.as_bytes(), filler, false, &mut packed).expect("digits pack");
            prop_assert_eq!(packed.len(), digits.len().div_ceil(2));
            let mut back = Vec::new();
            unpack_into(&packed, digits.len(), filler, false, &mut back).expect("unpacks");
            prop_assert_eq!(back, digits.into_bytes());
        }
    }
}
