//! The simulator's cardholder accounts and the holds placed on them. Balances are
//! atomics and holds live in sharded maps, so concurrent authorizations never wait
//! on one lock; holds are kept in a bounded window and the oldest are evicted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;

use super::config::{AccountStatus, SimAccount};
use crate::iso8583::fields::{mask_pan, Expiry};

use super::SimulatorError;

/// Index of an account in [`Accounts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccountId(usize);

#[derive(Debug)]
pub(crate) struct Account {
    /// Available balance in minor units.
    balance: AtomicI64,
    pub(crate) currency: [u8; 3],
    pub(crate) status: AccountStatus,
    pub(crate) expiry: Expiry,
}

/// Why a debit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DebitError {
    InsufficientFunds,
}

/// The balance would leave the range of `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// Accounts by PAN. The set is fixed at start; only balances change.
#[derive(Debug)]
pub(crate) struct Accounts {
    by_pan: HashMap<Box<str>, AccountId>,
    accounts: Box<[Account]>,
}

impl Accounts {
    pub(crate) fn new(configured: &[SimAccount]) -> Result<Accounts, SimulatorError> {
        let mut by_pan = HashMap::with_capacity(configured.len());
        let mut accounts = Vec::with_capacity(configured.len());
        for account in configured {
            let problem = |problem: &str| SimulatorError::Account {
                pan: mask_pan(&account.pan),
                problem: problem.to_owned(),
            };
            let expiry = parse_expiry(&account.expiry)
                .ok_or_else(|| problem("expected expiry YYMM with month 01-12"))?;
            let currency: [u8; 3] = account
                .currency
                .as_bytes()
                .try_into()
                .ok()
                .filter(|c: &[u8; 3]| c.iter().all(u8::is_ascii_digit))
                .ok_or_else(|| problem("expected a 3-digit ISO 4217 currency code"))?;
            let id = AccountId(accounts.len());
            if by_pan.insert(account.pan.as_str().into(), id).is_some() {
                return Err(problem("another account has the same pan"));
            }
            accounts.push(Account {
                balance: AtomicI64::new(account.balance),
                currency,
                status: account.status,
                expiry,
            });
        }
        Ok(Accounts {
            by_pan,
            accounts: accounts.into_boxed_slice(),
        })
    }

    pub(crate) fn find(&self, pan: &str) -> Option<AccountId> {
        self.by_pan.get(pan).copied()
    }

    pub(crate) fn get(&self, id: AccountId) -> &Account {
        &self.accounts[id.0]
    }

    pub(crate) fn balance(&self, pan: &str) -> Option<i64> {
        self.find(pan).map(|id| self.get(id).balance())
    }
}

impl Account {
    pub(crate) fn balance(&self) -> i64 {
        self.balance.load(Ordering::Acquire)
    }

    /// Takes `amount` off the available balance unless it exceeds it.
    pub(crate) fn debit(&self, amount: i64) -> Result<(), DebitError> {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                (amount <= available).then(|| available - amount)
            })
            .map(drop)
            .map_err(|_| DebitError::InsufficientFunds)
    }

    /// Adds `amount` (negative to take money back without a funds check, as a
    /// reversed refund does).
    pub(crate) fn credit(&self, amount: i64) -> Result<(), Overflow> {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_add(amount)
            })
            .map(drop)
            .map_err(|_| Overflow)
    }
}

fn parse_expiry(text: &str) -> Option<Expiry> {
    let digits: [u8; 4] = text.as_bytes().try_into().ok()?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pair = |i: usize| (digits[i] - b'0') * 10 + (digits[i + 1] - b'0');
    let (year, month) = (pair(0), pair(2));
    (1..=12).contains(&month).then_some(Expiry { year, month })
}

/// Longest terminal id keyed exactly; ISO 8583 field 41 has 8.
const TERMINAL_ID_MAX: usize = 16;

