//! What a run measured: per-connection tallies (counters and HDR latency
//! histograms), the once-a-second progress line, and the final summary as text and
//! JSON. Latencies are microseconds with 3 significant digits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use isoswitch::iso8583::ResponseCode;
use serde::Serialize;

/// Longest latency a histogram holds exactly (one hour, in µs); longer ones are
/// recorded as this value rather than dropped.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig 3")
}

/// Microseconds from `from` to `to`, at least 1 (the histogram's lowest value).
pub fn micros_between(from: Instant, to: Instant) -> u64 {
    let us = to.saturating_duration_since(from).as_micros();
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// Everything one connection counted. The driver merges them for the report.
#[derive(Debug, Clone)]
pub struct Tally {
    pub sent: u64,
    pub responses: u64,
    /// Responses to requests whose intended send time fell after the warmup.
    pub measured: u64,
    pub codes: BTreeMap<ResponseCode, u64>,
    /// Responses without a readable field 39 (also counted as mismatches).
    pub no_code: u64,
    pub mismatches: u64,
    pub timeouts: u64,
    /// Responses that arrived after their request had timed out (not an error:
    /// the timeout was counted).
    pub late: u64,
    pub unknown_stan: u64,
    /// Answers matched by STAN whose echoed terminal id (41), card (2) or
    /// amount (4) is not the request's: another transaction's answer.
    pub foreign: u64,
    pub decode_errors: u64,
    pub connection_errors: u64,
    /// Connection errors by what went wrong ("connecting: Connection refused
    /// (os error 111)", "TLS handshake: ...").
    pub connection_error_reasons: BTreeMap<String, u64>,
    /// Connections opened (and handshaken, with TLS); in connect-per-request,
    /// one per transaction that got as far as sending.
    pub connections_opened: u64,
    /// Requests outstanding when their connection failed.
    pub lost: u64,
    /// Open loop: requests due while the connection already had its cap outstanding.
    pub unsent: u64,
    /// Measured latencies, from the intended send time.
    pub latency: Histogram<u64>,
    /// When the last measured response arrived.
    pub last_measured: Option<Instant>,
    /// Latencies of all responses since the last progress line.
    pub interval: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            responses: 0,
            measured: 0,
            codes: BTreeMap::new(),
            no_code: 0,
            mismatches: 0,
            timeouts: 0,
            late: 0,
            unknown_stan: 0,
            foreign: 0,
            decode_errors: 0,
            connection_errors: 0,
            connection_error_reasons: BTreeMap::new(),
            connections_opened: 0,
            lost: 0,
            unsent: 0,
            latency: latency_histogram(),
            last_measured: None,
            interval: latency_histogram(),
        }
    }
}

impl Tally {
    /// Every counted error: each makes the exit status non-zero.
    pub fn errors(&self) -> u64 {
        self.mismatches
            + self.timeouts
            + self.unknown_stan
            + self.foreign
            + self.decode_errors
            + self.connection_errors
            + self.lost
            + self.unsent
    }

    /// Counts a connection error under its reason.
    pub fn count_connection_error(&mut self, reason: &str) {
        self.connection_errors += 1;
        match self.connection_error_reasons.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.connection_error_reasons.insert(reason.to_string(), 1);
            }
        }
    }

    /// Adds `other` in (the interval histograms are left alone).
    pub fn merge(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.responses += other.responses;
        self.measured += other.measured;
        for (code, n) in &other.codes {
            *self.codes.entry(*code).or_default() += n;
        }
        self.no_code += other.no_code;
        self.mismatches += other.mismatches;
        self.timeouts += other.timeouts;
        self.late += other.late;
        self.unknown_stan += other.unknown_stan;
        self.foreign += other.foreign;
        self.decode_errors += other.decode_errors;
        self.connection_errors += other.connection_errors;
        for (reason, n) in &other.connection_error_reasons {
            *self
                .connection_error_reasons
                .entry(reason.clone())
                .or_default() += n;
        }
        self.connections_opened += other.connections_opened;
        self.lost += other.lost;
        self.unsent += other.unsent;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.last_measured = match (self.last_measured, other.last_measured) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// One progress line for stderr.
pub fn progress_line(
    elapsed: Duration,
    per_second: f64,
    interval: &Histogram<u64>,
    sent: u64,
    errors: u64,
    warming_up: bool,
) -> String {
    let p99 = if interval.is_empty() {
        "-".to_string()
    } else {
        format_us(interval.value_at_quantile(0.99))
    };
    format!(
        "[{:>5.1}s] {:>9.0} resp/s  p99 {:>9}  sent {:>10}  errors {}{}",
        elapsed.as_secs_f64(),
        per_second,
        p99,
        sent,
        errors,
        if warming_up { "  (warmup)" } else { "" }
    )
}

/// Microseconds as a person reads them: "850 µs", "12.3 ms", "1.50 s".
pub fn format_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Error counts; `total` is what decides the exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub mismatches: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    /// The connection errors by reason.
    pub connection_error_reasons: BTreeMap<String, u64>,
    pub decode_errors: u64,
    pub unknown_stan: u64,
    /// Answers carrying another request's terminal id, card or amount.
    pub foreign_answers: u64,
    pub unsent: u64,
    pub lost: u64,
    pub total: u64,
}

