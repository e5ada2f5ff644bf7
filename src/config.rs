//! The switch's TOML configuration: assembles the sections (listeners, issuers,
//! BIN routes, metrics, admin; `[simulator]` and `[risk]` belong to their own
//! modules) and checks how they relate. Parsing is strict (unknown keys are
//! refused by name, values are checked as they are read, so toml reports their
//! line and column); rules that relate items to each other are checked
//! afterwards and name the item at fault.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::channel::Channel;
use crate::config_values::{
    default_header, default_spec, header_kind, optional_socket_addr, socket_addr, ConfigDir,
};
use crate::journal::config::{InvalidSetting, JournalConfig, SafConfig};
use crate::risk::RiskConfig;
use crate::route::{BinPattern, BinTable, BinTableError, StandInConfig};
use crate::settle::{SchemeConfig, SchemeTable, TariffConfig, Tariffs};
use crate::simulator::config::{InvalidSimulator, SimulatorConfig};
pub use crate::tls::{IssuerTls, ListenerTls};
pub use crate::upstream::config::{Endpoint, IssuerConfig, SIMULATOR_ENDPOINT};
use crate::vt_config::{InvalidVirtualTerminal, VirtualTerminalConfig};

/// The configuration used when none is given; also documents the minimal shape.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Origin named in errors about [`DEFAULT_TOML`].
pub const EMBEDDED_ORIGIN: &str = "embedded default";

/// A configuration that could not be used. Every variant names where it came from
/// (a file path or [`EMBEDDED_ORIGIN`]).
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read the config file: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a malformed value.
    #[error("{origin}{}: {message}", position(*line, *column))]
    Parse {
        origin: String,
        /// 1-based, as toml located it.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Well-formed, but inconsistent: `item` is e.g. `route "visa"`.
    #[error("{origin}: {item}: {problem}")]
    Invalid {
        origin: String,
        item: String,
        problem: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(":{line}:{column}"),
        (Some(line), None) => format!(":{line}"),
        _ => String::new(),
    }
}

/// The whole configuration. Build it with [`Config::from_toml_str`], [`Config::load`]
/// or [`Config::embedded_default`]; those validate it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "listener", default)]
    pub listeners: Vec<ListenerConfig>,
    #[serde(rename = "issuer", default)]
    pub issuers: Vec<IssuerConfig>,
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Admin endpoints (`/admin/*`): off unless a bearer token is configured.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Absent unless some issuer uses the `"sim"` endpoint or `isoswitch issuer-sim` runs.
    #[serde(default)]
    pub simulator: Option<SimulatorConfig>,
    /// Risk rules run before routing (`[[risk.rule]]`); see `config/risk-example.toml`.
    #[serde(default)]
    pub risk: RiskConfig,
    /// Where the journal and the store-and-forward queue are kept, and how durably.
    #[serde(default)]
    pub journal: JournalConfig,
    /// How queued reversals and advices are retried.
    #[serde(default)]
    pub store_and_forward: SafConfig,
    /// What tells this switch instance apart from others serving the same issuers.
    #[serde(default)]
    pub instance: InstanceConfig,
    /// What a refund may refund.
    #[serde(default)]
    pub refunds: RefundsConfig,
    /// What the acquirer charges per scheme and operation (`journal settle`).
    #[serde(rename = "tariff", default)]
    pub tariffs: Vec<TariffConfig>,
    /// BIN ranges of card schemes, replacing or adding to the built-in ones.
    #[serde(rename = "scheme", default)]
    pub schemes: Vec<SchemeConfig>,
    /// The web virtual terminal; served by `serve` when present.
    #[serde(default)]
    pub virtual_terminal: Option<VirtualTerminalConfig>,
}

