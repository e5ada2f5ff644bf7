//! The one SQLite writer: a thread draining a bounded channel, committing
//! everything queued (up to a batch) in one transaction and then acknowledging
//! every caller in it — group commit, one fsync for many records. With a
//! syncer, the fsync and the acknowledgements move to its thread.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::checkpointer::{self, Checkpointer};
use super::syncer::{Answer, Syncer};
use super::telemetry::JournalMetrics;
use super::{open_connection, FileIdentity};
use crate::journal::card_data::Sealed;
use crate::journal::record::{Outcome, Purged, ReversalState};
use crate::journal::recurring::ScheduleRecord;
use crate::journal::shift::ShiftCloseNew;
use crate::journal::{HealthCell, JournalError};

pub(crate) use crate::journal::rows::{SafRow, TxnRow};

/// A card on file as stored: its number sealed.
#[derive(Debug)]
pub(crate) struct CardRow {
    pub token: String,
    pub terminal_id: String,
    pub merchant_id: String,
    pub brand: String,
    pub last4: String,
    pub expiry: String,
    pub created_at_ms: i64,
    pub payment_id: i64,
    pub pan: Sealed,
}

/// One change to storage.
#[derive(Debug)]
pub(crate) enum Write {
    Begin(Box<TxnRow>),
    Outcome {
        id: i64,
        outcome: Outcome,
    },
    Reversal {
        id: i64,
        state: ReversalState,
    },
    Enqueue(Box<SafRow>),
    Attempt {
        id: i64,
        at_ms: i64,
        next_ms: i64,
    },
    Acknowledge {
        id: i64,
        at_ms: i64,
    },
    Fail {
        id: i64,
        at_ms: i64,
    },
    /// One chunk of retention: at most `chunk` rows of each table.
    Purge {
        before_ms: i64,
        chunk: usize,
    },
    Cancel {
        id: i64,
        at_ms: i64,
    },
    Close(Box<ShiftCloseNew>),
    /// A card on file, its number sealed.
    SaveCard(Box<CardRow>),
    /// A schedule, inserted or replaced whole.
    SaveSchedule(Box<ScheduleRecord>),
    /// An idempotency key's first result; a key already there keeps its own.
    Remember {
        scope: String,
        key: String,
        at_ms: i64,
        result: String,
    },
}

impl Write {
    /// The operation's name in errors.
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
            Write::Remember { .. } => "remember",
            Write::SaveCard(_) => "save_card",
            Write::SaveSchedule(_) => "save_schedule",
        }
    }
}

/// What a committed write did, for the caller waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    Done,
    Purged(Purged),
    /// The id of the row inserted.
    Inserted(i64),
}

/// A write and, in commit mode, who waits for it to be committed.
#[derive(Debug)]
pub(crate) struct Request {
    pub write: Write,
    pub ack: Option<oneshot::Sender<Result<Applied, JournalError>>>,
}

/// How often a persisting write failure is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The writer thread's state: its connection (reopened after a failure) and
/// the file it belongs to.
pub(crate) struct Writer {
    pub path: PathBuf,
    pub conn: Option<(Connection, FileIdentity)>,
    /// Copies the log back into the database off this thread.
    pub checkpointer: Checkpointer,
    pub max_batch: usize,
    pub health: Arc<HealthCell>,
    pub metrics: JournalMetrics,
    pub last_logged: Option<Instant>,
    /// When set, commits do not sync the log: this thread does, and answers.
    pub syncer: Option<Syncer>,
    /// The connection's WAL, for the syncer; reset with the connection.
    pub wal: Option<Arc<File>>,
}

