//! `journal find`, `journal stats` and `journal settle`: support's look-ups in the transaction
//! journal, for "the payment didn't go through" and "the amount is unclear".
//! They open the journal read-only, so they never create, migrate or write it
//! and can run beside the switch; the PAN is shown masked and a PAN searched
//! for is hashed here.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use isoswitch::config::Config;
use isoswitch::iso8583::fields::mask_pan;
use isoswitch::iso8583::ResponseCode;
use isoswitch::journal::config::{env_key, KEY_ENV};
use isoswitch::journal::postgres::is_url;
use isoswitch::journal::record::{NO_ROUTE, PENDING};
use isoswitch::journal::{
    ClearPan, DataKey, JournalReader, PgReader, SafLink, SqliteJournal, Stats, StatsRow, TimeRange,
    TxnQuery, TxnRecord,
};
use isoswitch::settle::{render, Report, SchemeTable, Tariffs};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(clap::Subcommand)]
pub enum JournalCommand {
    /// Print the transactions that match every given condition, oldest first,
    /// with their history (answer, reversal, queued reversals and advices).
    ///
    /// --pan is hashed here with the journal's key and compared with the
    /// stored hashes: the full PAN is never stored nor printed, and PANs are
    /// always shown masked (first 6 / last 4).
    Find(FindArgs),
    /// Print counts and amounts by response code, by route and by decider,
    /// each per currency (amounts are never added across currencies).
    Stats(StatsArgs),
    /// Print a day's merchant settlement: per merchant, card scheme and
    /// operation type (sale, cancel, refund, refund-cancel) the count,
    /// gross, fee and net in minor units, one currency per line, with totals
    /// per merchant and currency; then (text, JSON) the operations left out
    /// and why. The day is the UTC day a transaction was received (a
    /// cancellation: the day its reversal was). Fees are rounded half-up per
    /// transaction. Tariffs and schemes come from --config.
    Settle(SettleArgs),
    /// Create or bring up to date the schema of a PostgreSQL journal
    /// (`serve` does it too at start-up); prints how many migrations ran.
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The journal database: postgresql://user@host:port/db.
    #[arg(long)]
    db: String,
}

#[derive(clap::Args)]
pub struct SettleArgs {
    /// The journal database: an SQLite file or postgresql://user@host:port/db.
    #[arg(long)]
    db: PathBuf,
    /// The UTC day, YYYY-MM-DD.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: String,
    /// Only this merchant (field 42).
    #[arg(long)]
    merchant: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: SettleFormat,
    /// The config whose [[tariff]] and [[scheme]] tables apply (default:
    /// the embedded default's).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SettleFormat {
    Text,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct FindArgs {
    /// The journal database: an SQLite file or postgresql://user@host:port/db.
    #[arg(long)]
    db: PathBuf,
    /// Retrieval reference number, the terminal's or the issuer's.
    #[arg(long)]
    rrn: Option<String>,
    /// The terminal's STAN (field 11); needs --terminal.
    #[arg(long, requires = "terminal")]
    stan: Option<String>,
    /// Terminal id (field 41); needs --stan.
    #[arg(long, requires = "stan")]
    terminal: Option<String>,
    /// The card number's last four digits.
    #[arg(long, value_name = "NNNN")]
    last4: Option<String>,
    /// The full card number, or `-` to read it from stdin (kept out of the
    /// shell history). Hashed locally with the journal key; never printed.
    #[arg(long)]
    pan: Option<String>,
    /// The journal's data key, used to hash --pan (default: the database's
    /// path with the extension `.key`; for PostgreSQL, ISOSWITCH_JOURNAL_KEY).
    /// Under another key nothing matches.
    #[arg(long, requires = "pan")]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    range: RangeArgs,
    /// Print at most this many transactions.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// The journal database: an SQLite file or postgresql://user@host:port/db.
    #[arg(long)]
    db: PathBuf,
    #[command(flatten)]
    range: RangeArgs,
    /// One JSON object per line (one per group and currency) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RangeArgs {
    /// Received at or after TIME: RFC 3339 (2026-12-07T15:00:00Z) or a date
    /// (2026-12-07, meaning 00:00 UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<i64>,
    /// Received before TIME, in the same forms as --since.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<i64>,
}

impl RangeArgs {
    fn range(&self) -> TimeRange {
        TimeRange {
            since_ms: self.since,
            until_ms: self.until,
        }
    }
}

pub fn run(command: JournalCommand) -> Result<()> {
    match command {
        JournalCommand::Find(args) => find(&args),
        JournalCommand::Stats(args) => stats(&args),
        JournalCommand::Settle(args) => settle(&args),
        JournalCommand::Migrate(args) => migrate(&args),
    }
}

/// A journal opened for reading: an SQLite file, or PostgreSQL (read on a
/// small runtime of its own). Both give the same records, so the output is
/// the same.
enum Source {
    Sqlite(Box<JournalReader>),
    Postgres(Box<(PgReader, tokio::runtime::Runtime)>),
}

/// The database named by --db, if it is a PostgreSQL URL.
fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str().filter(|text| is_url(text))
}

