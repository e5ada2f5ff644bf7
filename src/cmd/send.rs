//! `isoswitch send`: one message from JSON to a switch or issuer host, the
//! response printed as JSON. Exits non-zero on timeout or connection error.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use isoswitch::frame::{Frame, FrameCodec, Tpdu};
use isoswitch::iso8583::{json, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

#[derive(clap::Args)]
pub struct SendArgs {
    /// HOST:PORT of the switch listener or issuer host.
    #[arg(long)]
    pub to: String,
    /// Spec file, or a built-in spec name such as `iso87ascii`.
    #[arg(long, default_value = "iso87ascii")]
    pub spec: PathBuf,
    /// Length header: 2b, 4b, 2a or 4a.
    #[arg(long, default_value = "2b")]
    pub header: String,
    /// The length counts the header itself.
    #[arg(long)]
    pub header_includes_self: bool,
    /// A 5-byte TPDU as 10 hex characters, e.g. 6000010000.
    #[arg(long)]
    pub tpdu: Option<String>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Name to check the server certificate against (default: the host of --to).
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// The message as JSON; read from stdin when absent.
    #[arg(long)]
    pub json: Option<String>,
    /// How long to wait for the response.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

pub fn run(args: SendArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(send(args))
}

async fn send(args: SendArgs) -> Result<()> {
    let spec = isoswitch::specs::resolve(&args.spec)?;
    let text = match &args.json {
        Some(t) => t.clone(),
        None => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .context("reading stdin")?;
            t
        }
    };
    let request = json::from_json_str(&spec, &text)?;
    let payload = request.encode(&spec)?;
    let tpdu = match &args.tpdu {
        Some(t) => Some(
            t.parse::<Tpdu>()
                .map_err(|e| anyhow::anyhow!("--tpdu: {e}"))?,
        ),
        None => None,
    };
    let frame_config =
        isoswitch::server::frame_config(&args.header, args.header_includes_self, tpdu.is_some())
            .map_err(|e| anyhow::anyhow!("--header: {e}"))?;
    let frame = Frame {
        tpdu,
        payload: payload.into(),
    };
    let limit = Duration::from_millis(args.timeout_ms);
    let tcp = tokio::time::timeout(limit, TcpStream::connect(&args.to))
        .await
        .with_context(|| format!("connecting to {}: timed out", args.to))?
        .with_context(|| format!("connecting to {}", args.to))?;
    let _ = tcp.set_nodelay(true);
    let codec = FrameCodec::new(frame_config);
    let response = match &args.tls_ca {
        Some(ca) => {
            let connector = isoswitch::server::tls::connector(ca)?;
            let host = args
                .tls_server_name
                .clone()
                .unwrap_or_else(|| host_of(&args.to).to_string());
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).with_context(|| {
                    format!("--tls-server-name: {host:?} is not a DNS name or IP address")
                })?;
            let tls = tokio::time::timeout(limit, connector.connect(name, tcp))
                .await
                .context("TLS handshake: timed out")?
                .context("TLS handshake")?;
            exchange(Framed::new(tls, codec), frame, limit).await?
        }
        None => exchange(Framed::new(tcp, codec), frame, limit).await?,
    };
    let message = Message::decode(&spec, response.payload)?;
    super::stdout::println(json::to_json(&spec, &message))?;
    Ok(())
}

fn host_of(to: &str) -> &str {
    let host = to.rsplit_once(':').map_or(to, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

async fn exchange<S>(
    mut framed: Framed<S, FrameCodec>,
    frame: Frame,
    limit: Duration,
) -> Result<Frame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed.send(frame).await.context("sending")?;
    match tokio::time::timeout(limit, framed.next()).await {
        Err(_) => bail!("no response within {} ms", limit.as_millis()),
        Ok(None) => bail!("the connection closed before a response arrived"),
        Ok(Some(Err(e))) => bail!("reading the response: {e}"),
        Ok(Some(Ok(frame))) => Ok(frame),
    }
}
