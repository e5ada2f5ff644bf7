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
use super::issuer::Links;
use super::masked_pan;
use super::UpstreamError;
use crate::iso8583::{Message, Mti};

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
        .set(90, original_data_elements(original))
        .expect("field 90 is a data field");
    reversal
}

/// Field 90: original MTI (4), STAN (6), transmission time (10), acquiring
/// institution (11, right-justified) and forwarding institution (11, zeros).
fn original_data_elements(original: &Message) -> String {
    let mut field = String::with_capacity(42);
    field.push_str(original.mti().as_str());
    push_digits(&mut field, original.get(11), 6);
    push_digits(&mut field, original.get(7), 10);
    push_digits(&mut field, original.get(32), 11);
    push_digits(&mut field, None, 11);
    field
}

/// `value` right-justified and zero-padded to `width`; zeros if absent or not digits.
fn push_digits(out: &mut String, value: Option<&[u8]>, width: usize) {
    let digits = value
        .filter(|v| v.iter().all(u8::is_ascii_digit))
        .map(|v| &v[v.len().saturating_sub(width)..])
        .unwrap_or_default();
    out.extend(std::iter::repeat('0').take(width - digits.len()));
    out.extend(digits.iter().map(|&b| char::from(b)));
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
                pan = %masked_pan(&refused.0),
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

/// Delivers the queue through `links` until `shutdown`; each attempt waits up to
/// `timeout` for the issuer's answer, failures are retried with backoff.
pub(crate) async fn run(
    intake: SafIntake,
    queue: SafQueue,
    links: Arc<Links>,
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
            outcome = links.send(attempt, deadline, false) => outcome,
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
            Ok((response, _)) => {
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
                    pan = %masked_pan(&head.message),
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
    if let Some(successor) = shared.successor.load_full() {
        intake.close();
        take_queued(&mut intake, &mut items);
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
    use super::*;

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
}
