//! Velocity and duplicate state shared by every switch instance, in Redis
//! (`[risk] state = "redis://host:port"`). A velocity check-and-count is one
//! round trip: a server-side Lua script drops what left the sliding window,
//! compares count and sum with the limits and adds the request, atomically.
//! A duplicate is `SET NX PX`. Keys carry only an HMAC of the card number
//! (or terminal id, or transmission) under a key every instance shares,
//! never a PAN; every key expires with its window, so idle ones go.
//!
//! The connection is made on first use and remade by the connection
//! manager; every call is bounded by [`CALL_TIMEOUT`], so an unreachable
//! Redis costs a request that long at most, and after a failure calls fail
//! at once for [`RETRY_AFTER`] before one tries again.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ring::hmac;
use tokio::sync::OnceCell;

/// Longest one Redis call may take before it counts as a failure.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failure, how long calls fail at once before one tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Drops members older than the window, checks, counts (unless over and not
/// forced), and keeps the key as long as its window. Members are
/// `<unique>:<amount>`; scores their time in ms.
const VELOCITY_LUA: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local amount = tonumber(ARGV[3])
local max_count = tonumber(ARGV[4])
local max_amount = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local count = #members
local sum = 0
for _, m in ipairs(members) do
  sum = sum + tonumber(string.match(m, ':(%d+)$'))
end
local over = 0
if max_count >= 0 and count + 1 > max_count then
  over = 1
elseif max_amount >= 0 and sum + amount > max_amount then
  over = 2
end
local counted = 0
if over == 0 or ARGV[6] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[7])
  counted = 1
end
redis.call('PEXPIRE', KEYS[1], window)
return {over, counted}
";

/// Why a shared-state call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("risk state {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// What a velocity check in Redis came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTally {
    /// `Some(true)` over the count, `Some(false)` over the amount.
    pub over: Option<bool>,
    /// The member counted (to take back), when the request was counted.
    pub counted: Option<String>,
}

/// A handle on the shared state; cheap to clone.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    velocity: redis::Script,
    key: hmac::Key,
    /// Unix ms before which calls fail at once (after a failure).
    closed_until_ms: AtomicI64,
    started: Instant,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl SharedState {
    /// A handle on `url` (not connected yet) hashing keys under `key`.
    pub fn new(url: &str, key: [u8; 32]) -> Result<SharedState, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(SharedState {
            inner: Arc::new(Inner {
                url: url.to_owned(),
                client,
                connection: OnceCell::new(),
                velocity: redis::Script::new(VELOCITY_LUA),
                key: hmac::Key::new(hmac::HMAC_SHA256, &key),
                closed_until_ms: AtomicI64::new(0),
                started: Instant::now(),
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// `isoswitch:<rule>:<what>:<hmac>`: the rule's name keeps two rules'
    /// windows apart; the HMAC (first 16 bytes, hex) names the card,
    /// terminal or transmission without revealing it.
    pub fn key(&self, rule: &str, what: &str, parts: &[&[u8]]) -> String {
        let mut context = hmac::Context::with_key(&self.inner.key);
        for part in parts {
            context.update(&(part.len() as u32).to_be_bytes());
            context.update(part);
        }
        let tag = context.sign();
        format!(
            "isoswitch:{rule}:{what}:{}",
            hex::encode(&tag.as_ref()[..16])
        )
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn failed(&self, reason: String) -> StateError {
        let until = self.elapsed_ms() + i64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1000);
        self.inner.closed_until_ms.store(until, Ordering::Relaxed);
        StateError::Unreachable {
            url: self.inner.url.clone(),
            reason,
        }
    }

    /// Runs `call` on the connection within [`CALL_TIMEOUT`].
    async fn call<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Result<T, StateError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.elapsed_ms() < self.inner.closed_until_ms.load(Ordering::Relaxed) {
            return Err(StateError::Unreachable {
                url: self.inner.url.clone(),
                reason: "unreachable a moment ago; retrying shortly".to_owned(),
            });
        }
        let attempt = async {
            let connection = self
                .inner
                .connection
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(CALL_TIMEOUT)
                        .set_response_timeout(CALL_TIMEOUT)
                        .set_number_of_retries(1);
                    self.inner
                        .client
                        .get_connection_manager_with_config(config)
                        .await
                })
                .await?
                .clone();
            call(connection).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    /// Checks and counts one request in the window at `key`.
    #[allow(clippy::too_many_arguments)]
    pub async fn velocity(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: u64,
        amount: u64,
        max_count: Option<u32>,
        max_amount: Option<u64>,
        force: bool,
    ) -> Result<SharedTally, StateError> {
        let member = format!("{now_ms}-{:016x}:{amount}", rand_u64());
        let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let (over, counted): (i64, i64) = self
            .call(|mut connection| {
                let script = self.inner.velocity.clone();
                let key = key.to_owned();
                let member = member.clone();
                async move {
                    let result: Vec<i64> = script
                        .key(key)
                        .arg(now_ms)
                        .arg(window_ms)
                        .arg(amount)
                        .arg(limit(max_count.map(u64::from)))
                        .arg(limit(max_amount))
                        .arg(if force { "1" } else { "0" })
                        .arg(member)
                        .invoke_async(&mut connection)
                        .await?;
                    match result.as_slice() {
                        [over, counted] => Ok((*over, *counted)),
                        _ => Err(redis::RedisError::from((
                            redis::ErrorKind::TypeError,
                            "velocity script: expected {over, counted}",
                        ))),
                    }
                }
            })
            .await?;
        Ok(SharedTally {
            over: match over {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            counted: (counted == 1).then_some(member),
        })
    }

    /// Takes back a count made by [`SharedState::velocity`].
    pub async fn velocity_undo(&self, key: &str, member: &str) -> Result<(), StateError> {
        self.call(|mut connection| async move {
            redis::cmd("ZREM")
                .arg(key)
                .arg(member)
                .query_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }

    /// Records the transmission at `key` for `window_ms`; true when it is
    /// the first within the window.
    pub async fn first_transmission(&self, key: &str, window_ms: u64) -> Result<bool, StateError> {
        self.call(|mut connection| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(window_ms.max(1))
                .query_async::<Option<String>>(&mut connection)
                .await
        })
        .await
        .map(|set| set.is_some())
    }

    /// Forgets a transmission recorded by [`SharedState::first_transmission`].
    pub async fn forget_transmission(&self, key: &str) -> Result<(), StateError> {
        self.call(|mut connection| async move {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<i64>(&mut connection)
                .await
        })
        .await
        .map(drop)
    }
}

/// A random u64 for member names (unique among concurrent requests).
fn rand_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 8];
    // A failure leaves zeros; the time prefix still tells most members apart.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