/// `[instance]`: each switch sharing issuers with others needs its own
/// `rrn_digit` (0–9), the first digit of the RRNs it generates, so theirs
/// never collide. Instances sharing a PostgreSQL journal (`[journal] url`)
/// each need their own `id`; the timings say when one is taken for dead and
/// how long a queue item it took stays its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    #[serde(default)]
    pub rrn_digit: u8,
    /// Unique among the instances sharing a database ("switch-a").
    #[serde(default)]
    pub id: Option<String>,
    /// How often this instance's heartbeat row is written.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// An instance whose heartbeat is older than this is dead: a survivor
    /// reverses its forwarded requests left unanswered.
    #[serde(default = "default_dead_after_s")]
    pub dead_after_s: u64,
    /// How long a queue item this instance took stays its own before
    /// another may take it (at least until the item's next attempt is due).
    #[serde(default = "default_lease_s")]
    pub lease_s: u64,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        InstanceConfig {
            rrn_digit: 0,
            id: None,
            heartbeat_s: default_heartbeat_s(),
            dead_after_s: default_dead_after_s(),
            lease_s: default_lease_s(),
        }
    }
}

fn default_heartbeat_s() -> u64 {
    2
}
fn default_dead_after_s() -> u64 {
    15
}
fn default_lease_s() -> u64 {
    30
}

/// Where terminals (or acquiring hosts) connect to the switch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    #[serde(default = "default_channel")]
    pub channel: Channel,
    #[serde(default = "default_spec")]
    pub spec: PathBuf,
    /// One of [`HEADER_KINDS`](crate::config_values::HEADER_KINDS); see [`ListenerConfig::header`].
    #[serde(default = "default_header", deserialize_with = "header_kind")]
    pub header: String,
    /// Whether the length in the header counts the header's own bytes.
    #[serde(default)]
    pub header_includes_self: bool,
    /// A 5-byte TPDU follows the length header.
    #[serde(default)]
    pub tpdu: bool,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// The field of a 0500 that carries the batch (shift) number.
    #[serde(default = "default_batch_field")]
    pub batch_field: u8,
    /// How a refund names its original sale: `"rrn"` (field 37, the
    /// original's RRN) or `"field90"` (its STAN and transmission time).
    #[serde(default)]
    pub refund_original: RefundOriginal,
}

/// `refund_original`: where a refund's original is named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefundOriginal {
    /// Field 37 holds the original sale's RRN.
    #[default]
    Rrn,
    /// Field 90 holds the original's STAN and transmission time.
    Field90,
}

/// `[refunds]`: what a refund may refund.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundsConfig {
    /// An original older than this many days is not refunded (13).
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u32,
}

impl Default for RefundsConfig {
    fn default() -> Self {
        RefundsConfig {
            max_age_days: default_max_age_days(),
        }
    }
}

impl ListenerConfig {
    /// The length-header kind, one of [`HEADER_KINDS`](crate::config_values::HEADER_KINDS).
    pub fn header(&self) -> &str {
        &self.header
    }
}

/// Sends cards whose BIN matches one of `bins` to `issuer`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// Prefixes ("4") or equal-length ranges ("510000-559999"); most specific wins
    /// across all routes.
    pub bins: Vec<BinPattern>,
    pub issuer: String,
    /// What the switch may approve itself when the issuer cannot be reached;
    /// absent, it never stands in and the terminal gets 91.
    #[serde(default)]
    pub stand_in: Option<StandInConfig>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "default_metrics_bind", deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: default_metrics_bind(),
        }
    }
}

/// `/admin/routes`, `/admin/issuers` and `POST /admin/reload`. They answer only
/// requests carrying `Authorization: Bearer <token>`; without a token configured
/// they are off. `bind` puts them on their own address instead of the metrics one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default, deserialize_with = "optional_socket_addr")]
    pub bind: Option<SocketAddr>,
    #[serde(default)]
    pub token: Option<String>,
}

// ---- explicit defaults ----

