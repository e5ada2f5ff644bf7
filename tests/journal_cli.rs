//! `isoswitch journal find` and `journal stats` as support runs them: a
//! journal written through the public API, then the real binary on it. No
//! output, on stdout or stderr, ever holds a full card number.

use std::path::PathBuf;
use std::process::Output;
use std::str::FromStr;

use isoswitch::iso8583::{Mti, ResponseCode};
use isoswitch::journal::{
    ClearPan, DataKey, DecidedBy, Forward, Journal, Outcome, ReversalFields, ReversalState,
    SafKind, SafNew, SafStore, SqliteJournal, SqliteOptions, TxnStart,
};
use serde_json::Value;

#[path = "common/cli.rs"]
mod cli;
use cli::run_isoswitch;

const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5500000000000004";
const OTHER: &str = "4000000000000002";
/// 2026-12-07T15:00:00Z.
const DEC7_15H: i64 = 1_796_655_600_000;
const HOUR: i64 = 3_600_000;

/// A journal in a temp dir with its key file beside it, as the switch keeps it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn db(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    fn db_arg(&self) -> String {
        self.db().display().to_string()
    }

    /// Stdout of `journal find --db <this journal>` and `query`, which must succeed.
    fn find(&self, query: &[&str]) -> String {
        ok(&[&["journal", "find", "--db", &self.db_arg()], query].concat())
    }

    /// Stdout of `journal stats --db <this journal>` and `options`, which must succeed.
    fn stats(&self, options: &[&str]) -> String {
        ok(&[&["journal", "stats", "--db", &self.db_arg()], options].concat())
    }
}

struct Txn {
    at: i64,
    pan: &'static str,
    amount: i64,
    currency: u16,
    terminal: &'static str,
    stan: &'static str,
    rrn: &'static str,
    /// Route, issuer and upstream STAN when forwarded.
    forward: Option<(&'static str, &'static str, &'static str)>,
    /// Response code, decider, auth code; `None` while pending.
    outcome: Option<(&'static str, DecidedBy, Option<&'static str>)>,
}

/// Four transactions: an approval (USD), a risk decline (EUR), a timeout
/// with its reversal queued (USD), and one pending (JPY).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let (key, _) = DataKey::load_or_create(&dir.path().join("journal.key")).expect("key");
    let journal =
        SqliteJournal::open(SqliteOptions::new(dir.path().join("journal.db"), key)).expect("open");
    let txns = [
        Txn {
            at: DEC7_15H,
            pan: VISA,
            amount: 1000,
            currency: 840,
            terminal: "TERM0001",
            stan: "000001",
            rrn: "634115000001",
            forward: Some(("visa", "visa-host", "000101")),
            outcome: Some(("00", DecidedBy::Issuer, Some("ABC123"))),
        },
        Txn {
            at: DEC7_15H + HOUR,
            pan: MASTERCARD,
            amount: 2550,
            currency: 978,
            terminal: "TERM0002",
            stan: "000002",
            rrn: "634115000002",
            forward: None,
            outcome: Some(("05", DecidedBy::Risk, None)),
        },
        Txn {
            at: DEC7_15H + 18 * HOUR,
            pan: VISA,
            amount: 500,
            currency: 840,
            terminal: "TERM0001",
            stan: "000003",
            rrn: "634115000003",
            forward: Some(("visa", "visa-host", "000102")),
            outcome: Some(("91", DecidedBy::Timeout, None)),
        },
        Txn {
            at: DEC7_15H + 19 * HOUR,
            pan: OTHER,
            amount: 1000,
            currency: 392,
            terminal: "TERM0003",
            stan: "000004",
            rrn: "634115000004",
            forward: None,
            outcome: None,
        },
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for txn in &txns {
            let start = TxnStart {
                received_at_ms: txn.at,
                listener: "pos".to_owned(),
                channel: "pos".to_owned(),
                mti: Mti::from_str("0100").expect("mti"),
                processing_code: Some("000000".to_owned()),
                pan: Some(ClearPan::new(txn.pan).expect("pan")),
                amount: Some(txn.amount),
                currency: Some(txn.currency),
                terminal_id: Some(txn.terminal.to_owned()),
                merchant_id: Some("MERCH0001".to_owned()),
                terminal_stan: Some(txn.stan.to_owned()),
                terminal_rrn: Some(txn.rrn.to_owned()),
                forward: txn.forward.map(|(route, issuer, stan)| {
                    let mut reversal = ReversalFields::default();
                    reversal.set(2, txn.pan);
                    Forward {
                        route: route.to_owned(),
                        issuer: issuer.to_owned(),
                        upstream_stan: stan.to_owned(),
                        upstream_rrn: None,
                        reversal,
                    }
                }),
                original_id: None,
            };
            let id = journal.begin(start).await.expect("begin");
            if let Some((code, decided_by, auth)) = txn.outcome {
                let outcome = Outcome {
                    answered_at_ms: txn.at + 2,
                    response_code: ResponseCode::from_str(code).expect("code"),
                    decided_by,
                    auth_code: auth.map(str::to_owned),
                    latency_us: 1_234,
                    reason: None,
                };
                journal.record_outcome(id, outcome).await.expect("outcome");
            }
            if decided_by_timeout(txn) {
                journal
                    .set_reversal(id, ReversalState::Queued)
                    .await
                    .expect("reversal");
                let item = SafNew {
                    issuer: "visa-host".to_owned(),
                    kind: SafKind::Reversal,
                    mti: "0400".parse().expect("mti"),
                    txn_id: Some(id),
                    fields: ReversalFields::default(),
                    created_at_ms: txn.at + 3,
                    expires_at_ms: txn.at + 24 * HOUR,
                };
                journal.enqueue(item).await.expect("enqueue");
            }
        }
    });
    journal.close();
    Fixture { dir }
}

