//! Reads on their own connection, beside the writer: WAL lets them see every
//! committed batch without waiting for it. Card data is opened here, for the
//! row it was sealed for only.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rusqlite::types::ToSql;
use rusqlite::{params, Connection, OptionalExtension as _, Row};

use super::{open_connection, FileIdentity};
use crate::iso8583::{Mti, ResponseCode};
use crate::journal::card_data::{card_record, saf_record, txn_record, CardVault, Sealed};
use crate::journal::find_sql::{txn_query, Placeholder, SqlValue};
use crate::journal::record::{
    ClearPan, InDoubt, Outcome, ReversalFields, SafId, SafItem, SafLink, Stats, StatsRow,
    TimeRange, TxnId, TxnQuery, TxnRecord, NO_ROUTE, PENDING,
};
use crate::journal::recurring::{SavedCard, ScheduleRecord};
use crate::journal::shift::{ShiftClose, ShiftCloseNew};
use crate::journal::JournalError;

pub(crate) struct Reader {
    pub path: PathBuf,
    pub conn: Option<(Connection, FileIdentity)>,
    /// `None` for a look-up tool without the key: it reads no sealed data.
    pub vault: Option<Arc<CardVault>>,
    /// Reopened read-only, for the tools.
    pub read_only: bool,
}

/// What a read failed with, before it is given the file and operation.
enum ReadFailure {
    Sqlite(rusqlite::Error),
    Corrupt(String),
    Tampered(String),
    /// Sealed data asked of a reader opened without the key.
    NoKey,
}

impl From<rusqlite::Error> for ReadFailure {
    fn from(e: rusqlite::Error) -> Self {
        ReadFailure::Sqlite(e)
    }
}

type ReadResult<T> = Result<T, ReadFailure>;

/// A column that holds a spelling from a closed set.
fn parsed<T: FromStr>(row: &Row<'_>, column: &str) -> ReadResult<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.get(column)?;
    text.parse()
        .map_err(|e: T::Err| ReadFailure::Corrupt(format!("column {column}: {e}")))
}

const TXN_COLUMNS: &str = "id, received_at_ms, listener, channel, mti, processing_code, pan_masked,
    pan_hash, amount, currency, terminal_id, merchant_id, terminal_stan, terminal_rrn, route,
    issuer, upstream_stan, upstream_rrn, answered_at_ms, response_code, decided_by, auth_code,
    latency_us, reversal, original_id, cancelled_at_ms, reason";

