//! Retention: transactions older than `[journal] retention_days` (and the
//! closed queue items behind them) are deleted, in chunks, once an hour and
//! shortly after start. Nothing still pending in the queue is ever deleted.

use std::sync::Arc;
use std::time::Duration;

use super::Switch;
use crate::journal::now_ms;

/// How often old records are looked for.
const EVERY: Duration = Duration::from_secs(3600);
/// The first look, once start-up traffic has settled.
const FIRST_AFTER: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 24 * 3600 * 1000;

impl Switch {
    /// Deletes what is older than the retention the current config sets (0
    /// keeps everything). How many transactions and queue items went.
    pub async fn purge_expired(&self) -> Result<(u64, u64), crate::journal::JournalError> {
        let days = self.snapshot.load().config.journal.retention_days;
        if days == 0 {
            return Ok((0, 0));
        }
        let before = now_ms().saturating_sub(i64::from(days).saturating_mul(DAY_MS));
        let purged = self.stores.journal.purge(before).await?;
        if purged.transactions > 0 || purged.queue_items > 0 {
            tracing::info!(
                transactions = purged.transactions,
                queue_items = purged.queue_items,
                retention_days = days,
                "journal records past retention deleted"
            );
        }
        Ok((purged.transactions, purged.queue_items))
    }

    pub(super) fn spawn_retention(self: &Arc<Switch>) {
        let weak = Arc::downgrade(self);
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now() + FIRST_AFTER;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    () = tokio::time::sleep_until(next) => {
                        next += EVERY;
                        let Some(switch) = weak.upgrade() else { break };
                        if let Err(e) = switch.purge_expired().await {
                            tracing::warn!(error = %e, "journal retention deferred");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::iso8583::Mti;
    use crate::journal::{Stores, TxnQuery, TxnStart};
    use crate::upstream::SafSettings;
    use tokio_util::sync::CancellationToken;

    fn start(at_ms: i64) -> TxnStart {
        TxnStart {
            received_at_ms: at_ms,
            listener: "pos".into(),
            channel: "pos".into(),
            mti: Mti::from_static("0200"),
            processing_code: None,
            pan: None,
            amount: Some(100),
            currency: Some(978),
            terminal_id: None,
            merchant_id: None,
            terminal_stan: None,
            terminal_rrn: None,
            forward: None,
            original_id: None,
        }
    }

    #[tokio::test]
    async fn records_past_retention_go_and_recent_ones_stay() {
        let mut config = Config::embedded_default().expect("default config");
        config.journal.retention_days = 30;
        let stores = Stores::in_memory();
        let shutdown = CancellationToken::new();
        let switch = Switch::start_with(
            config,
            stores.clone(),
            SafSettings::default(),
            shutdown.clone(),
        )
        .expect("starts");
        let now = now_ms();
        for at in [now - 31 * DAY_MS, now - 29 * DAY_MS, now] {
            stores.journal.begin(start(at)).await.expect("begin");
        }
        assert_eq!(switch.purge_expired().await.expect("purge"), (1, 0));
        let left = stores
            .journal
            .find(TxnQuery::default())
            .await
            .expect("find");
        assert_eq!(left.len(), 2);
        shutdown.cancel();
    }
}