fn decided_by_timeout(txn: &Txn) -> bool {
    matches!(txn.outcome, Some((_, DecidedBy::Timeout, _)))
}

/// Runs the binary; whatever it prints must hold no full card number.
fn isoswitch(args: &[&str], stdin: &str) -> Output {
    let out = run_isoswitch(args, stdin, None);
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        for pan in [VISA, MASTERCARD, OTHER] {
            assert!(!text.contains(pan), "a full PAN was printed: {text}");
        }
    }
    out
}

/// Stdout of a run that must succeed.
fn ok(args: &[&str]) -> String {
    let out = isoswitch(args, "");
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect()
}

fn rrns(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["rrn"].as_str().expect("rrn"))
        .collect()
}

#[test]
fn find_by_rrn_prints_the_transaction_for_a_person() {
    let f = fixture();
    let out = f.find(&["--rrn", "634115000001"]);
    for expected in [
        "2026-12-07T15:00:00.000Z  0100  411111******1111  10.00 USD",
        "00 approved (decided by issuer)",
        "auth code   ABC123",
        "after 1.234 ms",
        "TERM0001  merchant MERCH0001  stan 000001  rrn 634115000001",
        "route visa  issuer visa-host  stan 000101",
        "reversal    none",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("000002"), "{out}");
}

#[test]
fn find_shows_the_reversal_and_what_was_queued_for_it() {
    let f = fixture();
    let out = f.find(&["--rrn", "634115000003"]);
    assert!(out.contains("91 "), "{out}");
    assert!(out.contains("(decided by timeout)"), "{out}");
    assert!(out.contains("reversal    queued"), "{out}");
    assert!(
        out.contains("queued      reversal #1 pending, 0 attempts"),
        "{out}"
    );
}

