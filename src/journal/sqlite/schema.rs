//! The SQLite schema as a list of migrations applied in order; `schema_version`
//! records how many have run, so a database opened by an older build is brought
//! up to date and one from a newer build is refused.

use rusqlite::{Connection, OptionalExtension as _};

/// Each entry is one migration; never edit a released one, append another.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the journal and the store-and-forward queue.
    "CREATE TABLE txn (
        id INTEGER PRIMARY KEY,
        received_at_ms INTEGER NOT NULL,
        listener TEXT NOT NULL,
        channel TEXT NOT NULL,
        mti TEXT NOT NULL,
        processing_code TEXT,
        pan_masked TEXT,
        pan_last4 TEXT,
        pan_hash BLOB,
        amount INTEGER,
        currency INTEGER,
        terminal_id TEXT,
        merchant_id TEXT,
        terminal_stan TEXT,
        terminal_rrn TEXT,
        route TEXT,
        issuer TEXT,
        upstream_stan TEXT,
        upstream_rrn TEXT,
        fields_nonce BLOB,
        fields_sealed BLOB,
        answered_at_ms INTEGER,
        response_code TEXT,
        decided_by TEXT,
        auth_code TEXT,
        latency_us INTEGER,
        reversal TEXT NOT NULL DEFAULT 'none'
    );
    CREATE INDEX txn_terminal_rrn ON txn (terminal_rrn);
    CREATE INDEX txn_upstream_rrn ON txn (upstream_rrn);
    CREATE INDEX txn_terminal_stan ON txn (terminal_id, terminal_stan);
    CREATE INDEX txn_last4 ON txn (pan_last4);
    CREATE INDEX txn_pan_hash ON txn (pan_hash);
    CREATE INDEX txn_time ON txn (received_at_ms);
    CREATE INDEX txn_in_doubt ON txn (id)
        WHERE issuer IS NOT NULL AND response_code IS NULL AND reversal = 'none';
    CREATE TABLE saf (
        id INTEGER PRIMARY KEY,
        issuer TEXT NOT NULL,
        kind TEXT NOT NULL,
        txn_id INTEGER,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL,
        next_attempt_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        last_attempt_at_ms INTEGER,
        closed_at_ms INTEGER,
        fields_nonce BLOB,
        fields_sealed BLOB
    );
    CREATE INDEX saf_pending ON saf (issuer, id) WHERE state = 'pending';
    CREATE INDEX saf_txn ON saf (txn_id);",
    // 2: no index on the PAN hash. Hashes are random, so every insert
    // dirtied a random page of it: a 4 KiB log write per record, the largest
    // cost of a commit. A look-up by PAN goes through the last-4 index and
    // compares the hash on the few rows it yields.
    "DROP INDEX IF EXISTS txn_pan_hash;",
    // 3: at most one reversal per transaction, whatever its state (enqueue
    // ignores a second one), and the closed items retention deletes.
    "CREATE UNIQUE INDEX saf_one_reversal ON saf (txn_id) WHERE kind = 'reversal';
    CREATE INDEX saf_closed ON saf (closed_at_ms) WHERE state != 'pending';",
    // 4: the MTI an item is first sent as (repeats are its xxx1).
    "ALTER TABLE saf ADD COLUMN mti TEXT;
    UPDATE saf SET mti = CASE kind WHEN 'reversal' THEN '0400' ELSE '0220' END;",
    // 5: shifts, refunds and settlement. A refund names its original sale;
    // a sale its terminal cancelled within its shift says when; a refusal
    // may say why. A shift is a terminal's transactions after its last
    // close (`last_txn_id`), so closes and the per-terminal index make
    // "in this shift" one range read. The partial indexes cost nothing for
    // the rows (nearly all) that leave their column empty.
    "ALTER TABLE txn ADD COLUMN original_id INTEGER;
    ALTER TABLE txn ADD COLUMN cancelled_at_ms INTEGER;
    ALTER TABLE txn ADD COLUMN reason TEXT;
    CREATE INDEX txn_original ON txn (original_id) WHERE original_id IS NOT NULL;
    CREATE INDEX txn_cancelled ON txn (cancelled_at_ms) WHERE cancelled_at_ms IS NOT NULL;
    CREATE INDEX txn_terminal ON txn (terminal_id, id);
    CREATE TABLE shift_close (
        id INTEGER PRIMARY KEY,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT,
        batch TEXT NOT NULL,
        closed_at_ms INTEGER NOT NULL,
        last_txn_id INTEGER NOT NULL,
        terminal_totals TEXT NOT NULL,
        switch_totals TEXT NOT NULL,
        response_code TEXT NOT NULL
    );
    CREATE INDEX shift_close_terminal ON shift_close (terminal_id, batch, id);",
    // 6: the virtual terminal's idempotency keys: a write repeated with a key
    // already seen gets the first result back, across restarts too. `scope`
    // keeps one terminal's keys apart from another's; `result` is the JSON
    // answer (no card number, no CVV2: neither is in it).
    "CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    );",
    // 7: the virtual terminal's cards on file (the card number sealed with
    // the data key, `card:<token>` as associated data; only brand, last 4 and
    // expiry in clear) and recurring schedules (one JSON document each, with
    // when it is next due beside it for the runner's look-up).
    "CREATE TABLE vault_card (
        token TEXT PRIMARY KEY,
        terminal_id TEXT NOT NULL,
        merchant_id TEXT NOT NULL,
        brand TEXT NOT NULL,
        last4 TEXT NOT NULL,
        expiry TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        payment_id INTEGER NOT NULL,
        pan_nonce BLOB NOT NULL,
        pan_sealed BLOB NOT NULL
    );
    CREATE INDEX vault_card_terminal ON vault_card (terminal_id);
    CREATE TABLE schedule (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        terminal_id TEXT NOT NULL,
        next_due_ms INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX schedule_terminal ON schedule (terminal_id, seq);
    CREATE INDEX schedule_due ON schedule (next_due_ms) WHERE next_due_ms IS NOT NULL;",
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("schema version {found} is newer than this build knows ({known})")]
    TooNew { found: usize, known: usize },
    #[error("it is not an isoswitch journal (no schema version recorded)")]
    NotAJournal,
}