impl Writer {
    /// Runs until every sender is gone, then returns, closing the connection.
    pub(crate) fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = requests.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.set(requests.len() as f64);
            self.commit(&mut batch);
        }
        // Every committed batch is synced and answered before the connection closes.
        if let Some(syncer) = &mut self.syncer {
            syncer.finish();
        }
    }

    fn drop_connection(&mut self) {
        self.conn = None;
        self.wal = None;
    }

    /// The open WAL of the connection, for the syncer.
    fn wal(&mut self) -> Result<Arc<File>, JournalError> {
        if let Some(wal) = &self.wal {
            return Ok(Arc::clone(wal));
        }
        let mut path = self.path.clone().into_os_string();
        path.push("-wal");
        let wal = File::open(&path)
            .map(Arc::new)
            .map_err(|e| JournalError::Write {
                path: self.path.clone(),
                op: "open the log to sync it",
                cause: Arc::new(e),
            })?;
        self.wal = Some(Arc::clone(&wal));
        Ok(wal)
    }

    /// Commits `batch` and answers each caller in it; on failure every caller
    /// gets the error and the next batch starts on a fresh connection.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        if self.syncer.as_ref().is_some_and(Syncer::take_failure) {
            self.drop_connection();
        }
        let started = Instant::now();
        let committed = self
            .try_commit(batch)
            .inspect(|_| self.after_commit())
            .and_then(|results| match self.syncer.is_some() {
                true => self.wal().map(|wal| (results, Some(wal))),
                false => Ok((results, None)),
            });
        match committed {
            Ok((results, wal)) => {
                let records = batch.len();
                let answers: Vec<Answer> = batch
                    .drain(..)
                    .zip(results)
                    .filter_map(|(request, result)| request.ack.map(|ack| (ack, result)))
                    .collect();
                if let (Some(syncer), Some(wal)) = (&self.syncer, wal) {
                    syncer.sync_then_answer(wal, &self.path, answers, records, started);
                    return;
                }
                self.metrics.commit_seconds.record(started.elapsed());
                self.metrics.records.increment(records as u64);
                self.health.succeeded();
                for (ack, result) in answers {
                    let _ = ack.send(result);
                }
            }
            Err(error) => {
                self.metrics.write_errors.increment(1);
                self.drop_connection();
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

    /// Hands the log to the checkpointer, or, if it has grown past what the
    /// checkpointer should have kept it to, checkpoints here. What was
    /// committed stays committed either way: a failed checkpoint only
    /// leaves the log longer, and is logged.
    fn after_commit(&mut self) {
        let pages = checkpointer::pages_after_commit();
        if pages < checkpointer::WRITER_CHECKPOINT_PAGES {
            self.checkpointer.after_commit(pages);
            return;
        }
        let Some((conn, _)) = &self.conn else {
            return;
        };
        if let Err(error) = checkpointer::checkpoint(conn) {
            if self
                .last_logged
                .map_or(true, |at| at.elapsed() >= LOG_INTERVAL)
            {
                self.last_logged = Some(Instant::now());
                tracing::warn!(path = %self.path.display(), %error, pages, "journal checkpoint in the writer failed; the log keeps growing");
            }
        }
    }

    /// One transaction for the whole batch. The outer error fails them all; an
    /// inner one (an unknown id) is that caller's alone.
    fn try_commit(
        &mut self,
        batch: &[Request],
    ) -> Result<Vec<Result<Applied, JournalError>>, JournalError> {
        let path = self.path.clone();
        let failed = |op: &'static str| {
            let path = path.clone();
            move |e: rusqlite::Error| JournalError::Write {
                path,
                op,
                cause: Arc::new(e),
            }
        };
        let conn = self.connection()?;
        let tx = conn.transaction().map_err(failed("begin transaction"))?;
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            let op = request.write.op();
            results.push(apply(&tx, &request.write).map_err(failed(op))?);
        }
        tx.commit().map_err(failed("commit"))?;
        Ok(results)
    }

    /// The open connection, if the file under the path is still the one it
    /// opened; otherwise (removed or replaced) a fresh one.
    fn connection(&mut self) -> Result<&mut Connection, JournalError> {
        let current = FileIdentity::of(&self.path);
        if self
            .conn
            .as_ref()
            .is_some_and(|(_, id)| Some(*id) != current)
        {
            tracing::warn!(path = %self.path.display(), "journal file removed or replaced; reopening");
            self.drop_connection();
        }
        if self.conn.is_none() {
            let (conn, identity) = open_connection(&self.path, true)?;
            leave_sync_to_syncer(&conn, self.syncer.is_some()).map_err(|e| JournalError::Open {
                path: self.path.clone(),
                cause: Arc::new(e),
            })?;
            self.conn = Some((conn, identity));
        }
        let (conn, _) = self.conn.as_mut().expect("a connection was just opened");
        Ok(conn)
    }
}

/// With a syncer, commits stop syncing the log (`synchronous = NORMAL`): the
/// syncer does it before anyone is told. Checkpoints still sync as before.
pub(crate) fn leave_sync_to_syncer(conn: &Connection, syncer: bool) -> rusqlite::Result<()> {
    if syncer {
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    }
    Ok(())
}

