//! Cards on file and recurring schedules of the virtual terminal. A narrow
//! trait of its own, like idempotency keys: SQLite keeps the card number
//! sealed with the journal's data key (AES-256-GCM, the row's token as
//! associated data) and a schedule as one JSON document its owner reads and
//! writes whole; memory for tests and `durability = "none"`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ClearPan, StoreFuture};

/// A saved card. The merchant sees token, brand, last 4 and expiry; the card
/// number comes out only for a charge ([`RecurringStore::card`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    pub token: String,
    pub terminal_id: String,
    pub merchant_id: String,
    pub brand: String,
    pub last4: String,
    /// YYMM.
    pub expiry: String,
    pub created_at_ms: i64,
    /// The journal id of the approved payment the card was saved from.
    pub payment_id: i64,
    /// Present when read for a charge; None in listings.
    pub pan: Option<ClearPan>,
}

/// A schedule as stored: its id, terminal, when it is next due (None when
/// it will never run again) and the rest as its owner's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: String,
    pub terminal_id: String,
    pub next_due_ms: Option<i64>,
    pub body: String,
}

/// Cards on file and schedules.
pub trait RecurringStore: Send + Sync {
    /// Saves a card (its `pan` required); resolves once stored durably.
    fn save_card(&self, card: SavedCard) -> StoreFuture<'_, ()>;
    /// The card `token` of `terminal`, with its card number.
    fn card(&self, terminal: &str, token: &str) -> StoreFuture<'_, Option<SavedCard>>;
    /// The cards of `terminal`, without card numbers, oldest first.
    fn cards(&self, terminal: &str) -> StoreFuture<'_, Vec<SavedCard>>;
    /// Inserts or replaces a schedule; resolves once stored durably.
    fn save_schedule(&self, schedule: ScheduleRecord) -> StoreFuture<'_, ()>;
    /// The schedules of `terminal`, oldest first.
    fn schedules(&self, terminal: &str) -> StoreFuture<'_, Vec<ScheduleRecord>>;
    /// Every schedule due at or before `now_ms`, soonest first.
    fn due_schedules(&self, now_ms: i64) -> StoreFuture<'_, Vec<ScheduleRecord>>;
}

/// Cards and schedules in memory, lost on restart.
#[derive(Debug, Default)]
pub struct MemoryRecurring {
    cards: Mutex<Vec<SavedCard>>,
    schedules: Mutex<BTreeMap<String, (u64, ScheduleRecord)>>,
}

/// Whole values only are ever stored: a poisoned lock guards intact data.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RecurringStore for MemoryRecurring {
    fn save_card(&self, card: SavedCard) -> StoreFuture<'_, ()> {
        lock(&self.cards).push(card);
        Box::pin(async { Ok(()) })
    }

    fn card(&self, terminal: &str, token: &str) -> StoreFuture<'_, Option<SavedCard>> {
        let found = lock(&self.cards)
            .iter()
            .find(|c| c.terminal_id == terminal && c.token == token)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn cards(&self, terminal: &str) -> StoreFuture<'_, Vec<SavedCard>> {
        let found = lock(&self.cards)
            .iter()
            .filter(|c| c.terminal_id == terminal)
            .map(|c| SavedCard {
                pan: None,
                ..c.clone()
            })
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn save_schedule(&self, schedule: ScheduleRecord) -> StoreFuture<'_, ()> {
        let mut schedules = lock(&self.schedules);
        let order = schedules
            .get(&schedule.id)
            .map_or(schedules.len() as u64, |(order, _)| *order);
        schedules.insert(schedule.id.clone(), (order, schedule));
        Box::pin(async { Ok(()) })
    }

    fn schedules(&self, terminal: &str) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        let mut found: Vec<_> = lock(&self.schedules)
            .values()
            .filter(|(_, s)| s.terminal_id == terminal)
            .cloned()
            .collect();
        found.sort_by_key(|(order, _)| *order);
        Box::pin(async move { Ok(found.into_iter().map(|(_, s)| s).collect()) })
    }

    fn due_schedules(&self, now_ms: i64) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        let mut found: Vec<ScheduleRecord> = lock(&self.schedules)
            .values()
            .map(|(_, s)| s)
            .filter(|s| s.next_due_ms.is_some_and(|due| due <= now_ms))
            .cloned()
            .collect();
        found.sort_by_key(|s| s.next_due_ms);
        Box::pin(async move { Ok(found) })
    }
}
