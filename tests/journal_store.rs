//! The journal's storage layer: one behaviour suite run against the SQLite
//! and in-memory backends, then what only a real file can show — durability
//! across a kill -9, no PAN in clear on disk, sealed data that detects
//! tampering, and storage that breaks and comes back.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;

use isoswitch::iso8583::{Message, Mti, ResponseCode};
use isoswitch::journal::{
    ClearPan, DataKey, DecidedBy, Durability, Forward, Journal, JournalError, MemoryJournal,
    Outcome, Purged, ReversalFields, ReversalState, SafKind, SafNew, SafState, SafStore,
    SqliteJournal, SqliteOptions, StatsRow, TimeRange, TxnId, TxnQuery, TxnStart,
};

const PAN: &str = "4111111111111111";
const T0: i64 = 1_700_000_000_000;
const KEY: [u8; 32] = [0x11; 32];

/// Both traits, so one handle reaches the whole store.
trait Store: Journal + SafStore {}
impl<T: Journal + SafStore> Store for T {}

/// A store under test, which can be closed and opened again on the same data.
enum Harness {
    Memory(Box<MemoryJournal>),
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
        journal: Option<Box<SqliteJournal>>,
    },
}

impl Harness {
    fn memory() -> Harness {
        Harness::Memory(Box::default())
    }

    fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal.db");
        let journal = open(&path);
        Harness::Sqlite {
            _dir: dir,
            path,
            journal: Some(Box::new(journal)),
        }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Harness::Memory(m) => m.as_ref(),
            Harness::Sqlite { journal, .. } => journal.as_deref().expect("open"),
        }
    }

    /// Closes and reopens the file; memory keeps its state as it is.
    fn reopen(&mut self) {
        if let Harness::Sqlite { path, journal, .. } = self {
            if let Some(j) = journal.take() {
                j.close();
            }
            *journal = Some(Box::new(open(path)));
        }
    }
}

fn open(path: &Path) -> SqliteJournal {
    SqliteJournal::open(SqliteOptions::new(path, DataKey::from_bytes(KEY))).expect("open journal")
}

/// Options for a journal in async mode, whose writes resolve once queued.
fn async_options(path: &Path) -> SqliteOptions {
    let mut options = SqliteOptions::new(path, DataKey::from_bytes(KEY));
    options.durability = Durability::Async;
    options
}

/// How many transactions the file at `path` holds, read by a fresh journal.
async fn records_in(path: &Path) -> usize {
    open(path)
        .find(TxnQuery::default())
        .await
        .expect("find")
        .len()
}