#[test]
fn find_by_stan_and_terminal_prints_one_json_object_per_line() {
    let f = fixture();
    let out = f.find(&["--stan", "000001", "--terminal", "TERM0001", "--json"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{out}");
    let t = &lines[0];
    for key in [
        "rrn",
        "stan",
        "terminal",
        "merchant",
        "mti",
        "amount",
        "currency",
        "pan",
        "response_code",
        "decided_by",
        "auth_code",
        "reversal",
        "time",
    ] {
        assert!(t.get(key).is_some(), "no {key} in {t}");
    }
    assert_eq!(t["rrn"], "634115000001");
    assert_eq!(t["stan"], "000001");
    assert_eq!(t["terminal"], "TERM0001");
    assert_eq!(t["merchant"], "MERCH0001");
    assert_eq!(t["mti"], "0100");
    assert_eq!(t["amount"], 1000);
    assert_eq!(t["currency"], "840");
    assert_eq!(t["pan"], "411111******1111");
    assert_eq!(t["response_code"], "00");
    assert_eq!(t["decided_by"], "issuer");
    assert_eq!(t["auth_code"], "ABC123");
    assert_eq!(t["reversal"], "none");
    assert_eq!(t["time"], "2026-12-07T15:00:00.000Z");
    assert_eq!(t["route"], "visa");
    assert_eq!(t["latency_us"], 1234);
}

#[test]
fn find_by_last4_returns_every_use_of_the_card_oldest_first() {
    let f = fixture();
    let out = f.find(&["--last4", "1111", "--json"]);
    let lines = json_lines(&out);
    assert_eq!(rrns(&lines), ["634115000001", "634115000003"]);
    assert_eq!(lines[1]["reversal"], "queued");
    assert_eq!(lines[1]["links"][0]["kind"], "reversal");
    assert_eq!(lines[1]["links"][0]["state"], "pending");
}

#[test]
fn find_by_pan_hashes_it_with_the_key_beside_the_database() {
    let f = fixture();
    let db = f.db_arg();
    let out = f.find(&["--pan", VISA, "--json"]);
    assert_eq!(rrns(&json_lines(&out)), ["634115000001", "634115000003"]);

    // Read from stdin, so it stays out of the shell history.
    let piped = isoswitch(
        &["journal", "find", "--db", &db, "--pan", "-", "--json"],
        &format!("{MASTERCARD}\n"),
    );
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert_eq!(rrns(&json_lines(&text(&piped.stdout))), ["634115000002"]);

    let key = f.dir.path().join("journal.key").display().to_string();
    let explicit = f.find(&["--pan", VISA, "--key-file", &key]);
    assert_eq!(
        explicit.matches("411111******1111").count(),
        2,
        "{explicit}"
    );
}

#[test]
fn find_by_pan_under_another_key_finds_nothing() {
    let f = fixture();
    let other = f.dir.path().join("other.key");
    std::fs::write(&other, "22".repeat(32)).expect("key written");
    let other = other.display().to_string();
    let json = f.find(&["--pan", VISA, "--key-file", &other, "--json"]);
    assert_eq!(json, "");
    let text = f.find(&["--pan", VISA, "--key-file", &other]);
    assert_eq!(text, "no transaction matches\n");
}

#[test]
fn find_by_time_takes_rfc_3339_or_a_date() {
    let f = fixture();
    let since = f.find(&["--since", "2026-12-08", "--json"]);
    assert_eq!(rrns(&json_lines(&since)), ["634115000003", "634115000004"]);
    let until = f.find(&["--until", "2026-12-07T16:00:00Z", "--json"]);
    assert_eq!(rrns(&json_lines(&until)), ["634115000001"]);
    let both = f.find(&[
        "--since",
        "2026-12-07T16:00:00Z",
        "--until",
        "2026-12-08T10:00:00Z",
        "--last4",
        "1111",
        "--json",
    ]);
    assert_eq!(rrns(&json_lines(&both)), ["634115000003"]);
}

#[test]
fn a_pending_transaction_prints_its_amount_in_whole_yen() {
    let f = fixture();
    let out = f.find(&["--rrn", "634115000004"]);
    assert!(out.contains("400000******0002  1000 JPY"), "{out}");
    assert!(out.contains("none recorded"), "{out}");
    assert!(out.contains("not forwarded"), "{out}");
}

#[test]
fn stats_sums_amounts_per_currency_in_each_grouping() {
    let f = fixture();
    let out = f.stats(&["--json"]);
    let rows = json_lines(&out);
    let row = |group: &str, key: &str, currency: &str| -> (u64, i64) {
        let found: Vec<&Value> = rows
            .iter()
            .filter(|r| r["group"] == group && r["key"] == key && r["currency"] == currency)
            .collect();
        assert_eq!(found.len(), 1, "{group} {key} {currency} in {out}");
        (
            found[0]["count"].as_u64().expect("count"),
            found[0]["amount"].as_i64().expect("amount"),
        )
    };
    assert_eq!(row("response_code", "00", "840"), (1, 1000));
    assert_eq!(row("response_code", "91", "840"), (1, 500));
    assert_eq!(row("response_code", "pending", "392"), (1, 1000));
    assert_eq!(row("route", "visa", "840"), (2, 1500));
    // Unrouted EUR and JPY stay apart.
    assert_eq!(row("route", "-", "978"), (1, 2550));
    assert_eq!(row("route", "-", "392"), (1, 1000));
    assert_eq!(row("decider", "risk", "978"), (1, 2550));
    assert_eq!(row("decider", "timeout", "840"), (1, 500));
    assert_eq!(rows.len(), 4 + 3 + 4, "{out}");

    let table = f.stats(&[]);
    for expected in [
        "00 approved",
        "15.00 USD",
        "25.50 EUR",
        "1000 JPY",
        "decider",
        "- (not forwarded)",
        "pending (no answer recorded)",
    ] {
        assert!(
            table.contains(expected),
            "missing {expected:?} in:\n{table}"
        );
    }
}

#[test]
fn stats_keeps_to_the_time_range() {
    let f = fixture();
    let out = f.stats(&["--since", "2026-12-08", "--json"]);
    let routes: Vec<(String, i64)> = json_lines(&out)
        .iter()
        .filter(|r| r["group"] == "route")
        .map(|r| {
            (
                r["key"].as_str().unwrap_or("").to_owned(),
                r["amount"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(routes, [("-".to_owned(), 1000), ("visa".to_owned(), 500)]);
}

fn fails_with(args: &[&str], stdin: &str) -> String {
    let out = isoswitch(args, stdin);
    assert!(!out.status.success(), "{args:?} succeeded");
    text(&out.stderr)
}

#[test]
fn a_missing_journal_is_one_line_and_is_not_created() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("absent.db");
    let arg = db.display().to_string();
    for command in ["find", "stats"] {
        let err = fails_with(&["journal", command, "--db", &arg], "");
        let expected = format!("isoswitch: cannot open the journal {arg}: ");
        assert!(err.starts_with(&expected), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let err = fails_with(&["journal", "find", "--db", &arg, "--pan", VISA], "");
    assert!(err.contains("cannot open the journal"), "{err}");
    assert!(!db.exists(), "a look-up created the journal");
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn a_file_that_is_not_a_journal_is_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("notes.db");
    std::fs::write(
        &db,
        "not a database, just some notes that are long enough\n".repeat(40),
    )
    .expect("written");
    let err = fails_with(&["journal", "stats", "--db", &db.display().to_string()], "");
    assert!(
        err.starts_with("isoswitch: cannot open the journal "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_empty_file_is_refused_not_made_a_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("empty.db");
    std::fs::write(&db, "").expect("written");
    let err = fails_with(&["journal", "find", "--db", &db.display().to_string()], "");
    assert!(
        err.starts_with("isoswitch: cannot open the journal "),
        "{err}"
    );
    assert!(err.contains("empty"), "{err}");
    assert_eq!(std::fs::metadata(&db).expect("still there").len(), 0);
}

#[test]
fn a_bad_time_names_the_option_and_the_forms_it_takes() {
    let f = fixture();
    let err = fails_with(
        &[
            "journal",
            "find",
            "--db",
            &f.db_arg(),
            "--since",
            "yesterday",
        ],
        "",
    );
    assert!(err.contains("--since"), "{err}");
    assert!(
        err.contains("2026-12-07T15:00:00Z") && err.contains("(2026-12-07)"),
        "{err}"
    );
    let err = fails_with(
        &[
            "journal",
            "stats",
            "--db",
            &f.db_arg(),
            "--until",
            "12/08/2026",
        ],
        "",
    );
    assert!(err.contains("--until"), "{err}");
}

#[test]
fn a_stan_needs_its_terminal() {
    let f = fixture();
    let out = isoswitch(
        &["journal", "find", "--db", &f.db_arg(), "--stan", "000001"],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    assert!(
        text(&out.stderr).contains("--terminal"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_key_file_without_a_pan_is_refused_rather_than_ignored() {
    let f = fixture();
    let key = f.dir.path().join("journal.key").display().to_string();
    let out = isoswitch(
        &["journal", "find", "--db", &f.db_arg(), "--key-file", &key],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "clap refuses it");
    assert!(text(&out.stderr).contains("--pan"), "{}", text(&out.stderr));
}

#[test]
fn a_pan_search_without_its_key_file_says_which_file() {
    let f = fixture();
    let missing = f.dir.path().join("nowhere.key");
    let err = fails_with(
        &[
            "journal",
            "find",
            "--db",
            &f.db_arg(),
            "--pan",
            VISA,
            "--key-file",
            &missing.display().to_string(),
        ],
        "",
    );
    assert!(
        err.contains("journal key file") && err.contains("nowhere.key"),
        "{err}"
    );
}

#[test]
fn a_malformed_pan_is_refused_without_echoing_it() {
    let f = fixture();
    let err = fails_with(
        &["journal", "find", "--db", &f.db_arg(), "--pan", "-"],
        "4111 1111 1111 111x",
    );
    assert!(err.contains("--pan must be 12 to 19 digits"), "{err}");
    assert!(!err.contains("111x"), "{err}");
}

#[test]
fn find_reads_a_journal_the_switch_is_writing_and_makes_no_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("journal.db");
    let arg = db.display().to_string();
    // As the switch holds it: its writer open, the key not in a file here.
    let journal =
        SqliteJournal::open(SqliteOptions::new(&db, DataKey::from_bytes([7; 32]))).expect("open");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let begin = |n: u32| {
        let start = TxnStart {
            received_at_ms: DEC7_15H + i64::from(n),
            listener: "pos".to_owned(),
            channel: "pos".to_owned(),
            mti: Mti::from_str("0100").expect("mti"),
            processing_code: None,
            pan: ClearPan::new(VISA),
            amount: Some(100),
            currency: Some(840),
            terminal_id: Some("TERM0001".to_owned()),
            merchant_id: None,
            terminal_stan: Some(format!("{n:06}")),
            terminal_rrn: Some(format!("{n:012}")),
            forward: None,
            original_id: None,
        };
        runtime.block_on(journal.begin(start)).expect("begin");
    };
    begin(1);
    begin(2);
    let found = json_lines(&ok(&["journal", "find", "--db", &arg, "--json"]));
    assert_eq!(rrns(&found), ["000000000001", "000000000002"]);
    let stats = json_lines(&ok(&["journal", "stats", "--db", &arg, "--json"]));
    assert!(
        stats
            .iter()
            .any(|r| r["group"] == "route" && r["count"] == 2),
        "{stats:?}"
    );
    assert!(
        !dir.path().join("journal.key").exists(),
        "a look-up without --pan made a key file"
    );

    // The switch writes on undisturbed, and the next look-up sees it.
    begin(3);
    let found = json_lines(&ok(&["journal", "find", "--db", &arg, "--json"]));
    assert_eq!(found.len(), 3);
    journal.close();
    assert!(!dir.path().join("journal.key").exists());
}

#[test]
fn help_says_the_pan_is_hashed_locally_and_never_printed() {
    let out = ok(&["journal", "find", "--help"]);
    assert!(out.contains("hashed"), "{out}");
    assert!(
        out.contains("never printed") || out.contains("never stored nor printed"),
        "{out}"
    );
}
