//! Reads from PostgreSQL, each on a pooled connection: what the switch looks
//! up (in-doubt transactions, reversal fields, due queue items — leased to
//! this instance as they are taken — queue depth, shift closes) and what the
//! tools read (`find`, `stats`, a settlement's transactions).

use std::str::FromStr;
use std::sync::Arc;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::iso8583::{Mti, ResponseCode};
use crate::journal::card_data::{saf_record, txn_record, CardVault, Sealed};
use crate::journal::find_sql::{txn_query, Placeholder, SqlValue};
use crate::journal::record::{
    InDoubt, Outcome, ReversalFields, SafId, SafItem, SafLink, Stats, StatsRow, TimeRange, TxnId,
    TxnQuery, TxnRecord, NO_ROUTE, PENDING,
};
use crate::journal::shift::{ShiftClose, ShiftCloseNew};

/// What a read failed with, before it is given the database and operation.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    Postgres(tokio_postgres::Error),
    Corrupt(String),
    Tampered(String),
}

impl From<tokio_postgres::Error> for ReadFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        ReadFailure::Postgres(e)
    }
}

pub(crate) type ReadResult<T> = Result<T, ReadFailure>;

/// A column that holds a spelling from a closed set.
fn parsed<T: FromStr>(row: &Row, column: &str) -> ReadResult<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|e: T::Err| ReadFailure::Corrupt(format!("column {column}: {e}")))
}

const TXN_COLUMNS: &str = "id, received_at_ms, listener, channel, mti, processing_code, pan_masked,
    pan_hash, amount, currency, terminal_id, merchant_id, terminal_stan, terminal_rrn, route,
    issuer, upstream_stan, upstream_rrn, answered_at_ms, response_code, decided_by, auth_code,
    latency_us, reversal, original_id, cancelled_at_ms, reason";

const SAF_COLUMNS: &str = "saf.id, saf.issuer, saf.kind, saf.mti, saf.txn_id, saf.attempts,
    saf.created_at_ms, saf.next_attempt_at_ms, saf.expires_at_ms, saf.fields_nonce,
    saf.fields_sealed";

