//! The PostgreSQL writer: one task draining a bounded channel, committing
//! everything queued (up to a batch) in one transaction — the new
//! transactions as multi-row INSERTs, every other change pipelined on the
//! same connection — and then answering every caller in it: group commit,
//! one commit (and one WAL flush on the server) for many records.
//!
//! Queue changes carry this instance's lease: an attempt, acknowledgement or
//! failure of an item whose lease another instance now holds changes nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Pool, Transaction};
use futures_util::future::join_all;
use metrics::{counter, histogram, Counter, Histogram};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use crate::journal::record::{Outcome, Purged, ReversalState};
use crate::journal::shift::ShiftCloseNew;
use crate::journal::{Cause, HealthCell, JournalError};

pub(crate) use crate::journal::rows::{SafRow, TxnRow};

/// A shift close as stored: the totals already JSON.
#[derive(Debug)]
pub(crate) struct CloseRow {
    pub close: ShiftCloseNew,
    pub terminal_totals: String,
    pub switch_totals: String,
}

/// One change to storage.
#[derive(Debug)]
pub(crate) enum Write {
    Begin(Box<TxnRow>),
    Outcome { id: i64, outcome: Outcome },
    Reversal { id: i64, state: ReversalState },
    Enqueue(Box<SafRow>),
    Attempt { id: i64, at_ms: i64, next_ms: i64 },
    Acknowledge { id: i64, at_ms: i64 },
    Fail { id: i64, at_ms: i64 },
    Purge { before_ms: i64, chunk: i64 },
    Cancel { id: i64, at_ms: i64 },
    Close(Box<CloseRow>),
}

impl Write {
    fn op(&self) -> &'static str {
        match self {
            Write::Begin(_) => "begin",
            Write::Outcome { .. } => "record_outcome",
            Write::Reversal { .. } => "set_reversal",
            Write::Enqueue(_) => "enqueue",
            Write::Attempt { .. } => "mark_attempt",
            Write::Acknowledge { .. } => "acknowledge",
            Write::Fail { .. } => "fail",
            Write::Purge { .. } => "purge",
            Write::Cancel { .. } => "cancel",
            Write::Close(_) => "record_close",
        }
    }
}

/// What a committed write did, for the caller waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    Purged(Purged),
    Inserted(i64),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub write: Write,
    pub ack: Option<oneshot::Sender<Result<Applied, JournalError>>>,
}

/// How often a persisting write failure is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Rows per multi-row INSERT: 23 parameters each, within PostgreSQL's 65 535.
const INSERT_ROWS: usize = 2_000;
const TXN_INSERT_COLUMNS: &str = "id, received_at_ms, listener, channel, mti, processing_code,
    pan_masked, pan_last4, pan_hash, amount, currency, terminal_id, merchant_id, terminal_stan,
    terminal_rrn, route, issuer, upstream_stan, upstream_rrn, fields_nonce, fields_sealed,
    original_id, instance_id";
const TXN_INSERT_PARAMS: usize = 23;

/// Counted when an acknowledgement or failure finds the item's lease held by
/// another instance (or the item already closed): a late answer, changing nothing.
pub(crate) fn late_close_counter() -> Counter {
    counter!("isoswitch_saf_late_closes_total")
}

pub(crate) struct Writer {
    pub name: Arc<str>,
    pub pool: Pool,
    pub instance: Arc<str>,
    pub lease_ms: i64,
    pub max_batch: usize,
    pub health: Arc<HealthCell>,
    pub last_logged: Option<Instant>,
    pub commit_seconds: Histogram,
    pub records: Counter,
    pub write_errors: Counter,
    pub late_closes: Counter,
}

impl Writer {
    pub(crate) fn new(
        name: Arc<str>,
        pool: Pool,
        instance: Arc<str>,
        lease_ms: i64,
        max_batch: usize,
        health: Arc<HealthCell>,
    ) -> Writer {
        Writer {
            name,
            pool,
            instance,
            lease_ms,
            max_batch: max_batch.max(1),
            health,
            last_logged: None,
            commit_seconds: histogram!("isoswitch_journal_commit_seconds"),
            records: counter!("isoswitch_journal_records_total"),
            write_errors: counter!("isoswitch_journal_write_errors_total"),
            late_closes: late_close_counter(),
        }
    }

