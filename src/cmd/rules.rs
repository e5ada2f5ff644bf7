//! `rules check` and `rules test`: for QA teams writing risk rules. `check`
//! compiles a config's `[risk]` section (hotlists included) and lists the rules
//! in evaluation order; `test` runs requests from stdin through the same
//! evaluation the switch uses, with fresh state, and prints each decision.
//! Nothing is sent anywhere.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::iso8583::fields::mask_pan;
use isoswitch::iso8583::json;
use isoswitch::risk::{Decision, Hit, RiskContext, RiskRules, RiskState, Timestamp};
use serde_json::{json, Map, Value};

#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate the risk rules of a config and print them in evaluation order.
    Check {
        /// Switch config (TOML); only [risk] and the listener names are used.
        /// Without it, the embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Evaluate requests (JSON, one or more documents on stdin) and print one
    /// decision per request as a JSON line. State starts empty and carries from
    /// one request to the next, so velocity and duplicate rules can be tried;
    /// every request the rules pass counts as approved by the issuer.
    ///
    /// A document is the `parse`/`build` JSON form, {"mti":…,"fields":{…}},
    /// optionally with "at" (UTC time, 2026-11-23T18:41:05Z) and "listener"
    /// or "channel", which override the options for that request.
    Test {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The channel requests arrive on (ignored with --listener).
        #[arg(long, value_enum, default_value = "pos")]
        channel: ChannelArg,
        /// A listener from the config: its name and channel.
        #[arg(long)]
        listener: Option<String>,
        /// Spec that says which fields are binary (hex in JSON).
        #[arg(long, default_value = "iso87ascii")]
        spec: PathBuf,
        /// The time to evaluate at, UTC (2026-11-23T18:41:05Z); default now.
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ChannelArg {
    Pos,
    VirtualTerminal,
    Host,
}

impl From<ChannelArg> for Channel {
    fn from(arg: ChannelArg) -> Channel {
        match arg {
            ChannelArg::Pos => Channel::Pos,
            ChannelArg::VirtualTerminal => Channel::VirtualTerminal,
            ChannelArg::Host => Channel::Host,
        }
    }
}

pub fn run(command: RulesCommand) -> Result<()> {
    match command {
        RulesCommand::Check { config } => check(config),
        RulesCommand::Test {
            config,
            channel,
            listener,
            spec,
            now,
        } => test(config, channel.into(), listener, spec, now),
    }
}

fn load(path: Option<&PathBuf>) -> Result<(Config, String, RiskRules)> {
    let config = super::serve::load_config(path)?;
    let origin = path.map_or_else(
        || isoswitch::config::EMBEDDED_ORIGIN.to_owned(),
        |p| p.display().to_string(),
    );
    let rules =
        RiskRules::compile(&config.risk, &RiskState::new()).with_context(|| origin.clone())?;
    Ok((config, origin, rules))
}

fn check(path: Option<PathBuf>) -> Result<()> {
    let (_, origin, rules) = load(path.as_ref())?;
    let summaries = rules.summaries();
    let shadow = summaries
        .iter()
        .filter(|s| s.mode == isoswitch::risk::Mode::Shadow)
        .count();
    let mut out = format!(
        "{origin}: {} rules ({} enforce, {shadow} shadow), in evaluation order:\n",
        summaries.len(),
        summaries.len() - shadow
    );
    let rows: Vec<[String; 6]> = summaries
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let codes: Vec<&str> = s.codes.iter().map(|c| c.as_str()).collect();
            [
                format!("{}", i + 1),
                s.name.clone(),
                s.kind.to_owned(),
                s.mode.to_string(),
                codes.join(","),
                s.applies_to.clone(),
            ]
        })
        .collect();
    let header = ["#", "rule", "kind", "mode", "codes", "applies to"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 6]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    out.push_str(&line(&header));
    out.push('\n');
    for (row, summary) in rows.iter().zip(summaries) {
        out.push_str(&line(row));
        out.push_str(&format!(
            "\n{:indent$}{}\n",
            "",
            summary.detail,
            indent = widths[0] + 2
        ));
    }
    super::stdout::print(out)?;
    Ok(())
}