fn request(stan: u32) -> Message {
    let mut m = Message::new(Mti::from_str("0100").expect("mti"));
    for (n, v) in [
        (2, PAN.to_owned()),
        (3, "000000".to_owned()),
        (4, format!("{:012}", 1000 * stan)),
        (11, format!("{stan:06}")),
        (35, format!("{PAN}=2812101")),
        (37, format!("RRN{stan:09}")),
        (41, "TERM0001".to_owned()),
        (49, "978".to_owned()),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

/// A forwarded purchase: STAN `n`, amount 10.00 × n, one second after the last.
fn forwarded(n: u32) -> TxnStart {
    let message = request(n);
    TxnStart {
        forward: Some(Forward {
            route: "visa".into(),
            issuer: "bank-a".into(),
            upstream_stan: format!("{:06}", 500_000 + n),
            upstream_rrn: Some(format!("UP{n:010}")),
            reversal: ReversalFields::from_message(&message),
        }),
        ..declined_locally(n)
    }
}

/// The same, answered by the switch without an issuer (no forward).
fn declined_locally(n: u32) -> TxnStart {
    TxnStart {
        received_at_ms: T0 + i64::from(n) * 1000,
        listener: "pos".into(),
        channel: "pos".into(),
        mti: Mti::from_str("0100").expect("mti"),
        processing_code: Some("000000".into()),
        pan: ClearPan::new(PAN),
        amount: Some(1000 * i64::from(n)),
        currency: Some(978),
        terminal_id: Some("TERM0001".into()),
        merchant_id: Some("MERCHANT0000001".into()),
        terminal_stan: Some(format!("{n:06}")),
        terminal_rrn: Some(format!("RRN{n:09}")),
        forward: None,
        original_id: None,
    }
}

fn outcome(code: &str, by: DecidedBy) -> Outcome {
    let code = ResponseCode::new(code.as_bytes().try_into().expect("two chars")).expect("code");
    Outcome {
        answered_at_ms: T0 + 500_000,
        response_code: code,
        decided_by: by,
        auth_code: code.is_approval().then(|| "A1B2C3".to_owned()),
        latency_us: 1234,
        reason: None,
    }
}

fn saf(issuer: &str, n: u32) -> SafNew {
    SafNew {
        issuer: issuer.into(),
        kind: SafKind::Reversal,
        mti: Mti::from_static("0400"),
        txn_id: None,
        fields: ReversalFields::from_message(&request(n)),
        created_at_ms: T0,
        expires_at_ms: T0 + 60_000,
    }
}

async fn write_ahead_then_outcome(h: &mut Harness) {
    let s = h.store();
    let id = s.begin(forwarded(1)).await.expect("begin");
    let found = s.find(TxnQuery::default()).await.expect("find");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert_eq!(found[0].outcome, None);
    assert_eq!(found[0].upstream_stan.as_deref(), Some("500001"));
    assert_eq!(found[0].pan_masked.as_deref(), Some("411111******1111"));

    s.record_outcome(id, outcome("00", DecidedBy::Issuer))
        .await
        .expect("outcome");
    s.set_reversal(id, ReversalState::Queued)
        .await
        .expect("reversal");
    h.reopen();
    let found = h.store().find(TxnQuery::default()).await.expect("find");
    assert_eq!(found[0].outcome, Some(outcome("00", DecidedBy::Issuer)));
    assert_eq!(found[0].reversal, ReversalState::Queued);
    assert_eq!(found[0].amount, Some(1000));
    assert_eq!(found[0].currency, Some(978));
    let fields = h
        .store()
        .reversal_fields(id)
        .await
        .expect("fields")
        .expect("forwarded");
    assert_eq!(fields.get(2), Some(PAN.as_bytes()));
    assert_eq!(fields.get(35), None, "track data is never kept");
}

async fn in_doubt_lists_forwarded_requests_without_an_answer(h: &mut Harness) {
    let s = h.store();
    let unanswered = s.begin(forwarded(1)).await.expect("begin");
    let answered = s.begin(forwarded(2)).await.expect("begin");
    s.record_outcome(answered, outcome("00", DecidedBy::Issuer))
        .await
        .expect("outcome");
    let reversed = s.begin(forwarded(3)).await.expect("begin");
    s.set_reversal(reversed, ReversalState::Queued)
        .await
        .expect("reversal");
    s.begin(declined_locally(4)).await.expect("begin");

    h.reopen();
    let doubts = h.store().in_doubt(i64::MAX).await.expect("in doubt");
    assert_eq!(
        doubts.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![unanswered]
    );
    // The cutoff is exclusive: one received at it may still be in flight.
    let received = T0 + 1000;
    let still_in_flight = h.store().in_doubt(received).await.expect("in doubt");
    assert!(still_in_flight.is_empty(), "{still_in_flight:?}");
    let past = h.store().in_doubt(received + 1).await.expect("in doubt");
    assert_eq!(past.len(), 1);
    assert_eq!(doubts[0].issuer, "bank-a");
    assert_eq!(doubts[0].upstream_stan, "500001");
    assert_eq!(doubts[0].reversal.get(11), Some(&b"000001"[..]));
}

async fn find_by_each_key(h: &mut Harness) {
    let s = h.store();
    let mut ids = Vec::new();
    for n in 1..=5 {
        let mut start = forwarded(n);
        if n == 5 {
            start.pan = ClearPan::new("5500000000000004");
            start.terminal_id = Some("TERM0002".into());
        }
        ids.push(s.begin(start).await.expect("begin"));
    }
    let ids_of = |records: Vec<isoswitch::journal::TxnRecord>| {
        records.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    let by = |query: TxnQuery| async move { ids_of(s.find(query).await.expect("find")) };

    let rrn = TxnQuery {
        rrn: Some("RRN000000002".into()),
        ..TxnQuery::default()
    };
    assert_eq!(by(rrn).await, vec![ids[1]]);
    let upstream_rrn = TxnQuery {
        rrn: Some("UP0000000003".into()),
        ..TxnQuery::default()
    };
    assert_eq!(by(upstream_rrn).await, vec![ids[2]]);
    let stan = TxnQuery {
        terminal_stan: Some(("TERM0001".into(), "000004".into())),
        ..TxnQuery::default()
    };
    assert_eq!(by(stan).await, vec![ids[3]]);
    let other_terminal = TxnQuery {
        terminal_stan: Some(("TERM0001".into(), "000005".into())),
        ..TxnQuery::default()
    };
    assert_eq!(by(other_terminal).await, vec![]);
    let last4 = TxnQuery {
        last4: Some("0004".into()),
        ..TxnQuery::default()
    };
    assert_eq!(by(last4).await, vec![ids[4]]);
    let pan = TxnQuery {
        pan: ClearPan::new(PAN),
        ..TxnQuery::default()
    };
    assert_eq!(by(pan).await, ids[..4].to_vec());
    let range = TimeRange {
        since_ms: Some(T0 + 2000),
        until_ms: Some(T0 + 4000),
    };
    assert_eq!(
        by(TxnQuery {
            range,
            ..TxnQuery::default()
        })
        .await,
        ids[1..3].to_vec()
    );
    let limited = TxnQuery {
        pan: ClearPan::new(PAN),
        limit: Some(2),
        ..TxnQuery::default()
    };
    assert_eq!(by(limited).await, ids[..2].to_vec());
}

async fn stats_count_and_sum_by_code_route_and_decider(h: &mut Harness) {
    let s = h.store();
    for (n, code, by) in [
        (1, "00", DecidedBy::Issuer),
        (2, "00", DecidedBy::Issuer),
        (3, "51", DecidedBy::Issuer),
        (4, "91", DecidedBy::Timeout),
    ] {
        let id = s.begin(forwarded(n)).await.expect("begin");
        s.record_outcome(id, outcome(code, by))
            .await
            .expect("outcome");
    }
    let risk = s.begin(declined_locally(5)).await.expect("begin");
    s.record_outcome(risk, outcome("59", DecidedBy::Risk))
        .await
        .expect("outcome");
    s.begin(forwarded(6)).await.expect("begin");

    let row = |key: &str, count: u64, amount: i64| StatsRow {
        key: key.into(),
        currency: Some(978),
        count,
        amount,
    };
    let stats = s.stats(TimeRange::default()).await.expect("stats");
    assert_eq!(
        stats.by_response_code,
        vec![
            row("00", 2, 3000),
            row("51", 1, 3000),
            row("59", 1, 5000),
            row("91", 1, 4000),
            row("pending", 1, 6000)
        ]
    );
    assert_eq!(
        stats.by_route,
        vec![row("-", 1, 5000), row("visa", 5, 16000)]
    );
    assert_eq!(
        stats.by_decider,
        vec![
            row("issuer", 3, 6000),
            row("pending", 1, 6000),
            row("risk", 1, 5000),
            row("timeout", 1, 4000)
        ]
    );
    let first_two = TimeRange {
        since_ms: Some(T0 + 1000),
        until_ms: Some(T0 + 3000),
    };
    let stats = s.stats(first_two).await.expect("stats");
    assert_eq!(stats.by_response_code, vec![row("00", 2, 3000)]);
}

async fn saf_is_fifo_per_issuer_and_persists_attempts(h: &mut Harness) {
    let s = h.store();
    let a1 = s.enqueue(saf("bank-a", 1)).await.expect("enqueue");
    let b1 = s.enqueue(saf("bank-b", 2)).await.expect("enqueue");
    let a2 = s.enqueue(saf("bank-a", 3)).await.expect("enqueue");
    assert_eq!(s.depth("bank-a").await.expect("depth"), 2);
    assert_eq!(s.depth("bank-b").await.expect("depth"), 1);

    let due = s.due("bank-a", T0, 10).await.expect("due");
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), vec![a1, a2]);
    assert_eq!(due[0].fields.get(2), Some(PAN.as_bytes()));
    assert_eq!(s.due("bank-a", T0, 1).await.expect("due").len(), 1);

    // The head is marked before it is sent; it is not due again until its backoff ends.
    s.mark_attempt(a1, T0, T0 + 5_000).await.expect("attempt");
    let due = s.due("bank-a", T0 + 1, 10).await.expect("due");
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), vec![a2]);

    h.reopen();
    let s = h.store();
    let due = s.due("bank-a", T0 + 5_000, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|i| (i.id, i.attempts)).collect::<Vec<_>>(),
        vec![(a1, 1), (a2, 0)]
    );

    s.acknowledge(a1, T0 + 5_001).await.expect("ack");
    assert_eq!(s.depth("bank-a").await.expect("depth"), 1);
    assert_eq!(
        s.due("bank-a", T0 + 10_000, 10).await.expect("due")[0].id,
        a2
    );
    assert_eq!(s.due("bank-b", T0, 10).await.expect("due")[0].id, b1);
}