/// `find`: every condition of `query` as SQL, the answer's conditions after.
pub(crate) async fn find(
    client: &impl GenericClient,
    query: &TxnQuery,
    pan_hash: Option<[u8; 32]>,
) -> ReadResult<Vec<TxnRecord>> {
    let (sql, values) = txn_query(
        TXN_COLUMNS,
        query,
        pan_hash.as_ref().map(|h| &h[..]),
        Placeholder::Dollar,
    );
    let values: Vec<Box<dyn ToSql + Sync + Send>> = values.into_iter().map(pg_value).collect();
    let params: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|v| v.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(sql.as_str(), &params).await?;
    let mut found = Vec::new();
    for row in &rows {
        if query.limit.is_some_and(|limit| found.len() >= limit) {
            break;
        }
        let record = txn_from_row(row)?;
        if record.answer_matches(query) {
            found.push(record);
        }
    }
    if found.is_empty() {
        return Ok(found);
    }
    let ids: Vec<i64> = found.iter().map(|r| r.id.0).collect();
    let links = client
        .query(
            "SELECT id, txn_id, kind, state, attempts FROM saf WHERE txn_id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await?;
    for row in &links {
        let txn: i64 = row.try_get("txn_id")?;
        if let Some(record) = found.iter_mut().find(|r| r.id.0 == txn) {
            record.links.push(SafLink {
                id: SafId(row.try_get("id")?),
                kind: parsed(row, "kind")?,
                state: parsed(row, "state")?,
                attempts: u32::try_from(row.try_get::<_, i32>("attempts")?).unwrap_or(0),
            });
        }
    }
    Ok(found)
}

pub(crate) async fn stats(client: &impl GenericClient, range: TimeRange) -> ReadResult<Stats> {
    let since = range.since_ms.unwrap_or(i64::MIN);
    let until = range.until_ms.unwrap_or(i64::MAX);
    let mut groups = Vec::with_capacity(3);
    for key in [
        format!("coalesce(response_code, '{PENDING}')"),
        format!("coalesce(route, '{NO_ROUTE}')"),
        format!("coalesce(decided_by, '{PENDING}')"),
    ] {
        let sql = format!(
            "SELECT {key} AS key, currency, count(*) AS n, coalesce(sum(amount), 0)::BIGINT AS total
             FROM txn WHERE received_at_ms >= $1 AND received_at_ms < $2
             GROUP BY 1, 2 ORDER BY ({key}) COLLATE \"C\", currency NULLS FIRST"
        );
        let rows = client.query(sql.as_str(), &[&since, &until]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(StatsRow {
                key: row.try_get("key")?,
                currency: currency(row.try_get("currency")?)?,
                count: u64::try_from(row.try_get::<_, i64>("n")?).unwrap_or(0),
                amount: row.try_get("total")?,
            });
        }
        groups.push(out);
    }
    let by_decider = groups.pop().unwrap_or_default();
    let by_route = groups.pop().unwrap_or_default();
    let by_response_code = groups.pop().unwrap_or_default();
    Ok(Stats {
        by_response_code,
        by_route,
        by_decider,
    })
}

/// The transactions received or cancelled within `range`, oldest first.
pub(crate) async fn settlement(
    client: &impl GenericClient,
    range: TimeRange,
) -> ReadResult<Vec<TxnRecord>> {
    let since = range.since_ms.unwrap_or(i64::MIN);
    let until = range.until_ms.unwrap_or(i64::MAX);
    let sql = format!(
        "SELECT {TXN_COLUMNS} FROM txn
         WHERE (received_at_ms >= $1 AND received_at_ms < $2)
            OR (cancelled_at_ms >= $1 AND cancelled_at_ms < $2)
         ORDER BY received_at_ms, id"
    );
    let rows = client.query(sql.as_str(), &[&since, &until]).await?;
    rows.iter().map(txn_from_row).collect()
}

/// This instance's forwarded requests received before `received_before_ms`
/// (or taken over from a dead instance, whatever their age) with no answer
/// and no reversal, oldest first.
pub(crate) async fn in_doubt(
    client: &impl GenericClient,
    vault: &CardVault,
    instance: &str,
    received_before_ms: i64,
) -> ReadResult<Vec<InDoubt>> {
    let rows = client
        .query(
            "SELECT id, received_at_ms, route, issuer, upstream_stan, upstream_rrn,
                terminal_id, terminal_stan, fields_nonce, fields_sealed
             FROM txn WHERE instance_id = $1 AND issuer IS NOT NULL AND response_code IS NULL
                AND reversal = 'none'
                AND (received_at_ms < $2 OR recovered_from IS NOT NULL)
             ORDER BY id",
            &[&instance, &received_before_ms],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        out.push(InDoubt {
            id: TxnId(id),
            received_at_ms: row.try_get("received_at_ms")?,
            route: row
                .try_get::<_, Option<String>>("route")?
                .unwrap_or_default(),
            issuer: row.try_get("issuer")?,
            upstream_stan: row
                .try_get::<_, Option<String>>("upstream_stan")?
                .unwrap_or_default(),
            upstream_rrn: row.try_get("upstream_rrn")?,
            terminal_id: row.try_get("terminal_id")?,
            terminal_stan: row.try_get("terminal_stan")?,
            reversal: open_fields(row, vault, &txn_record(id))?.unwrap_or_default(),
        });
    }
    Ok(out)
}

pub(crate) async fn reversal_fields(
    client: &impl GenericClient,
    vault: &CardVault,
    id: TxnId,
) -> ReadResult<Option<ReversalFields>> {
    let row = client
        .query_opt(
            "SELECT fields_nonce, fields_sealed FROM txn WHERE id = $1",
            &[&id.0],
        )
        .await?;
    match row {
        Some(row) => open_fields(&row, vault, &txn_record(id.0)),
        None => Ok(None),
    }
}

/// Up to `limit` due items of `issuer`, leased to `instance` until
/// `now_ms + lease_ms`: items another instance holds a live lease on are
/// skipped, as are rows another instance is leasing right now (SKIP
/// LOCKED), so two instances never take the same item. An item waits while
/// an older item of its transaction is pending, so an advice never
/// overtakes its reversal whichever instance holds which.
pub(crate) async fn lease_due(
    client: &impl GenericClient,
    vault: &CardVault,
    instance: &str,
    issuer: &str,
    now_ms: i64,
    limit: usize,
    lease_ms: i64,
) -> ReadResult<Vec<SafItem>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!(
        "WITH picked AS (
            SELECT id FROM saf s
            WHERE issuer = $1 AND state = 'pending' AND next_attempt_at_ms <= $2
              AND (leased_by IS NULL OR leased_by = $4 OR lease_until_ms < $2)
              AND NOT EXISTS (SELECT 1 FROM saf e WHERE s.txn_id IS NOT NULL
                    AND e.txn_id = s.txn_id AND e.state = 'pending' AND e.id < s.id)
            ORDER BY id LIMIT $3
            FOR UPDATE SKIP LOCKED)
         UPDATE saf SET leased_by = $4, lease_until_ms = $2::BIGINT + $5::BIGINT
         FROM picked WHERE saf.id = picked.id
         RETURNING {SAF_COLUMNS}"
    );
    let rows = client
        .query(
            sql.as_str(),
            &[&issuer, &now_ms, &limit, &instance, &lease_ms],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        out.push(SafItem {
            id: SafId(id),
            issuer: row.try_get("issuer")?,
            kind: parsed(row, "kind")?,
            mti: parsed(row, "mti")?,
            txn_id: row.try_get::<_, Option<i64>>("txn_id")?.map(TxnId),
            fields: open_fields(row, vault, &saf_record(id))?.unwrap_or_default(),
            attempts: u32::try_from(row.try_get::<_, i32>("attempts")?).unwrap_or(0),
            created_at_ms: row.try_get("created_at_ms")?,
            next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
            expires_at_ms: row.try_get("expires_at_ms")?,
        });
    }
    out.sort_by_key(|item| item.id);
    Ok(out)
}

