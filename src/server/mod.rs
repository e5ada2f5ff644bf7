//! Terminal listeners: bind, accept (plain TCP or TLS), cap connections with a
//! semaphore, and run one task per connection. `Listener::run` is the entry
//! point tests use on 127.0.0.1:0.

mod connection;
pub use crate::tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::frame::{FrameConfig, LengthHeader, ParseLengthHeaderError};
use crate::iso8583::{Spec, SpecError};
use crate::log_limit::LogLimit;
use crate::switch::{Inbound, Switch};

/// Why a listener could not start, keeping the error behind it. Messages
/// stand alone; the command line skips a cause already in the message.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("listener {listener:?}: cannot bind {bind}: {source}")]
    Bind {
        listener: String,
        bind: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener {listener:?}: {source}")]
    Spec {
        listener: String,
        #[source]
        source: SpecError,
    },
    #[error("listener {listener:?}: {source}")]
    Framing {
        listener: String,
        #[source]
        source: ParseLengthHeaderError,
    },
    #[error("listener {listener:?}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: tls::TlsError,
    },
}

/// What every connection of one listener shares.
pub(crate) struct ListenerContext {
    pub inbound: Inbound,
    pub spec: Arc<Spec>,
    pub frame: FrameConfig,
    pub idle_timeout: Duration,
}

/// A bound listener, ready to run.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    context: Arc<ListenerContext>,
    limit: Arc<Semaphore>,
}

/// The frame layout a listener or link config names.
pub fn frame_config(
    header: &str,
    includes_self: bool,
    tpdu: bool,
) -> Result<FrameConfig, ParseLengthHeaderError> {
    let header: LengthHeader = header.parse()?;
    Ok(FrameConfig {
        header,
        header_includes_self: includes_self,
        tpdu,
        ..FrameConfig::default()
    })
}

/// A listener whose spec, framing and TLS are loaded and checked, not yet
/// bound: `serve` prepares every listener before it takes any port.
pub struct PreparedListener {
    bind: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    context: Arc<ListenerContext>,
    max_connections: u32,
}

impl PreparedListener {
    /// Binds the configured address (port 0 picks a free one).
    pub async fn bind(self) -> Result<Listener, ServerError> {
        let name = &self.context.inbound.listener;
        let tcp = TcpListener::bind(self.bind)
            .await
            .map_err(|source| ServerError::Bind {
                listener: name.to_string(),
                bind: self.bind,
                source,
            })?;
        // Registered at zero so dashboards and rate() see the series before the
        // first event.
        for metric in [
            "isoswitch_connections_refused_total",
            "isoswitch_connections_accepted_total",
        ] {
            metrics::counter!(metric, "listener" => name.to_string()).increment(0);
        }
        Ok(Listener {
            tcp,
            tls: self.tls,
            context: self.context,
            limit: Arc::new(Semaphore::new(self.max_connections.max(1) as usize)),
        })
    }
}

impl Listener {
    /// Loads and checks what the listener needs besides its port: spec,
    /// framing and TLS.
    pub fn prepare(config: &ListenerConfig) -> Result<PreparedListener, ServerError> {
        let listener = || config.name.clone();
        let spec = crate::specs::resolve(&config.spec).map_err(|source| ServerError::Spec {
            listener: listener(),
            source,
        })?;
        let frame = frame_config(config.header(), config.header_includes_self, config.tpdu)
            .map_err(|source| ServerError::Framing {
                listener: listener(),
                source,
            })?;
        let tls = match &config.tls {
            Some(t) => Some(tls::acceptor(t).map_err(|source| ServerError::Tls {
                listener: listener(),
                source,
            })?),
            None => None,
        };
        let spec = Arc::new(spec);
        Ok(PreparedListener {
            bind: config.bind,
            tls,
            context: Arc::new(ListenerContext {
                inbound: Inbound::new(&config.name, config.channel).with_spec(spec.clone()),
                spec,
                frame,
                idle_timeout: Duration::from_secs(config.idle_timeout_s.max(1)),
            }),
            max_connections: config.max_connections,
        })
    }