async fn an_expired_item_is_marked_failed_on_its_transaction(h: &mut Harness) {
    let s = h.store();
    let txn = s.begin(forwarded(1)).await.expect("begin");
    let item = SafNew {
        txn_id: Some(txn),
        ..saf("bank-a", 1)
    };
    let id = s.enqueue(item).await.expect("enqueue");
    let due = s.due("bank-a", T0 + 60_000, 10).await.expect("due");
    assert!(due[0].is_expired(T0 + 60_000));
    s.fail(id, T0 + 60_000).await.expect("fail");
    assert_eq!(s.depth("bank-a").await.expect("depth"), 0);
    assert!(s
        .due("bank-a", T0 + 60_000, 10)
        .await
        .expect("due")
        .is_empty());
    assert!(matches!(
        s.fail(id, T0 + 60_001).await,
        Err(JournalError::Unknown { .. })
    ));

    h.reopen();
    let found = h.store().find(TxnQuery::default()).await.expect("find");
    assert_eq!(found[0].links.len(), 1);
    assert_eq!(found[0].links[0].id, id);
    assert_eq!(found[0].links[0].state, SafState::Failed);
    assert_eq!(found[0].links[0].kind, SafKind::Reversal);
}

async fn updates_of_unknown_rows_are_refused(h: &mut Harness) {
    let s = h.store();
    let missing = s
        .record_outcome(TxnId(999), outcome("00", DecidedBy::Issuer))
        .await;
    assert!(
        matches!(missing, Err(JournalError::Unknown { id: 999, .. })),
        "{missing:?}"
    );
    // The refusal is that caller's alone: the store still takes writes.
    s.begin(forwarded(1)).await.expect("begin");
    assert!(h.store().health().ready);
}

/// A reversal item of transaction `txn`.
fn reversal_of(txn: TxnId, n: u32) -> SafNew {
    SafNew {
        txn_id: Some(txn),
        ..saf("bank-a", n)
    }
}

/// The reversal state and queue items (kind, state) of transaction `id`.
async fn reversal_of_txn(s: &dyn Store, id: TxnId) -> (ReversalState, Vec<(SafKind, SafState)>) {
    let found = s.find(TxnQuery::default()).await.expect("find");
    let record = found
        .into_iter()
        .find(|r| r.id == id)
        .expect("the transaction is there");
    let links = record.links.iter().map(|l| (l.kind, l.state)).collect();
    (record.reversal, links)
}

