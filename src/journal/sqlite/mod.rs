//! The embedded journal: one SQLite file (WAL) any SQLite tool can open. Writes
//! go through a bounded channel to one writer thread that commits in groups
//! (and, by default, a second that syncs the log meanwhile); reads use their
//! own connection. Card data is sealed before it is queued.

mod checkpointer;
mod idempotency;
mod read_only;
mod reader;
mod recurring;
mod schema;
mod syncer;
mod telemetry;
mod writer;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use self::checkpointer::Checkpointer;
pub use self::read_only::JournalReader;
use self::reader::Reader;
use self::syncer::Syncer;
use self::telemetry::JournalMetrics;
use self::writer::{Applied, Request, SafRow, TxnRow, Write, Writer};
use super::card_data::{saf_record, txn_record, CardVault, DataKey};
use super::record::{
    InDoubt, Outcome, Purged, ReversalFields, ReversalState, SafId, SafItem, SafNew, Stats,
    TimeRange, TxnId, TxnQuery, TxnRecord, TxnStart,
};
use super::shift::{ShiftClose, ShiftCloseNew};
use super::{Durability, Health, HealthCell, Journal, JournalError, SafStore, StoreFuture};

/// How the journal is opened.
#[derive(Debug)]
pub struct SqliteOptions {
    /// Created if missing.
    pub path: PathBuf,
    pub key: DataKey,
    pub durability: Durability,
    /// Writes waiting for the writer; when full, callers wait (backpressure).
    pub queue_capacity: usize,
    /// Most records one commit takes.
    pub max_batch: usize,
    /// Most rows of each table one retention commit deletes, so `purge`
    /// never holds the write lock long.
    pub purge_chunk: usize,
    /// Sync the log on a second thread while the writer commits the next
    /// batch, rather than inside each commit. Callers are acknowledged only
    /// once their batch is on disk either way.
    pub overlap_sync: bool,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>, key: DataKey) -> SqliteOptions {
        SqliteOptions {
            path: path.into(),
            key,
            durability: Durability::Commit,
            queue_capacity: 16_384,
            max_batch: 4_096,
            purge_chunk: 10_000,
            overlap_sync: true,
        }
    }
}

