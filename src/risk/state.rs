//! The only mutable state risk rules have: velocity windows, recent
//! transmissions (duplicates) and approved cardholder-initiated transactions
//! (recurring). Sharded concurrent maps keyed by a keyed hash, never a PAN;
//! one key's check-and-count happens under that key's shard lock only, so
//! counts stay exact under parallel load with no global lock. A reload keeps a
//! store when its rule is unchanged: [`RiskState`] hands the same store to the
//! new rules.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::key_table::{Entry, KeyTable};
use super::Timestamp;

/// A keyed (SipHash, per-process random key) hash of some byte strings. Card,
/// terminal and transmission keys are these, so memory never holds a PAN and
/// nobody outside the process can aim collisions at one shard.
pub(crate) fn keyed_hash(parts: &[&[u8]]) -> u64 {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = KEY.get_or_init(RandomState::new).build_hasher();
    for part in parts {
        hasher.write(part);
        // A separator no digit or id byte equals, so ("12","3") != ("1","23").
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

/// Per-process random keys for [`card_key`] and [`id_key`], from the same
/// random source as the SipHash key.
fn mix_keys() -> [u64; 2] {
    static KEYS: OnceLock<[u64; 2]> = OnceLock::new();
    *KEYS.get_or_init(|| [keyed_hash(&[b"mix-key-0"]), keyed_hash(&[b"mix-key-1"])])
}

/// The splitmix64 finalizer: a bijection on `u64` that spreads every input bit.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A card's key. A PAN of up to 19 digits is read as a number (up to 16 as
/// one nibble a digit, eight digits at a time) and put through two keyed
/// bijections, a few nanoseconds where SipHash takes tens; being a bijection
/// per PAN length, no two cards of one length share a key.
pub(crate) fn card_key(pan: &[u8]) -> u64 {
    let value = match pan.len() {
        1..=16 => digits_as_nibbles(pan),
        17..=19 => pan.iter().try_fold(0u64, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
        }),
        _ => None,
    };
    match value {
        Some(value) => {
            let [k0, k1] = mix_keys();
            mix(mix(value ^ k0) ^ pan.len() as u64 ^ k1)
        }
        None => keyed_hash(&[b"card", pan]),
    }
}

/// 1 to 16 ASCII digits as nibbles, one word in all; None if empty,
/// longer, or any byte is not a digit. Injective for a given length.
pub(crate) fn digits_as_nibbles(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let (high, low) = digits.split_at(digits.len().saturating_sub(8));
    digit_nibbles(high)
        .zip(digit_nibbles(low))
        .map(|(h, l)| h << 32 | l)
}

/// Up to 8 ASCII digits as nibbles in the low 32 bits, all in a few word
/// operations; None if any byte is not a digit.
fn digit_nibbles(digits: &[u8]) -> Option<u64> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let present = match digits.len() {
        8 => u64::MAX,
        n => (1u64 << (8 * n)) - 1,
    };
    let word = le_word(digits);
    // A digit byte is 0x30..=0x39: high nibble 3, and still 3 after adding 6.
    let high = (0xf0 * ONES) & present;
    let is_digits = word & high == (0x30 * ONES) & present
        && word.wrapping_add((0x06 * ONES) & present) & high == (0x30 * ONES) & present;
    if !is_digits {
        return None;
    }
    let mut n = word & (0x0f * ONES);
    n = (n | n >> 4) & 0x00ff_00ff_00ff_00ff;
    n = (n | n >> 8) & 0x0000_ffff_0000_ffff;
    Some((n | n >> 16) & 0xffff_ffff)
}

/// A terminal or merchant id's key: up to 16 bytes read as two words and
/// mixed with the keys, longer ids through SipHash.
pub(crate) fn id_key(id: &[u8]) -> u64 {
    let [k0, k1] = mix_keys();
    if id.len() <= 8 {
        // One word: one mix fewer (the length keeps this apart from longer ids).
        return mix(mix(le_word(id) ^ k0) ^ id.len() as u64 ^ k1);
    }
    if id.len() <= 16 {
        let (first, second) = id.split_at(8);
        return mix(mix(mix(le_word(first) ^ k0) ^ le_word(second) ^ k1) ^ id.len() as u64);
    }
    keyed_hash(&[b"id", id])
}