async fn a_reversal_carries_its_transaction_state_through_the_queue(h: &mut Harness) {
    use ReversalState::{Acknowledged, Failed, Queued, Sent};
    let s = h.store();
    let acked = s.begin(forwarded(1)).await.expect("begin");
    let item = s.enqueue(reversal_of(acked, 1)).await.expect("enqueue");
    assert_eq!(reversal_of_txn(s, acked).await.0, Queued);
    assert!(
        s.in_doubt(i64::MAX).await.expect("in doubt").is_empty(),
        "a queued reversal is no longer in doubt"
    );
    s.mark_attempt(item, T0, T0 + 5_000).await.expect("attempt");
    assert_eq!(reversal_of_txn(s, acked).await.0, Sent);
    s.acknowledge(item, T0 + 1).await.expect("ack");
    h.reopen();
    let s = h.store();
    assert_eq!(
        reversal_of_txn(s, acked).await,
        (
            Acknowledged,
            vec![(SafKind::Reversal, SafState::Acknowledged)]
        )
    );

    let expired = s.begin(forwarded(2)).await.expect("begin");
    let item = s.enqueue(reversal_of(expired, 2)).await.expect("enqueue");
    s.fail(item, T0 + 60_000).await.expect("fail");
    assert_eq!(reversal_of_txn(s, expired).await.0, Failed);

    // A final state set by hand is not taken back by a later attempt.
    let settled = s.begin(forwarded(3)).await.expect("begin");
    let item = s.enqueue(reversal_of(settled, 3)).await.expect("enqueue");
    s.set_reversal(settled, Acknowledged).await.expect("set");
    s.mark_attempt(item, T0, T0 + 5_000).await.expect("attempt");
    assert_eq!(reversal_of_txn(s, settled).await.0, Acknowledged);

    // An advice leaves the reversal state alone, through its whole life.
    let advised = s.begin(forwarded(4)).await.expect("begin");
    let advice = SafNew {
        kind: SafKind::Advice,
        ..reversal_of(advised, 4)
    };
    let item = s.enqueue(advice).await.expect("enqueue");
    s.mark_attempt(item, T0, T0 + 5_000).await.expect("attempt");
    s.acknowledge(item, T0 + 1).await.expect("ack");
    assert_eq!(reversal_of_txn(s, advised).await.0, ReversalState::None);
}

async fn a_transaction_has_at_most_one_reversal(h: &mut Harness) {
    let s = h.store();
    let txn = s.begin(forwarded(1)).await.expect("begin");
    let first = s.enqueue(reversal_of(txn, 1)).await.expect("enqueue");
    s.mark_attempt(first, T0, T0 + 5_000)
        .await
        .expect("attempt");
    s.enqueue(reversal_of(txn, 1))
        .await
        .expect("a second reversal is no error");
    assert_eq!(s.depth("bank-a").await.expect("depth"), 1);
    assert_eq!(
        reversal_of_txn(s, txn).await,
        (
            ReversalState::Sent,
            vec![(SafKind::Reversal, SafState::Pending)]
        ),
        "the second changed nothing"
    );
    let due = s.due("bank-a", T0 + 5_000, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|i| (i.id, i.attempts)).collect::<Vec<_>>(),
        vec![(first, 1)]
    );

    // Not even once the first is answered.
    s.acknowledge(first, T0 + 6_000).await.expect("ack");
    h.reopen();
    let s = h.store();
    s.enqueue(reversal_of(txn, 1)).await.expect("enqueue");
    assert_eq!(s.depth("bank-a").await.expect("depth"), 0);
    assert_eq!(reversal_of_txn(s, txn).await.0, ReversalState::Acknowledged);

    // Advices of one transaction, and items of none, are never duplicates.
    for _ in 0..2 {
        let advice = SafNew {
            kind: SafKind::Advice,
            ..reversal_of(txn, 1)
        };
        s.enqueue(advice).await.expect("advice");
        s.enqueue(saf("bank-a", 2)).await.expect("no transaction");
    }
    assert_eq!(s.depth("bank-a").await.expect("depth"), 4);
    assert_eq!(reversal_of_txn(s, txn).await.1.len(), 3);
}

async fn purge_keeps_what_the_queue_still_needs(h: &mut Harness) {
    let s = h.store();
    let cutoff = T0 + 10_000;
    let answered = s.begin(forwarded(1)).await.expect("begin");
    s.record_outcome(answered, outcome("00", DecidedBy::Issuer))
        .await
        .expect("outcome");
    let pending = s.begin(forwarded(2)).await.expect("begin");
    s.enqueue(reversal_of(pending, 2)).await.expect("enqueue");
    let reversed = s.begin(forwarded(3)).await.expect("begin");
    let item = s.enqueue(reversal_of(reversed, 3)).await.expect("enqueue");
    s.acknowledge(item, T0 + 3_500).await.expect("ack");
    let closed_late = s.begin(forwarded(4)).await.expect("begin");
    let item = s
        .enqueue(reversal_of(closed_late, 4))
        .await
        .expect("enqueue");
    s.fail(item, cutoff).await.expect("fail");
    let recent = s.begin(forwarded(11)).await.expect("begin");
    let advice = s.enqueue(saf("bank-b", 5)).await.expect("enqueue");
    s.acknowledge(advice, T0 + 5_000).await.expect("ack");
    s.enqueue(saf("bank-b", 6))
        .await
        .expect("pending, no transaction");

    let purged = s.purge(cutoff).await.expect("purge");
    assert_eq!(
        purged,
        Purged {
            transactions: 2,
            queue_items: 2
        }
    );
    h.reopen();
    let s = h.store();
    let left: Vec<TxnId> = s
        .find(TxnQuery::default())
        .await
        .expect("find")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![pending, closed_late, recent]);
    assert_eq!(s.depth("bank-a").await.expect("depth"), 1);
    assert_eq!(s.depth("bank-b").await.expect("depth"), 1);
    assert_eq!(
        reversal_of_txn(s, closed_late).await.1,
        vec![(SafKind::Reversal, SafState::Failed)]
    );
    assert_eq!(s.purge(cutoff).await.expect("again"), Purged::default());
}

