//! Checkpoints off the writer's thread. A checkpoint copies the log's pages
//! back into the database file and syncs it: tens of milliseconds for a
//! 64 MiB log, during which SQLite's automatic checkpoint (run by the
//! committing connection) held up every caller of the next batch. Here the
//! writer commits with the automatic checkpoint off; each [`NUDGE_PAGES`]
//! pages the log grows by wake this thread, which checkpoints on its own
//! connection in `PASSIVE` mode: it never waits for the writer, and the
//! writer never waits for it.
//!
//! The log starts again from its beginning only after a checkpoint that
//! caught up with it, which under steady load this thread rarely does (the
//! writer has added pages by the time it ends). So at
//! [`WRITER_CHECKPOINT_PAGES`] the writer checkpoints itself, as the
//! automatic checkpoint did; by then this thread has copied all but the
//! last few pages, so the writer's own checkpoint is short, and its next
//! commit starts the log again. The log never outgrows that size.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::open_connection;

/// Pages the log grows by between two checkpoints here (64 MiB of 4 KiB
/// pages, what the automatic checkpoint was set to): enough that the hot
/// index pages many batches rewrite are copied back once per checkpoint,
/// not once per batch. Checkpointing each 16 MiB instead cost more than it
/// saved: p99 at 4 connections × 4 went from 1.6 to 2.6 ms, the checkpoint's
/// syncs delaying the log's.
pub(crate) const NUDGE_PAGES: i32 = 16_384;
/// Pages in the log at which the writer checkpoints itself (256 MiB: the
/// most disk the log takes).
pub(crate) const WRITER_CHECKPOINT_PAGES: i32 = 4 * NUDGE_PAGES;
/// How often a failing checkpoint is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

thread_local! {
    /// Pages in the log after this thread's last commit, as the log hook saw them.
    static LOG_PAGES: Cell<i32> = const { Cell::new(0) };
}

