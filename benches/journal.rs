//! Journal write speed: records per second through the SQLite group-commit
//! writer in commit mode (each caller waits until its record is committed),
//! a real file in a temp dir, 256 callers outstanding. Target: 100 000/s on
//! two cores. Each record is a forwarded purchase: PAN masked and hashed,
//! reversal fields sealed. `distinct_cards` gives every record its own PAN,
//! STAN and RRN, as traffic does; `same_card` repeats one card and RRN (the
//! first version of this bench), kept to compare figures. Each runs with the
//! log synced inside each commit (`sync_in_commit`, synchronous=FULL) and on
//! a second thread while the next batch is written (`sync_overlapped`), so
//! one run shows both. Run by hand:
//! `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 5`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::journal::{
    ClearPan, DataKey, Forward, Journal, ReversalFields, SqliteJournal, SqliteOptions, TxnStart,
};

const OUTSTANDING: u64 = 256;

/// A forwarded purchase; `distinct` gives record `n` its own card, STAN and RRN.
fn purchase(n: u64, distinct: bool) -> TxnStart {
    let mut m = Message::new(Mti::from_str("0100").expect("mti"));
    let stan = format!("{:06}", n % 1_000_000);
    let (pan, rrn) = if distinct {
        // A spread of card numbers and RRNs, as a day of traffic has.
        let mixed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24;
        (
            format!("4{:015}", mixed % 1_000_000_000_000_000),
            format!("{:012}", n),
        )
    } else {
        ("4111111111111111".to_owned(), "123456789012".to_owned())
    };
    for (field, value) in [
        (2, pan.as_str()),
        (3, "000000"),
        (4, "000000001000"),
        (7, "1207183000"),
        (11, stan.as_str()),
        (22, "051"),
        (37, rrn.as_str()),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (49, "978"),
    ] {
        m.set(field, value).expect("field");
    }
    TxnStart {
        received_at_ms: 1_700_000_000_000 + n as i64,
        listener: "pos".into(),
        channel: "pos".into(),
        mti: m.mti(),
        processing_code: Some("000000".into()),
        pan: ClearPan::new(&pan),
        amount: Some(1000),
        currency: Some(978),
        terminal_id: Some("TERM0001".into()),
        merchant_id: Some("MERCHANT0000001".into()),
        terminal_stan: Some(stan.clone()),
        terminal_rrn: Some(rrn.clone()),
        forward: Some(Forward {
            route: "visa".into(),
            issuer: "bank-a".into(),
            upstream_stan: stan,
            upstream_rrn: Some(rrn),
            reversal: ReversalFields::from_message(&m),
        }),
        original_id: None,
    }
}

fn group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    let cases = [("distinct_cards", true), ("same_card", false)];
    let syncs = [("sync_in_commit", false), ("sync_overlapped", true)];
    for ((cards, distinct), (sync, overlap_sync)) in cases
        .into_iter()
        .flat_map(|case| syncs.map(|sync| (case, sync)))
    {
        let name = format!("commit_256_outstanding/{cards}/{sync}");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut options =
            SqliteOptions::new(dir.path().join("journal.db"), DataKey::from_bytes([1; 32]));
        options.overlap_sync = overlap_sync;
        let journal = Arc::new(SqliteJournal::open(options).expect("open journal"));
        // Record numbers keep rising across iterations, so every RRN is new.
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        group.bench_function(&name, |b| {
            b.iter_custom(|iters| {
                let journal = Arc::clone(&journal);
                let base = next.fetch_add(iters, std::sync::atomic::Ordering::Relaxed);
                runtime.block_on(async move {
                    let started = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for task in 0..OUTSTANDING {
                        let journal = Arc::clone(&journal);
                        tasks.spawn(async move {
                            // Task `t` takes records base+t, base+t+256, ...
                            let mut n = task;
                            while n < iters {
                                journal
                                    .begin(purchase(base + n, distinct))
                                    .await
                                    .expect("commit");
                                n += OUTSTANDING;
                            }
                        });
                    }
                    while let Some(done) = tasks.join_next().await {
                        done.expect("submitter");
                    }
                    started.elapsed()
                })
            })
        });
        drop(journal);
        // Keep the directory until the journal is closed.
        drop(dir);
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