/// The device and inode under a path: when they change, the file the
/// connection holds was removed or replaced and writes to it would be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    pub(crate) fn of(path: &Path) -> Option<FileIdentity> {
        std::fs::metadata(path).ok().map(|m| FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Opens (the writer: creating and migrating) the database at `path`.
///
/// `synchronous = FULL`: in WAL mode, NORMAL syncs the log only at
/// checkpoints, so a power cut could take back a commit the caller was told
/// of; FULL syncs the log at every commit, which group commit pays once per
/// batch. With `overlap_sync` the writer lowers it to NORMAL and its syncer
/// thread syncs the log before anyone is told (`syncer.rs`).
pub(crate) fn open_connection(
    path: &Path,
    writer: bool,
) -> Result<(Connection, FileIdentity), JournalError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| JournalError::Open {
        path: path.to_owned(),
        cause: Arc::from(e),
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| failed(e.into()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| failed(e.into()))?;
    if writer {
        // The mode comes back as a row; anything but "wal" (a read-only or
        // network file system) is refused rather than silently weaker.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| failed(e.into()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(failed(format!("journal_mode is {mode}, not wal").into()));
        }
        // Checkpoints are the checkpointer thread's (`checkpointer.rs`): the
        // writer's connection only watches the log grow. The cache stays at
        // 8 MiB: SQLite walks the whole page cache at every commit
        // (`pcache1TruncateUnsafe`, 14 % of the writer at 64 MiB), which
        // costs more than reading cold index pages back from the OS's cache.
        conn.execute_batch(
            "PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -8192;",
        )
        .map_err(|e| failed(e.into()))?;
        checkpointer::watch_log(&conn);
        schema::migrate(&mut conn).map_err(|e| failed(e.into()))?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    // Identify the file after opening it, so a file created here counts.
    let identity =
        FileIdentity::of(path).ok_or_else(|| failed("the file vanished once opened".into()))?;
    Ok((conn, identity))
}

/// The SQLite journal and store-and-forward queue.
pub struct SqliteJournal {
    path: PathBuf,
    durability: Durability,
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    reader: Arc<Mutex<Reader>>,
    vault: Arc<CardVault>,
    next_txn: AtomicI64,
    next_saf: AtomicI64,
    purge_chunk: usize,
    health: Arc<HealthCell>,
    /// Writes that found the queue full (the writer keeps the other metrics).
    backpressure: metrics::Counter,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteJournal {
    /// Opens or creates the database and starts its writer thread. One clear
    /// error when the file cannot be opened, written or migrated.
    pub fn open(options: SqliteOptions) -> Result<SqliteJournal, JournalError> {
        let SqliteOptions {
            path,
            key,
            durability,
            queue_capacity,
            max_batch,
            purge_chunk,
            overlap_sync,
        } = options;
        let (conn, identity) = open_connection(&path, true)?;
        writer::leave_sync_to_syncer(&conn, overlap_sync).map_err(|e| JournalError::Open {
            path: path.clone(),
            cause: Arc::new(e),
        })?;
        let max_id = |table: &str| -> Result<i64, JournalError> {
            conn.query_row(
                &format!("SELECT coalesce(max(id), 0) FROM {table}"),
                [],
                |row| row.get(0),
            )
            .map_err(|e| JournalError::Open {
                path: path.clone(),
                cause: Arc::new(e),
            })
        };
        let (next_txn, next_saf) = (max_id("txn")? + 1, max_id("saf")? + 1);
        let vault = Arc::new(CardVault::new(&key));
        let reader = Reader {
            path: path.clone(),
            conn: Some(open_connection(&path, false)?),
            vault: Some(Arc::clone(&vault)),
            read_only: false,
        };
        let health = Arc::new(HealthCell::new());
        let metrics = JournalMetrics::new();
        let (requests, queue) = mpsc::channel(queue_capacity.max(1));
        let syncer = overlap_sync
            .then(|| Syncer::start(Arc::clone(&health), metrics.clone()))
            .transpose()
            .map_err(|e| JournalError::Open {
                path: path.clone(),
                cause: Arc::new(e),
            })?;
        let checkpointer = Checkpointer::start(path.clone()).map_err(|e| JournalError::Open {
            path: path.clone(),
            cause: Arc::new(e),
        })?;
        let writer = Writer {
            path: path.clone(),
            conn: Some((conn, identity)),
            checkpointer,
            max_batch: max_batch.max(1),
            health: Arc::clone(&health),
            metrics: metrics.clone(),
            last_logged: None,
            syncer,
            wal: None,
        };
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| JournalError::Open {
                path: path.clone(),
                cause: Arc::new(e),
            })?;
        Ok(SqliteJournal {
            path,
            durability,
            requests: Some(requests),
            writer: Some(writer),
            reader: Arc::new(Mutex::new(reader)),
            vault,
            next_txn: AtomicI64::new(next_txn),
            next_saf: AtomicI64::new(next_saf),
            purge_chunk: purge_chunk.max(1),
            health,
            backpressure: metrics.backpressure,
        })
    }

    /// Opens an existing journal for the look-up tools: read-only, never
    /// creating, migrating or writing it, beside a switch that is writing
    /// it. `key` is needed only to look up by PAN.
    pub fn open_read_only(
        path: &Path,
        key: Option<DataKey>,
    ) -> Result<JournalReader, JournalError> {
        JournalReader::open(path, key)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes queued for the writer and not yet taken: at the queue's
    /// capacity, callers are waiting (backpressure), which a gauge should show.
    pub fn queued_writes(&self) -> usize {
        self.requests
            .as_ref()
            .map_or(0, |r| r.max_capacity() - r.capacity())
    }

    /// Lets the writer commit what is queued, then closes the database.
    pub fn close(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            // A writer that panicked has already answered nobody; there is
            // nothing more to flush.
            let _ = writer.join();
        }
    }

    /// Queues `write`; in commit mode, resolves once it is committed.
    async fn submit(&self, write: Write) -> Result<(), JournalError> {
        match self.durability {
            Durability::Async => self.queue(Request { write, ack: None }).await,
            Durability::Commit => self.submit_and_wait(write).await.map(drop),
        }
    }

    /// Queues `write` and resolves once it is committed, whatever the
    /// durability, with what it did.
    async fn submit_and_wait(&self, write: Write) -> Result<Applied, JournalError> {
        let (ack, committed) = oneshot::channel();
        self.queue(Request {
            write,
            ack: Some(ack),
        })
        .await?;
        committed.await.map_err(|_| self.closed())?
    }

    /// Hands `request` to the writer, waiting while its queue is full
    /// (counted: backpressure on the hot path is worth seeing).
    async fn queue(&self, request: Request) -> Result<(), JournalError> {
        let requests = self.requests.as_ref().ok_or_else(|| self.closed())?;
        match requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(request)) => {
                self.backpressure.increment(1);
                requests.send(request).await.map_err(|_| self.closed())
            }
            Err(TrySendError::Closed(_)) => Err(self.closed()),
        }
    }

    fn closed(&self) -> JournalError {
        JournalError::Closed {
            path: self.path.clone(),
        }
    }

    /// Runs a read on the blocking pool, off the async workers.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Reader) -> Result<T, JournalError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let reader = Arc::clone(&self.reader);
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                // A panic mid-read leaves the connection usable; reads hold no state.
                let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
                read(&mut reader)
            })
            .await;
            joined.map_err(|e| JournalError::Read {
                path: self.path.clone(),
                op: "read task",
                cause: Arc::new(e),
            })?
        })
    }

    fn prepare_txn(&self, start: TxnStart) -> Result<TxnRow, JournalError> {
        let id = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let pan_last4 = start.pan.as_ref().map(|p| p.last4().to_owned());
        let (record, reversal) = TxnRecord::begun(TxnId(id), start, |pan| self.vault.pan_hash(pan));
        let fields = reversal
            .map(|r| self.vault.seal(&txn_record(id), r.as_bytes()))
            .transpose()?;
        Ok(TxnRow {
            record,
            pan_last4,
            fields,
        })
    }
}

