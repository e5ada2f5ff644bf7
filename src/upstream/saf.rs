//! Store-and-forward: reversals and advices kept in the journal's queue
//! ([`SafStore`]) until the issuer answers them. One sender per issuer name
//! (so two instances of an issuer after a reload never send the same item),
//! several items outstanding at once. Each item is marked in storage before it
//! goes out, so a crash replays it as a repeat (0401/0421/0121/0221).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use metrics::{counter, gauge, Counter, Gauge};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::deliver::Deliver;
use super::UpstreamError;
use crate::iso8583::{Message, Mti, OriginalData, ResponseCode};
use crate::journal::config::SafConfig;
use crate::journal::{now_ms, JournalError, SafId, SafItem, SafKind, SafStore, TxnId};

/// Fields of the original request a reversal carries (never track data, PIN or chip data).
pub const REVERSAL_FIELDS: [u8; 14] = [2, 3, 4, 7, 11, 12, 13, 14, 22, 32, 37, 41, 42, 49];

/// How often a sender with nothing due looks at the queue again (new items
/// wake it at once; this catches items whose next attempt came due).
const POLL: Duration = Duration::from_millis(200);
/// How often the depth gauge is refreshed from storage.
const DEPTH_EVERY: Duration = Duration::from_secs(1);
/// How often a storage failure is logged while it lasts.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether a timed-out or lost `mti` must be reversed: authorization and financial
/// requests (0100, 0200 and their repeats). Advices and reversals are repeated instead.
pub fn is_reversible(mti: Mti) -> bool {
    matches!(mti.class(), 1 | 2) && mti.function() == 0
}

/// The reversal (x400) of `original` as it was sent to the issuer: the identifying
/// fields copied, and field 90 pointing at the original by its MTI, issuer-side STAN,
/// transmission time and acquirer.
pub fn reversal_for(original: &Message) -> Message {
    let version = original.mti().as_bytes()[0];
    let mti =
        Mti::new([version, b'4', b'0', b'0']).expect("the version digit of a valid MTI is a digit");
    let mut reversal = Message::new(mti);
    for field in REVERSAL_FIELDS {
        if let Some(value) = original.get(field) {
            reversal
                .set(field, value)
                .expect("reversal fields are data fields");
        }
    }
    reversal
        .set(90, OriginalData::from_request(original).to_field())
        .expect("field 90 is a data field");
    reversal
}

/// `mti` marked as a repeat: 0400 → 0401, 0220 → 0221.
pub fn repeat_of(mti: Mti) -> Mti {
    let [version, class, function, origin] = *mti.as_bytes();
    Mti::new([version, class, function, origin | 1]).unwrap_or(mti)
}

/// How the queue is delivered: from `[store_and_forward]`, and the issuer's timeout.
#[derive(Debug, Clone)]
pub struct SafSettings {
    /// Items outstanding at the issuer at once.
    pub in_flight: usize,
    /// Answers that ask for the item again later; any other answer is done.
    pub retry_codes: Vec<ResponseCode>,
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// How long after it was queued an item is tried before it is marked failed.
    pub expiry: Duration,
}

impl Default for SafSettings {
    fn default() -> Self {
        SafSettings::from(&SafConfig::default())
    }
}

impl From<&SafConfig> for SafSettings {
    fn from(config: &SafConfig) -> Self {
        SafSettings {
            in_flight: config.in_flight.max(1),
            retry_codes: config.retry_codes.clone(),
            retry_first: Duration::from_millis(config.retry_first_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            expiry: Duration::from_secs(config.expiry_s),
        }
    }
}

impl SafSettings {
    /// The wait before attempt `attempts + 1` of one item: doubling from
    /// `retry_first`, capped at `retry_max`.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .retry_first
            .saturating_mul(1u32 << attempts.min(16))
            .min(self.retry_max);
        doubled.max(self.retry_first.min(self.retry_max))
    }
}

/// Where a sender finds the issuer of its name today: a reload may replace
/// it, or remove it (then the items wait).
pub trait IssuerDirectory: Send + Sync + 'static {
    /// The issuer's way out and its timeout per attempt.
    fn find(&self, issuer: &str) -> Option<(Arc<dyn Deliver>, Duration)>;
}