impl Reader {
    /// Runs `read` on the connection, reopening it first if the file under the
    /// path was replaced, and names the file and `op` in any error.
    fn with<T>(
        &mut self,
        op: &'static str,
        read: impl FnOnce(&Connection, Option<&CardVault>) -> ReadResult<T>,
    ) -> Result<T, JournalError> {
        let current = FileIdentity::of(&self.path);
        if self
            .conn
            .as_ref()
            .is_some_and(|(_, id)| Some(*id) != current)
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(if self.read_only {
                super::read_only::connect(&self.path)?
            } else {
                open_connection(&self.path, false)?
            });
        }
        let (conn, _) = self.conn.as_ref().expect("a connection was just opened");
        read(conn, self.vault.as_deref()).map_err(|failure| match failure {
            ReadFailure::Sqlite(e) => {
                self.conn = None;
                JournalError::Read {
                    path: self.path.clone(),
                    op,
                    cause: Arc::new(e),
                }
            }
            ReadFailure::Corrupt(what) => JournalError::Read {
                path: self.path.clone(),
                op,
                cause: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(what)),
            },
            ReadFailure::Tampered(record) => JournalError::Tampered { record },
            ReadFailure::NoKey => JournalError::Read {
                path: self.path.clone(),
                op,
                cause: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                    "card data cannot be read without the journal's data key",
                )),
            },
        })
    }

    pub(crate) fn find(
        &mut self,
        query: &TxnQuery,
        pan_hash: Option<[u8; 32]>,
    ) -> Result<Vec<TxnRecord>, JournalError> {
        self.with("find", |conn, _| {
            let (sql, values) = txn_query(
                TXN_COLUMNS,
                query,
                pan_hash.as_ref().map(|h| &h[..]),
                Placeholder::Question,
            );
            let values: Vec<Box<dyn ToSql>> = values.into_iter().map(sqlite_value).collect();
            let mut statement = conn.prepare(&sql)?;
            let params: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
            let mut rows = statement.query(params.as_slice())?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                if query.limit.is_some_and(|limit| found.len() >= limit) {
                    break;
                }
                let record = txn_from_row(row)?;
                if record.answer_matches(query) {
                    found.push(record);
                }
            }
            let mut links = conn.prepare_cached(
                "SELECT id, kind, state, attempts FROM saf WHERE txn_id = ?1 ORDER BY id",
            )?;
            for record in &mut found {
                let mut rows = links.query([record.id.0])?;
                while let Some(row) = rows.next()? {
                    record.links.push(SafLink {
                        id: SafId(row.get("id")?),
                        kind: parsed(row, "kind")?,
                        state: parsed(row, "state")?,
                        attempts: row.get("attempts")?,
                    });
                }
            }
            Ok(found)
        })
    }

    /// The newest close of `terminal` (of `batch`, when given).
    /// The result first stored under an idempotency key (the virtual
    /// terminal's; see `journal::idempotency`).
    pub(crate) fn recall(
        &mut self,
        scope: &str,
        key: &str,
    ) -> Result<Option<String>, JournalError> {
        self.with("recall", |conn, _| {
            Ok(conn
                .prepare_cached("SELECT result FROM idempotency WHERE scope = ?1 AND key = ?2")?
                .query_row([scope, key], |row| row.get(0))
                .optional()?)
        })
    }

    /// Cards on file of `terminal` (all, or the one `token`), oldest first;
    /// the card number opened only when `with_pan`.
    pub(crate) fn cards(
        &mut self,
        terminal: &str,
        token: Option<&str>,
        with_pan: bool,
    ) -> Result<Vec<SavedCard>, JournalError> {
        self.with("cards", |conn, vault| {
            let mut statement = conn.prepare_cached(
                "SELECT token, terminal_id, merchant_id, brand, last4, expiry, created_at_ms,
                    payment_id, pan_nonce, pan_sealed
                 FROM vault_card WHERE terminal_id = ?1 AND (?2 IS NULL OR token = ?2)
                 ORDER BY created_at_ms, token",
            )?;
            let mut rows = statement.query(params![terminal, token])?;
            let mut cards = Vec::new();
            while let Some(row) = rows.next()? {
                let token: String = row.get(0)?;
                let pan = if with_pan {
                    let vault = vault.ok_or(ReadFailure::NoKey)?;
                    let nonce: Vec<u8> = row.get(8)?;
                    let sealed = Sealed {
                        nonce: nonce
                            .try_into()
                            .map_err(|_| ReadFailure::Corrupt(format!("card {token}: nonce")))?,
                        ciphertext: row.get(9)?,
                    };
                    let clear = vault
                        .open(&card_record(&token), &sealed)
                        .map_err(|_| ReadFailure::Tampered(format!("card {token}")))?;
                    let digits = String::from_utf8(clear)
                        .ok()
                        .and_then(|d| ClearPan::new(&d))
                        .ok_or_else(|| ReadFailure::Corrupt(format!("card {token}: number")))?;
                    Some(digits)
                } else {
                    None
                };
                cards.push(SavedCard {
                    token,
                    terminal_id: row.get(1)?,
                    merchant_id: row.get(2)?,
                    brand: row.get(3)?,
                    last4: row.get(4)?,
                    expiry: row.get(5)?,
                    created_at_ms: row.get(6)?,
                    payment_id: row.get(7)?,
                    pan,
                });
            }
            Ok(cards)
        })
    }

    /// Schedules of `terminal` in the order they were made, or (None) those
    /// due at or before `due_by_ms`, soonest first.
    pub(crate) fn schedules(
        &mut self,
        terminal: Option<&str>,
        due_by_ms: i64,
    ) -> Result<Vec<ScheduleRecord>, JournalError> {
        self.with("schedules", |conn, _| {
            let mut statement = match terminal {
                Some(_) => conn.prepare_cached(
                    "SELECT id, terminal_id, next_due_ms, body FROM schedule
                     WHERE terminal_id = ?1 ORDER BY seq",
                )?,
                None => conn.prepare_cached(
                    "SELECT id, terminal_id, next_due_ms, body FROM schedule
                     WHERE next_due_ms IS NOT NULL AND next_due_ms <= ?1 ORDER BY next_due_ms",
                )?,
            };
            let mut rows = match terminal {
                Some(t) => statement.query(params![t])?,
                None => statement.query(params![due_by_ms])?,
            };
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(ScheduleRecord {
                    id: row.get(0)?,
                    terminal_id: row.get(1)?,
                    next_due_ms: row.get(2)?,
                    body: row.get(3)?,
                });
            }
            Ok(found)
        })
    }

    pub(crate) fn last_close(
        &mut self,
        terminal: &str,
        batch: Option<&str>,
    ) -> Result<Option<ShiftClose>, JournalError> {
        self.with("last_close", |conn, _| {
            let mut statement = conn.prepare_cached(
                "SELECT id, terminal_id, merchant_id, batch, closed_at_ms, last_txn_id,
                    terminal_totals, switch_totals, response_code
                 FROM shift_close WHERE terminal_id = ?1 AND (?2 IS NULL OR batch = ?2)
                 ORDER BY id DESC LIMIT 1",
            )?;
            let mut rows = statement.query(params![terminal, batch])?;
            match rows.next()? {
                Some(row) => Ok(Some(close_from_row(row)?)),
                None => Ok(None),
            }
        })
    }

    /// What a settlement of `range` reads: the transactions received in it
    /// and those cancelled in it, oldest first (no queue history).
    pub(crate) fn settlement(&mut self, range: TimeRange) -> Result<Vec<TxnRecord>, JournalError> {
        self.with("settlement", |conn, _| {
            let mut statement = conn.prepare(&format!(
                "SELECT {TXN_COLUMNS} FROM txn
                 WHERE (received_at_ms >= ?1 AND received_at_ms < ?2)
                    OR (cancelled_at_ms >= ?1 AND cancelled_at_ms < ?2)
                 ORDER BY received_at_ms, id"
            ))?;
            let since = range.since_ms.unwrap_or(i64::MIN);
            let until = range.until_ms.unwrap_or(i64::MAX);
            let mut rows = statement.query(params![since, until])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(txn_from_row(row)?);
            }
            Ok(found)
        })
    }

    pub(crate) fn stats(&mut self, range: TimeRange) -> Result<Stats, JournalError> {
        self.with("stats", |conn, _| {
            let group = |key: &str| -> ReadResult<Vec<StatsRow>> {
                let sql = format!(
                    "SELECT {key} AS key, currency, count(*) AS n, coalesce(sum(amount), 0) AS total
                     FROM txn WHERE received_at_ms >= ?1 AND received_at_ms < ?2
                     GROUP BY 1, 2 ORDER BY 1, 2"
                );
                let mut statement = conn.prepare_cached(&sql)?;
                let since = range.since_ms.unwrap_or(i64::MIN);
                let until = range.until_ms.unwrap_or(i64::MAX);
                let mut rows = statement.query(params![since, until])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(StatsRow {
                        key: row.get("key")?,
                        currency: row.get("currency")?,
                        count: u64::try_from(row.get::<_, i64>("n")?).unwrap_or(0),
                        amount: row.get("total")?,
                    });
                }
                Ok(out)
            };
            Ok(Stats {
                by_response_code: group(&format!("coalesce(response_code, '{PENDING}')"))?,
                by_route: group(&format!("coalesce(route, '{NO_ROUTE}')"))?,
                by_decider: group(&format!("coalesce(decided_by, '{PENDING}')"))?,
            })
        })
    }

    pub(crate) fn in_doubt(
        &mut self,
        received_before_ms: i64,
    ) -> Result<Vec<InDoubt>, JournalError> {
        self.with("in_doubt", |conn, vault| {
            let vault = vault.ok_or(ReadFailure::NoKey)?;
            let mut statement = conn.prepare_cached(
                "SELECT id, received_at_ms, route, issuer, upstream_stan, upstream_rrn,
                    terminal_id, terminal_stan, fields_nonce, fields_sealed
                 FROM txn WHERE issuer IS NOT NULL AND response_code IS NULL AND reversal = 'none'
                    AND received_at_ms < ?1
                 ORDER BY id",
            )?;
            let mut rows = statement.query([received_before_ms])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get("id")?;
                out.push(InDoubt {
                    id: TxnId(id),
                    received_at_ms: row.get("received_at_ms")?,
                    route: row.get::<_, Option<String>>("route")?.unwrap_or_default(),
                    issuer: row.get("issuer")?,
                    upstream_stan: row
                        .get::<_, Option<String>>("upstream_stan")?
                        .unwrap_or_default(),
                    upstream_rrn: row.get("upstream_rrn")?,
                    terminal_id: row.get("terminal_id")?,
                    terminal_stan: row.get("terminal_stan")?,
                    reversal: open_fields(row, vault, &txn_record(id))?.unwrap_or_default(),
                });
            }
            Ok(out)
        })
    }

    /// The sealed fields of a transaction, for a reversal of it.
    pub(crate) fn reversal_fields(
        &mut self,
        id: TxnId,
    ) -> Result<Option<ReversalFields>, JournalError> {
        self.with("reversal_fields", |conn, vault| {
            let vault = vault.ok_or(ReadFailure::NoKey)?;
            let mut statement =
                conn.prepare_cached("SELECT fields_nonce, fields_sealed FROM txn WHERE id = ?1")?;
            let mut rows = statement.query([id.0])?;
            match rows.next()? {
                Some(row) => open_fields(row, vault, &txn_record(id.0)),
                None => Ok(None),
            }
        })
    }

    pub(crate) fn due(
        &mut self,
        issuer: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<SafItem>, JournalError> {
        self.with("due", |conn, vault| {
            let vault = vault.ok_or(ReadFailure::NoKey)?;
            // Walks the issuer's pending items in id order (the partial index)
            // and skips those not due yet.
            let mut statement = conn.prepare_cached(
                "SELECT id, issuer, kind, mti, txn_id, attempts, created_at_ms, next_attempt_at_ms,
                    expires_at_ms, fields_nonce, fields_sealed
                 FROM saf WHERE issuer = ?1 AND state = 'pending' AND next_attempt_at_ms <= ?2
                 ORDER BY id LIMIT ?3",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = statement.query(params![issuer, now_ms, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let id: i64 = row.get("id")?;
                out.push(SafItem {
                    id: SafId(id),
                    issuer: row.get("issuer")?,
                    kind: parsed(row, "kind")?,
                    mti: parsed(row, "mti")?,
                    txn_id: row.get::<_, Option<i64>>("txn_id")?.map(TxnId),
                    fields: open_fields(row, vault, &saf_record(id))?.unwrap_or_default(),
                    attempts: row.get("attempts")?,
                    created_at_ms: row.get("created_at_ms")?,
                    next_attempt_at_ms: row.get("next_attempt_at_ms")?,
                    expires_at_ms: row.get("expires_at_ms")?,
                });
            }
            Ok(out)
        })
    }

    pub(crate) fn depth(&mut self, issuer: &str) -> Result<u64, JournalError> {
        self.with("depth", |conn, _| {
            let mut statement = conn.prepare_cached(
                "SELECT count(*) FROM saf WHERE issuer = ?1 AND state = 'pending'",
            )?;
            let depth: i64 = statement.query_row([issuer], |row| row.get(0))?;
            Ok(u64::try_from(depth).unwrap_or(0))
        })
    }
}

