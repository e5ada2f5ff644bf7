//! An in-memory journal and queue with the SQLite backend's semantics, for tests
//! of the switch: writes resolve once applied, and storage failure can be
//! switched on to see what the switch does when it cannot record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::card_data::{CardVault, DataKey};
use super::record::{
    InDoubt, Outcome, Purged, ReversalFields, ReversalState, SafId, SafItem, SafKind, SafLink,
    SafNew, SafState, Stats, StatsRow, TimeRange, TxnId, TxnQuery, TxnRecord, TxnStart, NO_ROUTE,
    PENDING,
};
use super::shift::{ShiftClose, ShiftCloseNew};
use super::{Health, HealthCell, Journal, JournalError, SafStore, StoreFuture};

/// The name errors give the in-memory store in place of a file.
const MEMORY_PATH: &str = ":memory:";

/// A transaction and the fields its reversal needs.
struct StoredTxn {
    record: TxnRecord,
    fields: Option<ReversalFields>,
}

struct StoredSaf {
    item: SafItem,
    state: SafState,
    closed_at_ms: Option<i64>,
}

impl StoredSaf {
    /// The transaction whose reversal state this item carries.
    fn reversed_txn(&self) -> Option<TxnId> {
        self.item
            .txn_id
            .filter(|_| self.item.kind == SafKind::Reversal)
    }
}

impl State {
    /// Moves transaction `txn`'s reversal to `state`, as the SQLite writer
    /// does: `sent` never takes back a final state.
    fn reversal_follows(&mut self, txn: Option<TxnId>, state: ReversalState) {
        let Some(stored) = txn.and_then(|id| self.txns.get_mut(&id.0)) else {
            return;
        };
        let is_final = matches!(
            stored.record.reversal,
            ReversalState::Acknowledged | ReversalState::Failed
        );
        if state != ReversalState::Sent || !is_final {
            stored.record.reversal = state;
        }
    }
}

#[derive(Default)]
struct State {
    txns: BTreeMap<i64, StoredTxn>,
    saf: BTreeMap<i64, StoredSaf>,
    next_txn: i64,
    next_saf: i64,
    closes: Vec<ShiftClose>,
    /// While set, every write fails with this reason.
    broken: Option<String>,
}

/// The in-memory journal and store-and-forward queue.
pub struct MemoryJournal {
    state: Mutex<State>,
    /// At most this many transactions are kept, the oldest forgotten first
    /// (their queued items keep what they need to be sent).
    capacity: usize,
    vault: CardVault,
    health: HealthCell,
}