fn default_channel() -> Channel {
    Channel::Pos
}
fn default_max_connections() -> u32 {
    10_000
}
fn default_idle_timeout_s() -> u64 {
    300
}
fn default_batch_field() -> u8 {
    60
}
fn default_max_age_days() -> u32 {
    90
}
fn default_metrics_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9583))
}

// ---- loading and cross-item validation ----

/// One consistency problem, before the origin is attached.
struct Problem {
    item: String,
    problem: String,
}

fn problem(item: impl Into<String>, problem: impl Into<String>) -> Problem {
    Problem {
        item: item.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Parses and validates `text`; `origin` (a path, or [`EMBEDDED_ORIGIN`]) is named in errors.
    /// Relative paths in it stay relative to the working directory; [`Config::load`]
    /// makes them relative to the file instead.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse(text, origin, None)
    }

    /// Reads, parses and validates the file at `path`. Relative paths in it (specs,
    /// certificates, hotlists) are taken from the file's directory, as users expect.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Config::parse(&text, &origin, Some(ConfigDir(dir)))
    }

    fn parse(text: &str, origin: &str, dir: Option<ConfigDir<'_>>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| {
            let (line, column) = match error.span() {
                Some(span) => {
                    let (line, column) = crate::iso8583::spec::line_and_column(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                origin: origin.to_owned(),
                line,
                column,
                // toml's own messages may span lines; keep ours on one.
                message: error.message().trim().replace('\n', "; "),
            }
        })?;
        if let Some(dir) = dir {
            config.resolve_paths(dir);
        }
        config
            .validate()
            .map_err(|Problem { item, problem }| ConfigError::Invalid {
                origin: origin.to_owned(),
                item,
                problem,
            })?;
        Ok(config)
    }

    /// Every path of every section, made relative to the config file's directory.
    fn resolve_paths(&mut self, dir: ConfigDir<'_>) {
        for listener in &mut self.listeners {
            dir.resolve_spec(&mut listener.spec);
            if let Some(tls) = &mut listener.tls {
                dir.resolve(&mut tls.cert);
                dir.resolve(&mut tls.key);
                dir.resolve_optional(&mut tls.client_ca);
            }
        }
        for issuer in &mut self.issuers {
            dir.resolve_spec(&mut issuer.spec);
            if let Some(tls) = &mut issuer.tls {
                dir.resolve(&mut tls.ca);
                dir.resolve_optional(&mut tls.cert);
                dir.resolve_optional(&mut tls.key);
            }
        }
        if let Some(simulator) = &mut self.simulator {
            simulator.resolve_paths(dir);
        }
        self.risk.resolve_paths(dir);
        self.journal.resolve_paths(dir);
        if let Some(vt) = &mut self.virtual_terminal {
            vt.resolve_paths(dir);
        }
    }

    /// The built-in configuration ([`DEFAULT_TOML`]): one POS listener routing every
    /// card to the in-process simulator.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml_str(DEFAULT_TOML, EMBEDDED_ORIGIN)
    }

    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.iter().find(|issuer| issuer.name == name)
    }

    /// Every route's BINs in one table; values are indices into `self.routes`.
    pub fn route_table(&self) -> Result<BinTable<usize>, BinTableError> {
        BinTable::build(self.route_entries())
    }

    fn route_entries(&self) -> Vec<(BinPattern, usize)> {
        self.routes
            .iter()
            .enumerate()
            .flat_map(|(index, route)| route.bins.iter().map(move |bin| (bin.clone(), index)))
            .collect()
    }

    fn validate(&self) -> Result<(), Problem> {
        if self.journal.url.is_some()
            && self
                .instance
                .id
                .as_deref()
                .map_or(true, |id| id.trim().is_empty())
        {
            return Err(problem(
                "instance.id",
                "expected a name unique among the instances sharing the database, found none \
                 ([journal] url is set)",
            ));
        }
        if self.instance.heartbeat_s == 0 {
            return Err(problem("instance.heartbeat_s", "expected > 0, found 0"));
        }
        if self.instance.dead_after_s < self.instance.heartbeat_s.saturating_mul(3) {
            return Err(problem(
                "instance.dead_after_s",
                format!(
                    "expected at least 3 heartbeats ({} s), found {}",
                    self.instance.heartbeat_s.saturating_mul(3),
                    self.instance.dead_after_s
                ),
            ));
        }
        if self.instance.lease_s == 0 {
            return Err(problem("instance.lease_s", "expected > 0, found 0"));
        }
        if self.instance.rrn_digit > 9 {
            return Err(problem(
                "instance.rrn_digit",
                format!("expected a digit 0-9, found {}", self.instance.rrn_digit),
            ));
        }
        check_unique_names("listener", self.listeners.iter().map(|l| l.name.as_str()))?;
        check_unique_names("issuer", self.issuers.iter().map(|i| i.name.as_str()))?;
        check_unique_names("route", self.routes.iter().map(|r| r.name.as_str()))?;
        for listener in &self.listeners {
            validate_listener(listener)?;
        }
        for issuer in &self.issuers {
            self.validate_issuer(issuer)?;
        }
        self.validate_routes()?;
        self.validate_binds()?;
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            // An empty token would let in anyone who sends "Bearer " and nothing.
            return Err(problem(
                "admin",
                "expected a non-empty token (leave token out to turn the admin endpoints off)",
            ));
        }
        if let Some(simulator) = &self.simulator {
            simulator
                .validate()
                .map_err(|InvalidSimulator { item, problem }| Problem { item, problem })?;
        }
        self.risk
            .validate(self.listeners.iter().map(|l| l.name.as_str()))
            .map_err(|e| {
                problem(
                    format!("risk rule {:?}", e.rule),
                    format!("{}: {}", e.key, e.problem),
                )
            })?;
        SchemeTable::build(&self.schemes).map_err(|p| problem("[[scheme]]", p))?;
        Tariffs::build(&self.tariffs).map_err(|p| problem("[[tariff]]", p))?;
        self.store_and_forward
            .validate()
            .map_err(|InvalidSetting { key, problem: p }| {
                problem("store_and_forward", format!("{key}: {p}"))
            })?;
        if let Some(vt) = &self.virtual_terminal {
            vt.validate()
                .map_err(|InvalidVirtualTerminal { item, problem }| Problem { item, problem })?;
        }
        Ok(())
    }

    fn validate_issuer(&self, issuer: &IssuerConfig) -> Result<(), Problem> {
        let item = format!("issuer {:?}", issuer.name);
        if issuer.endpoints.is_empty() {
            return Err(problem(item, "expected at least one endpoint, found none"));
        }
        let mut seen = HashSet::new();
        for endpoint in &issuer.endpoints {
            if !seen.insert(endpoint) {
                return Err(problem(
                    item,
                    format!("endpoint \"{endpoint}\" is listed twice"),
                ));
            }
            if *endpoint == Endpoint::Simulator && self.simulator.is_none() {
                return Err(problem(
                    item,
                    format!(
                        "endpoint \"{SIMULATOR_ENDPOINT}\" needs a [simulator] section, found none"
                    ),
                ));
            }
        }
        if issuer.connections == 0 {
            return Err(problem(item, "expected connections >= 1, found 0"));
        }
        if issuer.timeout_ms == 0 {
            return Err(problem(item, "expected timeout_ms > 0, found 0"));
        }
        if let Some(tls) = &issuer.tls {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(problem(
                    item,
                    "tls: expected both cert and key (mutual TLS) or neither, found only one",
                ));
            }
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), Problem> {
        for route in &self.routes {
            let item = format!("route {:?}", route.name);
            if route.bins.is_empty() {
                return Err(problem(item, "expected at least one bin, found none"));
            }
            if self.issuer(&route.issuer).is_none() {
                return Err(problem(
                    item,
                    format!("issuer {:?} is not defined", route.issuer),
                ));
            }
            if let Some(stand_in) = &route.stand_in {
                stand_in.validate().map_err(|p| problem(item, p))?;
            }
        }
        let entries = self.route_entries();
        BinTable::build(entries.iter().cloned())
            .map(|_table| ())
            .map_err(|error| {
                let (first, first_index, second, second_index, relation) = match error {
                    BinTableError::Ambiguous {
                        first,
                        first_index,
                        second,
                        second_index,
                    } => (
                        first,
                        first_index,
                        second,
                        second_index,
                        "matches exactly the same cards as",
                    ),
                    BinTableError::Overlap {
                        first,
                        first_index,
                        second,
                        second_index,
                    } => (first, first_index, second, second_index, "partly overlaps"),
                };
                let route_of = |entry: usize| &self.routes[entries[entry].1].name;
                problem(
                    format!("route {:?}", route_of(second_index)),
                    format!(
                        "bin \"{second}\" {relation} bin \"{first}\" of route {:?}, so no single \
                     route is the most specific (same-length patterns must be disjoint or nested)",
                        route_of(first_index)
                    ),
                )
            })
    }

    /// Two sockets on one address cannot both bind; port 0 asks the OS for a fresh one.
    fn validate_binds(&self) -> Result<(), Problem> {
        let mut binds: Vec<(String, SocketAddr)> = self
            .listeners
            .iter()
            .map(|listener| (format!("listener {:?}", listener.name), listener.bind))
            .collect();
        binds.push(("metrics".to_owned(), self.metrics.bind));
        if let Some(admin) = self.admin.bind {
            binds.push(("admin".to_owned(), admin));
        }
        if let Some(simulator) = &self.simulator {
            binds.push(("simulator".to_owned(), simulator.bind));
        }
        if let Some(vt) = &self.virtual_terminal {
            binds.push(("virtual_terminal".to_owned(), vt.bind));
        }
        let mut owners: HashMap<SocketAddr, &str> = HashMap::new();
        for (item, bind) in &binds {
            if bind.port() == 0 {
                continue;
            }
            if let Some(owner) = owners.insert(*bind, item) {
                return Err(problem(
                    item.as_str(),
                    format!("bind address {bind} is already used by {owner}"),
                ));
            }
        }
        Ok(())
    }
}

