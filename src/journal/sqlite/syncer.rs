//! The second half of a group commit when fsync is overlapped: the writer
//! commits a batch to the WAL without syncing (`synchronous = NORMAL`) and
//! goes on to the next, while this thread makes the log durable
//! (`fdatasync`) and only then answers the batch's callers. Every batch that
//! arrived during one sync shares the next.
//!
//! Durability is the same as with `synchronous = FULL`: nobody is told of a
//! commit before its log frames are on disk. What differs is visibility: a
//! reader may see a batch a moment before it is durable.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use super::telemetry::JournalMetrics;
use super::writer::Applied;
use crate::journal::{HealthCell, JournalError};

/// A caller waiting for a committed write, and what to tell it.
pub(crate) type Answer = (
    oneshot::Sender<Result<Applied, JournalError>>,
    Result<Applied, JournalError>,
);

/// A committed batch waiting for its log to reach the disk.
struct Unsynced {
    /// The WAL it was written to, open for as long as its connection is.
    wal: Arc<File>,
    answers: Vec<Answer>,
    records: usize,
    started: Instant,
    /// Names the file in a failure.
    path: std::path::PathBuf,
}

/// The sync thread and the writer's side of it.
pub(crate) struct Syncer {
    batches: Option<mpsc::Sender<Unsynced>>,
    thread: Option<JoinHandle<()>>,
    /// Set when a sync failed: what the connection wrote since is in doubt,
    /// so the writer starts again on a fresh one.
    failed: Arc<AtomicBool>,
}

impl Syncer {
    pub(crate) fn start(
        health: Arc<HealthCell>,
        metrics: JournalMetrics,
    ) -> std::io::Result<Syncer> {
        let (batches, queue) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("journal-sync".into())
            .spawn(move || run(&queue, &health, &metrics, &flag))?;
        Ok(Syncer {
            batches: Some(batches),
            thread: Some(thread),
            failed,
        })
    }

    /// Hands a committed batch over; its callers are answered once `wal` is synced.
    pub(crate) fn sync_then_answer(
        &self,
        wal: Arc<File>,
        path: &std::path::Path,
        answers: Vec<Answer>,
        records: usize,
        started: Instant,
    ) {
        let batch = Unsynced {
            wal,
            answers,
            records,
            started,
            path: path.to_owned(),
        };
        // The thread lives as long as this sender; if it died, dropping the
        // batch drops its senders and every caller hears the journal closed.
        if let Some(batches) = &self.batches {
            let _ = batches.send(batch);
        }
    }

    /// Whether a sync failed since the last call.
    pub(crate) fn take_failure(&self) -> bool {
        self.failed.swap(false, Ordering::AcqRel)
    }

    /// Syncs and answers what is handed over, then stops the thread.
    pub(crate) fn finish(&mut self) {
        self.batches = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(
    queue: &mpsc::Receiver<Unsynced>,
    health: &HealthCell,
    metrics: &JournalMetrics,
    failed: &AtomicBool,
) {
    // A log whose sync failed stays failed: the next sync may succeed with
    // the lost pages gone, and recovery stops at the first of them, so
    // nothing written after them to that file can be called durable.
    let mut poisoned: Option<Arc<File>> = None;
    while let Ok(first) = queue.recv() {
        let mut batches = vec![first];
        batches.extend(queue.try_iter());
        // One fdatasync per WAL covers every batch written to it before the
        // call; a reopened connection brings a second file.
        let mut synced: Vec<&Arc<File>> = Vec::new();
        let mut outcome = Ok(());
        for batch in &batches {
            if synced.iter().any(|f| Arc::ptr_eq(f, &batch.wal)) {
                continue;
            }
            if poisoned
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &batch.wal))
            {
                outcome = Err(JournalError::Write {
                    path: batch.path.clone(),
                    op: "fdatasync of the log",
                    cause: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                        "an earlier sync of this log failed",
                    )),
                });
                break;
            }
            if let Err(e) = batch.wal.sync_data() {
                poisoned = Some(Arc::clone(&batch.wal));
                outcome = Err(JournalError::Write {
                    path: batch.path.clone(),
                    op: "fdatasync of the log",
                    cause: Arc::new(e),
                });
                break;
            }
            synced.push(&batch.wal);
        }
        match &outcome {
            Ok(()) => health.succeeded(),
            Err(error) => {
                failed.store(true, Ordering::Release);
                health.failed(error);
                metrics.write_errors.increment(1);
                tracing::error!(%error, "journal log sync failed; callers told");
            }
        }
        for batch in batches {
            if outcome.is_ok() {
                metrics.commit_seconds.record(batch.started.elapsed());
                metrics.records.increment(batch.records as u64);
            }
            for (ack, result) in batch.answers {
                let _ = ack.send(match &outcome {
                    Ok(()) => result,
                    Err(error) => Err(error.clone()),
                });
            }
        }
    }
}