fn small_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime to read PostgreSQL")
}

impl Source {
    fn open(db: &Path, key: Option<DataKey>) -> Result<Source> {
        match postgres_url(db) {
            Some(url) => {
                let runtime = small_runtime()?;
                let reader = runtime.block_on(PgReader::open(url, key))?;
                Ok(Source::Postgres(Box::new((reader, runtime))))
            }
            None => Ok(Source::Sqlite(Box::new(SqliteJournal::open_read_only(
                db, key,
            )?))),
        }
    }

    fn find(&mut self, query: &TxnQuery) -> Result<Vec<TxnRecord>> {
        Ok(match self {
            Source::Sqlite(journal) => journal.find(query)?,
            Source::Postgres(pg) => pg.1.block_on(pg.0.find(query))?,
        })
    }

    fn stats(&mut self, range: TimeRange) -> Result<Stats> {
        Ok(match self {
            Source::Sqlite(journal) => journal.stats(range)?,
            Source::Postgres(pg) => pg.1.block_on(pg.0.stats(range))?,
        })
    }

    fn settlement(&mut self, range: TimeRange) -> Result<Vec<TxnRecord>> {
        Ok(match self {
            Source::Sqlite(journal) => journal.settlement(range)?,
            Source::Postgres(pg) => pg.1.block_on(pg.0.settlement(range))?,
        })
    }
}

/// The key that hashes --pan for a PostgreSQL journal: --key-file, else
/// the variable the switch reads it from.
fn postgres_key(key_file: Option<&Path>) -> Result<DataKey> {
    if let Some(path) = key_file {
        return Ok(DataKey::load(path)?);
    }
    match env_key() {
        Some(key) => Ok(key?),
        None => {
            bail!("--pan with a PostgreSQL journal needs its data key: --key-file or {KEY_ENV}")
        }
    }
}

fn migrate(args: &MigrateArgs) -> Result<()> {
    if !is_url(&args.db) {
        bail!("--db: expected postgresql://user@host:port/db (an SQLite journal is migrated when the switch opens it)");
    }
    let runtime = small_runtime()?;
    let applied = runtime.block_on(isoswitch::journal::postgres::migrate(&args.db))?;
    super::stdout::print(format!(
        "{}: {applied} migration(s) applied\n",
        isoswitch::journal::postgres::redacted(&args.db)
    ))?;
    Ok(())
}

/// The key file the journal keeps beside its database: `journal.db` has
/// `journal.key`.
fn default_key_file(db: &Path) -> PathBuf {
    db.with_extension("key")
}

/// Unix ms from RFC 3339 or a bare date (midnight UTC); the message names
/// both forms, and clap names the option.
fn parse_time(text: &str) -> Result<i64, String> {
    let expected =
        || format!("expected RFC 3339 (2026-12-07T15:00:00Z) or a date (2026-12-07), got {text:?}");
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => at,
        Err(_) => parse_date(text).ok_or_else(expected)?,
    };
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| expected())
}

/// `YYYY-MM-DD` at 00:00 UTC.
fn parse_date(text: &str) -> Option<OffsetDateTime> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !digits(year, 4) || !digits(month, 2) || !digits(day, 2) {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc())
}

/// Unix ms as `2026-12-07T15:00:00.123Z`.
fn format_time(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    match at {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => format!("{ms} ms since 1970"),
    }
}

/// ISO 4217 alphabetic code and exponent of the currencies support sees most.
fn currency_unit(code: u16) -> Option<(&'static str, u32)> {
    Some(match code {
        840 => ("USD", 2),
        978 => ("EUR", 2),
        826 => ("GBP", 2),
        392 => ("JPY", 0),
        643 => ("RUB", 2),
        156 => ("CNY", 2),
        356 => ("INR", 2),
        _ => return None,
    })
}