    /// Runs until every sender is gone, committing what was queued.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = requests.recv().await {
            batch.push(first);
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch).await;
        }
    }

    fn error(&self, op: &'static str, cause: Cause) -> JournalError {
        JournalError::Write {
            path: self.name.as_ref().into(),
            op,
            cause,
        }
    }

    async fn commit(&mut self, batch: &mut Vec<Request>) {
        let started = Instant::now();
        match self.try_commit(batch).await {
            Ok(results) => {
                self.commit_seconds.record(started.elapsed());
                self.records.increment(batch.len() as u64);
                self.health.succeeded();
                for (request, result) in batch.drain(..).zip(results) {
                    if let Some(ack) = request.ack {
                        let _ = ack.send(result);
                    }
                }
            }
            Err(error) => {
                self.write_errors.increment(1);
                self.health.failed(&error);
                if self
                    .last_logged
                    .map_or(true, |at| at.elapsed() >= LOG_INTERVAL)
                {
                    self.last_logged = Some(Instant::now());
                    tracing::error!(%error, records = batch.len(), "journal write failed; callers told");
                }
                for request in batch.drain(..) {
                    if let Some(ack) = request.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
            }
        }
    }

    /// One transaction for the whole batch. The outer error fails them all;
    /// an inner one (an unknown id) is that caller's alone.
    async fn try_commit(
        &self,
        batch: &[Request],
    ) -> Result<Vec<Result<Applied, JournalError>>, JournalError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| self.error("connect", Arc::new(e)))?;
        let failed = |op: &'static str| move |e: tokio_postgres::Error| self.error(op, Arc::new(e));
        let tx = client
            .transaction()
            .await
            .map_err(failed("begin transaction"))?;
        let begins: Vec<&TxnRow> = batch
            .iter()
            .filter_map(|r| match &r.write {
                Write::Begin(row) => Some(&**row),
                _ => None,
            })
            .collect();
        for rows in begins.chunks(INSERT_ROWS) {
            insert_txns(&tx, rows, &self.instance)
                .await
                .map_err(failed("begin"))?;
        }
        let statements = Statements::prepare(&tx).await.map_err(failed("prepare"))?;
        // Created in order and first polled in order: the statements go out
        // pipelined, in the order the callers wrote them.
        let applied = join_all(batch.iter().map(|request| {
            apply(
                &tx,
                &statements,
                &self.instance,
                self.lease_ms,
                &request.write,
            )
        }))
        .await;
        let mut results = Vec::with_capacity(batch.len());
        for (request, result) in batch.iter().zip(applied) {
            let result = result.map_err(failed(request.write.op()))?;
            results.push(result.map(|(applied, late)| {
                if late {
                    self.late_closes.increment(1);
                    tracing::info!(
                        op = request.write.op(),
                        "queue item closed by another instance or its lease lost; this late close changed nothing"
                    );
                }
                applied
            }));
        }
        tx.commit().await.map_err(failed("commit"))?;
        Ok(results)
    }
}

/// The new transactions of a batch as one INSERT.
async fn insert_txns(
    tx: &Transaction<'_>,
    rows: &[&TxnRow],
    instance: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut sql = format!("INSERT INTO txn ({TXN_INSERT_COLUMNS}) VALUES ");
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
        Vec::with_capacity(rows.len() * TXN_INSERT_PARAMS);
    for (n, row) in rows.iter().enumerate() {
        if n > 0 {
            sql.push(',');
        }
        sql.push('(');
        for p in 0..TXN_INSERT_PARAMS {
            if p > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", n * TXN_INSERT_PARAMS + p + 1));
        }
        sql.push(')');
        let r = &row.record;
        let (nonce, sealed) = row
            .fields
            .as_ref()
            .map(|s| (s.nonce.to_vec(), s.ciphertext.clone()))
            .unzip();
        params.push(Box::new(r.id.0));
        params.push(Box::new(r.received_at_ms));
        params.push(Box::new(r.listener.clone()));
        params.push(Box::new(r.channel.clone()));
        params.push(Box::new(r.mti.as_str().to_owned()));
        params.push(Box::new(r.processing_code.clone()));
        params.push(Box::new(r.pan_masked.clone()));
        params.push(Box::new(row.pan_last4.clone()));
        params.push(Box::new(r.pan_hash.map(|h| h.to_vec())));
        params.push(Box::new(r.amount));
        params.push(Box::new(r.currency.map(i32::from)));
        params.push(Box::new(r.terminal_id.clone()));
        params.push(Box::new(r.merchant_id.clone()));
        params.push(Box::new(r.terminal_stan.clone()));
        params.push(Box::new(r.terminal_rrn.clone()));
        params.push(Box::new(r.route.clone()));
        params.push(Box::new(r.issuer.clone()));
        params.push(Box::new(r.upstream_stan.clone()));
        params.push(Box::new(r.upstream_rrn.clone()));
        params.push(Box::new(nonce));
        params.push(Box::new(sealed));
        params.push(Box::new(r.original_id.map(|o| o.0)));
        params.push(Box::new(instance.to_owned()));
    }
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    tx.execute(sql.as_str(), &refs).await?;
    Ok(())
}