fn check_unique_names<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Result<(), Problem> {
    let mut seen = HashSet::new();
    for name in names {
        let item = format!("{kind} {name:?}");
        // Names become metric labels and log fields.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(problem(
                item,
                "expected a name of letters, digits, '-' or '_'",
            ));
        }
        if !seen.insert(name) {
            return Err(problem(item, format!("the name is used by another {kind}")));
        }
    }
    Ok(())
}

fn validate_listener(listener: &ListenerConfig) -> Result<(), Problem> {
    let item = format!("listener {:?}", listener.name);
    if listener.max_connections == 0 {
        return Err(problem(item, "expected max_connections >= 1, found 0"));
    }
    if listener.idle_timeout_s == 0 {
        return Err(problem(item, "expected idle_timeout_s > 0, found 0"));
    }
    if !(2..=128).contains(&listener.batch_field) {
        return Err(problem(
            item,
            format!(
                "batch_field: expected a data field 2-128, found {}",
                listener.batch_field
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::config::SimResponse;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml")
    }

    fn error_of(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    const MINIMAL: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:8583"

[[issuer]]
name = "visa"
endpoints = ["127.0.0.1:9100"]

[[route]]
name = "visa"
bins = ["4"]
issuer = "visa"
"#;

    #[test]
    fn a_shared_journal_needs_an_instance_id_and_sane_timings() {
        let shared = format!(
            "{MINIMAL}\n[journal]\nurl = \"postgresql://switch@127.0.0.1:5432/isoswitch\"\n"
        );
        let error = error_of(&shared);
        assert!(error.contains("instance.id"), "{error}");
        assert!(
            error.contains("found none ([journal] url is set)"),
            "{error}"
        );
        let named = format!("{shared}\n[instance]\nid = \"switch-a\"\n");
        let config = parse(&named).expect("valid with an id");
        assert_eq!(config.instance.id.as_deref(), Some("switch-a"));
        assert_eq!(
            (
                config.instance.heartbeat_s,
                config.instance.dead_after_s,
                config.instance.lease_s
            ),
            (2, 15, 30)
        );
        let error = error_of(&format!(
            "{shared}\n[instance]\nid = \"a\"\nheartbeat_s = 5\ndead_after_s = 10\n"
        ));
        assert!(
            error.contains("instance.dead_after_s")
                && error.contains("at least 3 heartbeats (15 s)"),
            "{error}"
        );
    }

    #[test]
    fn embedded_default_parses_and_routes_every_card_to_the_simulator() {
        let config = Config::embedded_default().expect("embedded default is valid");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].name, "pos");
        assert_eq!(config.listeners[0].channel, Channel::Pos);
        assert_eq!(config.listeners[0].header(), "2b");
        assert_eq!(config.issuers[0].endpoints, [Endpoint::Simulator]);
        let table = config.route_table().expect("default routes build");
        for first_digit in b'0'..=b'9' {
            let pan = [first_digit, b'1', b'2', b'3'];
            let route = table
                .lookup(&pan)
                .map(|&index| config.routes[index].issuer.as_str());
            assert_eq!(route, Some("sim"));
        }
        let simulator = config.simulator.expect("default has a simulator");
        assert!(simulator
            .rules
            .iter()
            .any(|rule| rule.respond == SimResponse::Drop));
        assert!(simulator.accounts.len() >= 2);
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = Config::load(&path).expect("config/example.toml is valid");
        assert!(config.issuers.len() >= 2);
        let stand_in = config.routes[0].stand_in.as_ref().expect("visa stands in");
        assert_eq!(
            (stand_in.max_amount, stand_in.max_per_card_per_day),
            (5000, 3)
        );
        assert!(config.routes[1].stand_in.is_none());
        assert!(config
            .issuers
            .iter()
            .any(|issuer| issuer.endpoints.len() >= 2));
    }

    /// The example shows the admin options commented out (a token in it would
    /// turn the endpoints on for whoever copies it); uncommented they parse.
    #[test]
    fn example_admin_options_parse_when_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let text = std::fs::read_to_string(&path).expect("config/example.toml is readable");
        let admin = Config::from_toml_str(&text, "example")
            .expect("valid")
            .admin;
        assert_eq!(admin, AdminConfig::default());
        let uncommented = text
            .replace("\n# token = ", "\ntoken = ")
            .replace("\n# bind = ", "\nbind = ");
        let admin = Config::from_toml_str(&uncommented, "example")
            .expect("the admin options are valid")
            .admin;
        assert_eq!(admin.token.as_deref(), Some("change-me"));
        assert_eq!(admin.bind, Some("127.0.0.1:9584".parse().expect("literal")));
    }

    #[test]
    fn omitted_options_take_their_documented_defaults() {
        let config = parse(MINIMAL).expect("minimal config is valid");
        let listener = &config.listeners[0];
        assert_eq!(listener.channel, Channel::Pos);
        assert_eq!(listener.spec, PathBuf::from("specs/iso87ascii.toml"));
        assert_eq!(listener.header(), "2b");
        assert!(!listener.header_includes_self && !listener.tpdu);
        assert_eq!(
            (listener.max_connections, listener.idle_timeout_s),
            (10_000, 300)
        );
        assert_eq!(listener.tls, None);
        let issuer = &config.issuers[0];
        assert_eq!((issuer.connections, issuer.timeout_ms), (1, 5_000));
        assert_eq!((issuer.echo_interval_s, issuer.sign_on), (30, true));
        assert_eq!(
            config.metrics.bind,
            "127.0.0.1:9583".parse().expect("literal")
        );
        assert_eq!(config.simulator, None);
        assert_eq!(config.routes[0].stand_in, None);
        assert_eq!(config.journal, JournalConfig::default());
        assert_eq!(config.store_and_forward, SafConfig::default());
    }

    #[test]
    fn syntax_error_reports_origin_line_and_column() {
        let error = parse("[[listener]]\nname = \"pos\nbind = 1\n").expect_err("bad string");
        match &error {
            ConfigError::Parse { origin, line, .. } => {
                assert_eq!(origin, "test.toml");
                assert_eq!(*line, Some(2));
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        assert!(error.to_string().starts_with("test.toml:2:"), "{error}");
    }

    #[test]
    fn bad_value_points_at_its_line() {
        let text = MINIMAL.replace("bind = \"127.0.0.1:8583\"", "bind = \"localhost:8583\"");
        let error = error_of(&text);
        assert!(error.starts_with("test.toml:4:"), "{error}");
        assert!(error.contains("found \"localhost:8583\""), "{error}");
    }

    #[test]
    fn route_to_undefined_issuer_names_route_and_issuer() {
        let text = MINIMAL.replace("issuer = \"visa\"", "issuer = \"mc-sim\"");
        assert_eq!(
            error_of(&text),
            "test.toml: route \"visa\": issuer \"mc-sim\" is not defined"
        );
    }

    #[test]
    fn same_bin_in_two_routes_is_refused_naming_both() {
        let text = format!(
            "{MINIMAL}\n[[route]]\nname = \"visa-2\"\nbins = [\"4-4\"]\nissuer = \"visa\"\n"
        );
        let error = error_of(&text);
        assert!(
            error.contains("route \"visa-2\": bin \"4-4\" matches exactly the same cards as bin \"4\" of route \"visa\""),
            "{error}"
        );
    }

    #[test]
    fn listeners_on_port_zero_do_not_clash() {
        let text = r#"
[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener]]
name = "b"
bind = "127.0.0.1:0"
"#;
        assert!(parse(text).is_ok());
    }

    #[test]
    fn listener_bind_clashing_with_metrics_is_refused() {
        let text = "[[listener]]\nname = \"pos\"\nbind = \"127.0.0.1:9583\"\n";
        assert_eq!(
            error_of(text),
            "test.toml: metrics: bind address 127.0.0.1:9583 is already used by listener \"pos\""
        );
    }

    #[test]
    fn sim_endpoint_without_simulator_section_is_refused() {
        let text = MINIMAL.replace("[\"127.0.0.1:9100\"]", "[\"sim\"]");
        assert!(error_of(&text).contains("needs a [simulator] section"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let error = Config::load("/nonexistent/isoswitch.toml").expect_err("no such file");
        assert!(error
            .to_string()
            .starts_with("/nonexistent/isoswitch.toml: cannot read"));
    }

    /// Every file in tests/fixtures/config/invalid starts with `# expect: <text>` and
    /// must be refused with an error containing that text.
    #[test]
    fn every_invalid_fixture_fails_with_its_expected_message() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixture directory exists")
            .map(|entry| entry.expect("fixture directory is readable").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 12, "only {} invalid fixtures", paths.len());
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("fixture is readable");
            let expected = text
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("# expect:"))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{} lacks a `# expect:` first line", path.display()));
            match Config::load(&path) {
                Ok(_) => panic!("{} parsed, expected {expected:?}", path.display()),
                Err(error) => {
                    let message = error.to_string();
                    assert!(
                        message.contains(expected),
                        "{}: expected {expected:?} in {message:?}",
                        path.display()
                    );
                    assert!(message.contains(&path.display().to_string()), "{message}");
                }
            }
        }
    }
}
