//! `isoswitch serve`: the switch, its listeners and the metrics endpoint, with
//! SIGHUP reload and a graceful SIGTERM/Ctrl-C shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use isoswitch::config::{Config, InstanceConfig};
use isoswitch::journal::config::{JournalConfig, KeySource};
use isoswitch::journal::{PgJournal, PgOptions, SqliteJournal, SqliteOptions, Stores};
use isoswitch::metrics_http::{self, OpsState};
use isoswitch::server::{Listener, PreparedListener};
use isoswitch::switch::Switch;
use isoswitch::upstream::SafSettings;
use isoswitch::vt::auth::verify_password;
use isoswitch::vt::{BoundVt, VtStores, DEMO_PASSWORD, DEMO_USERNAME};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without it the embedded default runs: a POS listener
    /// on 127.0.0.1:8583 and the issuer simulator in process.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log lines for people (text) or machines (json); level from RUST_LOG.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: super::LogFormat,
    /// Runtime worker threads; 1 runs the switch on one thread. 0 (the
    /// default): one per core, or one on a machine with two cores or fewer.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// The journal database, instead of [journal].path (default isoswitch.db
    /// in the current directory, or beside the config file).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// How long shutdown waits for in-flight transactions.
const DRAIN: Duration = Duration::from_secs(10);
/// How long the stopped issuers get to report what they leave undelivered.
const STOP_REPORT: Duration = Duration::from_secs(1);

pub fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    })
}

