//! Journal write speed: records per second through the SQLite group-commit
//! writer in commit mode (each caller waits until its record is committed),
//! a real file in a temp dir, 256 callers outstanding. Target: 100 000/s on
//! two cores. Each record is a forwarded purchase: PAN masked and hashed,
//! reversal fields sealed. Run by hand:
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

fn purchase(n: u64) -> TxnStart {
    let mut m = Message::new(Mti::from_str("0100").expect("mti"));
    let stan = format!("{:06}", n % 1_000_000);
    for (field, value) in [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000001000"),
        (7, "1207183000"),
        (11, stan.as_str()),
        (22, "051"),
        (37, "123456789012"),
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
        pan: ClearPan::new("4111111111111111"),
        amount: Some(1000),
        currency: Some(978),
        terminal_id: Some("TERM0001".into()),
        merchant_id: Some("MERCHANT0000001".into()),
        terminal_stan: Some(stan.clone()),
        terminal_rrn: Some("123456789012".into()),
        forward: Some(Forward {
            route: "visa".into(),
            issuer: "bank-a".into(),
            upstream_stan: stan,
            upstream_rrn: Some("123456789012".into()),
            reversal: ReversalFields::from_message(&m),
        }),
    }
}

fn group_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions::new(dir.path().join("journal.db"), DataKey::from_bytes([1; 32]));
    let journal = Arc::new(SqliteJournal::open(options).expect("open journal"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("commit_256_outstanding", |b| {
        b.iter_custom(|iters| {
            let journal = Arc::clone(&journal);
            runtime.block_on(async move {
                let started = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                for task in 0..OUTSTANDING {
                    let journal = Arc::clone(&journal);
                    let count = iters / OUTSTANDING + u64::from(task < iters % OUTSTANDING);
                    tasks.spawn(async move {
                        for n in 0..count {
                            journal
                                .begin(purchase(task * 1_000 + n))
                                .await
                                .expect("commit");
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
    group.finish();
    drop(journal);
    // Keep the directory until the journal is closed.
    drop(dir);
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