/// `Ok(Err(..))` when the row to change is not there.
fn apply(tx: &Transaction<'_>, write: &Write) -> rusqlite::Result<Result<Applied, JournalError>> {
    let changed = match write {
        Write::Begin(row) => insert_txn(tx, row)?,
        Write::Outcome { id, outcome } => tx
            .prepare_cached(
                "UPDATE txn SET answered_at_ms = ?2, response_code = ?3, decided_by = ?4,
                    auth_code = ?5, latency_us = ?6, reason = ?7 WHERE id = ?1",
            )?
            .execute(params![
                id,
                outcome.answered_at_ms,
                outcome.response_code.as_str(),
                outcome.decided_by.as_str(),
                outcome.auth_code,
                i64::try_from(outcome.latency_us).unwrap_or(i64::MAX),
                outcome.reason,
            ])?,
        Write::Cancel { id, at_ms } => tx
            .prepare_cached(
                "UPDATE txn SET cancelled_at_ms = coalesce(cancelled_at_ms, ?2) WHERE id = ?1",
            )?
            .execute(params![id, at_ms])?,
        Write::Close(close) => {
            let totals = |t: Result<String, serde_json::Error>| {
                t.map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            };
            tx.prepare_cached(
                "INSERT INTO shift_close (terminal_id, merchant_id, batch, closed_at_ms,
                    last_txn_id, terminal_totals, switch_totals, response_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                close.terminal_id,
                close.merchant_id,
                close.batch,
                close.closed_at_ms,
                close.last_txn.0,
                totals(serde_json::to_string(&close.terminal_totals))?,
                totals(serde_json::to_string(&close.switch_totals))?,
                close.response_code.as_str(),
            ])?;
            return Ok(Ok(Applied::Inserted(tx.last_insert_rowid())));
        }
        Write::Reversal { id, state } => tx
            .prepare_cached("UPDATE txn SET reversal = ?2 WHERE id = ?1")?
            .execute(params![id, state.as_str()])?,
        Write::Enqueue(row) => {
            // A second reversal of a transaction is ignored, not refused:
            // whoever queues it wants one reversal, and there is one.
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO saf (id, issuer, kind, txn_id, created_at_ms, next_attempt_at_ms,
                        expires_at_ms, fields_nonce, fields_sealed, mti)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (txn_id) WHERE kind = 'reversal' DO NOTHING",
                )?
                .execute(params![
                    row.id,
                    row.issuer,
                    row.kind.as_str(),
                    row.txn_id,
                    row.created_at_ms,
                    row.expires_at_ms,
                    &row.fields.nonce[..],
                    row.fields.ciphertext,
                    row.mti,
                ])?;
            if inserted > 0 {
                reversal_follows(tx, row.id, ReversalState::Queued)?;
            }
            return Ok(Ok(Applied::Done));
        }
        Write::Attempt { id, at_ms, next_ms } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE saf SET attempts = attempts + 1, last_attempt_at_ms = ?2,
                        next_attempt_at_ms = ?3 WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, at_ms, next_ms])?;
            if changed > 0 {
                reversal_follows(tx, *id, ReversalState::Sent)?;
            }
            changed
        }
        // A closed item no longer needs its card data.
        Write::Acknowledge { id, at_ms } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE saf SET state = 'acknowledged', closed_at_ms = ?2, fields_nonce = NULL,
                        fields_sealed = NULL WHERE id = ?1",
                )?
                .execute(params![id, at_ms])?;
            if changed > 0 {
                reversal_follows(tx, *id, ReversalState::Acknowledged)?;
            }
            changed
        }
        Write::Fail { id, at_ms } => {
            let changed = tx
                .prepare_cached(
                    "UPDATE saf SET state = 'failed', closed_at_ms = ?2, fields_nonce = NULL,
                        fields_sealed = NULL WHERE id = ?1 AND state = 'pending'",
                )?
                .execute(params![id, at_ms])?;
            if changed > 0 {
                reversal_follows(tx, *id, ReversalState::Failed)?;
            }
            changed
        }
        Write::Purge { before_ms, chunk } => {
            return purge_chunk(tx, *before_ms, *chunk).map(|p| Ok(Applied::Purged(p)))
        }
        Write::Remember {
            scope,
            key,
            at_ms,
            result,
        } => {
            tx.prepare_cached(
                "INSERT INTO idempotency (scope, key, created_at_ms, result)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (scope, key) DO NOTHING",
            )?
            .execute(params![scope, key, at_ms, result])?;
            return Ok(Ok(Applied::Done));
        }
        Write::SaveCard(card) => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO vault_card (token, terminal_id, merchant_id, brand, last4,
                    expiry, created_at_ms, payment_id, pan_nonce, pan_sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                card.token,
                card.terminal_id,
                card.merchant_id,
                card.brand,
                card.last4,
                card.expiry,
                card.created_at_ms,
                card.payment_id,
                &card.pan.nonce[..],
                card.pan.ciphertext,
            ])?;
            return Ok(Ok(Applied::Done));
        }
        Write::SaveSchedule(schedule) => {
            tx.prepare_cached(
                "INSERT INTO schedule (id, seq, terminal_id, next_due_ms, body)
                 VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM schedule), ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET next_due_ms = excluded.next_due_ms,
                    body = excluded.body",
            )?
            .execute(params![
                schedule.id,
                schedule.terminal_id,
                schedule.next_due_ms,
                schedule.body,
            ])?;
            return Ok(Ok(Applied::Done));
        }
    };
    if changed > 0 {
        return Ok(Ok(Applied::Done));
    }
    let (what, id) = match write {
        Write::Begin(row) => ("transaction", row.record.id.0),
        Write::Outcome { id, .. } | Write::Reversal { id, .. } | Write::Cancel { id, .. } => {
            ("transaction", *id)
        }
        Write::Close(_) => return Ok(Ok(Applied::Done)),
        Write::Enqueue(row) => ("queue item", row.id),
        Write::Acknowledge { id, .. } => ("queue item", *id),
        Write::Attempt { id, .. } | Write::Fail { id, .. } => ("pending queue item", *id),
        Write::Purge { .. }
        | Write::Remember { .. }
        | Write::SaveCard(_)
        | Write::SaveSchedule(_) => return Ok(Ok(Applied::Done)),
    };
    Ok(Err(JournalError::Unknown {
        op: write.op(),
        what,
        id,
    }))
}

