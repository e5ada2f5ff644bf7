//! One operation's fee: `round_half_up(amount × bp / 10 000) + fixed`, in
//! minor units, rounded per transaction. Half-up is away from zero, so a
//! negative rate (a fee returned) rounds symmetrically: 0.5 → 1, −0.5 → −1.

/// Basis points in 10 000 (one basis point is 0.01 %).
const BP_SCALE: i128 = 10_000;

/// The fee of an operation of `amount` minor units (its absolute value) at
/// `bp` basis points plus `fixed` minor units. Wide integers throughout:
/// no amount, rate or fixed fee an `i64`/`i32` holds overflows it.
pub fn fee(amount: i64, bp: i32, fixed: i64) -> i128 {
    let product = i128::from(amount).abs() * i128::from(bp);
    let rounded = (product.abs() + BP_SCALE / 2) / BP_SCALE;
    let rounded = if product < 0 { -rounded } else { rounded };
    rounded + i128::from(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fee_rounds_half_up_per_transaction() {
        // 1.3 % of 1000 is 13 exactly.
        assert_eq!(fee(1_000, 130, 0), 13);
        // 1.3 % of 50 is 0.65 → 1; of 38 is 0.494 → 0; of 500/13 boundaries:
        assert_eq!(fee(50, 130, 0), 1);
        assert_eq!(fee(38, 130, 0), 0);
        // Exactly half a minor unit: 1.2 % of 125 is 1.5 → 2; of 375 is 4.5 → 5.
        assert_eq!(fee(125, 120, 0), 2);
        assert_eq!(fee(375, 120, 0), 5);
        // Just under half: 1.2 % of 124 is 1.488 → 1.
        assert_eq!(fee(124, 120, 0), 1);
        // A fixed fee is added after rounding.
        assert_eq!(fee(125, 120, 30), 32);
    }

    #[test]
    fn a_negative_rate_returns_a_fee_rounded_away_from_zero() {
        assert_eq!(fee(125, -120, 0), -2);
        assert_eq!(fee(124, -120, 0), -1);
        // The sign of the amount does not matter: a fee is on its size.
        assert_eq!(fee(-125, 120, 0), 2);
    }

    #[test]
    fn the_extremes_do_not_overflow() {
        assert_eq!(fee(i64::MIN, i32::MIN, i64::MIN), {
            let product = i128::from(i64::MIN).abs() * i128::from(i32::MIN);
            -((product.abs() + 5_000) / 10_000) + i128::from(i64::MIN)
        });
        assert!(fee(i64::MAX, i32::MAX, i64::MAX) > 0);
    }
}