/// The metric handles of one issuer's queue, resolved once.
struct SafMetrics {
    depth: Gauge,
    reversals_sent: Counter,
    reversals_acknowledged: Counter,
    advices_sent: Counter,
    advices_acknowledged: Counter,
    reversals_failed: Counter,
    advices_failed: Counter,
}

impl SafMetrics {
    fn new(issuer: &str) -> SafMetrics {
        let label = || issuer.to_string();
        SafMetrics {
            depth: gauge!("isoswitch_saf_depth", "issuer" => label()),
            reversals_sent: counter!("isoswitch_reversals_sent_total", "issuer" => label()),
            reversals_acknowledged: counter!(
                "isoswitch_reversals_acknowledged_total",
                "issuer" => label()
            ),
            advices_sent: counter!("isoswitch_advices_sent_total", "issuer" => label()),
            advices_acknowledged: counter!(
                "isoswitch_advices_acknowledged_total",
                "issuer" => label()
            ),
            reversals_failed: counter!(
                "isoswitch_saf_failed_total", "issuer" => label(), "kind" => "reversal"
            ),
            advices_failed: counter!(
                "isoswitch_saf_failed_total", "issuer" => label(), "kind" => "advice"
            ),
        }
    }

    fn sent(&self, kind: SafKind) {
        match kind {
            SafKind::Reversal => self.reversals_sent.increment(1),
            SafKind::Advice => self.advices_sent.increment(1),
        }
    }

    fn acknowledged(&self, kind: SafKind) {
        match kind {
            SafKind::Reversal => self.reversals_acknowledged.increment(1),
            SafKind::Advice => self.advices_acknowledged.increment(1),
        }
    }

    fn failed(&self, kind: SafKind) {
        match kind {
            SafKind::Reversal => self.reversals_failed.increment(1),
            SafKind::Advice => self.advices_failed.increment(1),
        }
    }
}

/// The handle of one issuer name's sender: wakes it when something is
/// queued, and tells how deep its queue was when last counted.
#[derive(Clone)]
pub struct SafSender {
    shared: Arc<Shared>,
}

struct Shared {
    issuer: Arc<str>,
    wake: Notify,
    depth: AtomicU64,
    done: CancellationToken,
}