fn insert_txn(tx: &Transaction<'_>, row: &TxnRow) -> rusqlite::Result<usize> {
    let r = &row.record;
    let (nonce, sealed) = row
        .fields
        .as_ref()
        .map(|s| (&s.nonce[..], &s.ciphertext[..]))
        .unzip();
    tx.prepare_cached(
        "INSERT INTO txn (id, received_at_ms, listener, channel, mti, processing_code,
            pan_masked, pan_last4, pan_hash, amount, currency, terminal_id, merchant_id,
            terminal_stan, terminal_rrn, route, issuer, upstream_stan, upstream_rrn,
            fields_nonce, fields_sealed, original_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
            ?17, ?18, ?19, ?20, ?21, ?22)",
    )?
    .execute(params![
        r.id.0,
        r.received_at_ms,
        r.listener,
        r.channel,
        r.mti.as_str(),
        r.processing_code,
        r.pan_masked,
        row.pan_last4,
        r.pan_hash.as_ref().map(|h| &h[..]),
        r.amount,
        r.currency,
        r.terminal_id,
        r.merchant_id,
        r.terminal_stan,
        r.terminal_rrn,
        r.route,
        r.issuer,
        r.upstream_stan,
        r.upstream_rrn,
        nonce,
        sealed,
        r.original_id.map(|o| o.0),
    ])
}

/// Moves the transaction of reversal item `saf_id` (if it is one) to
/// `state`, in the caller's transaction. `sent` never takes back a final
/// state: an answer can be recorded before the attempt that drew it.
fn reversal_follows(
    tx: &Transaction<'_>,
    saf_id: i64,
    state: ReversalState,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE txn SET reversal = ?2
         WHERE id = (SELECT txn_id FROM saf WHERE id = ?1 AND kind = 'reversal')
           AND (?2 != 'sent' OR reversal NOT IN ('acknowledged', 'failed'))",
    )?
    .execute(params![saf_id, state.as_str()])?;
    Ok(())
}

/// Deletes up to `chunk` closed queue items closed before `before_ms`, then
/// up to `chunk` transactions received before it that no queue item names.
fn purge_chunk(tx: &Transaction<'_>, before_ms: i64, chunk: usize) -> rusqlite::Result<Purged> {
    let chunk = i64::try_from(chunk).unwrap_or(i64::MAX);
    let queue_items = tx
        .prepare_cached(
            "DELETE FROM saf WHERE id IN (
                SELECT id FROM saf WHERE state != 'pending' AND closed_at_ms < ?1 LIMIT ?2)",
        )?
        .execute(params![before_ms, chunk])?;
    let transactions = tx
        .prepare_cached(
            "DELETE FROM txn WHERE id IN (
                SELECT id FROM txn WHERE received_at_ms < ?1
                    AND NOT EXISTS (SELECT 1 FROM saf WHERE saf.txn_id = txn.id)
                LIMIT ?2)",
        )?
        .execute(params![before_ms, chunk])?;
    Ok(Purged {
        transactions: transactions as u64,
        queue_items: queue_items as u64,
    })
}