/// How the load was offered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModeReport {
    /// N connections × window outstanding, each response triggering the next.
    ClosedLoop { connections: usize, window: usize },
    /// A fixed arrival rate across all connections.
    OpenLoop {
        connections: usize,
        rate_per_s: f64,
        max_outstanding_per_connection: usize,
    },
    /// Each transaction on a connection of its own (connect, request, answer,
    /// close), `concurrency` at a time.
    ConnectPerRequest { concurrency: usize },
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub mode: ModeReport,
    /// From the first send to the end of the run.
    pub elapsed_s: f64,
    pub warmup_s: f64,
    /// From the end of the warmup to the last measured response.
    pub measured_s: f64,
    pub requests_sent: u64,
    pub responses: u64,
    pub responses_measured: u64,
    /// Connections opened; in connect-per-request, throughput is also new
    /// connections per second.
    pub connections_opened: u64,
    /// Measured responses per second of the measured period.
    pub throughput_per_s: f64,
    /// From the intended send time to the response, measured requests only.
    pub latency_us: LatencySummary,
    /// Every response of the run, warmup included.
    pub response_codes: BTreeMap<String, u64>,
    pub responses_without_code: u64,
    pub late_responses: u64,
    pub errors: ErrorCounts,
}

impl Report {
    /// Builds the report from the merged tally. `warmup_end` splits warmup from
    /// the measured period.
    pub fn new(
        scenario: &str,
        target: &str,
        mode: ModeReport,
        tally: &Tally,
        elapsed: Duration,
        warmup: Duration,
        warmup_end: Instant,
    ) -> Report {
        let measured = tally
            .last_measured
            .map(|last| last.saturating_duration_since(warmup_end))
            .unwrap_or_default();
        let measured_s = measured.as_secs_f64();
        let throughput_per_s = if measured_s > 0.0 {
            tally.measured as f64 / measured_s
        } else {
            0.0
        };
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            mode,
            elapsed_s: round3(elapsed.as_secs_f64()),
            warmup_s: round3(warmup.as_secs_f64()),
            measured_s: round3(measured_s),
            requests_sent: tally.sent,
            responses: tally.responses,
            responses_measured: tally.measured,
            connections_opened: tally.connections_opened,
            throughput_per_s: (throughput_per_s * 10.0).round() / 10.0,
            latency_us: LatencySummary::of(&tally.latency),
            response_codes: tally
                .codes
                .iter()
                .map(|(code, n)| (code.as_str().to_string(), *n))
                .collect(),
            responses_without_code: tally.no_code,
            late_responses: tally.late,
            errors: ErrorCounts {
                mismatches: tally.mismatches,
                timeouts: tally.timeouts,
                connection_errors: tally.connection_errors,
                connection_error_reasons: tally.connection_error_reasons.clone(),
                decode_errors: tally.decode_errors,
                unknown_stan: tally.unknown_stan,
                foreign_answers: tally.foreign,
                unsent: tally.unsent,
                lost: tally.lost,
                total: tally.errors(),
            },
        }
    }

    /// No mismatch, timeout, connection or decode error, unknown STAN, unsent
    /// or lost request.
    pub fn is_clean(&self) -> bool {
        self.errors.total == 0
    }

    /// Pretty JSON for `--json`.
    pub fn to_json(&self) -> String {
        // A struct of numbers, strings and maps with string keys always serialises.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The summary printed on stdout at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mode = match &self.mode {
            ModeReport::ClosedLoop {
                connections,
                window,
            } => format!("closed loop, {connections} connections × window {window}"),
            ModeReport::OpenLoop {
                connections,
                rate_per_s,
                max_outstanding_per_connection,
            } => format!(
                "open loop, {rate_per_s}/s over {connections} connections (at most {max_outstanding_per_connection} outstanding each)"
            ),
            ModeReport::ConnectPerRequest { concurrency } => format!(
                "connect per request, {concurrency} at a time (connect, request, answer, close)"
            ),
        };
        let _ = writeln!(out, "scenario {} → {}, {mode}", self.scenario, self.target);
        let _ = writeln!(
            out,
            "  period      {:.2} s measured ({:.2} s warmup excluded), {:.2} s in all",
            self.measured_s, self.warmup_s, self.elapsed_s
        );
        let _ = writeln!(
            out,
            "  requests    {} sent, {} responses ({} measured), {} connections opened",
            self.requests_sent, self.responses, self.responses_measured, self.connections_opened
        );
        let per_connection = if matches!(self.mode, ModeReport::ConnectPerRequest { .. }) {
            " (= new connections/s)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  throughput  {:.1} responses/s{per_connection}",
            self.throughput_per_s
        );
        let l = &self.latency_us;
        let from = if per_connection.is_empty() {
            "from intended send time"
        } else {
            "from the start of the connect"
        };
        let _ = writeln!(
            out,
            "  latency µs  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.1}, {} samples, {from})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean, l.count
        );
        let codes: Vec<String> = self
            .response_codes
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        let mut codes = if codes.is_empty() {
            "none".to_string()
        } else {
            codes.join("  ")
        };
        if self.responses_without_code > 0 {
            codes.push_str(&format!("  (no code): {}", self.responses_without_code));
        }
        let _ = writeln!(out, "  codes       {codes}");
        if self.late_responses > 0 {
            let _ = writeln!(
                out,
                "  late        {} responses after their timeout",
                self.late_responses
            );
        }
        let e = &self.errors;
        let _ = writeln!(
            out,
            "  errors      {}  (mismatches {}, timeouts {}, connection {}, decode {}, unknown STAN {}, foreign {}, unsent {}, lost {})",
            e.total, e.mismatches, e.timeouts, e.connection_errors, e.decode_errors, e.unknown_stan, e.foreign_answers, e.unsent, e.lost
        );
        for (reason, n) in &e.connection_error_reasons {
            let _ = writeln!(out, "  connection  {n} × {reason}");
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ResponseCode {
        let bytes: [u8; 2] = text.as_bytes().try_into().expect("two bytes");
        ResponseCode::new(bytes).expect("valid code")
    }

    fn sample_tally(start: Instant) -> Tally {
        let mut t = Tally::default();
        for us in 1..=1000u64 {
            t.latency.saturating_record(us);
        }
        t.sent = 1000;
        t.responses = 1000;
        t.measured = 1000;
        t.codes.insert(code("00"), 990);
        t.codes.insert(code("05"), 10);
        t.last_measured = Some(start + Duration::from_secs(2));
        t
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let start = Instant::now();
        let t = sample_tally(start);
        let l = LatencySummary::of(&t.latency);
        assert_eq!(l.count, 1000);
        assert_eq!(l.p50, 500);
        assert_eq!(l.p99, 990);
        assert_eq!(l.max, 1000);
        assert_eq!(l.min, 1);
    }

    #[test]
    fn throughput_is_over_the_measured_period_only() {
        let start = Instant::now();
        let t = sample_tally(start);
        let mode = ModeReport::ClosedLoop {
            connections: 1,
            window: 1,
        };
        // Warmup ended 1 s after the start; the last response came 2 s after it.
        let r = Report::new(
            "s",
            "127.0.0.1:1",
            mode,
            &t,
            Duration::from_secs(2),
            Duration::from_secs(1),
            start + Duration::from_secs(1),
        );
        assert_eq!(r.measured_s, 1.0);
        assert_eq!(r.throughput_per_s, 1000.0);
        assert!(r.is_clean());
    }

    #[test]
    fn any_error_makes_the_report_unclean_and_shows_in_json() {
        let start = Instant::now();
        let mut t = sample_tally(start);
        t.mismatches = 2;
        t.timeouts = 1;
        let mode = ModeReport::OpenLoop {
            connections: 2,
            rate_per_s: 100.0,
            max_outstanding_per_connection: 10,
        };
        let r = Report::new(
            "s",
            "x",
            mode,
            &t,
            Duration::from_secs(2),
            Duration::ZERO,
            start,
        );
        assert!(!r.is_clean());
        assert_eq!(r.errors.total, 3);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(json["errors"]["mismatches"], 2);
        assert_eq!(json["errors"]["total"], 3);
        assert_eq!(json["response_codes"]["05"], 10);
        assert_eq!(json["latency_us"]["p99.9"], 999);
        assert_eq!(json["mode"]["kind"], "open-loop");
        let text = r.summary();
        assert!(text.contains("errors      3"), "{text}");
        assert!(text.contains("00: 990  05: 10"), "{text}");
    }

    #[test]
    fn merging_adds_counts_and_histograms() {
        let start = Instant::now();
        let mut a = sample_tally(start);
        let mut b = sample_tally(start);
        b.last_measured = Some(start + Duration::from_secs(3));
        b.timeouts = 4;
        a.merge(&b);
        assert_eq!(a.sent, 2000);
        assert_eq!(a.codes[&code("00")], 1980);
        assert_eq!(a.latency.len(), 2000);
        assert_eq!(a.errors(), 4);
        assert_eq!(a.last_measured, Some(start + Duration::from_secs(3)));
    }

    #[test]
    fn progress_line_shows_rate_p99_and_errors() {
        let mut h = latency_histogram();
        h.saturating_record(1_500);
        let line = progress_line(Duration::from_secs(3), 1234.0, &h, 5000, 2, true);
        assert!(line.contains("1234 resp/s"), "{line}");
        assert!(line.contains("1.50 ms"), "{line}");
        assert!(line.contains("errors 2"), "{line}");
        assert!(line.contains("warmup"), "{line}");
        assert_eq!(format_us(999), "999 µs");
        assert_eq!(format_us(2_500_000), "2.50 s");
    }
}
