//! Store-and-forward delivery speed: reversals per second drained from the
//! SQLite queue by one issuer's sender, against an issuer that takes 200 ms to
//! acknowledge each (the slow-acknowledgement case). Each attempt is
//! marked in the journal (commit mode) before it goes out, as in the switch.
//! Target: 500 reversals/s. Run by hand:
//! `cargo bench --bench saf -- --warm-up-time 1 --measurement-time 20`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use isoswitch::iso8583::{Message, Mti};
use isoswitch::journal::{
    now_ms, DataKey, ReversalFields, SafKind, SafNew, SafStore, SqliteJournal, SqliteOptions,
};
use isoswitch::upstream::{Deliver, Delivery, IssuerDirectory, SafSender, SafSettings};
use tokio_util::sync::CancellationToken;

/// Reversals queued per measured round.
const ITEMS: u64 = 1_000;
/// How long the issuer takes to acknowledge each.
const ACK: Duration = Duration::from_millis(200);

/// Acknowledges every reversal after [`ACK`].
struct SlowIssuer;

impl Deliver for SlowIssuer {
    fn deliver(&self, message: Message, _deadline: tokio::time::Instant) -> Delivery<'_> {
        Box::pin(async move {
            tokio::time::sleep(ACK).await;
            let mut answer = Message::new(message.mti().response().expect("a request"));
            answer.set(39, "00").expect("data field");
            Ok(answer)
        })
    }
}

impl IssuerDirectory for SlowIssuer {
    fn find(&self, _issuer: &str) -> Option<(Arc<dyn Deliver>, Duration)> {
        Some((Arc::new(SlowIssuer), Duration::from_secs(5)))
    }
}

fn reversal(n: u64) -> ReversalFields {
    let mut m = Message::new(Mti::from_static("0400"));
    let stan = format!("{:06}", n % 1_000_000);
    for (field, value) in [
        (2, "4111111111111111"),
        (3, "000000"),
        (4, "000000001000"),
        (11, stan.as_str()),
        (41, "TERM0001"),
        (90, "010000000112071830000000000000000000000000"),
    ] {
        m.set(field, value).expect("field");
    }
    ReversalFields::from_message(&m)
}

/// Queues [`ITEMS`] reversals, then times the sender draining them.
async fn drain_once(store: Arc<SqliteJournal>, round: u64) -> Duration {
    let issuer = format!("bank-{round}");
    for n in 0..ITEMS {
        store
            .enqueue(SafNew {
                issuer: issuer.clone(),
                kind: SafKind::Reversal,
                mti: Mti::from_static("0400"),
                txn_id: None,
                fields: reversal(n),
                created_at_ms: now_ms(),
                expires_at_ms: now_ms() + 3_600_000,
            })
            .await
            .expect("queued");
    }
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let sender = SafSender::spawn(
        &issuer,
        store.clone(),
        Arc::new(SlowIssuer),
        Arc::new(SafSettings::default()),
        shutdown.clone(),
    );
    while store.depth(&issuer).await.expect("depth") > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    shutdown.cancel();
    sender.stopped().await;
    took
}

fn slow_issuer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let key = DataKey::from_bytes([7; 32]);
    let store = Arc::new(
        SqliteJournal::open(SqliteOptions::new(dir.path().join("saf.db"), key)).expect("open"),
    );
    let mut group = c.benchmark_group("saf");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ITEMS));
    let mut round = 0;
    group.bench_function("reversals_drained_200ms_acks", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                round += 1;
                total += runtime.block_on(drain_once(store.clone(), round));
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, slow_issuer);
criterion_main!(benches);
