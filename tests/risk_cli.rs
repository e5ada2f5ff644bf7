//! `isoswitch rules check` and `isoswitch rules test` as QA teams run them:
//! the real binary, from the repository root, exit status and output.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

#[path = "common/cli.rs"]
mod cli;
use cli::run_isoswitch;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn isoswitch(args: &[&str], stdin: &str) -> Output {
    run_isoswitch(args, stdin, Some(root()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn rules_check_lists_the_compiled_rules_in_evaluation_order() {
    let out = isoswitch(
        &["rules", "check", "--config", "config/risk-example.toml"],
        "",
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("config/risk-example.toml: 17 rules (16 enforce, 1 shadow)"),
        "{stdout}"
    );
    let order: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(order.first(), Some(&"card-number"));
    assert_eq!(
        &order[order.len() - 4..],
        [
            "duplicate",
            "card-per-minute",
            "card-per-day",
            "terminal-per-minute"
        ]
    );
    assert!(stdout.contains("4 cards, 2 BIN patterns"), "{stdout}");
}

#[test]
fn rules_check_without_a_config_shows_the_embedded_rules() {
    let out = isoswitch(&["rules", "check"], "");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The card checks every channel gets, and the virtual terminal's own two:
    // the brands its contracts exclude and the recurring CIT/MIT rule.
    assert!(stdout.starts_with("embedded default: 4 rules"), "{stdout}");
    let names: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        names,
        ["card-number", "expiry", "vt-brands", "recurring"],
        "{stdout}"
    );
}

/// Every `tests/fixtures/risk/invalid/*.toml` starts with `# expect: <text>`
/// and must be refused by `rules check` with that text and its path.
#[test]
fn rules_check_refuses_every_invalid_fixture_with_its_message() {
    let dir = root().join("tests/fixtures/risk/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "only {} fixtures", paths.len());
    for path in paths {
        let relative = path.strip_prefix(root()).expect("under the root");
        let relative = relative.to_str().expect("utf-8 path");
        let first = std::fs::read_to_string(&path).expect("fixture readable");
        let expected = first
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{relative} lacks `# expect:`"));
        let out = isoswitch(&["rules", "check", "--config", relative], "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{relative}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{relative}: expected {expected:?} in {stderr:?}"
        );
        assert!(
            stderr.contains(relative),
            "{relative}: path not named in {stderr:?}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{relative}: one line: {stderr:?}"
        );
        assert!(!stderr.contains("4000000000000028"), "PAN in {stderr:?}");
    }
}

const REQUESTS: &str = r#"
{"mti":"0100","fields":{"2":"4111111111111111","3":"000000","4":"000000001000","7":"1123184100","11":"000001","14":"2812","18":"5411","22":"010","41":"TERM0001","42":"MERCHANT0000001","49":"840"}}
{"mti":"0101","at":"2026-11-23T18:41:30Z","fields":{"2":"4111111111111111","3":"000000","4":"000000001000","7":"1123184100","11":"000001","14":"2812","18":"5411","22":"010","41":"TERM0001","42":"MERCHANT0000001","49":"840"}}
{"mti":"0100","fields":{"2":"4000000000000028","3":"000000","4":"000000001000","7":"1123184101","11":"000002","14":"2812","41":"TERM0001","49":"840"}}
{"mti":"0100","channel":"virtual-terminal","fields":{"2":"6212345678901232","3":"000000","4":"000000001000","7":"1123184102","11":"000003","14":"2812","18":"7011","22":"010","41":"TERM0001","49":"840"}}
{"mti":"0100","fields":{"2":"4111111111111111","3":"000000","4":"000000001000","7":"1123184103","11":"000004","14":"2510","41":"TERM0001","49":"840"}}
"#;

#[test]
fn rules_test_prints_each_decision_and_the_rule_that_fired() {
    let out = isoswitch(
        &[
            "rules",
            "test",
            "--config",
            "config/risk-example.toml",
            "--now",
            "2026-11-23T18:41:05Z",
        ],
        REQUESTS,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    let summary: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            (s("decision"), s("response_code"), s("rule"))
        })
        .collect();
    let expected = [
        ("pass", "", ""),
        ("decline", "94", "duplicate"),
        ("decline", "43", "hotlist"),
        ("decline", "57", "vt-card-brand"),
        ("decline", "54", "expiry"),
    ];
    for (got, want) in summary.iter().zip(expected) {
        assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), want);
    }
    assert_eq!(lines[0]["at"], "2026-11-23T18:41:05Z");
    assert_eq!(lines[1]["at"], "2026-11-23T18:41:30Z");
    assert_eq!(lines[0]["pan"], "411111******1111");
    assert_eq!(lines[3]["shadow"][0]["rule"], "vt-mcc-allowlist");
    assert_eq!(lines[3]["shadow"][0]["response_code"], "58");
    assert!(
        !text(&out.stdout).contains("4111111111111111"),
        "full PAN printed"
    );
}

#[test]
fn rules_test_counts_velocity_across_the_requests_it_reads() {
    let config = std::env::temp_dir().join(format!(
        "isoswitch-risk-cli-velocity-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        "[[risk.rule]]\nname = \"per-minute\"\nkind = \"velocity\"\nper = \"card\"\nwindow_s = 60\nmax_count = 2\n",
    )
    .expect("config written");
    let request = r#"{"mti":"0200","fields":{"2":"4111111111111111","3":"000000","4":"000000001000","11":"000001","41":"T1"}}"#;
    let input = [request; 3].join("\n");
    let out = isoswitch(
        &[
            "rules",
            "test",
            "--config",
            config.to_str().expect("utf-8"),
            "--now",
            "2026-11-23T18:41:05Z",
        ],
        &input,
    );
    let _ = std::fs::remove_file(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let codes: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            v["response_code"].as_str().unwrap_or("-").to_owned()
        })
        .collect();
    assert_eq!(codes, ["-", "-", "65"]);
}

#[test]
fn rules_test_names_the_request_it_cannot_read() {
    let input = "{\"mti\":\"0100\",\"fields\":{}}\n{\"mti\":\"0100\",\"fields\":{\"2\":4111}}\n";
    let out = isoswitch(&["rules", "test"], input);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("request 2"), "{stderr}");
    assert!(stderr.contains("field 2: expected a string"), "{stderr}");
}

#[test]
fn rules_test_refuses_an_unknown_listener() {
    let out = isoswitch(&["rules", "test", "--listener", "atm"], "{}");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--listener: listener \"atm\" is not in the config (it has: pos)"),
        "{stderr}"
    );
}
