//! The switch's side of the persistent queue: one store-and-forward sender per
//! issuer name (started with the switch and by reloads that add a name),
//! queuing that wakes it, in-doubt recovery at start-up and a sweep at run
//! time, and finding a terminal's original through the journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::journaling::{queue_message, queue_reversal};
use super::Switch;
use crate::iso8583::Message;
use crate::journal::{
    now_ms, JournalError, ReversalState, SafId, SafKind, TimeRange, TxnId, TxnQuery,
};
use crate::upstream::{Deliver, IssuerDirectory, SafSender};

/// How often forwarded requests left unanswered are looked for while running.
const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// A forwarded request is in doubt when it has been unanswered this long
/// beyond the longest issuer timeout (its handler would have answered by then).
const SWEEP_MARGIN: Duration = Duration::from_secs(30);
/// How far back a terminal's reversal is matched through the journal.
const REVERSAL_LOOKBACK_MS: i64 = 7 * 24 * 3600 * 1000;

/// The senders, one per issuer name.
#[derive(Default)]
pub(super) struct Senders(Mutex<HashMap<String, SafSender>>);

impl Senders {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SafSender>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn get(&self, issuer: &str) -> Option<SafSender> {
        self.lock().get(issuer).cloned()
    }

    pub(super) fn all(&self) -> Vec<SafSender> {
        self.lock().values().cloned().collect()
    }
}

/// Finds the issuer of a name in the switch's current snapshot.
struct SnapshotDirectory(Weak<Switch>);

impl IssuerDirectory for SnapshotDirectory {
    fn find(&self, issuer: &str) -> Option<(Arc<dyn Deliver>, Duration)> {
        let switch = self.0.upgrade()?;
        let snapshot = switch.snapshot.load();
        let issuer = snapshot.issuer(issuer)?.clone();
        let timeout = issuer.timeout();
        Some((Arc::new(issuer), timeout))
    }
}

/// A transaction a terminal's reversal names, found in the journal.
pub(super) struct Found {
    pub txn: TxnId,
    pub issuer: String,
    /// Already reversed (queued, sent, acknowledged or failed).
    pub reversed: bool,
}

impl Switch {
    /// Starts a sender for every issuer name of the current snapshot that has
    /// none yet. Senders outlive reloads: a name keeps its one sender.
    pub(super) fn start_senders(self: &Arc<Switch>) {
        let names: Vec<String> = self
            .snapshot
            .load()
            .issuers
            .iter()
            .map(|e| e.config.name.clone())
            .collect();
        let mut senders = self.senders.lock();
        for name in names {
            senders.entry(name.clone()).or_insert_with(|| {
                SafSender::spawn(
                    &name,
                    self.stores.queue.clone(),
                    Arc::new(SnapshotDirectory(Arc::downgrade(self))),
                    self.saf_settings.clone(),
                    self.shutdown.clone(),
                )
            });
        }
    }

    /// Every issuer of the current snapshot hands the reversal of an
    /// approval that matched no request to the queue. Set again after a
    /// reload (harmless for issuers that kept theirs).
    pub(super) fn catch_unmatched_approvals(self: &Arc<Switch>) {
        for entry in &self.snapshot.load().issuers {
            let weak = Arc::downgrade(self);
            entry.issuer.on_unmatched_approval(Box::new(move |issuer, reversal| {
                let Some(switch) = weak.upgrade() else { return };
                metrics::counter!("isoswitch_unmatched_approvals_reversed_total").increment(1);
                let issuer = issuer.to_owned();
                tokio::spawn(async move {
                    let queued = switch
                        .queue_message(&issuer, SafKind::Reversal, None, &reversal)
                        .await;
                    if let Err(e) = queued {
                        tracing::error!(%issuer, error = %e, "reversal of an unmatched approval not queued");
                    }
                });
            }));
        }
    }

    /// How long a queued item is tried before it is marked failed, in ms.
    fn saf_expiry_ms(&self) -> i64 {
        i64::try_from(self.saf_settings.expiry.as_millis()).unwrap_or(i64::MAX)
    }

    fn wake_sender(&self, issuer: &str) {
        if let Some(sender) = self.senders.get(issuer) {
            sender.wake();
        }
    }

    /// Queues the reversal of `txn` (once per transaction) and wakes the sender.
    pub(super) async fn queue_reversal(
        &self,
        issuer: &str,
        txn: TxnId,
        fields: crate::journal::ReversalFields,
    ) -> Result<SafId, JournalError> {
        let id = queue_reversal(&self.stores, issuer, txn, fields, self.saf_expiry_ms()).await;
        match &id {
            Ok(_) => self.wake_sender(issuer),
            Err(e) => tracing::error!(
                issuer,
                txn = txn.0,
                error = %e,
                "reversal not queued; the transaction stays in doubt and is reversed once the journal takes writes"
            ),
        }
        id
    }

