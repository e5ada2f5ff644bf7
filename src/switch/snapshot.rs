//! Routes and issuers as one immutable value. The switch loads it once per
//! transaction from an `ArcSwap`; a reload builds a new one and swaps it whole, so
//! a transaction never sees half of a change and in-flight ones finish on the old.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::file_contents::FileContents;
use super::stand_in::StandIn;
use super::SwitchError;
use crate::config::{Config, IssuerConfig};
use crate::risk::{RiskRules, RiskState};
use crate::route::BinTable;
use crate::simulator::Simulator;
use crate::upstream::{InProcessIssuer, Issuer};

/// An issuer as configured, with the running links behind it.
pub struct IssuerEntry {
    pub config: IssuerConfig,
    /// What the files it read (spec, TLS) contained when it started.
    pub files: FileContents,
    pub issuer: Issuer,
    /// Cancelled when a reload drops this issuer; its links drain and close.
    pub token: CancellationToken,
}

impl IssuerEntry {
    /// Whether this running issuer is what `config` over `files` would start:
    /// same config text and same file contents. Only then are its links kept.
    pub fn runs(&self, config: &IssuerConfig, files: &FileContents) -> bool {
        self.config == *config && self.files == *files
    }
}

/// Issuers a build has started; cancelled if the build fails, so a refused
/// config leaves no links behind.
struct StartedIssuers(Vec<CancellationToken>);

impl Drop for StartedIssuers {
    fn drop(&mut self) {
        for token in &self.0 {
            token.cancel();
        }
    }
}

/// One route: its name (a metric label) and the issuer it sends to.
pub struct Route {
    pub name: Arc<str>,
    pub issuer: Issuer,
    /// Whether, and within which limits, the switch approves for the issuer
    /// when it cannot be reached.
    pub stand_in: Option<Arc<StandIn>>,
}

/// Everything a transaction reads from configuration.
pub struct Snapshot {
    pub config: Config,
    pub routes: BinTable<usize>,
    pub route_list: Vec<Route>,
    pub issuers: Vec<IssuerEntry>,
    /// Compiled risk rules; their velocity and duplicate state is shared with
    /// the previous snapshot's, so a reload keeps unchanged rules' counts.
    pub risk: Arc<RiskRules>,
    pub generation: u64,
}

impl Snapshot {
    /// Builds a snapshot, reusing the running issuers of `previous` whose
    /// configuration and files (spec, TLS material) did not change: their links
    /// and outstanding requests stay. A file that cannot be read refuses the build.
    /// Returns the tokens of the previous issuers that are no longer used; cancel
    /// them once the new snapshot is live.
    pub fn build(
        config: Config,
        previous: Option<&Snapshot>,
        simulator: Option<&Arc<Simulator>>,
        shutdown: &CancellationToken,
    ) -> Result<(Snapshot, Vec<CancellationToken>), SwitchError> {
        let routes = config.route_table()?;
        let risk_state = previous.map_or_else(RiskState::new, |p| p.risk.state().clone());
        let risk = RiskRules::compile(&config.risk, &risk_state)?;
        let mut issuers = Vec::with_capacity(config.issuers.len());
        let mut kept = Vec::new();
        let mut started = StartedIssuers(Vec::new());
        for ic in &config.issuers {
            // Read before the issuer is built from the files: an edit landing
            // in between is seen as a change at the next reload, never missed.
            let files =
                FileContents::read(ic.files()).map_err(|source| SwitchError::IssuerFile {
                    issuer: ic.name.clone(),
                    source,
                })?;
            let reused = previous.and_then(|p| {
                p.issuers
                    .iter()
                    .position(|e| e.runs(ic, &files))
                    .map(|i| (i, &p.issuers[i]))
            });
            let entry = match reused {
                Some((i, e)) => {
                    kept.push(i);
                    IssuerEntry {
                        config: e.config.clone(),
                        files,
                        issuer: e.issuer.clone(),
                        token: e.token.clone(),
                    }
                }
                None => {
                    let spec = crate::specs::resolve(&ic.spec).map_err(|source| {
                        SwitchError::IssuerSpec {
                            issuer: ic.name.clone(),
                            source,
                        }
                    })?;
                    let token = shutdown.child_token();
                    started.0.push(token.clone());
                    let in_process = simulator.map(|s| s.clone() as Arc<dyn InProcessIssuer>);
                    let issuer = Issuer::start(ic, Arc::new(spec), in_process, token.clone())?;
                    IssuerEntry {
                        config: ic.clone(),
                        files,
                        issuer,
                        token,
                    }
                }
            };
            issuers.push(entry);
        }
        let mut route_list = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let entry = issuers
                .iter()
                .find(|e| e.config.name == rc.issuer)
                .ok_or_else(|| SwitchError::UndefinedIssuer {
                    route: rc.name.clone(),
                    issuer: rc.issuer.clone(),
                })?;
            route_list.push(Route {
                name: Arc::from(rc.name.as_str()),
                issuer: entry.issuer.clone(),
                stand_in: rc.stand_in.as_ref().map(|c| Arc::new(StandIn::new(c))),
            });
        }
        let retired = previous
            .map(|p| {
                p.issuers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !kept.contains(i))
                    .map(|(_, e)| e.token.clone())
                    .collect()
            })
            .unwrap_or_default();
        let generation = previous.map_or(1, |p| p.generation + 1);
        started.0.clear();
        Ok((
            Snapshot {
                config,
                routes,
                route_list,
                issuers,
                risk: Arc::new(risk),
                generation,
            },
            retired,
        ))
    }

    /// The route for a PAN: most specific BIN match.
    #[inline]
    pub fn route(&self, pan: &[u8]) -> Option<&Route> {
        self.routes
            .lookup(pan)
            .and_then(|&i| self.route_list.get(i))
    }

    pub fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers
            .iter()
            .find(|e| e.config.name == name)
            .map(|e| &e.issuer)
    }
}
