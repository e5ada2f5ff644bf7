//! The transaction journal and the store-and-forward queue: two narrow traits
//! the switch writes through, an SQLite backend (one writer thread, group
//! commit) and an in-memory one for tests. The switch never names a database.

pub mod card_data;
pub mod config;
mod find_sql;
pub mod idempotency;
pub mod memory;
pub mod postgres;
pub mod record;
pub mod recurring;
mod rows;
pub mod shift;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use card_data::{CardVault, DataKey, KeyError};
pub use idempotency::{IdempotencyStore, MemoryIdempotency};
pub use memory::MemoryJournal;
pub use postgres::{PgJournal, PgOptions, PgReader};
pub use record::{
    ClearPan, DecidedBy, Forward, InDoubt, Outcome, Purged, ReversalFields, ReversalState, SafId,
    SafItem, SafKind, SafLink, SafNew, SafState, Stats, StatsRow, TimeRange, TxnId, TxnQuery,
    TxnRecord, TxnStart,
};
pub use recurring::{MemoryRecurring, RecurringStore, SavedCard, ScheduleRecord};
pub use shift::{ReportedTotals, ShiftClose, ShiftCloseNew, ShiftTotals, Tally};
pub use sqlite::{JournalReader, SqliteJournal, SqliteOptions};

/// What a journal call resolves to. Boxed so the traits stay object-safe
/// (`Arc<dyn Journal>`); one allocation is small beside a commit.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// When a write's future resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Once the record is committed to storage: an approval waits for it.
    #[default]
    Commit,
    /// Once the writer has accepted it; a crash may lose the last records.
    Async,
}

/// Any error from storage cannot be cloned, but a failed group commit must
/// reach every caller in it, so causes are shared.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a journal call failed. Each names the file and the operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal {path}: {cause}")]
    Open { path: PathBuf, cause: Cause },
    #[error("cannot write the journal {path} ({op}): {cause}")]
    Write {
        path: PathBuf,
        op: &'static str,
        cause: Cause,
    },
    #[error("cannot read the journal {path} ({op}): {cause}")]
    Read {
        path: PathBuf,
        op: &'static str,
        cause: Cause,
    },
    #[error("journal key: {0}")]
    Key(Arc<KeyError>),
    #[error(
        "card data of {record} in the journal does not open: tampered with or under another key"
    )]
    Tampered { record: String },
    #[error("{op}: no {what} {id} in the journal")]
    Unknown {
        op: &'static str,
        what: &'static str,
        id: i64,
    },
    #[error("the journal {path} is closed")]
    Closed { path: PathBuf },
}

impl From<KeyError> for JournalError {
    fn from(e: KeyError) -> Self {
        JournalError::Key(Arc::new(e))
    }
}

/// The journal's last write failure, for `/readyz`: ready when the last write
/// succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    /// The last failure's message and unix ms, kept after recovery for the record.
    pub last_error: Option<(String, i64)>,
}

/// The shared health cell a writer updates and readers copy.
#[derive(Debug)]
pub(crate) struct HealthCell(Mutex<Health>);

impl HealthCell {
    pub(crate) fn new() -> HealthCell {
        metrics::gauge!("isoswitch_journal_ready").set(1.0);
        HealthCell(Mutex::new(Health {
            ready: true,
            last_error: None,
        }))
    }

    pub(crate) fn get(&self) -> Health {
        self.lock().clone()
    }

    pub(crate) fn succeeded(&self) {
        let mut health = self.lock();
        if !health.ready {
            metrics::gauge!("isoswitch_journal_ready").set(1.0);
        }
        health.ready = true;
    }