    /// Prepares and binds the configured address (port 0 picks a free one).
    pub async fn bind(config: &ListenerConfig) -> Result<Listener, ServerError> {
        Listener::prepare(config)?.bind().await
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn name(&self) -> &str {
        &self.context.inbound.listener
    }

    /// Accepts until `shutdown`, then waits for open connections to finish
    /// their in-flight transactions.
    pub async fn run(self, switch: Arc<Switch>, shutdown: CancellationToken) {
        self.run_in_stages(switch, shutdown.clone(), shutdown).await;
    }

    /// Accepts until `stop_accepting`; open connections take requests until
    /// `drain`, then finish their in-flight transactions and close. Returns
    /// once every connection has closed. The two signals are two stages of a
    /// graceful stop.
    pub async fn run_in_stages(
        self,
        switch: Arc<Switch>,
        stop_accepting: CancellationToken,
        drain: CancellationToken,
    ) {
        let tracker = TaskTracker::new();
        let name = self.context.inbound.listener.to_string();
        loop {
            let accepted = tokio::select! {
                _ = stop_accepting.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, don't spin.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                metrics::counter!("isoswitch_connections_refused_total", "listener" => name.clone()).increment(1);
                static LINES: LogLimit = LogLimit::new(1);
                if let Some(suppressed) = LINES.admit() {
                    tracing::warn!(listener = %name, suppressed, "connection refused: max_connections reached");
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let context = self.context.clone();
            let switch = switch.clone();
            let shutdown = drain.clone();
            let tls = self.tls.clone();
            tracker.spawn(async move {
                let _permit = permit;
                let label = context.inbound.listener.to_string();
                metrics::counter!("isoswitch_connections_accepted_total", "listener" => label.clone()).increment(1);
                metrics::gauge!("isoswitch_connections_open", "listener" => label.clone()).increment(1.0);
                match tls {
                    Some(acceptor) => {
                        // A peer that never finishes its handshake would hold
                        // a connection slot for good: it gets the idle timeout.
                        let handshake = tokio::time::timeout(context.idle_timeout, acceptor.accept(stream));
                        let handshake = tokio::select! {
                            _ = shutdown.cancelled() => None,
                            done = handshake => Some(done),
                        };
                        let failed = |reason: &dyn std::fmt::Display| {
                            metrics::counter!("isoswitch_tls_handshake_failures_total", "listener" => label.clone())
                                .increment(1);
                            static LINES: LogLimit = LogLimit::new(10);
                            if let Some(suppressed) = LINES.admit() {
                                tracing::warn!(listener = %label, %peer, error = %reason, suppressed, "TLS handshake failed");
                            }
                        };
                        match handshake {
                            Some(Ok(Ok(tls_stream))) => connection::serve(tls_stream, context, switch, shutdown).await,
                            Some(Ok(Err(e))) => failed(&e),
                            Some(Err(_)) => failed(&"not completed within the idle timeout"),
                            None => {}
                        }
                    }
                    None => connection::serve(stream, context, switch, shutdown).await,
                }
                metrics::gauge!("isoswitch_connections_open", "listener" => label).decrement(1.0);
            });
        }
        tracker.close();
        tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::config::Config;

    /// Binds listener "pos" on `bind`, with `extra` lines in its table.
    async fn bind_listener(bind: &str, extra: &str) -> Result<Listener, ServerError> {
        let text = format!(
            "[[listener]]\nname = \"pos\"\nbind = \"{bind}\"\n{extra}\n\
             [[issuer]]\nname = \"sim\"\nendpoints = [\"sim\"]\n\
             [[route]]\nname = \"cards\"\nbins = [\"4\"]\nissuer = \"sim\"\n\
             [simulator]\ndefault_response = \"00\"\n"
        );
        let config = Config::from_toml_str(&text, "t.toml").expect("a valid config");
        Listener::bind(&config.listeners[0]).await
    }

    #[tokio::test]
    async fn a_spec_that_does_not_load_is_refused_with_the_spec_error() {
        let error = bind_listener("127.0.0.1:0", "spec = \"/nonexistent/spec.toml\"")
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, ServerError::Spec { .. }), "{error:?}");
        assert!(error.source().is_some_and(|s| s.is::<SpecError>()));
        assert!(
            error
                .to_string()
                .starts_with("listener \"pos\": /nonexistent/spec.toml"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused_with_the_os_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let address = taken.local_addr().expect("bound").to_string();
        let error = bind_listener(&address, "").await.err().expect("refused");
        assert!(matches!(error, ServerError::Bind { .. }), "{error:?}");
        assert!(error.source().is_some_and(|s| s.is::<std::io::Error>()));
    }
}
