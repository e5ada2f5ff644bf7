//! The PostgreSQL journal against a throw-away server: the same records and
//! statistics as the in-memory twin; the shared queue's leases (two
//! instances never hold one item, an expired lease passes on, a late
//! acknowledgement changes nothing); a dead instance's in-doubt
//! transactions recovered by exactly one survivor; and a database that goes
//! away (writes fail, not ready) and comes back (writes resume).
//!
//! Skipped, saying so, without PostgreSQL (`apt-get install postgresql`);
//! under `CI=true` that is a failure.

#[path = "common/servers.rs"]
mod servers;
#[path = "common/wait.rs"]
mod wait;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use isoswitch::iso8583::{Message, Mti, ResponseCode};
use isoswitch::journal::{
    ClearPan, DataKey, DecidedBy, Forward, Journal, MemoryJournal, Outcome, PgJournal, PgOptions,
    PgReader, ReversalFields, ReversalState, SafId, SafKind, SafNew, SafStore, TimeRange, TxnQuery,
    TxnRecord, TxnStart,
};
use servers::PgServer;
use wait::poll_until;

const PAN: &str = "4111111111111111";
const T0: i64 = 1_700_000_000_000;
const KEY: [u8; 32] = [0x11; 32];

fn options(url: &str, instance: &str) -> PgOptions {
    let mut options = PgOptions::new(url, DataKey::from_bytes(KEY), instance);
    options.heartbeat = Duration::from_millis(200);
    options.dead_after = Duration::from_secs(1);
    options.lease = Duration::from_secs(30);
    options
}

async fn open(url: &str, instance: &str) -> PgJournal {
    PgJournal::open(options(url, instance))
        .await
        .expect("opens the PostgreSQL journal")
}

fn request(stan: u32) -> Message {
    let mut m = Message::new(Mti::from_str("0200").expect("mti"));
    for (n, v) in [
        (2, PAN.to_owned()),
        (3, "000000".to_owned()),
        (4, format!("{:012}", 1000 * stan)),
        (11, format!("{stan:06}")),
        (37, format!("RRN{stan:09}")),
        (41, "TERM0001".to_owned()),
        (49, "978".to_owned()),
    ] {
        m.set(n, v).expect("field");
    }
    m
}