impl Default for MemoryJournal {
    fn default() -> Self {
        MemoryJournal::new()
    }
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        // A fixed key: nothing leaves memory, and hashes stay comparable
        // between two test journals.
        MemoryJournal::with_capacity(usize::MAX)
    }

    /// A journal that keeps only the newest `capacity` transactions: the
    /// switch's `durability = "none"`, which must not grow without bound.
    pub fn with_capacity(capacity: usize) -> MemoryJournal {
        MemoryJournal {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            vault: CardVault::new(&DataKey::from_bytes([0x5a; 32])),
            health: HealthCell::new(),
        }
    }

    /// Makes every write fail with `reason` (a full disk, a removed file)
    /// until called with `None`.
    pub fn set_broken(&self, reason: Option<&str>) {
        self.lock().broken = reason.map(str::to_owned);
    }

    /// A queue item as a transaction's history shows it, closed ones too.
    pub fn saf_link(&self, id: SafId) -> Option<SafLink> {
        self.lock().saf.get(&id.0).map(|s| SafLink {
            id,
            kind: s.item.kind,
            state: s.state,
            attempts: s.item.attempts,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change below is applied whole under the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` unless storage is broken, updating health like a writer.
    fn write<T>(
        &self,
        op: &'static str,
        change: impl FnOnce(&mut State) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let mut state = self.lock();
        if let Some(reason) = state.broken.clone() {
            let error = JournalError::Write {
                path: PathBuf::from(MEMORY_PATH),
                op,
                cause: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(reason)),
            };
            self.health.failed(&error);
            return Err(error);
        }
        self.health.succeeded();
        change(&mut state)
    }

    fn record(&self, state: &State, stored: &StoredTxn) -> TxnRecord {
        let mut record = stored.record.clone();
        record.links = state
            .saf
            .values()
            .filter(|s| s.item.txn_id == Some(record.id))
            .map(|s| SafLink {
                id: s.item.id,
                kind: s.item.kind,
                state: s.state,
                attempts: s.item.attempts,
            })
            .collect();
        record
    }
}

impl MemoryJournal {
    /// Applies `change` to transaction `id`, which must exist.
    fn change_txn(
        &self,
        op: &'static str,
        id: TxnId,
        change: impl FnOnce(&mut TxnRecord),
    ) -> StoreFuture<'_, ()> {
        let result = self.write(op, |state| {
            let stored = state
                .txns
                .get_mut(&id.0)
                .ok_or_else(|| unknown(op, "transaction", id.0))?;
            change(&mut stored.record);
            Ok(())
        });
        Box::pin(std::future::ready(result))
    }

    /// Applies `change` to queue item `id`, which must exist (and be pending
    /// when `pending_only`), as the SQLite updates' conditions require, and
    /// moves its transaction's reversal to `follows` if it is a reversal.
    fn change_saf(
        &self,
        op: &'static str,
        id: SafId,
        pending_only: bool,
        follows: ReversalState,
        change: impl FnOnce(&mut StoredSaf),
    ) -> StoreFuture<'_, ()> {
        let result = self.write(op, |state| {
            let what = if pending_only {
                "pending queue item"
            } else {
                "queue item"
            };
            let stored = state
                .saf
                .get_mut(&id.0)
                .filter(|s| !pending_only || s.state == SafState::Pending)
                .ok_or_else(|| unknown(op, what, id.0))?;
            change(stored);
            let txn = stored.reversed_txn();
            state.reversal_follows(txn, follows);
            Ok(())
        });
        Box::pin(std::future::ready(result))
    }
}

fn unknown(op: &'static str, what: &'static str, id: i64) -> JournalError {
    JournalError::Unknown { op, what, id }
}

/// Adds one transaction to a stats group.
fn tally(groups: &mut BTreeMap<(String, Option<u16>), (u64, i64)>, key: &str, record: &TxnRecord) {
    let entry = groups.entry((key.to_owned(), record.currency)).or_default();
    entry.0 += 1;
    entry.1 += record.amount.unwrap_or(0);
}

fn rows(groups: BTreeMap<(String, Option<u16>), (u64, i64)>) -> Vec<StatsRow> {
    groups
        .into_iter()
        .map(|((key, currency), (count, amount))| StatsRow {
            key,
            currency,
            count,
            amount,
        })
        .collect()
}

impl Journal for MemoryJournal {
    fn begin(&self, start: TxnStart) -> StoreFuture<'_, TxnId> {
        let result = self.write("begin", |state| {
            state.next_txn += 1;
            let id = TxnId(state.next_txn);
            let (record, fields) = TxnRecord::begun(id, start, |pan| self.vault.pan_hash(pan));
            state.txns.insert(id.0, StoredTxn { record, fields });
            while state.txns.len() > self.capacity {
                state.txns.pop_first();
            }
            Ok(id)
        });
        Box::pin(std::future::ready(result))
    }

    fn record_outcome(&self, id: TxnId, outcome: Outcome) -> StoreFuture<'_, ()> {
        self.change_txn("record_outcome", id, |record| {
            record.outcome = Some(outcome)
        })
    }

    fn set_reversal(&self, id: TxnId, reversal: ReversalState) -> StoreFuture<'_, ()> {
        self.change_txn("set_reversal", id, |record| record.reversal = reversal)
    }

    fn find(&self, query: TxnQuery) -> StoreFuture<'_, Vec<TxnRecord>> {
        let pan_hash = query.pan.as_ref().map(|p| self.vault.pan_hash(p.reveal()));
        let state = self.lock();
        let mut found: Vec<TxnRecord> = state
            .txns
            .values()
            .filter(|s| {
                let r = &s.record;
                let rrn = query.rrn.as_ref().map_or(true, |rrn| {
                    r.terminal_rrn.as_ref() == Some(rrn) || r.upstream_rrn.as_ref() == Some(rrn)
                });
                let terminal_stan = query.terminal_stan.as_ref().map_or(true, |(t, stan)| {
                    r.terminal_id.as_ref() == Some(t) && r.terminal_stan.as_ref() == Some(stan)
                });
                let last4 = query.last4.as_ref().map_or(true, |l| {
                    r.pan_masked
                        .as_ref()
                        .is_some_and(|m| m.ends_with(l.as_str()))
                });
                let pan = pan_hash.map_or(true, |h| r.pan_hash == Some(h));
                rrn && terminal_stan
                    && last4
                    && pan
                    && query.range.contains(r.received_at_ms)
                    && r.answer_matches(&query)
            })
            .map(|s| self.record(&state, s))
            .collect();
        found.sort_by_key(|r| (r.received_at_ms, r.id));
        if let Some(limit) = query.limit {
            found.truncate(limit);
        }
        Box::pin(std::future::ready(Ok(found)))
    }

    fn stats(&self, range: TimeRange) -> StoreFuture<'_, Stats> {
        let state = self.lock();
        let (mut codes, mut routes, mut deciders) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for s in state
            .txns
            .values()
            .filter(|s| range.contains(s.record.received_at_ms))
        {
            let r = &s.record;
            let code = r
                .outcome
                .as_ref()
                .map_or(PENDING, |o| o.response_code.as_str());
            let decider = r
                .outcome
                .as_ref()
                .map_or(PENDING, |o| o.decided_by.as_str());
            tally(&mut codes, code, r);
            tally(&mut routes, r.route.as_deref().unwrap_or(NO_ROUTE), r);
            tally(&mut deciders, decider, r);
        }
        let stats = Stats {
            by_response_code: rows(codes),
            by_route: rows(routes),
            by_decider: rows(deciders),
        };
        Box::pin(std::future::ready(Ok(stats)))
    }

    fn in_doubt(&self, received_before_ms: i64) -> StoreFuture<'_, Vec<InDoubt>> {
        let state = self.lock();
        let doubts = state
            .txns
            .values()
            .filter(|s| {
                s.record.received_at_ms < received_before_ms
                    && s.record.issuer.is_some()
                    && s.record.outcome.is_none()
                    && s.record.reversal == ReversalState::None
            })
            .map(|s| InDoubt {
                id: s.record.id,
                received_at_ms: s.record.received_at_ms,
                route: s.record.route.clone().unwrap_or_default(),
                issuer: s.record.issuer.clone().unwrap_or_default(),
                upstream_stan: s.record.upstream_stan.clone().unwrap_or_default(),
                upstream_rrn: s.record.upstream_rrn.clone(),
                terminal_id: s.record.terminal_id.clone(),
                terminal_stan: s.record.terminal_stan.clone(),
                reversal: s.fields.clone().unwrap_or_default(),
            })
            .collect();
        Box::pin(std::future::ready(Ok(doubts)))
    }

    fn reversal_fields(&self, id: TxnId) -> StoreFuture<'_, Option<ReversalFields>> {
        let fields = self.lock().txns.get(&id.0).and_then(|s| s.fields.clone());
        Box::pin(std::future::ready(Ok(fields)))
    }

    fn health(&self) -> Health {
        self.health.get()
    }

    fn cancel(&self, id: TxnId, at_ms: i64) -> StoreFuture<'_, ()> {
        self.change_txn("cancel", id, |record| {
            record.cancelled_at_ms.get_or_insert(at_ms);
        })
    }

    fn record_close(&self, close: ShiftCloseNew) -> StoreFuture<'_, i64> {
        let result = self.write("record_close", |state| {
            let id = state.closes.len() as i64 + 1;
            state.closes.push(ShiftClose { id, close });
            Ok(id)
        });
        Box::pin(std::future::ready(result))
    }

    fn last_close(
        &self,
        terminal: &str,
        batch: Option<&str>,
    ) -> StoreFuture<'_, Option<ShiftClose>> {
        let found = self
            .lock()
            .closes
            .iter()
            .rev()
            .find(|c| c.close.terminal_id == terminal && batch.map_or(true, |b| c.close.batch == b))
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn purge(&self, received_before_ms: i64) -> StoreFuture<'_, Purged> {
        let result = self.write("purge", |state| {
            let (saf_before, txns_before) = (state.saf.len(), state.txns.len());
            state.saf.retain(|_, s| {
                s.state == SafState::Pending
                    || s.closed_at_ms.map_or(true, |at| at >= received_before_ms)
            });
            let named: std::collections::HashSet<TxnId> =
                state.saf.values().filter_map(|s| s.item.txn_id).collect();
            state.txns.retain(|id, s| {
                s.record.received_at_ms >= received_before_ms || named.contains(&TxnId(*id))
            });
            Ok(Purged {
                transactions: (txns_before - state.txns.len()) as u64,
                queue_items: (saf_before - state.saf.len()) as u64,
            })
        });
        Box::pin(std::future::ready(result))
    }
}

impl SafStore for MemoryJournal {
    fn enqueue(&self, new: SafNew) -> StoreFuture<'_, SafId> {
        let result = self.write("enqueue", |state| {
            state.next_saf += 1;
            let id = SafId(state.next_saf);
            let reversed = new.txn_id.filter(|_| new.kind == SafKind::Reversal);
            if reversed.is_some() && state.saf.values().any(|s| s.reversed_txn() == reversed) {
                return Ok(id);
            }
            let item = SafItem {
                id,
                issuer: new.issuer,
                kind: new.kind,
                mti: new.mti,
                txn_id: new.txn_id,
                fields: new.fields,
                attempts: 0,
                created_at_ms: new.created_at_ms,
                next_attempt_at_ms: new.created_at_ms,
                expires_at_ms: new.expires_at_ms,
            };
            state.saf.insert(
                id.0,
                StoredSaf {
                    item,
                    state: SafState::Pending,
                    closed_at_ms: None,
                },
            );
            state.reversal_follows(reversed, ReversalState::Queued);
            Ok(id)
        });
        Box::pin(std::future::ready(result))
    }

    fn due(&self, issuer: &str, now_ms: i64, limit: usize) -> StoreFuture<'_, Vec<SafItem>> {
        let due = self
            .lock()
            .saf
            .values()
            .filter(|s| {
                s.state == SafState::Pending
                    && s.item.issuer == issuer
                    && s.item.next_attempt_at_ms <= now_ms
            })
            .take(limit)
            .map(|s| s.item.clone())
            .collect();
        Box::pin(std::future::ready(Ok(due)))
    }

    fn mark_attempt(&self, id: SafId, _at_ms: i64, next_attempt_at_ms: i64) -> StoreFuture<'_, ()> {
        self.change_saf("mark_attempt", id, true, ReversalState::Sent, |stored| {
            stored.item.attempts += 1;
            stored.item.next_attempt_at_ms = next_attempt_at_ms;
        })
    }

    fn acknowledge(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        self.change_saf(
            "acknowledge",
            id,
            false,
            ReversalState::Acknowledged,
            |stored| {
                stored.state = SafState::Acknowledged;
                stored.closed_at_ms = Some(at_ms);
                stored.item.fields = ReversalFields::default();
            },
        )
    }

    fn fail(&self, id: SafId, at_ms: i64) -> StoreFuture<'_, ()> {
        self.change_saf("fail", id, true, ReversalState::Failed, |stored| {
            stored.state = SafState::Failed;
            stored.closed_at_ms = Some(at_ms);
            stored.item.fields = ReversalFields::default();
        })
    }

    fn depth(&self, issuer: &str) -> StoreFuture<'_, u64> {
        let depth = self
            .lock()
            .saf
            .values()
            .filter(|s| s.state == SafState::Pending && s.item.issuer == issuer)
            .count() as u64;
        Box::pin(std::future::ready(Ok(depth)))
    }
}
