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

    /// Moves the count and the gauge by `delta`. The gauge moves by deltas,
    /// not to this instance's count: after a reload the old and the new
    /// instance of an issuer share its series, which then shows their sum
    /// while both have requests out, never one instance's stale value.
    pub(super) fn outstanding_changed(&self, delta: isize) {
        let magnitude = delta.unsigned_abs();
        if delta >= 0 {
            self.outstanding.fetch_add(magnitude, Ordering::Relaxed);
            self.outstanding_gauge.increment(magnitude as f64);
        } else {
            self.outstanding.fetch_sub(magnitude, Ordering::Relaxed);
            self.outstanding_gauge.decrement(magnitude as f64);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn two_instances_of_an_issuer_show_their_sum_never_a_stale_value() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let retiring = Telemetry::new("bank");
            let successor = Telemetry::new("bank");
            retiring.outstanding_changed(3);
            successor.outstanding_changed(2);
            // The retiring instance drains last: its writes must not hide
            // what the successor holds.
            retiring.outstanding_changed(-3);
            assert_eq!(retiring.outstanding(), 0);
            assert_eq!(successor.outstanding(), 2);
        });
        let rendered = handle.render();
        let line = rendered
            .lines()
            .find(|l| l.starts_with("isoswitch_issuer_outstanding{"))
            .expect("the gauge is exported");
        assert_eq!(line, "isoswitch_issuer_outstanding{issuer=\"bank\"} 2");
    }
}
