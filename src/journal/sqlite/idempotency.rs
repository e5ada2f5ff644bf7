//! The idempotency keys of the virtual terminal in SQLite: written through
//! the one writer thread (committed before the caller hears back), read on
//! the blocking pool like every other read.

use super::writer::Write;
use super::SqliteJournal;
use crate::journal::idempotency::IdempotencyStore;
use crate::journal::{now_ms, StoreFuture};

impl IdempotencyStore for SqliteJournal {
    fn remember(&self, scope: &str, key: &str, result: &str) -> StoreFuture<'_, ()> {
        let write = Write::Remember {
            scope: scope.to_owned(),
            key: key.to_owned(),
            at_ms: now_ms(),
            result: result.to_owned(),
        };
        // Waited for whatever the durability: a result handed back before its
        // key is on disk could be charged again after a crash.
        Box::pin(async move { self.submit_and_wait(write).await.map(drop) })
    }

    fn recall(&self, scope: &str, key: &str) -> StoreFuture<'_, Option<String>> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.read(move |reader| reader.recall(&scope, &key))
    }
}
