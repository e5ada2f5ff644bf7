//! The journal's metric handles, resolved once when it opens (so the recorder
//! must be installed before) and only bumped after: the writer's commits and
//! failures, how much is queued for it, and how often callers had to wait.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

#[derive(Clone)]
pub(crate) struct JournalMetrics {
    /// Writes that found the writer's queue full and waited for room.
    pub backpressure: Counter,
    /// Writes queued and not yet taken by the writer, after each batch is taken.
    pub queue_depth: Gauge,
    /// How long each group commit took, fsync included.
    pub commit_seconds: Histogram,
    /// Writes committed (every kind: begin, outcome, queue changes).
    pub records: Counter,
    /// Group commits that failed; every caller in one was told.
    pub write_errors: Counter,
}

impl JournalMetrics {
    pub(crate) fn new() -> JournalMetrics {
        JournalMetrics {
            backpressure: counter!("isoswitch_journal_backpressure_total"),
            queue_depth: gauge!("isoswitch_journal_queue_depth"),
            commit_seconds: histogram!("isoswitch_journal_commit_seconds"),
            records: counter!("isoswitch_journal_records_total"),
            write_errors: counter!("isoswitch_journal_write_errors_total"),
        }
    }
}
