//! The PostgreSQL schema as a list of migrations applied in order, recorded in
//! `schema_version` like the SQLite one. Instances starting together take an
//! advisory lock, so each migration runs once.

use tokio_postgres::Client;

/// Each entry is one migration; never edit a released one, append another.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the SQLite schema's migrations 1–5 in one (the journal, the queue
    // with its one reversal per transaction and the MTI it is sent as,
    // shifts, refunds and cancellations), plus what several instances
    // sharing the database need: which instance journaled a transaction
    // (its in-doubt recovery is that instance's, or a survivor's once it is
    // dead), leases on queue items, a heartbeat row per instance, and ids
    // handed out in blocks of 1 024 so instances never wait on each other.
    "CREATE TABLE txn (
        id BIGINT PRIMARY KEY,
        received_at_ms BIGINT NOT NULL,
        listener TEXT NOT NULL,
        channel TEXT NOT NULL,
        mti TEXT NOT NULL,
        processing_code TEXT,
        pan_masked TEXT,
        pan_last4 TEXT,
        pan_hash BYTEA,
        amount BIGINT,
        currency INTEGER,
        terminal_id TEXT,
        merchant_id TEXT,
        terminal_stan TEXT,
        terminal_rrn TEXT,
        route TEXT,
        issuer TEXT,
        upstream_stan TEXT,
        upstream_rrn TEXT,
        fields_nonce BYTEA,
        fields_sealed BYTEA,
        answered_at_ms BIGINT,
        response_code TEXT,
        decided_by TEXT,
        auth_code TEXT,
        latency_us BIGINT,
        reversal TEXT NOT NULL DEFAULT 'none',
        original_id BIGINT,
        cancelled_at_ms BIGINT,
        reason TEXT,
        instance_id TEXT NOT NULL,
        recovered_from TEXT
    );
    CREATE INDEX txn_terminal_rrn ON txn (terminal_rrn);
    CREATE INDEX txn_upstream_rrn ON txn (upstream_rrn);
    CREATE INDEX txn_terminal_stan ON txn (terminal_id, terminal_stan);
    CREATE INDEX txn_last4 ON txn (pan_last4);
    CREATE INDEX txn_time ON txn (received_at_ms);
    CREATE INDEX txn_in_doubt ON txn (instance_id, id)
        WHERE issuer IS NOT NULL AND response_code IS NULL AND reversal = 'none';
    CREATE INDEX txn_original ON txn (original_id) WHERE original_id IS NOT NULL;
    CREATE INDEX txn_cancelled ON txn (cancelled_at_ms) WHERE cancelled_at_ms IS NOT NULL;
    CREATE INDEX txn_terminal ON txn (terminal_id, id);
    CREATE TABLE saf (
        id BIGINT PRIMARY KEY,
        issuer TEXT NOT NULL,
        kind TEXT NOT NULL,
        mti TEXT NOT NULL,
        txn_id BIGINT,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at_ms BIGINT NOT NULL,
        next_attempt_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        last_attempt_at_ms BIGINT,
        closed_at_ms BIGINT,
        fields_nonce BYTEA,
        fields_sealed BYTEA,
        leased_by TEXT,
        lease_until_ms BIGINT
    );
    CREATE INDEX saf_pending ON saf (issuer, id) WHERE state = 'pending';
    CREATE INDEX saf_txn ON saf (txn_id);
    CREATE UNIQUE INDEX saf_one_reversal ON saf (txn_id) WHERE kind = 'reversal';
    CREATE INDEX saf_closed ON saf (closed_at_ms) WHERE state != 'pending';
    CREATE TABLE shift_close (
        id BIGSERIAL PRIMARY KEY,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT,
        batch TEXT NOT NULL,
        closed_at_ms BIGINT NOT NULL,
        last_txn_id BIGINT NOT NULL,
        terminal_totals TEXT NOT NULL,
        switch_totals TEXT NOT NULL,
        response_code TEXT NOT NULL
    );
    CREATE INDEX shift_close_terminal ON shift_close (terminal_id, batch, id);
    CREATE TABLE instance (
        id TEXT PRIMARY KEY,
        started_at_ms BIGINT NOT NULL,
        heartbeat_at_ms BIGINT NOT NULL,
        recovered_by TEXT,
        recovered_at_ms BIGINT
    );
    CREATE SEQUENCE txn_id_block INCREMENT BY 1024;
    CREATE SEQUENCE saf_id_block INCREMENT BY 1024;",
];

/// How many ids one `nextval` of an id-block sequence stands for.
pub(crate) const ID_BLOCK: i64 = 1024;

/// Any number: it only has to be the same for every instance.
const MIGRATION_LOCK: i64 = 0x1505_0083;

/// Why the schema could not be brought up to date or read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("schema version {found} is newer than this build knows ({known})")]
    TooNew { found: usize, known: usize },
    #[error("it is not an isoswitch journal (no schema version recorded)")]
    NotAJournal,
}

/// How many migrations the database has had; 0 without any.
async fn version(client: &impl tokio_postgres::GenericClient) -> Result<usize, SchemaError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await?;
    Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(usize::MAX))
}

/// Applies the migrations the database has not had, all in one transaction
/// under an advisory lock.
pub(crate) async fn migrate(client: &mut Client) -> Result<usize, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await?;
    let found = version(&tx).await?;
    if found > MIGRATIONS.len() {
        return Err(SchemaError::TooNew {
            found,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(index as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len() - found.min(MIGRATIONS.len()))
}

/// The schema version of a database a tool reads, which is never migrated.
pub(crate) async fn readable_version(client: &Client) -> Result<usize, SchemaError> {
    let exists = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get::<_, bool>(0);
    let found = if exists { version(client).await? } else { 0 };
    if found == 0 {
        return Err(SchemaError::NotAJournal);
    }
    if found > MIGRATIONS.len() {
        return Err(SchemaError::TooNew {
            found,
            known: MIGRATIONS.len(),
        });
    }
    Ok(found)
}