/// How many migrations `conn` has had; 0 for a database without any.
fn version(conn: &Connection) -> rusqlite::Result<usize> {
    Ok(conn
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX)))
}

/// The schema version of a database a tool reads, which is never migrated:
/// older versions read the same columns, a newer one may not.
pub(crate) fn readable_version(conn: &Connection) -> Result<usize, SchemaError> {
    let recorded: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |row| row.get(0),
    )?;
    let found = if recorded > 0 { version(conn)? } else { 0 };
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

/// Applies the migrations `conn` has not had, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), SchemaError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let found = version(conn)?;
    if found > MIGRATIONS.len() {
        return Err(SchemaError::TooNew {
            found,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [index as i64 + 1],
        )?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_applies_each_migration_once() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        migrate(&mut conn).expect("first");
        migrate(&mut conn).expect("second");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, MIGRATIONS.len() as i64);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        migrate(&mut conn).expect("migrate");
        conn.execute("INSERT INTO schema_version (version) VALUES (99)", [])
            .expect("insert");
        assert!(matches!(
            migrate(&mut conn),
            Err(SchemaError::TooNew { found: 99, .. })
        ));
        assert!(matches!(
            readable_version(&conn),
            Err(SchemaError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn a_reader_takes_an_older_schema_as_it_is_and_refuses_a_stranger() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        assert!(matches!(
            readable_version(&conn),
            Err(SchemaError::NotAJournal)
        ));
        migrate(&mut conn).expect("migrate");
        conn.execute("DELETE FROM schema_version WHERE version > 1", [])
            .expect("back to version 1");
        assert_eq!(readable_version(&conn).expect("readable"), 1);
        assert_eq!(version(&conn).expect("version"), 1, "not migrated");
    }
}