async fn find_filters_by_decider_and_approval(h: &mut Harness) {
    let s = h.store();
    let mut ids = Vec::new();
    for (n, answer) in [
        (1, Some(("00", DecidedBy::StandIn))),
        (2, Some(("05", DecidedBy::StandIn))),
        (3, Some(("00", DecidedBy::Issuer))),
        (4, None),
        (5, Some(("08", DecidedBy::StandIn))),
    ] {
        let id = s.begin(forwarded(n)).await.expect("begin");
        if let Some((code, by)) = answer {
            s.record_outcome(id, outcome(code, by))
                .await
                .expect("outcome");
        }
        ids.push(id);
    }
    let ids_of = |query: TxnQuery| async move {
        s.find(query)
            .await
            .expect("find")
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    // The stand-in's question: approvals it gave this card in a window.
    let stand_in_approvals = TxnQuery {
        pan: ClearPan::new(PAN),
        range: TimeRange {
            since_ms: Some(T0),
            until_ms: Some(T0 + 10_000),
        },
        decided_by: Some(DecidedBy::StandIn),
        approved_only: true,
        ..TxnQuery::default()
    };
    assert_eq!(
        ids_of(stand_in_approvals.clone()).await,
        vec![ids[0], ids[4]]
    );
    let approvals = TxnQuery {
        approved_only: true,
        ..TxnQuery::default()
    };
    assert_eq!(
        ids_of(approvals.clone()).await,
        vec![ids[0], ids[2], ids[4]]
    );
    let first_two = TxnQuery {
        limit: Some(2),
        ..approvals
    };
    assert_eq!(ids_of(first_two).await, vec![ids[0], ids[2]]);
    let by_issuer = TxnQuery {
        decided_by: Some(DecidedBy::Issuer),
        ..TxnQuery::default()
    };
    assert_eq!(ids_of(by_issuer).await, vec![ids[2]]);
    let earlier = TxnQuery {
        range: TimeRange {
            since_ms: Some(T0),
            until_ms: Some(T0 + 5_000),
        },
        ..stand_in_approvals
    };
    assert_eq!(ids_of(earlier).await, vec![ids[0]]);
}

/// Each behaviour as a test for each backend.
macro_rules! suite {
    ($($name:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&mut super::Harness::sqlite()).await;
            })+
        }
        mod memory_backend {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&mut super::Harness::memory()).await;
            })+
        }
    };
}

suite!(
    write_ahead_then_outcome,
    in_doubt_lists_forwarded_requests_without_an_answer,
    find_by_each_key,
    stats_count_and_sum_by_code_route_and_decider,
    saf_is_fifo_per_issuer_and_persists_attempts,
    an_expired_item_is_marked_failed_on_its_transaction,
    updates_of_unknown_rows_are_refused,
    a_reversal_carries_its_transaction_state_through_the_queue,
    a_transaction_has_at_most_one_reversal,
    purge_keeps_what_the_queue_still_needs,
    find_filters_by_decider_and_approval,
);

#[tokio::test]
async fn purge_deletes_in_chunks_until_nothing_is_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let mut options = SqliteOptions::new(&path, DataKey::from_bytes(KEY));
    options.purge_chunk = 3;
    let journal = SqliteJournal::open(options).expect("open");
    for n in 1..=10 {
        journal.begin(forwarded(n)).await.expect("begin");
    }
    for n in 1..=7 {
        let item = journal.enqueue(saf("bank-a", n)).await.expect("enqueue");
        journal.acknowledge(item, T0 + 1).await.expect("ack");
    }
    let purged = journal.purge(T0 + 9_500).await.expect("purge");
    assert_eq!(
        purged,
        Purged {
            transactions: 9,
            queue_items: 7
        }
    );
    let left = journal.find(TxnQuery::default()).await.expect("find");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].received_at_ms, T0 + 10_000);
}

#[tokio::test]
async fn committed_records_survive_a_journal_that_was_never_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let journal = open(&path);
    let mut ids = Vec::new();
    for n in 1..=50 {
        ids.push(journal.begin(forwarded(n)).await.expect("begin"));
    }
    // No close, no drop: the writer thread and its connection stay as they were.
    std::mem::forget(journal);
    let reopened = open(&path);
    let found: Vec<TxnId> = reopened
        .find(TxnQuery::default())
        .await
        .expect("find")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(found, ids);
    // New ids follow the old ones.
    assert!(reopened.begin(forwarded(51)).await.expect("begin") > ids[49]);
}

