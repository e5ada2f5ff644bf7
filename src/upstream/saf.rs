//! Store-and-forward: a per-issuer FIFO of advices and reversals that one task sends
//! through the links, repeating the head (0121/0221/0401/0421) until acknowledged.
//! In memory for now: it survives link flaps, not restarts (the journal will persist it).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use metrics::{counter, gauge, Counter, Gauge};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::deliver::Deliver;
use super::UpstreamError;
use crate::iso8583::{Message, Mti, OriginalData, ResponseCode};

/// Sensitive authentication data: track 2, track 3, track 1, PIN block.
pub(crate) const SENSITIVE_FIELDS: [u8; 4] = [35, 36, 45, 52];

/// Fields of the original request a reversal carries (never track data, PIN or chip data).
const REVERSAL_FIELDS: [u8; 14] = [2, 3, 4, 7, 11, 12, 13, 14, 22, 32, 37, 41, 42, 49];
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Whether a timed-out or lost `mti` must be reversed: authorization and financial
/// requests (0100, 0200 and their repeats). Advices and reversals are repeated instead.
pub(crate) fn is_reversible(mti: Mti) -> bool {
    matches!(mti.class(), 1 | 2) && mti.function() == 0
}

/// The reversal (x400) of `original` as it was sent to the issuer: the identifying
/// fields copied, and field 90 pointing at the original by its MTI, issuer-side STAN,
/// transmission time and acquirer.
pub(crate) fn reversal_for(original: &Message) -> Message {
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
pub(crate) fn repeat_of(mti: Mti) -> Mti {
    let [version, class, function, origin] = *mti.as_bytes();
    Mti::new([version, class, function, origin | 1]).unwrap_or(mti)
}

/// The handle that queues items; cheap to clone.
#[derive(Clone)]
pub(crate) struct SafQueue {
    intake: mpsc::UnboundedSender<Message>,
    shared: Arc<SafShared>,
}

struct SafShared {
    issuer: Arc<str>,
    depth: AtomicUsize,
    depth_gauge: Gauge,
    reversals_sent: Counter,
    reversals_acknowledged: Counter,
    advices_sent: Counter,
    advices_acknowledged: Counter,
    /// The queue of the issuer that replaced this one in a reload: what is
    /// left here when this one stops goes there.
    successor: ArcSwapOption<SafQueue>,
}

impl SafShared {
    fn depth_changed(&self, now: usize) {
        self.depth_gauge.set(now as f64);
    }

    fn popped(&self) {
        let now = self.depth.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.depth_changed(now);
    }
}

/// Items taken from the queue by the sender task.
pub(crate) struct SafIntake(mpsc::UnboundedReceiver<Message>);

impl SafQueue {
    pub(crate) fn new(issuer: &Arc<str>) -> (SafQueue, SafIntake) {
        let (intake, receiver) = mpsc::unbounded_channel();
        let label = issuer.to_string();
        let shared = Arc::new(SafShared {
            issuer: issuer.clone(),
            depth: AtomicUsize::new(0),
            depth_gauge: gauge!("isoswitch_saf_depth", "issuer" => label.clone()),
            reversals_sent: counter!("isoswitch_reversals_sent_total", "issuer" => label.clone()),
            reversals_acknowledged: counter!(
                "isoswitch_reversals_acknowledged_total",
                "issuer" => label.clone()
            ),
            advices_sent: counter!("isoswitch_advices_sent_total", "issuer" => label.clone()),
            advices_acknowledged: counter!("isoswitch_advices_acknowledged_total", "issuer" => label),
            successor: ArcSwapOption::empty(),
        });
        (SafQueue { intake, shared }, SafIntake(receiver))
    }

    /// Queues `message` behind everything already queued. Never blocks: the queue
    /// is unbounded because nothing in it may be dropped.
    pub(crate) fn push(&self, message: Message) {
        let now = self.shared.depth.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.depth_changed(now);
        if let Err(refused) = self.intake.send(message) {
            self.shared.popped();
            if let Some(successor) = self.shared.successor.load_full() {
                successor.push(refused.0);
                return;
            }
            tracing::error!(
                issuer = %self.shared.issuer,
                mti = %refused.0.mti(),
                pan = %refused.0.masked_pan(),
                "store-and-forward has stopped; message not queued"
            );
        }
    }

    pub(crate) fn depth(&self) -> usize {
        self.shared.depth.load(Ordering::Relaxed)
    }

    /// Once this queue stops, what it has not delivered (and anything pushed
    /// to it later) goes to `successor`, in order: a reload that replaces an
    /// issuer must not drop its reversals and advices.
    pub(crate) fn hand_over_to(&self, successor: &SafQueue) {
        self.shared
            .successor
            .store(Some(Arc::new(successor.clone())));
    }
}

struct Item {
    message: Message,
    /// Times it went out to the issuer.
    attempts: u32,
}

/// Whether the issuer's answer asks for the item again later (91: issuer or
/// switch inoperative) rather than taking it.
fn asks_for_retry(response: &Message) -> bool {
    response.response_code().ok() == Some(ResponseCode::ISSUER_INOPERATIVE)
}

/// Delivers the queue through `issuer` until `shutdown`; each attempt waits up to
/// `timeout` for the issuer's answer. No answer, or a 91, is retried with backoff.
pub(crate) async fn run(
    intake: SafIntake,
    queue: SafQueue,
    issuer: Arc<dyn Deliver>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let SafIntake(mut intake) = intake;
    let shared = &queue.shared;
    let mut items: VecDeque<Item> = VecDeque::new();
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        take_queued(&mut intake, &mut items);
        let Some(head) = items.front_mut() else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                message = intake.recv() => match message {
                    Some(message) => items.push_back(Item { message, attempts: 0 }),
                    None => break,
                },
            }
            continue;
        };
        let mut attempt = head.message.clone();
        // A repeat only once the issuer may have seen it.
        if head.attempts > 0 {
            attempt.set_mti(repeat_of(attempt.mti()));
        }
        let is_reversal = attempt.mti().class() == 4;
        let deadline = Instant::now() + timeout;
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            outcome = issuer.deliver(attempt, deadline) => outcome,
        };
        let sent = matches!(
            outcome,
            Ok(_) | Err(UpstreamError::Timeout { .. } | UpstreamError::ConnectionLost { .. })
        );
        if sent {
            head.attempts += 1;
            if is_reversal {
                shared.reversals_sent.increment(1);
            } else {
                shared.advices_sent.increment(1);
            }
        }
        match outcome {
            Ok(response) if asks_for_retry(&response) => {
                tracing::debug!(
                    issuer = %shared.issuer,
                    mti = %head.message.mti(),
                    attempts = head.attempts,
                    "store-and-forward item answered 91; will repeat"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
            Ok(response) => {
                if is_reversal {
                    shared.reversals_acknowledged.increment(1);
                } else {
                    shared.advices_acknowledged.increment(1);
                }
                tracing::debug!(
                    issuer = %shared.issuer,
                    mti = %head.message.mti(),
                    response_mti = %response.mti(),
                    attempts = head.attempts,
                    "store-and-forward item acknowledged"
                );
                items.pop_front();
                shared.popped();
                backoff.reset();
            }
            Err(error @ (UpstreamError::Encode(_) | UpstreamError::Frame(_))) => {
                // It can never be sent; keeping it would block everything behind it.
                tracing::error!(
                    issuer = %shared.issuer,
                    mti = %head.message.mti(),
                    pan = %head.message.masked_pan(),
                    %error,
                    "store-and-forward item cannot be sent; dropped"
                );
                items.pop_front();
                shared.popped();
            }
            Err(error) => {
                tracing::debug!(
                    issuer = %shared.issuer,
                    mti = %head.message.mti(),
                    attempts = head.attempts,
                    %error,
                    "store-and-forward attempt failed; will repeat"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    // From here a push is refused (and logged), or goes to the successor.
    intake.close();
    take_queued(&mut intake, &mut items);
    if let Some(successor) = shared.successor.load_full() {
        for item in items.drain(..) {
            let mut message = item.message;
            // The issuer may have seen it: it goes on as a repeat.
            if item.attempts > 0 {
                message.set_mti(repeat_of(message.mti()));
            }
            shared.popped();
            successor.push(message);
        }
    }
    let left = queue.depth();
    if left > 0 {
        tracing::warn!(
            issuer = %shared.issuer,
            left,
            "store-and-forward stopped with undelivered items (the queue is in memory)"
        );
        for item in &items {
            tracing::warn!(
                issuer = %shared.issuer,
                mti = %item.message.mti(),
                stan = item.message.get_str(11).unwrap_or("-"),
                pan = %item.message.masked_pan(),
                attempts = item.attempts,
                "store-and-forward item not delivered"
            );
        }
    }
}

/// Moves what has been pushed so far behind `items`, none of it sent yet.
fn take_queued(intake: &mut mpsc::UnboundedReceiver<Message>, items: &mut VecDeque<Item>) {
    while let Ok(message) = intake.try_recv() {
        items.push_back(Item {
            message,
            attempts: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::iso8583::Stan;
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

    /// What the scripted issuer does with one delivery.
    enum Outcome {
        Answer(&'static str),
        NoAnswer,
        Unavailable,
        Unsendable,
    }

    /// An issuer that follows a script, one outcome per delivery (answering 00
    /// once the script runs out), and reports each delivery with its time.
    struct ScriptedIssuer {
        script: Mutex<VecDeque<Outcome>>,
        delivered: mpsc::UnboundedSender<(Instant, Message)>,
    }

    impl Deliver for ScriptedIssuer {
        fn deliver(&self, message: Message, _deadline: Instant) -> Delivery<'_> {
            let outcome = self
                .script
                .lock()
                .ok()
                .and_then(|mut script| script.pop_front())
                .unwrap_or(Outcome::Answer("00"));
            let result = match outcome {
                Outcome::Answer(code) => {
                    let mut response = Message::new(message.mti().response().expect("a request"));
                    response.set(39, code).expect("data field");
                    Ok(response)
                }
                Outcome::NoAnswer => Err(UpstreamError::Timeout {
                    issuer_stan: Stan(1),
                }),
                Outcome::Unavailable => Err(UpstreamError::Unavailable),
                Outcome::Unsendable => {
                    Err(UpstreamError::Frame(crate::frame::FrameError::EmptyPayload))
                }
            };
            // Reported before the answer is taken: on the test's single thread
            // the queue has acted on it by the time the test sees the report.
            let _ = self.delivered.send((Instant::now(), message));
            Box::pin(std::future::ready(result))
        }
    }

    struct Running {
        queue: SafQueue,
        delivered: mpsc::UnboundedReceiver<(Instant, Message)>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn next(&mut self) -> (Instant, Message) {
            tokio::time::timeout(Duration::from_secs(600), self.delivered.recv())
                .await
                .expect("delivered in time")
                .expect("the queue runs")
        }

        async fn stop(self) -> SafQueue {
            self.shutdown.cancel();
            self.task.await.expect("the queue task ends cleanly");
            self.queue
        }
    }

    fn start(script: Vec<Outcome>) -> Running {
        let (queue, intake) = SafQueue::new(&Arc::from("test"));
        let (report, delivered) = mpsc::unbounded_channel();
        let issuer = Arc::new(ScriptedIssuer {
            script: Mutex::new(script.into()),
            delivered: report,
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            intake,
            queue.clone(),
            issuer,
            Duration::from_secs(5),
            shutdown.clone(),
        ));
        Running {
            queue,
            delivered,
            shutdown,
            task,
        }
    }

    fn reversal(stan: &str) -> Message {
        let mut original = original();
        original.set(11, stan).expect("data field");
        reversal_for(&original)
    }

    #[tokio::test(start_paused = true)]
    async fn head_is_repeated_as_0401_until_acknowledged() {
        let mut saf = start(vec![Outcome::NoAnswer, Outcome::NoAnswer]);
        saf.queue.push(reversal("000001"));
        assert_eq!(saf.queue.depth(), 1);
        let mut mtis = Vec::new();
        for _ in 0..3 {
            mtis.push(saf.next().await.1.mti());
        }
        assert_eq!(mtis, ["0400", "0401", "0401"].map(Mti::from_static));
        assert_eq!(saf.queue.depth(), 0, "acknowledged by the third");
        let queue = saf.stop().await;
        assert_eq!(queue.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unsent_attempts_back_off_and_are_not_repeats() {
        let mut saf = start(vec![
            Outcome::Unavailable,
            Outcome::Unavailable,
            Outcome::Unavailable,
        ]);
        let mut advice = original();
        advice.set_mti(Mti::from_static("0220"));
        saf.queue.push(advice);
        let mut times = Vec::new();
        for _ in 0..4 {
            let (at, message) = saf.next().await;
            assert_eq!(
                message.mti(),
                Mti::from_static("0220"),
                "never sent, so no repeat"
            );
            times.push(at);
        }
        // Equal jitter: each wait is between half and all of 500 ms, 1 s, 2 s.
        for (i, base_ms) in [500u64, 1_000, 2_000].into_iter().enumerate() {
            let waited = times[i + 1] - times[i];
            let base = Duration::from_millis(base_ms);
            assert!(
                waited >= base / 2 && waited <= base,
                "wait {i}: {waited:?} for {base:?}"
            );
        }
        assert_eq!(saf.queue.depth(), 0);
        saf.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_of_91_is_retried_and_any_other_answer_is_done() {
        let mut saf = start(vec![Outcome::Answer("91"), Outcome::Answer("05")]);
        saf.queue.push(reversal("000001"));
        let (first_at, first) = saf.next().await;
        assert_eq!(first.mti(), Mti::from_static("0400"));
        assert_eq!(saf.queue.depth(), 1, "91 leaves it queued");
        let (second_at, second) = saf.next().await;
        assert_eq!(second.mti(), Mti::from_static("0401"));
        assert!(second_at - first_at >= RETRY_FIRST / 2, "after a backoff");
        assert_eq!(saf.queue.depth(), 0, "a decline is still an answer");
        saf.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn items_go_out_in_the_order_they_were_queued() {
        let mut saf = start(vec![Outcome::NoAnswer]);
        for stan in ["000001", "000002", "000003"] {
            saf.queue.push(reversal(stan));
        }
        assert_eq!(saf.queue.depth(), 3);
        let mut sent = Vec::new();
        for _ in 0..4 {
            let (_, message) = saf.next().await;
            sent.push(format!(
                "{} {}",
                message.mti(),
                message.get_str(11).unwrap_or("-")
            ));
        }
        assert_eq!(
            sent,
            ["0400 000001", "0401 000001", "0400 000002", "0400 000003"]
        );
        assert_eq!(saf.queue.depth(), 0);
        saf.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_that_cannot_be_sent_is_dropped_and_does_not_block_the_rest() {
        let mut saf = start(vec![Outcome::Unsendable]);
        saf.queue.push(reversal("000001"));
        saf.queue.push(reversal("000002"));
        assert_eq!(saf.next().await.1.get_str(11), Some("000001"));
        let (_, next) = saf.next().await;
        assert_eq!(
            (next.mti(), next.get_str(11)),
            (Mti::from_static("0400"), Some("000002"))
        );
        assert_eq!(saf.queue.depth(), 0);
        saf.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn after_shutdown_nothing_is_queued_and_what_was_left_stays_counted() {
        let mut saf = start(vec![Outcome::NoAnswer]);
        saf.queue.push(reversal("000001"));
        saf.next().await;
        let queue = saf.stop().await;
        assert_eq!(queue.depth(), 1, "the unacknowledged head is left");
        queue.push(reversal("000002"));
        assert_eq!(queue.depth(), 1, "refused once stopped");
    }
}