/// Up to 8 bytes as a little-endian word, zero-padded; a whole word without
/// a call to `memcpy`.
fn le_word(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(word) => u64::from_le_bytes(word),
        Err(_) => bytes
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u64::from(b)),
    }
}

/// Maps whose keys are already keyed hashes need no second hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type KeySet<V> = std::collections::HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

// ---------------------------------------------------------------- velocity

/// Slots in a velocity window's ring: the window is cut into `SLOTS - 1`
/// parts, and the part now filling is counted too, so a transaction stays
/// counted for at least `window` and at most `window × SLOTS / (SLOTS - 1)`.
pub(crate) const SLOTS: usize = 8;

/// Count and amount of one key over the ring of slots. `A` is `SLOTS` for
/// rules that limit amounts and 0 for those that only count, so a count-only
/// window is 40 bytes, not 104.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<const A: usize> {
    /// Slot index (time / slot length) of the newest slot written.
    newest: u64,
    counts: [u32; SLOTS],
    /// Minor units.
    amounts: [u64; A],
}

impl<const A: usize> Default for Window<A> {
    fn default() -> Self {
        Window::new(0)
    }
}

impl<const A: usize> Window<A> {
    fn new(now_slot: u64) -> Self {
        Window {
            newest: now_slot,
            counts: [0; SLOTS],
            amounts: [0; A],
        }
    }

    /// Clears the slots that fell out of the window by `now_slot`.
    fn advance(&mut self, now_slot: u64) {
        if now_slot <= self.newest {
            return;
        }
        let gone = now_slot - self.newest;
        if gone >= SLOTS as u64 {
            // Idle for a whole window (the usual case for a card): all gone.
            *self = Window::new(now_slot);
            return;
        }
        for step in 1..=gone {
            let slot = ((self.newest + step) % SLOTS as u64) as usize;
            self.counts[slot] = 0;
            if let Some(amount) = self.amounts.get_mut(slot) {
                *amount = 0;
            }
        }
        self.newest = now_slot;
    }

    fn totals(&self) -> (u64, u64) {
        let count = self.counts.iter().map(|&c| u64::from(c)).sum();
        let amount = self
            .amounts
            .iter()
            .fold(0u64, |sum, &v| sum.saturating_add(v));
        (count, amount)
    }

    /// Adds one transaction in `slot` (clamped into the ring); returns the slot used.
    fn add(&mut self, slot: u64, amount: u64) -> u64 {
        let slot = slot.clamp(self.newest.saturating_sub(SLOTS as u64 - 1), self.newest);
        let index = (slot % SLOTS as u64) as usize;
        self.counts[index] = self.counts[index].saturating_add(1);
        if let Some(sum) = self.amounts.get_mut(index) {
            *sum = sum.saturating_add(amount);
        }
        slot
    }

    /// Takes back what [`add`](Self::add) put in `slot`, if that slot is still in the ring.
    fn remove(&mut self, slot: u64, amount: u64) {
        if slot > self.newest || self.newest - slot >= SLOTS as u64 {
            return;
        }
        let index = (slot % SLOTS as u64) as usize;
        self.counts[index] = self.counts[index].saturating_sub(1);
        if let Some(sum) = self.amounts.get_mut(index) {
            *sum = sum.saturating_sub(amount);
        }
    }

    fn is_idle(&self, now_slot: u64) -> bool {
        now_slot.saturating_sub(self.newest) >= SLOTS as u64
    }
}

/// What a velocity check found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    /// Within the limits and counted, in this slot (to undo it).
    Counted { slot: u64 },
    /// Over a limit; counted only if the caller forced it (shadow mode).
    Over {
        count_exceeded: bool,
        counted_slot: Option<u64>,
    },
    /// The store is full and this key is new: not tracked.
    Untracked,
}

/// Limits checked by [`VelocityStore::tally`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_count: Option<u32>,
    pub max_amount: Option<u64>,
}

/// One velocity rule's windows, by card or terminal key.
pub(crate) struct VelocityStore<const A: usize> {
    map: KeyTable<Window<A>>,
    slot_ms: u64,
}

/// A store for rules that only count.
pub(crate) type CountStore = VelocityStore<0>;
/// A store for rules that also sum amounts.
pub(crate) type SumStore = VelocityStore<SLOTS>;