    /// Queues `message` as it is and wakes the sender.
    pub(super) async fn queue_message(
        &self,
        issuer: &str,
        kind: SafKind,
        txn: Option<TxnId>,
        message: &Message,
    ) -> Result<SafId, JournalError> {
        let id = queue_message(
            &self.stores,
            issuer,
            kind,
            txn,
            message,
            self.saf_expiry_ms(),
        )
        .await;
        if id.is_ok() {
            self.wake_sender(issuer);
        }
        id
    }

    /// Queues the reversal of every forwarded request received before
    /// `before_ms` that has neither an answer nor a reversal: after a crash,
    /// or a handler that could not record its outcome. How many.
    pub async fn reverse_in_doubt(&self, before_ms: i64) -> Result<usize, JournalError> {
        let in_doubt = self.stores.journal.in_doubt(before_ms).await?;
        let mut queued = 0;
        for txn in in_doubt {
            tracing::warn!(
                issuer = %txn.issuer,
                route = %txn.route,
                issuer_stan = %txn.upstream_stan,
                terminal = txn.terminal_id.as_deref().unwrap_or("-"),
                terminal_stan = txn.terminal_stan.as_deref().unwrap_or("-"),
                "forwarded request never answered to the terminal; queuing its reversal"
            );
            metrics::counter!("isoswitch_in_doubt_reversals_total").increment(1);
            self.queue_reversal(&txn.issuer, txn.id, txn.reversal)
                .await?;
            queued += 1;
        }
        Ok(queued)
    }

    /// Every [`SWEEP_EVERY`], reverses forwarded requests unanswered for
    /// longer than any handler waits.
    pub(super) fn spawn_in_doubt_sweep(self: &Arc<Switch>) {
        let weak = Arc::downgrade(self);
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        let Some(switch) = weak.upgrade() else { break };
                        let longest = switch
                            .snapshot
                            .load()
                            .config
                            .issuers
                            .iter()
                            .map(|i| Duration::from_millis(i.timeout_ms))
                            .max()
                            .unwrap_or_default();
                        let age = longest * 2 + SWEEP_MARGIN;
                        let before = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                        if let Err(e) = switch.reverse_in_doubt(before).await {
                            tracing::debug!(error = %e, "in-doubt sweep deferred");
                        }
                    }
                }
            }
        });
    }

    /// The forwarded transaction a terminal's reversal names (terminal id and
    /// STAN, from field 90 or its own field 11; field 7 where it says), the
    /// newest first.
    pub(super) async fn find_original(
        &self,
        reversal: &Message,
    ) -> Result<Option<Found>, JournalError> {
        let Some(terminal) = reversal.get_str(41).map(|t| t.trim_end().to_owned()) else {
            return Ok(None);
        };
        let named = reversal.original_data().ok();
        let stan = match &named {
            Some(o) => o.stan.to_string(),
            None => match reversal.get_str(11) {
                Some(s) => s.to_owned(),
                None => return Ok(None),
            },
        };
        let time = named
            .as_ref()
            .map(|o| o.transmission_time)
            .filter(|t| t.as_bytes().iter().any(|&b| b != b'0'));
        let mut candidates = self
            .stores
            .journal
            .find(TxnQuery {
                terminal_stan: Some((terminal, stan)),
                range: TimeRange {
                    since_ms: Some(now_ms() - REVERSAL_LOOKBACK_MS),
                    until_ms: None,
                },
                ..TxnQuery::default()
            })
            .await?;
        candidates.retain(|r| r.issuer.is_some());
        candidates.reverse();
        for record in candidates {
            if let Some(time) = &time {
                let fields = self.stores.journal.reversal_fields(record.id).await?;
                let sent_at = fields.as_ref().and_then(|f| f.get(7));
                if sent_at.is_some_and(|t| t != &time.as_bytes()[..]) {
                    continue;
                }
            }
            let Some(issuer) = record.issuer else {
                continue;
            };
            return Ok(Some(Found {
                txn: record.id,
                issuer,
                reversed: record.reversal != ReversalState::None,
            }));
        }
        Ok(None)
    }

    /// Pending store-and-forward items of `issuer`, as its sender last counted.
    pub fn saf_depth(&self, issuer: &str) -> u64 {
        self.senders.get(issuer).map_or(0, |s| s.depth())
    }

    /// Pending store-and-forward items of `issuer`, counted in storage now.
    pub async fn saf_depth_now(&self, issuer: &str) -> Result<u64, JournalError> {
        self.stores.queue.depth(issuer).await
    }
}