impl SafSender {
    /// Starts the sender of `issuer`'s queue; it runs until `shutdown`.
    pub fn spawn(
        issuer: &str,
        store: Arc<dyn SafStore>,
        directory: Arc<dyn IssuerDirectory>,
        settings: Arc<SafSettings>,
        shutdown: CancellationToken,
    ) -> SafSender {
        let shared = Arc::new(Shared {
            issuer: Arc::from(issuer),
            wake: Notify::new(),
            depth: AtomicU64::new(0),
            done: CancellationToken::new(),
        });
        let run = Run {
            shared: shared.clone(),
            clock: Arc::new(Clock::new()),
            store,
            directory,
            settings,
            metrics: SafMetrics::new(issuer),
            shutdown,
            in_flight_items: HashSet::new(),
            open_txns: HashMap::new(),
            last_error_log: None,
        };
        tokio::spawn(run.run());
        SafSender { shared }
    }

    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// Something was queued: look now rather than at the next poll.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Pending items when last counted (at most [`DEPTH_EVERY`] ago while it runs).
    pub fn depth(&self) -> u64 {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Waits until the sender has stopped (after the `shutdown` it was
    /// started with).
    pub async fn stopped(&self) {
        self.shared.done.cancelled().await;
    }
}

/// What one delivery came to.
struct Delivered {
    id: SafId,
    txn: Option<TxnId>,
    kind: SafKind,
    mti: Mti,
    attempts: u32,
    outcome: Result<Message, UpstreamError>,
}

type Pending<'a> = Pin<Box<dyn Future<Output = Delivered> + Send + 'a>>;
type Closing<'a> = Pin<Box<dyn Future<Output = (SafId, Option<TxnId>)> + Send + 'a>>;

/// Unix milliseconds as the runtime's clock sees them: the wall clock at
/// start plus the runtime's elapsed time, so tests on paused time see
/// items come due as time advances.
struct Clock {
    unix_at_start: i64,
    started: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            unix_at_start: now_ms(),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.unix_at_start.saturating_add(elapsed)
    }
}

struct Run {
    shared: Arc<Shared>,
    clock: Arc<Clock>,
    store: Arc<dyn SafStore>,
    directory: Arc<dyn IssuerDirectory>,
    settings: Arc<SafSettings>,
    metrics: SafMetrics,
    shutdown: CancellationToken,
    /// Items sent and not yet closed: never fetched twice.
    in_flight_items: HashSet<SafId>,
    /// Transactions with an item sent and not yet closed, and that item: a
    /// transaction's advice waits until its reversal is answered or failed.
    open_txns: HashMap<TxnId, SafId>,
    last_error_log: Option<Instant>,
}

impl Run {
    async fn run(mut self) {
        let store = self.store.clone();
        let mut pending: FuturesUnordered<Pending<'_>> = FuturesUnordered::new();
        let mut closing: FuturesUnordered<Closing<'_>> = FuturesUnordered::new();
        let mut next_poll = Instant::now();
        let mut next_depth = Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if now >= next_depth {
                next_depth = now + DEPTH_EVERY;
                self.count_depth().await;
            }
            let room = self.settings.in_flight.saturating_sub(pending.len());
            if room > 0 && now >= next_poll {
                next_poll = match self.take_due(room).await {
                    Some((started, full)) => {
                        for item in started {
                            pending.push(item);
                        }
                        if full {
                            now
                        } else {
                            now + POLL
                        }
                    }
                    None => now + POLL,
                };
            }
            let can_take = pending.len() < self.settings.in_flight;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                Some(delivered) = pending.next(), if !pending.is_empty() => {
                    if let Some(close) = self.on_delivered(&store, delivered) {
                        closing.push(close);
                    }
                    next_poll = next_poll.min(Instant::now());
                }
                Some((id, txn)) = closing.next(), if !closing.is_empty() => {
                    self.release(id, txn);
                }
                () = self.shared.wake.notified() => next_poll = Instant::now(),
                () = tokio::time::sleep_until(next_poll.min(next_depth)), if can_take => {}
            }
        }
        // Whatever was out stays pending in storage: the next start sends it
        // again, as a repeat.
        drop(pending);
        while let Some((id, txn)) = closing.next().await {
            self.release(id, txn);
        }
        self.count_depth().await;
        let left = self.shared.depth.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                issuer = %self.shared.issuer,
                left,
                "store-and-forward stopped with items pending; they are kept and sent after the next start"
            );
        }
        self.shared.done.cancel();
    }

    async fn count_depth(&mut self) {
        match self.store.depth(&self.shared.issuer).await {
            Ok(depth) => {
                self.shared.depth.store(depth, Ordering::Relaxed);
                self.metrics.depth.set(depth as f64);
            }
            Err(e) => self.storage_failed("count the queue", &e),
        }
    }

    /// Takes up to `room` due items, marks each attempt in storage (all in
    /// one group commit) and starts sending them. None when nothing could be
    /// taken; else the deliveries and whether the fetch came back full.
    async fn take_due(&mut self, room: usize) -> Option<(Vec<Pending<'static>>, bool)> {
        let (deliver, timeout) = self.directory.find(&self.shared.issuer)?;
        if !deliver.ready() {
            // No live link: nothing could go out, and an attempt counted now
            // would make the first send a repeat.
            return None;
        }
        // Fetch a little more than there is room for: items in flight, or
        // waiting behind their transaction's reversal, are skipped.
        let limit = room + self.in_flight_items.len().min(room);
        let items = match self
            .store
            .due(&self.shared.issuer, self.clock.now_ms(), limit)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                self.storage_failed("read due items", &e);
                return None;
            }
        };
        let full = items.len() >= limit;
        let now = self.clock.now_ms();
        let mut chosen = Vec::new();
        let mut txns_here = HashSet::new();
        for item in items {
            if chosen.len() >= room || self.in_flight_items.contains(&item.id) {
                continue;
            }
            if let Some(txn) = item.txn_id {
                let behind = self
                    .open_txns
                    .get(&txn)
                    .is_some_and(|&open| open != item.id);
                if behind || !txns_here.insert(txn) {
                    continue;
                }
            }
            if item.is_expired(now) {
                self.expire(&item).await;
                continue;
            }
            chosen.push(item);
        }
        if chosen.is_empty() {
            return Some((Vec::new(), full));
        }
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let marks = chosen.iter().map(|item| {
            let backoff = self.settings.backoff(item.attempts);
            let backoff_ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
            let next = now.saturating_add(timeout_ms).saturating_add(backoff_ms);
            self.store.mark_attempt(item.id, now, next)
        });
        let marked = futures_util::future::join_all(marks).await;
        let mut started: Vec<Pending<'static>> = Vec::with_capacity(chosen.len());
        for (item, mark) in chosen.into_iter().zip(marked) {
            if let Err(e) = mark {
                // Not marked, not sent: a crash now must not lose the count.
                self.storage_failed("mark an attempt", &e);
                continue;
            }
            self.in_flight_items.insert(item.id);
            if let Some(txn) = item.txn_id {
                self.open_txns.insert(txn, item.id);
            }
            self.metrics.sent(item.kind);
            started.push(send(item, deliver.clone(), timeout));
        }
        Some((started, full))
    }

    async fn expire(&mut self, item: &SafItem) {
        if let Err(e) = self.store.fail(item.id, self.clock.now_ms()).await {
            self.storage_failed("mark an expired item failed", &e);
            return;
        }
        self.metrics.failed(item.kind);
        tracing::error!(
            issuer = %self.shared.issuer,
            kind = %item.kind,
            mti = %item.mti,
            stan = item.fields.get(11).map(String::from_utf8_lossy).as_deref().unwrap_or("-"),
            attempts = item.attempts,
            "store-and-forward item expired unanswered; marked failed"
        );
    }

    /// Acts on one delivery; a close (acknowledge or fail) to wait for, if any.
    fn on_delivered(
        &mut self,
        store: &Arc<dyn SafStore>,
        delivered: Delivered,
    ) -> Option<Closing<'static>> {
        let Delivered {
            id,
            txn,
            kind,
            mti,
            attempts,
            outcome,
        } = delivered;
        let close = |acknowledge: bool| -> Closing<'static> {
            let store = store.clone();
            let issuer = self.shared.issuer.clone();
            let clock = self.clock.clone();
            Box::pin(async move {
                let at = clock.now_ms();
                let result = if acknowledge {
                    store.acknowledge(id, at).await
                } else {
                    store.fail(id, at).await
                };
                if let Err(e) = result {
                    // Still pending in storage: it goes again, and the issuer
                    // answers a repeat of what it already has.
                    tracing::error!(%issuer, error = %e, "store-and-forward item not closed");
                }
                (id, txn)
            })
        };
        match outcome {
            Ok(response) if self.asks_for_retry(&response) => {
                tracing::debug!(
                    issuer = %self.shared.issuer, %mti, attempts,
                    response_code = response.get_str(39).unwrap_or("-"),
                    "store-and-forward item answered with a retry code; will repeat"
                );
                self.in_flight_items.remove(&id);
                None
            }
            Ok(response) => {
                self.metrics.acknowledged(kind);
                tracing::debug!(
                    issuer = %self.shared.issuer, %mti, attempts,
                    response_mti = %response.mti(),
                    "store-and-forward item acknowledged"
                );
                Some(close(true))
            }
            Err(error @ (UpstreamError::Encode(_) | UpstreamError::Frame(_))) => {
                // It can never be sent; keeping it would only repeat the error.
                self.metrics.failed(kind);
                tracing::error!(
                    issuer = %self.shared.issuer, %mti, %error,
                    "store-and-forward item cannot be sent; marked failed"
                );
                Some(close(false))
            }
            Err(error) => {
                tracing::debug!(
                    issuer = %self.shared.issuer, %mti, attempts, %error,
                    "store-and-forward attempt failed; will repeat"
                );
                self.in_flight_items.remove(&id);
                None
            }
        }
    }

    /// An item closed (acknowledged or failed): what waited behind it may go.
    fn release(&mut self, id: SafId, txn: Option<TxnId>) {
        self.in_flight_items.remove(&id);
        if let Some(txn) = txn {
            if self.open_txns.get(&txn) == Some(&id) {
                self.open_txns.remove(&txn);
            }
        }
    }

    fn asks_for_retry(&self, response: &Message) -> bool {
        response
            .response_code()
            .is_ok_and(|code| self.settings.retry_codes.contains(&code))
    }

    fn storage_failed(&mut self, what: &str, error: &JournalError) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_some_and(|at| now.duration_since(at) < ERROR_LOG_EVERY)
        {
            return;
        }
        self.last_error_log = Some(now);
        tracing::error!(
            issuer = %self.shared.issuer,
            %error,
            "store-and-forward cannot {what}; retrying"
        );
    }
}

