//! The journal as the look-up tools read it: opened read-only, so it is never
//! created, migrated or written, and read beside a running switch's writer
//! (WAL readers never wait for it). The key is needed only to hash a PAN.
//!
//! A journal no connection has open has no `-wal` file (the last to close
//! removes it), and is read as immutable: no `-wal` or `-shm` is made beside
//! it, which a read-only directory could not hold and which, made by another
//! user (root, say), would lock the switch out of its own journal. A switch
//! starting during such a read may give that read an error; never the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::reader::Reader;
use super::schema::{self, SchemaError};
use super::FileIdentity;
use crate::journal::card_data::{CardVault, DataKey};
use crate::journal::record::{Stats, TimeRange, TxnQuery, TxnRecord};
use crate::journal::{Cause, JournalError};

/// Read-only access to a journal file: `find` and `stats`, synchronously.
/// Each read opens the file afresh, so it sees the journal as it is then.
pub struct JournalReader {
    reader: Reader,
}

impl std::fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.reader.path)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens the journal at `path` read-only. `key` is needed only for
    /// look-ups by PAN; without it, everything else reads the same.
    pub fn open(path: &Path, key: Option<DataKey>) -> Result<JournalReader, JournalError> {
        let conn = connect(path)?;
        Ok(JournalReader {
            reader: Reader {
                path: path.to_owned(),
                conn: Some(conn),
                vault: key.map(|k| Arc::new(CardVault::new(&k))),
                read_only: true,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.reader.path
    }

    /// As [`crate::journal::Journal::find`]; a query by PAN needs the key.
    pub fn find(&mut self, query: &TxnQuery) -> Result<Vec<TxnRecord>, JournalError> {
        let pan_hash = match (&query.pan, &self.reader.vault) {
            (None, _) => None,
            (Some(pan), Some(vault)) => Some(vault.pan_hash(pan.reveal())),
            (Some(_), None) => {
                return Err(JournalError::Read {
                    path: self.reader.path.clone(),
                    op: "find",
                    cause: cause("a look-up by PAN needs the journal's data key"),
                })
            }
        };
        self.reader.conn = None;
        self.reader.find(query, pan_hash)
    }

    /// The transactions received or cancelled within `range`, oldest first:
    /// what a settlement report of those days reads.
    pub fn settlement(&mut self, range: TimeRange) -> Result<Vec<TxnRecord>, JournalError> {
        self.reader.conn = None;
        self.reader.settlement(range)
    }

    /// As [`crate::journal::Journal::stats`].
    pub fn stats(&mut self, range: TimeRange) -> Result<Stats, JournalError> {
        self.reader.conn = None;
        self.reader.stats(range)
    }
}

fn cause(text: impl Into<String>) -> Cause {
    Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
        text.into(),
    ))
}

/// A file SQLite keeps beside a WAL database: `-wal` or `-shm`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut beside = path.as_os_str().to_owned();
    beside.push(suffix);
    PathBuf::from(beside)
}

/// `path` as an SQLite URI that opens it read-only and immutable.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?mode=ro&immutable=1");
    uri
}

/// A read-only connection to an existing journal whose schema this build
/// can read. Each refusal names the file and says why.
pub(crate) fn connect(path: &Path) -> Result<(Connection, FileIdentity), JournalError> {
    let failed = |cause: Cause| JournalError::Open {
        path: path.to_owned(),
        cause,
    };
    let metadata = std::fs::metadata(path).map_err(|e| failed(Arc::new(e)))?;
    if metadata.is_dir() {
        return Err(failed(cause("it is a directory")));
    }
    // SQLite reads an empty file as an empty database; say what it is.
    if metadata.len() == 0 {
        return Err(failed(cause("the file is empty")));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if beside(path, "-wal").exists() {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    }
    .map_err(|e| failed(Arc::new(e)))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| failed(Arc::new(e)))?;
    // The first read is where a WAL journal needs its -shm file.
    match schema::readable_version(&conn) {
        Ok(_) => {}
        Err(SchemaError::Sqlite(e)) if no_shm(&e) && !beside(path, "-shm").exists() => {
            return Err(failed(cause(format!(
                "{} does not exist and cannot be created (a read-only directory?): SQLite \
                 needs it to read a journal the switch left open; read a copy of the \
                 directory, or where that file can be created",
                beside(path, "-shm").display()
            ))));
        }
        Err(e) => return Err(failed(Arc::new(e))),
    }
    conn.set_prepared_statement_cache_capacity(32);
    let identity =
        FileIdentity::of(path).ok_or_else(|| failed(cause("the file vanished once opened")))?;
    Ok((conn, identity))
}

/// Whether `error` is SQLite failing to open or initialise the shared-memory
/// file a WAL reader needs.
fn no_shm(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)
    )
}