/// The statements every batch may use, prepared once per connection.
struct Statements {
    outcome: Statement,
    cancel: Statement,
    reversal: Statement,
    close: Statement,
    enqueue: Statement,
    attempt: Statement,
    acknowledge: Statement,
    fail: Statement,
    purge_saf: Statement,
    purge_txn: Statement,
}

/// Closes a leased item and moves its transaction's reversal along, in one
/// statement; counts the items changed.
fn close_item_sql(state: &str) -> String {
    format!(
        "WITH s AS (
            UPDATE saf SET state = '{state}', closed_at_ms = $2, fields_nonce = NULL,
                fields_sealed = NULL
            WHERE id = $1 AND state = 'pending' AND leased_by = $3
            RETURNING txn_id, kind),
         t AS (UPDATE txn SET reversal = '{state}' FROM s
            WHERE txn.id = s.txn_id AND s.kind = 'reversal')
         SELECT count(*) FROM s"
    )
}

impl Statements {
    async fn prepare(tx: &Transaction<'_>) -> Result<Statements, tokio_postgres::Error> {
        let acknowledge = close_item_sql("acknowledged");
        let fail = close_item_sql("failed");
        let (outcome, cancel, reversal, close, enqueue, attempt, acknowledge, fail, purge_saf, purge_txn) = futures_util::try_join!(
            tx.prepare_cached(
                "UPDATE txn SET answered_at_ms = $2, response_code = $3, decided_by = $4,
                    auth_code = $5, latency_us = $6, reason = $7 WHERE id = $1"
            ),
            tx.prepare_cached(
                "UPDATE txn SET cancelled_at_ms = coalesce(cancelled_at_ms, $2) WHERE id = $1"
            ),
            tx.prepare_cached("UPDATE txn SET reversal = $2 WHERE id = $1"),
            tx.prepare_cached(
                "INSERT INTO shift_close (terminal_id, merchant_id, batch, closed_at_ms,
                    last_txn_id, terminal_totals, switch_totals, response_code)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id"
            ),
            // A second reversal of a transaction is ignored, not refused.
            tx.prepare_cached(
                "WITH ins AS (
                    INSERT INTO saf (id, issuer, kind, txn_id, created_at_ms, next_attempt_at_ms,
                        expires_at_ms, fields_nonce, fields_sealed, mti)
                    VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)
                    ON CONFLICT (txn_id) WHERE kind = 'reversal' DO NOTHING
                    RETURNING txn_id, kind),
                 t AS (UPDATE txn SET reversal = 'queued' FROM ins
                    WHERE txn.id = ins.txn_id AND ins.kind = 'reversal')
                 SELECT count(*) FROM ins"
            ),
            // `sent` never takes back a final state. The lease runs at least
            // until the next attempt is due, so no other instance sends the
            // item while this one waits for its answer.
            tx.prepare_cached(
                "WITH s AS (
                    UPDATE saf SET attempts = attempts + 1, last_attempt_at_ms = $2,
                        next_attempt_at_ms = $3, lease_until_ms = greatest($3::BIGINT, $2::BIGINT + $5::BIGINT)
                    WHERE id = $1 AND state = 'pending' AND leased_by = $4
                    RETURNING txn_id, kind),
                 t AS (UPDATE txn SET reversal = 'sent' FROM s
                    WHERE txn.id = s.txn_id AND s.kind = 'reversal'
                      AND txn.reversal NOT IN ('acknowledged', 'failed'))
                 SELECT count(*) FROM s"
            ),
            tx.prepare_cached(&acknowledge),
            tx.prepare_cached(&fail),
            tx.prepare_cached(
                "DELETE FROM saf WHERE id IN (
                    SELECT id FROM saf WHERE state != 'pending' AND closed_at_ms < $1 LIMIT $2
                    FOR UPDATE SKIP LOCKED)"
            ),
            tx.prepare_cached(
                "DELETE FROM txn WHERE id IN (
                    SELECT id FROM txn WHERE received_at_ms < $1
                        AND NOT EXISTS (SELECT 1 FROM saf WHERE saf.txn_id = txn.id)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
        )?;
        Ok(Statements {
            outcome,
            cancel,
            reversal,
            close,
            enqueue,
            attempt,
            acknowledge,
            fail,
            purge_saf,
            purge_txn,
        })
    }
}

