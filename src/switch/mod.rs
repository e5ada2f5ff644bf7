//! The switch: one authorization's path through decode → check → route →
//! forward → respond, over a configuration snapshot that can be swapped whole
//! while traffic flows.

mod handler;
pub mod originals;
pub mod snapshot;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::{Channel, Config, Endpoint};
use crate::simulator::Simulator;
pub use handler::decline;
use originals::Originals;
pub use snapshot::Snapshot;

/// Why the switch could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("{0}")]
    Config(String),
    #[error("issuer simulator: {0}")]
    Simulator(String),
}

/// Where a message came in: the listener's name and channel kind, both bounded
/// sets fit for metric labels.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub listener: Arc<str>,
    pub channel: Channel,
}

/// Retrieval reference numbers for requests that arrive without one:
/// YDDDHH (UTC) and a six-digit sequence, 12 digits as field 37 wants.
struct RrnSource {
    next: AtomicU32,
}

impl RrnSource {
    fn next(&self) -> [u8; 12] {
        let now = time::OffsetDateTime::now_utc();
        let seq = self.next.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        let text = format!(
            "{}{:03}{:02}{:06}",
            now.year().rem_euclid(10),
            now.ordinal(),
            now.hour(),
            seq
        );
        let mut out = [b'0'; 12];
        out.copy_from_slice(&text.as_bytes()[..12]);
        out
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
}

/// How long a forwarded authorization stays matchable by a terminal reversal.
const ORIGINALS_KEEP: Duration = Duration::from_secs(15 * 60);
const ORIGINALS_MAX: usize = 4_000_000;
/// How long a reload waits for a new issuer's first live link.
pub const NEW_ISSUER_WAIT: Duration = Duration::from_secs(3);

impl Switch {
    /// Starts issuers (and the in-process simulator when an issuer points at it).
    pub fn start(config: Config, shutdown: CancellationToken) -> Result<Arc<Switch>, SwitchError> {
        let wants_sim = config
            .issuers
            .iter()
            .any(|i| i.endpoints.iter().any(|e| matches!(e, Endpoint::Simulator)));
        let simulator = match (&config.simulator, wants_sim) {
            (Some(sim), true) => Some(Arc::new(
                Simulator::new(sim).map_err(|e| SwitchError::Simulator(e.to_string()))?,
            )),
            _ => None,
        };
        let (snapshot, _) = Snapshot::build(config, None, simulator.as_ref(), &shutdown)?;
        let switch = Arc::new(Switch {
            snapshot: ArcSwap::from_pointee(snapshot),
            simulator,
            originals: Originals::new(ORIGINALS_KEEP, ORIGINALS_MAX),
            rrn: RrnSource {
                next: AtomicU32::new(1),
            },
            reload_lock: tokio::sync::Mutex::new(()),
            shutdown,
        });
        let sweeper = Arc::downgrade(&switch);
        let token = switch.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => match sweeper.upgrade() {
                        Some(sw) => sw.originals.expire(Instant::now()),
                        None => break,
                    },
                }
            }
        });
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
    /// is unchanged keep their links. New issuers get up to [`NEW_ISSUER_WAIT`]
    /// to bring a link up before the swap, so a changed route does not answer 91
    /// while its links connect; removed issuers keep serving requests that
    /// loaded the old snapshot for a grace period, then drain and close.
    /// Listener changes need a restart and are reported, not applied.
    pub async fn reload(&self, config: Config) -> Result<u64, SwitchError> {
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
            .filter(|e| !current.issuers.iter().any(|c| c.config == e.config))
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
        Ok(generation)
    }

    /// Reloads from a config file (None = the embedded default), counting the
    /// result; a refused config leaves the running one in place.
    pub async fn reload_from(&self, path: Option<&std::path::Path>) -> Result<u64, SwitchError> {
        let config = match path {
            Some(p) => Config::load(p),
            None => Config::embedded_default(),
        };
        let result = match config {
            Ok(c) => self.reload(c).await,
            Err(e) => Err(SwitchError::Config(e.to_string())),
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

    /// Answers one message from a terminal; None for messages that get no
    /// answer (responses sent to the switch unasked).
    pub async fn handle(
        &self,
        from: &Inbound,
        request: crate::iso8583::Message,
    ) -> Option<crate::iso8583::Message> {
        handler::handle(self, from, request).await
    }
}