/// Purchase `n`, forwarded (with its reversal) when `forwarded`.
fn purchase(n: u32, forwarded: bool) -> TxnStart {
    TxnStart {
        received_at_ms: T0 + i64::from(n) * 1000,
        listener: "pos".into(),
        channel: "pos".into(),
        mti: Mti::from_str("0200").expect("mti"),
        processing_code: Some("000000".into()),
        pan: ClearPan::new(PAN),
        amount: Some(1000 * i64::from(n)),
        currency: Some(if n % 2 == 0 { 978 } else { 840 }),
        terminal_id: Some("TERM0001".into()),
        merchant_id: Some("MERCHANT0000001".into()),
        terminal_stan: Some(format!("{n:06}")),
        terminal_rrn: Some(format!("RRN{n:09}")),
        forward: forwarded.then(|| Forward {
            route: if n % 3 == 0 { "mc" } else { "visa" }.into(),
            issuer: "bank".into(),
            upstream_stan: format!("{:06}", 500_000 + n),
            upstream_rrn: Some(format!("UP{n:010}")),
            reversal: ReversalFields::from_message(&request(n)),
        }),
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

fn reversal(n: u32, txn: Option<isoswitch::journal::TxnId>) -> SafNew {
    SafNew {
        issuer: "bank".into(),
        kind: SafKind::Reversal,
        mti: Mti::from_static("0400"),
        txn_id: txn,
        fields: ReversalFields::from_message(&request(n)),
        created_at_ms: T0,
        expires_at_ms: T0 + 3_600_000,
    }
}

/// The same history written to both stores.
async fn write_history(store: &(impl Journal + SafStore)) {
    for n in 1..=12 {
        let id = store.begin(purchase(n, n % 4 != 0)).await.expect("begin");
        match n % 4 {
            0 => store
                .record_outcome(id, outcome("14", DecidedBy::Switch))
                .await
                .expect("outcome"),
            1 => store
                .record_outcome(id, outcome("00", DecidedBy::Issuer))
                .await
                .expect("outcome"),
            2 => store
                .record_outcome(id, outcome("51", DecidedBy::Issuer))
                .await
                .expect("outcome"),
            _ => {
                store.enqueue(reversal(n, Some(id))).await.expect("enqueue");
            }
        }
        if n == 5 {
            store.cancel(id, T0 + 9_000).await.expect("cancel");
        }
    }
}

/// A record as both stores must show it, ids and the PAN hash (the twin
/// has its own key) aside.
fn comparable(record: &TxnRecord) -> String {
    let mut r = record.clone();
    r.id = isoswitch::journal::TxnId(0);
    r.pan_hash = r.pan_hash.map(|_| [0; 32]);
    for link in &mut r.links {
        link.id = SafId(0);
    }
    format!("{r:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_stats_read_back_as_the_in_memory_twin_holds_them() {
    let Some(server) =
        PgServer::start("records_and_stats_read_back_as_the_in_memory_twin_holds_them")
    else {
        return;
    };
    let pg = open(&server.url(), "switch-a").await;
    let memory = MemoryJournal::new();
    write_history(&pg).await;
    write_history(&memory).await;

    let all = TxnQuery::default();
    let from_pg: Vec<String> = pg
        .find(all.clone())
        .await
        .expect("find")
        .iter()
        .map(comparable)
        .collect();
    let from_memory: Vec<String> = memory
        .find(all)
        .await
        .expect("find")
        .iter()
        .map(comparable)
        .collect();
    assert_eq!(from_pg.len(), 12);
    assert_eq!(from_pg, from_memory);

    for query in [
        TxnQuery {
            rrn: Some("RRN000000007".into()),
            ..TxnQuery::default()
        },
        TxnQuery {
            pan: ClearPan::new(PAN),
            limit: Some(3),
            ..TxnQuery::default()
        },
        TxnQuery {
            approved_only: true,
            ..TxnQuery::default()
        },
        TxnQuery {
            terminal_stan: Some(("TERM0001".into(), "000002".into())),
            ..TxnQuery::default()
        },
    ] {
        let a: Vec<String> = pg
            .find(query.clone())
            .await
            .expect("find")
            .iter()
            .map(comparable)
            .collect();
        let b: Vec<String> = memory
            .find(query.clone())
            .await
            .expect("find")
            .iter()
            .map(comparable)
            .collect();
        assert!(!a.is_empty(), "{query:?} found nothing");
        assert_eq!(a, b, "{query:?}");
    }
    let range = TimeRange {
        since_ms: Some(T0),
        until_ms: Some(T0 + 100_000),
    };
    assert_eq!(
        pg.stats(range).await.expect("stats"),
        memory.stats(range).await.expect("stats")
    );

    // The tools' reader sees the same, without writing anything.
    let reader = PgReader::open(&server.url(), None).await.expect("reader");
    assert_eq!(
        reader.stats(range).await.expect("stats"),
        memory.stats(range).await.expect("stats")
    );
    assert_eq!(
        reader.settlement(range).await.expect("settlement").len(),
        12
    );
    let in_doubt: Vec<_> = pg.in_doubt(i64::MAX).await.expect("in doubt");
    assert!(
        in_doubt.is_empty(),
        "every forwarded one is answered or reversed: {in_doubt:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_lease_the_same_item() {
    let Some(server) = PgServer::start("two_instances_never_lease_the_same_item") else {
        return;
    };
    let a = Arc::new(open(&server.url(), "switch-a").await);
    let b = Arc::new(open(&server.url(), "switch-b").await);
    let mut queued = Vec::new();
    for n in 0..200 {
        let store = if n % 2 == 0 { &a } else { &b };
        queued.push(store.enqueue(reversal(n, None)).await.expect("enqueue"));
    }
    // Both take in small bites at once until the queue has nothing left to lease.
    let take = |store: Arc<PgJournal>| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let due = store.due("bank", T0 + 1, 7).await.expect("due");
                let fresh: Vec<SafId> = due
                    .iter()
                    .map(|i| i.id)
                    .filter(|id| !mine.contains(id))
                    .collect();
                if fresh.is_empty() {
                    return mine;
                }
                for id in fresh {
                    store
                        .mark_attempt(id, T0 + 1, T0 + 10_000)
                        .await
                        .expect("attempt while leased");
                    mine.push(id);
                }
            }
        })
    };
    let (from_a, from_b) = tokio::join!(take(a.clone()), take(b.clone()));
    let (from_a, from_b) = (from_a.expect("a"), from_b.expect("b"));
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both took some: {} / {}",
        from_a.len(),
        from_b.len()
    );
    let mut all: Vec<SafId> = from_a.iter().chain(&from_b).copied().collect();
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "an item was leased by both instances");
    queued.sort();
    assert_eq!(all, queued, "every item was leased by one of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_passes_on_and_the_late_acknowledgement_changes_nothing() {
    let Some(server) =
        PgServer::start("an_expired_lease_passes_on_and_the_late_acknowledgement_changes_nothing")
    else {
        return;
    };
    let a = open(&server.url(), "switch-a").await;
    let b = open(&server.url(), "switch-b").await;
    let txn = a.begin(purchase(1, true)).await.expect("begin");
    let item = a.enqueue(reversal(1, Some(txn))).await.expect("enqueue");
    let lease = 30_000;

    assert_eq!(a.due("bank", T0, 10).await.expect("due").len(), 1);
    a.mark_attempt(item, T0, T0 + 1_000).await.expect("attempt");
    // Due again at T0 + 1 s, but a's lease runs to T0 + 30 s: b gets nothing.
    assert!(b.due("bank", T0 + 2_000, 10).await.expect("due").is_empty());
    // a is gone (no answer); once the lease ends, b takes the item.
    let taken = b.due("bank", T0 + lease + 1, 10).await.expect("due");
    assert_eq!(
        taken.iter().map(|i| (i.id, i.attempts)).collect::<Vec<_>>(),
        [(item, 1)]
    );
    assert!(
        a.mark_attempt(item, T0 + lease + 2, T0 + lease + 5_000)
            .await
            .is_err(),
        "a may not send an item it no longer holds"
    );
    b.mark_attempt(item, T0 + lease + 2, T0 + lease + 5_000)
        .await
        .expect("b sends it");

    // a's answer arrives late: nothing changes; b's closes it.
    a.acknowledge(item, T0 + lease + 3)
        .await
        .expect("a late ack is not an error");
    assert_eq!(
        a.depth("bank").await.expect("depth"),
        1,
        "still pending after the late ack"
    );
    b.acknowledge(item, T0 + lease + 4).await.expect("ack");
    assert_eq!(b.depth("bank").await.expect("depth"), 0);
    b.acknowledge(item, T0 + lease + 5)
        .await
        .expect("a second ack is a no-op");
    let record = &b.find(TxnQuery::default()).await.expect("find")[0];
    assert_eq!(record.reversal, ReversalState::Acknowledged);
    assert_eq!(record.links.len(), 1);
    assert_eq!(record.links[0].attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_s_in_doubt_transactions_are_recovered_by_one_survivor() {
    let Some(server) =
        PgServer::start("a_dead_instance_s_in_doubt_transactions_are_recovered_by_one_survivor")
    else {
        return;
    };
    let url = server.url();
    let dead = open(&url, "switch-a").await;
    let held = dead.begin(purchase(1, true)).await.expect("begin");
    let answered = dead.begin(purchase(2, true)).await.expect("begin");
    dead.record_outcome(answered, outcome("00", DecidedBy::Issuer))
        .await
        .expect("outcome");
    let b = open(&url, "switch-b").await;
    let c = open(&url, "switch-c").await;
    // While a beats, its in-flight request is its own, not the survivors'.
    assert!(b.in_doubt(i64::MAX).await.expect("in doubt").is_empty());
    drop(dead);

    let recovered = poll_until(
        "switch-a's heartbeat goes stale and a survivor claims it",
        Duration::from_secs(10),
        || async {
            let (from_b, from_c) = tokio::join!(b.in_doubt(0), c.in_doubt(0));
            let (from_b, from_c) = (from_b.expect("b"), from_c.expect("c"));
            (!from_b.is_empty() || !from_c.is_empty()).then_some((from_b, from_c))
        },
    )
    .await;
    let (from_b, from_c) = recovered;
    let ids: Vec<_> = from_b.iter().chain(&from_c).map(|d| d.id).collect();
    assert_eq!(
        ids,
        [held],
        "only the unanswered one, by exactly one survivor"
    );
    let (winner, loser) = if from_b.is_empty() {
        (&c, &b)
    } else {
        (&b, &c)
    };
    assert_eq!(from_b.len() + from_c.len(), 1);
    assert!(loser.in_doubt(i64::MAX).await.expect("in doubt").is_empty());
    assert_eq!(
        from_b
            .iter()
            .chain(&from_c)
            .next()
            .map(|d| d.reversal.get(2)),
        Some(Some(PAN.as_bytes()))
    );
    // Once its reversal is queued it is in doubt no more, for anyone.
    winner
        .enqueue(reversal(1, Some(held)))
        .await
        .expect("enqueue");
    assert!(winner
        .in_doubt(i64::MAX)
        .await
        .expect("in doubt")
        .is_empty());
    assert!(loser.in_doubt(i64::MAX).await.expect("in doubt").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_while_the_database_is_down_and_resume_when_it_is_back() {
    let Some(mut server) =
        PgServer::start("writes_fail_while_the_database_is_down_and_resume_when_it_is_back")
    else {
        return;
    };
    let journal = open(&server.url(), "switch-a").await;
    journal
        .begin(purchase(1, true))
        .await
        .expect("begin while up");
    assert!(journal.health().ready);
    server.stop();
    let refused = journal.begin(purchase(2, true)).await;
    assert!(
        refused.is_err(),
        "a write to a stopped database succeeded: {refused:?}"
    );
    assert!(
        !journal.health().ready,
        "not ready while the database is down"
    );
    let error = journal
        .health()
        .last_error
        .map(|(text, _)| text)
        .unwrap_or_default();
    assert!(
        error.contains("127.0.0.1"),
        "the error names the database: {error}"
    );

    server.restart();
    poll_until("writes succeed again", Duration::from_secs(20), || async {
        journal.begin(purchase(3, true)).await.ok()
    })
    .await;
    assert!(journal.health().ready);
    let found = journal.find(TxnQuery::default()).await.expect("find");
    let stans: Vec<_> = found
        .iter()
        .filter_map(|r| r.terminal_stan.clone())
        .collect();
    assert!(
        stans.contains(&"000001".to_owned()) && stans.contains(&"000003".to_owned()),
        "{stans:?}"
    );
    assert!(
        !stans.contains(&"000002".to_owned()),
        "the refused write is not there: {stans:?}"
    );
}

#[test]
fn journal_migrate_creates_the_schema_once_and_the_tools_refuse_a_stranger() {
    let Some(server) =
        PgServer::start("journal_migrate_creates_the_schema_once_and_the_tools_refuse_a_stranger")
    else {
        return;
    };
    let isoswitch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_isoswitch"))
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .expect("isoswitch runs")
    };
    let url = server.url();
    // Not a journal yet: the read-only tools say so rather than create it.
    let stats = isoswitch(&["journal", "stats", "--db", &url]);
    assert!(!stats.status.success());
    let error = String::from_utf8_lossy(&stats.stderr);
    assert!(error.contains("not an isoswitch journal"), "{error}");

    let first = isoswitch(&["journal", "migrate", "--db", &url]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains(": 1 migration(s) applied"));
    let again = isoswitch(&["journal", "migrate", "--db", &url]);
    assert!(String::from_utf8_lossy(&again.stdout).contains(": 0 migration(s) applied"));
    let stats = isoswitch(&["journal", "stats", "--db", &url]);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_closes_read_back_newest_first_and_purge_keeps_what_the_queue_needs() {
    let Some(server) =
        PgServer::start("shift_closes_read_back_newest_first_and_purge_keeps_what_the_queue_needs")
    else {
        return;
    };
    let journal = open(&server.url(), "switch-a").await;
    let first = journal.begin(purchase(1, true)).await.expect("begin");
    let close = |batch: &str, code: &str| isoswitch::journal::ShiftCloseNew {
        terminal_id: "TERM0001".into(),
        merchant_id: Some("MERCHANT0000001".into()),
        batch: batch.into(),
        closed_at_ms: T0 + 10_000,
        last_txn: first,
        terminal_totals: isoswitch::journal::ReportedTotals::default(),
        switch_totals: isoswitch::journal::ShiftTotals::default(),
        response_code: ResponseCode::new(code.as_bytes().try_into().expect("two")).expect("code"),
    };
    let one = journal
        .record_close(close("001", "00"))
        .await
        .expect("close");
    let two = journal
        .record_close(close("002", "95"))
        .await
        .expect("close");
    assert!(two > one);
    let newest = journal
        .last_close("TERM0001", None)
        .await
        .expect("read")
        .expect("a close");
    assert_eq!((newest.id, newest.close.batch.as_str()), (two, "002"));
    assert_eq!(newest.close, close("002", "95"));
    let of_batch = journal
        .last_close("TERM0001", Some("001"))
        .await
        .expect("read")
        .expect("one");
    assert_eq!(of_batch.id, one);
    assert!(journal
        .last_close("TERM0002", None)
        .await
        .expect("read")
        .is_none());

    // Old transactions go, except one a pending queue item still names.
    let queued = journal.begin(purchase(2, true)).await.expect("begin");
    journal
        .enqueue(reversal(2, Some(queued)))
        .await
        .expect("enqueue");
    let purged = journal.purge(T0 + 100_000).await.expect("purge");
    assert_eq!((purged.transactions, purged.queue_items), (1, 0));
    let left: Vec<_> = journal.find(TxnQuery::default()).await.expect("find");
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [queued]);
}
