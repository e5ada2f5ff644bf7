//! The risk hotlist parser, through the only door it has: a hotlist rule
//! compiled from a file. Any content compiles or is refused naming the
//! file, and no refusal shows a card number.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use isoswitch::config::Config;
use isoswitch::risk::{RiskRules, RiskState};
use libfuzzer_sys::fuzz_target;

/// The file each input is written to, and the config whose rule reads it.
fn setup() -> &'static (PathBuf, Config) {
    static SETUP: OnceLock<(PathBuf, Config)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("isoswitch-fuzz-hotlist-{}.txt", std::process::id()));
        let text = format!(
            "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = {:?}\n",
            path.display().to_string()
        );
        let config = Config::from_toml_str(&text, "fuzz.toml").expect("a fixed, valid config");
        (path, config)
    })
}

fuzz_target!(|data: &[u8]| {
    let (path, config) = setup();
    std::fs::write(path, data).expect("the temp dir is writable");
    if let Err(e) = RiskRules::compile(&config.risk, &RiskState::new()) {
        let message = e.to_string();
        assert!(message.contains("hotlist"), "{message}");
        let longest = message
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest < 12, "may show a card number: {message}");
    }
});
