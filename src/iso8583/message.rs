//! A decoded (or to-be-encoded) ISO 8583 message: the MTI and the present fields'
//! values. Values decoded from an ASCII/binary wire point into the received buffer
//! (no copy); values converted from BCD/EBCDIC/hex or set by the caller live in one
//! owned buffer beside it.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use super::bitmap::Bitmap;

/// Message type indicator: four ASCII digits, version / class / function / origin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

/// Why text is not an MTI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an MTI of four digits, found {0:?}")]
pub struct InvalidMti(pub String);

impl Mti {
    /// An MTI from four ASCII digits.
    pub const fn new(digits: [u8; 4]) -> Option<Mti> {
        let mut i = 0;
        while i < 4 {
            if !digits[i].is_ascii_digit() {
                return None;
            }
            i += 1;
        }
        Some(Mti(digits))
    }

    /// An MTI from a literal known to be valid; for constants in code.
    pub const fn from_static(text: &str) -> Mti {
        let b = text.as_bytes();
        assert!(b.len() == 4, "an MTI has four digits");
        match Mti::new([b[0], b[1], b[2], b[3]]) {
            Some(m) => m,
            None => panic!("an MTI has four digits"),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("MTI bytes are ASCII digits by construction")
    }

    /// Message class: 1 authorization, 2 financial, 4 reversal, 8 network management.
    pub fn class(&self) -> u8 {
        self.0[1] - b'0'
    }

    /// Message function: 0 request, 1 request response, 2 advice, 3 advice response.
    pub fn function(&self) -> u8 {
        self.0[2] - b'0'
    }

    /// Origin: even = original, odd = repeat.
    pub fn origin(&self) -> u8 {
        self.0[3] - b'0'
    }

    pub fn is_request(&self) -> bool {
        self.function() % 2 == 0
    }

    pub fn is_advice(&self) -> bool {
        matches!(self.function(), 2 | 3)
    }

    pub fn is_repeat(&self) -> bool {
        self.origin() % 2 == 1
    }

    /// The MTI with its repeat flag cleared: 0101 → 0100, 0421 → 0420.
    pub fn original(&self) -> Mti {
        let mut d = self.0;
        d[3] = b'0' + (self.origin() & !1);
        Mti(d)
    }

    /// The response to this request: 0100 → 0110, 0421 → 0430. None for a response.
    pub fn response(&self) -> Option<Mti> {
        if !self.is_request() {
            return None;
        }
        let mut d = self.original().0;
        d[2] += 1;
        Some(Mti(d))
    }
}

impl FromStr for Mti {
    type Err = InvalidMti;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            &[a, b, c, d] => Mti::new([a, b, c, d]).ok_or_else(|| InvalidMti(s.to_string())),
            _ => Err(InvalidMti(s.to_string())),
        }
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

/// Where one field's value lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub(crate) field: u8,
    pub(crate) owned: bool,
    pub(crate) start: u32,
    pub(crate) len: u32,
    /// A hex-encoded value read with lowercase letters: written back so.
    pub(crate) lower: bool,
}

/// A field number that cannot hold data: 0, 1 and 65 are bitmaps or nothing,
/// anything above 192 does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("field {0} cannot hold a value: expected a field number 2-192 other than 65")]
pub struct InvalidFieldNumber(pub u32);

/// Whether `n` can carry a value (2..=192, not the tertiary bitmap 65).
#[inline]
pub fn is_data_field(n: u8) -> bool {
    (2..=192).contains(&n) && n != 65
}

/// An ISO 8583 message.
#[derive(Clone)]
pub struct Message {
    pub(crate) mti: Mti,
    /// Data fields present (never bits 1 or 65).
    pub(crate) present: Bitmap,
    /// One slot per present field, in field order.
    pub(crate) slots: Vec<Slot>,
    /// The wire buffer the message was decoded from; slots not `owned` point here.
    pub(crate) raw: Bytes,
    /// Values converted on decode or set by the caller.
    pub(crate) owned: Vec<u8>,
    /// Hex bitmaps were read with lowercase letters: written back so.
    pub(crate) lower_bitmaps: bool,
}

impl Message {
    /// An empty message of type `mti`.
    pub fn new(mti: Mti) -> Message {
        Message {
            mti,
            present: Bitmap::default(),
            slots: Vec::new(),
            raw: Bytes::new(),
            owned: Vec::new(),
            lower_bitmaps: false,
        }
    }

    pub fn mti(&self) -> Mti {
        self.mti
    }

    pub fn set_mti(&mut self, mti: Mti) {
        self.mti = mti;
    }

    /// Whether field `n` is present.
    #[inline]
    pub fn has(&self, n: u8) -> bool {
        self.present.contains(n)
    }

