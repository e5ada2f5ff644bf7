//! The web virtual terminal: card-not-present payments from a browser or a
//! script, on the same pipeline as a terminal's (`Switch::answer` on the
//! `virtual-terminal` channel). `payment` checks what the operator typed,
//! `engine` turns it into ISO 8583 and runs it, `advice` says what a
//! response code means for the customer, `auth` holds operators, sessions,
//! CSRF and login limits, `api` is the JSON API and `pages` the HTML;
//! `vault` saves cards on file and `recurring` charges them on schedule.

pub mod advice;
pub mod api;
pub mod auth;
pub mod engine;
mod html;
pub mod pages;
pub mod payment;
pub mod recurring;
pub mod vault;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::journal::{
    IdempotencyStore, MemoryIdempotency, MemoryRecurring, RecurringStore, SqliteJournal,
};
use crate::switch::Switch;
use crate::vt_config::VirtualTerminalConfig;
use auth::Auth;
use engine::Engine;

/// The demo operator of the embedded default config: printed at start-up so
/// a new user can log in. Its hash is in config/default.toml.
pub const DEMO_USERNAME: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";

/// Where the virtual terminal keeps what it owns: idempotency keys, cards
/// on file and schedules (beside the journal, in the same store).
#[derive(Clone)]
pub struct VtStores {
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub recurring: Arc<dyn RecurringStore>,
}

impl VtStores {
    /// Lost on restart: tests and `durability = "none"`.
    pub fn in_memory() -> VtStores {
        VtStores {
            idempotency: Arc::new(MemoryIdempotency::default()),
            recurring: Arc::new(MemoryRecurring::default()),
        }
    }

    /// In the SQLite journal's file.
    pub fn sqlite(journal: Arc<SqliteJournal>) -> VtStores {
        VtStores {
            idempotency: journal.clone(),
            recurring: journal,
        }
    }
}

/// What every route shares.
pub struct VtState {
    pub engine: Engine,
    pub auth: Auth,
    pub recurring: Arc<dyn RecurringStore>,
    pub dunning_hours: Vec<u32>,
    recurring_poll: Duration,
    /// Held by a run of due recurring charges.
    recurring_run: tokio::sync::Mutex<()>,
    /// Served over TLS: the session cookie is `Secure`.
    pub secure: bool,
}

impl VtState {
    pub fn new(
        config: &VirtualTerminalConfig,
        switch: Arc<Switch>,
        stores: VtStores,
    ) -> Arc<VtState> {
        Arc::new(VtState {
            engine: Engine::new(switch, stores.idempotency, &config.mcc),
            auth: Auth::new(
                config.operators.clone(),
                config.login,
                Duration::from_secs(config.idle_timeout_s),
            ),
            recurring: stores.recurring,
            dunning_hours: config.dunning_hours.clone(),
            recurring_poll: Duration::from_secs(config.recurring_poll_s),
            recurring_run: tokio::sync::Mutex::new(()),
            secure: config.tls.is_some(),
        })
    }
}

impl VtState {
    /// Each (terminal, merchant) of the configured operators, once.
    pub fn terminals(&self) -> Vec<(String, String)> {
        let mut terminals: Vec<(String, String)> = self
            .auth
            .operators()
            .iter()
            .map(|o| (o.terminal.clone(), o.merchant.clone()))
            .collect();
        terminals.sort();
        terminals.dedup();
        terminals
    }
}

/// Runs due recurring charges every `recurring_poll_s` until `shutdown`.
async fn run_recurring(state: Arc<VtState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.recurring_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = recurring::run_due(&state, crate::journal::now_ms()).await {
                    tracing::warn!(error = %e, "recurring charges: the schedules cannot be read");
                }
            }
        }
    }
}

/// Every route: the JSON API and the pages.
pub fn router(state: Arc<VtState>) -> Router {
    api::routes().merge(pages::routes()).with_state(state)
}

/// Why the virtual terminal could not start.
#[derive(Debug, thiserror::Error)]
pub enum VtError {
    #[error("virtual_terminal: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("virtual_terminal: tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// A bound virtual terminal, ready to run.
pub struct BoundVt {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<VtState>,
}

impl BoundVt {
    /// Loads TLS (when configured), binds `config.bind`, and tells the risk
    /// rules of the consents behind the cards on file.
    pub async fn bind(
        config: &VirtualTerminalConfig,
        switch: Arc<Switch>,
        stores: VtStores,
    ) -> Result<BoundVt, VtError> {
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose()?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| VtError::Bind {
                addr: config.bind,
                source,
            })?;
        let state = VtState::new(config, switch, stores);
        // Before any recurring charge runs.
        let terminals = state.terminals();
        match vault::restore_consents(&state.engine, state.recurring.as_ref(), &terminals).await {
            Ok(0) => {}
            Ok(told) => tracing::info!(
                cards = told,
                "recurring: consents of cards on file restored"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "recurring: cards on file cannot be read; merchant-initiated charges may be refused (57)")
            }
        }
        Ok(BoundVt {
            listener,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What the routes share (tests run recurring charges through it).
    pub fn state(&self) -> Arc<VtState> {
        self.state.clone()
    }

    /// `http://…/` or `https://…/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.local_addr() {
            Ok(addr) => format!("{scheme}://{addr}/"),
            Err(_) => format!("{scheme}://(unknown address)/"),
        }
    }

    /// Serves, and runs recurring charges as they fall due, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        tokio::spawn(run_recurring(self.state.clone(), shutdown.clone()));
        let app = router(self.state).into_make_service_with_connect_info::<ClientAddr>();
        let stop_handshakes = shutdown.clone();
        let stop = async move { shutdown.cancelled().await };
        match self.tls {
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
            Some(acceptor) => {
                let listener = TlsListener::start(self.listener, acceptor, stop_handshakes)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            }
        }
    }
}

/// The client's address, for the login limits; from plain TCP or TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TCP connections that have finished their TLS handshake. Handshakes run
/// on tasks of their own, so a slow client holds up no other; one that fails
/// or takes longer than [`HANDSHAKE`] is dropped. Accepting stops at
/// `shutdown`.
struct TlsListener {
    handshaken: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Finished handshakes waiting for the server to take them.
const HANDSHAKEN_QUEUE: usize = 64;

impl TlsListener {
    fn start(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, handshaken) = tokio::sync::mpsc::channel(HANDSHAKEN_QUEUE);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "virtual terminal: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "virtual terminal: TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "virtual terminal: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(TlsListener { handshaken, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // Accepting stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
