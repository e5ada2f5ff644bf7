//! The shared journal: PostgreSQL, for several switch instances at once.
//! Writes go through a bounded channel to one writer task per instance that
//! commits in groups (`writer.rs`); reads and queue leases use pooled
//! connections (`reader.rs`); each instance keeps a heartbeat row and
//! recovers dead ones (`instance.rs`). Same traits, same guarantees as
//! SQLite: a write resolves once committed, a failed commit fails every
//! caller in it, and the switch answers 96 rather than approve unrecorded.
//!
//! Chosen client: tokio-postgres with a deadpool pool. It is the async
//! driver the switch's runtime already speaks, pipelines the statements of
//! a batch on one connection, and needs no compile-time database (sqlx's
//! checked queries would); the pool replaces connections the server closed.

mod ids;
mod instance;
mod reader;
mod schema;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use self::ids::IdBlocks;
use self::reader::{read_error, ReadResult};
use self::writer::{Applied, Request, SafRow, TxnRow, Write, Writer};
use super::card_data::{saf_record, txn_record, CardVault, DataKey};
use super::record::{
    InDoubt, Outcome, Purged, ReversalFields, ReversalState, SafId, SafItem, SafNew, Stats,
    TimeRange, TxnId, TxnQuery, TxnRecord, TxnStart,
};
use super::shift::{ShiftClose, ShiftCloseNew};
use super::{Cause, Durability, Health, HealthCell, Journal, JournalError, SafStore, StoreFuture};

/// Whether `text` names a PostgreSQL database rather than a file.
pub fn is_url(text: &str) -> bool {
    text.starts_with("postgresql://") || text.starts_with("postgres://")
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// How the PostgreSQL journal is opened.
#[derive(Debug)]
pub struct PgOptions {
    /// `postgresql://user@host:port/db` (libpq's URL form).
    pub url: String,
    /// Every instance sharing the database needs the same key.
    pub key: DataKey,
    pub durability: Durability,
    /// This instance's id, unique among those sharing the database.
    pub instance: String,
    /// How often this instance's heartbeat row is written.
    pub heartbeat: Duration,
    /// A heartbeat older than this is a dead instance's.
    pub dead_after: Duration,
    /// How long a queue item taken by `due` stays this instance's before
    /// another may take it (an attempt extends it to the item's next attempt).
    pub lease: Duration,
    pub queue_capacity: usize,
    pub max_batch: usize,
    /// Pooled connections: the writer's, reads and leases.
    pub pool_size: usize,
    pub purge_chunk: usize,
}

impl PgOptions {
    pub fn new(url: impl Into<String>, key: DataKey, instance: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            key,
            durability: Durability::Commit,
            instance: instance.into(),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(15),
            lease: Duration::from_secs(30),
            queue_capacity: 16_384,
            max_batch: 4_096,
            pool_size: 8,
            purge_chunk: 10_000,
        }
    }
}

fn cause(text: impl Into<String>) -> Cause {
    Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
        text.into(),
    ))
}

/// A pool for `url`: connections time out rather than hang while the
/// server is unreachable, so callers hear of it (96) within seconds.
fn pool(url: &str, size: usize) -> Result<Pool, JournalError> {
    let name = redacted(url);
    let open = |cause: Cause| JournalError::Open {
        path: name.clone().into(),
        cause,
    };
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| open(Arc::new(e)))?;
    config
        .connect_timeout(Duration::from_secs(3))
        .application_name("isoswitch");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(2))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(3)))
        .recycle_timeout(Some(Duration::from_secs(3)))
        .build()
        .map_err(|e| open(cause(e.to_string())))
}

/// Creates or migrates the schema at `url`; how many migrations it applied.
/// For `isoswitch journal migrate`; the switch does it when it opens.
pub async fn migrate(url: &str) -> Result<usize, JournalError> {
    let name = redacted(url);
    let pool = pool(url, 2)?;
    let mut client = pool.get().await.map_err(|e| JournalError::Open {
        path: name.clone().into(),
        cause: Arc::new(e),
    })?;
    schema::migrate(&mut client)
        .await
        .map_err(|e| JournalError::Open {
            path: name.into(),
            cause: Arc::new(e),
        })
}