impl Drop for SqliteJournal {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl Journal for SqliteJournal {
    fn begin(&self, start: TxnStart) -> StoreFuture<'_, TxnId> {
        Box::pin(async move {
            let row = self.prepare_txn(start)?;
            let id = row.record.id;
            self.submit(Write::Begin(Box::new(row))).await?;
            Ok(id)
        })
    }

    fn record_outcome(&self, id: TxnId, outcome: Outcome) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Outcome { id: id.0, outcome }))
    }

    fn set_reversal(&self, id: TxnId, state: ReversalState) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Reversal { id: id.0, state }))
    }

    fn find(&self, query: TxnQuery) -> StoreFuture<'_, Vec<TxnRecord>> {
        let pan_hash = query.pan.as_ref().map(|p| self.vault.pan_hash(p.reveal()));
        self.read(move |reader| reader.find(&query, pan_hash))
    }

    fn stats(&self, range: TimeRange) -> StoreFuture<'_, Stats> {
        self.read(move |reader| reader.stats(range))
    }

    fn in_doubt(&self, received_before_ms: i64) -> StoreFuture<'_, Vec<InDoubt>> {
        self.read(move |reader| reader.in_doubt(received_before_ms))
    }

    fn reversal_fields(&self, id: TxnId) -> StoreFuture<'_, Option<ReversalFields>> {
        self.read(move |reader| reader.reversal_fields(id))
    }

    fn health(&self) -> Health {
        self.health.get()
    }

    fn cancel(&self, id: TxnId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Cancel { id: id.0, at_ms }))
    }

    fn record_close(&self, close: ShiftCloseNew) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            match self.submit_and_wait(Write::Close(Box::new(close))).await? {
                Applied::Inserted(id) => Ok(id),
                _ => unreachable!("the writer answers a close with its row id"),
            }
        })
    }

    fn last_close(
        &self,
        terminal: &str,
        batch: Option<&str>,
    ) -> StoreFuture<'_, Option<ShiftClose>> {
        let (terminal, batch) = (terminal.to_owned(), batch.map(str::to_owned));
        self.read(move |reader| reader.last_close(&terminal, batch.as_deref()))
    }

    fn purge(&self, received_before_ms: i64) -> StoreFuture<'_, Purged> {
        Box::pin(async move {
            let mut total = Purged::default();
            loop {
                let write = Write::Purge {
                    before_ms: received_before_ms,
                    chunk: self.purge_chunk,
                };
                let Applied::Purged(chunk) = self.submit_and_wait(write).await? else {
                    unreachable!("the writer answers a purge with its counts")
                };
                total.add(chunk);
                let full = |n: u64| n >= self.purge_chunk as u64;
                if !full(chunk.transactions) && !full(chunk.queue_items) {
                    return Ok(total);
                }
            }
        })
    }
}

impl SafStore for SqliteJournal {
    fn enqueue(&self, item: SafNew) -> StoreFuture<'_, SafId> {
        Box::pin(async move {
            let id = self.next_saf.fetch_add(1, Ordering::Relaxed);
            let fields = self.vault.seal(&saf_record(id), item.fields.as_bytes())?;
            let row = SafRow {
                id,
                issuer: item.issuer,
                kind: item.kind,
                mti: item.mti.as_str().to_owned(),
                txn_id: item.txn_id.map(|t| t.0),
                created_at_ms: item.created_at_ms,
                expires_at_ms: item.expires_at_ms,
                fields,
            };
            self.submit(Write::Enqueue(Box::new(row))).await?;
            Ok(SafId(id))
        })
    }

    fn due(&self, issuer: &str, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<SafItem>> {
        let issuer = issuer.to_owned();
        self.read(move |reader| reader.due(&issuer, now_ms, limit))
    }

    fn mark_attempt(&self, id: SafId, at_ms: i64, next_attempt_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Attempt {
            id: id.0,
            at_ms,
            next_ms: next_attempt_at_ms,
        }))
    }

    fn acknowledge(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Acknowledge { id: id.0, at_ms }))
    }

    fn fail(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Fail { id: id.0, at_ms }))
    }

    fn depth(&self, issuer: &str) -> StoreFuture<'_, u64> {
        let issuer = issuer.to_owned();
        self.read(move |reader| reader.depth(&issuer))
    }
}