#[tokio::test]
async fn a_journal_that_syncs_inside_each_commit_keeps_every_record_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let mut options = SqliteOptions::new(&path, DataKey::from_bytes(KEY));
    options.overlap_sync = false;
    let journal = SqliteJournal::open(options).expect("open");
    let mut ids = Vec::new();
    for n in 1..=20 {
        ids.push(journal.begin(forwarded(n)).await.expect("begin"));
    }
    std::mem::forget(journal);
    let found: Vec<TxnId> = open(&path)
        .find(TxnQuery::default())
        .await
        .expect("find")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(found, ids);
}

#[tokio::test]
async fn async_durability_writes_reach_the_file_by_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let journal = SqliteJournal::open(async_options(&path)).expect("open");
    for n in 1..=20 {
        journal.begin(forwarded(n)).await.expect("begin");
    }
    journal.close();
    assert_eq!(records_in(&path).await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_callers_wait_and_drops_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let mut options = async_options(&path);
    options.queue_capacity = 2;
    options.max_batch = 2;
    let journal = Arc::new(SqliteJournal::open(options).expect("open"));
    let mut writers = tokio::task::JoinSet::new();
    for task in 0..8u32 {
        let journal = Arc::clone(&journal);
        writers.spawn(async move {
            for n in 0..50 {
                journal
                    .begin(forwarded(task * 100 + n + 1))
                    .await
                    .expect("begin");
                assert!(journal.queued_writes() <= 2);
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let journal = Arc::into_inner(journal).expect("last handle");
    journal.close();
    assert_eq!(records_in(&path).await, 400);
}

const CHILD_ENV: &str = "ISOSWITCH_JOURNAL_KILL_CHILD";
const ACKED: &str = "acked ";

/// In the child: writes for ever from many tasks, printing each id once the
/// journal says it is committed, until the parent kills it.
fn run_writer_child(path: &Path) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let journal = Arc::new(open(path));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..32u32 {
            let journal = Arc::clone(&journal);
            tasks.spawn(async move {
                for n in 0.. {
                    let id = journal
                        .begin(forwarded(task * 10_000 + n % 10_000 + 1))
                        .await
                        .expect("begin");
                    println!("{ACKED}{}", id.0);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    std::process::exit(2)
}

#[test]
fn every_acknowledged_record_survives_kill_9() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        run_writer_child(Path::new(&path));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "every_acknowledged_record_survives_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the writer child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    while acked.len() < 2_000 {
        let line = lines
            .next()
            .expect("the child stopped before it was killed")
            .expect("line");
        if let Some(id) = line.strip_prefix(ACKED) {
            acked.push(id.parse::<i64>().expect("id"));
        }
    }
    child.kill().expect("SIGKILL the child");
    // Lines already written before the kill were acknowledged too.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix(ACKED) {
            acked.push(id.parse::<i64>().expect("id"));
        }
    }
    let status = child.wait().expect("reap the child");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stored: std::collections::HashSet<i64> = runtime.block_on(async {
        let journal = open(&path);
        journal
            .find(TxnQuery::default())
            .await
            .expect("find")
            .into_iter()
            .map(|r| r.id.0)
            .collect()
    });
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged records lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test]
async fn no_pan_in_clear_in_the_database_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let journal = open(&path);
    let txn = journal.begin(forwarded(1)).await.expect("begin");
    journal
        .enqueue(SafNew {
            txn_id: Some(txn),
            ..saf("bank-a", 1)
        })
        .await
        .expect("enqueue");
    // Still open, so the records are in the WAL as well as (maybe) the main file.
    let mut on_disk = 0;
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        on_disk += bytes.len();
        assert!(
            !bytes.windows(PAN.len()).any(|w| w == PAN.as_bytes()),
            "clear PAN on disk"
        );
        assert!(
            !bytes.windows(7).any(|w| w == b"2812101"),
            "track data on disk"
        );
    }
    assert!(on_disk > 0);
    journal.close();
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(
            !bytes.windows(PAN.len()).any(|w| w == PAN.as_bytes()),
            "clear PAN on disk after close"
        );
    }
}

#[tokio::test]
async fn tampered_or_moved_card_data_is_detected() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let journal = open(&path);
    let first = journal.begin(forwarded(1)).await.expect("begin");
    let second = journal.begin(forwarded(2)).await.expect("begin");
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    // Moving one row's sealed data to another fails: the row id is authenticated.
    raw.execute(
        "UPDATE txn SET (fields_nonce, fields_sealed) = (SELECT fields_nonce, fields_sealed FROM txn WHERE id = ?1) WHERE id = ?2",
        [first.0, second.0],
    )
    .expect("move");
    assert!(matches!(
        journal.reversal_fields(second).await,
        Err(JournalError::Tampered { .. })
    ));
    assert!(journal
        .reversal_fields(first)
        .await
        .expect("intact")
        .is_some());
    raw.execute(
        "UPDATE txn SET fields_sealed = zeroblob(length(fields_sealed)) WHERE id = ?1",
        [first.0],
    )
    .expect("flip");
    assert!(matches!(
        journal.in_doubt(i64::MAX).await,
        Err(JournalError::Tampered { .. })
    ));
}

