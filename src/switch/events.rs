//! Notable events of the hot path, one struct each: `emit()` writes the log line
//! and bumps the metrics together, with labels from fixed sets, so logs and
//! metrics never drift apart. Metric handles are cached per listener, so a
//! transaction allocates no label strings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use metrics::{Counter, Histogram};

use super::Inbound;
use crate::channel::Channel;
use crate::iso8583::{Message, ResponseCode};

/// Route label for transactions that were answered before routing.
const NO_ROUTE: &str = "none";

#[derive(Clone, PartialEq, Eq, Hash)]
struct OutcomeKey {
    mti: &'static str,
    route: Option<Arc<str>>,
    code: [u8; 2],
}

/// The metric handles of one listener.
pub struct ListenerMetrics {
    listener: Arc<str>,
    channel: Channel,
    duration: Histogram,
    unsolicited: Counter,
    outcomes: DashMap<OutcomeKey, Counter>,
}

impl fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListenerMetrics({})", self.listener)
    }
}

impl ListenerMetrics {
    pub fn new(listener: &str, channel: Channel) -> ListenerMetrics {
        let label = listener.to_string();
        ListenerMetrics {
            listener: Arc::from(listener),
            channel,
            duration: metrics::histogram!(
                "isoswitch_transaction_duration_seconds",
                "listener" => label.clone()
            ),
            unsolicited: metrics::counter!("isoswitch_unsolicited_responses_total", "listener" => label),
            outcomes: DashMap::new(),
        }
    }

    fn outcome(&self, key: OutcomeKey) -> Counter {
        if let Some(counter) = self.outcomes.get(&key) {
            return counter.clone();
        }
        let code = String::from_utf8_lossy(&key.code).into_owned();
        let counter = metrics::counter!(
            "isoswitch_transactions_total",
            "listener" => self.listener.to_string(),
            "channel" => self.channel.as_str(),
            "mti" => key.mti,
            "route" => key.route.as_deref().unwrap_or(NO_ROUTE).to_string(),
            "response_code" => code,
        );
        self.outcomes.entry(key).or_insert(counter).clone()
    }
}

/// A response the switch was sent unasked: counted and dropped.
pub struct UnsolicitedResponse<'a> {
    pub inbound: &'a Inbound,
    pub request: &'a Message,
}

impl UnsolicitedResponse<'_> {
    pub fn emit(&self) {
        self.inbound.metrics.unsolicited.increment(1);
        tracing::debug!(listener = %self.inbound.listener, mti = %self.request.mti(), "unsolicited response dropped");
    }
}

/// One message answered: the outcome line and its counters.
pub struct TransactionDone<'a> {
    pub inbound: &'a Inbound,
    pub request: &'a Message,
    pub response: &'a Message,
    /// From a fixed set (see `handler::mti_label`).
    pub mti: &'static str,
    pub route: Option<&'a Arc<str>>,
    pub elapsed: Duration,
}

impl TransactionDone<'_> {
    pub fn emit(&self) {
        let code = match self.response.get(39) {
            Some(&[a, b]) if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => [a, b],
            _ => *b"--",
        };
        let metrics = &self.inbound.metrics;
        metrics
            .outcome(OutcomeKey {
                mti: self.mti,
                route: self.route.cloned(),
                code,
            })
            .increment(1);
        metrics.duration.record(self.elapsed.as_secs_f64());
        // Every transaction is in the journal and counted; the log gets a
        // line for each one that was not approved. Approvals are DEBUG
        // (`RUST_LOG=info,isoswitch::switch::events=debug` shows them): at
        // INFO they were most of the log's volume and its cost at full load.
        let approved = ResponseCode::new(code).is_some_and(|c| c.is_approval());
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    listener = %self.inbound.listener,
                    mti = %self.request.mti(),
                    route = self.route.map_or(NO_ROUTE, |r| r.as_ref()),
                    rrn = self.response.get_str(37).unwrap_or(""),
                    pan = %self.request.masked_pan(),
                    response_code = %String::from_utf8_lossy(&code),
                    micros = self.elapsed.as_micros() as u64,
                    "transaction"
                )
            };
        }
        if approved {
            line!(debug);
        } else {
            line!(info);
        }
    }
}