/// The PostgreSQL journal and store-and-forward queue of one instance.
pub struct PgJournal {
    name: Arc<str>,
    instance: Arc<str>,
    durability: Durability,
    pool: Pool,
    requests: Option<mpsc::Sender<Request>>,
    vault: Arc<CardVault>,
    txn_ids: IdBlocks,
    saf_ids: IdBlocks,
    purge_chunk: i64,
    lease_ms: i64,
    dead_after_ms: i64,
    health: Arc<HealthCell>,
    stop: CancellationToken,
    backpressure: metrics::Counter,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("database", &self.name)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgJournal {
    /// Connects, creates or migrates the schema, writes this instance's
    /// heartbeat and starts its writer. One clear error when the database
    /// cannot be reached or migrated.
    pub async fn open(options: PgOptions) -> Result<PgJournal, JournalError> {
        let PgOptions {
            url,
            key,
            durability,
            instance,
            heartbeat,
            dead_after,
            lease,
            queue_capacity,
            max_batch,
            pool_size,
            purge_chunk,
        } = options;
        let name: Arc<str> = Arc::from(redacted(&url));
        let open = |cause: Cause| JournalError::Open {
            path: name.as_ref().into(),
            cause,
        };
        if instance.trim().is_empty() {
            return Err(open(cause(
                "[instance] id: expected a name unique among the instances sharing the database",
            )));
        }
        let pool = pool(&url, pool_size)?;
        {
            let mut client = pool.get().await.map_err(|e| open(Arc::new(e)))?;
            schema::migrate(&mut client)
                .await
                .map_err(|e| open(Arc::new(e)))?;
            instance::beat(&**client, &instance, true)
                .await
                .map_err(|e| open(Arc::new(e)))?;
        }
        let instance: Arc<str> = Arc::from(instance);
        let health = Arc::new(HealthCell::new());
        let stop = CancellationToken::new();
        let (requests, queue) = mpsc::channel(queue_capacity.max(1));
        let writer = Writer::new(
            name.clone(),
            pool.clone(),
            instance.clone(),
            millis(lease),
            max_batch,
            health.clone(),
        );
        tokio::spawn(writer.run(queue));
        instance::spawn_heartbeat(
            pool.clone(),
            instance.clone(),
            name.clone(),
            heartbeat,
            health.clone(),
            stop.clone(),
        );
        Ok(PgJournal {
            txn_ids: IdBlocks::new("txn_id_block"),
            saf_ids: IdBlocks::new("saf_id_block"),
            name,
            instance,
            durability,
            pool,
            requests: Some(requests),
            vault: Arc::new(CardVault::new(&key)),
            purge_chunk: i64::try_from(purge_chunk.max(1)).unwrap_or(i64::MAX),
            lease_ms: millis(lease),
            dead_after_ms: millis(dead_after),
            health,
            stop,
            backpressure: metrics::counter!("isoswitch_journal_backpressure_total"),
        })
    }

    /// The database as logs name it (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn closed(&self) -> JournalError {
        JournalError::Closed {
            path: self.name.as_ref().into(),
        }
    }

    async fn submit(&self, write: Write) -> Result<(), JournalError> {
        match self.durability {
            Durability::Async => self.queue(Request { write, ack: None }).await,
            Durability::Commit => self.submit_and_wait(write).await.map(drop),
        }
    }

    async fn submit_and_wait(&self, write: Write) -> Result<Applied, JournalError> {
        let (ack, committed) = oneshot::channel();
        self.queue(Request {
            write,
            ack: Some(ack),
        })
        .await?;
        committed.await.map_err(|_| self.closed())?
    }

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

    /// Runs `read` on a pooled connection, naming the database and `op` in
    /// any error.
    async fn read<T>(
        &self,
        op: &'static str,
        read: impl for<'c> FnOnce(
            &'c deadpool_postgres::Object,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = ReadResult<T>> + Send + 'c>,
        >,
    ) -> Result<T, JournalError> {
        let client = self.pool.get().await.map_err(|e| JournalError::Read {
            path: self.name.as_ref().into(),
            op,
            cause: Arc::new(e),
        })?;
        read(&client)
            .await
            .map_err(|failure| read_error(&self.name, op, failure))
    }