/// Sends one item: as stored the first time, as a repeat after.
fn send(item: SafItem, deliver: Arc<dyn Deliver>, timeout: Duration) -> Pending<'static> {
    let mti = if item.attempts > 0 {
        repeat_of(item.mti)
    } else {
        item.mti
    };
    let message = item.fields.to_message(mti);
    Box::pin(async move {
        let outcome = deliver.deliver(message, Instant::now() + timeout).await;
        Delivered {
            id: item.id,
            txn: item.txn_id,
            kind: item.kind,
            mti,
            attempts: item.attempts + 1,
            outcome,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;
    use crate::iso8583::Stan;
    use crate::journal::{MemoryJournal, ReversalFields, SafNew};
    use crate::upstream::deliver::Delivery;

    fn original() -> Message {
        let mut m = Message::new(Mti::from_static("0200"));
        for (field, value) in [
            (2, "4111111111111111"),
            (3, "000000"),
            (4, "000000001000"),
            (7, "0615120000"),
            (11, "000042"),
            (22, "051"),
            (32, "12345"),
            (35, "4111111111111111=2812"),
            (37, "123456789012"),
            (41, "TERM0001"),
            (42, "MERCHANT0000001"),
            (49, "840"),
            (52, "\x01\x02\x03\x04\x05\x06\x07\x08"),
        ] {
            m.set(field, value).expect("data field");
        }
        m
    }

    #[test]
    fn reversal_points_field_90_at_the_original_as_sent() {
        let reversal = reversal_for(&original());
        assert_eq!(reversal.mti(), Mti::from_static("0400"));
        assert_eq!(
            reversal.get_str(90),
            Some("020000004206151200000000001234500000000000")
        );
        let data = reversal.original_data().expect("field 90 parses");
        assert_eq!(data.mti, Mti::from_static("0200"));
        assert_eq!(data.stan.0, 42);
        assert_eq!(data.acquirer_id, "00000012345");
    }

    #[test]
    fn reversal_copies_identifying_fields_but_no_track_or_pin_data() {
        let reversal = reversal_for(&original());
        for field in [2, 3, 4, 7, 11, 22, 32, 37, 41, 42, 49] {
            assert_eq!(reversal.get(field), original().get(field), "field {field}");
        }
        assert!(!reversal.has(35));
        assert!(!reversal.has(52));
    }

    #[test]
    fn missing_original_fields_become_zeros_in_field_90() {
        let mut bare = Message::new(Mti::from_static("0100"));
        bare.set(11, "000007").expect("data field");
        let reversal = reversal_for(&bare);
        let field = reversal.get_str(90).expect("field 90");
        assert_eq!(field.len(), 42);
        assert_eq!(field, format!("0100000007{}", "0".repeat(32)));
    }

    #[test]
    fn repeats_set_the_origin_digit() {
        let m = Mti::from_static;
        assert_eq!(repeat_of(m("0400")), m("0401"));
        assert_eq!(repeat_of(m("0420")), m("0421"));
        assert_eq!(repeat_of(m("0220")), m("0221"));
        assert_eq!(repeat_of(m("0401")), m("0401"));
    }

    #[test]
    fn only_authorization_and_financial_requests_are_reversed() {
        let m = Mti::from_static;
        assert!(is_reversible(m("0100")));
        assert!(is_reversible(m("0201")));
        assert!(!is_reversible(m("0120")));
        assert!(!is_reversible(m("0400")));
        assert!(!is_reversible(m("0800")));
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let settings = SafSettings {
            retry_first: Duration::from_millis(500),
            retry_max: Duration::from_secs(3),
            ..SafSettings::default()
        };
        let waits: Vec<u64> = (0..6)
            .map(|n| settings.backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000, 3000]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(3));
    }

    /// What the scripted issuer does with one delivery.
    #[derive(Clone, Copy)]
    enum Script {
        Answer(&'static str),
        NoAnswer,
        Unsendable,
    }

    /// An issuer that follows a script, one outcome per delivery (answering 00
    /// once the script runs out), answering after `delay`, and reports each
    /// delivery.
    struct ScriptedIssuer {
        script: Mutex<VecDeque<Script>>,
        delay: Duration,
        delivered: mpsc::UnboundedSender<Message>,
    }

    impl Deliver for ScriptedIssuer {
        fn deliver(&self, message: Message, deadline: Instant) -> Delivery<'_> {
            let script = self
                .script
                .lock()
                .ok()
                .and_then(|mut script| script.pop_front())
                .unwrap_or(Script::Answer("00"));
            let _ = self.delivered.send(message.clone());
            let delay = self.delay;
            Box::pin(async move {
                match script {
                    Script::Answer(code) => {
                        tokio::time::sleep(delay).await;
                        let mut response =
                            Message::new(message.mti().response().expect("a request"));
                        response.set(39, code).expect("data field");
                        Ok(response)
                    }
                    Script::NoAnswer => {
                        tokio::time::sleep_until(deadline).await;
                        Err(UpstreamError::Timeout {
                            issuer_stan: Stan(1),
                        })
                    }
                    Script::Unsendable => {
                        Err(UpstreamError::Frame(crate::frame::FrameError::EmptyPayload))
                    }
                }
            })
        }
    }

    struct Directory(Arc<ScriptedIssuer>);

    impl IssuerDirectory for Directory {
        fn find(&self, _issuer: &str) -> Option<(Arc<dyn Deliver>, Duration)> {
            Some((self.0.clone(), Duration::from_secs(2)))
        }
    }

    struct Running {
        store: Arc<MemoryJournal>,
        sender: SafSender,
        delivered: mpsc::UnboundedReceiver<Message>,
        shutdown: CancellationToken,
    }

    impl Running {
        async fn next(&mut self) -> Message {
            tokio::time::timeout(Duration::from_secs(600), self.delivered.recv())
                .await
                .expect("delivered in time")
                .expect("the sender runs")
        }

        async fn queue(&self, kind: SafKind, stan: &str, txn: Option<i64>) -> SafId {
            let mut message = reversal_for(&original());
            message.set(11, stan).expect("data field");
            let mti = match kind {
                SafKind::Reversal => Mti::from_static("0400"),
                SafKind::Advice => Mti::from_static("0220"),
            };
            let id = self
                .store
                .enqueue(SafNew {
                    issuer: "bank".into(),
                    kind,
                    mti,
                    txn_id: txn.map(TxnId),
                    fields: ReversalFields::from_message(&message),
                    created_at_ms: now_ms(),
                    expires_at_ms: now_ms() + 3_600_000,
                })
                .await
                .expect("queued");
            self.sender.wake();
            id
        }

        async fn depth(&self) -> u64 {
            self.store.depth("bank").await.expect("depth")
        }

        async fn settle(&self) {
            // Lets every task run what is ready, on the paused clock.
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }
    }

    fn start(script: Vec<Script>, delay: Duration, in_flight: usize) -> Running {
        let (report, delivered) = mpsc::unbounded_channel();
        let issuer = Arc::new(ScriptedIssuer {
            script: Mutex::new(script.into()),
            delay,
            delivered: report,
        });
        let store = Arc::new(MemoryJournal::new());
        let shutdown = CancellationToken::new();
        let settings = SafSettings {
            in_flight,
            ..SafSettings::default()
        };
        let sender = SafSender::spawn(
            "bank",
            store.clone(),
            Arc::new(Directory(issuer)),
            Arc::new(settings),
            shutdown.clone(),
        );
        Running {
            store,
            sender,
            delivered,
            shutdown,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_is_repeated_as_0401_until_the_issuer_answers() {
        let mut saf = start(vec![Script::NoAnswer, Script::NoAnswer], Duration::ZERO, 8);
        saf.queue(SafKind::Reversal, "000001", Some(1)).await;
        let sent: Vec<Mti> = [saf.next().await, saf.next().await, saf.next().await]
            .iter()
            .map(Message::mti)
            .collect();
        let m = Mti::from_static;
        assert_eq!(sent, [m("0400"), m("0401"), m("0401")]);
        saf.settle().await;
        assert_eq!(saf.depth().await, 0);
        let item = saf.store.saf_link(SafId(1)).expect("kept, closed");
        assert_eq!(item.attempts, 3, "every attempt counted in storage");
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_code_is_repeated_and_any_other_answer_is_done() {
        let mut saf = start(
            vec![Script::Answer("91"), Script::Answer("05")],
            Duration::ZERO,
            8,
        );
        saf.queue(SafKind::Reversal, "000001", None).await;
        let first = saf.next().await;
        saf.settle().await;
        assert_eq!(saf.depth().await, 1, "91 leaves it queued");
        let second = saf.next().await;
        assert_eq!(
            (first.mti(), second.mti()),
            (Mti::from_static("0400"), Mti::from_static("0401"))
        );
        saf.settle().await;
        assert_eq!(saf.depth().await, 0, "a decline is still an answer");
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_cannot_be_sent_is_failed_and_does_not_block_the_rest() {
        let mut saf = start(vec![Script::Unsendable], Duration::ZERO, 1);
        let bad = saf.queue(SafKind::Reversal, "000001", None).await;
        saf.queue(SafKind::Reversal, "000002", None).await;
        assert_eq!(saf.next().await.get_str(11), Some("000001"));
        assert_eq!(saf.next().await.get_str(11), Some("000002"));
        saf.settle().await;
        assert_eq!(saf.depth().await, 0);
        let failed = saf.store.saf_link(bad).expect("kept");
        assert_eq!(failed.state, crate::journal::SafState::Failed);
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_item_is_failed_without_being_sent() {
        let mut saf = start(vec![], Duration::ZERO, 8);
        let id = saf
            .store
            .enqueue(SafNew {
                issuer: "bank".into(),
                kind: SafKind::Reversal,
                mti: Mti::from_static("0400"),
                txn_id: None,
                fields: ReversalFields::from_message(&reversal_for(&original())),
                created_at_ms: 0,
                expires_at_ms: 1,
            })
            .await
            .expect("queued");
        saf.sender.wake();
        saf.queue(SafKind::Reversal, "000002", None).await;
        assert_eq!(saf.next().await.get_str(11), Some("000002"));
        saf.settle().await;
        let expired = saf.store.saf_link(id).expect("kept");
        assert_eq!(
            (expired.state, expired.attempts),
            (crate::journal::SafState::Failed, 0)
        );
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn many_items_are_outstanding_at_once() {
        // 200 ms per acknowledgement, 100 at a time: 300 items take about
        // 600 ms of (paused) time, not 60 s.
        let mut saf = start(vec![], Duration::from_millis(200), 100);
        for n in 0..300 {
            saf.queue(SafKind::Reversal, &format!("{n:06}"), Some(n))
                .await;
        }
        let started = Instant::now();
        for _ in 0..300 {
            saf.next().await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        saf.settle().await;
        assert_eq!(saf.depth().await, 0);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_advice_waits_until_the_reversal_of_its_transaction_is_answered() {
        let mut saf = start(vec![Script::NoAnswer], Duration::ZERO, 8);
        saf.queue(SafKind::Reversal, "000001", Some(7)).await;
        saf.queue(SafKind::Advice, "000001", Some(7)).await;
        let order: Vec<Mti> = [saf.next().await, saf.next().await, saf.next().await]
            .iter()
            .map(Message::mti)
            .collect();
        let m = Mti::from_static;
        assert_eq!(order, [m("0400"), m("0401"), m("0220")]);
        saf.shutdown.cancel();
        saf.sender.stopped().await;
    }
}