/// The log hook the writer's connection runs after each commit: notes the
/// log's size for [`pages_after_commit`]. Replaces SQLite's automatic
/// checkpoint, which is itself such a hook.
fn note_log_pages(_wal: &rusqlite::hooks::Wal, pages: std::os::raw::c_int) -> rusqlite::Result<()> {
    LOG_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Turns the automatic checkpoint off on the writer's connection and notes
/// the log's size after each commit instead.
pub(crate) fn watch_log(conn: &Connection) {
    conn.wal_hook(Some(note_log_pages));
}

/// Pages in the log after the calling thread's last commit.
pub(crate) fn pages_after_commit() -> i32 {
    LOG_PAGES.with(Cell::get)
}

/// The checkpointer thread and the writer's way of waking it.
pub(crate) struct Checkpointer {
    nudges: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The log's size at the last nudge (0 after it started again).
    nudged_at: i32,
}

impl Checkpointer {
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Checkpointer> {
        // One nudge waiting is enough: a checkpoint copies whatever is in
        // the log when it starts.
        let (nudges, woken) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || run(&path, &woken))?;
        Ok(Checkpointer {
            nudges: Some(nudges),
            thread: Some(thread),
            nudged_at: 0,
        })
    }

    /// Called after each commit with the log's size: wakes the thread each
    /// [`NUDGE_PAGES`] the log grew by; never blocks.
    pub(crate) fn after_commit(&mut self, pages: i32) {
        if pages < self.nudged_at {
            // The log started again from its beginning.
            self.nudged_at = 0;
        }
        if pages - self.nudged_at >= NUDGE_PAGES {
            self.nudged_at = pages;
            if let Some(nudges) = &self.nudges {
                let _ = nudges.try_send(());
            }
        }
    }

    /// Stops the thread once its checkpoint in progress is done.
    pub(crate) fn finish(&mut self) {
        self.nudges = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(path: &std::path::Path, woken: &mpsc::Receiver<()>) {
    let mut conn: Option<Connection> = None;
    let mut last_logged: Option<Instant> = None;
    let pages = metrics::counter!("isoswitch_journal_checkpoint_pages_total");
    let seconds = metrics::histogram!("isoswitch_journal_checkpoint_seconds");
    while woken.recv().is_ok() {
        let started = Instant::now();
        let result = match conn.as_ref() {
            Some(conn) => Ok(conn),
            None => open_connection(path, false)
                .map(|(c, _)| &*conn.insert(c))
                .map_err(|e| e.to_string()),
        }
        .and_then(|c| checkpoint(c).map_err(|e| e.to_string()));
        match result {
            Ok((_log, copied)) => {
                pages.increment(u64::try_from(copied).unwrap_or(0));
                seconds.record(started.elapsed());
            }
            Err(error) => {
                // The writer's own checkpoint bounds the log meanwhile; the
                // next nudge tries again on a fresh connection.
                conn = None;
                if last_logged.map_or(true, |at| at.elapsed() >= LOG_INTERVAL) {
                    last_logged = Some(Instant::now());
                    tracing::warn!(path = %path.display(), %error, "journal checkpoint failed; the writer will checkpoint if the log keeps growing");
                }
            }
        }
    }
}

/// One passive checkpoint, here or in the writer once the log has outgrown
/// this thread: the pages in the log, and how many of them are now copied
/// back.
pub(crate) fn checkpoint(conn: &Connection) -> rusqlite::Result<(i32, i32)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("j.db");
        (dir, path)
    }

    #[test]
    fn the_hook_sees_the_log_grow_and_no_automatic_checkpoint_runs() {
        let (_dir, path) = journal_file();
        let (conn, _) = open_connection(&path, true).expect("open");
        watch_log(&conn);
        conn.execute_batch("CREATE TABLE t (x BLOB)")
            .expect("table");
        let mut last = 0;
        // Past the 1 000 pages at which SQLite's automatic checkpoint would
        // have copied the log back and started it again.
        while last < 1500 {
            conn.execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                .expect("insert");
            let pages = pages_after_commit();
            assert!(pages > last, "each commit adds pages: {pages} after {last}");
            last = pages;
        }
        // None ran: the log holds every commit.
        let (reader, _) = open_connection(&path, false).expect("reader");
        let (log, _) = checkpoint(&reader).expect("checkpoint");
        assert_eq!(log, last);
    }

    #[test]
    fn a_nudge_copies_the_log_back_and_the_next_commit_starts_it_again() {
        let (_dir, path) = journal_file();
        let (conn, _) = open_connection(&path, true).expect("open");
        watch_log(&conn);
        conn.execute_batch("CREATE TABLE t (x BLOB)")
            .expect("table");
        let mut checkpointer = Checkpointer::start(path.clone()).expect("start");
        while pages_after_commit() < NUDGE_PAGES {
            conn.execute("INSERT INTO t VALUES (zeroblob(60000))", [])
                .expect("insert");
        }
        let full = pages_after_commit();
        checkpointer.after_commit(full);
        // finish() joins the thread after the nudge it holds is served.
        checkpointer.finish();
        conn.execute("INSERT INTO t VALUES (zeroblob(100))", [])
            .expect("insert");
        assert!(
            pages_after_commit() < 10,
            "the log started again: {} pages (was {full})",
            pages_after_commit()
        );
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
            .expect("count");
        assert!(rows > 60, "nothing lost: {rows} rows");
    }

    #[test]
    fn the_thread_is_woken_once_per_nudge_pages_of_growth_and_again_after_a_restart() {
        let (_dir, path) = journal_file();
        let mut checkpointer = Checkpointer::start(path).expect("start");
        let mut woken_at = Vec::new();
        for pages in [
            100,
            NUDGE_PAGES,
            NUDGE_PAGES + 10,
            2 * NUDGE_PAGES - 1,
            2 * NUDGE_PAGES,
            50,
            NUDGE_PAGES + 49,
            NUDGE_PAGES + 50,
        ] {
            let before = checkpointer.nudged_at;
            checkpointer.after_commit(pages);
            if checkpointer.nudged_at != before && checkpointer.nudged_at != 0 {
                woken_at.push(pages);
            }
        }
        assert_eq!(woken_at, [NUDGE_PAGES, 2 * NUDGE_PAGES, NUDGE_PAGES + 49]);
    }
}