/// What a write did, and whether it was a late close (changed nothing
/// because the lease is another's or the item is closed); `Ok(Err(..))` when
/// the row to change is not there.
async fn apply(
    tx: &Transaction<'_>,
    st: &Statements,
    instance: &str,
    lease_ms: i64,
    write: &Write,
) -> Result<Result<(Applied, bool), JournalError>, tokio_postgres::Error> {
    let unknown = |what: &'static str, id: i64| {
        Ok(Err(JournalError::Unknown {
            op: write.op(),
            what,
            id,
        }))
    };
    let done = |changed: u64, what: &'static str, id: i64| {
        if changed > 0 {
            Ok(Ok((Applied::Done, false)))
        } else {
            unknown(what, id)
        }
    };
    let count = |row: tokio_postgres::Row| row.get::<_, i64>(0);
    match write {
        Write::Begin(_) => Ok(Ok((Applied::Done, false))),
        Write::Outcome { id, outcome } => {
            let latency = i64::try_from(outcome.latency_us).unwrap_or(i64::MAX);
            let changed = tx
                .execute(
                    &st.outcome,
                    &[
                        id,
                        &outcome.answered_at_ms,
                        &outcome.response_code.as_str(),
                        &outcome.decided_by.as_str(),
                        &outcome.auth_code,
                        &latency,
                        &outcome.reason,
                    ],
                )
                .await?;
            done(changed, "transaction", *id)
        }
        Write::Cancel { id, at_ms } => {
            let changed = tx.execute(&st.cancel, &[id, at_ms]).await?;
            done(changed, "transaction", *id)
        }
        Write::Reversal { id, state } => {
            let changed = tx.execute(&st.reversal, &[id, &state.as_str()]).await?;
            done(changed, "transaction", *id)
        }
        Write::Close(row) => {
            let (close, terminal, switch) = (&row.close, &row.terminal_totals, &row.switch_totals);
            let row = tx
                .query_one(
                    &st.close,
                    &[
                        &close.terminal_id,
                        &close.merchant_id,
                        &close.batch,
                        &close.closed_at_ms,
                        &close.last_txn.0,
                        terminal,
                        switch,
                        &close.response_code.as_str(),
                    ],
                )
                .await?;
            Ok(Ok((Applied::Inserted(row.get::<_, i64>(0)), false)))
        }
        Write::Enqueue(row) => {
            tx.query_one(
                &st.enqueue,
                &[
                    &row.id,
                    &row.issuer,
                    &row.kind.as_str(),
                    &row.txn_id,
                    &row.created_at_ms,
                    &row.expires_at_ms,
                    &&row.fields.nonce[..],
                    &row.fields.ciphertext,
                    &row.mti,
                ],
            )
            .await?;
            Ok(Ok((Applied::Done, false)))
        }
        Write::Attempt { id, at_ms, next_ms } => {
            let row = tx
                .query_one(&st.attempt, &[id, at_ms, next_ms, &instance, &lease_ms])
                .await?;
            done(
                u64::try_from(count(row)).unwrap_or(0),
                "pending queue item leased here",
                *id,
            )
        }
        Write::Acknowledge { id, at_ms } | Write::Fail { id, at_ms } => {
            let statement = match write {
                Write::Acknowledge { .. } => &st.acknowledge,
                _ => &st.fail,
            };
            let row = tx.query_one(statement, &[id, at_ms, &instance]).await?;
            Ok(Ok((Applied::Done, count(row) == 0)))
        }
        Write::Purge { before_ms, chunk } => {
            let queue_items = tx.execute(&st.purge_saf, &[before_ms, chunk]).await?;
            let transactions = tx.execute(&st.purge_txn, &[before_ms, chunk]).await?;
            Ok(Ok((
                Applied::Purged(Purged {
                    transactions,
                    queue_items,
                }),
                false,
            )))
        }
    }
}
