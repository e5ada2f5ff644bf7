//! What the tests read to judge a run: the simulator's record file (what the
//! issuer received), the switch's journal through `isoswitch journal find`,
//! and the store-and-forward queue straight from the database.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::wait::poll_until;

/// One line of the simulator's record file. Network messages (sign-on,
/// echo) carry no terminal; purchases and reversals always do.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub mti: String,
    pub stan: String,
    pub rrn: Option<String>,
    pub terminal: Option<String>,
    pub transmission: Option<String>,
    /// "00", "drop", "close" or a code.
    pub answer: String,
    /// For reversals: the original they name, and what the simulator did.
    pub original_mti: Option<String>,
    pub original_stan: Option<String>,
    pub original_transmission: Option<String>,
    pub reversal: Option<String>,
}

impl Recorded {
    pub fn is_reversal(&self) -> bool {
        self.mti.starts_with("04")
    }

    /// Field 41; every purchase and reversal in these tests has one.
    pub fn terminal(&self) -> &str {
        self.terminal
            .as_deref()
            .unwrap_or_else(|| panic!("a record line without a terminal: {self:?}"))
    }
}

fn text(line: &Value, key: &str) -> Option<String> {
    line[key].as_str().map(str::to_owned)
}

/// Every whole line of the record so far (a line still being written is not
/// counted), parsed.
pub fn read_record(path: &Path) -> Vec<Recorded> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("reading the record {}: {e}", path.display()),
    };
    let whole = match content.rfind('\n') {
        Some(end) => &content[..=end],
        None => "",
    };
    whole
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a record line that is not JSON ({e}): {line}"));
            let required = |key: &str| {
                text(&value, key).unwrap_or_else(|| panic!("record line without {key:?}: {line}"))
            };
            Recorded {
                mti: required("mti"),
                stan: required("stan"),
                rrn: text(&value, "rrn"),
                terminal: text(&value, "terminal"),
                transmission: text(&value, "transmission"),
                answer: required("answer"),
                original_mti: text(&value, "original_mti"),
                original_stan: text(&value, "original_stan"),
                original_transmission: text(&value, "original_transmission"),
                reversal: text(&value, "reversal"),
            }
        })
        .collect()
}

/// Every transaction in the journal at `db`: response code (if answered) by
/// the terminal's RRN.
pub fn journal_codes(db: &Path) -> HashMap<String, Option<String>> {
    let output = Command::new(env!("CARGO_BIN_EXE_isoswitch"))
        .args(["journal", "find", "--json", "--since", "2000-01-01", "--db"])
        .arg(db)
        .env("RUST_LOG", "off")
        .output()
        .expect("isoswitch journal find runs");
    assert!(
        output.status.success(),
        "journal find failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("journal find prints UTF-8");
    stdout
        .lines()
        .filter_map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("journal find printed a non-JSON line ({e}): {line}"));
            let rrn = text(&value, "rrn")?;
            Some((rrn, text(&value, "response_code")))
        })
        .collect()
}

/// Queue items by state (`pending`, `done`, `failed`), read from the database.
pub fn queue_states(db: &Path) -> HashMap<String, i64> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .unwrap_or_else(|e| panic!("opening {}: {e}", db.display()));
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout set");
    let mut query = conn
        .prepare("SELECT state, count(*) FROM saf GROUP BY state")
        .expect("the saf table is there");
    let rows = query
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .expect("saf counted");
    rows.map(|row| row.expect("a saf count row")).collect()
}

/// Waits until no queue item is pending; the states then.
pub async fn queue_drained(db: &Path, within: Duration) -> HashMap<String, i64> {
    poll_until("the store-and-forward queue is drained", within, || {
        let states = queue_states(db);
        std::future::ready((states.get("pending").copied().unwrap_or(0) == 0).then_some(states))
    })
    .await
}