    /// Takes over dead instances' in-doubt transactions (once each), logging
    /// what was taken.
    async fn recover_dead(&self) -> Result<(), JournalError> {
        let mut client = self.pool.get().await.map_err(|e| JournalError::Read {
            path: self.name.as_ref().into(),
            op: "in_doubt",
            cause: Arc::new(e),
        })?;
        let recovered = instance::claim_dead(&mut client, &self.instance, self.dead_after_ms)
            .await
            .map_err(|e| JournalError::Write {
                path: self.name.as_ref().into(),
                op: "claim a dead instance's recovery",
                cause: Arc::new(e),
            })?;
        for dead in recovered {
            metrics::counter!("isoswitch_instances_recovered_total").increment(1);
            tracing::warn!(
                dead = %dead.instance,
                last_heartbeat_ms_ago = super::now_ms() - dead.heartbeat_at_ms,
                in_doubt = dead.transactions,
                "instance's heartbeat is stale; its forwarded requests left unanswered are reversed here"
            );
        }
        Ok(())
    }

    fn prepare_txn(&self, id: i64, start: TxnStart) -> Result<TxnRow, JournalError> {
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

impl Drop for PgJournal {
    fn drop(&mut self) {
        // The writer commits what is queued, then ends with the channel.
        self.requests = None;
        self.stop.cancel();
    }
}

impl Journal for PgJournal {
    fn begin(&self, start: TxnStart) -> StoreFuture<'_, TxnId> {
        Box::pin(async move {
            let id = self.txn_ids.take(&self.pool, &self.name).await?;
            let row = self.prepare_txn(id, start)?;
            self.submit(Write::Begin(Box::new(row))).await?;
            Ok(TxnId(id))
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
        Box::pin(async move {
            self.read("find", |c| {
                Box::pin(async move { reader::find(&***c, &query, pan_hash).await })
            })
            .await
        })
    }

    fn stats(&self, range: TimeRange) -> StoreFuture<'_, Stats> {
        Box::pin(self.read("stats", move |c| {
            Box::pin(async move { reader::stats(&***c, range).await })
        }))
    }

    fn in_doubt(&self, received_before_ms: i64) -> StoreFuture<'_, Vec<InDoubt>> {
        Box::pin(async move {
            self.recover_dead().await?;
            let vault = self.vault.clone();
            let instance = self.instance.clone();
            self.read("in_doubt", move |c| {
                Box::pin(async move {
                    reader::in_doubt(&***c, &vault, &instance, received_before_ms).await
                })
            })
            .await
        })
    }

    fn reversal_fields(&self, id: TxnId) -> StoreFuture<'_, Option<ReversalFields>> {
        let vault = self.vault.clone();
        Box::pin(self.read("reversal_fields", move |c| {
            Box::pin(async move { reader::reversal_fields(&***c, &vault, id).await })
        }))
    }

    fn health(&self) -> Health {
        self.health.get()
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
                    return Err(JournalError::Write {
                        path: self.name.as_ref().into(),
                        op: "purge",
                        cause: cause("the writer did not answer with counts"),
                    });
                };
                total.add(chunk);
                let full = |n: u64| n >= self.purge_chunk as u64;
                if !full(chunk.transactions) && !full(chunk.queue_items) {
                    return Ok(total);
                }
            }
        })
    }

    fn cancel(&self, id: TxnId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Cancel { id: id.0, at_ms }))
    }

    fn record_close(&self, close: ShiftCloseNew) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let json = |totals: Result<String, serde_json::Error>| {
                totals.map_err(|e| JournalError::Write {
                    path: self.name.as_ref().into(),
                    op: "record_close",
                    cause: Arc::new(e),
                })
            };
            let row = writer::CloseRow {
                terminal_totals: json(serde_json::to_string(&close.terminal_totals))?,
                switch_totals: json(serde_json::to_string(&close.switch_totals))?,
                close,
            };
            match self.submit_and_wait(Write::Close(Box::new(row))).await? {
                Applied::Inserted(id) => Ok(id),
                _ => Err(JournalError::Write {
                    path: self.name.as_ref().into(),
                    op: "record_close",
                    cause: cause("the writer did not answer with the close's id"),
                }),
            }
        })
    }

    fn last_close(
        &self,
        terminal: &str,
        batch: Option<&str>,
    ) -> StoreFuture<'_, Option<ShiftClose>> {
        let (terminal, batch) = (terminal.to_owned(), batch.map(str::to_owned));
        Box::pin(self.read("last_close", move |c| {
            Box::pin(async move { reader::last_close(&***c, &terminal, batch.as_deref()).await })
        }))
    }
}