impl<const A: usize> VelocityStore<A> {
    pub(crate) fn new(window_ms: u64) -> Self {
        VelocityStore {
            map: KeyTable::default(),
            // Ceiling, so SLOTS - 1 slots always cover the whole window.
            slot_ms: window_ms.div_ceil(SLOTS as u64 - 1).max(1),
        }
    }

    fn slot_of(&self, now: Timestamp) -> u64 {
        now.unix_ms() / self.slot_ms
    }

    /// Checks `key`'s window with this transaction added and counts it if the
    /// limits hold or `force` is set; all under the key's shard lock, so two
    /// transactions on one card can never both take the last place.
    pub(crate) fn tally(
        &self,
        key: u64,
        now: Timestamp,
        amount: u64,
        limits: Limits,
        force: bool,
        cap: usize,
    ) -> Tally {
        let now_slot = self.slot_of(now);
        let over = |count: u64, sum: u64| -> Option<bool> {
            if limits
                .max_count
                .is_some_and(|max| count + 1 > u64::from(max))
            {
                Some(true)
            } else if limits
                .max_amount
                .is_some_and(|max| sum.saturating_add(amount) > max)
            {
                Some(false)
            } else {
                None
            }
        };
        self.map.entry(key, |entry| match entry {
            Entry::Occupied(window) => {
                window.advance(now_slot);
                let (count, sum) = window.totals();
                match over(count, sum) {
                    None => Tally::Counted {
                        slot: window.add(now_slot, amount),
                    },
                    Some(count_exceeded) => Tally::Over {
                        count_exceeded,
                        counted_slot: force.then(|| window.add(now_slot, amount)),
                    },
                }
            }
            Entry::Vacant(entry) => {
                let verdict = over(0, 0);
                if verdict.is_some() && !force {
                    return Tally::Over {
                        count_exceeded: verdict == Some(true),
                        counted_slot: None,
                    };
                }
                if self.map.len() >= cap {
                    return Tally::Untracked;
                }
                let mut window = Window::<A>::new(now_slot);
                let slot = window.add(now_slot, amount);
                entry.insert(window);
                match verdict {
                    None => Tally::Counted { slot },
                    Some(count_exceeded) => Tally::Over {
                        count_exceeded,
                        counted_slot: Some(slot),
                    },
                }
            }
        })
    }

    /// Starts loading `key`'s window into the cache for a coming [`tally`](Self::tally).
    pub(crate) fn prefetch(&self, key: u64) {
        self.map.prefetch(key);
    }

    /// Undoes a count from [`tally`](Self::tally) (a later rule declined).
    pub(crate) fn undo(&self, key: u64, slot: u64, amount: u64) {
        self.map.entry(key, |entry| {
            if let Entry::Occupied(window) = entry {
                window.remove(slot, amount);
            }
        });
    }

    /// The count and amount `key` has in its window at `now`, without counting.
    pub(crate) fn peek(&self, key: u64, now: Timestamp) -> (u64, u64) {
        let now_slot = self.slot_of(now);
        self.map.get(key).map_or((0, 0), |mut window| {
            window.advance(now_slot);
            window.totals()
        })
    }

    fn expire(&self, now: Timestamp) {
        let now_slot = self.slot_of(now);
        self.map.retain(|window| !window.is_idle(now_slot));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

// --------------------------------------------------------------- duplicates

/// What a duplicate check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// First within the window; recorded with this stamp (to undo it).
    First { stamp: u64 },
    /// Seen before within the window.
    Again,
    /// The store is full: not recorded.
    Untracked,
}

/// Transmissions (terminal, STAN, field 7) seen within one rule's window.
pub(crate) struct DuplicateStore {
    /// Key → when first seen, Unix ms.
    map: KeyTable<u64>,
    window_ms: u64,
}

impl DuplicateStore {
    pub(crate) fn new(window_ms: u64) -> DuplicateStore {
        DuplicateStore {
            map: KeyTable::default(),
            window_ms,
        }
    }

    /// Records `key` unless it is already there and young; at evaluation time,
    /// so a repeat finds its original even while that is still at the issuer.
    pub(crate) fn check_and_record(&self, key: u64, now: Timestamp, cap: usize) -> Seen {
        let now = now.unix_ms();
        self.map.entry(key, |entry| match entry {
            Entry::Occupied(seen) => {
                if now.saturating_sub(*seen) < self.window_ms {
                    Seen::Again
                } else {
                    *seen = now;
                    Seen::First { stamp: now }
                }
            }
            Entry::Vacant(entry) => {
                if self.map.len() >= cap {
                    return Seen::Untracked;
                }
                entry.insert(now);
                Seen::First { stamp: now }
            }
        })
    }

