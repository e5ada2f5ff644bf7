//! Settlement arithmetic for any amounts and rates in range: fees never
//! panic or overflow, and each merchant's CSV totals are the sums of its lines.

use std::collections::BTreeMap;
use std::str::FromStr;

use isoswitch::iso8583::{Mti, ResponseCode};
use isoswitch::journal::{DecidedBy, Outcome, ReversalState, TimeRange, TxnId, TxnRecord};
use isoswitch::settle::{fee, render, Report, SchemeTable, TariffConfig, Tariffs};
use proptest::prelude::*;

fn record(n: i64, pan: &str, pc: &str, amount: i64, currency: u16, merchant: &str) -> TxnRecord {
    TxnRecord {
        id: TxnId(n),
        received_at_ms: n,
        listener: "pos".into(),
        channel: "pos".into(),
        mti: Mti::from_str("0200").expect("mti"),
        processing_code: Some(pc.into()),
        pan_masked: Some(pan.into()),
        pan_hash: None,
        amount: Some(amount),
        currency: Some(currency),
        terminal_id: None,
        merchant_id: Some(merchant.into()),
        terminal_stan: None,
        terminal_rrn: None,
        route: None,
        issuer: None,
        upstream_stan: None,
        upstream_rrn: None,
        outcome: Some(Outcome {
            answered_at_ms: n,
            response_code: ResponseCode::APPROVED,
            decided_by: DecidedBy::Issuer,
            auth_code: None,
            latency_us: 0,
            reason: None,
        }),
        reversal: ReversalState::None,
        links: Vec::new(),
        original_id: None,
        cancelled_at_ms: None,
    }
}

proptest! {
    #[test]
    fn fees_never_overflow(amount in any::<i64>(), bp in -10_000i32..=10_000, fixed in any::<i64>()) {
        let f = fee(amount, bp, fixed);
        // Never more than the whole amount plus the fixed fee.
        prop_assert!((f - i128::from(fixed)).abs() <= i128::from(amount).abs());
    }

    #[test]
    fn csv_totals_are_the_sums_of_the_lines(
        ops in prop::collection::vec(
            (0usize..2, 0usize..2, 0usize..2, 0usize..2, 0i64..=1_000_000_000_000, any::<bool>()),
            0..40,
        ),
        bp in -10_000i32..=10_000,
        fixed in -1_000i64..=1_000,
    ) {
        let pans = ["411111******1111", "550000******0004"];
        let records: Vec<TxnRecord> = ops
            .iter()
            .enumerate()
            .map(|(n, &(pan, pc, currency, merchant, amount, cancelled))| {
                let mut r = record(
                    n as i64,
                    pans[pan],
                    ["000000", "200000"][pc],
                    amount,
                    [840, 978][currency],
                    ["M1", "M2"][merchant],
                );
                if cancelled {
                    r.cancelled_at_ms = Some(n as i64);
                    r.reversal = ReversalState::Queued;
                }
                r
            })
            .collect();
        let tariff = |scheme: &str| TariffConfig {
            scheme: scheme.into(),
            sale_bp: bp,
            cancel_bp: bp,
            refund_bp: bp,
            sale_fixed: fixed,
            cancel_fixed: fixed,
            refund_fixed: fixed,
        };
        let tariffs = Tariffs::build(&[tariff("visa"), tariff("mastercard")]).expect("tariffs");
        let schemes = SchemeTable::build(&[]).expect("schemes");
        let day = TimeRange { since_ms: Some(0), until_ms: Some(i64::MAX) };
        let report = Report::build("2026-12-07", day, &records, &schemes, &tariffs, None);
        let csv = render::csv(&report);
        let mut sums: BTreeMap<(String, String), [i128; 4]> = BTreeMap::new();
        let mut totals: BTreeMap<(String, String), [i128; 4]> = BTreeMap::new();
        for row in csv.lines().skip(1) {
            let cells: Vec<&str> = row.split(',').collect();
            prop_assert_eq!(cells.len(), 9);
            let numbers: Vec<i128> = cells[4..8].iter().map(|c| c.parse().expect("integer")).collect();
            prop_assert_eq!(numbers[3], numbers[1] - numbers[2], "net = gross - fee");
            let key = (cells[1].to_owned(), cells[8].to_owned());
            let target = if cells[3] == "total" { &mut totals } else { &mut sums };
            let entry = target.entry(key).or_default();
            for (sum, n) in entry.iter_mut().zip(&numbers) {
                *sum += n;
            }
        }
        prop_assert_eq!(sums, totals);
    }
}