    /// Also sets `isoswitch_journal_ready` to 0, which stays until a write
    /// succeeds: an alert on it holds while there is no traffic to fail.
    pub(crate) fn failed(&self, error: &JournalError) {
        let mut health = self.lock();
        metrics::gauge!("isoswitch_journal_ready").set(0.0);
        health.ready = false;
        health.last_error = Some((error.to_string(), now_ms()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        // A poisoned cell still holds a whole `Health`: it is only ever assigned.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One row per transaction, updated through its life.
pub trait Journal: Send + Sync {
    /// The write-ahead record: before a request is forwarded, with what its
    /// reversal needs.
    fn begin(&self, start: TxnStart) -> StoreFuture<'_, TxnId>;
    /// What the terminal was answered.
    fn record_outcome(&self, id: TxnId, outcome: Outcome) -> StoreFuture<'_, ()>;
    /// Sets the reversal state by hand. The queue keeps it up to date on its
    /// own (see [`SafStore`]); this is for what happens outside the queue.
    fn set_reversal(&self, id: TxnId, state: ReversalState) -> StoreFuture<'_, ()>;
    fn find(&self, query: TxnQuery) -> StoreFuture<'_, Vec<TxnRecord>>;
    fn stats(&self, range: TimeRange) -> StoreFuture<'_, Stats>;
    /// Forwarded requests received before `received_before_ms` with no
    /// recorded answer and no reversal yet, oldest first: each needs its
    /// reversal queued. At start-up, `i64::MAX` takes them all; while running,
    /// a cutoff of now − 2 × the timeout leaves alone those still in flight.
    fn in_doubt(&self, received_before_ms: i64) -> StoreFuture<'_, Vec<InDoubt>>;
    /// What a reversal of `id` needs (for a terminal's own 0400, before or
    /// after a restart); `None` when it was never forwarded.
    fn reversal_fields(&self, id: TxnId) -> StoreFuture<'_, Option<ReversalFields>>;
    fn health(&self) -> Health;
    /// Retention: deletes the transactions received before
    /// `received_before_ms` and the queue items closed (acknowledged or
    /// failed) before it. A pending item is never deleted, nor a transaction
    /// any queue item still names, so a transaction outlives its queue items.
    /// SQLite deletes in bounded chunks, so writes go on meanwhile.
    fn purge(&self, received_before_ms: i64) -> StoreFuture<'_, Purged>;
    /// Marks `id` cancelled by its terminal (a reversal within its shift) at
    /// `at_ms`; a second call keeps the first time.
    fn cancel(&self, id: TxnId, at_ms: i64) -> StoreFuture<'_, ()>;
    /// Records a shift close; its id.
    fn record_close(&self, close: ShiftCloseNew) -> StoreFuture<'_, i64>;
    /// The newest close of `terminal` (of that `batch`, when given).
    fn last_close(
        &self,
        terminal: &str,
        batch: Option<&str>,
    ) -> StoreFuture<'_, Option<ShiftClose>>;
}

/// The journal and the queue the switch writes through: one store (SQLite,
/// memory) seen through both traits.
#[derive(Clone)]
pub struct Stores {
    pub journal: Arc<dyn Journal>,
    pub queue: Arc<dyn SafStore>,
    /// Whether anything survives a restart (false for the in-memory store).
    pub persistent: bool,
}

impl Stores {
    pub fn new<S: Journal + SafStore + 'static>(store: Arc<S>, persistent: bool) -> Stores {
        Stores {
            journal: store.clone(),
            queue: store,
            persistent,
        }
    }

    /// A fresh in-memory store: for tests, and for `durability = "none"`
    /// (which keeps the newest [`Stores::IN_MEMORY_TRANSACTIONS`]).
    pub fn in_memory() -> Stores {
        Stores::new(
            Arc::new(MemoryJournal::with_capacity(Stores::IN_MEMORY_TRANSACTIONS)),
            false,
        )
    }

    /// How many transactions the in-memory store keeps (a few hundred MiB at
    /// most); terminal reversals within minutes are matched in memory anyway
    /// (`switch::originals`).
    pub const IN_MEMORY_TRANSACTIONS: usize = 200_000;
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("persistent", &self.persistent)
            .finish_non_exhaustive()
    }
}

/// The persistent store-and-forward queue of reversals and advices, FIFO per issuer.
///
/// A reversal item (`SafKind::Reversal` with a `txn_id`) carries its
/// transaction's reversal state along in the same write: `enqueue` sets it
/// `queued`, `mark_attempt` `sent` (unless already acknowledged or failed),
/// `acknowledge` `acknowledged` and `fail` `failed`. Advices leave it alone.
pub trait SafStore: Send + Sync {
    /// Queues `item`. A transaction has at most one reversal: a second
    /// reversal for the same `txn_id` is not an error and queues nothing, and
    /// the id returned then names no item. Items without a `txn_id` are never
    /// taken for duplicates.
    fn enqueue(&self, item: SafNew) -> StoreFuture<'_, SafId>;
    /// Up to `limit` pending items of `issuer` whose next attempt is due at
    /// `now_ms`, oldest first.
    fn due(&self, issuer: &str, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<SafItem>>;
    /// Counts a send (before it goes out, so a crash replays it as a repeat)
    /// and sets when the next one is due.
    fn mark_attempt(&self, id: SafId, at_ms: i64, next_attempt_at_ms: i64) -> StoreFuture<'_, ()>;
    /// The issuer answered: the item leaves the queue.
    fn acknowledge(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()>;
    /// The item expired unanswered: it leaves the queue, marked failed.
    fn fail(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()>;
    /// Pending items of `issuer`.
    fn depth(&self, issuer: &str) -> StoreFuture<'_, u64>;
}
