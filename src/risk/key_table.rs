//! The table risk state lives in: keys that are already keyed hashes, values
//! small fixed-size records, in shards behind a mutex each. Open addressing
//! with the key inside its bucket, so a lookup reads one bucket (one to three
//! cache lines) where a `HashMap` reads a control group and then a bucket, and
//! [`KeyTable::prefetch`] can start that read before any lock is taken:
//! evaluation asks for a request's buckets first and touches them after the
//! stateless rules have run, when they are in cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Shards per table: enough that two cores rarely meet on one lock, few
/// enough that a growing shard copies a small part of the table.
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Marks an empty bucket. The key 0 is stored as 1: keys are 64-bit keyed
/// hashes, so the two meeting is as likely as any other two keys colliding.
const EMPTY: u64 = 0;

fn stored(key: u64) -> u64 {
    key.max(1)
}

/// The shard of a key: its top bits (buckets are chosen by its low bits).
fn shard_of(key: u64) -> usize {
    (key >> (64 - SHARD_BITS)) as usize
}

/// Where a key's probe starts: its low 32 bits scaled to the capacity, so a
/// capacity need not be a power of two and tables grow by half, not double.
fn home(key: u64, capacity: usize) -> usize {
    ((u64::from(key as u32) * capacity as u64) >> 32) as usize
}

#[derive(Clone, Copy)]
struct Bucket<V> {
    key: u64,
    value: V,
}

/// One shard's buckets, linear probing, at most three quarters full.
struct Table<V> {
    buckets: Box<[Bucket<V>]>,
    len: usize,
}

impl<V: Copy + Default> Table<V> {
    fn empty(capacity: usize) -> Box<[Bucket<V>]> {
        vec![
            Bucket {
                key: EMPTY,
                value: V::default(),
            };
            capacity
        ]
        .into_boxed_slice()
    }

    fn next(&self, index: usize) -> usize {
        if index + 1 == self.buckets.len() {
            0
        } else {
            index + 1
        }
    }

    /// The bucket holding `key`, or the empty one where it would go.
    fn find(&self, key: u64) -> Result<usize, usize> {
        if self.buckets.is_empty() {
            return Err(0);
        }
        let mut index = home(key, self.buckets.len());
        loop {
            match self.buckets[index].key {
                k if k == key => return Ok(index),
                EMPTY => return Err(index),
                _ => index = self.next(index),
            }
        }
    }

    /// Adds a key that is not in the table.
    fn insert_new(&mut self, key: u64, value: V) {
        if (self.len + 1) * 4 > self.buckets.len() * 3 {
            self.grow();
        }
        let (Ok(index) | Err(index)) = self.find(key);
        self.buckets[index] = Bucket { key, value };
        self.len += 1;
    }

    fn grow(&mut self) {
        let capacity = self.buckets.len();
        let old = std::mem::replace(
            &mut self.buckets,
            Self::empty((capacity + capacity / 2).max(16)),
        );
        for bucket in old.iter().filter(|b| b.key != EMPTY) {
            let (Ok(index) | Err(index)) = self.find(bucket.key);
            self.buckets[index] = *bucket;
        }
    }

    /// Empties bucket `hole`, moving later buckets of its run back so every
    /// key stays reachable from its home without tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        let capacity = self.buckets.len();
        let mut index = hole;
        loop {
            index = self.next(index);
            let key = self.buckets[index].key;
            if key == EMPTY {
                break;
            }
            // It may move back if the hole lies on its way from home.
            let from_home = (index + capacity - home(key, capacity)) % capacity;
            let from_hole = (index + capacity - hole) % capacity;
            if from_home >= from_hole {
                self.buckets[hole] = self.buckets[index];
                hole = index;
            }
        }
        self.buckets[hole].key = EMPTY;
        self.len -= 1;
    }

    /// Removes the keys `keep` refuses; returns how many.
    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        // Start after an empty bucket: no run wraps past it, so a removal
        // only moves buckets not yet visited.
        let Some(start) = self.buckets.iter().position(|b| b.key == EMPTY) else {
            return 0;
        };
        let before = self.len;
        let mut index = self.next(start);
        while index != start {
            let bucket = &self.buckets[index];
            if bucket.key != EMPTY && !keep(&bucket.value) {
                // A later bucket may have moved here: look again.
                self.remove_at(index);
            } else {
                index = self.next(index);
            }
        }
        before - self.len
    }
}

/// One shard, on its own cache line.
#[repr(align(64))]
struct Shard<V> {
    table: Mutex<Table<V>>,
    /// Address and length of the buckets, mirrored for [`KeyTable::prefetch`],
    /// which reads them without the lock: a stale pair prefetches a line that
    /// is not needed, never anything worse.
    buckets_at: AtomicUsize,
    capacity: AtomicUsize,
}

impl<V> Shard<V> {
    fn lock(&self) -> MutexGuard<'_, Table<V>> {
        // Every table operation leaves it consistent before it can panic.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, table: &Table<V>) {
        if self.capacity.load(Ordering::Relaxed) != table.buckets.len() {
            self.buckets_at
                .store(table.buckets.as_ptr() as usize, Ordering::Relaxed);
            self.capacity.store(table.buckets.len(), Ordering::Relaxed);
        }
    }
}

/// A key's place in a [`KeyTable::entry`] call.
pub(crate) enum Entry<'a, V> {
    Occupied(&'a mut V),
    Vacant(VacantEntry<'a, V>),
}

pub(crate) struct VacantEntry<'a, V> {
    table: &'a mut Table<V>,
    key: u64,
}

