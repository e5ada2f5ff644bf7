//! Per-issuer metric handles and the counters `Issuer::status` reports, resolved
//! once when the issuer starts so the hot path only bumps them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// Per-issuer metric handles and the counts `status()` reports. Metric handles are
/// resolved when the issuer starts, so the recorder must be installed before.
pub(crate) struct Telemetry {
    pub issuer: Arc<str>,
    pub requests: Counter,
    pub latency: Histogram,
    pub timeouts: Counter,
    pub reconnects: Counter,
    pub echo_failures: Counter,
    late: Counter,
    unmatched: Counter,
    outstanding_gauge: Gauge,
    outstanding: AtomicUsize,
    late_count: AtomicU64,
    unmatched_count: AtomicU64,
}

impl Telemetry {
    pub(crate) fn new(issuer: &str) -> Telemetry {
        let label = || issuer.to_string();
        Telemetry {
            issuer: Arc::from(issuer),
            requests: counter!("isoswitch_issuer_requests_total", "issuer" => label()),
            latency: histogram!("isoswitch_issuer_latency_seconds", "issuer" => label()),
            timeouts: counter!("isoswitch_issuer_timeouts_total", "issuer" => label()),
            reconnects: counter!("isoswitch_issuer_reconnects_total", "issuer" => label()),
            echo_failures: counter!("isoswitch_issuer_echo_failures_total", "issuer" => label()),
            late: counter!("isoswitch_issuer_late_responses_total", "issuer" => label()),
            unmatched: counter!("isoswitch_issuer_unmatched_responses_total", "issuer" => label()),
            outstanding_gauge: gauge!("isoswitch_issuer_outstanding", "issuer" => label()),
            outstanding: AtomicUsize::new(0),
            late_count: AtomicU64::new(0),
            unmatched_count: AtomicU64::new(0),
        }
    }

    pub(super) fn outstanding_changed(&self, delta: isize) {
        let now = if delta >= 0 {
            self.outstanding
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed)
                + delta.unsigned_abs()
        } else {
            self.outstanding
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed)
                .saturating_sub(delta.unsigned_abs())
        };
        self.outstanding_gauge.set(now as f64);
    }

    pub(super) fn late_response(&self) {
        self.late.increment(1);
        self.late_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn unmatched_response(&self) {
        self.unmatched.increment(1);
        self.unmatched_count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub(crate) fn late_responses(&self) -> u64 {
        self.late_count.load(Ordering::Relaxed)
    }

    pub(crate) fn unmatched_responses(&self) -> u64 {
        self.unmatched_count.load(Ordering::Relaxed)
    }
}