impl SafStore for PgJournal {
    fn enqueue(&self, item: SafNew) -> StoreFuture<'_, SafId> {
        Box::pin(async move {
            let id = self.saf_ids.take(&self.pool, &self.name).await?;
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

    /// Leases what it returns to this instance (see [`reader::lease_due`]).
    fn due(&self, issuer: &str, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<SafItem>> {
        let issuer = issuer.to_owned();
        let vault = self.vault.clone();
        let instance = self.instance.clone();
        let lease_ms = self.lease_ms;
        Box::pin(self.read("due", move |c| {
            Box::pin(async move {
                reader::lease_due(&***c, &vault, &instance, &issuer, now_ms, limit, lease_ms).await
            })
        }))
    }

    fn mark_attempt(&self, id: SafId, at_ms: i64, next_attempt_at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Attempt {
            id: id.0,
            at_ms,
            next_ms: next_attempt_at_ms,
        }))
    }

    /// Only while this instance holds the item's lease; otherwise (another
    /// instance took it after the lease expired, or closed it) a no-op,
    /// counted in `isoswitch_saf_late_closes_total`.
    fn acknowledge(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Acknowledge { id: id.0, at_ms }))
    }

    fn fail(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(self.submit(Write::Fail { id: id.0, at_ms }))
    }

    fn depth(&self, issuer: &str) -> StoreFuture<'_, u64> {
        let issuer = issuer.to_owned();
        Box::pin(self.read("depth", move |c| {
            Box::pin(async move { reader::depth(&***c, &issuer).await })
        }))
    }
}

/// Read-only access for the look-up tools (`journal find/stats/settle`):
/// never creates or migrates the schema; refuses a database that is not an
/// isoswitch journal or is newer than this build. `key` is needed only to
/// look up by PAN.
pub struct PgReader {
    name: String,
    client: tokio_postgres::Client,
    vault: Option<CardVault>,
}

impl PgReader {
    pub async fn open(url: &str, key: Option<DataKey>) -> Result<PgReader, JournalError> {
        let name = redacted(url);
        let open = |cause: Cause| JournalError::Open {
            path: name.clone().into(),
            cause,
        };
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| open(Arc::new(e)))?;
        config.connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(NoTls).await.map_err(|e| open(Arc::new(e)))?;
        tokio::spawn(connection);
        schema::readable_version(&client)
            .await
            .map_err(|e| open(Arc::new(e)))?;
        Ok(PgReader {
            name,
            client,
            vault: key.map(|k| CardVault::new(&k)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn find(&self, query: &TxnQuery) -> Result<Vec<TxnRecord>, JournalError> {
        let pan_hash = match (&query.pan, &self.vault) {
            (None, _) => None,
            (Some(pan), Some(vault)) => Some(vault.pan_hash(pan.reveal())),
            (Some(_), None) => {
                return Err(JournalError::Read {
                    path: self.name.clone().into(),
                    op: "find",
                    cause: cause("a look-up by PAN needs the journal's data key"),
                })
            }
        };
        reader::find(&self.client, query, pan_hash)
            .await
            .map_err(|f| read_error(&self.name, "find", f))
    }

    pub async fn stats(&self, range: TimeRange) -> Result<Stats, JournalError> {
        reader::stats(&self.client, range)
            .await
            .map_err(|f| read_error(&self.name, "stats", f))
    }

    pub async fn settlement(&self, range: TimeRange) -> Result<Vec<TxnRecord>, JournalError> {
        reader::settlement(&self.client, range)
            .await
            .map_err(|f| read_error(&self.name, "settlement", f))
    }
}