/// An amount in minor units as a person reads it: `10.00 USD` for 1000 of
/// 840; other currencies keep their minor units and numeric code. Integers
/// only, so no amount is ever rounded.
fn format_amount(minor: i64, currency: Option<u16>) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let units = minor.unsigned_abs();
    match currency.and_then(currency_unit) {
        Some((alpha, 0)) => format!("{sign}{units} {alpha}"),
        Some((alpha, exponent)) => {
            let scale = 10u64.pow(exponent);
            let width = exponent as usize;
            format!("{sign}{}.{:0width$} {alpha}", units / scale, units % scale)
        }
        None => match currency {
            Some(code) => format!("{minor} minor units of currency {code:03}"),
            None => format!("{minor} minor units, currency unknown"),
        },
    }
}

/// The currency as JSON shows it: the numeric code as a string ("840").
fn currency_json(currency: Option<u16>) -> Value {
    currency.map_or(Value::Null, |c| Value::String(format!("{c:03}")))
}

/// Microseconds as milliseconds with three decimals, in integers.
fn format_latency(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

/// The PAN from --pan (or stdin for `-`). Errors never echo it.
fn read_pan(arg: &str) -> Result<ClearPan> {
    let mut text = arg.to_owned();
    if arg == "-" {
        text.clear();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading --pan from stdin")?;
    }
    ClearPan::new(text.trim()).ok_or_else(|| anyhow!("--pan must be 12 to 19 digits"))
}

fn find(args: &FindArgs) -> Result<()> {
    if let Some(last4) = &args.last4 {
        if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--last4 must be four digits, got {last4:?}");
        }
    }
    let pan = args.pan.as_deref().map(read_pan).transpose()?;
    // The key is needed only to hash --pan, and is only ever read, never
    // made; check the database first so a missing one is reported as such.
    let key = match &pan {
        Some(_) if postgres_url(&args.db).is_some() => {
            Some(postgres_key(args.key_file.as_deref())?)
        }
        Some(_) => {
            std::fs::metadata(&args.db)
                .map_err(|e| anyhow!("cannot open the journal {}: {e}", args.db.display()))?;
            let path = args
                .key_file
                .clone()
                .unwrap_or_else(|| default_key_file(&args.db));
            Some(DataKey::load(&path)?)
        }
        None => None,
    };
    let mut journal = Source::open(&args.db, key)?;
    let query = TxnQuery {
        rrn: args.rrn.clone(),
        terminal_stan: args.terminal.clone().zip(args.stan.clone()),
        last4: args.last4.clone(),
        pan,
        range: args.range.range(),
        limit: args.limit,
        ..TxnQuery::default()
    };
    let found = journal.find(&query)?;
    let mut out = String::new();
    if args.json {
        for record in &found {
            out.push_str(&record_json(record).to_string());
            out.push('\n');
        }
    } else if found.is_empty() {
        out.push_str("no transaction matches\n");
    } else {
        let blocks: Vec<String> = found.iter().map(record_text).collect();
        out.push_str(&blocks.join("\n"));
    }
    super::stdout::print(out)?;
    Ok(())
}

/// The masked PAN, masked again in case a row holds more than it should.
/// The RRN the terminal's answer carried: its own, or the one the switch
/// generated for it (which the issuer saw too).
fn rrn_answered(record: &TxnRecord) -> Option<String> {
    record
        .terminal_rrn
        .clone()
        .or_else(|| record.upstream_rrn.clone())
}

fn masked_pan(record: &TxnRecord) -> Option<String> {
    record.pan_masked.as_deref().map(mask_pan)
}

fn response_text(code: &str) -> String {
    match code.parse::<ResponseCode>() {
        Ok(rc) => format!("{code} {}", rc.meaning()),
        Err(_) => code.to_owned(),
    }
}

fn link_text(link: &SafLink) -> String {
    format!(
        "{} #{} {}, {} attempt{}",
        link.kind,
        link.id.0,
        link.state,
        link.attempts,
        if link.attempts == 1 { "" } else { "s" }
    )
}

