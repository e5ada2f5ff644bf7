//! Idempotency keys: a write (a payment, a cancel, a refund) sent again with
//! a key already seen gets the first result back instead of running twice.
//! A narrow trait of its own, so the journal's other backends need not know
//! of it; SQLite keeps the keys across restarts (schema 6), memory for tests
//! and `durability = "none"`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::StoreFuture;

/// Results by (scope, key). `scope` separates callers (a terminal id) so one
/// terminal's key never answers another's request.
pub trait IdempotencyStore: Send + Sync {
    /// Stores `result` under the key unless one is already there (the first
    /// result stands). Resolves once stored durably.
    fn remember(&self, scope: &str, key: &str, result: &str) -> StoreFuture<'_, ()>;
    /// The result stored under the key, if any.
    fn recall(&self, scope: &str, key: &str) -> StoreFuture<'_, Option<String>>;
}

/// Keys in memory, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryIdempotency(Mutex<HashMap<(String, String), String>>);

impl MemoryIdempotency {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        // Only whole entries are ever inserted: a poisoned map is intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IdempotencyStore for MemoryIdempotency {
    fn remember(&self, scope: &str, key: &str, result: &str) -> StoreFuture<'_, ()> {
        self.lock()
            .entry((scope.to_owned(), key.to_owned()))
            .or_insert_with(|| result.to_owned());
        Box::pin(async { Ok(()) })
    }

    fn recall(&self, scope: &str, key: &str) -> StoreFuture<'_, Option<String>> {
        let found = self
            .lock()
            .get(&(scope.to_owned(), key.to_owned()))
            .cloned();
        Box::pin(async move { Ok(found) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_result_stands_and_scopes_stay_apart() {
        let store = MemoryIdempotency::default();
        store.remember("T1", "k", "first").await.expect("stored");
        store.remember("T1", "k", "second").await.expect("stored");
        assert_eq!(
            store.recall("T1", "k").await.expect("read").as_deref(),
            Some("first")
        );
        assert_eq!(store.recall("T2", "k").await.expect("read"), None);
    }
}
