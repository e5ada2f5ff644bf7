//! `isoswitch issuer-sim`: the issuer simulator alone, as a TCP issuer host.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct IssuerSimArgs {
    /// Config file whose [simulator] section to run (default: the embedded one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen here instead of [simulator].bind.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Append one JSON line per message received (and what was done with it)
    /// to this file, instead of [simulator].record.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: super::LogFormat,
    /// Runtime worker threads; 1 runs the simulator on one thread. 0 (the
    /// default): one per core, or one on a machine with two cores or fewer.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
}

pub fn run(args: IssuerSimArgs) -> Result<()> {
    let _flush_logs_on_exit = super::init_logging(args.log_format);
    super::prefer_small_pages();
    let config = super::serve::load_config(args.config.as_ref())?;
    let mut sim = config
        .simulator
        .context("the config has no [simulator] section")?;
    if let Some(bind) = args.bind {
        sim.bind = bind;
    }
    if let Some(record) = args.record {
        sim.record = Some(record);
    }
    let runtime = super::runtime(args.worker_threads)?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (addr, task) = isoswitch::simulator::bind_and_serve(&sim, shutdown.clone()).await?;
        tracing::info!(%addr, "issuer simulator listening");
        eprintln!("issuer simulator listening on {addr}");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        shutdown.cancel();
        let _ = task.await;
        Ok(())
    })
}
