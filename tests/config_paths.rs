//! Paths inside a config file (specs, certificates, hotlists) start at that
//! file's directory, whatever the working directory is; absolute paths and the
//! names of built-in specs keep their meaning. Each test writes its own
//! directory under the system temp dir and never changes the process's cwd.

mod risk_common;

use std::path::{Path, PathBuf};

use isoswitch::channel::Channel;
use isoswitch::config::Config;
use isoswitch::risk::{RiskContext, RiskRules, RiskState, Timestamp};
use risk_common::purchase;

const POS: RiskContext<'static> = RiskContext {
    channel: Channel::Pos,
    listener: "pos",
};

/// A fresh directory for one test (named after it, so parallel tests do not share).
fn fresh_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "isoswitch-config-paths-{test}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).expect("parent dir");
    std::fs::write(path, text).expect("file written");
}

fn shipped_spec(name: &str) -> &'static str {
    isoswitch::specs::BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .expect("a shipped spec")
}

const SWITCH_TOML: &str = r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"
spec = "specs/bank.toml"
tls = { cert = "certs/pos.pem", key = "/etc/isoswitch-absolute/pos.key", client_ca = "certs/ca.pem" }

[[issuer]]
name = "sim"
endpoints = ["sim"]
spec = "specs/bank.toml"
tls = { ca = "certs/issuer-ca.pem", cert = "certs/switch.pem", key = "certs/switch.key" }

[[route]]
name = "all"
bins = ["0-9"]
issuer = "sim"

[metrics]
bind = "127.0.0.1:0"

[simulator]
bind = "127.0.0.1:0"
spec = "specs/bank.toml"

[[risk.rule]]
name = "hot"
kind = "hotlist"
file = "lists/hotlist.txt"
"#;

#[test]
fn relative_paths_are_found_beside_the_config_file_not_in_the_working_directory() {
    let dir = fresh_dir("relative");
    let conf = dir.join("etc");
    write(&conf.join("switch.toml"), SWITCH_TOML);
    write(&conf.join("specs/bank.toml"), shipped_spec("iso87bcd"));
    write(&conf.join("lists/hotlist.txt"), "4111111111111111 stolen\n");
    // The working directory (the package root) has neither file.
    assert!(!Path::new("specs/bank.toml").exists() && !Path::new("lists/hotlist.txt").exists());

    let config = Config::load(conf.join("switch.toml")).expect("config loads");

    let bank = conf.join("specs/bank.toml");
    assert_eq!(config.listeners[0].spec, bank);
    assert_eq!(config.issuers[0].spec, bank);
    assert_eq!(config.simulator.as_ref().expect("simulator").spec, bank);
    let spec = isoswitch::specs::resolve(&config.listeners[0].spec).expect("the spec loads");
    let bcd = isoswitch::specs::builtin("iso87bcd")
        .expect("shipped")
        .expect("compiles");
    assert_eq!(spec, bcd, "the file beside the config, not a built-in");

    let rules = RiskRules::compile(&config.risk, &RiskState::new()).expect("the hotlist is read");
    let now = Timestamp::parse_utc("2026-11-23T18:41:05Z").expect("test time");
    let decision = rules.evaluate(&POS, &purchase(&[]), now);
    assert_eq!(
        decision.response_code().map(|c| c.to_string()),
        Some("43".into()),
        "the card listed in the hotlist beside the config is declined as stolen"
    );

    let listener_tls = config.listeners[0].tls.as_ref().expect("listener tls");
    assert_eq!(listener_tls.cert, conf.join("certs/pos.pem"));
    assert_eq!(
        listener_tls.key,
        Path::new("/etc/isoswitch-absolute/pos.key"),
        "absolute paths stay as written"
    );
    assert_eq!(listener_tls.client_ca, Some(conf.join("certs/ca.pem")));
    let issuer_tls = config.issuers[0].tls.as_ref().expect("issuer tls");
    assert_eq!(issuer_tls.ca, conf.join("certs/issuer-ca.pem"));
    assert_eq!(issuer_tls.cert, Some(conf.join("certs/switch.pem")));
    assert_eq!(issuer_tls.key, Some(conf.join("certs/switch.key")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn builtin_spec_names_still_mean_the_shipped_specs() {
    let dir = fresh_dir("builtin");
    let text = r#"
[[listener]]
name = "bcd"
bind = "127.0.0.1:0"
spec = "iso87bcd"
[[listener]]
name = "default"
bind = "127.0.0.1:0"
[metrics]
bind = "127.0.0.1:0"
"#;
    write(&dir.join("switch.toml"), text);

    let config = Config::load(dir.join("switch.toml")).expect("config loads");

    assert_eq!(config.listeners[0].spec, Path::new("iso87bcd"));
    assert_eq!(
        config.listeners[1].spec,
        Path::new("specs/iso87ascii.toml"),
        "the default spec names the shipped one"
    );
    for listener in &config.listeners {
        isoswitch::specs::resolve(&listener.spec)
            .unwrap_or_else(|e| panic!("listener {:?}: {e}", listener.name));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_relative_hotlist_is_reported_at_its_resolved_path() {
    let dir = fresh_dir("missing");
    let text = "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = \"lists/none.txt\"\n";
    write(&dir.join("switch.toml"), text);

    let config = Config::load(dir.join("switch.toml")).expect("config loads");
    let error = RiskRules::compile(&config.risk, &RiskState::new())
        .expect_err("no such hotlist")
        .to_string();

    let expected = dir.join("lists/none.txt").display().to_string();
    assert!(error.contains(&expected), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_risk_config_finds_its_hotlist_beside_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/risk-example.toml");
    let config = Config::load(&path).expect("the example loads");
    RiskRules::compile(&config.risk, &RiskState::new()).expect("its hotlist is read");
}

#[test]
fn a_config_given_as_text_keeps_its_paths_as_written() {
    let text = "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = \"lists/hot.txt\"\n";
    let config = Config::from_toml_str(text, "text").expect("valid");
    let file = match &config.risk.rules[0].check {
        isoswitch::risk::Check::Hotlist { file } => file.clone(),
        other => panic!("expected a hotlist rule, got {other:?}"),
    };
    assert_eq!(file, Path::new("lists/hot.txt"));
}

#[test]
fn the_journal_and_its_key_file_are_found_beside_the_config_file() {
    let dir = fresh_dir("journal");
    write(
        &dir.join("switch.toml"),
        "[journal]\npath = \"data/switch.db\"\nkey_file = \"keys/journal.key\"\n",
    );
    write(
        &dir.join("default-key.toml"),
        "[journal]\npath = \"data/switch.db\"\n",
    );

    let config = Config::load(dir.join("switch.toml")).expect("config loads");
    assert_eq!(config.journal.path, dir.join("data/switch.db"));
    assert_eq!(config.journal.key_path(), dir.join("keys/journal.key"));

    let config = Config::load(dir.join("default-key.toml")).expect("config loads");
    assert_eq!(config.journal.key_path(), dir.join("data/switch.db.key"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_embedded_default_keeps_its_journal_in_the_working_directory() {
    let config = Config::embedded_default().expect("valid");
    assert_eq!(config.journal.path, Path::new("isoswitch.db"));
    assert_eq!(config.journal.key_path(), Path::new("isoswitch.db.key"));
}