impl<V: Copy + Default> VacantEntry<'_, V> {
    pub(crate) fn insert(self, value: V) {
        self.table.insert_new(self.key, value);
    }
}

/// A concurrent map from keyed hashes to small `Copy` records.
pub(crate) struct KeyTable<V> {
    shards: Box<[Shard<V>]>,
    len: AtomicUsize,
}

impl<V: Copy + Default> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    table: Mutex::new(Table {
                        buckets: Box::default(),
                        len: 0,
                    }),
                    buckets_at: AtomicUsize::new(0),
                    capacity: AtomicUsize::new(0),
                })
                .collect(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<V: Copy + Default> KeyTable<V> {
    fn shard(&self, key: u64) -> &Shard<V> {
        &self.shards[shard_of(key)]
    }

    /// Runs `f` on `key`'s entry under its shard's lock: a check and an
    /// update in `f` are one step for every other caller.
    pub(crate) fn entry<R>(&self, key: u64, f: impl FnOnce(Entry<'_, V>) -> R) -> R {
        let key = stored(key);
        let shard = self.shard(key);
        let mut table = shard.lock();
        let before = table.len;
        let result = match table.find(key) {
            Ok(index) => f(Entry::Occupied(&mut table.buckets[index].value)),
            Err(_) => f(Entry::Vacant(VacantEntry {
                table: &mut table,
                key,
            })),
        };
        if table.len != before {
            self.len.fetch_add(table.len - before, Ordering::Relaxed);
            shard.publish(&table);
        }
        result
    }

    /// A copy of `key`'s value.
    pub(crate) fn get(&self, key: u64) -> Option<V> {
        let key = stored(key);
        let table = self.shard(key).lock();
        table.find(key).ok().map(|index| table.buckets[index].value)
    }

    /// Removes `key` if `remove` says so; returns whether it did.
    pub(crate) fn remove_if(&self, key: u64, remove: impl FnOnce(&V) -> bool) -> bool {
        let key = stored(key);
        let mut table = self.shard(key).lock();
        match table.find(key) {
            Ok(index) if remove(&table.buckets[index].value) => {
                table.remove_at(index);
                self.len.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Keeps only the entries `keep` accepts, one shard locked at a time.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        for shard in self.shards.iter() {
            let removed = shard.lock().retain(&mut keep);
            self.len.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Starts loading `key`'s bucket into the cache, without locking or
    /// waiting: a later [`entry`](Self::entry) for it then finds it there.
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        let key = stored(key);
        let shard = self.shard(key);
        let capacity = shard.capacity.load(Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let size = std::mem::size_of::<Bucket<V>>();
        let at = shard
            .buckets_at
            .load(Ordering::Relaxed)
            .wrapping_add(home(key, capacity).wrapping_mul(size));
        // The key is in its home bucket or, at most three quarters full,
        // most often the next: fetch both.
        prefetch_lines(at, 2 * size);
    }
}

/// Prefetches the cache lines of `len` bytes at address `at`.
#[inline]
fn prefetch_lines(at: usize, len: usize) {
    const LINE: usize = 64;
    let lines = (at % LINE + len).div_ceil(LINE);
    let first = at - at % LINE;
    for line in 0..lines {
        prefetch(first.wrapping_add(line * LINE));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn prefetch(address: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: a prefetch is a hint; it never faults and changes nothing the
    // program can observe, whatever the address (SSE is baseline on x86_64).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(address as *const i8) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn prefetch(_address: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn put(table: &KeyTable<u64>, key: u64, value: u64) {
        table.entry(key, |entry| match entry {
            Entry::Occupied(v) => *v = value,
            Entry::Vacant(slot) => slot.insert(value),
        });
    }

    /// Keys that share low bits, so runs are long and wrap around the end.
    fn crowded(i: u64) -> u64 {
        (i << 58) | (i % 7) << 29 | 0xffff_fff0
    }

    #[test]
    fn a_table_agrees_with_a_hash_map_through_inserts_removals_and_sweeps() {
        let table = KeyTable::<u64>::default();
        let mut model = HashMap::new();
        let mut seed = 1u64;
        for round in 0..20_000u64 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let key = if round % 3 == 0 {
                crowded(seed >> 40 & 0xff)
            } else {
                seed >> 50
            };
            match seed >> 62 {
                0 | 1 => {
                    put(&table, key, round);
                    model.insert(stored(key), round);
                }
                2 => {
                    let removed = table.remove_if(key, |_| true);
                    assert_eq!(removed, model.remove(&stored(key)).is_some());
                }
                _ => assert_eq!(table.get(key), model.get(&stored(key)).copied()),
            }
            if round % 5_000 == 4_999 {
                table.retain(|v| v % 2 == 0);
                model.retain(|_, v| *v % 2 == 0);
            }
            assert_eq!(table.len(), model.len());
        }
        for (&key, &value) in &model {
            assert_eq!(table.get(key), Some(value));
        }
    }

    #[test]
    fn key_zero_is_a_key_like_any_other() {
        let table = KeyTable::<u64>::default();
        put(&table, 0, 5);
        assert_eq!(table.get(0), Some(5));
        assert_eq!(table.len(), 1);
        assert!(table.remove_if(0, |&v| v == 5));
        assert_eq!(table.get(0), None);
    }

    #[test]
    fn prefetching_any_key_is_harmless() {
        let table = KeyTable::<u64>::default();
        table.prefetch(42);
        put(&table, 42, 1);
        for key in [0, 42, u64::MAX] {
            table.prefetch(key);
        }
        assert_eq!(table.get(42), Some(1));
    }
}
