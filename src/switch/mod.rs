//! The switch: one authorization's path through decode → check → route →
//! forward → respond, over a configuration snapshot that can be swapped whole
//! while traffic flows.

pub mod events;
pub mod file_contents;
mod handler;
mod journaling;
pub mod originals;
pub mod outcome;
mod queue;
pub mod reconcile;
mod refund;
mod retention;
mod rrn;
pub mod snapshot;
pub mod stand_in;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::channel::Channel;
use crate::config::{Config, ConfigError, Endpoint};
use crate::iso8583::SpecError;
use crate::journal::Stores;
use crate::risk::RiskError;
use crate::route::BinTableError;
use crate::simulator::{Simulator, SimulatorError};
use crate::upstream::{SafSettings, UpstreamError};
pub use handler::{refusal_that_encodes, response_to, Answer, Undo};
use originals::Originals;
use rrn::RrnSource;
pub use snapshot::Snapshot;

/// Why the switch could not start or reload, keeping the error behind it.
/// Each message stands alone (logs and the admin API print only it); the
/// command line skips a cause whose text the message already holds.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The config file does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two BIN patterns of the routes are equally specific.
    #[error(transparent)]
    Routes(#[from] BinTableError),
    #[error(transparent)]
    Risk(#[from] RiskError),
    /// A file an issuer reads (spec, TLS) cannot be read.
    #[error("issuer {issuer:?}: {source}")]
    IssuerFile {
        issuer: String,
        #[source]
        source: file_contents::UnreadableFile,
    },
    #[error("issuer {issuer:?}: {source}")]
    IssuerSpec {
        issuer: String,
        #[source]
        source: SpecError,
    },
    /// An issuer's links cannot start; the error names the issuer.
    #[error(transparent)]
    Issuer(#[from] UpstreamError),
    #[error("route {route:?}: issuer {issuer:?} is not defined")]
    UndefinedIssuer { route: String, issuer: String },
    #[error(transparent)]
    Simulator(#[from] SimulatorError),
}

/// Where a message came in: the listener's name and channel kind, both bounded
/// sets fit for metric labels.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub listener: Arc<str>,
    pub channel: Channel,
    pub metrics: Arc<events::ListenerMetrics>,
    /// The listener's spec: answers are encoded with it before they are
    /// counted, so what is logged, counted and journaled is what the
    /// terminal gets. None for callers that take messages, not bytes.
    pub spec: Option<Arc<crate::iso8583::Spec>>,
}

impl Inbound {
    pub fn new(listener: &str, channel: Channel) -> Inbound {
        Inbound {
            listener: Arc::from(listener),
            channel,
            metrics: Arc::new(events::ListenerMetrics::new(listener, channel)),
            spec: None,
        }
    }

    /// Answers are encoded with `spec` (the listener's).
    pub fn with_spec(mut self, spec: Arc<crate::iso8583::Spec>) -> Inbound {
        self.spec = Some(spec);
        self
    }
}

/// The running switch. Shared by every listener task behind an `Arc`.
pub struct Switch {
    snapshot: ArcSwap<Snapshot>,
    simulator: Option<Arc<Simulator>>,
    originals: Originals,
    rrn: RrnSource,
    reload_lock: tokio::sync::Mutex<()>,
    shutdown: CancellationToken,
    /// The journal and the store-and-forward queue.
    stores: Stores,
    senders: queue::Senders,
    saf_settings: Arc<SafSettings>,
    /// Refunds in progress, one at a time per original.
    refunds: refund::RefundLocks,
}

/// How long a forwarded authorization stays matchable by a terminal reversal:
/// terminals reverse within seconds of a failed exchange, schemes allow about a
/// minute. Kept as generations rotated every KEEP / GENERATIONS; the cap bounds
/// memory at full load (about 100 bytes an entry, twice that with the maps'
/// spare room), rotating early when near it. What is not here any more is
/// found in the journal (`Switch::find_original`): the cap costs a look-up,
/// not a match. 300 000 keeps two minutes up to 2 500/s, and the switch's
/// RSS under 256 MB at full load (64 × 16: 122–171 MiB; 600 000 took it to
/// 252–271 MiB).
const ORIGINALS_KEEP: Duration = Duration::from_secs(120);
const ORIGINALS_GENERATIONS: u32 = 8;
const ORIGINALS_MAX: usize = 300_000;
/// How often idle velocity and duplicate keys are dropped.
const RISK_SWEEP: Duration = Duration::from_secs(10);

/// Drops idle risk keys every [`RISK_SWEEP`] so memory stays bounded, on a
/// blocking thread: a sweep of millions of keys takes milliseconds.
fn spawn_risk_sweeper(switch: &Arc<Switch>) {
    let sweeper = Arc::downgrade(switch);
    let token = switch.shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RISK_SWEEP);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {
                    let Some(sw) = sweeper.upgrade() else { break };
                    let state = sw.snapshot.load().risk.state().clone();
                    drop(sw);
                    let now = crate::risk::Timestamp::now();
                    let _ = tokio::task::spawn_blocking(move || state.expire(now)).await;
                }
            }
        }
    });
}