/// The sealed fields in `row`, opened for `record`; `None` when there are none.
fn open_fields(
    row: &Row<'_>,
    vault: &CardVault,
    record: &str,
) -> ReadResult<Option<ReversalFields>> {
    let nonce: Option<Vec<u8>> = row.get("fields_nonce")?;
    let ciphertext: Option<Vec<u8>> = row.get("fields_sealed")?;
    let (Some(nonce), Some(ciphertext)) = (nonce, ciphertext) else {
        return Ok(None);
    };
    let tampered = || ReadFailure::Tampered(record.to_owned());
    let nonce = <[u8; 12]>::try_from(nonce.as_slice()).map_err(|_| tampered())?;
    let plaintext = vault
        .open(record, &Sealed { nonce, ciphertext })
        .map_err(|_| tampered())?;
    ReversalFields::decode(&plaintext)
        .map(Some)
        .ok_or_else(tampered)
}

fn txn_from_row(row: &Row<'_>) -> ReadResult<TxnRecord> {
    let corrupt = |what: &str| ReadFailure::Corrupt(what.to_owned());
    let mti: String = row.get("mti")?;
    let pan_hash: Option<Vec<u8>> = row.get("pan_hash")?;
    let outcome = match row.get::<_, Option<String>>("response_code")? {
        None => None,
        Some(code) => {
            let code = <[u8; 2]>::try_from(code.as_bytes())
                .ok()
                .and_then(ResponseCode::new)
                .ok_or_else(|| corrupt("column response_code"))?;
            Some(Outcome {
                answered_at_ms: row
                    .get::<_, Option<i64>>("answered_at_ms")?
                    .unwrap_or_default(),
                response_code: code,
                decided_by: parsed(row, "decided_by")?,
                auth_code: row.get("auth_code")?,
                latency_us: row
                    .get::<_, Option<i64>>("latency_us")?
                    .map_or(0, |v| u64::try_from(v).unwrap_or(0)),
                reason: row.get("reason")?,
            })
        }
    };
    Ok(TxnRecord {
        id: TxnId(row.get("id")?),
        received_at_ms: row.get("received_at_ms")?,
        listener: row.get("listener")?,
        channel: row.get("channel")?,
        mti: Mti::from_str(&mti).map_err(|_| corrupt("column mti"))?,
        processing_code: row.get("processing_code")?,
        pan_masked: row.get("pan_masked")?,
        pan_hash: pan_hash
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).map_err(|_| corrupt("column pan_hash")))
            .transpose()?,
        amount: row.get("amount")?,
        currency: row.get("currency")?,
        terminal_id: row.get("terminal_id")?,
        merchant_id: row.get("merchant_id")?,
        terminal_stan: row.get("terminal_stan")?,
        terminal_rrn: row.get("terminal_rrn")?,
        route: row.get("route")?,
        issuer: row.get("issuer")?,
        upstream_stan: row.get("upstream_stan")?,
        upstream_rrn: row.get("upstream_rrn")?,
        outcome,
        reversal: parsed(row, "reversal")?,
        links: Vec::new(),
        original_id: row.get::<_, Option<i64>>("original_id")?.map(TxnId),
        cancelled_at_ms: row.get("cancelled_at_ms")?,
    })
}