pub fn run(args: ServeArgs) -> Result<()> {
    let _flush_logs_on_exit = super::init_logging(args.log_format);
    super::prefer_small_pages();
    let runtime = super::runtime(args.worker_threads)?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<()> {
    // The whole config is checked before any port is taken, so a typo in a
    // listener's spec is not reported as "address in use" by a second try.
    let mut config = load_config(args.config.as_ref())?;
    if let Some(db) = &args.db {
        config.journal.path = db.clone();
    }
    let prepared = config
        .listeners
        .iter()
        .map(Listener::prepare)
        .collect::<Result<Vec<_>, _>>()?;
    isoswitch::metrics_http::recorder();
    let shutdown = CancellationToken::new();
    let admin_token = config.admin.token.clone();
    if config.journal.url.is_some() && config.virtual_terminal.is_some() {
        bail!(
            "[virtual_terminal] with [journal] url: the virtual terminal keeps cards on file, \
             schedules and idempotency keys in the SQLite journal only; PostgreSQL does not hold \
             them yet, so run the virtual terminal on an instance with a SQLite journal"
        );
    }
    let (stores, vt_stores) = open_journal(&config.journal, &config.instance).await?;
    let saf_settings = SafSettings::from(&config.store_and_forward);
    // Starting the switch builds routes, issuers and risk rules: the rest of
    // the check. Its issuer links connecting out take no port of ours.
    let switch = Switch::start_with(config, stores, saf_settings, shutdown.clone())?;
    // Before any terminal is served: what a crash left forwarded and
    // unanswered is reversed.
    let in_doubt = switch
        .reverse_in_doubt(i64::MAX)
        .await
        .context("in-doubt recovery: reading the journal")?;
    if in_doubt > 0 {
        tracing::warn!(
            in_doubt,
            "reversals queued for requests a previous run left unanswered"
        );
    }
    let Bound {
        metrics,
        admin,
        listeners,
    } = bind_all(&switch.snapshot().config, prepared).await?;
    let virtual_terminal = match &switch.snapshot().config.virtual_terminal {
        Some(vt) => Some(BoundVt::bind(vt, switch.clone(), vt_stores).await?),
        None => None,
    };
    tokio::spawn(metrics_upkeep(shutdown.clone()));
    let ops = OpsState::new(switch.clone(), args.config.clone(), admin_token);
    ops.listeners_bound.store(true, Ordering::Release);

    let mut ops_router = metrics_http::metrics_routes(ops.clone());
    match admin {
        Some(admin) => {
            tracing::info!(addr = %admin.local_addr()?, "admin endpoints on /admin/*");
            tokio::spawn(metrics_http::serve(
                admin,
                metrics_http::admin_routes(ops.clone()),
                shutdown.clone(),
            ));
        }
        None => ops_router = ops_router.merge(metrics_http::admin_routes(ops.clone())),
    }
    tracing::info!(addr = %metrics.local_addr()?, "metrics on /metrics, health on /healthz and /readyz");
    tokio::spawn(metrics_http::serve(metrics, ops_router, shutdown.clone()));
    let stop_accepting = CancellationToken::new();
    let drain_terminals = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    for listener in listeners {
        tracing::info!(listener = listener.name(), addr = %listener.local_addr()?, "listening");
        running.spawn(listener.run_in_stages(
            switch.clone(),
            stop_accepting.clone(),
            drain_terminals.clone(),
        ));
    }
    if let Some(vt) = virtual_terminal {
        announce(&vt, &switch.snapshot().config);
        // Like a terminal listener: stops taking requests at the first stage.
        let stop = stop_accepting.clone();
        running.spawn(async move {
            if let Err(e) = vt.run(stop).await {
                tracing::error!(error = %e, "virtual terminal stopped");
            }
        });
    }
    wait_for_signals(&switch, args.config.as_ref()).await?;
    stop_in_stages(&switch, running, &stop_accepting, &drain_terminals).await;
    // stop_issuers cancelled the switch's token, the one the metrics and admin
    // endpoints share: they answered during the drain and stop now.
    shutdown.cancel();
    Ok(())
}

/// Stops the switch in stages, each with its own signal, all within [`DRAIN`]:
/// stop accepting → drain terminal connections → drain issuer links (their
/// timeouts queue reversals) → flush store-and-forward → stop the issuers.
async fn stop_in_stages(
    switch: &Switch,
    mut running: tokio::task::JoinSet<()>,
    stop_accepting: &CancellationToken,
    drain_terminals: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    tracing::info!("shutting down: no new connections, finishing in-flight transactions");
    stop_accepting.cancel();
    drain_terminals.cancel();
    let terminals = tokio::time::timeout_at(deadline, async {
        while running.join_next().await.is_some() {}
    });
    if terminals.await.is_err() {
        tracing::warn!("in-flight transactions still running after {DRAIN:?}; exiting");
    }
    if !switch.drain_issuer_links(deadline).await {
        tracing::warn!("requests still outstanding at issuers after {DRAIN:?}; exiting");
    }
    if !switch.flush_store_and_forward(deadline).await {
        tracing::warn!("store-and-forward not flushed within {DRAIN:?}; exiting");
    }
    // Each issuer's store-and-forward logs what it leaves, masked, as it stops;
    // that takes a moment, bounded in case a task is stuck.
    if tokio::time::timeout(STOP_REPORT, switch.stop_issuers())
        .await
        .is_err()
    {
        tracing::warn!("issuers did not stop within {STOP_REPORT:?}; exiting");
    }
    tracing::info!("stopped");
}

/// Says where the virtual terminal is, and the demo login when the demo
/// operator of the embedded default is configured with its password.
fn announce(vt: &BoundVt, config: &Config) {
    let url = vt.url();
    let demo = config.virtual_terminal.as_ref().and_then(|c| {
        c.operators.iter().find(|o| {
            o.username == DEMO_USERNAME && verify_password(DEMO_PASSWORD, &o.password_hash)
        })
    });
    let addr = vt.local_addr().map(|a| a.to_string()).unwrap_or_default();
    match demo {
        Some(_) => tracing::info!(
            addr,
            "virtual terminal on {url} (demo login: {DEMO_USERNAME} / {DEMO_PASSWORD})"
        ),
        None => tracing::info!(addr, "virtual terminal on {url}"),
    }
}

/// Opens the configured journal: PostgreSQL when `url` is set, else SQLite,
/// or memory for `durability = "none"`, with what the virtual terminal keeps
/// (idempotency keys, cards on file, schedules) in the same SQLite store.
/// Says at start-up where it journals and where the key came from.
async fn open_journal(
    config: &JournalConfig,
    instance: &InstanceConfig,
) -> Result<(Stores, VtStores)> {
    let Some(durability) = config.durability.durability() else {
        tracing::warn!(
            "journal off (durability = \"none\"): transactions and queued reversals are kept in memory only and lost on restart"
        );
        return Ok((Stores::in_memory(), VtStores::in_memory()));
    };
    if let Some(url) = &config.url {
        // serve refuses the virtual terminal with PostgreSQL: nothing uses these.
        let stores = open_postgres(url, config, instance, durability).await?;
        return Ok((stores, VtStores::in_memory()));
    }
    let (key, source) = config.load_key().context("journal data key")?;
    match &source {
        KeySource::Created(_) => tracing::warn!("journal data key: {source}"),
        _ => tracing::info!("journal data key: {source}"),
    }
    let mut options = SqliteOptions::new(&config.path, key);
    options.durability = durability;
    let journal = Arc::new(SqliteJournal::open(options)?);
    tracing::info!(
        path = %config.path.display(),
        durability = %config.durability,
        "journaling transactions and the store-and-forward queue"
    );
    Ok((
        Stores::new(journal.clone(), true),
        VtStores::sqlite(journal),
    ))
}

/// The shared journal. Its key must be the one every other instance uses,
/// so one is never generated here.
async fn open_postgres(
    url: &str,
    config: &JournalConfig,
    instance: &InstanceConfig,
    durability: isoswitch::journal::Durability,
) -> Result<Stores> {
    if std::env::var_os(isoswitch::journal::config::KEY_ENV).is_none() && config.key_file.is_none()
    {
        bail!(
            "[journal] url: instances sharing a database need the same data key: set {} or \
             [journal] key_file",
            isoswitch::journal::config::KEY_ENV
        );
    }
    let (key, source) = config.load_key().context("journal data key")?;
    tracing::info!("journal data key: {source}");
    let id = instance.id.clone().unwrap_or_default();
    let mut options = PgOptions::new(url, key, id.clone());
    options.durability = durability;
    options.heartbeat = Duration::from_secs(instance.heartbeat_s);
    options.dead_after = Duration::from_secs(instance.dead_after_s);
    options.lease = Duration::from_secs(instance.lease_s);
    let journal = PgJournal::open(options).await?;
    tracing::info!(
        database = %journal.name(),
        instance = %id,
        durability = %config.durability,
        "journaling transactions and the store-and-forward queue in PostgreSQL"
    );
    Ok(Stores::new(std::sync::Arc::new(journal), true))
}

/// Every socket `serve` listens on.
struct Bound {
    metrics: TcpListener,
    admin: Option<TcpListener>,
    listeners: Vec<Listener>,
}

/// Binds every configured address; when some fail, the error names each one.
async fn bind_all(config: &Config, prepared: Vec<PreparedListener>) -> Result<Bound> {
    let mut failed = Vec::new();
    let mut bind = |role: &str, addr: SocketAddr, result: std::io::Result<TcpListener>| {
        result
            .map_err(|e| failed.push(format!("{role}: cannot bind {addr}: {e}")))
            .ok()
    };
    let metrics_addr = config.metrics.bind;
    let metrics = bind(
        "metrics",
        metrics_addr,
        TcpListener::bind(metrics_addr).await,
    );
    let admin = match config.admin.bind {
        Some(addr) => bind("admin", addr, TcpListener::bind(addr).await),
        None => None,
    };
    let mut listeners = Vec::new();
    for listener in prepared {
        match listener.bind().await {
            Ok(listener) => listeners.push(listener),
            Err(e) => failed.push(super::error_line(&e)),
        }
    }
    match metrics {
        Some(metrics) if failed.is_empty() => Ok(Bound {
            metrics,
            admin,
            listeners,
        }),
        _ if failed.len() == 1 => bail!("{}", failed[0]),
        _ => bail!(
            "cannot bind {} addresses: {}",
            failed.len(),
            failed.join("; ")
        ),
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(1);

/// The Prometheus recorder keeps every histogram sample (two per
/// transaction) until an upkeep folds them into buckets; without it memory
/// grows with traffic between scrapes, and without scrapes for ever. Runs on a
/// blocking thread: a second of samples at full load takes a moment to fold.
async fn metrics_upkeep(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let _ = tokio::task::spawn_blocking(|| isoswitch::metrics_http::recorder().run_upkeep()).await;
            }
        }
    }
}

/// Until SIGTERM or Ctrl-C; SIGHUP reloads the config file.
async fn wait_for_signals(switch: &Arc<Switch>, path: Option<&PathBuf>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                // reload_from logs and counts the outcome; a refusal keeps the old config.
                let _ = switch.reload_from(path.map(PathBuf::as_path)).await;
            }
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