    /// Starts loading `key`'s record into the cache for a coming check.
    pub(crate) fn prefetch(&self, key: u64) {
        self.map.prefetch(key);
    }

    /// Forgets a record from [`check_and_record`](Self::check_and_record).
    pub(crate) fn undo(&self, key: u64, stamp: u64) {
        self.map.remove_if(key, |&seen| seen == stamp);
    }

    fn expire(&self, now: Timestamp) {
        let now = now.unix_ms();
        self.map
            .retain(|&seen| now.saturating_sub(seen) < self.window_ms);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

// ------------------------------------------------ cardholder-initiated approvals

/// What one compiled rule set asks of the [`CitLedger`]: how long an
/// approval must be kept, and how many the ledger may hold.
#[derive(Debug)]
pub(crate) struct CitPolicy {
    keep_ms: u64,
    cap: usize,
}

/// When each (card, merchant) last had an approved cardholder-initiated
/// transaction, for the `recurring` rule.
pub(crate) struct CitLedger {
    map: KeyTable<u64>,
    /// The policies of rule sets still alive. A rule set that is compiled but
    /// never installed (a refused reload) is dropped and stops counting here,
    /// so it can never cut what the running rules keep.
    policies: Mutex<Vec<Weak<CitPolicy>>>,
    /// The longest validity and the largest cap any live policy asks for,
    /// kept here so a record reads no lock but its shard's.
    keep_ms: AtomicU64,
    cap: AtomicUsize,
}

impl CitLedger {
    /// An empty ledger that records nothing until a policy is [`register`](Self::register)ed.
    pub(crate) fn new() -> CitLedger {
        CitLedger {
            map: KeyTable::default(),
            policies: Mutex::new(Vec::new()),
            keep_ms: AtomicU64::new(0),
            cap: AtomicUsize::new(0),
        }
    }

    /// Keeps approvals for `keep_ms`, up to `cap` of them, for as long as the
    /// returned policy lives (and longer if another live policy asks for more).
    pub(crate) fn register(&self, keep_ms: u64, cap: usize) -> Arc<CitPolicy> {
        let policy = Arc::new(CitPolicy { keep_ms, cap });
        let mut policies = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        policies.push(Arc::downgrade(&policy));
        self.settle(&mut policies);
        policy
    }

    /// Forgets dropped policies and takes the most any live one asks for.
    fn settle(&self, policies: &mut Vec<Weak<CitPolicy>>) {
        policies.retain(|p| p.strong_count() > 0);
        let (keep_ms, cap) = policies
            .iter()
            .filter_map(Weak::upgrade)
            .fold((0, 0), |(keep, cap), p| {
                (keep.max(p.keep_ms), cap.max(p.cap))
            });
        self.keep_ms.store(keep_ms, Ordering::Relaxed);
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// Returns false when the ledger is full and `key` is new.
    pub(crate) fn record(&self, key: u64, now: Timestamp) -> bool {
        self.map.entry(key, |entry| match entry {
            Entry::Occupied(at) => {
                *at = now.unix_ms();
                true
            }
            Entry::Vacant(entry) => {
                if self.map.len() >= self.cap.load(Ordering::Relaxed) {
                    return false;
                }
                entry.insert(now.unix_ms());
                true
            }
        })
    }

    /// When `key` last had an approval, Unix ms.
    pub(crate) fn last(&self, key: u64) -> Option<u64> {
        self.map.get(key)
    }

    /// Drops approvals older than every live policy keeps; all of them once
    /// no live rule set has a `recurring` rule.
    fn expire(&self, now: Timestamp) {
        self.settle(&mut self.policies.lock().unwrap_or_else(|p| p.into_inner()));
        let now = now.unix_ms();
        let keep = self.keep_ms.load(Ordering::Relaxed);
        self.map.retain(|&at| now.saturating_sub(at) <= keep);
    }
}

// ------------------------------------------------------------- the registry

/// A store as the registry keeps it: weak, so a store no snapshot's rules use
/// any more is freed with the last snapshot that did.
pub(crate) enum Handle {
    Count(Weak<CountStore>),
    Sum(Weak<SumStore>),
    Duplicate(Weak<DuplicateStore>),
}

impl Handle {
    fn is_live(&self) -> bool {
        match self {
            Handle::Count(w) => w.strong_count() > 0,
            Handle::Sum(w) => w.strong_count() > 0,
            Handle::Duplicate(w) => w.strong_count() > 0,
        }
    }

    fn clone_weak(&self) -> Handle {
        match self {
            Handle::Count(w) => Handle::Count(w.clone()),
            Handle::Sum(w) => Handle::Sum(w.clone()),
            Handle::Duplicate(w) => Handle::Duplicate(w.clone()),
        }
    }

    fn expire(&self, now: Timestamp) {
        match self {
            Handle::Count(w) => w.upgrade().map(|s| s.expire(now)),
            Handle::Sum(w) => w.upgrade().map(|s| s.expire(now)),
            Handle::Duplicate(w) => w.upgrade().map(|s| s.expire(now)),
        };
    }

    fn len(&self) -> usize {
        match self {
            Handle::Count(w) => w.upgrade().map_or(0, |s| s.len()),
            Handle::Sum(w) => w.upgrade().map_or(0, |s| s.len()),
            Handle::Duplicate(w) => w.upgrade().map_or(0, |s| s.len()),
        }
    }
}

/// A kind of store the registry can hold.
pub(crate) trait Store: Sized {
    fn handle(weak: Weak<Self>) -> Handle;
    fn weak(handle: &Handle) -> Option<&Weak<Self>>;
}

impl Store for CountStore {
    fn handle(weak: Weak<Self>) -> Handle {
        Handle::Count(weak)
    }
    fn weak(handle: &Handle) -> Option<&Weak<Self>> {
        match handle {
            Handle::Count(w) => Some(w),
            _ => None,
        }
    }
}

impl Store for SumStore {
    fn handle(weak: Weak<Self>) -> Handle {
        Handle::Sum(weak)
    }
    fn weak(handle: &Handle) -> Option<&Weak<Self>> {
        match handle {
            Handle::Sum(w) => Some(w),
            _ => None,
        }
    }
}

impl Store for DuplicateStore {
    fn handle(weak: Weak<Self>) -> Handle {
        Handle::Duplicate(weak)
    }
    fn weak(handle: &Handle) -> Option<&Weak<Self>> {
        match handle {
            Handle::Duplicate(w) => Some(w),
            _ => None,
        }
    }
}

/// The risk state shared by every snapshot of one running switch (or one
/// `rules test` run): the stores by rule identity, and the CIT ledger. The
/// registry's mutex is taken only when rules are compiled and when idle keys
/// are swept, never while evaluating.
pub struct RiskState {
    stores: Mutex<Vec<(String, Handle)>>,
    cit: Arc<CitLedger>,
    /// The Redis handle of `[risk] state`, kept across reloads while the
    /// URL and key stay the same (its connection with it).
    shared: Mutex<Option<(String, [u8; 32], super::redis_state::SharedState)>>,
}

impl Default for RiskState {
    fn default() -> Self {
        RiskState {
            stores: Mutex::new(Vec::new()),
            cit: Arc::new(CitLedger::new()),
            shared: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for RiskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskState")
            .field("tracked_keys", &self.tracked_keys())
            .finish()
    }
}

impl RiskState {
    pub fn new() -> Arc<RiskState> {
        Arc::new(RiskState::default())
    }

    /// The shared state at `url` hashing under `key`: the running handle if
    /// both are unchanged, else a new one (connected on first use).
    pub(crate) fn shared_state(
        &self,
        url: &str,
        key: [u8; 32],
    ) -> Result<super::redis_state::SharedState, super::redis_state::StateError> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((running_url, running_key, handle)) = shared.as_ref() {
            if running_url == url && *running_key == key {
                return Ok(handle.clone());
            }
        }
        let handle = super::redis_state::SharedState::new(url, key)?;
        *shared = Some((url.to_owned(), key, handle.clone()));
        Ok(handle)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Vec<(String, Handle)>> {
        // The registry holds no invariant a panicking holder could break.
        self.stores.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store for `identity`: the running one if a rule with the same
    /// identity is live (so a reload keeps its counts), else a new one.
    pub(crate) fn store<S: Store>(&self, identity: String, make: impl FnOnce() -> S) -> Arc<S> {
        let mut stores = self.registry();
        stores.retain(|(_, handle)| handle.is_live());
        let running = stores
            .iter()
            .filter(|(id, _)| *id == identity)
            .find_map(|(_, handle)| S::weak(handle).and_then(Weak::upgrade));
        if let Some(store) = running {
            return store;
        }
        let store = Arc::new(make());
        stores.push((identity, S::handle(Arc::downgrade(&store))));
        store
    }

    pub(crate) fn cit_ledger(&self) -> &Arc<CitLedger> {
        &self.cit
    }

    /// Drops keys whose windows have passed. The switch calls this every few
    /// seconds; memory then holds only keys seen within their rule's window.
    pub fn expire(&self, now: Timestamp) {
        let live: Vec<Handle> = self
            .registry()
            .iter()
            .map(|(_, h)| h.clone_weak())
            .collect();
        // Swept outside the registry lock: a reload need not wait for it.
        for handle in live {
            handle.expire(now);
        }
        self.cit.expire(now);
    }

    /// Keys held across every store (velocity, duplicate, CIT ledger).
    pub fn tracked_keys(&self) -> usize {
        let stores: usize = self.registry().iter().map(|(_, h)| h.len()).sum();
        stores + self.cit.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_unix_ms(1_700_000_000_000 + ms)
    }

    fn count_limit(n: u32) -> Limits {
        Limits {
            max_count: Some(n),
            max_amount: None,
        }
    }

    #[test]
    fn card_keys_differ_for_different_cards_and_lengths() {
        assert_eq!(card_key(b"4111111111111111"), card_key(b"4111111111111111"));
        assert_ne!(card_key(b"4111111111111111"), card_key(b"4111111111111112"));
        assert_ne!(card_key(b"0411111111111111"), card_key(b"411111111111111"));
        assert_ne!(
            card_key(b"41111111111111111111"),
            card_key(b"4111111111111111111")
        );
        assert_ne!(card_key(b"4111x"), card_key(b"4111"));
    }

    #[test]
    fn digits_pack_as_nibbles_and_anything_else_is_refused() {
        assert_eq!(digit_nibbles(b"12345678"), Some(0x8765_4321));
        assert_eq!(digit_nibbles(b"905"), Some(0x509));
        assert_eq!(digit_nibbles(b""), Some(0));
        for bad in [&b"1234567:"[..], b"/", b"12a4", b"9\xb9", b"12 4"] {
            assert_eq!(digit_nibbles(bad), None, "{bad:?}");
        }
        // Every card of one length has its own key.
        let keys: std::collections::HashSet<u64> = (0..10_000u64)
            .map(|n| card_key(format!("4000{n:012}").as_bytes()))
            .collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn id_keys_differ_for_different_ids_and_lengths() {
        assert_eq!(id_key(b"TERM0001"), id_key(b"TERM0001"));
        assert_ne!(id_key(b"TERM0001"), id_key(b"TERM0002"));
        assert_ne!(id_key(b"A"), id_key(b"A\0"));
        assert_ne!(id_key(b"MERCHANT0000001"), id_key(b"MERCHANT0000002"));
        assert_ne!(
            id_key(b"A-VERY-LONG-MERCHANT-ID-1"),
            id_key(b"A-VERY-LONG-MERCHANT-ID-2")
        );
    }

    #[test]
    fn keyed_hash_separates_its_parts() {
        assert_ne!(keyed_hash(&[b"12", b"3"]), keyed_hash(&[b"1", b"23"]));
        assert_eq!(keyed_hash(&[b"4111"]), keyed_hash(&[b"4111"]));
    }

    #[test]
    fn count_limit_admits_exactly_max_per_window() {
        let store = CountStore::new(MINUTE);
        let results: Vec<bool> = (0..7)
            .map(|i| {
                matches!(
                    store.tally(1, at(i * 1000), 0, count_limit(5), false, 10),
                    Tally::Counted { .. }
                )
            })
            .collect();
        assert_eq!(results, [true, true, true, true, true, false, false]);
        assert_eq!(store.peek(1, at(7000)), (5, 0));
    }

    #[test]
    fn transactions_leave_the_window_after_it_passes() {
        let store = CountStore::new(MINUTE);
        for i in 0..5 {
            store.tally(1, at(i), 0, count_limit(5), false, 10);
        }
        // Still counted a full window later minus a moment...
        assert_eq!(store.peek(1, at(MINUTE - 1)).0, 5);
        // ...and gone once window × 8/7 has passed.
        assert_eq!(store.peek(1, at(MINUTE * 8 / 7 + 10)).0, 0);
        assert!(matches!(
            store.tally(1, at(MINUTE * 8 / 7 + 10), 0, count_limit(5), false, 10),
            Tally::Counted { .. }
        ));
    }

    #[test]
    fn amounts_sum_within_the_window_and_undo_takes_one_back() {
        let store = SumStore::new(MINUTE);
        let limits = Limits {
            max_count: None,
            max_amount: Some(1000),
        };
        let Tally::Counted { slot } = store.tally(9, at(0), 600, limits, false, 10) else {
            panic!("first fits");
        };
        assert_eq!(
            store.tally(9, at(1), 500, limits, false, 10),
            Tally::Over {
                count_exceeded: false,
                counted_slot: None
            }
        );
        store.undo(9, slot, 600);
        assert_eq!(store.peek(9, at(2)), (0, 0));
        assert!(matches!(
            store.tally(9, at(3), 1000, limits, false, 10),
            Tally::Counted { .. }
        ));
    }

    #[test]
    fn forced_tally_counts_even_over_the_limit() {
        let store = CountStore::new(MINUTE);
        store.tally(1, at(0), 0, count_limit(1), true, 10);
        let over = store.tally(1, at(1), 0, count_limit(1), true, 10);
        assert!(matches!(
            over,
            Tally::Over {
                count_exceeded: true,
                counted_slot: Some(_)
            }
        ));
        assert_eq!(store.peek(1, at(2)).0, 2);
    }

    #[test]
    fn a_full_store_does_not_track_new_keys() {
        let store = CountStore::new(MINUTE);
        store.tally(1, at(0), 0, count_limit(5), false, 1);
        assert_eq!(
            store.tally(2, at(0), 0, count_limit(5), false, 1),
            Tally::Untracked
        );
        assert!(matches!(
            store.tally(1, at(0), 0, count_limit(5), false, 1),
            Tally::Counted { .. }
        ));
    }

    #[test]
    fn idle_keys_expire() {
        let store = CountStore::new(MINUTE);
        for key in 0..100 {
            store.tally(key, at(0), 0, count_limit(5), false, 1000);
        }
        store.tally(500, at(2 * MINUTE), 0, count_limit(5), false, 1000);
        store.expire(at(2 * MINUTE));
        assert_eq!(store.len(), 1);
        assert_eq!(store.map.len(), 1);
    }

    #[test]
    fn a_transaction_with_an_older_clock_counts_in_the_ring() {
        let store = CountStore::new(MINUTE);
        store.tally(1, at(30_000), 0, count_limit(5), false, 10);
        store.tally(1, at(1_000), 0, count_limit(5), false, 10);
        assert_eq!(store.peek(1, at(30_000)).0, 2);
    }

    #[test]
    fn duplicates_are_seen_within_the_window_only() {
        let store = DuplicateStore::new(MINUTE);
        let Seen::First { stamp } = store.check_and_record(7, at(0), 10) else {
            panic!("first");
        };
        assert_eq!(store.check_and_record(7, at(MINUTE - 1), 10), Seen::Again);
        assert!(matches!(
            store.check_and_record(7, at(MINUTE), 10),
            Seen::First { .. }
        ));
        store.undo(7, stamp);
        assert_eq!(store.len(), 1, "undo of an overwritten record is a no-op");
        store.expire(at(3 * MINUTE));
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn registry_hands_back_the_live_store_for_the_same_identity() {
        let state = RiskState::new();
        let a = state.store("v/a".into(), || CountStore::new(MINUTE));
        let again = state.store("v/a".into(), || CountStore::new(MINUTE));
        assert!(Arc::ptr_eq(&a, &again));
        let other = state.store("v/b".into(), || CountStore::new(MINUTE));
        assert!(!Arc::ptr_eq(&a, &other));
        let sum = state.store("v/a".into(), || SumStore::new(MINUTE));
        assert_eq!(
            sum.len(),
            0,
            "same identity, other kind: a store of its own"
        );
        drop((a, again));
        let fresh = state.store("v/a".into(), || CountStore::new(MINUTE));
        assert_eq!(fresh.len(), 0);
    }
}