fn close_from_row(row: &Row<'_>) -> ReadResult<ShiftClose> {
    let corrupt = |what: &str| ReadFailure::Corrupt(what.to_owned());
    let json = |column: &str| -> ReadResult<String> { Ok(row.get::<_, String>(column)?) };
    let code: String = row.get("response_code")?;
    Ok(ShiftClose {
        id: row.get("id")?,
        close: ShiftCloseNew {
            terminal_id: row.get("terminal_id")?,
            merchant_id: row.get("merchant_id")?,
            batch: row.get("batch")?,
            closed_at_ms: row.get("closed_at_ms")?,
            last_txn: TxnId(row.get("last_txn_id")?),
            terminal_totals: serde_json::from_str(&json("terminal_totals")?)
                .map_err(|_| corrupt("column terminal_totals"))?,
            switch_totals: serde_json::from_str(&json("switch_totals")?)
                .map_err(|_| corrupt("column switch_totals"))?,
            response_code: <[u8; 2]>::try_from(code.as_bytes())
                .ok()
                .and_then(ResponseCode::new)
                .ok_or_else(|| corrupt("column response_code"))?,
        },
    })
}

/// A query value as rusqlite binds it.
fn sqlite_value(value: SqlValue) -> Box<dyn ToSql> {
    match value {
        SqlValue::Text(text) => Box::new(text),
        SqlValue::Int(n) => Box::new(n),
        SqlValue::Bytes(bytes) => Box::new(bytes),
    }
}
