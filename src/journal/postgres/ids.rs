//! Ids in blocks: each `nextval` of a sequence stepping by
//! [`schema::ID_BLOCK`] gives this instance that many ids to hand out
//! locally, so a record's id (which its sealed card data is bound to) is
//! known before it is written, without a round trip per record and without
//! instances waiting on each other. Ids stay unique, not gap-free.

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;

use super::schema::ID_BLOCK;
use crate::journal::JournalError;

pub(crate) struct IdBlocks {
    sequence: &'static str,
    /// The next id and the end of the block (exclusive).
    block: Mutex<(i64, i64)>,
}

impl IdBlocks {
    pub(crate) fn new(sequence: &'static str) -> IdBlocks {
        IdBlocks {
            sequence,
            block: Mutex::new((0, 0)),
        }
    }

    fn next_local(&self) -> Option<i64> {
        let mut block = self.block.lock().unwrap_or_else(|p| p.into_inner());
        (block.0 < block.1).then(|| {
            block.0 += 1;
            block.0 - 1
        })
    }

    /// The next id, taking a new block from the database when this one is used up.
    pub(crate) async fn take(&self, pool: &Pool, name: &str) -> Result<i64, JournalError> {
        loop {
            if let Some(id) = self.next_local() {
                return Ok(id);
            }
            let failed = |cause: crate::journal::Cause| JournalError::Write {
                path: name.into(),
                op: "take a block of ids",
                cause,
            };
            let client = pool.get().await.map_err(|e| failed(Arc::new(e)))?;
            let start: i64 = client
                .query_one(&format!("SELECT nextval('{}')", self.sequence), &[])
                .await
                .map_err(|e| failed(Arc::new(e)))?
                .get(0);
            let mut block = self.block.lock().unwrap_or_else(|p| p.into_inner());
            // Another caller may have refilled meanwhile; its block is used first.
            if block.0 >= block.1 {
                *block = (start, start + ID_BLOCK);
            }
        }
    }
}