/// A terminal id (field 41) as part of a key; empty when the request has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TerminalId {
    bytes: [u8; TERMINAL_ID_MAX],
    len: u8,
}

impl TerminalId {
    /// None if over 16 bytes.
    fn new(terminal: &[u8]) -> Option<TerminalId> {
        let mut id = TerminalId {
            bytes: [0; TERMINAL_ID_MAX],
            len: u8::try_from(terminal.len()).ok()?,
        };
        id.bytes
            .get_mut(..terminal.len())?
            .copy_from_slice(terminal);
        Some(id)
    }
}

/// Finds a hold by the original's STAN and transmission time (field 7), as a
/// reversal's field 90 names them, and the terminal that sent both: STAN
/// counters are per terminal, so two terminals may send the same STAN in the
/// same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TransmissionKey {
    stan: u32,
    /// MMDDhhmmss as a number.
    time: u64,
    terminal: TerminalId,
}

impl TransmissionKey {
    /// From six STAN digits, ten MMDDhhmmss digits and a terminal id of at most
    /// 16 bytes (empty for host traffic without field 41); None if malformed.
    pub(crate) fn new(stan: &[u8], time: &[u8], terminal: &[u8]) -> Option<TransmissionKey> {
        Some(TransmissionKey {
            stan: u32::try_from(digits(stan, 6)?).ok()?,
            time: digits(time, 10)?,
            terminal: TerminalId::new(terminal)?,
        })
    }
}

/// Finds a hold by STAN and terminal id (field 41), for reversals without field 90.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TerminalKey {
    stan: u32,
    terminal: TerminalId,
}

impl TerminalKey {
    /// None if the STAN is malformed or the terminal id empty or over 16 bytes.
    pub(crate) fn new(stan: &[u8], terminal: &[u8]) -> Option<TerminalKey> {
        if terminal.is_empty() {
            return None;
        }
        Some(TerminalKey {
            stan: u32::try_from(digits(stan, 6)?).ok()?,
            terminal: TerminalId::new(terminal)?,
        })
    }
}

/// `text` as a number when it is exactly `len` ASCII digits.
fn digits(text: &[u8], len: usize) -> Option<u64> {
    if text.len() != len {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// The ways a reversal may name its original, most precise first.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HoldKeys {
    pub(crate) transmission: Option<TransmissionKey>,
    pub(crate) terminal: Option<TerminalKey>,
}

impl HoldKeys {
    pub(crate) fn is_empty(&self) -> bool {
        self.transmission.is_none() && self.terminal.is_none()
    }
}

#[derive(Debug)]
struct Hold {
    account: AccountId,
    /// Positive for money taken (purchase, cash), negative for money given (refund):
    /// releasing credits it back either way.
    amount: i64,
    released: bool,
    keys: HoldKeys,
}

/// What releasing a hold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The hold was live; the caller credits `amount` back to `account`.
    Released {
        account: AccountId,
        amount: i64,
    },
    /// A reversal already released it.
    AlreadyReleased {
        amount: i64,
    },
    NotFound,
}

/// Holds by id, with two indexes onto the ids. Ids are sequential, so keeping
/// at most `capacity` of them means evicting id `n - capacity` when `n` is placed.
/// Released holds stay until evicted, so a duplicate reversal is recognised.
#[derive(Debug)]
pub(crate) struct Holds {
    entries: DashMap<u64, Hold>,
    by_transmission: DashMap<TransmissionKey, u64>,
    by_terminal: DashMap<TerminalKey, u64>,
    next_id: AtomicU64,
    capacity: u64,
}