fn test(
    path: Option<PathBuf>,
    channel: Channel,
    listener: Option<String>,
    spec: PathBuf,
    now: Option<String>,
) -> Result<()> {
    let (config, _, rules) = load(path.as_ref())?;
    let spec = isoswitch::specs::resolve(&spec)?;
    let fixed_now = match &now {
        Some(text) => Some(Timestamp::parse_utc(text).with_context(|| {
            format!("--now: expected a UTC time like 2026-11-23T18:41:05Z, found {text:?}")
        })?),
        None => None,
    };
    let default_context = match &listener {
        Some(name) => context_of_listener(&config, name).context("--listener")?,
        None => (channel, channel.as_str().to_owned()),
    };
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading stdin")?;
    let mut count = 0usize;
    for (index, document) in serde_json::Deserializer::from_str(&input)
        .into_iter::<Value>()
        .enumerate()
    {
        let number = index + 1;
        let document = document.with_context(|| format!("request {number}: invalid JSON"))?;
        let Value::Object(mut object) = document else {
            bail!("request {number}: expected a JSON object with \"mti\" and \"fields\"");
        };
        let at = take_string(&mut object, "at", number)?
            .map(|text| {
                Timestamp::parse_utc(&text).with_context(|| {
                    format!("request {number}: \"at\": expected a UTC time like 2026-11-23T18:41:05Z, found {text:?}")
                })
            })
            .transpose()?;
        let listener = take_string(&mut object, "listener", number)?;
        let channel = take_string(&mut object, "channel", number)?;
        let (channel, listener_name) = match (listener, channel) {
            (Some(name), _) => context_of_listener(&config, &name)
                .with_context(|| format!("request {number}: \"listener\""))?,
            (None, Some(text)) => {
                let channel = channel_named(&text)
                    .with_context(|| format!("request {number}: \"channel\""))?;
                (channel, channel.as_str().to_owned())
            }
            (None, None) => default_context.clone(),
        };
        let message = json::from_json(&spec, &Value::Object(object))
            .with_context(|| format!("request {number}"))?;
        let now = at.or(fixed_now).unwrap_or_else(Timestamp::now);
        let ctx = RiskContext {
            channel,
            listener: &listener_name,
        };
        let decision = rules.evaluate(&ctx, &message, now);
        if !decision.is_declined() {
            rules.record_approval(&message, now);
        }
        let pan = message.get_str(2).map(mask_pan);
        super::stdout::println(report(number, &message, pan, now, &ctx, &decision))?;
        count += 1;
    }
    if count == 0 {
        bail!("stdin: expected one or more JSON requests, found none");
    }
    Ok(())
}

/// Removes `key` from a request document; it must be a string if present.
fn take_string(
    object: &mut Map<String, Value>,
    key: &str,
    number: usize,
) -> Result<Option<String>> {
    match object.remove(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => bail!("request {number}: {key:?}: expected a string, found {other}"),
    }
}

fn channel_named(text: &str) -> Result<Channel> {
    match text {
        "pos" => Ok(Channel::Pos),
        "virtual-terminal" => Ok(Channel::VirtualTerminal),
        "host" => Ok(Channel::Host),
        other => bail!("expected pos, virtual-terminal or host, found {other:?}"),
    }
}

fn context_of_listener(config: &Config, name: &str) -> Result<(Channel, String)> {
    match config.listeners.iter().find(|l| l.name == name) {
        Some(listener) => Ok((listener.channel, listener.name.clone())),
        None => {
            let known: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
            bail!(
                "listener {name:?} is not in the config (it has: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

fn hit_json(hit: &Hit<'_>) -> Value {
    json!({
        "rule": hit.rule,
        "kind": hit.kind,
        "response_code": hit.response_code.as_str(),
        "mode": hit.mode.as_str(),
    })
}

/// One output line: the request, the decision, the rule that declined and
/// the shadow rules that would have.
fn report(
    number: usize,
    message: &isoswitch::iso8583::Message,
    pan: Option<String>,
    now: Timestamp,
    ctx: &RiskContext<'_>,
    decision: &Decision<'_>,
) -> Value {
    let mut out = Map::new();
    out.insert("request".into(), json!(number));
    out.insert("mti".into(), json!(message.mti().to_string()));
    out.insert("pan".into(), json!(pan));
    out.insert("at".into(), json!(now.to_string()));
    out.insert("channel".into(), json!(ctx.channel.as_str()));
    out.insert("listener".into(), json!(ctx.listener));
    match &decision.decline {
        Some(hit) => {
            out.insert("decision".into(), json!("decline"));
            out.insert("response_code".into(), json!(hit.response_code.as_str()));
            out.insert("meaning".into(), json!(hit.response_code.meaning()));
            out.insert("rule".into(), json!(hit.rule));
            out.insert("kind".into(), json!(hit.kind));
        }
        None => {
            out.insert("decision".into(), json!("pass"));
        }
    }
    out.insert(
        "shadow".into(),
        Value::Array(decision.shadow.iter().map(hit_json).collect()),
    );
    Value::Object(out)
}