    /// The value of field `n`: text as ASCII bytes, binary fields as raw bytes.
    #[inline]
    pub fn get(&self, n: u8) -> Option<&[u8]> {
        if !self.present.contains(n) {
            return None;
        }
        Some(self.value(&self.slots[self.present.rank(n)]))
    }

    /// The value of a text or numeric field as `&str`.
    #[inline]
    pub fn get_str(&self, n: u8) -> Option<&str> {
        self.get(n).and_then(|v| std::str::from_utf8(v).ok())
    }

    #[inline]
    pub(crate) fn value(&self, slot: &Slot) -> &[u8] {
        let (start, end) = (slot.start as usize, (slot.start + slot.len) as usize);
        if slot.owned {
            &self.owned[start..end]
        } else {
            &self.raw[start..end]
        }
    }

    /// Sets field `n`, replacing any value it had. Field numbers are the
    /// caller's constants; an impossible one (see [`is_data_field`]) is refused.
    pub fn set(&mut self, n: u8, value: impl AsRef<[u8]>) -> Result<&mut Self, InvalidFieldNumber> {
        if !is_data_field(n) {
            return Err(InvalidFieldNumber(u32::from(n)));
        }
        let value = value.as_ref();
        let slot = Slot {
            field: n,
            owned: true,
            start: self.owned.len() as u32,
            len: value.len() as u32,
            lower: false,
        };
        self.owned.extend_from_slice(value);
        let index = self.present.rank(n);
        if self.present.contains(n) {
            self.slots[index] = slot;
        } else {
            self.present.insert(n);
            self.slots.insert(index, slot);
        }
        Ok(self)
    }

    /// Removes field `n`; returns whether it was present.
    pub fn remove(&mut self, n: u8) -> bool {
        if !self.present.contains(n) {
            return false;
        }
        let index = self.present.rank(n);
        self.slots.remove(index);
        self.present.remove(n);
        true
    }

    /// Present fields and their values, ascending by field number.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        self.slots.iter().map(|s| (s.field, self.value(s)))
    }

    /// Number of data fields present.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Data fields present (bits 1 and 65 are never set here).
    pub fn bitmap(&self) -> Bitmap {
        self.present
    }
}

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.mti == other.mti && self.present == other.present && self.iter().eq(other.iter())
    }
}

impl Eq for Message {}

impl fmt::Debug for Message {
    /// Field numbers only: values may hold a PAN, track data or a PIN block, and
    /// Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<u8> = self.present.iter().collect();
        write!(f, "Message {{ mti: {}, fields: {:?} }}", self.mti, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mti_response_and_repeat_rules() {
        let m = |s: &str| s.parse::<Mti>().expect("valid MTI");
        assert_eq!(m("0100").response(), Some(m("0110")));
        assert_eq!(m("0101").response(), Some(m("0110")));
        assert_eq!(m("0200").response(), Some(m("0210")));
        assert_eq!(m("0421").response(), Some(m("0430")));
        assert_eq!(m("0800").response(), Some(m("0810")));
        assert_eq!(m("0110").response(), None);
        assert!(m("0401").is_repeat());
        assert_eq!(m("0401").original(), m("0400"));
        assert!(m("0120").is_advice());
        assert_eq!(m("0200").class(), 2);
    }

    #[test]
    fn mti_refuses_anything_but_four_digits() {
        for bad in ["", "010", "01000", "01a0", "０１００"] {
            assert!(bad.parse::<Mti>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_keeps_fields_sorted_and_replaces_in_place() {
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(11, "000001").expect("data field");
        msg.set(2, "4111111111111111").expect("data field");
        msg.set(130, "X").expect("data field");
        msg.set(11, "000002").expect("data field");
        let fields: Vec<(u8, Vec<u8>)> = msg.iter().map(|(n, v)| (n, v.to_vec())).collect();
        assert_eq!(
            fields,
            vec![
                (2, b"4111111111111111".to_vec()),
                (11, b"000002".to_vec()),
                (130, b"X".to_vec())
            ]
        );
        assert!(msg.remove(2));
        assert!(!msg.remove(2));
        assert_eq!(msg.get_str(11), Some("000002"));
        assert_eq!(msg.len(), 2);
    }

    #[test]
    fn set_refuses_bitmap_and_impossible_field_numbers() {
        let mut msg = Message::new(Mti::from_static("0800"));
        for n in [0, 1, 65, 193, 255] {
            assert_eq!(
                msg.set(n, "1").err(),
                Some(InvalidFieldNumber(u32::from(n)))
            );
        }
        assert!(msg.is_empty());
    }

    #[test]
    fn debug_never_shows_values() {
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(2, "4111111111111111").expect("data field");
        let text = format!("{msg:?}");
        assert!(!text.contains("4111"), "{text}");
        assert!(text.contains("[2]"), "{text}");
    }
}