/// One block a person reads: the headline, then one labelled line per fact.
fn record_text(record: &TxnRecord) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let amount = record.amount.map_or_else(
        || "no amount".to_owned(),
        |a| format_amount(a, record.currency),
    );
    let mut lines = vec![format!(
        "{}  {}  {}  {}",
        format_time(record.received_at_ms),
        record.mti.as_str(),
        masked_pan(record).unwrap_or_else(|| "no PAN".to_owned()),
        amount
    )];
    let mut line = |label: &str, value: String| lines.push(format!("  {label:<11} {value}"));
    match &record.outcome {
        Some(o) => {
            line(
                "response",
                format!(
                    "{} (decided by {})",
                    response_text(o.response_code.as_str()),
                    o.decided_by
                ),
            );
            line(
                "auth code",
                o.auth_code.clone().unwrap_or_else(|| "-".to_owned()),
            );
            line(
                "answered",
                format!(
                    "{} after {}",
                    format_time(o.answered_at_ms),
                    format_latency(o.latency_us)
                ),
            );
        }
        None => line(
            "response",
            "none recorded (pending or never answered)".to_owned(),
        ),
    }
    line(
        "terminal",
        format!(
            "{}  merchant {}  stan {}  rrn {}",
            or_dash(&record.terminal_id),
            or_dash(&record.merchant_id),
            or_dash(&record.terminal_stan),
            or_dash(&rrn_answered(record))
        ),
    );
    line(
        "received on",
        format!("listener {} ({})", record.listener, record.channel),
    );
    if let Some(code) = &record.processing_code {
        line("processing", code.clone());
    }
    if record.route.is_some() || record.issuer.is_some() {
        line(
            "upstream",
            format!(
                "route {}  issuer {}  stan {}  rrn {}",
                or_dash(&record.route),
                or_dash(&record.issuer),
                or_dash(&record.upstream_stan),
                or_dash(&record.upstream_rrn)
            ),
        );
    } else {
        line("upstream", "not forwarded".to_owned());
    }
    line("reversal", record.reversal.to_string());
    for link in &record.links {
        line("queued", link_text(link));
    }
    line("journal id", record.id.0.to_string());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// One JSON object: the keys support scripts rely on, then the rest.
/// Amounts are integers in minor units; the PAN is masked.
fn record_json(record: &TxnRecord) -> Value {
    let outcome = record.outcome.as_ref();
    let links: Vec<Value> = record
        .links
        .iter()
        .map(|l| {
            json!({
                "id": l.id.0,
                "kind": l.kind.as_str(),
                "state": l.state.as_str(),
                "attempts": l.attempts,
            })
        })
        .collect();
    json!({
        "time": format_time(record.received_at_ms),
        "rrn": rrn_answered(record),
        "stan": record.terminal_stan,
        "terminal": record.terminal_id,
        "merchant": record.merchant_id,
        "mti": record.mti.as_str(),
        "amount": record.amount,
        "currency": currency_json(record.currency),
        "pan": masked_pan(record),
        "response_code": outcome.map(|o| o.response_code.as_str()),
        "response_meaning": outcome.map(|o| o.response_code.meaning()),
        "decided_by": outcome.map(|o| o.decided_by.as_str()),
        "auth_code": outcome.and_then(|o| o.auth_code.clone()),
        "reversal": record.reversal.as_str(),
        "id": record.id.0,
        "received_at_ms": record.received_at_ms,
        "listener": record.listener,
        "channel": record.channel,
        "processing_code": record.processing_code,
        "route": record.route,
        "issuer": record.issuer,
        "upstream_stan": record.upstream_stan,
        "upstream_rrn": record.upstream_rrn,
        "answered_at": outcome.map(|o| format_time(o.answered_at_ms)),
        "latency_us": outcome.map(|o| o.latency_us),
        "links": links,
    })
}

fn settle(args: &SettleArgs) -> Result<()> {
    let since = parse_date(&args.date)
        .ok_or_else(|| anyhow!("--date: expected YYYY-MM-DD, got {:?}", args.date))?;
    let since_ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| anyhow!("--date {} is out of range", args.date))?;
    let day = TimeRange {
        since_ms: Some(since_ms),
        until_ms: Some(since_ms + 24 * 3_600_000),
    };
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default()?,
    };
    let schemes = SchemeTable::build(&config.schemes).map_err(|e| anyhow!(e))?;
    let tariffs = Tariffs::build(&config.tariffs).map_err(|e| anyhow!(e))?;
    let mut journal = Source::open(&args.db, None)?;
    let records = journal.settlement(day)?;
    let report = Report::build(
        &args.date,
        day,
        &records,
        &schemes,
        &tariffs,
        args.merchant.as_deref(),
    );
    for scheme in &report.untariffed {
        eprintln!("warning: no [[tariff]] for scheme {scheme:?}: its lines are listed with fee 0");
    }
    let out = match args.format {
        SettleFormat::Text => render::text(&report),
        SettleFormat::Csv => render::csv(&report),
        SettleFormat::Json => format!("{}\n", render::json(&report)),
    };
    super::stdout::print(out)?;
    Ok(())
}