/// How long a reload waits for a new issuer's first live link.
pub const NEW_ISSUER_WAIT: Duration = Duration::from_secs(3);

impl Switch {
    /// Starts issuers (and the in-process simulator when an issuer points at
    /// it) over an in-memory journal and queue: for tests and tools. `serve`
    /// opens the configured journal and calls [`Switch::start_with`].
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Arc<Switch>, SwitchError> {
        Switch::start_with(
            config,
            Stores::in_memory(),
            SafSettings::default(),
            shutdown,
        )
    }

    /// Starts the switch over `stores`, with one store-and-forward sender per
    /// issuer name delivering what they hold (including what a previous run
    /// left). In-doubt recovery is the caller's to run, before taking traffic:
    /// [`Switch::reverse_in_doubt`].
    pub fn start_with(
        config: Config,
        stores: Stores,
        saf_settings: SafSettings,
        shutdown: CancellationToken,
    ) -> Result<Arc<Switch>, SwitchError> {
        let wants_sim = config
            .issuers
            .iter()
            .any(|i| i.endpoints.iter().any(|e| matches!(e, Endpoint::Simulator)));
        let simulator = match (&config.simulator, wants_sim) {
            (Some(sim), true) => Some(Arc::new(Simulator::new(sim)?)),
            _ => None,
        };
        let rrn_digit = config.instance.rrn_digit;
        let (snapshot, _) = Snapshot::build(config, None, simulator.as_ref(), &shutdown)?;
        let switch = Arc::new(Switch {
            snapshot: ArcSwap::from_pointee(snapshot),
            simulator,
            originals: Originals::new(ORIGINALS_GENERATIONS as usize, ORIGINALS_MAX),
            rrn: RrnSource::new(rrn_digit),
            reload_lock: tokio::sync::Mutex::new(()),
            shutdown,
            stores,
            senders: queue::Senders::default(),
            saf_settings: Arc::new(saf_settings),
            refunds: refund::RefundLocks::default(),
        });
        switch.start_senders();
        switch.catch_unmatched_approvals();
        switch.spawn_in_doubt_sweep();
        switch.spawn_retention();
        let sweeper = Arc::downgrade(&switch);
        let token = switch.shutdown.clone();
        tokio::spawn(async move {
            let period = ORIGINALS_KEEP / ORIGINALS_GENERATIONS;
            let mut last = Instant::now();
            // Checked four times a second: past three quarters full the
            // table rotates, and the last quarter (75 000 entries) must not
            // fill between two checks, even at 100 000 authorizations/s.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => match sweeper.upgrade() {
                        Some(sw) if last.elapsed() >= period || sw.originals.nearly_full() => {
                            let retired = sw.originals.rotate();
                            last = Instant::now();
                            drop(sw);
                            // Hundreds of thousands of entries: freed on a blocking thread.
                            tokio::task::spawn_blocking(move || drop(retired));
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
        });
        spawn_risk_sweeper(&switch);
        Ok(switch)
    }

    /// The current snapshot (routes, issuers, config).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The in-process issuer simulator, when the config runs one.
    pub fn simulator(&self) -> Option<&Arc<Simulator>> {
        self.simulator.as_ref()
    }

    /// Swaps in a new configuration's routes and issuers. Issuers whose config
    /// and files (spec, TLS material: compared by content, so a file edited in
    /// place counts as a change) are unchanged keep their links; changed ones
    /// are started afresh and connect with the new material. New issuers get
    /// up to [`NEW_ISSUER_WAIT`] to bring a link up before the swap, so a
    /// changed route does not answer 91 while its links connect; removed issuers keep serving requests that
    /// loaded the old snapshot for a grace period, then drain and close.
    /// Listener changes need a restart and are reported, not applied.
    pub async fn reload(self: &Arc<Self>, config: Config) -> Result<u64, SwitchError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let current = self.snapshot.load_full();
        if current.config.listeners != config.listeners {
            tracing::warn!("listener changes in the new config take effect only after a restart");
        }
        let (next, retired) = Snapshot::build(
            config,
            Some(&current),
            self.simulator.as_ref(),
            &self.shutdown,
        )?;
        let fresh: Vec<_> = next
            .issuers
            .iter()
            .filter(|e| !current.issuers.iter().any(|c| c.runs(&e.config, &e.files)))
            .map(|e| e.issuer.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + NEW_ISSUER_WAIT;
        while !fresh.iter().all(|i| i.is_available()) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for issuer in fresh.iter().filter(|i| !i.is_available()) {
            tracing::warn!(
                issuer = issuer.name(),
                "new issuer has no live link yet; swapping anyway"
            );
        }
        let generation = next.generation;
        self.snapshot.store(Arc::new(next));
        // Queued reversals and advices go by issuer name: a replaced issuer's
        // go on through its replacement, sent by the name's one sender.
        if !retired.is_empty() {
            // A transaction that loaded the old snapshot may still be on its way
            // to a retired issuer: give it the longest old timeout to finish.
            let grace = current
                .config
                .issuers
                .iter()
                .map(|i| Duration::from_millis(i.timeout_ms))
                .max()
                .unwrap_or_default()
                + Duration::from_secs(1);
            let shutdown = self.shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(grace) => {}
                    _ = shutdown.cancelled() => {}
                }
                for token in retired {
                    token.cancel();
                }
            });
        }
        self.start_senders();
        self.catch_unmatched_approvals();
        Ok(generation)
    }

    /// Reloads from a config file (None = the embedded default), counting the
    /// result; a refused config leaves the running one in place.
    pub async fn reload_from(
        self: &Arc<Self>,
        path: Option<&std::path::Path>,
    ) -> Result<u64, SwitchError> {
        let config = match path {
            Some(p) => Config::load(p),
            None => Config::embedded_default(),
        };
        let result = match config {
            Ok(c) => self.reload(c).await,
            Err(e) => Err(SwitchError::Config(e)),
        };
        match &result {
            Ok(generation) => {
                metrics::counter!("isoswitch_config_reloads_total", "result" => "ok").increment(1);
                tracing::info!(generation, "config reloaded");
            }
            Err(e) => {
                metrics::counter!("isoswitch_config_reloads_total", "result" => "error")
                    .increment(1);
                tracing::error!(error = %e, "config reload refused; the old config keeps running");
            }
        }
        result
    }

    /// Graceful stop, the stage after the terminals have drained: every
    /// issuer stops taking requests, and this waits (until `deadline`) for what
    /// is out at them to be answered or to time out. Their reversals are queued
    /// for store-and-forward, which keeps running. Whether all drained.
    pub async fn drain_issuer_links(&self, deadline: tokio::time::Instant) -> bool {
        let snapshot = self.snapshot();
        for entry in &snapshot.issuers {
            entry.issuer.stop_taking_requests();
        }
        let mut drained = true;
        for entry in &snapshot.issuers {
            drained &= entry.issuer.drained(deadline).await;
        }
        drained
    }

    /// Graceful stop, the stage after the links have drained: waits (until
    /// `deadline`) for store-and-forward to deliver what is queued, through
    /// links that are still up. Whether every queue emptied; what is left
    /// stays in the queue for the next start.
    pub async fn flush_store_and_forward(&self, deadline: tokio::time::Instant) -> bool {
        for sender in self.senders.all() {
            sender.wake();
        }
        loop {
            let mut empty = true;
            for sender in self.senders.all() {
                empty &= matches!(self.stores.queue.depth(sender.issuer()).await, Ok(0));
            }
            if empty {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(
                Duration::from_millis(20).min(deadline - tokio::time::Instant::now()),
            )
            .await;
        }
    }

    /// Graceful stop, the last stage: cancels the token the switch started
    /// with (links close, store-and-forward stops) and waits for each sender
    /// to report what it leaves in the queue.
    pub async fn stop_issuers(&self) {
        self.shutdown.cancel();
        for sender in self.senders.all() {
            sender.stopped().await;
        }
    }

    /// The journal and queue the switch writes through.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Answers one message from a terminal; None for messages that get no
    /// answer (responses sent to the switch unasked).
    pub async fn handle(
        &self,
        from: &Inbound,
        request: crate::iso8583::Message,
    ) -> Option<crate::iso8583::Message> {
        self.answer(from, request).await.map(|a| a.message)
    }

    /// As [`Switch::handle`], with what undoes an approval the terminal does
    /// not get: a connection hands it to [`Switch::undo`] when it cannot
    /// deliver the answer.
    pub async fn answer(&self, from: &Inbound, request: crate::iso8583::Message) -> Option<Answer> {
        handler::handle(self, from, request).await
    }

    /// Reverses an approval that never reached its terminal (the connection
    /// broke, or the answer did not encode for it): its reversal is queued
    /// once, as for a timeout.
    pub async fn undo(&self, undo: Undo) {
        let Undo { txn, issuer } = undo;
        metrics::counter!("isoswitch_undelivered_approvals_total").increment(1);
        let fields = match self.stores.journal.reversal_fields(txn).await {
            Ok(Some(fields)) => fields,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(txn = txn.0, error = %e, "approval not delivered and its reversal cannot be read; the journal keeps the transaction");
                return;
            }
        };
        tracing::warn!(
            issuer = %issuer,
            txn = txn.0,
            "approval not delivered to the terminal; reversing it"
        );
        let _ = self.queue_reversal(&issuer, txn, fields).await;
    }
}