#[tokio::test]
async fn a_generated_key_file_is_private_and_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("journal.key");
    let (key, created) = DataKey::load_or_create(&key_path).expect("create");
    assert!(created);
    let mode = std::fs::metadata(&key_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let path = dir.path().join("journal.db");
    let journal = SqliteJournal::open(SqliteOptions::new(&path, key)).expect("open");
    let id = journal.begin(forwarded(1)).await.expect("begin");
    journal.close();

    let (again, created) = DataKey::load_or_create(&key_path).expect("load");
    assert!(!created);
    let journal = SqliteJournal::open(SqliteOptions::new(&path, again)).expect("open");
    assert!(journal.reversal_fields(id).await.expect("opens").is_some());
    let by_pan = TxnQuery {
        pan: ClearPan::new(PAN),
        ..TxnQuery::default()
    };
    assert_eq!(journal.find(by_pan).await.expect("find").len(), 1);
    journal.close();

    let other = SqliteJournal::open(SqliteOptions::new(&path, DataKey::from_bytes([0x22; 32])))
        .expect("open");
    assert!(matches!(
        other.reversal_fields(id).await,
        Err(JournalError::Tampered { .. })
    ));
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_one_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = SqliteJournal::open(SqliteOptions::new(dir.path(), DataKey::from_bytes(KEY)))
        .expect_err("a directory");
    assert!(matches!(error, JournalError::Open { .. }));
    assert!(
        error
            .to_string()
            .contains(&dir.path().display().to_string()),
        "{error}"
    );
    let missing = dir.path().join("no/such/dir/journal.db");
    let error = SqliteJournal::open(SqliteOptions::new(&missing, DataKey::from_bytes(KEY)))
        .expect_err("no dir");
    assert!(
        error.to_string().contains("no/such/dir/journal.db"),
        "{error}"
    );
}

#[tokio::test]
async fn a_removed_directory_fails_the_waiting_caller_and_writes_resume_when_it_is_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let path = data.join("journal.db");
    let journal = open(&path);
    journal.begin(forwarded(1)).await.expect("begin");
    assert!(journal.health().ready);

    std::fs::remove_dir_all(&data).expect("remove the directory");
    let error = journal
        .begin(forwarded(2))
        .await
        .expect_err("nowhere to write");
    assert!(error.to_string().contains("journal.db"), "{error}");
    let health = journal.health();
    assert!(!health.ready);
    assert!(health.last_error.is_some());

    // Where the file was is now a directory: still failing, still typed.
    std::fs::create_dir_all(&path).expect("a directory in the way");
    assert!(matches!(
        journal.begin(forwarded(3)).await,
        Err(JournalError::Open { .. })
    ));

    std::fs::remove_dir(&path).expect("clear the way");
    let id = journal.begin(forwarded(4)).await.expect("writes resume");
    assert!(journal.health().ready);
    let found = journal.find(TxnQuery::default()).await.expect("find");
    assert_eq!(found.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id]);
}

#[tokio::test]
async fn the_memory_store_fails_writes_while_broken() {
    let store = MemoryJournal::new();
    store.set_broken(Some("disk full"));
    assert!(matches!(
        store.begin(forwarded(1)).await,
        Err(JournalError::Write { .. })
    ));
    assert!(!store.health().ready);
    store.set_broken(None);
    store.begin(forwarded(2)).await.expect("recovered");
    assert!(store.health().ready);
}

/// A closed journal at `path` holding transactions 1 and 2.
async fn closed_journal_with_two(path: &Path) {
    let journal = open(path);
    journal.begin(forwarded(1)).await.expect("begin");
    journal.begin(forwarded(2)).await.expect("begin");
    journal.close();
}

fn schema_versions(path: &Path) -> Vec<i64> {
    let raw = rusqlite::Connection::open(path).expect("raw connection");
    let mut statement = raw
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .expect("prepare");
    let versions = statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<Vec<i64>, _>>()
        .expect("versions");
    versions
}

#[tokio::test]
async fn the_read_only_journal_reads_beside_the_writer_and_sees_each_commit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let journal = open(&path);
    journal.begin(forwarded(1)).await.expect("begin");
    let mut reader = SqliteJournal::open_read_only(&path, None).expect("open read-only");
    assert_eq!(reader.find(&TxnQuery::default()).expect("find").len(), 1);
    journal.begin(forwarded(2)).await.expect("begin");
    assert_eq!(reader.find(&TxnQuery::default()).expect("find").len(), 2);
    let stats = reader.stats(TimeRange::default()).expect("stats");
    assert_eq!(stats.by_route[0].count, 2);
    // The writer is not held up by the reader.
    journal.begin(forwarded(3)).await.expect("begin");
    journal.close();
    assert_eq!(reader.find(&TxnQuery::default()).expect("find").len(), 3);
}

#[tokio::test]
async fn the_read_only_journal_needs_the_key_only_for_a_pan() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Characters an SQLite URI would take for its own.
    let path = dir.path().join("copy 100%#?.db");
    closed_journal_with_two(&path).await;
    let by_pan = TxnQuery {
        pan: ClearPan::new(PAN),
        ..TxnQuery::default()
    };
    let mut keyless = SqliteJournal::open_read_only(&path, None).expect("open");
    let error = keyless.find(&by_pan).expect_err("no key");
    assert!(error.to_string().contains("data key"), "{error}");
    let by_last4 = TxnQuery {
        last4: Some("1111".into()),
        ..TxnQuery::default()
    };
    assert_eq!(keyless.find(&by_last4).expect("find").len(), 2);
    let mut keyed =
        SqliteJournal::open_read_only(&path, Some(DataKey::from_bytes(KEY))).expect("open");
    assert_eq!(keyed.find(&by_pan).expect("find").len(), 2);
}

