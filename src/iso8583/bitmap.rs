//! Field presence as three 64-bit words, most significant bit first, so word 0 is
//! the primary bitmap exactly as it is on the wire. Bits 1 and 65 (the secondary
//! and tertiary bitmap flags) are derived by the encoder, never stored by callers.

/// Presence bits for fields 1–192.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Bitmap(pub [u64; 3]);

#[inline]
fn position(n: u8) -> (usize, u32) {
    let i = usize::from(n.saturating_sub(1));
    (i / 64, 63 - (i % 64) as u32)
}

impl Bitmap {
    /// The bit of field `n` (1-based) within its word.
    #[inline]
    pub fn bit(n: u8) -> u64 {
        1u64 << position(n).1
    }

    #[inline]
    pub fn contains(&self, n: u8) -> bool {
        let (w, b) = position(n);
        (1..=192).contains(&n) && self.0[w] & (1 << b) != 0
    }

    #[inline]
    pub fn insert(&mut self, n: u8) {
        if (1..=192).contains(&n) {
            let (w, b) = position(n);
            self.0[w] |= 1 << b;
        }
    }

    #[inline]
    pub fn remove(&mut self, n: u8) {
        if (1..=192).contains(&n) {
            let (w, b) = position(n);
            self.0[w] &= !(1 << b);
        }
    }

    /// How many fields below `n` are present: the index of `n` in a sorted list.
    #[inline]
    pub fn rank(&self, n: u8) -> usize {
        let (w, b) = position(n);
        let before: u32 = self.0[..w].iter().map(|x| x.count_ones()).sum();
        // Bits above position b in word w are the fields before n.
        let mask = if b == 63 { 0 } else { !((1u64 << (b + 1)) - 1) };
        (before + (self.0[w] & mask).count_ones()) as usize
    }

    pub fn count(&self) -> usize {
        self.0.iter().map(|x| x.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 3]
    }

    /// Present field numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let lead = rest.leading_zeros();
                rest &= !(1u64 << (63 - lead));
                Some((w * 64) as u8 + lead as u8 + 1)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn word_zero_is_the_wire_primary_bitmap() {
        let mut b = Bitmap::default();
        for n in [2, 3, 4, 11] {
            b.insert(n);
        }
        // Fields 2,3,4 → 0x70, field 11 → byte 1 bit 0x20.
        assert_eq!(b.0[0].to_be_bytes(), [0x70, 0x20, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn ignores_numbers_outside_1_to_192() {
        let mut b = Bitmap::default();
        b.insert(0);
        b.insert(193);
        assert!(b.is_empty());
        assert!(!b.contains(0));
        assert!(!b.contains(200));
    }

    proptest! {
        #[test]
        fn iter_and_rank_agree_with_a_sorted_list(mut fields in proptest::collection::btree_set(1u8..=192, 0..60)) {
            let mut b = Bitmap::default();
            for &n in &fields { b.insert(n); }
            let listed: Vec<u8> = b.iter().collect();
            let expected: Vec<u8> = fields.iter().copied().collect();
            prop_assert_eq!(&listed, &expected);
            for (i, &n) in expected.iter().enumerate() {
                prop_assert_eq!(b.rank(n), i);
                prop_assert!(b.contains(n));
            }
            prop_assert_eq!(b.count(), fields.len());
            if let Some(&first) = fields.iter().next() {
                fields.remove(&first);
                b.remove(first);
                prop_assert!(!b.contains(first));
                prop_assert_eq!(b.count(), fields.len());
            }
        }
    }
}