fn stats(args: &StatsArgs) -> Result<()> {
    let mut journal = Source::open(&args.db, None)?;
    let stats = journal.stats(args.range.range())?;
    let out = if args.json {
        stats_json(&stats)
    } else {
        stats_text(&stats)
    };
    super::stdout::print(out)?;
    Ok(())
}

/// The three groupings, with the name each goes by in the output.
fn groups(stats: &Stats) -> [(&'static str, &[StatsRow]); 3] {
    [
        ("response_code", &stats.by_response_code),
        ("route", &stats.by_route),
        ("decider", &stats.by_decider),
    ]
}

fn stats_json(stats: &Stats) -> String {
    let mut out = String::new();
    for (group, rows) in groups(stats) {
        for row in rows {
            let mut object = json!({
                "group": group,
                "key": row.key,
                "currency": currency_json(row.currency),
                "count": row.count,
                "amount": row.amount,
            });
            if group == "response_code" {
                if let Ok(rc) = row.key.parse::<ResponseCode>() {
                    object["meaning"] = Value::from(rc.meaning());
                }
            }
            out.push_str(&object.to_string());
            out.push('\n');
        }
    }
    out
}

/// One table per grouping: key, count, amount (with its currency).
fn stats_text(stats: &Stats) -> String {
    let mut out = String::new();
    for (group, rows) in groups(stats) {
        let title = match group {
            "response_code" => "response code",
            other => other,
        };
        let table: Vec<[String; 3]> = rows
            .iter()
            .map(|row| {
                let key = match (group, row.key.as_str()) {
                    (_, PENDING) => format!("{PENDING} (no answer recorded)"),
                    ("route", NO_ROUTE) => format!("{NO_ROUTE} (not forwarded)"),
                    ("response_code", code) => response_text(code),
                    (_, key) => key.to_owned(),
                };
                [
                    key,
                    row.count.to_string(),
                    format_amount(row.amount, row.currency),
                ]
            })
            .collect();
        let header = [title.to_owned(), "count".to_owned(), "amount".to_owned()];
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &table {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let [w0, w1, _] = widths;
        if !out.is_empty() {
            out.push('\n');
        }
        for row in std::iter::once(&header).chain(&table) {
            out.push_str(&format!("{:<w0$}  {:>w1$}  {}\n", row[0], row[1], row[2]));
        }
        if table.is_empty() {
            out.push_str("(no transactions)\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_use_the_currency_exponent_in_integers() {
        assert_eq!(format_amount(1000, Some(840)), "10.00 USD");
        assert_eq!(format_amount(5, Some(978)), "0.05 EUR");
        assert_eq!(format_amount(-1234, Some(826)), "-12.34 GBP");
        assert_eq!(format_amount(1000, Some(392)), "1000 JPY");
        assert_eq!(
            format_amount(i64::MAX, Some(840)),
            "92233720368547758.07 USD"
        );
        assert_eq!(
            format_amount(1000, Some(999)),
            "1000 minor units of currency 999"
        );
        assert_eq!(format_amount(7, None), "7 minor units, currency unknown");
    }

    #[test]
    fn times_read_as_rfc_3339_or_a_date_at_midnight_utc() {
        let at = 1_796_655_600_000; // 2026-12-07T15:00:00Z
        assert_eq!(parse_time("2026-12-07T15:00:00Z"), Ok(at));
        assert_eq!(parse_time("2026-12-07T16:00:00+01:00"), Ok(at));
        assert_eq!(parse_time("2026-12-07"), Ok(at - 15 * 3_600_000));
        assert_eq!(format_time(at + 7), "2026-12-07T15:00:00.007Z");
        for bad in ["yesterday", "2026-12-7", "2026-13-01", "2026-12-07T15:00"] {
            let error = parse_time(bad).expect_err(bad);
            assert!(
                error.contains("RFC 3339") && error.contains("2026-12-07"),
                "{error}"
            );
        }
    }

    #[test]
    fn latency_prints_in_milliseconds() {
        assert_eq!(format_latency(1_234), "1.234 ms");
        assert_eq!(format_latency(5), "0.005 ms");
    }
}