pub(crate) async fn depth(client: &impl GenericClient, issuer: &str) -> ReadResult<u64> {
    let row = client
        .query_one(
            "SELECT count(*) FROM saf WHERE issuer = $1 AND state = 'pending'",
            &[&issuer],
        )
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

pub(crate) async fn last_close(
    client: &impl GenericClient,
    terminal: &str,
    batch: Option<&str>,
) -> ReadResult<Option<ShiftClose>> {
    let row = client
        .query_opt(
            "SELECT id, terminal_id, merchant_id, batch, closed_at_ms, last_txn_id,
                terminal_totals, switch_totals, response_code
             FROM shift_close WHERE terminal_id = $1 AND ($2::TEXT IS NULL OR batch = $2)
             ORDER BY id DESC LIMIT 1",
            &[&terminal, &batch],
        )
        .await?;
    row.as_ref().map(close_from_row).transpose()
}

fn currency(value: Option<i32>) -> ReadResult<Option<u16>> {
    value
        .map(|c| u16::try_from(c).map_err(|_| ReadFailure::Corrupt("column currency".to_owned())))
        .transpose()
}

/// The sealed fields in `row`, opened for `record`; `None` when there are none.
fn open_fields(row: &Row, vault: &CardVault, record: &str) -> ReadResult<Option<ReversalFields>> {
    let nonce: Option<Vec<u8>> = row.try_get("fields_nonce")?;
    let ciphertext: Option<Vec<u8>> = row.try_get("fields_sealed")?;
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

fn response_code(text: &str, column: &str) -> ReadResult<ResponseCode> {
    <[u8; 2]>::try_from(text.as_bytes())
        .ok()
        .and_then(ResponseCode::new)
        .ok_or_else(|| ReadFailure::Corrupt(format!("column {column}")))
}

fn txn_from_row(row: &Row) -> ReadResult<TxnRecord> {
    let corrupt = |what: &str| ReadFailure::Corrupt(what.to_owned());
    let mti: String = row.try_get("mti")?;
    let pan_hash: Option<Vec<u8>> = row.try_get("pan_hash")?;
    let outcome = match row.try_get::<_, Option<String>>("response_code")? {
        None => None,
        Some(code) => Some(Outcome {
            answered_at_ms: row
                .try_get::<_, Option<i64>>("answered_at_ms")?
                .unwrap_or_default(),
            response_code: response_code(&code, "response_code")?,
            decided_by: parsed(row, "decided_by")?,
            auth_code: row.try_get("auth_code")?,
            latency_us: row
                .try_get::<_, Option<i64>>("latency_us")?
                .map_or(0, |v| u64::try_from(v).unwrap_or(0)),
            reason: row.try_get("reason")?,
        }),
    };
    Ok(TxnRecord {
        id: TxnId(row.try_get("id")?),
        received_at_ms: row.try_get("received_at_ms")?,
        listener: row.try_get("listener")?,
        channel: row.try_get("channel")?,
        mti: Mti::from_str(&mti).map_err(|_| corrupt("column mti"))?,
        processing_code: row.try_get("processing_code")?,
        pan_masked: row.try_get("pan_masked")?,
        pan_hash: pan_hash
            .map(|h| <[u8; 32]>::try_from(h.as_slice()).map_err(|_| corrupt("column pan_hash")))
            .transpose()?,
        amount: row.try_get("amount")?,
        currency: currency(row.try_get("currency")?)?,
        terminal_id: row.try_get("terminal_id")?,
        merchant_id: row.try_get("merchant_id")?,
        terminal_stan: row.try_get("terminal_stan")?,
        terminal_rrn: row.try_get("terminal_rrn")?,
        route: row.try_get("route")?,
        issuer: row.try_get("issuer")?,
        upstream_stan: row.try_get("upstream_stan")?,
        upstream_rrn: row.try_get("upstream_rrn")?,
        outcome,
        reversal: parsed(row, "reversal")?,
        links: Vec::new(),
        original_id: row.try_get::<_, Option<i64>>("original_id")?.map(TxnId),
        cancelled_at_ms: row.try_get("cancelled_at_ms")?,
    })
}

fn close_from_row(row: &Row) -> ReadResult<ShiftClose> {
    let corrupt = |what: &str| ReadFailure::Corrupt(what.to_owned());
    let code: String = row.try_get("response_code")?;
    let terminal_totals: String = row.try_get("terminal_totals")?;
    let switch_totals: String = row.try_get("switch_totals")?;
    Ok(ShiftClose {
        id: row.try_get("id")?,
        close: ShiftCloseNew {
            terminal_id: row.try_get("terminal_id")?,
            merchant_id: row.try_get("merchant_id")?,
            batch: row.try_get("batch")?,
            closed_at_ms: row.try_get("closed_at_ms")?,
            last_txn: TxnId(row.try_get("last_txn_id")?),
            terminal_totals: serde_json::from_str(&terminal_totals)
                .map_err(|_| corrupt("column terminal_totals"))?,
            switch_totals: serde_json::from_str(&switch_totals)
                .map_err(|_| corrupt("column switch_totals"))?,
            response_code: response_code(&code, "response_code")?,
        },
    })
}

/// A read's failure as the journal's error, naming the database and `op`.
pub(crate) fn read_error(
    name: &str,
    op: &'static str,
    failure: ReadFailure,
) -> crate::journal::JournalError {
    use crate::journal::JournalError;
    let cause = |text: String| -> crate::journal::Cause {
        Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(text))
    };
    match failure {
        ReadFailure::Postgres(e) => JournalError::Read {
            path: name.into(),
            op,
            cause: Arc::new(e),
        },
        ReadFailure::Corrupt(what) => JournalError::Read {
            path: name.into(),
            op,
            cause: cause(what),
        },
        ReadFailure::Tampered(record) => JournalError::Tampered { record },
    }
}

/// A query value as tokio-postgres binds it.
fn pg_value(value: SqlValue) -> Box<dyn ToSql + Sync + Send> {
    match value {
        SqlValue::Text(text) => Box::new(text),
        SqlValue::Int(n) => Box::new(n),
        SqlValue::Bytes(bytes) => Box::new(bytes),
    }
}