#[tokio::test]
async fn the_read_only_journal_never_creates_nor_migrates_a_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("absent.db");
    let error = SqliteJournal::open_read_only(&missing, None).expect_err("missing");
    assert!(matches!(error, JournalError::Open { .. }), "{error}");
    assert!(error.to_string().contains("absent.db"), "{error}");
    assert!(!missing.exists(), "a reader created the file");

    // An older schema is read as it is, not brought up to date.
    let path = dir.path().join("journal.db");
    closed_journal_with_two(&path).await;
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute_batch(
        "DELETE FROM schema_version WHERE version >= 3; DROP INDEX saf_one_reversal;",
    )
    .expect("back to schema 2");
    drop(raw);
    let mut reader = SqliteJournal::open_read_only(&path, None).expect("open");
    assert_eq!(reader.find(&TxnQuery::default()).expect("find").len(), 2);
    reader.stats(TimeRange::default()).expect("stats");
    // Nothing beside it either: a -shm made by another user would lock the
    // switch out, and a read-only directory could not hold one.
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["journal.db".to_owned()]);
    drop(reader);
    assert_eq!(schema_versions(&path), vec![1, 2]);
}

#[tokio::test]
async fn the_read_only_journal_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    closed_journal_with_two(&path).await;
    let raw = rusqlite::Connection::open(&path).expect("raw connection");
    raw.execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .expect("a newer build's version");
    drop(raw);
    let error = SqliteJournal::open_read_only(&path, None).expect_err("newer");
    let text = error.to_string();
    assert!(
        text.contains("journal.db") && text.contains("schema version 99 is newer"),
        "{text}"
    );
}

/// The value of sample `name` in Prometheus text, 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_counts_what_it_commits_and_callers_that_waited_for_room() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("journal.db");
    let mut options = async_options(&path);
    options.queue_capacity = 1;
    let journal = metrics::with_local_recorder(&recorder, || SqliteJournal::open(options));
    let journal = Arc::new(journal.expect("open"));
    let mut writers = tokio::task::JoinSet::new();
    for task in 0..8u32 {
        let journal = Arc::clone(&journal);
        writers.spawn(async move {
            for n in 0..50 {
                journal
                    .begin(forwarded(task * 100 + n + 1))
                    .await
                    .expect("begin");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    Arc::into_inner(journal).expect("last handle").close();

    let text = metrics.render();
    assert_eq!(
        sample(&text, "isoswitch_journal_records_total"),
        400.0,
        "{text}"
    );
    // Eight writers into a queue of one, beside a writer that fsyncs.
    assert!(
        sample(&text, "isoswitch_journal_backpressure_total") >= 1.0,
        "{text}"
    );
    let commits = sample(&text, "isoswitch_journal_commit_seconds_count");
    assert!((1.0..=400.0).contains(&commits), "{text}");
    assert_eq!(
        sample(&text, "isoswitch_journal_write_errors_total"),
        0.0,
        "{text}"
    );
    assert!(text.contains("isoswitch_journal_queue_depth"), "{text}");
}

#[tokio::test]
async fn a_failed_commit_is_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let path = data.join("journal.db");
    let journal = metrics::with_local_recorder(&recorder, || open(&path));
    journal.begin(forwarded(1)).await.expect("begin");
    std::fs::remove_dir_all(&data).expect("remove the directory");
    journal
        .begin(forwarded(2))
        .await
        .expect_err("nowhere to write");
    let text = metrics.render();
    assert_eq!(
        sample(&text, "isoswitch_journal_write_errors_total"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "isoswitch_journal_records_total"),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_shift_close_reads_back_from_sqlite_newest_first_and_by_batch() {
    use isoswitch::journal::{ReportedTotals, ShiftCloseNew, ShiftTotals, Tally, TxnId};
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = open(&dir.path().join("journal.db"));
    let close = |batch: &str, last: i64, code: &str| ShiftCloseNew {
        terminal_id: "TERM0001".into(),
        merchant_id: Some("MERCHANT0000001".into()),
        batch: batch.into(),
        closed_at_ms: T0,
        last_txn: TxnId(last),
        terminal_totals: ReportedTotals {
            debits_count: Some(1),
            debits_amount: Some(1_001),
            ..ReportedTotals::default()
        },
        switch_totals: ShiftTotals {
            debits: Tally {
                count: 1,
                amount: 1_000,
            },
            ..ShiftTotals::default()
        },
        response_code: ResponseCode::new(code.as_bytes().try_into().expect("2")).expect("code"),
    };
    let first = journal
        .record_close(close("000001", 3, "95"))
        .await
        .expect("close");
    let second = journal
        .record_close(close("000002", 7, "00"))
        .await
        .expect("close");
    assert!(second > first);
    let last = journal
        .last_close("TERM0001", None)
        .await
        .expect("read")
        .expect("a close");
    assert_eq!(last.close, close("000002", 7, "00"));
    let by_batch = journal
        .last_close("TERM0001", Some("000001"))
        .await
        .expect("read")
        .expect("a close");
    assert_eq!(by_batch.id, first);
    assert_eq!(by_batch.close.terminal_totals.debits_amount, Some(1_001));
    assert!(journal
        .last_close("TERM0002", None)
        .await
        .expect("read")
        .is_none());
}