impl Holds {
    pub(crate) fn new(capacity: u64) -> Holds {
        Holds {
            entries: DashMap::new(),
            by_transmission: DashMap::new(),
            by_terminal: DashMap::new(),
            next_id: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Records `amount` as held on `account`, findable by `keys`. A newer hold
    /// under the same key (a STAN that wrapped) takes the key over.
    pub(crate) fn place(&self, account: AccountId, amount: i64, keys: HoldKeys) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.entries.insert(
            id,
            Hold {
                account,
                amount,
                released: false,
                keys,
            },
        );
        if let Some(key) = keys.transmission {
            self.by_transmission.insert(key, id);
        }
        if let Some(key) = keys.terminal {
            self.by_terminal.insert(key, id);
        }
        if let Some(oldest) = id.checked_sub(self.capacity) {
            self.evict(oldest);
        }
    }

    /// Evicting a live hold leaves its amount taken, as if it had been captured.
    fn evict(&self, id: u64) {
        let Some((_, hold)) = self.entries.remove(&id) else {
            return;
        };
        if let Some(key) = hold.keys.transmission {
            self.by_transmission
                .remove_if(&key, |_, owner| *owner == id);
        }
        if let Some(key) = hold.keys.terminal {
            self.by_terminal.remove_if(&key, |_, owner| *owner == id);
        }
    }

    /// The hold `keys` name. When they give the original's time, only a hold
    /// placed with that time matches, or one whose request carried none: a
    /// terminal that reused a STAN (a daily reset, a wrap past 999999) must
    /// not have an older purchase released by a reversal of a newer one.
    fn find(&self, keys: &HoldKeys) -> Option<u64> {
        let Some(key) = keys.transmission else {
            return self.last_of_terminal(keys);
        };
        self.by_transmission.get(&key).map(|id| *id).or_else(|| {
            self.last_of_terminal(keys).filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|hold| hold.keys.transmission.is_none())
            })
        })
    }

    /// Whether a live (unreleased) hold answers to `keys`: a repeated request.
    /// A repeat keeps its STAN but may carry a new transmission time, so here
    /// the terminal's last hold under that STAN also counts.
    pub(crate) fn is_live(&self, keys: &HoldKeys) -> bool {
        self.find(keys)
            .or_else(|| self.last_of_terminal(keys))
            .and_then(|id| self.entries.get(&id).map(|hold| !hold.released))
            .unwrap_or(false)
    }

    /// The terminal's last hold under the STAN `keys` name, whatever its time.
    fn last_of_terminal(&self, keys: &HoldKeys) -> Option<u64> {
        keys.terminal
            .and_then(|key| self.by_terminal.get(&key).map(|id| *id))
    }

    /// Marks the hold `keys` find as released, exactly once however many
    /// reversals race for it.
    pub(crate) fn release(&self, keys: &HoldKeys) -> Release {
        let Some(id) = self.find(keys) else {
            return Release::NotFound;
        };
        // The shard's write lock makes check-and-mark one step.
        let Some(mut hold) = self.entries.get_mut(&id) else {
            return Release::NotFound;
        };
        if hold.released {
            return Release::AlreadyReleased {
                amount: hold.amount,
            };
        }
        hold.released = true;
        Release::Released {
            account: hold.account,
            amount: hold.amount,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn account(pan: &str, balance: i64) -> SimAccount {
        SimAccount {
            pan: pan.to_owned(),
            balance,
            currency: "978".to_owned(),
            status: AccountStatus::Active,
            expiry: "3012".to_owned(),
        }
    }

    fn keys(stan: &str, time: &str, terminal: &str) -> HoldKeys {
        HoldKeys {
            transmission: TransmissionKey::new(
                stan.as_bytes(),
                time.as_bytes(),
                terminal.as_bytes(),
            ),
            terminal: TerminalKey::new(stan.as_bytes(), terminal.as_bytes()),
        }
    }

    #[test]
    fn debit_refuses_more_than_the_available_balance() {
        let accounts = Accounts::new(&[account("4111111111111111", 100)]).expect("valid");
        let id = accounts.find("4111111111111111").expect("configured");
        let acc = accounts.get(id);
        assert_eq!(acc.debit(101), Err(DebitError::InsufficientFunds));
        assert_eq!(acc.debit(100), Ok(()));
        assert_eq!(acc.balance(), 0);
        assert_eq!(acc.credit(i64::MAX), Ok(()));
        assert_eq!(acc.credit(1), Err(Overflow));
        assert_eq!(&acc.currency, b"978");
        assert_eq!(accounts.balance("4000000000000002"), None);
    }

    #[test]
    fn malformed_account_expiry_is_refused_with_a_masked_pan() {
        let mut bad = account("4111111111111111", 0);
        bad.expiry = "2813".to_owned();
        let err = Accounts::new(&[bad]).expect_err("month 13");
        let text = err.to_string();
        assert!(text.contains("411111******1111"), "{text}");
        assert!(!text.contains("4111111111111111"), "{text}");
    }

    #[test]
    fn a_hold_is_found_by_either_key_and_released_once() {
        let accounts = Accounts::new(&[account("4111111111111111", 100)]).expect("valid");
        let id = accounts.find("4111111111111111").expect("configured");
        let holds = Holds::new(10);
        holds.place(id, 40, keys("000001", "0102030405", "TERM0001"));
        let by_terminal = HoldKeys {
            transmission: None,
            terminal: TerminalKey::new(b"000001", b"TERM0001"),
        };
        assert!(holds.is_live(&by_terminal));
        assert_eq!(
            holds.release(&by_terminal),
            Release::Released {
                account: id,
                amount: 40
            }
        );
        let by_time = HoldKeys {
            transmission: TransmissionKey::new(b"000001", b"0102030405", b"TERM0001"),
            terminal: None,
        };
        assert_eq!(
            holds.release(&by_time),
            Release::AlreadyReleased { amount: 40 }
        );
        assert!(!holds.is_live(&by_time));
        assert_eq!(
            holds.release(&keys("000002", "0102030405", "TERM0001")),
            Release::NotFound
        );
    }

    #[test]
    fn holds_beyond_capacity_evict_the_oldest_and_its_keys() {
        let accounts = Accounts::new(&[account("4111111111111111", 100)]).expect("valid");
        let id = accounts.find("4111111111111111").expect("configured");
        let holds = Holds::new(2);
        for stan in ["000001", "000002", "000003"] {
            holds.place(id, 1, keys(stan, "0102030405", "T1"));
        }
        assert_eq!(holds.len(), 2);
        assert_eq!(holds.by_terminal.len(), 2);
        assert_eq!(
            holds.release(&keys("000001", "0102030405", "T1")),
            Release::NotFound
        );
        assert!(matches!(
            holds.release(&keys("000003", "0102030405", "T1")),
            Release::Released { amount: 1, .. }
        ));
    }

    #[test]
    fn keys_refuse_malformed_stans_times_and_terminals() {
        assert!(TransmissionKey::new(b"00001", b"0102030405", b"T1").is_none());
        assert!(TransmissionKey::new(b"000001", b"01020304x5", b"T1").is_none());
        assert!(TransmissionKey::new(b"000001", b"0102030405", &[b'T'; 17]).is_none());
        assert!(TransmissionKey::new(b"000001", b"0102030405", b"").is_some());
        assert!(TerminalKey::new(b"000001", b"").is_none());
        assert!(TerminalKey::new(b"000001", &[b'T'; 17]).is_none());
        assert!(HoldKeys::default().is_empty());
    }

    #[test]
    fn racing_releases_credit_exactly_once() {
        let accounts = Arc::new(Accounts::new(&[account("4111111111111111", 0)]).expect("valid"));
        let id = accounts.find("4111111111111111").expect("configured");
        let holds = Arc::new(Holds::new(10));
        holds.place(id, 7, keys("000009", "0102030405", "T1"));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (accounts, holds) = (accounts.clone(), holds.clone());
                std::thread::spawn(move || {
                    if let Release::Released { account, amount } =
                        holds.release(&keys("000009", "0102030405", "T1"))
                    {
                        accounts.get(account).credit(amount).expect("no overflow");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        assert_eq!(accounts.balance("4111111111111111"), Some(7));
    }
}
